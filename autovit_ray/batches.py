"""The in-memory data paths (`batched`, `tensors`): decoded uint8 tensors and whole-batch augmentation.

A data set that fits in `data.in_memory_limit_mb` is decoded once into uint8 tensors `[N, 3, H, W]`
(CIFAR-10's 60,000 images: 176 MiB; an image folder's images as S x S squares, see `autovit_ray.data`)
and cached in `data.cache_dir` (default `$AUTOVIT_RAY_DATA_CACHE`, else `~/.cache/autovit-ray/data`)
under a key made of the data set, the stored size and a hash of its source files, so a second run
does not decode again. The cache file carries a hash of its own tensors: a truncated or altered file
is detected, said, and rebuilt, never used. It is memory-mapped, so the processes of one machine (Ray
workers, evaluator actors) share one copy of it in the page cache. A cache directory that cannot be
written is said once and the run goes on decoding in memory.

`TensorBatches` is the loader: it gathers a batch by index, moves it to the training device and
augments it there as a whole (`autovit_ray.augment`: crop, flip, RandAugment with per-sample ops,
random erasing, normalisation); Mixup / CutMix stay in the training loop as with the timm path. The
augmentation's randomness comes from a generator seeded by (seed, epoch, step, rank), and the epoch's
order from (seed, epoch), so a resumed epoch replays the uninterrupted one exactly. Evaluation and
BatchNorm recalibration read the same tensors (resize, centre crop, normalise per batch).

Ranks: the training order is one permutation per epoch shared by all ranks, rank r taking items
r, r + w, ... of it (the remainder is dropped so every rank runs the same number of steps); val and
test give rank r the images r, r + w, ... without padding, as the timm path does; calib is not sharded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from autovit_ray.augment import AugmentConfig, eval_batch, train_batch

DEFAULT_CACHE_DIR = Path("~/.cache/autovit-ray/data")
CACHE_ENV = "AUTOVIT_RAY_DATA_CACHE"  # overrides DEFAULT_CACHE_DIR when data.cache_dir is unset
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ImageTensors:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]


def decode(source: Any, size: tuple[int, int] | None = None) -> ImageTensors:
    """Every image of a data source (`autovit_ray.data`'s `_Source`) as one uint8 tensor: at their own
    size (which must be one size), or each resized and centre-cropped to `size` (H, W)."""
    def pixels(i: int) -> np.ndarray:  # [H, W, 3]
        return fit(source.image(i), size)

    first = pixels(0)
    images = np.empty((len(source), *first.shape), dtype=np.uint8)  # [N, H, W, 3]
    for i in range(len(source)):
        image = pixels(i)
        if image.shape != first.shape:
            raise ValueError(f"image {i} is {image.shape[1]}x{image.shape[0]} px, image 0 is "
                             f"{first.shape[1]}x{first.shape[0]}: the in-memory path needs images of one "
                             "size; use data.augment=timm for this data set")
        images[i] = image
    return ImageTensors(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                        torch.from_numpy(np.asarray(source.labels, dtype=np.int64)))


def fit(image: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]: as it is (size None), else its shorter side resized and its centre
    cropped to `size` (H, W), as `ImageOps.fit` does."""
    if size is not None and image.size != (size[1], size[0]):
        image = ImageOps.fit(image, (size[1], size[0]), method=Image.Resampling.BILINEAR)
    return np.asarray(image)


def _tensor_digest(tensors: ImageTensors) -> str:
    digest = hashlib.sha256(tensors.images.numpy().tobytes())
    digest.update(tensors.labels.numpy().tobytes())
    return digest.hexdigest()


def source_key(dataset: str, sources: tuple[Any, ...], size: tuple[int, int] | None = None) -> str:
    """The cache key of a data set: its name, the stored size and a hash of its source files (or, for
    digits, which ships inside scikit-learn, the library version and the labels)."""
    digest = hashlib.sha256(f"{dataset}/{CACHE_FORMAT}/{size}".encode())
    for source in sources:
        files = getattr(source, "files", ())
        if not files:
            import sklearn

            digest.update(sklearn.__version__.encode())
            digest.update(np.asarray(source.labels, dtype=np.int64).tobytes())
        for path in files:
            with open(path, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 24), b""):
                    digest.update(block)
    return f"{dataset}-{digest.hexdigest()[:16]}"


def load_tensors(dataset: str, sources: tuple[Any, ...], cache_dir: str | Path | None,
                 log: Callable[[str], None] = print, size: tuple[int, int] | None = None) -> tuple[ImageTensors, ...]:
    """The decoded tensors of `sources` (official train, official test), at `size` (`decode`), from the
    cache when it holds a sound copy, else decoded (and cached when the directory can be written)."""
    folder = Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()
    path = folder / f"{source_key(dataset, sources, size)}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True, mmap=True)
            parts = tuple(ImageTensors(p["images"], p["labels"]) for p in saved["parts"])
            if saved.get("format") == CACHE_FORMAT and [_tensor_digest(p) for p in parts] == saved["digests"]:
                return parts
            log(f"decode cache {path} does not match its hash: decoding {dataset} again")
        except Exception as e:  # a truncated or foreign file: rebuild it
            log(f"decode cache {path} is unreadable ({type(e).__name__}): decoding {dataset} again")
    count = sum(len(source) for source in sources)
    if count > 20_000 or size is not None:  # minutes, not seconds: say why the run is quiet
        log(f"decoding {dataset} ({count:,} images) once into {path}")
    parts = tuple(decode(source, size) for source in sources)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        torch.save({"format": CACHE_FORMAT, "parts": [{"images": p.images, "labels": p.labels} for p in parts],
                    "digests": [_tensor_digest(p) for p in parts]}, tmp)
        os.replace(tmp, path)
    except OSError as e:
        log(f"decode cache: cannot write {folder} ({e.strerror or e}); {dataset} is decoded again on each run "
            "(set data.cache_dir to a writable folder)")
    return parts


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


__all__ = ["ImageTensors", "StreamBatches", "TensorBatches", "decode", "fit", "load_tensors", "source_key"]
