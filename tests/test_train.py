"""Supernet training: freezing, optimizer, sampling, config, checkpoints, Ray Train runs, MLflow.

The Ray tests share one session fixture (`trained_digits_experiment`: xxs, xs and s trained concurrently,
two workers each) and one more single-worker experiment (crash + restart + resume by name).
"""

from __future__ import annotations

import _thread
import json
import math
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN_SETTINGS, tiny_train_argv

import autovit_ray
from autovit_ray import ray_train
from autovit_ray.checkpoint import (
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_supernet,
    read_meta,
    read_record,
    save_checkpoint,
)
from autovit_ray.data import dataset_record
from autovit_ray.nn import Supernet
from autovit_ray.placement import Cluster, NodeGroup
from autovit_ray.ray_train import plan_training, run_in_daemon_threads
from autovit_ray.space import load_space
from autovit_ray.train import main
from autovit_ray.training.config import OptimizerSection, load_config
from autovit_ray.training.loop import SupernetTrainer, sample_step_archs
from autovit_ray.training.optim import (
    ActiveRegion,
    ActiveWeightTracker,
    MaskedAdamW,
    build_optimizer,
    fill_missing_grads,
)


def _digits_space(name: str = "xxs"):
    return load_space(name, input_profile="digits")


# --- exact freezing of inactive weights ---------------------------------------------------------------


def test_tracker_masks_equal_supernet_active_masks() -> None:
    space = _digits_space()
    net = Supernet(space, 10)
    tracker = ActiveWeightTracker(net)
    x = torch.randn(2, 3, 8, 8)
    rng = random.Random(3)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(3))]:
        net.set_active(arch)
        net(x).sum()
        expected = net.active_masks()
        got = tracker.named_masks(net)
        assert all(torch.equal(got[k], expected[k]) for k in expected), arch
        tracker.reset()
    # a sandwich step reads the union; a no-grad pass (teacher logits, evaluation) reads nothing
    archs = [space.smallest(), space.sample(rng)]
    union = {k: torch.zeros_like(p, dtype=torch.bool) for k, p in net.named_parameters()}
    for arch in archs:
        net.set_active(arch)
        net(x).sum()
        union = {k: union[k] | m for k, m in net.active_masks().items()}
    with torch.no_grad():
        net.set_active(space.largest())
        net(x)
    assert all(torch.equal(tracker.named_masks(net)[k], union[k]) for k in union)


def test_masked_adamw_with_full_masks_is_adamw() -> None:
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(7, 5)) for _ in range(3)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = MaskedAdamW(ours, lr=1e-2, weight_decay=0.05)
    b = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.05)
    for _ in range(10):
        for p, q in zip(ours, ref):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        a.set_masks({p: torch.ones_like(p) for p in ours})
        a.step()
        b.step()
    assert max(float((p - q).detach().abs().max()) for p, q in zip(ours, ref)) < 1e-5


