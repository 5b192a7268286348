"""The one evaluation API (`autovit_ray.evaluation`): `evaluate`, `calibrate` and `calibrated_subnet`."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from conftest import randomised_supernet
from torch import nn

from autovit_ray.data import DataConfig, build_loader
from autovit_ray.evaluation import calibrate, calibrated_subnet, evaluate

DIGITS = DataConfig(dataset="digits", batch_size=32, calib_size=64)


# --- evaluate --------------------------------------------------------------------------------------


def test_evaluate_sums_top1_top5_loss_and_each_image() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7)).train()
    batches = [(torch.randn(5, 3, 8, 8), torch.randint(0, 7, (5,))) for _ in range(3)]
    score = evaluate(model, batches, resolution=4, per_image=True)
    assert not model.training  # evaluated in eval mode
    with torch.no_grad():
        logits = torch.cat([model(nn.functional.interpolate(x, size=(4, 4), mode="bilinear", antialias=True))
                            for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    hits = (logits.argmax(dim=-1) == labels).tolist()
    assert score.seen == 15 and score.correct_per_image == tuple(hits) and score.correct1 == sum(hits)
    assert score.correct5 == int((logits.topk(5, dim=1).indices == labels[:, None]).any(dim=1).sum())
    assert score.loss_sum == pytest.approx(float(nn.functional.cross_entropy(logits, labels, reduction="sum")),
                                           rel=1e-5)
    assert score.top1 == pytest.approx(100.0 * sum(hits) / 15)
    first = evaluate(model, batches, resolution=4, max_batches=1)
    assert first.seen == 5 and first.correct1 == sum(hits[:5]) and first.correct_per_image == ()


# --- calibrate: BatchNorm statistics ---------------------------------------------------------------


class SlicedBN(nn.BatchNorm2d):
    """A dynamic BN over the leading `active` channels (as a supernet's), honouring momentum=None."""

    active = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked += 1
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return nn.functional.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c],
                                        self.bias[:c], self.training, factor, self.eps)


class ModeProbe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return x


def test_calibrate_estimates_data_stats_and_restores_modes() -> None:
    torch.manual_seed(0)
    probe = ModeProbe()
    model = nn.Sequential(probe, nn.BatchNorm2d(3), nn.Dropout(0.5), SlicedBN(4))
    model.train()
    model[2].eval()  # a mixed-mode model: each module's own flag must come back
    # two batches with different means: a cumulative average gives exactly their mean, an EMA would not
    b1 = torch.randn(64, 3, 4, 4) * 2.0 + 1.0
    b2 = torch.randn(64, 3, 4, 4) * 2.0 + 5.0
    loader = [(b1, torch.zeros(64)), (b2, torch.zeros(64)), (b2 + 100, torch.zeros(64))]
    calibrate(model, loader, num_batches=2)

    bn = model[1]
    expected_mean = (b1.mean((0, 2, 3)) + b2.mean((0, 2, 3))) / 2
    expected_var = (b1.var((0, 2, 3), unbiased=True) + b2.var((0, 2, 3), unbiased=True)) / 2
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-4)
    assert bn.momentum == 0.1 and model[3].momentum == 0.1  # restored
    assert probe.seen == [False, False]  # non-BN modules ran in eval mode
    assert model.training and model[1].training and not model[2].training
    # the sliced BN recalibrated its 3 active channels (input has 3), the 4th is reset to 0 / 1
    sliced = model[3]
    assert torch.allclose(sliced.running_mean[:3], torch.zeros(3), atol=1e-5)  # input to it is normalised
    assert sliced.running_mean[3] == 0 and sliced.running_var[3] == 1

    model.eval()
    calibrate(model, [b1])  # bare tensors as batches
    assert not any(m.training for m in model.modules())
    assert torch.allclose(bn.running_mean, b1.mean((0, 2, 3)), atol=1e-5)
    with pytest.raises(ValueError, match="no batches"):
        calibrate(model, [])


def test_calibrate_on_the_calib_loader() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10)).eval()
    before = model[1].running_mean.clone()
    calibrate(model, build_loader(DIGITS, "calib"), num_batches=2, resolution=12)
    assert not torch.equal(model[1].running_mean, before)
    assert model[1].num_batches_tracked == 2 and not model.training


# --- calibrated_subnet ---------------------------------------------------------------------------


def test_calibrated_subnet_leaves_the_supernet_and_equals_its_reference_path(one_thread) -> None:
    supernet = randomised_supernet("xxs", "digits")
    before = copy.deepcopy(supernet.state_dict())
    calib = build_loader(DIGITS, "calib")
    rng = random.Random(0)
    for arch in [supernet.space.smallest(), supernet.space.largest(), supernet.space.sample(rng)]:
        alone = calibrated_subnet(supernet, arch, calib, num_batches=2)
        subnet, reference = calibrated_subnet(supernet, arch, calib, num_batches=2, with_reference=True)
        assert not alone.training and not subnet.training and not reference.training
        # the subnet calibrated alone and the one extracted from the calibrated supernet copy are the same
        # numbers, so training and search (alone) score what export (with its reference) writes
        ours, theirs = alone.state_dict(), subnet.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        x = next(iter(calib))[0][:4]
        with torch.no_grad():
            assert torch.equal(reference(x), subnet(x))
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())  # own statistics intact
