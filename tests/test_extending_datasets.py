"""docs/extending.md, "A new dataset or input profile", run as written: its module registers a dataset
and an input profile, a supernet trains an epoch on them and evaluates, and its command resolves in a
fresh process through AUTOVIT_RAY_PLUGINS; every registered dataset's input profiles resolve in every
space. (That the built-in input profiles kept their content is tests/test_golden.py's fingerprints.)"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_TRAIN_SETTINGS

from autovit_ray.data import (
    DATASETS,
    ArraySource,
    DataConfig,
    DatasetSpec,
    dataset_names,
    dataset_of_input_profile,
    dataset_record,
    dataset_spec,
    register_dataset,
    unregister_dataset,
)
from autovit_ray.space import (
    BUILTIN_SPACES,
    PROFILES_FILE,
    load_space,
    register_input_profile,
    shared_input_profiles,
    unregister_input_profile,
)

REPO = Path(__file__).resolve().parents[1]
SECTION = "## A new dataset or input profile"
CLASSES = ("horizontal", "vertical", "checker")


def _recipe() -> tuple[str, dict[str, str], list[str]]:
    """(the section's Python module, its command's environment, the arguments after `-m autovit_ray.train`)."""
    text = (REPO / "docs" / "extending.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    (module,) = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    (command,) = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    words = shlex.split(command.replace("\\\n", " ").replace("$PWD", os.getcwd()))
    at = words.index("-m")
    assert words[at + 1] == "autovit_ray.train", command
    env = dict(word.split("=", 1) for word in words[:at - 1])
    return module, env, words[at + 2:]


def _write_shapes(folder: Path, seed: int = 0) -> None:
    """The section's layout: stripes one way or the other, or a checkerboard, 16 px, with noise."""
    rng = np.random.default_rng(seed)
    grid = np.indices((16, 16))
    patterns = [(grid[0] // 2) % 2, (grid[1] // 2) % 2, (grid[0] // 2 + grid[1] // 2) % 2]
    folder.mkdir(parents=True)
    for name, n in (("train", 64), ("test", 16)):
        labels = np.arange(n) % len(CLASSES)
        base = np.stack([patterns[c] for c in labels])[..., None] * 160.0
        images = np.clip(base + rng.normal(40, 20, (n, 16, 16, 3)), 0, 255).astype(np.uint8)
        np.savez(folder / f"{name}.npz", images=images, labels=labels, classes=np.array(CLASSES))


@pytest.fixture
def shapes(tmp_path, monkeypatch):
    """The section's module, registered in this process, in a working directory with data/shapes/."""
    module_text, _, _ = _recipe()
    (tmp_path / "shapes_data.py").write_text(module_text)
    _write_shapes(tmp_path / "data" / "shapes")
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("shapes_data", tmp_path / "shapes_data.py")
    try:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        yield tmp_path
    finally:  # the other tests (the golden fingerprints) see the built-in profiles only
        if "shapes" in dataset_names():
            unregister_dataset("shapes")
        if "shapes16" in shared_input_profiles():
            unregister_input_profile("shapes16")


def test_a_registered_dataset_trains_an_epoch_and_evaluates(shapes, one_thread):
    from autovit_ray.models import pretrained_cfg
    from autovit_ray.train import build_parser, config_from_args
    from autovit_ray.training.loop import SupernetTrainer

    _, env, args = _recipe()
    assert env["AUTOVIT_RAY_PLUGINS"] == "shapes_data"
    tiny = [word for item in TINY_TRAIN_SETTINGS for word in ("--set", item)]
    cfg = config_from_args(build_parser().parse_args([*args, *tiny, "--supernets", "xxs"]))
    assert (cfg.data.dataset, cfg.input_profile, cfg.data.mean) == ("shapes", "shapes16", (0.5, 0.5, 0.5))
    space = load_space("xxs", input_profile=cfg.input_profile)
    assert space.resolutions == (16,) and space.attention_tokens(16) == [16, 4, 4, 4]

    trainer = SupernetTrainer(cfg, space, log=lambda _: None)
    assert trainer.loaders.num_classes == len(CLASSES) and trainer.loaders.mean == (0.5, 0.5, 0.5)
    metrics = trainer.train_epoch()
    assert math.isfinite(metrics["train_loss"]) and trainer.global_step == 2
    scores = trainer.evaluate()
    assert scores and all(0.0 <= v <= 100.0 for k, v in scores.items() if k.startswith("val_top1"))

    record = dataset_record(cfg.data)
    assert record["source"] == str(shapes / "data" / "shapes") and record["num_classes"] == len(CLASSES)
    assert record["sizes"] == {"train": 48, "val": 16, "calib": 32, "test": 16}  # val_size 0.25 of 64
    # an exported model evaluates as training did: the dataset's normalisation, its native size
    exported = pretrained_cfg(space.smallest(), len(CLASSES))
    assert exported["mean"] == (0.5, 0.5, 0.5) and exported["input_size"] == (3, 16, 16)


def test_the_command_finds_the_registration_in_a_fresh_process(shapes):
    """What each Ray worker does: a new process, the module named only in AUTOVIT_RAY_PLUGINS."""
    _, env, args = _recipe()
    python_path = os.pathsep.join([str(shapes), str(REPO), os.environ.get("PYTHONPATH", "")])
    run_env = {**os.environ, **env, "PYTHONPATH": python_path}
    printed = subprocess.run([sys.executable, "-m", "autovit_ray.train", *args, "--print-config"], env=run_env,
                             cwd=shapes, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    cfg = yaml.safe_load(printed.stdout)
    assert (cfg["data"]["dataset"], cfg["input_profile"], cfg["data"]["std"]) == ("shapes", "shapes16", [0.25] * 3)
    # without the variable, one clear error that says how to register
    bare = subprocess.run([sys.executable, "-m", "autovit_ray.train", *args, "--print-config"], cwd=shapes,
                          env={**os.environ, "PYTHONPATH": python_path}, capture_output=True, text=True,
                          timeout=120)
    assert bare.returncode != 0 and "DataConfig.dataset = 'shapes' is invalid" in bare.stderr
    assert "register_dataset" in bare.stderr


@pytest.mark.parametrize("dataset", dataset_names())
def test_every_registered_dataset_has_input_profiles_every_space_offers(dataset):
    for input_profile in dataset_spec(dataset).input_profiles:
        for name in BUILTIN_SPACES:
            assert load_space(name, input_profile=input_profile).input_profile.name == input_profile
    spec_profiles = yaml.safe_load(PROFILES_FILE.read_text())["input_profiles"]
    assert all(dataset_of_input_profile(p) is not None for p in spec_profiles)  # each profile's eval transform


def test_bad_registrations_get_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="dataset 'cifar10' is already registered"):
        register_dataset(dataset_spec("cifar10"))
    with pytest.raises(ValueError, match=r"DatasetSpec.std = \(0.5, 0.0, 0.5\) is invalid .*3 positive numbers"):
        DatasetSpec("bad", lambda d: None, 16, ("digits",), std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="input profile 'cifar10' already exists"):
        register_input_profile("cifar10", [32], [1, 1, 2, 2, 1, 2, 2, 1])
    with pytest.raises(ValueError, match="shares resolutions \\[32\\] with 'cifar10'"):
        register_input_profile("other32", [32], [1, 1, 1, 2, 1, 2, 2, 1])
    with pytest.raises(ValueError, match="input profile 'odd': resolution 20 gives a 5x5 map"):
        register_input_profile("odd", [20], [1, 1, 2, 2, 1, 2, 1, 1])
    assert "other32" not in shared_input_profiles() and "odd" not in shared_input_profiles()
    with pytest.raises(ValueError, match="dataset 'digits' was not registered in code"):
        unregister_dataset("digits")
    register_dataset(DatasetSpec("broken", lambda data_dir: [1, 2], 8, ("digits",)))
    try:
        with pytest.raises(ValueError, match="loader of dataset 'broken' returned list: expected"):
            dataset_record(DataConfig(dataset="broken"))
        images = np.zeros((2, 8, 8, 3), np.uint8)
        with pytest.raises(ValueError, match="labels must be 2 class indices in 0..1"):
            ArraySource(images, np.array([0, 2]), ["a", "b"])
    finally:
        unregister_dataset("broken")


def test_a_dataset_of_an_installed_package_is_found_by_its_entry_point(tmp_path):
    """A package that others install declares a DatasetSpec as an entry point of group autovit_ray.datasets:
    a training config names it without AUTOVIT_RAY_PLUGINS."""
    from extending_examples import installed

    source = ("from autovit_ray.data import DatasetSpec\n\n"
              "SPEC = DatasetSpec('installed-digits', 'autovit_ray.data.sources:load_digits', 8, ('digits',))\n")
    toml = '[project.entry-points."autovit_ray.datasets"]\ninstalled-digits = "installed_dataset:SPEC"\n'
    with pytest.raises(ValueError, match="DataConfig.dataset = 'installed-digits' is invalid"):
        DataConfig(dataset="installed-digits")
    with installed(tmp_path / "site", source, toml, DATASETS):
        assert "installed-digits" in dataset_names() and "installed-digits" not in DATASETS.entries()
        assert DataConfig(dataset="installed-digits").defaults.resolution == 8  # the spec, loaded by its name
        assert dataset_spec("installed-digits").input_profiles == ("digits",)
    assert "installed-digits" not in dataset_names()


def test_an_input_profile_of_an_installed_package_is_found_by_its_entry_point(tmp_path):
    """A package that others install declares an InputProfile as an entry point of group
    autovit_ray.input_profiles: every space offers it without AUTOVIT_RAY_PLUGINS."""
    from extending_examples import installed

    from autovit_ray.space import INPUT_PROFILES

    source = ("from autovit_ray.space import InputProfile\n\n"
              "WIDE = InputProfile('wide12', (12,), (1, 1, 1, 2, 1, 1, 1, 1))\n")
    toml = '[project.entry-points."autovit_ray.input_profiles"]\nwide12 = "installed_profile:WIDE"\n'
    with pytest.raises(ValueError, match="has no input profile 'wide12'"):
        load_space("xxs", input_profile="wide12")
    with installed(tmp_path / "site", source, toml, INPUT_PROFILES):
        assert "wide12" in shared_input_profiles() and "wide12" in INPUT_PROFILES.entries()
        space = load_space("xs", input_profile="wide12")
        assert space.resolutions == (12,) and space.input_profile.strides[3] == 2
    assert "wide12" not in shared_input_profiles()
    # an entry point whose profile another already holds is refused when it loads, with the reason
    clash = source.replace("(12,)", "(8,)").replace("wide12", "eight")
    with installed(tmp_path / "site2", clash, toml.replace("wide12", "eight").replace("installed_profile",
                                                                                       "installed_clash"),
                   INPUT_PROFILES):
        with pytest.raises(ValueError, match="'eight' shares resolutions \\[8\\] with 'digits'"):
            shared_input_profiles()
        assert "eight" not in INPUT_PROFILES.entries()  # refused: nothing for the block's exit to unregister
        sys.modules.pop("installed_clash")


def test_a_registry_of_named_instances_refuses_another_type_or_another_name():
    from autovit_ray.blocks import BLOCK_KINDS, register_block_kind
    from autovit_ray.extensions import Registry

    registry: Registry[DatasetSpec] = Registry("dataset", instance_of=DatasetSpec)
    spec = DatasetSpec("tiny", "autovit_ray.data.sources:load_digits", 8, ("digits",))
    with pytest.raises(ValueError, match="dataset 'tiny' must be a DatasetSpec instance, got str"):
        registry.register("tiny", "autovit_ray.data.sources:load_digits")
    with pytest.raises(ValueError, match="registers under its own name: 'other' for the DatasetSpec named 'tiny'"):
        registry.register("other", spec)
    assert registry.register("tiny", spec) is spec and registry.get("tiny") is spec
    with pytest.raises(ValueError, match=r"unknown dataset 'none'; allowed: \['tiny'\]$"):  # no hint given
        registry.get("none")
    mbconv = BLOCK_KINDS.get("mbconv")
    slashed = type("Slashed", (type(mbconv),), {"name": "conv/2"})()
    with pytest.raises(ValueError, match="a block kind's name has no '/', got 'conv/2'"):
        register_block_kind(slashed)
    assert "conv/2" not in BLOCK_KINDS
