"""The data path (`resolve_data_path`): how the images reach the model.

Images that fit in memory are decoded once to uint8 tensors and batched on the training device
(`autovit_ray.data.cache`, `autovit_ray.data.batches`, `autovit_ray.data.augment`); the others stream
from their files through timm's PIL transforms in DataLoader workers (`autovit_ray.data.transforms`).

| ``augment`` | data fits in ``in_memory_limit_mb`` | path |
|---|---|---|
| ``auto`` (default) | yes | ``batched`` (digits: ``tensors``) |
| ``auto`` | no, or a recipe only timm can run | ``timm`` |
| ``batched`` | yes (else an error) | ``batched`` |
| ``timm`` | either | ``timm`` |
| ``none`` | yes / no | ``tensors`` / ``timm-no-aug`` |

- ``batched``: the recipe (random-resized crop at `scale`, flip, RandAugment with per-sample ops, random
  erasing; Mixup / CutMix in the loop) on whole batches of in-memory tensors.
- ``tensors``: in-memory tensors, resized and normalised per batch, no augmentation.
- ``timm``: timm's PIL pipeline per image (the comparison; also other auto_augment policies and
  interpolations, which the batched path refuses).
- ``timm-no-aug``: timm's ``no_aug`` transform per image (``in_memory_limit_mb: 0`` selects it for digits).

The estimate is (train + test images) x 3 x S x S bytes. digits and cifar10 keep their native size;
an image folder is stored as S x S squares, S = floor(resolution / crop_pct) capped at the first image's
shorter side (each image's shorter side is resized to S and its centre cropped, as `ImageOps.fit`
does), so a random-resized crop sees the centre square of a non-square image, not its margins; evaluation
(resize to resolution / crop_pct, centre crop) is what timm does on the original.
"""

from __future__ import annotations

import math

import numpy as np

from .config import DataConfig, _augments, _bad, _batched_refusal
from .sources import _sources

DATA_PATHS = ("batched", "tensors", "timm", "timm-no-aug")  # what resolve_data_path gives


def stored_size(cfg: DataConfig) -> tuple[int, int] | None:
    """(H, W) of the in-memory tensors: None keeps the native size (digits, cifar10: one size); an
    image folder's images become S x S squares (module doc)."""
    if not cfg.defaults.image_folder:
        return None
    first = _sources(cfg)[0].image(0)
    side = min(math.floor(cfg.input_resolution / cfg.eval_crop_pct), *first.size)
    return side, side


def in_memory_mb(cfg: DataConfig) -> float:
    """The decoded train + test images as uint8 tensors, in MiB."""
    train_source, test_source = _sources(cfg)
    h, w = stored_size(cfg) or np.asarray(train_source.image(0)).shape[:2]
    return (len(train_source) + len(test_source)) * 3 * h * w / 2**20


def resolve_data_path(cfg: DataConfig) -> str:
    """The data path `cfg` trains with, one of DATA_PATHS (the table in the module doc)."""
    if cfg.augment == "timm":
        return "timm"
    fits = in_memory_mb(cfg) <= cfg.in_memory_limit_mb
    if not _augments(cfg):
        return "tensors" if fits else "timm-no-aug"
    if not fits and cfg.augment == "batched":
        raise _bad("in_memory_limit_mb", cfg.in_memory_limit_mb,
                   f"at least the {math.ceil(in_memory_mb(cfg))} MiB of decoded images with data.augment=batched; "
                   "data.augment=timm streams them from their files")
    return "batched" if fits and _batched_refusal(cfg) is None else "timm"


def legacy_data_path(cfg: DataConfig) -> str:
    """What `cfg` resolved to before the in-memory path became the default (checkpoints without a
    recorded data path): `auto` and `none` streamed through timm."""
    if cfg.augment in ("timm", "batched"):
        return cfg.augment
    return "timm" if _augments(cfg) else "timm-no-aug"


def _in_memory_path(cfg: DataConfig) -> str:
    """The in-memory data path of prepared data (`prepare_data` refuses the others)."""
    return "batched" if _augments(cfg) else "tensors"


__all__ = ["DATA_PATHS", "in_memory_mb", "legacy_data_path", "resolve_data_path", "stored_size"]
