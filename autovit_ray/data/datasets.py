"""The dataset registry: what each `DataConfig.dataset` name means.

A dataset is one registration, `register_dataset(DatasetSpec(...))` (in a module of `AUTOVIT_RAY_PLUGINS`,
`autovit_ray.plugins`, so that every process of a run makes it; or, in a package that others install, a
`DatasetSpec` declared as an entry point of group `autovit_ray.datasets`): a loader that returns its official
train and test splits as sources (`autovit_ray.data.sources`: `ArraySource` for images in memory,
`FileSource` for image files), its native resolution, its normalisation, its split and augmentation
defaults, and the input profiles of the search space made for it (`configs/profiles.yaml`; the first is
the default of a training config on it). The splits, data paths, decode cache, loaders and evaluation
ask the registry, never a dataset's name. Built in: `digits`, `cifar10`, `imagefolder` (docs/data.md);
docs/extending.md adds one.

Pure Python: a loader may be named as "module:function" and is then imported on first use, so checking a
config imports no numpy or PIL.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..extensions import Registry
from ..plugins import load_plugins

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)  # = timm.data's
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
CROPS = ("rrc", "pad", "none")  # training crops (autovit_ray.data.augment's module doc)

# data_dir (None for a dataset that reads no folder) -> (official train, official test) sources
Loader = Callable[[Path | None], tuple[Any, Any]]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset. Its fields are the defaults of the `DataConfig` fields left at None."""

    name: str
    load: Loader | str  # a `Loader`, or "module:function" naming one (imported on first use)
    resolution: int  # native image side (`DataConfig.resolution` None)
    input_profiles: tuple[str, ...]  # the space's input profiles made for it; the first is its default
    data_dir: str | None = None  # what `DataConfig.data_dir` must hold; None: it reads no folder
    source: str | None = None  # where its images come from when it reads no folder (default: the loader)
    image_folder: bool = False  # ImageNet-style files of any size: stored in memory as S x S squares
    # (autovit_ray.data.data_path), and Ray Data can read its training split (ray.train_input=ray-data)
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN  # normalisation, per RGB channel
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    val_size: int | float = 0.1  # held out of the official training split: images (int) or a fraction
    augment: bool = True  # whether augment="auto" augments
    scale: tuple[float, float] = (0.08, 1.0)  # random-resized-crop area range
    crop_pct: float = 1.0  # evaluation: resize to resolution / crop_pct, then centre-crop
    crop: str = "rrc"  # training crop (one of CROPS)

    def __post_init__(self) -> None:
        for name in ("input_profiles", "mean", "std", "scale"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        checks = {
            "name": (isinstance(self.name, str) and bool(self.name), "a non-empty string"),
            "load": (callable(self.load) or (isinstance(self.load, str) and self.load.count(":") == 1),
                     "a function of data_dir, or 'module:function'"),
            "resolution": (isinstance(self.resolution, int) and self.resolution > 0, "a positive integer"),
            "input_profiles": (isinstance(self.input_profiles, tuple) and bool(self.input_profiles)
                               and all(isinstance(p, str) and p for p in self.input_profiles),
                               "a non-empty list of input profile names"),
            "data_dir": (self.data_dir is None or isinstance(self.data_dir, str), "None or a description"),
            "mean": (isinstance(self.mean, tuple) and len(self.mean) == 3 and all(map(_is_number, self.mean)),
                     "3 numbers (one per RGB channel)"),
            "std": (isinstance(self.std, tuple) and len(self.std) == 3 and all(_is_number(s) and s > 0
                                                                                for s in self.std),
                    "3 positive numbers"),
            "val_size": ((isinstance(self.val_size, int) and self.val_size >= 1)
                         or (isinstance(self.val_size, float) and 0.0 < self.val_size < 1.0),
                         "an image count >= 1 or a fraction in (0, 1)"),
            "scale": (isinstance(self.scale, tuple) and len(self.scale) == 2 and all(map(_is_number, self.scale))
                      and 0.0 < self.scale[0] <= self.scale[1] <= 1.0, "(min, max) with 0 < min <= max <= 1"),
            "crop_pct": (_is_number(self.crop_pct) and 0.0 < self.crop_pct <= 1.0, "a number in (0, 1]"),
            "crop": (self.crop in CROPS, f"one of {CROPS}"),
        }
        for field, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"DatasetSpec.{field} = {getattr(self, field)!r} is invalid (dataset "
                                 f"{self.name!r}): expected {expected}")

    @property
    def default_input_profile(self) -> str:
        return self.input_profiles[0]

    def loader(self) -> Loader:
        if callable(self.load):
            return self.load
        module, _, name = self.load.partition(":")
        return getattr(importlib.import_module(module), name)

    def origin(self, data_dir: str | None) -> str:
        """Where the images come from, as a run records it: the folder, or `source` (the loader)."""
        if self.data_dir is not None:
            return str(Path(data_dir or "").resolve())
        if self.source is not None:
            return self.source
        load = self.loader()
        return f"{load.__module__}.{load.__qualname__}"


DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", entry_point_group="autovit_ray.datasets", instance_of=DatasetSpec,
    hint="register it: autovit_ray.data.register_dataset in a module of AUTOVIT_RAY_PLUGINS, or a package "
         "declaring it as an entry point of group autovit_ray.datasets; docs/extending.md")


def register_dataset(spec: DatasetSpec) -> None:
    """Make `spec.name` a `DataConfig.dataset`."""
    if not isinstance(spec, DatasetSpec):
        raise ValueError(f"register_dataset takes a DatasetSpec, got {type(spec).__name__}")
    if spec.name in DATASETS.entries():
        raise ValueError(f"dataset {spec.name!r} is already registered; choose another name")
    DATASETS.register(spec.name, spec)


def unregister_dataset(name: str) -> None:
    """Undo `register_dataset` (the built-in datasets stay)."""
    if name in BUILTIN_DATASETS or name not in DATASETS.entries():
        raise ValueError(f"dataset {name!r} was not registered in code; registered: "
                         f"{sorted(set(DATASETS.entries()) - set(BUILTIN_DATASETS))}")
    DATASETS.unregister(name)


def dataset_names() -> tuple[str, ...]:
    """The registered datasets, then those of installed entry points not loaded yet."""
    load_plugins()  # the modules of AUTOVIT_RAY_PLUGINS register theirs
    return DATASETS.names()


def dataset_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def dataset_of_input_profile(input_profile: str) -> str | None:
    """The first dataset whose input profiles include `input_profile` (None: no dataset names it)."""
    return next((name for name in dataset_names() if input_profile in DATASETS.get(name).input_profiles), None)


_BUILTIN = (
    # scikit-learn's handwritten digits: no folder, no download; small, so not augmented by default
    DatasetSpec("digits", "autovit_ray.data.sources:load_digits", 8, ("digits",),
                source="sklearn.datasets.load_digits", val_size=0.2, augment=False),
    DatasetSpec("cifar10", "autovit_ray.data.sources:load_cifar10", 32, ("cifar10", "cifar10-p1"),
                data_dir="train.npz + test.npz, or cifar-10-batches-py", val_size=5000, scale=(0.35, 1.0)),
    DatasetSpec("imagefolder", "autovit_ray.data.sources:load_imagefolder", 224, ("imagenet",),
                data_dir="train/<class>/* and val/<class>/*", image_folder=True, crop_pct=0.875),
)
BUILTIN_DATASETS = tuple(spec.name for spec in _BUILTIN)
for _spec in _BUILTIN:
    register_dataset(_spec)

__all__ = ["BUILTIN_DATASETS", "CROPS", "DATASETS", "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "DatasetSpec",
           "Loader", "dataset_names", "dataset_of_input_profile", "dataset_spec", "register_dataset", "unregister_dataset"]
