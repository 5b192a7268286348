"""The loaders of the four splits (`build_loaders`): on the in-memory paths `TensorBatches` over the
decoded tensors (`autovit_ray.data.batches`), on the timm paths a DataLoader over an `ImageDataset`
that reads and transforms each image (`autovit_ray.data.transforms`); which one is the data path
(`autovit_ray.data.data_path`).

Data-parallel ranks: the train loader shards with `DistributedSampler` (seeded by `seed`; call
`Loaders.set_epoch(epoch)` each epoch, which also reseeds the worker processes' augmentation RNGs);
val and test loaders give rank r the images r, r + world_size, ... (no padding, so summed counts are
exact); the calib loader is not sharded, so every rank recalibrates BatchNorm on the same images and the
replicas stay identical. With ``num_workers=0`` augmentation draws from the process's global RNGs
(`random`, `torch`), and `timm.data.Mixup` always draws from `numpy.random`: seed or checkpoint those.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .cache import ImageTensors, load_tensors
from .config import DataConfig, _bad, _is_int
from .data_path import _in_memory_path, resolve_data_path, stored_size
from .prepared import PreparedData
from .sources import Source, _load_sources, _sources, source_dir
from .splits import SPLITS, Splits, _part, make_splits
from .transforms import augment_config, build_transform

if TYPE_CHECKING:
    from timm.data import Mixup

class ImageDataset(Dataset):
    """Samples `indices` of a source through `transform`; items are (image tensor, int label)."""

    def __init__(self, source: Source, indices: np.ndarray, transform: Any) -> None:
        self.source, self.indices, self.transform = source, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        return self.transform(self.source.image(j)), int(self.source.labels[j])


class _ShardSampler(Sampler[int]):
    """Rank r of w gets items r, r + w, r + 2w, ... in order: no padding, no duplicates."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.items = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class ResolvedData:
    """What the four loaders of a `build_loaders` call share: resolved once (`resolve_data`), not once per
    split (the data path of an image folder opens an image, the splits sort every label)."""

    path: str  # the data path, one of DATA_PATHS
    splits: Splits
    classes: tuple[str, ...]


def resolve_data(cfg: DataConfig, prepared: PreparedData | None = None) -> ResolvedData:
    """The data path, splits and class names of `cfg`; from `prepared` (the driver's) when given."""
    if prepared is not None:
        return ResolvedData(_in_memory_path(cfg), prepared.splits, prepared.classes)
    return ResolvedData(resolve_data_path(cfg), make_splits(cfg), _sources(cfg)[0].classes)


def build_dataset(cfg: DataConfig, split: str, resolution: int | None = None,
                  part: tuple[int, int] | None = None) -> ImageDataset:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    return _image_dataset(cfg, make_splits(cfg), split, resolution, part)


def _image_dataset(cfg: DataConfig, splits: Splits, split: str, resolution: int | None,
                   part: tuple[int, int] | None) -> ImageDataset:
    train_source, test_source = _sources(cfg)
    indices = _part(getattr(splits, split), part)
    source = test_source if split == "test" else train_source
    return ImageDataset(source, indices, build_transform(cfg, split == "train", resolution))


def _epoch_seed(cfg: DataConfig, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, epoch, rank]).generate_state(1)[0])


@functools.lru_cache(maxsize=2)
def _tensors(dataset: str, data_dir: str | None, cache_dir: str | None,
             size: tuple[int, int] | None) -> tuple[ImageTensors, ...]:
    """(official train, official test) as decoded tensors, once per process."""
    return load_tensors(dataset, _load_sources(dataset, data_dir), cache_dir, size=size)


def _tensor_loader(cfg: DataConfig, data: ResolvedData, split: str, resolution: int | None, world_rank: int,
                   world_size: int, device: torch.device | str, part: tuple[int, int] | None,
                   prepared: PreparedData | None) -> Any:
    from .batches import TensorBatches  # imports kornia: only where a tensor loader is built

    if prepared is not None:
        train_tensors, test_tensors = prepared.tensors()
    else:
        train_tensors, test_tensors = _tensors(cfg.dataset, source_dir(cfg), cfg.cache_dir, stored_size(cfg))
    indices = _part(getattr(data.splits, split), part)
    r = resolution or cfg.input_resolution
    augment = split == "train" and data.path == "batched"
    assert cfg.mean is not None and cfg.std is not None  # DataConfig sets both on construction
    loader = TensorBatches(
        test_tensors if split == "test" else train_tensors, indices, cfg.batch_size, train=split == "train",
        augment=augment_config(cfg, r) if augment else None, resolution=r, mean=tuple(cfg.mean),
        std=tuple(cfg.std), crop_pct=cfg.eval_crop_pct, seed=cfg.seed, rank=world_rank, world_size=world_size,
        shard=split != "calib", device=device)
    if split == "train" and len(loader) < 1:
        raise _bad("batch_size", cfg.batch_size,
                   f"at most the {len(indices) // world_size} training images of rank {world_rank} (the last "
                   "incomplete batch is dropped)")
    return loader