def _reference_masked_adamw(params, grads_per_step, masks_per_step, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """Entry-wise AdamW written out in float64: an entry moves only on the steps its mask is on, and its
    bias correction counts those steps."""
    p = [t.double().clone() for t in params]
    m = [torch.zeros_like(t) for t in p]
    v = [torch.zeros_like(t) for t in p]
    k = [torch.zeros_like(t) for t in p]
    for grads, masks in zip(grads_per_step, masks_per_step):
        for i, (g, on) in enumerate(zip(grads, masks)):
            g, on = g.double(), on.bool()
            k[i][on] += 1
            p[i][on] *= 1 - lr * wd
            m[i][on] = betas[0] * m[i][on] + (1 - betas[0]) * g[on]
            v[i][on] = betas[1] * v[i][on] + (1 - betas[1]) * g[on] ** 2
            hat_m = m[i][on] / (1 - betas[0] ** k[i][on])
            hat_v = v[i][on] / (1 - betas[1] ** k[i][on])
            p[i][on] -= lr * hat_m / (hat_v.sqrt() + eps)
    return p


def test_masked_adamw_on_boxes_and_partial_masks_is_entrywise_adamw() -> None:
    """Leading boxes of different sizes (whole boxes: the scalar path) and boxes read in part (two
    blocks of an axis, as the fusion conv's input: the masked path), changing from step to step."""
    torch.manual_seed(0)
    shapes = [(6, 5), (8,), (4, 6, 3)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    start = [p.detach().clone() for p in params]
    optimizer = MaskedAdamW(params, lr=1e-2, weight_decay=0.05)
    rng = random.Random(0)
    grads_per_step, masks_per_step = [], []
    for step in range(12):
        masks = []
        for p in params:
            mask = torch.zeros_like(p, dtype=torch.bool)
            box = tuple(slice(0, rng.randint(1, n)) for n in p.shape)
            mask[box] = True
            if step % 3 == 2 and p.dim() >= 2:  # two blocks along the last axis: a box read in part
                half = p.shape[-1] // 2
                mask[..., half - 1] = False
            masks.append(mask)
        grads = [torch.randn_like(p) * mask for p, mask in zip(params, masks)]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.set_masks(dict(zip(params, masks)))
        optimizer.step()
        grads_per_step.append(grads)
        masks_per_step.append(masks)
    expected = _reference_masked_adamw(start, grads_per_step, masks_per_step, lr=1e-2, wd=0.05)
    for p, e in zip(params, expected):
        assert torch.allclose(p.detach().double(), e, atol=1e-5), (p, e)
    assert any(ActiveRegion.from_mask(m).mask is not None for ms in masks_per_step for m in ms)


def test_optimizer_state_of_step_counts_loads_as_powers() -> None:
    """A checkpoint of the per-entry step counts (`active_steps`, kept before `bias1` / `bias2`) resumes exactly."""
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = MaskedAdamW([p], lr=1e-2, weight_decay=0.0)
    p.grad = torch.ones(3)
    optimizer.step()
    state = optimizer.state_dict()
    bias1, _ = state["state"][0].pop("bias1"), state["state"][0].pop("bias2")
    state["state"][0]["active_steps"] = torch.ones(3)
    resumed = MaskedAdamW([torch.nn.Parameter(p.detach().clone())], lr=1e-2, weight_decay=0.0)
    resumed.load_state_dict(state)
    q = resumed.param_groups[0]["params"][0]
    q.grad = torch.ones(3)
    resumed.step()
    assert torch.allclose(bias1, torch.full((3,), 0.1))  # 1 - 0.9^1
    assert torch.allclose(resumed.state[q]["bias1"], torch.full((3,), 1 - 0.9 ** 2))
    assert "active_steps" not in resumed.state[q]
    reference = MaskedAdamW([r := torch.nn.Parameter(torch.ones(3))], lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        r.grad = torch.ones(3)
        reference.step()
    assert torch.allclose(q, r)


def _train_steps(net: Supernet, optimizer, tracker, archs, freeze: bool) -> None:
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    for arch in archs:
        net.set_active(arch)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        if freeze:
            optimizer.set_regions(tracker.regions)
        else:
            fill_missing_grads(net)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if tracker is not None:
            tracker.reset()


def test_inactive_weights_stay_bit_identical_no_decay_no_momentum() -> None:
    torch.manual_seed(0)
    space = _digits_space()
    net = Supernet(space, 10)
    optimizer = build_optimizer(net, OptimizerSection(lr=1e-2, weight_decay=0.1, freeze_inactive=True))
    tracker = ActiveWeightTracker(net)
    # warm-up on the largest subnet: every entry gets momentum, so a drift would show
    _train_steps(net, optimizer, tracker, [space.largest(), space.largest()], freeze=True)
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    state = {k: {s: t.clone() for s, t in optimizer.state[p].items()} for k, p in net.named_parameters()}
    net.set_active(space.smallest())
    masks = net.active_masks()
    _train_steps(net, optimizer, tracker, [space.smallest()], freeze=True)
    moved = 0
    for k, p in net.named_parameters():
        inactive = ~masks[k]
        assert torch.equal(p.detach()[inactive], params[k][inactive]), f"{k}: inactive entries moved"
        for s, before in state[k].items():
            assert torch.equal(optimizer.state[p][s][inactive], before[inactive]), f"{k}.{s} drifted"
        moved += int((p.detach()[masks[k]] != params[k][masks[k]]).sum())
    assert moved > 0  # the active subnet did train
    # a partly active shared tensor (the leading slice of a wider layer) is in the test above:
    assert any(m.any() and not m.all() for m in masks.values())


def test_plain_adamw_moves_inactive_weights() -> None:
    """freeze_inactive: false is AutoFormer's plain AdamW: inactive weights decay and drift."""
    torch.manual_seed(0)
    space = _digits_space()
    net = Supernet(space, 10)
    optimizer = build_optimizer(net, OptimizerSection(lr=1e-2, weight_decay=0.1, freeze_inactive=False))
    assert not isinstance(optimizer, MaskedAdamW)
    _train_steps(net, optimizer, None, [space.largest()], freeze=False)
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    net.set_active(space.smallest())
    masks = net.active_masks()
    _train_steps(net, optimizer, None, [space.smallest()], freeze=False)
    changed = sum(int((p.detach()[~masks[k]] != params[k][~masks[k]]).sum()) for k, p in net.named_parameters())
    assert changed > 0


# --- sampling ------------------------------------------------------------------------------------------


def test_step_sampler_is_per_choice_uniform_and_rank_independent() -> None:
    space = load_space("xxs", input_profile="imagenet")
    a = [sample_step_archs(space, "uniform", 0, 1, s)[0] for s in range(400)]
    b = [sample_step_archs(space, "uniform", 0, 1, s)[0] for s in range(400)]
    assert a == b  # a function of (seed, epoch, step) only: every rank draws the same subnets
    stages = Counter(x.num_transformer_stages for x in a)
    assert 140 < stages[3] < 260  # per-choice uniform: about half 3-stage (uniform over subnets: ~2%)
    assert set(Counter(x.resolution for x in a)) == set(space.resolutions)
    assert sample_step_archs(space, "uniform", 0, 2, 0) != sample_step_archs(space, "uniform", 0, 1, 0)
    sandwich = sample_step_archs(space, "sandwich", 0, 1, 0, sandwich_random=2)
    assert sandwich[:2] == [space.largest(), space.smallest()] and len(sandwich) == 4


@pytest.mark.parametrize("settings", [
    ["train.sampler=sandwich", "train.sandwich_random=1", "kd.kind=soft", "kd.inplace=true"],
    ["kd.kind=hard", "kd.teacher=timm:resnet10t?random=1", "kd.teacher_resolution=16"],
    ["kd.kind=soft", "kd.inplace=true", "optimizer.freeze_inactive=false"],
])
def test_train_step_variants(settings, one_thread) -> None:
    """Sandwich steps with in-place distillation, an external (random, offline) teacher, plain AdamW."""
    cfg = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs", *settings])
    trainer = SupernetTrainer(cfg, _digits_space(), log=lambda _: None)
    assert (trainer.teacher is not None) == ("kd.kind=hard" in settings)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    x, y = next(iter(trainer.loaders.train))
    archs = sample_step_archs(trainer.space, cfg.train.sampler, cfg.seed, 1, 0, cfg.train.sandwich_random)
    loss = trainer.train_step(x, y, archs)
    assert loss == loss and loss > 0 and trainer.global_step == 1
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_precision_resolves_per_device_and_is_recorded(one_thread, monkeypatch) -> None:
    from autovit_ray.training import loop

    cpu = torch.device("cpu")
    assert [loop.resolve_precision(a, cpu) for a in ("auto", False, "fp32", "bf16")] == ["fp32", "fp32", "fp32", "bf16"]
    with pytest.raises(ValueError, match="train.amp = 'fp16' needs a GPU"):
        loop.resolve_precision("fp16", cpu)
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="no bf16 unit"):
        loop.resolve_precision(True, cpu)
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: True)
    assert loop.resolve_precision(True, cpu) == "bf16"
    # a bf16 step on the CPU: the forward runs in bf16, the weights and the optimizer stay fp32
    cfg = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs", "train.amp=bf16"])
    trainer = SupernetTrainer(cfg, _digits_space(), log=lambda _: None)
    x, y = next(iter(trainer.loaders.train))
    with trainer._autocast():
        trainer.model.set_active(trainer.space.largest())
        assert trainer.model(x).dtype == torch.bfloat16
    loss = trainer.train_step(x, y, [trainer.space.largest()])
    assert math.isfinite(loss) and all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert trainer.state_dict()["precision"] == "bf16"
    assert 0.0 <= trainer.evaluate()["val_top1_largest"] <= 100.0


# --- config --------------------------------------------------------------------------------------------


def test_config_overrides_are_typed_and_every_field_is_in_help(capsys) -> None:
    cfg = load_config("digits", ["optimizer.lr=1e-3", "supernets=xxs,s", "optimizer.betas=[0.8, 0.9]",
                                 "train.max_steps_per_epoch=null", "kd.alpha=0.3", "data.batch_size=8"])
    assert cfg.optimizer.lr == 1e-3 and isinstance(cfg.optimizer.lr, float)
    assert cfg.supernets == ("xxs", "s") and cfg.optimizer.betas == (0.8, 0.9)
    assert cfg.train.max_steps_per_epoch is None and cfg.kd.alpha == 0.3 and cfg.data.batch_size == 8
    assert cfg.data.seed == cfg.seed
    for name in ("cifar10", "imagenet"):
        assert load_config(name).train.epochs > 0
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for field in ("optimizer.freeze_inactive", "train.sampler", "data.split_seed", "kd.teacher",
                  "ray.cpus_per_worker", "mlflow.tracking_uri", "eval.num_random_subnets"):
        assert field in help_text
    assert main(["--config", "digits", "--set", "train.epochs=7", "--print-config"]) == 0
    assert "epochs: 7" in capsys.readouterr().out


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.lrr=1", "unknown config field optimizer.lrr; did you mean optimizer.lr"),
    ("optimizer.lr=fast", "optimizer.lr = 'fast' is invalid"),
    ("train.sampler=greedy", "train.sampler"),
    ("data.seed=3", "set the top-level `seed`"),
    ("data.dataset=mnist", "DataConfig.dataset = 'mnist' is invalid"),
    ("train.amp=half", "train.amp = 'half' is invalid"),
])
def test_invalid_config_field_gives_one_clear_error(override, message, tmp_path, capsys) -> None:
    assert main(["--config", "digits", "--output-dir", str(tmp_path), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_plan_training_shares_small_machines_fractionally() -> None:
    cfg = load_config("digits")
    laptop = Cluster((NodeGroup("head", 2.0, 0.0, 1, 1, head=True),), max_known=True)
    plan = plan_training(cfg, ["xxs", "xs", "s"], laptop)
    assert {p.cpus_per_worker for p in plan.supernets.values()} == {0.66}
    assert {(p.torch_threads, p.gpus_per_worker) for p in plan.supernets.values()} == {(1, 0.0)}
    assert plan.fits_now and plan.fits_max
    gpus = Cluster((NodeGroup("head", 16.0, 4.0, 1, 1, head=True),), max_known=True)
    assert plan_training(cfg, ["xxs", "xs", "s"], gpus).supernets["xxs"].gpus_per_worker == 1.0


# --- bad inputs, checked before anything is written -------------------------------------------------


@pytest.mark.parametrize(("settings", "message"), [
    (["data.dataset=cifar10", "data.data_dir=/nonexistent/cifar"], "does not exist or is not a folder"),
    (["kd.kind=hard", "kd.teacher=timm:resnet10t"], "has no weights: nothing is downloaded"),
    (["kd.kind=hard", "kd.teacher=checkpoint:/nonexistent/teacher.pt"], "does not exist"),
    (["input_profile=mars"], "no input profile 'mars'"),
])
def test_bad_inputs_fail_clearly_without_writing(settings, message, tmp_path, capsys) -> None:
    argv = ["--config", "digits", "--output-dir", str(tmp_path), "--supernets", "xxs"]
    for item in settings:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not any(tmp_path.iterdir())


def test_load_supernet_refuses_what_is_not_a_checkpoint(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not an autovit-ray supernet checkpoint"):
        load_supernet(tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not an autovit-ray supernet checkpoint"):
        load_supernet(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an autovit-ray supernet checkpoint"):
        load_supernet(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_supernet(tmp_path / "missing")
    with pytest.raises(ValueError, match="no checkpoint of supernet 'xxs'"):
        find_checkpoint(tmp_path, "xxs")


def test_checkpoint_round_trip_is_weights_only_and_atomic(tmp_path, one_thread) -> None:
    cfg = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs"])
    trainer = SupernetTrainer(cfg, _digits_space(), log=lambda _: None)
    directory = save_checkpoint(tmp_path / "epoch_0001", trainer.state_dict({"val_top1_largest": 1.0}))
    assert sorted(p.name for p in directory.iterdir()) == ["meta.json", "state.pt"]  # no temp files left
    state = torch.load(directory / "state.pt", weights_only=True)
    assert isinstance(state["rng_states"]["numpy"]["keys"], torch.Tensor)
    assert state["config"]["data"]["split_seed"] == 0 and "val_size" in state["config"]["data"]
    model, space, config = load_supernet(directory)
    assert space.fingerprint() == state["space"]["fingerprint"] and config.data == cfg.data
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 trainer.model.state_dict().values()))


def test_resume_on_another_data_path_is_refused(tmp_path, one_thread) -> None:
    """A supernet continues on the data path it started on: one trained before the in-memory path
    became the default (no data_path recorded) must not switch to it halfway."""
    from autovit_ray.checkpoint import checkpoint_root
    from autovit_ray.ray_train import check_resume

    cfg = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs", f"output_dir={tmp_path}"])
    space = _digits_space()
    trainer = SupernetTrainer(cfg, space, log=lambda _: None)
    assert trainer.state_dict()["data_path"] == "tensors"
    directory = save_checkpoint(checkpoint_root(cfg.experiment_dir, "xxs") / "epoch_0001", trainer.state_dict())
    assert check_resume(cfg, {"xxs": space})["xxs"] == directory
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["data_path"] == "tensors"
    del meta["data_path"]  # an older checkpoint: digits streamed through timm's no_aug transform
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="trained on data path 'timm-no-aug', this config resolves to "
                                         "'tensors'; set data.in_memory_limit_mb: 0 to resume it"):
        check_resume(cfg, {"xxs": space})
    streamed = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs", f"output_dir={tmp_path}",
                                                                   "data.in_memory_limit_mb=0"])
    assert check_resume(streamed, {"xxs": space})["xxs"] == directory


def test_the_old_profile_key_of_a_training_config_still_loads(tmp_path) -> None:
    """`profile` (the input profile) was renamed `input_profile`: a YAML file or `--set` with the old key
    loads with a deprecation message; both keys at once is an error."""
    old = tmp_path / "old.yaml"
    old.write_text("name: old\nprofile: digits\ndata: {dataset: digits}\n")
    with pytest.warns(FutureWarning, match="profile in training config .* is deprecated: it was renamed input_profile"):
        assert load_config(old).input_profile == "digits"
    with pytest.warns(FutureWarning, match="--set profile is deprecated: it was renamed --set input_profile"):
        assert load_config("digits", ["profile=cifar10"]).input_profile == "cifar10"
    assert "profile" not in load_config("digits").to_dict()
    old.write_text("name: old\nprofile: digits\ninput_profile: digits\n")
    with pytest.raises(ValueError, match="sets both profile and input_profile"):
        load_config(old)


def test_an_old_checkpoint_with_profile_in_its_config_loads_and_resumes(tmp_path, one_thread) -> None:
    """Checkpoints written before the rename store the training config with the key `profile`: they load
    (silently: the user wrote nothing old) and resume under a config that says `input_profile`."""
    import warnings

    from autovit_ray.checkpoint import checkpoint_root, read_record
    from autovit_ray.ray_train import check_resume
    from autovit_ray.training.config import config_from_dict

    cfg = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs", f"output_dir={tmp_path}"])
    space = _digits_space()
    trainer = SupernetTrainer(cfg, space, log=lambda _: None)
    directory = save_checkpoint(checkpoint_root(cfg.experiment_dir, "xxs") / "epoch_0001", trainer.state_dict())
    meta = json.loads((directory / "meta.json").read_text())
    state = torch.load(directory / "state.pt", weights_only=True)
    for stored in (meta, state):  # as the version before the rename wrote them
        stored["config"] = {("profile" if k == "input_profile" else k): v for k, v in stored["config"].items()}
    (directory / "meta.json").write_text(json.dumps(meta))
    torch.save(state, directory / "state.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation message about a file the code wrote
        assert check_resume(cfg, {"xxs": space})["xxs"] == directory
        assert config_from_dict(read_record(directory).config) == cfg
        _, _, loaded = load_supernet(directory)
    assert loaded.input_profile == "digits"
    other = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs", f"output_dir={tmp_path}",
                                                               "optimizer.lr=0.5"])
    with pytest.raises(ValueError, match="trained with another config \\(optimizer.lr"):
        check_resume(other, {"xxs": space})  # the check itself still compares


