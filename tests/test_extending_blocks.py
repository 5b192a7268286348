"""A new block kind is one file and a registration (docs/extending.md, "A new block kind").

`dsconv_kind.py` (shown verbatim in the docs) registers a depthwise-separable conv stage kind. A
space whose conv stages are of that kind then plans, counts, builds a supernet whose static subnets
equal its active paths, trains for one tiny epoch on digits, gets a latency table and is searched,
with no other file of the package touched."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from conftest import TINY_TRAIN_SETTINGS, randomised_supernet, write_toy_space
from dsconv_kind import KERNEL, SeparableConv, SeparableConvKind
from torch.utils.flop_counter import FlopCounterMode

from autovit_ray.blocks import BlockKind, StageKind, block_kind, register_block_kind, stage_kind
from autovit_ray.checkpoint import load_supernet, save_checkpoint
from autovit_ray.export import export_model
from autovit_ray.export_cli import export_notes
from autovit_ray.latency import LatencyTable
from autovit_ray.latency.modules import arch_modules, enumerate_module_keys
from autovit_ray.models import create_subnet  # also registers the autovit models with timm
from autovit_ray.nn import DynamicModule
from autovit_ray.plan import count_macs, count_params, plan
from autovit_ray.profile import main as profile_main
from autovit_ray.search.algorithms import CostModel, EvolutionConfig, EvolutionSearch, run_search
from autovit_ray.search.evaluate import EvalSettings, SubnetEvaluator
from autovit_ray.space import load_space, space_from_dict
from autovit_ray.training.config import load_config
from autovit_ray.training.loop import SupernetTrainer

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10


@pytest.fixture(scope="module")
def toy_space_path(tmp_path_factory) -> Path:
    return write_toy_space(tmp_path_factory.mktemp("toy-space"))


def test_the_docs_show_the_kind_file_as_it_is():
    text = (REPO / "docs" / "extending.md").read_text()
    section = text.split("## A new block kind", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"```python\n(.*?)```", section, re.S)
    assert (REPO / "tests" / "dsconv_kind.py").read_text() in shown


def test_the_kind_is_registered_and_the_space_names_it(toy_space_path):
    assert isinstance(block_kind("dsconv"), SeparableConvKind) and stage_kind("dsconv", "conv").slot == "conv"
    space = load_space(toy_space_path)
    assert [s.kind for s in space.mbconv_stages] == ["dsconv"] * 3
    assert [s.kind for s in space.transformer_stages] == ["mobilevit"] * 3
    record = space.to_dict()  # the kind and its module travel with the space (checkpoints, latency tables)
    assert [s["kind"] for s in record["mbconv_stages"]] == ["dsconv"] * 3
    assert record["block_kind_modules"] == ["dsconv_kind"]
    raw = yaml.safe_load(toy_space_path.read_text())
    del raw["block_kind_modules"]  # the kind already imported: where its module lives changes no network
    assert space_from_dict(raw).fingerprint() == space.fingerprint()
    assert all("kind" not in s for s in record["transformer_stages"])
    assert load_space("xxs").fingerprint() != space.fingerprint()
    for s in load_space("xxs").to_dict()["mbconv_stages"]:  # default kinds are left out: fingerprints unchanged
        assert "kind" not in s
    # the kind appears in the plan, the counts and the latency-table keys
    arch = space.largest()
    blocks = plan(arch, space, NUM_CLASSES)
    conv = [b for b in blocks if b.stage_kind == "dsconv"]
    assert len(conv) == sum(arch.mbconv_depths) and {b.kind for b in conv} == {"dsconv"}
    assert all(b.kernel_size == KERNEL for b in conv)
    keys = [key for key, _ in arch_modules(arch, space, NUM_CLASSES)]
    assert sum(key.startswith("dsconv/r8/") for key in keys) == len(conv)
    assert any(key.startswith("dsconv/") for key in enumerate_module_keys(space, 8, NUM_CLASSES))


def test_bad_kinds_get_one_clear_error(tmp_path, toy_space_path):
    raw = yaml.safe_load(toy_space_path.read_text())
    raw["mbconv_stages"][1]["kind"] = "no-such-kind"
    (tmp_path / "unknown.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"space 'toy': mbconv stage 2: unknown block kind 'no-such-kind'; "
                                         r"allowed: \[.*'dsconv'.*\] \(import the module that registers it"):
        load_space(tmp_path / "unknown.yaml")
    raw["mbconv_stages"][1]["kind"] = "mobilevit"
    (tmp_path / "slot.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="mbconv stage 2: stage kind 'mobilevit' fills a transformer stage, not a "
                                         r"conv stage; conv stage kinds: \['dsconv', 'mbconv'\]"):
        load_space(tmp_path / "slot.yaml")
    raw["mbconv_stages"][1]["kind"] = "head"
    (tmp_path / "head.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="block kind 'head' cannot be a stage"):
        load_space(tmp_path / "head.yaml")

    class Impostor(SeparableConvKind):  # another class under a taken name
        pass

    with pytest.raises(ValueError, match="block kind 'dsconv' is already registered"):
        register_block_kind(Impostor())
    with pytest.raises(TypeError):  # a kind that leaves out what every kind must say cannot be made
        type("Half", (StageKind,), {"name": "half", "slot": "conv"})()
    assert issubclass(SeparableConvKind, BlockKind)


def test_static_subnets_equal_the_active_paths_and_own_slices_of_the_largest_weights(toy_space_path):
    net = randomised_supernet(str(toy_space_path), "digits")  # random BatchNorm statistics too: no slice hides
    space = net.space
    largest_widths = [max(s.widths) for s in space.mbconv_stages]
    # the dynamic stage owns the weights of its largest choice (depth and widths) and no more
    assert [len(net.stages[i].blocks) for i in range(3)] == [2, 2, 2]
    assert net.stages[1].blocks[0].pointwise.conv.weight.shape == (largest_widths[1], largest_widths[0], 1, 1)
    rng = random.Random(0)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(4))]:
        subnet = net.get_active_subnet(arch)
        x = torch.randn(2, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert (net(x) - subnet(x)).abs().max().item() <= 1e-5
        assert not any(isinstance(m, DynamicModule) for m in subnet.modules())
        built = create_subnet(arch, NUM_CLASSES, space)  # the static network straight from the plan
        assert {k: v.shape for k, v in built.state_dict().items()} == \
            {k: v.shape for k, v in subnet.state_dict().items()}
        assert [type(m) for m in built.modules()] == [type(m) for m in subnet.modules()]
        assert sum(p.numel() for p in subnet.parameters()) == count_params(arch, NUM_CLASSES, space)
        assert isinstance(subnet.stages[0].blocks[0], SeparableConv)
        first = subnet.stages[1].blocks[0].pointwise.conv.weight  # a copy of the leading slice
        owned = net.stages[1].blocks[0].pointwise.conv.weight
        assert torch.equal(first, owned[:arch.mbconv_widths[1], :arch.mbconv_widths[0]])
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            subnet(x[:1])
        assert counter.get_total_flops() == 2 * count_macs(arch, NUM_CLASSES, space)


def test_train_profile_and_search_a_space_of_the_new_kind(toy_space_path, tmp_path, one_thread):
    # train: one tiny epoch on digits, then a checkpoint that names the space's YAML
    cfg = load_config("digits", [*TINY_TRAIN_SETTINGS, f"supernets={toy_space_path}", "train.epochs=1",
                                 f"output_dir={tmp_path}"])
    space = load_space(toy_space_path, input_profile=cfg.input_profile)
    trainer = SupernetTrainer(cfg, space, log=lambda _m: None, space_source=str(toy_space_path))
    epochs: list[dict[str, float]] = []
    trainer.fit(lambda _epoch, metrics: epochs.append(metrics))
    assert len(epochs) == 1 and epochs[0]["train_loss"] > 0 and 0 <= epochs[0]["val_top1_largest"] <= 100
    checkpoint = save_checkpoint(tmp_path / "epoch_0001", trainer.state_dict(epochs[0]))
    supernet, loaded, train_cfg = load_supernet(checkpoint)
    assert loaded.fingerprint() == space.fingerprint() and loaded.mbconv_stages[0].kind == "dsconv"

    # profile: `python -m autovit_ray.profile build` times every module of the space, dsconv ones included
    lut = tmp_path / "toy.parquet"
    assert profile_main(["build", "--supernet", str(toy_space_path), "--input-profile", "digits",
                         "--backend", "torch-cpu", "--rounds", "2", "--references", "4", "--num-classes", "10",
                         "--quiet-cpus", "-1", "--out", str(lut)]) == 0
    table = LatencyTable.load(lut, space=loaded)
    assert any(row.module_key.startswith("dsconv/r8/") for row in table.rows)

    # search: an evolution under the table's latencies, scored by the trained supernet
    evaluator = SubnetEvaluator(supernet, loaded, train_cfg.data, EvalSettings(max_batches=1, calib_batches=1),
                                latency_fn=table.predict_latency)
    costs = CostModel(loaded, latency_fn=table.predict_latency, num_classes=NUM_CLASSES)
    strategy = EvolutionSearch(loaded, costs, EvolutionConfig(population_size=3, generations=2, num_parents=2), seed=0)
    result = run_search(strategy, lambda arch: evaluator.evaluate(arch)["val_top1"], catch_errors=False)
    assert len(result.history) == 6 and result.best is not None and result.best.ok
    best = result.best.arch
    assert loaded.contains(best) and table.predict_latency(best) > 0
    assert json.loads(best.to_json())["supernet"] == "toy"

    # the searched model: timm's contract, and an export that computes what the supernet's active path does
    subnet = supernet.get_active_subnet(best).eval()
    model = timm.create_model("autovit", arch=best.to_json(), num_classes=NUM_CLASSES, space=loaded)
    assert model.pretrained_cfg["input_size"] == (3, 8, 8)
    assert model.load_state_dict(subnet.state_dict()) is not None
    x = torch.randn(2, 3, 8, 8)
    scripted = torch.jit.load(str(export_model(subnet, 8, tmp_path, "best", ("torchscript",))["torchscript"]))
    with torch.no_grad():
        expected = supernet(x)  # the active path is still `best`
        assert (scripted(x) - expected).abs().max().item() <= 1e-5
        assert (model.eval()(x) - expected).abs().max().item() <= 1e-5
    assert list(export_notes(loaded)) == ["mobilevit"]  # dsconv has nothing an exporter must know

    # another process (a Ray worker, the search CLI) knows the kind from the YAML or the table's record alone
    code = ("import sys\nfrom autovit_ray.latency import LatencyTable\nfrom autovit_ray.space import Arch, load_space\n"
            f"table = LatencyTable.load({str(lut)!r})\nspace = load_space({str(toy_space_path)!r}, 'digits')\n"
            "assert 'dsconv_kind' in sys.modules and space.fingerprint() == table.space.fingerprint()\n"
            f"print(table.predict_latency(Arch.from_json({best.to_json()!r})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(table.predict_latency(best))


def test_a_kind_registered_by_a_plugin_module_is_found_without_block_kind_modules(tmp_path, monkeypatch):
    """A space that does not name the module of its kind (a kind registered as a side effect of another
    module): the modules of AUTOVIT_RAY_PLUGINS are imported on a look-up of an unknown kind."""
    import autovit_ray.blocks.kind as kinds

    (tmp_path / "my_kinds_plugin.py").write_text(
        "from dsconv_kind import SeparableConvKind\nfrom autovit_ray.blocks import register_block_kind\n\n\n"
        "class PluginConvKind(SeparableConvKind):\n    name = 'plugin-dsconv'\n\n\n"
        "register_block_kind(PluginConvKind())\n")
    monkeypatch.setattr(kinds.BLOCK_KINDS, "_entries", kinds.BLOCK_KINDS.entries())  # for this test only
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = yaml.safe_load(write_toy_space(tmp_path).read_text())
    del raw["block_kind_modules"]
    raw["mbconv_stages"] = [dict(s, kind="plugin-dsconv") for s in raw["mbconv_stages"]]
    with pytest.raises(ValueError, match="unknown block kind 'plugin-dsconv'"):
        space_from_dict(raw)
    monkeypatch.setenv("AUTOVIT_RAY_PLUGINS", "my_kinds_plugin")
    assert [s.kind for s in space_from_dict(raw).mbconv_stages] == ["plugin-dsconv"] * 3


def test_a_kind_of_an_installed_package_is_found_by_its_entry_point(tmp_path):
    """A package that others install declares its kind as an entry point of group autovit_ray.block_kinds:
    a space naming the kind loads without block_kind_modules or AUTOVIT_RAY_PLUGINS."""
    from extending_examples import blocks, installed

    from autovit_ray.blocks import BLOCK_KINDS

    source = ("from dsconv_kind import SeparableConvKind\n\n\n"
              "class InstalledConvKind(SeparableConvKind):\n    name = 'installed-dsconv'\n\n\n"
              "KIND = InstalledConvKind()\n")
    (toml,) = blocks("A new block kind", "toml")  # the docs' entry point, as written
    raw = yaml.safe_load(write_toy_space(tmp_path).read_text())
    del raw["block_kind_modules"]
    raw["mbconv_stages"] = [dict(s, kind="installed-dsconv") for s in raw["mbconv_stages"]]
    with installed(tmp_path / "site", source, toml, BLOCK_KINDS):
        assert "installed-dsconv" in BLOCK_KINDS and "installed-dsconv" not in BLOCK_KINDS.entries()
        assert [s.kind for s in space_from_dict(raw).mbconv_stages] == ["installed-dsconv"] * 3
        assert stage_kind("installed-dsconv", "conv").name == "installed-dsconv"
    assert "installed-dsconv" not in BLOCK_KINDS
