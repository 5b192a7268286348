"""The data configuration (`DataConfig`): which dataset, its splits and the training recipe's
augmentation, validated once with one clear error per bad field. The fields left at None take the
dataset's defaults (`autovit_ray.data.datasets`, the dataset registry). The loaders, transforms and
sources that read it are the other modules of `autovit_ray.data`. Pure Python (no torch, no timm): a CLI
can build, print and check a training config without importing them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autovit_ray.config import dataclass_from_flat_dict

from .datasets import CROPS, DatasetSpec, _is_number, dataset_names, dataset_spec

AUGMENT_MODES = ("auto", "timm", "batched", "none")


@dataclass(frozen=True)
class DataConfig:
    """Everything that defines the data. Fields left at None take the dataset's default (its
    `DatasetSpec`; `mean` and `std` are set to it on construction, so `to_dict` holds them).

    The augmentation defaults are DeiT's recipe (RandAugment m9, random erasing 0.25, Mixup 0.8,
    CutMix 1.0, label smoothing 0.1). `batch_size` is per data-parallel rank.
    """

    dataset: str = "digits"
    data_dir: str | None = None  # ignored by a dataset that reads no folder (digits)
    resolution: int | None = None  # None: native size (digits 8, cifar10 32, imagefolder 224)
    batch_size: int = 128
    num_workers: int = 0
    val_size: int | float | None = None  # images (int) or fraction of the training set (float)
    calib_size: int = 1024
    split_seed: int = 0  # fixes val / calib (and digits' test); keep it across train and search
    # None: the calibration subset split_seed fixes; an int: another subset of calib_size training images, to
    # see how far inherited scores move with the BatchNorm calibration sample (fidelity --calib-draws)
    calib_seed: int | None = None
    seed: int = 0  # batch order and augmentation
    augment: str = "auto"  # "timm": timm's PIL pipeline per image; "batched": the same recipe on in-memory
    # tensors, a batch at a time on the training device (autovit_ray.data.batches); "none": resize + normalise;
    # "auto": batched when the data fits in memory (digits: none), else timm (autovit_ray.data.data_path)
    in_memory_limit_mb: int = 4096  # decoded train + test images above this stream from files; 0: always
    cache_dir: str | None = None  # decoded tensors (default $AUTOVIT_RAY_DATA_CACHE, else ~/.cache/autovit-ray/data)
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    re_prob: float = 0.25
    crop: str | None = None  # "rrc" | "pad" | "none"; None: the dataset's default (rrc)
    pad: int = 4  # zero padding of crop "pad" (px on each side)
    color_jitter: float = 0.0  # ColorJitter strength (timm path only; timm's own default 0.4 is not implied)
    scale: tuple[float, float] | None = None
    hflip: float = 0.5
    interpolation: str = "bilinear"
    crop_pct: float | None = None
    mixup: float = 0.8  # Mixup alpha; 0 turns it off
    cutmix: float = 1.0  # CutMix alpha; 0 turns it off
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.1
    mean: tuple[float, ...] | None = None  # None: the dataset's (ImageNet's for the built-in ones)
    std: tuple[float, ...] | None = None

    def with_absolute_paths(self) -> DataConfig:
        """The same data with `data_dir` and `cache_dir` absolute against this process's working
        directory. Called on the driver: Ray Train's workers run in folders of their own, where a
        relative path means nothing. A URI (`s3://...`) is left as it is."""
        def absolute(path: str | None) -> str | None:
            return path if path is None or "://" in path else str(Path(path).expanduser().resolve())

        return dataclasses.replace(self, data_dir=absolute(self.data_dir), cache_dir=absolute(self.cache_dir))

    def __post_init__(self) -> None:
        for name in ("mean", "std", "scale"):  # YAML gives lists
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", str(self.data_dir))
        if self.dataset in dataset_names():
            for name in ("mean", "std"):
                if getattr(self, name) is None:
                    object.__setattr__(self, name, getattr(dataset_spec(self.dataset), name))
        _validate(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        return dataclass_from_flat_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def defaults(self) -> DatasetSpec:
        """The dataset's registration: the defaults of the fields left at None."""
        return dataset_spec(self.dataset)

    @property
    def input_resolution(self) -> int:
        return self.resolution if self.resolution is not None else self.defaults.resolution

    @property
    def train_crop(self) -> str:
        return self.crop if self.crop is not None else self.defaults.crop

    @property
    def eval_crop_pct(self) -> float:
        return self.crop_pct if self.crop_pct is not None else self.defaults.crop_pct

    def eval_preprocessing(self) -> dict[str, Any]:
        """How evaluation prepares an image (`build_transform(train=False)`), in the keys of timm's
        `pretrained_cfg`: resize to resolution / crop_pct, centre-crop, normalise."""
        assert self.mean is not None and self.std is not None  # set in __post_init__
        return {"mean": tuple(self.mean), "std": tuple(self.std), "interpolation": self.interpolation,
                "crop_pct": self.eval_crop_pct, "crop_mode": "center"}