# --- Ray Train runs ------------------------------------------------------------------------------------


def test_three_supernets_train_concurrently_and_load_back(trained_digits_experiment) -> None:
    exp = trained_digits_experiment
    summary = json.loads((exp.dir / "train_summary.json").read_text())
    assert {s: r["status"] for s, r in summary.items()} == {s: "OK" for s in exp.supernets}
    # the workers imported this package, not another copy (a pinned benchmark checks the same)
    package = str(Path(autovit_ray.__file__).parent)
    assert {s: r["worker"]["code"] for s, r in summary.items()} == {s: package for s in exp.supernets}
    for name in exp.supernets:
        path = find_checkpoint(exp.dir, name, final=True)
        assert path.parent == exp.dir / "checkpoints" / name and path.name == "epoch_0002"
        model, space, config = load_supernet(path)
        assert space.name == name and space.input_profile.name == "digits"
        assert config.data.split_seed == 0 and config.data.dataset == "digits"
        meta = read_meta(path)
        assert meta["space"]["fingerprint"] == space.fingerprint() and meta["epoch"] == 2
        assert {"val_top1_smallest", "val_top1_largest", "train_images_per_s", "lr"} <= set(meta["metrics"])
        record = read_record(path / "state.pt")  # the typed reader: the same facts, from the dir or its file
        assert (record.directory, record.epoch, record.num_classes, record.planned_epochs) == (path, 2, 10, 2)
        assert record.finished and record.experiment_name == exp.name and record.config == config.to_dict()
        with torch.no_grad():
            assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_checkpoint_of_another_supernet_is_refused(trained_digits_experiment) -> None:
    path = find_checkpoint(trained_digits_experiment.dir, "xxs")
    with pytest.raises(ValueError, match="does not match search space 'xs'"):
        load_supernet(path, space="xs")
    with pytest.raises(ValueError, match="does not match"):
        load_supernet(path, space=load_space("xxs", input_profile="cifar10"))


