"""The four splits of a dataset (`make_splits`), fixed index sets into its official train and test sets.

- ``test``: the official test set (``val/`` for imagefolder). Use it only to report final models.
- ``train`` / ``val``: a stratified split of the official *training* set; the search selects on ``val``.
  Its size is `val_size` (default: 5,000 for cifar10, 20% for digits, 10% for imagefolder).
- ``calib``: a fixed subset (`calib_size` images) of the ``train`` split for `evaluation.calibrate` (BatchNorm);
  `calib_seed` draws another subset of the same size (None: the one `split_seed` fixes).

The splits depend only on `split_seed` (default 0), never on `seed`. `seed` orders the batches and
seeds the augmentation; were the validation images drawn with it too, a supernet trained with another
`seed` would have trained on the images that the search later selects on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import DataConfig, _bad
from .sources import FileSource, _sources, _stratified_holdout

SPLITS = ("train", "val", "test", "calib")


@dataclass(frozen=True)
class Splits:
    """Indices of each split: train / val / calib into the official training set, test into the test set."""

    train: np.ndarray
    val: np.ndarray
    calib: np.ndarray
    test: np.ndarray


def make_splits(cfg: DataConfig) -> Splits:
    train_source, test_source = _sources(cfg)
    n = len(train_source)
    val_size = cfg.val_size if cfg.val_size is not None else cfg.defaults.val_size
    n_val = val_size if isinstance(val_size, int) else max(1, round(val_size * n))
    if n_val >= n:
        raise _bad("val_size", cfg.val_size, f"fewer images than the training set's {n}")
    train, val = _stratified_holdout(train_source.labels, n_val, cfg.split_seed)
    calib_key = [cfg.split_seed, 1] if cfg.calib_seed is None else [cfg.split_seed, 1, cfg.calib_seed]
    rng = np.random.default_rng(calib_key)
    calib = np.sort(rng.choice(train, size=min(cfg.calib_size, len(train)), replace=False))
    return Splits(train=train, val=val, calib=calib, test=np.arange(len(test_source)))


def dataset_record(cfg: DataConfig) -> dict[str, Any]:
    """What a training run records about its data (its MLflow input): the dataset, its source, the
    split sizes, and a digest of the labels and split indices (equal digests: the same images in the
    same splits, whatever the path they were read from)."""
    train_source, test_source = _sources(cfg)
    splits = make_splits(cfg)
    digest = hashlib.sha256(cfg.dataset.encode())
    for array in (train_source.labels, test_source.labels, splits.train, splits.val, splits.calib, splits.test):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return {"name": cfg.dataset, "source": cfg.defaults.origin(cfg.data_dir), "digest": digest.hexdigest()[:16],
            "sizes": {name: len(getattr(splits, name)) for name in ("train", "val", "calib", "test")},
            "num_classes": len(train_source.classes), "split_seed": cfg.split_seed}


def _part(indices: np.ndarray, part: tuple[int, int] | None) -> np.ndarray:
    """Part k of n of a split: positions k, k + n, ... of its sorted indices (fixed by the split alone)."""
    if part is None:
        return indices
    k, n = part
    return indices[k::n]


def train_files(cfg: DataConfig) -> tuple[list[str], tuple[str, ...]]:
    """(files of the training split, class names) of an image folder: what a distributed reader (Ray
    Data) reads; the same images, in the same split, as every other data path."""
    if not cfg.defaults.image_folder:
        raise ValueError(f"dataset {cfg.dataset!r} has no image files to read: expected an image folder "
                         "(dataset 'imagefolder')")
    source = _sources(cfg)[0]
    if not isinstance(source, FileSource):
        raise ValueError(f"dataset {cfg.dataset!r} is registered as an image folder, but its loader gives a "
                         f"{type(source).__name__}: expected a FileSource")
    return [str(source.paths[i]) for i in make_splits(cfg).train], source.classes


__all__ = ["SPLITS", "Splits", "dataset_record", "make_splits", "train_files"]