def _bad(field: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"DataConfig.{field} = {value!r} is invalid: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(cfg: DataConfig) -> None:
    if cfg.dataset not in dataset_names():
        raise _bad("dataset", cfg.dataset, f"one of {dataset_names()} (more: autovit_ray.data.register_dataset, or "
                   "an installed package's entry point of group autovit_ray.datasets)")
    if cfg.data_dir is not None and not isinstance(cfg.data_dir, (str, Path)):
        raise _bad("data_dir", cfg.data_dir, "a folder path or None")
    if cfg.resolution is not None and not (_is_int(cfg.resolution) and cfg.resolution > 0):
        raise _bad("resolution", cfg.resolution, "a positive integer or None")
    for name in ("batch_size", "calib_size"):
        if not (_is_int(getattr(cfg, name)) and getattr(cfg, name) > 0):
            raise _bad(name, getattr(cfg, name), "a positive integer")
    for name in ("num_workers", "split_seed", "seed"):
        if not (_is_int(getattr(cfg, name)) and getattr(cfg, name) >= 0):
            raise _bad(name, getattr(cfg, name), "an integer >= 0")
    if cfg.calib_seed is not None and not (_is_int(cfg.calib_seed) and cfg.calib_seed >= 0):
        raise _bad("calib_seed", cfg.calib_seed, "an integer >= 0, or None for the subset split_seed fixes")
    v = cfg.val_size
    if v is not None and not ((_is_int(v) and v >= 1) or (isinstance(v, float) and 0.0 < v < 1.0)):
        raise _bad("val_size", v, "an image count >= 1, a fraction in (0, 1), or None")
    if cfg.augment not in AUGMENT_MODES:
        raise _bad("augment", cfg.augment, f"one of {AUGMENT_MODES}")
    if not (_is_int(cfg.in_memory_limit_mb) and cfg.in_memory_limit_mb >= 0):
        raise _bad("in_memory_limit_mb", cfg.in_memory_limit_mb, "an integer >= 0 (0: always stream from files)")
    if cfg.augment == "batched":
        reason = _batched_refusal(cfg)
        if reason is not None:
            field, expected = reason
            raise _bad(field, getattr(cfg, field), f"{expected} with data.augment=batched; data.augment=timm "
                                                   "runs the others")
    aa = cfg.auto_augment
    policies = ("rand", "augmix", "original", "originalr", "v0", "v0r", "3a")  # timm's policy names
    if aa is not None and not (isinstance(aa, str) and aa.split("-")[0] in policies):
        raise _bad("auto_augment", aa, "None or a timm policy string such as 'rand-m9-mstd0.5-inc1'")
    for name in ("re_prob", "hflip", "mixup_prob", "mixup_switch_prob"):
        if not (_is_number(getattr(cfg, name)) and 0.0 <= getattr(cfg, name) <= 1.0):
            raise _bad(name, getattr(cfg, name), "a probability in [0, 1]")
    for name in ("mixup", "cutmix"):
        if not (_is_number(getattr(cfg, name)) and getattr(cfg, name) >= 0.0):
            raise _bad(name, getattr(cfg, name), "a Beta alpha >= 0 (0 turns it off)")
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        raise _bad("batch_size", cfg.batch_size, "an even number when mixup or cutmix is on (timm.data.Mixup)")
    if not (_is_number(cfg.label_smoothing) and 0.0 <= cfg.label_smoothing < 1.0):
        raise _bad("label_smoothing", cfg.label_smoothing, "a number in [0, 1)")
    s = cfg.scale
    if s is not None and not (
        isinstance(s, tuple) and len(s) == 2 and all(_is_number(x) for x in s) and 0.0 < s[0] <= s[1] <= 1.0
    ):
        raise _bad("scale", s, "None or (min, max) with 0 < min <= max <= 1")
    if cfg.crop_pct is not None and not (_is_number(cfg.crop_pct) and 0.0 < cfg.crop_pct <= 1.0):
        raise _bad("crop_pct", cfg.crop_pct, "None or a number in (0, 1]")
    if cfg.crop is not None and cfg.crop not in CROPS:
        raise _bad("crop", cfg.crop, f"None or one of {CROPS}")
    if not (_is_int(cfg.pad) and cfg.pad >= 0):
        raise _bad("pad", cfg.pad, "an integer >= 0 (zero padding in px of crop 'pad')")
    if not (_is_number(cfg.color_jitter) and cfg.color_jitter >= 0.0):
        raise _bad("color_jitter", cfg.color_jitter, "a number >= 0 (0: no colour jitter)")
    if cfg.interpolation not in ("bilinear", "bicubic", "nearest", "random"):
        raise _bad("interpolation", cfg.interpolation, "one of bilinear, bicubic, nearest, random")
    for name in ("mean", "std"):
        value = getattr(cfg, name)
        if not (isinstance(value, tuple) and len(value) == 3 and all(_is_number(x) for x in value)):
            raise _bad(name, value, "3 numbers (one per RGB channel)")
    assert cfg.std is not None  # checked just above
    if min(cfg.std) <= 0:
        raise _bad("std", cfg.std, "3 positive numbers")


def _batched_refusal(cfg: DataConfig) -> tuple[str, str] | None:
    """(field, what the batched path needs) when `cfg`'s recipe is one only timm's pipeline can run."""
    try:
        parse_rand_augment(cfg.auto_augment)
    except ValueError as e:
        return "auto_augment", f"a RandAugment policy ({e})"
    if cfg.interpolation != "bilinear":
        return "interpolation", "'bilinear'"
    if cfg.color_jitter > 0:
        return "color_jitter", "0 (colour jitter exists on the timm path only)"
    return None


def _augments(cfg: DataConfig) -> bool:
    """Whether the training split is augmented (else only resized and normalised)."""
    return cfg.augment != "none" and (cfg.augment != "auto" or cfg.defaults.augment)


def parse_rand_augment(policy: str | None) -> tuple[int, float, float]:
    """timm's policy string ('rand-m9-mstd0.5-inc1', 'rand-n2-m9', None) -> (n, m, mstd); None: (0, 9, 0.5)."""
    if policy is None:
        return 0, 9.0, 0.5
    expected = "expected 'rand' followed by '-n<int>', '-m<number>', '-mstd<number>' or '-inc<0|1>' sections"
    parts = policy.split("-")
    if parts[0] != "rand":
        raise ValueError(f"unsupported augmentation policy {policy!r}: {expected}")
    n, m, mstd = 2, 10.0, 0.0  # timm's defaults for a bare 'rand'
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|inc|n|m)(\d+(?:\.\d*)?)", part)
        if match is None:
            raise ValueError(f"unsupported section {part!r} in augmentation policy {policy!r}: {expected}")
        key, value = match.groups()
        if key == "n":
            n = int(float(value))
        elif key == "m":
            m = float(value)
        elif key == "mstd":
            mstd = float(value)
    return n, m, mstd
