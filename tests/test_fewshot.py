"""Few-shot supernets: a part trains only its region of the space, starting from the whole-space weights;
the parts answer as one supernet (each subnet from the part that holds it) wherever a checkpoint goes."""

from __future__ import annotations

import json
import random

import pytest
import torch

from autovit_ray.checkpoint import (
    FEW_SHOT_FILE,
    checkpoint_root,
    epoch_dir_name,
    load_supernet,
    read_record,
    resolve_checkpoint,
    save_checkpoint,
    write_few_shot,
)
from autovit_ray.evaluation import calibrated_subnet
from autovit_ray.fewshot.cli import main as fewshot_main
from autovit_ray.nn import FewShotSupernet, Supernet
from autovit_ray.space import load_space
from autovit_ray.training.config import fingerprint_dict, identity_dict, load_config
from autovit_ray.training.loop import SupernetTrainer, sample_step_archs

SPACE = "xxs"


def _space():
    return load_space(SPACE, input_profile="digits")


def test_a_part_holds_the_subnets_of_one_stage_count_and_the_whole_spaces_weights():
    space = _space()
    rng = random.Random(0)
    for count in space.num_transformer_stages:
        part = space.with_transformer_stage_count(count)
        assert {part.sample(rng).num_transformer_stages for _ in range(50)} == {count}
        assert part.largest().num_transformer_stages == part.smallest().num_transformer_stages == count
        assert all(space.contains(part.sample(rng)) for _ in range(20))
        whole, region = Supernet(space, 10).state_dict(), Supernet(part, 10).state_dict()
        assert {k: v.shape for k, v in whole.items()} == {k: v.shape for k, v in region.items()}
    with pytest.raises(ValueError, match=r"no subnets with 2 transformer stages; allowed: \[3, 4\]"):
        space.with_transformer_stage_count(2)


def _train(tmp_path, name: str, *settings: str, epochs: int = 1) -> tuple[SupernetTrainer, str]:
    """A tiny digits supernet trained by the loop itself (no Ray), saved as `train` saves it."""
    from conftest import TINY_TRAIN_SETTINGS

    cfg = load_config("digits", [*TINY_TRAIN_SETTINGS, f"supernets={SPACE}", f"train.epochs={epochs}",
                                 f"output_dir={tmp_path}", f"name={name}", "train.sampler=sandwich",
                                 "train.sandwich_random=1", *settings])
    trainer = SupernetTrainer(cfg, _space(), log=lambda _: None)
    if cfg.train.init_from:
        from autovit_ray.ray_train import init_weights

        init_weights(trainer, cfg.train.init_from, torch.device("cpu"))
    root = checkpoint_root(cfg.experiment_dir, SPACE)
    trainer.fit(lambda epoch, metrics: save_checkpoint(root / epoch_dir_name(epoch), trainer.state_dict(metrics)))
    return trainer, str(root / epoch_dir_name(epochs))


def test_a_part_trains_only_its_region_starting_from_the_parent(tmp_path):
    _, parent = _train(tmp_path, "parent")
    parent_weights = load_supernet(parent)[0].state_dict()
    cfg_settings = ("train.transformer_stages=3", f"train.init_from={parent}")
    trainer, _ = _train(tmp_path, "part3", *cfg_settings, epochs=1)
    assert trainer.sampled_space.num_transformer_stages == (3,)
    assert {a.num_transformer_stages for a in trainer.eval_archs.values()} == {3}
    steps = [sample_step_archs(trainer.sampled_space, "sandwich", 0, 1, s, 2) for s in range(5)]
    assert {a.num_transformer_stages for step in steps for a in step} == {3}
    # the part started from the parent: before its training, the weights were the parent's
    fresh = SupernetTrainer(trainer.cfg, _space(), log=lambda _: None)
    from autovit_ray.ray_train import init_weights

    init_weights(fresh, parent, torch.device("cpu"))
    assert all(torch.equal(v, parent_weights[k]) for k, v in fresh.model.state_dict().items())
    # the 4th transformer stage is never active in a 3-stage part, so its weights stay the parent's
    after = trainer.model.state_dict()
    fourth = [k for k in after if k.startswith("stages.") and int(k.split(".")[1]) == len(trainer.model.stages) - 1]
    assert fourth and all(torch.equal(after[k], parent_weights[k]) for k in fourth)