def test_ranks_draw_the_same_subnets(trained_digits_experiment) -> None:
    for name in trained_digits_experiment.supernets:
        logs = trained_digits_experiment.dir / "arch_log" / name
        rank0, rank1 = (logs / "rank0.txt").read_text(), (logs / "rank1.txt").read_text()
        assert rank0 == rank1 and len(rank0.splitlines()) == 4  # 2 epochs x 2 steps
        assert len({line.split()[2] for line in rank0.splitlines()}) > 1  # and they vary per step


def test_three_mlflow_runs_have_metrics(trained_digits_experiment) -> None:
    from mlflow.tracking import MlflowClient

    exp = trained_digits_experiment
    client = MlflowClient(tracking_uri=f"sqlite:///{exp.dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(exp.name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["supernet"] for r in runs) == sorted(exp.supernets)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["ray_run_name"] == f"{exp.name}/{run.data.tags['supernet']}"
        assert run.data.tags["checkpoint_location"].endswith(f"checkpoints/{run.data.tags['supernet']}")
        assert run.data.params["optimizer.lr"] and run.data.params["data.split_seed"] == "0"
        history = client.get_metric_history(run.info.run_id, "val_top1_largest")
        assert [m.step for m in history] == [1, 2]
        # the data as an MLflow input: the digest of labels + split indices, and the split sizes
        (dataset_input,) = run.inputs.dataset_inputs
        record = dataset_record(load_supernet(find_checkpoint(exp.dir, "xxs"))[2].data)
        assert dataset_input.dataset.name == "digits" and dataset_input.dataset.digest == record["digest"]
        assert json.loads(dataset_input.dataset.profile)["sizes"] == record["sizes"]
        # MLflow's system-metrics monitor ran in the rank-0 worker
        assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics)
        assert run.data.tags["precision"] == "fp32"  # train.amp: auto on a CPU


