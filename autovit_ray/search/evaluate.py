"""Evaluate subnets of a trained supernet with inherited weights (no Ray here).

Per request: extract the subnet (a copy: the supernet's own BatchNorm statistics stay intact),
recalibrate its BatchNorm on the fixed calibration subset of the training split, and measure it
on the held-out validation split. The test split is only read by `evaluate_split(..., "test")`,
which reports final models and never feeds selection.

With `EvalSettings.val_half` (0 or 1) the selection reads only that fixed half of the validation
split (positions 0, 2, 4, ... or 1, 3, 5, ... of its sorted indices), and `evaluate_split(arch,
"val_other")` scores a chosen model on the other half: an estimate not biased by the maximum that
selected it (the paper's Table 6 protocol).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from ..data import DataConfig, build_loader
from ..evaluation import calibrated_subnet, evaluate
from ..nn import FewShotSupernet, Supernet
from ..plan import count_macs, count_params
from ..space import Arch, SearchSpace

SELECTION_SPLIT = "val"


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How much data one evaluation reads (all of the split when `max_batches` is None)."""

    max_batches: int | None = None
    calib_batches: int | None = None
    batch_size: int | None = None
    val_half: int | None = None  # select on this fixed half (0 or 1) of the validation split; None: all of it

    def __post_init__(self) -> None:
        for name in ("max_batches", "calib_batches", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"EvalSettings.{name} must be a positive integer or None, got {value!r}")
        if self.val_half not in (None, 0, 1):
            raise ValueError(f"EvalSettings.val_half must be 0, 1 or None, got {self.val_half!r}")


class SubnetEvaluator:
    """Holds one supernet replica and its data; `evaluate(arch)` returns a metrics dict."""

    def __init__(self, supernet: Supernet | FewShotSupernet, space: SearchSpace, data: DataConfig,
                 settings: EvalSettings | None = None,
                 latency_fn: Callable[[Arch], float] | None = None, num_threads: int | None = None,
                 device: str = "cpu") -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        settings = settings or EvalSettings()
        if settings.batch_size:
            data = dataclasses.replace(data, batch_size=settings.batch_size)
        self.supernet, self.space, self.data, self.settings = supernet.eval(), space, data, settings
        self.latency_fn, self.device = latency_fn, device
        self._loaders: dict[tuple[str, int], Any] = {}
        self.evaluations = 0

    def _loader(self, split: str, resolution: int) -> Any:
        key = (split, resolution)
        if key not in self._loaders:
            half = self.settings.val_half
            part = None
            if split in ("val", "val_other") and half is not None:
                part = (half if split == "val" else 1 - half, 2)
            data_split = "val" if split == "val_other" else split
            self._loaders[key] = build_loader(self.data, data_split, resolution=resolution, part=part)
        return self._loaders[key]

    def evaluate(self, arch: Arch) -> dict[str, Any]:
        return self.evaluate_split(arch, SELECTION_SPLIT)

    def batches_per_evaluation(self, split: str, resolution: int) -> int:
        """Batches one evaluation of `split` reads: BN calibration, then the split (capped for 'val')."""
        calib = len(self._loader("calib", resolution))
        calib = min(calib, self.settings.calib_batches) if self.settings.calib_batches else calib
        batches = len(self._loader(split, resolution))
        if split == SELECTION_SPLIT and self.settings.max_batches:
            batches = min(batches, self.settings.max_batches)
        return calib + batches

    def evaluate_split(self, arch: Arch, split: str) -> dict[str, Any]:
        self.space.validate(arch)
        if split not in ("val", "val_other", "test"):
            raise ValueError(f"evaluate on 'val' (selection), 'val_other' (the validation half selection did "
                             f"not read) or 'test' (final report only), got {split!r}")
        if split == "val_other" and self.settings.val_half is None:
            raise ValueError("'val_other' needs EvalSettings.val_half: selection reads all of the validation split")
        start = time.perf_counter()
        # `max_batches` caps the selection's cost; the final reports read their whole split.
        max_batches = self.settings.max_batches if split == "val" else None
        subnet = calibrated_subnet(self.supernet, arch, self._loader("calib", arch.resolution), device=self.device,
                                   num_batches=self.settings.calib_batches)
        result = evaluate(subnet, self._loader(split, arch.resolution), resolution=arch.resolution,
                          device=self.device, max_batches=max_batches)
        seen = result.seen
        if seen == 0:
            raise ValueError(f"the {split!r} split gave no images to evaluate on")
        self.evaluations += 1
        num_classes = self.supernet.num_classes
        latency = self.latency_fn(arch) if self.latency_fn else math.nan
        return {
            "arch_json": arch.to_json(), "arch_hash": arch.arch_hash, "split": split,
            f"{split}_top1": 100.0 * result.correct1 / seen, f"{split}_top5": 100.0 * result.correct5 / seen,
            f"{split}_loss": result.loss_sum / seen, "images": seen,
            "params": count_params(arch, num_classes, self.space),
            "macs": count_macs(arch, num_classes, self.space),
            "latency_ms": latency, "eval_seconds": time.perf_counter() - start,
        }