def build_loader(cfg: DataConfig, split: str, resolution: int | None = None, world_rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu", part: tuple[int, int] | None = None,
                 prepared: PreparedData | None = None) -> Any:
    """One split's loader at `resolution` (default: `cfg.input_resolution`), sharded for `world_rank`: on
    the in-memory paths a `TensorBatches` that prepares batches on `device`, else a DataLoader over timm
    transforms (`resolve_data_path`). `part` = (k, n): only the k-th of n fixed interleaved parts of the
    split (`_part`; e.g. a search selecting on one half of the validation split). `prepared`: the
    driver's `prepare_data(cfg)`, read instead of `data_dir` (in-memory paths only)."""
    _check_loader_args(split, resolution, world_rank, world_size, part)
    return _split_loader(cfg, resolve_data(cfg, prepared), split, resolution, world_rank, world_size, device, part,
                         prepared)


def _check_loader_args(split: str, resolution: int | None, world_rank: int, world_size: int,
                       part: tuple[int, int] | None) -> None:
    if part is not None and not (isinstance(part, tuple) and len(part) == 2 and all(_is_int(v) for v in part)
                                 and 0 <= part[0] < part[1]):
        raise ValueError(f"part {part!r} is invalid: expected (k, n) with 0 <= k < n")
    if not (_is_int(world_size) and world_size >= 1 and _is_int(world_rank) and 0 <= world_rank < world_size):
        raise ValueError(f"world_rank={world_rank!r}, world_size={world_size!r}: expected 0 <= rank < size")
    if resolution is not None and not (_is_int(resolution) and resolution > 0):
        raise ValueError(f"resolution {resolution!r} is invalid: expected a positive integer or None")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")


def _split_loader(cfg: DataConfig, data: ResolvedData, split: str, resolution: int | None, world_rank: int,
                  world_size: int, device: torch.device | str, part: tuple[int, int] | None,
                  prepared: PreparedData | None) -> Any:
    if data.path in ("batched", "tensors"):
        return _tensor_loader(cfg, data, split, resolution, world_rank, world_size, device, part, prepared)
    dataset = _image_dataset(cfg, data.splits, split, resolution, part)
    sampler: Sampler[int] | None = None
    if split == "train":
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=world_rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
        if len(sampler) < cfg.batch_size:
            raise _bad("batch_size", cfg.batch_size,
                       f"at most the {len(sampler)} training images of rank {world_rank} (drop_last is on)")
    elif split in ("val", "test"):
        sampler = _ShardSampler(len(dataset), world_rank, world_size)
    generator = torch.Generator().manual_seed(_epoch_seed(cfg, 0, world_rank))
    return DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, shuffle=False, drop_last=split == "train",
        num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(), generator=generator,
        persistent_workers=False,
    )


def set_epoch(loader: Any, epoch: int, cfg: DataConfig, world_rank: int = 0) -> None:
    """Reshuffle for `epoch` and reseed the worker RNGs, so batches and augmentation depend only on
    (seed, epoch, rank): an epoch replays identically after a resume (with num_workers > 0)."""
    if not isinstance(loader, DataLoader):  # TensorBatches: seeds each batch from (seed, epoch, step, rank)
        loader.set_epoch(epoch)
        return
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(_epoch_seed(cfg, epoch, world_rank))


@dataclass
class Loaders:
    train: Any  # a TensorBatches on the in-memory paths, else a DataLoader
    val: Any
    test: Any
    calib: Any
    num_classes: int
    classes: tuple[str, ...]
    mixup_fn: Mixup | None  # apply to (x, y) of train batches; it already applies label smoothing
    label_smoothing: float  # for the loss when targets are integer labels (mixup_fn is None)
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cfg: DataConfig
    data_path: str  # resolve_data_path(cfg): what a checkpoint records
    world_rank: int = 0

    def set_epoch(self, epoch: int) -> None:
        set_epoch(self.train, epoch, self.cfg, self.world_rank)


def build_mixup(cfg: DataConfig, num_classes: int) -> Mixup | None:
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                 switch_prob=cfg.mixup_switch_prob, mode="batch", label_smoothing=cfg.label_smoothing,
                 num_classes=num_classes)


def build_loaders(cfg: DataConfig, resolution: int | None = None, world_rank: int = 0,
                  world_size: int = 1, device: torch.device | str = "cpu", prepared: PreparedData | None = None,
                  train: Any = None) -> Loaders:
    """Train / val / test / calib loaders at `resolution` (default `cfg.input_resolution`). `prepared`:
    the driver's `prepare_data(cfg)`, read instead of `data_dir`; `train`: a loader that replaces the
    training split's (a `StreamBatches` over Ray Data; the data path is then recorded as 'ray-data')."""
    _check_loader_args("train", resolution, world_rank, world_size, None)
    data = resolve_data(cfg, prepared)
    loaders = {s: _split_loader(cfg, data, s, resolution, world_rank, world_size, device, None, prepared)
               for s in SPLITS if not (s == "train" and train is not None)}
    data_path = "ray-data" if train is not None else data.path
    assert cfg.mean is not None and cfg.std is not None  # DataConfig sets both on construction
    return Loaders(
        train=train if train is not None else loaders.pop("train"), **loaders, num_classes=len(data.classes),
        classes=data.classes, mixup_fn=build_mixup(cfg, len(data.classes)), label_smoothing=cfg.label_smoothing,
        resolution=resolution or cfg.input_resolution, mean=cfg.mean, std=cfg.std, cfg=cfg, data_path=data_path,
        world_rank=world_rank,
    )


__all__ = ["ImageDataset", "Loaders", "build_dataset", "build_loader", "build_loaders", "build_mixup", "set_epoch"]
