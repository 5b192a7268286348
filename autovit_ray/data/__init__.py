"""The data: datasets, their splits, the training recipe and the loaders that feed training and search.

One module per concern, each importing its siblings directly:

- `datasets`: the dataset registry (`register_dataset`, `DatasetSpec`: loader, native resolution,
  normalisation, defaults, input profiles); pure Python.
- `config`: `DataConfig` (which dataset, its splits, the recipe), validated; pure Python.
- `sources`: the datasets' images (`Source`, `ArraySource`, `FileSource`; the built-in loaders of digits,
  CIFAR-10 and image folders), decoded lazily to PIL images.
- `splits`: train / val / calib / test, fixed by `split_seed`; `dataset_record`.
- `data_path`: how images reach the model (`resolve_data_path`: batched, tensors, timm, timm-no-aug).
- `transforms`: timm's PIL pipeline, the batched path's `AugmentConfig`, batch resize / renormalise.
- `augment`: the recipe on whole uint8 batches on the training device.
- `cache`: the decode cache (uint8 tensors keyed by a hash of the source files).
- `batches`: the in-memory paths' iterators (`TensorBatches`, `StreamBatches`).
- `prepared`: in-memory data decoded once by a driver for its workers (`PreparedData`).
- `loaders`: the loaders of the four splits (`build_loaders`, `Loaders`).

`from autovit_ray.data import build_loaders` reads the names below; each is imported from its module on
first use, so that importing one part costs only that part: a CLI building a `DataConfig` imports no
torch, an evaluator that only resizes batches no timm or kornia.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {name: module for module, names in {
    "datasets": ("BUILTIN_DATASETS", "CROPS", "DATASETS", "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD",
                 "DatasetSpec", "Loader", "dataset_names", "dataset_of_input_profile", "dataset_spec", "register_dataset",
                 "unregister_dataset"),
    "config": ("AUGMENT_MODES", "DataConfig"),
    "sources": ("CIFAR10_CLASSES", "ArraySource", "FileSource", "FolderImageDecoder", "Source", "check_images",
                "load_cifar10", "load_digits", "load_imagefolder", "num_classes", "source_dir"),
    "splits": ("SPLITS", "Splits", "dataset_record", "make_splits", "train_files"),
    "data_path": ("DATA_PATHS", "in_memory_mb", "legacy_data_path", "resolve_data_path", "stored_size"),
    "transforms": ("PadCrop", "augment_config", "build_transform", "renormalize", "resize_batch", "train_ops"),
    "batches": ("StreamBatches", "TensorBatches"),
    "prepared": ("PreparedData", "prepare_data", "prepare_in_memory"),
    "loaders": ("ImageDataset", "Loaders", "build_dataset", "build_loader", "build_loaders", "build_mixup",
                "set_epoch"),
}.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next look-up finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


__all__ = sorted(_MODULE_OF)
