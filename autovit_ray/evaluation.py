"""The one evaluation API, the same in training, search, compare and the fidelity command (plain torch):

- `evaluate(model, loader)`: top-1 / top-5 / loss sums of a model in eval mode (and, when asked, each
  image's top-1 correctness, for paired comparisons);
- `calibrate(model, loader)`: re-estimate every BatchNorm's running statistics on the calibration split;
- `calibrated_subnet(supernet, arch, calib_loader)`: the static subnet of `arch`, extracted from the
  supernet (a copy: the supernet's own BatchNorm statistics stay intact) and calibrated.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard, TypeVar, overload

import torch
import torch.nn.functional as F
from torch import nn

from .data import resize_batch
from .nn import AutoViTNet, FewShotSupernet, Supernet
from .space import Arch


@dataclass(frozen=True)
class Score:
    """Sums over the evaluated images (add them up across ranks before dividing)."""

    correct1: int
    correct5: int
    loss_sum: float
    seen: int
    correct_per_image: tuple[bool, ...] = ()  # each image's top-1 hit in the loader's order (`per_image=True`)

    @property
    def top1(self) -> float:
        """Top-1 accuracy in % (0 for no images)."""
        return 100.0 * self.correct1 / max(self.seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], *, resolution: int | None = None,
             device: torch.device | str | None = None, max_batches: int | None = None,
             per_image: bool = False) -> Score:
    """`model` in eval mode on `loader` ((images, labels) batches, resized to `resolution` when given;
    the first `max_batches` only when given). `device` defaults to the model's. `per_image` also
    keeps each image's top-1 correctness: the input of a paired comparison
    (`autovit_ray.stats.paired_difference`)."""
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    correct_per_image: list[bool] = []
    for i, (images, labels) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images, labels = images.to(device), labels.to(device)
        logits = model(resize_batch(images, resolution) if resolution else images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = logits.argmax(dim=-1) == labels
        correct1 += int(hits.sum())
        correct5 += int((top == labels[:, None]).any(dim=1).sum())
        seen += labels.numel()
        if per_image:
            correct_per_image += hits.cpu().tolist()
    return Score(correct1, correct5, loss_sum, seen, tuple(correct_per_image))


@overload
def calibrated_subnet(supernet: Supernet | FewShotSupernet, arch: Arch, calib_loader: Iterable[Any], *,
                      num_batches: int | None = ..., device: torch.device | str | None = ...,
                      with_reference: Literal[False] = ...) -> AutoViTNet: ...


@overload
def calibrated_subnet(supernet: Supernet | FewShotSupernet, arch: Arch, calib_loader: Iterable[Any], *,
                      num_batches: int | None = ..., device: torch.device | str | None = ...,
                      with_reference: Literal[True]) -> tuple[AutoViTNet, Supernet | FewShotSupernet]: ...


def calibrated_subnet(supernet: Supernet | FewShotSupernet, arch: Arch, calib_loader: Iterable[Any], *,
                      num_batches: int | None = None, device: torch.device | str | None = None,
                      with_reference: bool = False
                      ) -> AutoViTNet | tuple[AutoViTNet, Supernet | FewShotSupernet]:
    """The static subnet of `arch` (on `device`, in eval mode) with its BatchNorm re-estimated on
    `calib_loader` (the calibration split; batches resized to `arch.resolution`). The supernet's own
    statistics stay intact.

    `with_reference=True` returns (subnet, reference) instead: the reference is a copy of the supernet
    with `arch` active and the same recalibrated statistics, the model an extracted or exported
    subnet is checked against. Then the copy is calibrated and the subnet extracted from it; the
    statistics are the same as those of the subnet calibrated alone (tests/test_evaluation.py)."""
    if not with_reference:
        subnet = supernet.get_active_subnet(arch)
        if device is not None:
            subnet = subnet.to(device)
        return calibrate(subnet, calib_loader, num_batches=num_batches, resolution=arch.resolution,
                         device=device).eval()
    reference = copy.deepcopy(supernet)
    if device is not None:
        reference = reference.to(device)
    reference.set_active(arch)
    calibrate(reference, calib_loader, num_batches=num_batches, resolution=arch.resolution, device=device)
    reference.eval()
    return reference.get_active_subnet(arch).eval(), reference


ModuleT = TypeVar("ModuleT", bound=nn.Module)


class _BatchNormLike(Protocol):
    """What `calibrate` uses of a BatchNorm layer (`_is_batchnorm` checks for it)."""

    running_mean: torch.Tensor
    momentum: float | None

    def reset_running_stats(self) -> None: ...

    def train(self, mode: bool = True) -> nn.Module: ...


def _is_batchnorm(m: nn.Module) -> TypeGuard[_BatchNormLike]:
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.track_running_stats
    # duck-typed BN (e.g. a dynamic BN that does not subclass _BatchNorm): needs the same contract
    return (isinstance(getattr(m, "running_mean", None), torch.Tensor) and hasattr(m, "momentum")
            and callable(getattr(m, "reset_running_stats", None)))


def calibrate(model: ModuleT, loader: Iterable[Any], *, num_batches: int | None = None,
              resolution: int | None = None, device: torch.device | str | None = None) -> ModuleT:
    """Re-estimate every BatchNorm's running mean / var on `loader` (use the calib loader); returns `model`.

    The running stats are reset and then averaged over the batches with momentum=None (a cumulative
    average, not an exponential one) under torch.no_grad(). Only the BN layers are put in train mode;
    every other module stays in eval mode, so dropout / drop-path do not disturb the statistics. BN
    layers are `nn.modules.batchnorm._BatchNorm` instances (dynamic BN layers must subclass it and honour
    momentum=None as `_BatchNorm.forward` does) or modules with `running_mean`, `momentum` and
    `reset_running_stats`. Afterwards every module's train/eval flag and momentum are restored.

    A sliced (dynamic) BN's inactive channels end up at mean 0 / var 1: calibrate the subnet you are
    about to evaluate, on a copy if the supernet's own stats must survive (`calibrated_subnet`).
    Batches may be (x, y) or x; `resolution` resizes them first (`resize_batch`); `device` defaults
    to the model's.
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
            raise ValueError("calibrate got no batches: expected a non-empty loader and num_batches >= 1")
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, training in modes.items():
            m.training = training
    return model


__all__ = ["Score", "calibrate", "calibrated_subnet", "evaluate"]
