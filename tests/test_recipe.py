"""The training recipe's plumbing (issue 29): the crop, padding, colour jitter and normalisation of
one recipe are the same operations, in the same order, on timm's PIL path and the batched path; the
one-cycle schedule; the peer's small-input adaptations and its patch-size fix; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from autovit_ray.data import DataConfig, PadCrop, build_transform, train_ops
from autovit_ray.training.config import load_config
from autovit_ray.training.optim import OneCycleSchedule, build_scheduler
from autovit_ray.training.reference import (
    ReferenceSpec,
    attention_tokens,
    build_spec,
)

CIFAR = {"dataset": "cifar10", "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
RECIPES = {
    "the old cifar10 recipe": {"auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25},
    "pad-crop + flip": {"crop": "pad", "pad": 4, "auto_augment": None, "re_prob": 0.0, **CIFAR},
    "pad-crop + RandAugment m5": {"crop": "pad", "auto_augment": "rand-m5-mstd0.5-inc1", "re_prob": 0.0, **CIFAR},
    "resize only + erasing": {"crop": "none", "auto_augment": None, "re_prob": 0.5, "hflip": 0.0},
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_one_recipe_runs_the_same_ops_in_the_same_order_on_both_paths(recipe):
    cfg = DataConfig(**{"dataset": "cifar10", **RECIPES[recipe]})
    timm_ops, batched_ops = train_ops(cfg, "timm", 32), train_ops(cfg, "batched", 32)
    assert timm_ops == batched_ops
    assert [op for op, _ in timm_ops][-2 if cfg.re_prob else -1] == "normalize"


def test_colour_jitter_is_only_what_the_config_says():
    # timm's create_transform adds ColorJitter(0.4) whenever no auto-augment policy is set
    plain = DataConfig(dataset="cifar10", crop="pad", auto_augment=None, re_prob=0.0)
    assert "color-jitter" not in [op for op, _ in train_ops(plain, "timm", 32)]
    jitter = DataConfig(dataset="cifar10", crop="pad", auto_augment=None, re_prob=0.0, color_jitter=0.3,
                        augment="timm")
    assert ("color-jitter", 0.3) in train_ops(jitter, "timm", 32)
    with pytest.raises(ValueError, match="color_jitter = 0.3 is invalid: expected 0 .*timm path only"):
        DataConfig(dataset="cifar10", color_jitter=0.3, augment="batched")


def test_pad_crop_keeps_the_image_within_its_padding():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(1, 255, (32, 32, 3), dtype=np.uint8))
    torch.manual_seed(0)
    for _ in range(20):
        out = np.asarray(PadCrop(32, 4)(img))
        assert out.shape == (32, 32, 3)
        # rows and columns of zeros (padding) only at the edges, at most 4 deep
        zero_rows = np.flatnonzero((out == 0).all(axis=(1, 2)))
        assert all(r < 4 or r >= 28 for r in zero_rows)
    assert np.array_equal(np.asarray(PadCrop(32, 0)(img)), np.asarray(img))


def test_bad_recipe_inputs():
    with pytest.raises(ValueError, match="DataConfig.pad = -1 is invalid: expected an integer >= 0"):
        DataConfig(dataset="cifar10", crop="pad", pad=-1)
    with pytest.raises(ValueError, match="DataConfig.crop = 'random' is invalid: expected None or one of"):
        DataConfig(dataset="cifar10", crop="random")
    with pytest.raises(ValueError, match="schedule.kind = 'step' is invalid: expected one of"):
        load_config("cifar10", extra={"schedule.kind": "step"})
    with pytest.raises(ValueError, match="schedule.warmup_fraction = 1.0 is invalid"):
        load_config("cifar10", extra={"schedule.kind": "onecycle", "schedule.warmup_fraction": 1.0})
    with pytest.raises(ValueError, match="unknown reference adaptation 'stem3'"):
        ReferenceSpec("mobilevit_xxs", 32, adaptation="stem3")


def test_one_cycle_schedule_warms_up_linearly_then_anneals_to_the_end():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=2e-3)
    cfg = load_config("cifar10", extra={"schedule.kind": "onecycle", "schedule.warmup_fraction": 0.2,
                                        "schedule.warmup_lr": 8e-5, "schedule.min_lr": 1e-6}).schedule
    schedule = build_scheduler(optimizer, epochs=10, steps_per_epoch=10, cfg=cfg)
    assert isinstance(schedule, OneCycleSchedule)
    lrs = []
    for step in range(101):
        schedule.step_update(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(8e-5) and lrs[20] == pytest.approx(2e-3) and lrs[100] == pytest.approx(1e-6)
    assert lrs[10] == pytest.approx((8e-5 + 2e-3) / 2)  # linear warm-up
    assert lrs[60] == pytest.approx(1e-6 + (2e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 0.5)))  # cosine
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:21])) and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    # a function of the step: a fresh schedule resumed at step 37 gives the same learning rate
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    build_scheduler(fresh, epochs=10, steps_per_epoch=10, cfg=cfg).step_update(37)
    assert fresh.param_groups[0]["lr"] == pytest.approx(lrs[37])
    linear = load_config("cifar10", extra={"schedule.kind": "onecycle", "schedule.anneal": "linear",
                                           "schedule.min_lr": 0.0}).schedule
    schedule = build_scheduler(optimizer, epochs=10, steps_per_epoch=10, cfg=linear)
    schedule.step_update(65)  # warm-up 30 steps: 35 of 70 annealing steps done
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.5)


@pytest.mark.parametrize("adaptation", ["stem1", "stage2"])
def test_peer_adaptations_and_the_patch_fix(adaptation):
    plain, _ = build_spec(ReferenceSpec("mobilevit_xxs", 32, adaptation=adaptation), 10)
    fixed, note = build_spec(ReferenceSpec("mobilevit_xxs", 32, adaptation=adaptation, min_tokens=4), 10)
    assert attention_tokens(plain, 32) == [16, 4, 1]  # the last block's 2x2 map in one 2x2 patch
    assert attention_tokens(fixed, 32) == [16, 4, 4]
    assert "patch sizes [2, 2, 1]" in note
    # the patch size changes no parameter: the same state dict shapes
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in fixed.state_dict().items()}
    with torch.no_grad():
        assert fixed(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_timm_path_pad_crop_transform_gives_normalised_tensors():
    cfg = DataConfig(**{"dataset": "cifar10", **RECIPES["pad-crop + flip"]})
    img = Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8))
    out = build_transform(cfg, train=True, resolution=32)(img)
    assert out.shape == (3, 32, 32)
    centre = (128 / 255 - np.array(CIFAR["mean"])) / np.array(CIFAR["std"])
    assert np.allclose(out[:, 16, 16].numpy(), centre, atol=1e-5)
