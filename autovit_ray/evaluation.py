"""Evaluating a subnet, the same way in training and in search: extract it from the supernet (a
copy: the supernet's own BatchNorm statistics stay intact), recalibrate its BatchNorm on the
calibration split, then count top-1 / top-5 and the loss on an evaluation split. Plain torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import resize_batch
from .nn import AutoViTNet, Supernet
from .space import Arch


@dataclass(frozen=True)
class Score:
    """Sums over the evaluated images (add them up across ranks before dividing)."""

    correct1: int
    correct5: int
    loss_sum: float
    seen: int


@torch.no_grad()
def score(model: nn.Module, loader: Iterable[Any], resolution: int | None = None,
          device: torch.device | str | None = None, max_batches: int | None = None) -> Score:
    """`model` in eval mode on `loader` ((images, labels) batches, resized to `resolution` when given)."""
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    for i, (images, labels) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images, labels = images.to(device), labels.to(device)
        logits = model(resize_batch(images, resolution) if resolution else images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((logits.argmax(dim=-1) == labels).sum())
        correct5 += int((top == labels[:, None]).any(dim=1).sum())
        seen += labels.numel()
    return Score(correct1, correct5, loss_sum, seen)


@torch.no_grad()
def correct_vector(model: nn.Module, loader: Iterable[Any], resolution: int | None = None) -> list[bool]:
    """Per-image top-1 correctness over a whole split, in the loader's (fixed) order: the input of a
    paired comparison (`autovit_ray.stats.paired_difference`)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[bool] = []
    for images, labels in loader:
        images = resize_batch(images, resolution) if resolution else images
        out += (model(images.to(device)).argmax(dim=-1).cpu() == labels).tolist()
    return out


def calibrated_copy(supernet: Supernet, arch: Arch, calib_loader: Iterable[Any], calib_batches: int | None = None,
                    device: torch.device | str | None = None) -> AutoViTNet:
    """The static subnet of `arch` (on `device`) with BatchNorm re-estimated on `calib_loader`, in eval mode."""
    subnet = supernet.get_active_subnet(arch)
    if device is not None:
        subnet = subnet.to(device)
    recalibrate_bn(subnet, calib_loader, num_batches=calib_batches, resolution=arch.resolution, device=device)
    return subnet.eval()


def evaluate_subnet(supernet: Supernet, arch: Arch, calib_loader: Iterable[Any], loader: Iterable[Any],
                    device: torch.device | str | None = None, max_batches: int | None = None,
                    calib_batches: int | None = None) -> Score:
    """Extract `arch`, recalibrate its BatchNorm, score it on `loader` (batches resized to its resolution)."""
    subnet = calibrated_copy(supernet, arch, calib_loader, calib_batches, device)
    return score(subnet, loader, arch.resolution, device, max_batches)


def _is_batchnorm(m: nn.Module) -> bool:
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.track_running_stats
    # duck-typed BN (e.g. a dynamic BN that does not subclass _BatchNorm): needs the same contract
    return (isinstance(getattr(m, "running_mean", None), torch.Tensor) and hasattr(m, "momentum")
            and callable(getattr(m, "reset_running_stats", None)))


def recalibrate_bn(model: nn.Module, loader: Iterable[Any], num_batches: int | None = None,
                   resolution: int | None = None, device: torch.device | str | None = None) -> nn.Module:
    """Re-estimate every BatchNorm's running mean / var on `loader` (use the calib loader).

    The running stats are reset and then averaged over the batches with momentum=None (a cumulative
    average, not an exponential one) under torch.no_grad(). Only the BN layers are put in train mode;
    every other module stays in eval mode, so dropout / drop-path do not disturb the statistics. BN
    layers are `nn.modules.batchnorm._BatchNorm` instances (dynamic BN layers must subclass it and honour
    momentum=None as `_BatchNorm.forward` does) or modules with `running_mean`, `momentum` and
    `reset_running_stats`. Afterwards every module's train/eval flag and momentum are restored.

    A sliced (dynamic) BN's inactive channels end up at mean 0 / var 1: recalibrate the subnet you are
    about to evaluate, on a copy if the supernet's own stats must survive. Batches may be (x, y) or x;
    `resolution` resizes them first (`resize_batch`); `device` defaults to the model's.
    """
    bns = [m for m in model.modules() if _is_batchnorm(m)]
    if not bns:
        return model
    if device is None:
        tensor = next(iter(model.parameters()), None)
        device = tensor.device if tensor is not None else bns[0].running_mean.device
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        seen = 0
        with torch.no_grad():
            for batch in loader:
                if num_batches is not None and seen >= num_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                x = x.to(device, non_blocking=True)
                model(resize_batch(x, resolution) if resolution else x)
                seen += 1
        if seen == 0:
            raise ValueError("recalibrate_bn got no batches: expected a non-empty loader and num_batches >= 1")
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, training in modes.items():
            m.training = training
    return model


__all__ = ["Score", "calibrated_copy", "evaluate_subnet", "recalibrate_bn", "score"]
