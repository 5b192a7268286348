"""Reference models trained with the supernets' recipe (`autovit_ray.training.reference`), their use in
`compare --train-references`, and the one-sentence verdict of the comparison."""

from __future__ import annotations

import json

import pytest
import torch

from autovit_ray.compare import NOT_TRAINED, ExperimentFacts, reference_candidates, verdict
from autovit_ray.training.config import load_config
from autovit_ray.training.reference import ReferenceSpec, build_reference, train_reference

DIGITS_STRIDES = (1, 1, 1, 2, 1, 1, 1, 1)
SPEC = ReferenceSpec("test_resnet", resolution=8, strides=DIGITS_STRIDES)


def _cfg(*extra: str):
    return load_config("digits", ["train.epochs=2", "train.max_steps_per_epoch=2", "eval.max_batches=1",
                                  "data.batch_size=16", *extra])


def _weights_equal(a, b) -> bool:
    a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trains_with_the_recipe_and_resumes_exactly(tmp_path):
    cfg = _cfg()
    weights = train_reference(cfg, SPEC, tmp_path / "whole", log=lambda _: None)
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0.0 <= h["val_top1"] <= 100.0 and h["train_loss"] > 0 for h in history)

    # Killed after epoch 1 (the log line follows the epoch's state): a rerun resumes at epoch 2 and
    # ends with the same weights as the uninterrupted run.
    def kill_after_epoch_1(line: str) -> None:
        if "epoch 1/2" in line:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_reference(cfg, SPEC, tmp_path / "cut", log=kill_after_epoch_1)
    assert not (tmp_path / "cut" / "model.pt").exists()
    lines: list[str] = []
    resumed = train_reference(cfg, SPEC, tmp_path / "cut", log=lines.append)
    assert len(lines) == 1 and "epoch 2/2" in lines[0]
    assert _weights_equal(weights, resumed)
    # finished: a rerun trains nothing
    lines.clear()
    assert train_reference(cfg, SPEC, tmp_path / "cut", log=lines.append) == resumed and lines == []


def test_other_settings_or_a_corrupt_state_train_again(tmp_path):
    out = tmp_path / "ref"
    train_reference(_cfg("train.epochs=1"), SPEC, out, log=lambda _: None)
    lines: list[str] = []
    train_reference(_cfg("train.epochs=1", "optimizer.lr=1e-4"), SPEC, out, log=lines.append)
    assert "trained with other settings" in lines[0] and "epoch 1/1" in lines[1]
    (out / "state.pt").write_bytes(b"not a torch file")
    lines.clear()
    train_reference(_cfg("train.epochs=1"), SPEC, out, log=lines.append)
    assert "unreadable" in lines[0] and "epoch 1/1" in lines[1]


@pytest.mark.parametrize("profile, strides, note", [
    ("imagenet", (2, 1, 2, 2, 2, 2), ""),  # MobileViT's own
    ("cifar10", (1, 1, 2, 2, 2, 2), "strides (1, 1, 2, 2, 2, 2)"),  # stem stride 1
    ("digits", (1, 1, 1, 2, 1, 1), "strides (1, 1, 1, 2, 1, 1)"),
])
def test_mobilevit_takes_the_profile_strides(profile, strides, note):
    from autovit_ray.space import load_space

    profile_strides = load_space("xxs", input_profile=profile).input_profile.strides
    model, text = build_reference("mobilevit_xxs", 10, profile_strides)
    convs = [model.stem.conv, *(stage[0].conv2_kxk.conv for stage in model.stages)]
    assert tuple(c.stride[0] for c in convs) == strides and text.startswith(note)
    resolution = load_space("xxs", input_profile=profile).resolutions[0]
    final = model.forward_features(torch.zeros(1, 3, resolution, resolution))
    # the last feature map of the peer is the searched models' (the profile's total stride)
    total = 1
    for s in profile_strides:
        total *= s
    assert final.shape[-1] == resolution // total


def test_other_models_get_the_profile_stem_stride():
    _, note = build_reference("test_resnet", 10, DIGITS_STRIDES)  # no stem.conv: timm's strides, said so
    assert "not applied" in note
    model, note = build_reference("test_vit", 10, None)
    assert note == ""


def test_unknown_reference_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        train_reference(_cfg(), ReferenceSpec("no_such_net", 8), tmp_path)