def test_few_shot_fields_enter_fingerprints_only_when_set(tmp_path):
    plain = load_config("digits", [f"output_dir={tmp_path}"])
    assert "transformer_stages" not in identity_dict(plain)["train"]
    assert "init_from" not in fingerprint_dict(plain)["train"]
    part = load_config("digits", [f"output_dir={tmp_path}", "train.transformer_stages=3", "train.init_from=x"])
    assert identity_dict(part)["train"]["transformer_stages"] == 3
    assert fingerprint_dict(part)["train"]["init_from"] == "x"
    with pytest.raises(ValueError, match="train.transformer_stages"):
        load_config("digits", ["train.transformer_stages=0"])


def test_the_truth_recipe_of_a_part_trains_from_scratch_on_its_one_arch(tmp_path):
    from autovit_ray.fidelity import truth_recipe

    part = load_config("digits", [f"output_dir={tmp_path}", "train.transformer_stages=3", "train.init_from=x"])
    recipe = truth_recipe(part, 3, ())
    assert recipe.train.transformer_stages is None and recipe.train.init_from is None


def test_bad_parts_are_refused_with_one_clear_error(tmp_path):
    from autovit_ray.ray_train import check_few_shot_part

    spaces = {SPACE: _space()}
    cfg = load_config("digits", [f"output_dir={tmp_path}", f"supernets={SPACE}", "train.transformer_stages=2"])
    with pytest.raises(ValueError, match=r"train.transformer_stages = 2: .*allowed: \[3, 4\]"):
        check_few_shot_part(cfg, spaces, 10)
    cfg = load_config("digits", [f"output_dir={tmp_path}", f"supernets={SPACE}",
                                 f"train.init_from={tmp_path / 'nothing'}"])
    with pytest.raises(ValueError, match="train.init_from: no checkpoint of supernet 'xxs' under"):
        check_few_shot_part(cfg, spaces, 10)
    _, parent = _train(tmp_path, "parent")
    cfg = load_config("digits", [f"output_dir={tmp_path}", f"supernets={SPACE}", f"train.init_from={parent}"])
    check_few_shot_part(cfg, spaces, 10)
    with pytest.raises(ValueError, match="has 10 classes; this dataset has 7"):
        check_few_shot_part(cfg, spaces, 7)
    with pytest.raises(ValueError, match="does not match search space 'xs'"):
        check_few_shot_part(cfg, {"xs": load_space("xs", input_profile="digits")}, 10)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fewshot")
    _, parent = _train(tmp_path, "parent")
    return tmp_path, {count: _train(tmp_path, f"part{count}", f"train.transformer_stages={count}",
                                    f"train.init_from={parent}")[1] for count in (3, 4)}


def test_the_parts_answer_as_one_supernet(parts):
    tmp_path, checkpoints = parts
    folder = tmp_path / "fewshot"
    assert fewshot_main(["--out", str(folder), *[f"--part={c}={p}" for c, p in checkpoints.items()]]) == 0
    manifest = json.loads((folder / FEW_SHOT_FILE).read_text())
    assert not any(p.startswith("/") for p in manifest["parts"].values())  # relative: the folder can move
    assert resolve_checkpoint(folder) == folder
    model, space, config = load_supernet(folder)
    assert isinstance(model, FewShotSupernet) and space.name == SPACE and config.train.transformer_stages == 3
    assert all(k.startswith("parts.") for k in model.state_dict())  # each part's weights once
    record = read_record(folder)
    assert record.finished and set(record.meta["few_shot"]) == {"3", "4"}
    alone = {count: load_supernet(p)[0] for count, p in checkpoints.items()}
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # the parts differ, so a subnet scored by the wrong part would show
        assert not torch.allclose(alone[3].get_active_subnet(space.largest())(x),
                                  alone[4].get_active_subnet(space.largest())(x))
    rng = random.Random(1)
    for _ in range(6):
        arch = space.sample(rng)
        part = alone[arch.num_transformer_stages]
        with torch.no_grad():
            expected = part.get_active_subnet(arch).eval()(x)
            assert torch.allclose(model.get_active_subnet(arch).eval()(x), expected)
            model.set_active(arch)
            assert torch.allclose(model(x), expected)
    # what search and export do: a recalibrated copy and the subnet extracted from it agree
    calib = [(torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))]
    subnet, reference = calibrated_subnet(model, arch, calib, with_reference=True)
    with torch.no_grad():
        assert torch.allclose(subnet(x), reference(x), atol=1e-5)


