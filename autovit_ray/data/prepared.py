"""In-memory data prepared once, before the processes that read it start: `prepare_in_memory` fills
the decode cache of this machine, `prepare_data` gives the decoded images themselves (`PreparedData`)
to ship through Ray's object store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cache import ImageTensors, load_tensors
from .config import DataConfig
from .data_path import in_memory_mb, resolve_data_path, stored_size
from .sources import _sources
from .splits import Splits, make_splits


def prepare_in_memory(cfg: DataConfig) -> None:
    """Decode and cache the in-memory tensors of `cfg` here, once, before several processes (Ray Train
    workers, evaluator actors) each need them: they then map the cache file instead of each decoding."""
    if resolve_data_path(cfg) in ("batched", "tensors"):
        load_tensors(cfg.dataset, _sources(cfg), cfg.cache_dir, size=stored_size(cfg))


@dataclass(frozen=True)
class PreparedData:
    """Everything a worker needs to build its loaders on an in-memory path without reading `data_dir`:
    the splits, the class names and the decoded images as numpy arrays (Ray's object store shares numpy
    arrays without a copy per process). Made once by the driver (`prepare_data`), so on a cluster the
    data set is decoded once and no other node needs its files."""

    splits: Splits
    classes: tuple[str, ...]
    train_images: np.ndarray  # uint8 [N, 3, H, W]: the official training set
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray  # uint8 [M, 3, H, W]: the official test set
    test_labels: np.ndarray  # int64 [M]

    def tensors(self) -> tuple[ImageTensors, ImageTensors]:
        """(official train, official test) as `ImageTensors` over these arrays (no copy)."""
        import warnings

        with warnings.catch_warnings():  # the object store's arrays are read-only; nothing writes them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return (ImageTensors(torch.from_numpy(self.train_images), torch.from_numpy(self.train_labels)),
                    ImageTensors(torch.from_numpy(self.test_images), torch.from_numpy(self.test_labels)))


def prepare_data(cfg: DataConfig) -> PreparedData:
    """The `PreparedData` of `cfg` (decoded through the cache, as `prepare_in_memory`)."""
    path = resolve_data_path(cfg)
    if path not in ("batched", "tensors"):
        raise ValueError(f"data of {cfg.dataset!r} resolves to data path {path!r}: only the in-memory paths "
                         f"(batched, tensors) can be prepared once and shipped (data.in_memory_limit_mb is "
                         f"{cfg.in_memory_limit_mb} MiB, the decoded images take {in_memory_mb(cfg):.0f} MiB)")
    train, test = load_tensors(cfg.dataset, _sources(cfg), cfg.cache_dir, size=stored_size(cfg))
    return PreparedData(make_splits(cfg), _sources(cfg)[0].classes, train.images.numpy(), train.labels.numpy(),
                        test.images.numpy(), test.labels.numpy())


__all__ = ["PreparedData", "prepare_data", "prepare_in_memory"]