def test_compare_trains_references_without_checkpoints(finished_digits_search, tmp_path):
    facts = ExperimentFacts(num_classes=10, input_profile="digits", supernet="xxs",
                            checkpoint=str(finished_digits_search.checkpoint))
    lines: list[str] = []
    (trained,) = reference_candidates(["test_resnet"], {}, facts, 8, None, 2, train_dir=tmp_path, log=lines.append)
    (untrained,) = reference_candidates(["test_resnet"], {}, facts, 8, None, 2)
    assert isinstance(trained.test_top1, float) and 0.0 <= trained.test_top1 <= 100.0
    assert "trained here with the supernets' recipe" in trained.note
    assert (tmp_path / "test_resnet" / "model.pt").is_file() and (tmp_path / "test_resnet" / "history.json").is_file()
    assert any("training test_resnet with the supernets' recipe" in line for line in lines)
    assert untrained.test_top1 is None  # without train_dir nothing is trained


def _row(model: str, kind: str, top1, latency: float) -> dict:
    return {"model": model, "kind": kind, "test_top1": top1, "latency_ms": latency}


def test_verdict_says_whether_searched_models_beat_the_trained_reference():
    peer = _row("mobilevit_xxs", "reference", 95.0, 1.0)
    won = verdict([_row("a", "searched", 97.0, 0.5), _row("b", "searched", 99.0, 1.5), peer], "torch-cpu", 400)
    assert won.startswith("On this machine (torch-cpu), 1 of 2 searched models beat mobilevit_xxs")
    assert "a has 97.00% test top-1 against 95.00%, +8 of 400 test images, at 0.50x its measured latency" in won
    lost = verdict([_row("b", "searched", 99.0, 1.5), _row("c", "searched", 90.0, 0.5), peer], "torch-cpu")
    assert "no searched model beats mobilevit_xxs" in lost and "the most accurate, b has 99.00% test top-1 " \
        "against 95.00%, at 1.50x" in lost
    assert verdict([_row("a", "searched", 97.0, 0.5), _row("r", "reference", NOT_TRAINED, 1.0)], "x") is None


def test_verdict_with_a_paired_test_calls_noise_noise():
    from autovit_ray.stats import paired_difference

    peer = _row("mobilevit_xxs", "reference", 97.77, 1.0)
    a = _row("a", "searched", 98.33, 0.8)
    # the demo's case: +2 of 359 test images
    noise = paired_difference([1] * 353 + [0] * 6, [1] * 351 + [0] * 8, resamples=2000)
    text = verdict([a, peer], "torch-cpu", 359, {"a": noise})
    assert "no searched model beats mobilevit_xxs significantly" in text and "no significant difference" in text
    assert "McNemar p = 0.5" in text and "on 359 test images" in text
    clear = paired_difference([1] * 90 + [0] * 10, [1] * 60 + [0] * 40, resamples=2000)
    text = verdict([a, peer], "torch-cpu", 100, {"a": clear})
    assert text.startswith("On this machine (torch-cpu), 1 of 1 searched models beat mobilevit_xxs (a higher test "
                           "top-1, its paired interval above zero, at equal or lower latency)")
    # significantly better but slower: not a win at the budget
    slow = _row("a", "searched", 98.33, 1.2)
    assert "no searched model beats" in verdict([slow, peer], "torch-cpu", 100, {"a": clear})


def test_a_reference_run_resumes_across_settings_added_to_the_code_since():
    """A run saved by older code lacks the settings added since: it resumes while they hold their
    defaults (the behaviour it was trained with), not when one is set, nor when any setting changed."""
    import copy

    from autovit_ray.training.config import load_config
    from autovit_ray.training.reference import ReferenceSpec, _fingerprint, same_settings

    spec = ReferenceSpec("mobilevit_xxs", 8)
    cfg = load_config("digits")
    current = _fingerprint(cfg, spec, data_path="tensors")
    older = copy.deepcopy(current)
    del older["config"]["schedule"]["kind"], older["config"]["data"]["crop"]  # added later, at defaults
    assert same_settings(current, current) and same_settings(older, current)
    onecycle = _fingerprint(load_config("digits", ["schedule.kind=onecycle"]), spec, data_path="tensors")
    assert not same_settings(older, onecycle)  # a new setting away from its default
    other = _fingerprint(load_config("digits", ["optimizer.lr=0.01"]), spec, data_path="tensors")
    assert not same_settings(current, other) and not same_settings(older, other)
    removed = copy.deepcopy(current)
    removed["config"]["data"]["gone"] = 1  # a setting the code no longer has
    assert not same_settings(removed, current)