def test_a_few_shot_folder_refuses_parts_that_do_not_make_one(parts, tmp_path, capsys):
    _, checkpoints = parts
    assert fewshot_main(["--out", str(tmp_path / "a"), f"--part=3={checkpoints[3]}"]) == 2
    assert "the parts cover [3]: give one part per count" in capsys.readouterr().err
    assert fewshot_main(["--out", str(tmp_path / "b"), f"--part=3={checkpoints[4]}",
                         f"--part=4={checkpoints[3]}"]) == 2
    assert "was trained with train.transformer_stages = 4, not 3" in capsys.readouterr().err
    assert fewshot_main(["--out", str(tmp_path / "c"), f"--part=3={checkpoints[3]}",
                         f"--part=3={checkpoints[3]}"]) == 2
    assert "give each count once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fewshot_main(["--out", str(tmp_path / "d"), "--part=three"])
    assert "expected COUNT=CHECKPOINT" in capsys.readouterr().err
    write_few_shot(tmp_path / "e", checkpoints)
    with pytest.raises(ValueError, match="is itself a few-shot folder"):
        write_few_shot(tmp_path / "f", {3: tmp_path / "e", 4: checkpoints[4]})
    (tmp_path / "e" / FEW_SHOT_FILE).write_text("{}")
    with pytest.raises(ValueError, match="is not a few-shot supernet manifest"):
        load_supernet(tmp_path / "e")


def test_a_part_trains_through_the_train_command(trained_digits_experiment, tmp_path, monkeypatch):
    """`python -m autovit_ray.train` on Ray Train: the part starts from the parent's weights and moves
    only the weights its region uses (a 3-stage part never touches the 4th transformer stage)."""
    import os

    from conftest import tiny_train_argv

    from autovit_ray.checkpoint import find_checkpoint
    from autovit_ray.train import main

    parent = find_checkpoint(trained_digits_experiment.dir, SPACE)
    # the experiment folder stands for its latest checkpoint of the supernet, as --checkpoint does; given
    # relative to where the command runs, which is not where the workers run
    monkeypatch.chdir(tmp_path)
    argv = tiny_train_argv(tmp_path, "part3", SPACE, "train.epochs=1", "train.transformer_stages=3",
                           f"train.init_from={os.path.relpath(trained_digits_experiment.dir)}")
    assert main(argv) == 0
    part = find_checkpoint(tmp_path / "part3", SPACE, final=True)
    assert read_record(part).config["train"]["transformer_stages"] == 3
    before, after = load_supernet(parent)[0].state_dict(), load_supernet(part)[0].state_dict()
    last = len(load_supernet(part)[0].stages) - 1
    fourth = [k for k in after if k.startswith(f"stages.{last}.")]
    assert fourth and all(torch.equal(after[k], before[k]) for k in fourth)
    assert not all(torch.equal(after[k], before[k]) for k in after)


def test_a_few_shot_folder_is_searched_and_exported_from_the_command_line(parts, ray_session, tmp_path):
    """`search` and `export` take the folder where a checkpoint goes; the folder is their experiment."""
    from autovit_ray.export_cli import main as export_main
    from autovit_ray.search.cli import main as search_main

    _, checkpoints = parts
    folder = tmp_path / "fewshot"
    write_few_shot(folder, checkpoints)
    assert search_main(["--checkpoint", str(folder), "--name", "fs", "--strategy", "random", "--max-evaluations",
                        "3", "--evaluators", "1", "--cpus-per-evaluator", "0.3", "--eval-batches", "1",
                        "--calib-batches", "1", "--top-k", "1", "--export-formats", "", "--no-register"]) == 0
    results = json.loads((folder / "search" / "fs" / "results.json").read_text())
    assert (folder / "mlflow.db").is_file() and results["best"]
    best = results["best"][0]["arch"]
    (tmp_path / "best.json").write_text(json.dumps(best))
    assert export_main(["--checkpoint", str(folder), "--arch", str(tmp_path / "best.json"), "--out",
                        str(tmp_path / "export"), "--format", "torchscript", "--calib-batches", "1"]) == 0