def test_resume_with_another_config_is_refused(trained_digits_experiment, capsys) -> None:
    exp = trained_digits_experiment
    before = {p: p.stat().st_mtime for p in exp.dir.rglob("*") if p.is_file()}
    argv = tiny_train_argv(exp.output_dir, exp.name, "xxs", "optimizer.lr=0.5")
    assert main(argv) == 2
    assert "trained with another config (optimizer.lr" in capsys.readouterr().err
    assert before == {p: p.stat().st_mtime for p in exp.dir.rglob("*") if p.is_file()}


def test_one_arch_trains_standalone_and_loads_back(ray_session, tmp_path, capsys) -> None:
    """`train --arch`: one subnet from scratch, through the supernet machinery with a one-arch space."""
    from autovit_ray.plan import count_params

    space = _digits_space()
    arch = space.sample(random.Random(3))
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(arch.to_json())
    argv = ["--config", "digits", "--output-dir", str(tmp_path), "--arch", str(arch_file)]
    for item in (*TINY_TRAIN_SETTINGS, "train.epochs=1"):
        argv += ["--set", item]
    assert main(argv) == 0
    experiment = tmp_path / f"digits-demo-arch-{arch.arch_hash}"
    checkpoint = find_checkpoint(experiment, "xxs")
    model, trained_space, config = load_supernet(checkpoint)  # the space comes from experiment/spaces/
    assert trained_space.largest() == arch == trained_space.smallest()
    assert sum(p.numel() for p in model.parameters()) == count_params(arch, 10, space)  # its weights only
    meta = read_meta(checkpoint)
    assert set(meta["metrics"]) >= {"val_top1_largest", "val_top1_smallest"}
    assert not any(k.startswith("val_top1_random") for k in meta["metrics"])  # the one arch, scored once
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{experiment / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(experiment.name).experiment_id])
    assert run.data.tags["standalone_arch"] == arch.to_json()

    # an arch of another input profile or another space, or no arch at all: one error, nothing written
    capsys.readouterr()
    for bad, message in ((load_space("xxs", input_profile="cifar10").smallest().to_json(),
                          "is not a subnet of supernet 'xxs' under the config's input profile 'digits'"),
                         (json.dumps({**arch.to_dict(), "stem_width": 17}), "stem_width"),
                         (str(tmp_path / "missing.json"), "neither inline JSON, an existing arch JSON file")):
        before = sorted(tmp_path.rglob("*"))
        assert main(["--config", "digits", "--output-dir", str(tmp_path), "--arch", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
        assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.integration  # a fault test (two launches): runs in CI's integration step
def test_crashed_run_resumes_exactly_with_the_same_name(ray_session, tmp_path, one_thread) -> None:
    """A single-worker run crashes after epoch 1 (no restarts left); rerunning the same command with the
    same --name resumes from the epoch-1 checkpoint (`ray.train.get_checkpoint()`: Ray Train restores the
    run from its storage) and finishes epoch 2 with the weights of an uninterrupted run (in-process, same
    seed) to 1e-6. A crash with restarts left takes the same path inside one launch (FailureConfig).
    The data path is the batched one with the full recipe (RandAugment, erasing, Mixup / CutMix), so
    the augmentation's randomness is replayed too."""
    recipe = ("data.augment=batched", "data.mixup=0.8", "data.cutmix=1.0")
    argv = tiny_train_argv(tmp_path, "resume", "xxs", "train.arch_log=true", *recipe)
    assert main(argv + ["--set", "train.fail_after_epoch=1", "--set", "ray.max_failures=0"]) == 1
    assert [p.name for p in list_checkpoints(tmp_path / "resume", "xxs")] == ["epoch_0001"]
    assert json.loads((tmp_path / "resume" / "train_summary.json").read_text())["xxs"]["status"] == "FAILED"
    assert main(argv) == 0
    arch_log = (tmp_path / "resume" / "arch_log" / "xxs" / "rank0.txt").read_text().splitlines()
    assert [line.split()[:2] for line in arch_log] == [["1", "0"], ["1", "1"], ["2", "0"], ["2", "1"]]
    resumed = load_checkpoint(find_checkpoint(tmp_path / "resume", "xxs", final=True))

    cfg = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs", *recipe])
    reference = SupernetTrainer(cfg, _digits_space(), log=lambda _: None)
    assert reference.loaders.data_path == "batched" and reference.loaders.mixup_fn is not None
    reference.fit(lambda epoch, metrics: None)
    assert resumed["epoch"] == 2 and resumed["global_step"] == reference.global_step == 4
    for key, value in reference.model.state_dict().items():
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=1e-6, rtol=0), key


@pytest.mark.parametrize("regularize, expected", [("largest", [0.3, 0.0, 0.0]), ("all", [0.3, 0.3, 0.3])])
def test_dropout_on_the_largest_subnet_only(regularize, expected, one_thread) -> None:
    """model.regularize=largest (BigNAS): a sandwich step runs the largest subnet with the dropout and
    the smallest and the random one without it."""
    cfg = load_config("digits", list(TINY_TRAIN_SETTINGS) + [
        "supernets=xxs", "train.sampler=sandwich", "train.sandwich_random=1", "kd.kind=soft", "kd.inplace=true",
        "model.drop_rate=0.3", f"model.regularize={regularize}"])
    trainer = SupernetTrainer(cfg, _digits_space(), log=lambda _: None)
    seen: list[float] = []
    trainer.model.head.dropout.register_forward_pre_hook(lambda module, _args: seen.append(module.p))
    x, y = next(iter(trainer.loaders.train))
    archs = sample_step_archs(trainer.space, "sandwich", cfg.seed, 1, 0, 1)
    assert archs[0] == trainer.space.largest() and len(archs) == 3
    trainer.train_step(x, y, archs)
    assert seen == expected
    with pytest.raises(ValueError, match="model.regularize = 'smallest' is invalid"):
        load_config("digits", ["model.regularize=smallest"])


def test_concurrent_fits_return_their_results_and_raise_their_errors() -> None:
    assert run_in_daemon_threads({"xxs": lambda: 1, "xs": lambda: 2}) == {"xxs": 1, "xs": 2}

    def broken() -> int:
        raise RuntimeError("worker group failed")

    with pytest.raises(RuntimeError, match="worker group failed"):
        run_in_daemon_threads({"xxs": lambda: 1, "xs": broken})


def _interrupted_in(seconds: float, calls: dict) -> float:
    """Runs `run_in_daemon_threads(calls)` with Ctrl-C after `seconds`; the seconds until it raised."""
    # Python's own Ctrl-C handler: an earlier test's Ray Tune run may have left its own in place
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(seconds, _thread.interrupt_main).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_in_daemon_threads(calls)
        return time.monotonic() - started
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_waits_for_a_call_at_most_the_stop_timeout(monkeypatch) -> None:
    """A call that nothing stops must not hold the command's exit for long: it runs in a daemon thread
    (a ThreadPoolExecutor's threads are joined at interpreter exit; the README test's Ctrl-C during Ray
    Train's start-up then waited for 30 epochs), and Ctrl-C waits for it STOP_TIMEOUT_S at most."""
    monkeypatch.setattr(ray_train, "STOP_TIMEOUT_S", 0.5)
    release, finished = threading.Event(), threading.Event()
    assert _interrupted_in(0.3, {"xxs": lambda: release.wait(10) and finished.set()}) < 5
    assert not finished.is_set()
    assert [t.daemon for t in threading.enumerate() if t.name == "fit-xxs"] == [True]
    release.set()


def test_ctrl_c_kills_the_controller_a_fit_waits_on_then_waits_for_the_fit(ray_session) -> None:
    """Ctrl-C during a fit in a thread: the Ray Train controller the fit waits on (the `controller` local
    of Ray Train's frame) is killed and the fit has returned before Ctrl-C reaches the caller, which then
    shuts Ray down (a thread calling Ray after that ended the command with exit status 1). A call that
    had not begun does not begin."""
    import ray

    @ray.remote(num_cpus=0)
    class Controller:
        def run(self) -> None:
            time.sleep(600)

    ended: list[str] = []

    def fit() -> None:
        controller = Controller.remote()
        try:
            ray.get(controller.run.remote())
        except ray.exceptions.RayActorError:
            ended.append("killed")

    assert _interrupted_in(2.0, {"xxs": fit}) < 30
    assert ended == ["killed"] and not ray_train._RUNNING and not ray_train._STOPPING.is_set()
    ray_train._STOPPING.set()  # as while stop_fits waits: a thread starting now does not call
    try:
        with pytest.raises(KeyboardInterrupt):
            run_in_daemon_threads({"xs": lambda: ended.append("began")})
    finally:
        ray_train._STOPPING.clear()
    assert ended == ["killed"]


def test_ray_trains_frame_still_holds_its_controller_as_stop_fits_reads_it() -> None:
    """`stop_fits` finds a fit's controller as the `controller` local of Ray Train's frame that created it:
    a Ray release that renames it would leave Ctrl-C waiting STOP_TIMEOUT_S, then shutting Ray down under
    a starting fit (exit status 1)."""
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    assert "controller" in DataParallelTrainer._initialize_and_run_controller.__code__.co_varnames
