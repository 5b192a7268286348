"""Batches of the in-memory data paths, augmented as whole batches on the training device.

`TensorBatches` is the loader: it gathers a batch by index from the decoded tensors
(`autovit_ray.data.cache`), moves it to the training device and augments it there as a whole
(`autovit_ray.data.augment`: crop, flip, RandAugment with per-sample ops, random erasing, normalisation);
Mixup / CutMix stay in the training loop as with the timm path. The augmentation's randomness comes from
a generator seeded by (seed, epoch, step, rank), and the epoch's order from (seed, epoch), so a resumed
epoch replays the uninterrupted one exactly. Evaluation and BatchNorm recalibration read the same
tensors (resize, centre crop, normalise per batch).

Ranks: the training order is one permutation per epoch shared by all ranks, rank r taking items
r, r + w, ... of it (the remainder is dropped so every rank runs the same number of steps); val and
test give rank r the images r, r + w, ... without padding, as the timm path does; calib is not sharded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from .augment import AugmentConfig, eval_batch, train_batch
from .cache import ImageTensors


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class TensorBatches:
    """Batches (x float32 [B, 3, r, r] normalised, y int64 [B]) of one split, from in-memory tensors."""

    def __init__(self, tensors: ImageTensors, indices: np.ndarray, batch_size: int, *, train: bool,
                 augment: AugmentConfig | None, resolution: int, mean: tuple[float, ...], std: tuple[float, ...],
                 crop_pct: float, seed: int, rank: int = 0, world_size: int = 1, shard: bool = True,
                 device: torch.device | str = "cpu") -> None:
        self.tensors, self.batch_size, self.train = tensors, batch_size, train
        self.augment, self.resolution, self.mean, self.std, self.crop_pct = augment, resolution, mean, std, crop_pct
        self.seed, self.rank, self.world_size, self.device = seed, rank, world_size, torch.device(device)
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if not train and shard:
            self.indices = self.indices[rank::world_size]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.train:
            return self.indices
        generator = torch.Generator().manual_seed(_seed(self.seed, self.epoch))  # the same on every rank
        order = self.indices[torch.randperm(len(self.indices), generator=generator)]
        per_rank = len(order) // self.world_size
        return order[self.rank::self.world_size][:per_rank]

    def __len__(self) -> int:
        n = len(self.indices) // self.world_size if self.train else len(self.indices)
        return n // self.batch_size if self.train else -(-n // self.batch_size)  # train drops the last

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            images = self.tensors.images[index].to(self.device, non_blocking=True)
            labels = self.tensors.labels[index].to(self.device, non_blocking=True)
            if self.train and self.augment is not None:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(_seed(self.seed, self.epoch, step, self.rank))
                yield train_batch(images, self.augment, generator), labels
            else:
                yield eval_batch(images, self.resolution, self.mean, self.std, self.crop_pct), labels


class StreamBatches:
    """Training batches (x float32 [B, 3, r, r] normalised, y int64 [B]) from a stream of uint8 batches
    {"image": [B, S, S, 3], "label": [B]} that something else reads and decodes (a Ray Data shard's
    `iter_torch_batches`, `autovit_ray.ray_inputs`): augmented on `device` as `TensorBatches` augments, with
    the generator seeded by (seed, epoch, step, rank). The stream decides which images make up a step;
    `steps` is how many steps an epoch takes (every rank must take as many: gradients are all-reduced)."""

    def __init__(self, epoch_stream: Callable[[int], Iterable[Mapping[str, torch.Tensor]]], steps: int, *,
                 augment: AugmentConfig | None, resolution: int, mean: tuple[float, ...], std: tuple[float, ...],
                 crop_pct: float, seed: int, rank: int = 0, device: torch.device | str = "cpu") -> None:
        if steps < 1:
            raise ValueError(f"steps {steps!r} is invalid: expected at least one batch per epoch and rank")
        self.epoch_stream, self.steps, self.augment, self.resolution = epoch_stream, steps, augment, resolution
        self.mean, self.std, self.crop_pct, self.seed, self.rank = mean, std, crop_pct, seed, rank
        self.device = torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = -1
        for step, batch in enumerate(self.epoch_stream(self.epoch)):
            if step >= self.steps:
                return
            # [B, S, S, 3] (the decoder's HWC) -> [B, 3, S, S]
            images = batch["image"].to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous()
            labels = batch["label"].to(self.device, non_blocking=True)
            if self.augment is not None:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(_seed(self.seed, self.epoch, step, self.rank))
                yield train_batch(images, self.augment, generator), labels
            else:
                yield eval_batch(images, self.resolution, self.mean, self.std, self.crop_pct), labels
        if step + 1 < self.steps:  # a short shard would leave the other ranks waiting in all-reduce
            raise RuntimeError(f"the training stream of rank {self.rank} ended after {step + 1} batches in epoch "
                               f"{self.epoch}, expected {self.steps}")


__all__ = ["StreamBatches", "TensorBatches"]
