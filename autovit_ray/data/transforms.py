"""The training recipe as transforms: timm's PIL pipeline (`build_transform`), the batched path's
`AugmentConfig` (`augment_config`), the two compared (`train_ops`), and batch helpers.

Transforms come from timm (`timm.data.create_transform`: RandAugment, random erasing; `timm.data.Mixup`
for Mixup / CutMix with label smoothing). Small images need care:

- digits (8x8): ``augment="auto"`` means no per-image augmentation, only resize and normalise
  (timm's ``no_aug`` transform). A random-resized crop at timm's default scale keeps as little as
  2x2 px of an 8x8 digit, a horizontal flip turns some digits into other shapes, and RandAugment's
  translation (45% of the image) pushes strokes out of the frame. Mixup / CutMix still apply per batch.
- cifar10 (32x32): the random-resized crop keeps at least 35% of the image (``scale=(0.35, 1)``)
  instead of timm's 8% (a 9x9 px crop), and evaluation does not crop (``crop_pct=1``); at 32 px the
  border holds as much of the object as the centre.

Our models see images normalised with `DataConfig.mean` / `std` (ImageNet's by default); `renormalize`
converts a batch to another normalisation (a teacher's, see `autovit_ray.distill.Teacher`).

timm 1.0.31's RandAugment can ask Pillow to posterize to 0 bits, which Pillow 13 rejects with a
ValueError (about once per 700 images at m9-mstd0.5); `build_transform` swaps in a posterize op that
gives the black image older Pillow gave.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .config import DataConfig, _augments, _bad, parse_rand_augment

# timm and torchvision are imported where a transform is built, kornia (`.augment`) where the batched
# recipe is: importing them costs seconds of CPU (torchvision pulls in torch._dynamo), which every Ray
# worker that only evaluates in-memory tensors paid.

def build_transform(cfg: DataConfig, train: bool, resolution: int | None = None) -> Any:
    """The timm transform of a split: PIL image -> normalised float tensor [3, r, r]."""
    from timm.data import create_transform
    from torchvision import transforms

    r = resolution or cfg.input_resolution
    common: dict[str, Any] = dict(input_size=r, interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std)
    if not train:
        return create_transform(is_training=False, crop_pct=cfg.eval_crop_pct, **common)
    if not _augments(cfg):
        return create_transform(is_training=True, no_aug=True, **common)
    try:  # (crop + flip, RandAugment, to tensor + normalise + erasing); timm's implied jitter left out
        primary, secondary, final = create_transform(
            is_training=True, scale=cfg.scale or cfg.defaults.scale, hflip=cfg.hflip,
            auto_augment=cfg.auto_augment, re_prob=cfg.re_prob, re_mode="pixel",
            color_jitter=None,  # type: ignore[arg-type]  # timm reads None as no jitter; its hint omits None
            separate=True, **common,
        )
    except (AssertionError, ValueError, KeyError) as e:
        raise _bad("auto_augment", cfg.auto_augment, f"a policy string timm can parse ({e!r})") from e
    _fix_posterize(secondary)
    ops = list(primary.transforms) if cfg.train_crop == "rrc" else _plain_crop(cfg, r)
    ops += list(secondary.transforms)
    if cfg.color_jitter > 0:  # after RandAugment, as timm places it
        ops.append(transforms.ColorJitter(*(cfg.color_jitter,) * 3))
    return transforms.Compose(ops + list(final.transforms))


def train_ops(cfg: DataConfig, path: str, resolution: int | None = None) -> list[tuple[str, Any]]:
    """The training augmentation of `cfg` on data path `path` ('timm' or 'batched') as (op, setting)
    pairs in the order they run, read off the objects that path builds: on the timm path the
    transforms of `build_transform`, on the batched path the `AugmentConfig` that `train_batch` runs.
    One recipe gives the same list on both paths (tests/test_recipe.py)."""
    if path == "batched":
        a = augment_config(cfg, resolution)
        crop = {"rrc": ("random-resized-crop", tuple(a.scale)), "pad": ("pad-crop", a.pad), "none": ("resize", None)}
        ops: list[tuple[str, Any]] = [crop[a.crop]] + ([("hflip", a.hflip)] if a.hflip > 0 else [])
        ops += [("rand-augment", (a.rand_n, float(a.rand_m), float(a.rand_mstd)))] if a.rand_n > 0 else []
        ops += [("normalize", (_rounded(a.mean), _rounded(a.std)))]
        return ops + ([("erase", a.re_prob)] if a.re_prob > 0 else [])
    if path != "timm":
        raise ValueError(f"train_ops: path {path!r} is not an augmenting path: expected 'timm' or 'batched'")
    from torchvision import transforms

    ops = []
    for t in build_transform(cfg, train=True, resolution=resolution).transforms:
        kind = type(t).__name__
        if kind == "RandomResizedCropAndInterpolation":
            ops.append(("random-resized-crop", tuple(t.scale)))
        elif isinstance(t, PadCrop):
            ops.append(("pad-crop", t.pad))
        elif isinstance(t, transforms.Resize):
            ops.append(("resize", None))
        elif isinstance(t, transforms.RandomHorizontalFlip):
            ops.append(("hflip", t.p))
        elif kind == "RandAugment":
            ops.append(("rand-augment", (t.num_layers, float(t.ops[0].magnitude), float(t.ops[0].magnitude_std))))
        elif isinstance(t, transforms.ColorJitter):
            ops.append(("color-jitter", cfg.color_jitter))
        elif isinstance(t, transforms.Normalize):
            ops.append(("normalize", (_rounded(t.mean.tolist()), _rounded(t.std.tolist()))))
        elif kind == "RandomErasing":
            ops.append(("erase", t.probability))
        elif kind not in ("MaybeToTensor", "ToTensor"):
            ops.append((kind, None))  # an op this list does not know: shows up in any comparison
    return ops


def _rounded(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 6) for v in values)  # float32 tensors vs the config's floats


class PadCrop:
    """Per-image pad-and-crop on a PIL image, as the batched path's crop 'pad': resize to r x r if
    needed, zero-pad `pad` px on each side, random r x r crop (torchvision's RandomCrop)."""

    def __init__(self, resolution: int, pad: int) -> None:
        from torchvision import transforms

        self.resolution, self.pad = resolution, pad
        self.crop = transforms.RandomCrop(resolution, padding=pad, fill=0, padding_mode="constant")

    def __call__(self, img: Image.Image) -> Image.Image:
        r = self.resolution
        if img.size != (r, r):
            img = img.resize((r, r), Image.Resampling.BILINEAR)
        return self.crop(img)

    def __repr__(self) -> str:
        return f"PadCrop(resolution={self.resolution}, pad={self.pad})"


def _plain_crop(cfg: DataConfig, r: int) -> list[Any]:
    """timm's primary transforms with crop 'pad' or 'none' in place of its random-resized crop."""
    from torchvision import transforms

    crop = PadCrop(r, cfg.pad) if cfg.train_crop == "pad" else transforms.Resize((r, r), interpolation=
                                                                                 transforms.InterpolationMode.BILINEAR)
    return [crop] + ([transforms.RandomHorizontalFlip(p=cfg.hflip)] if cfg.hflip > 0 else [])


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op, safe with Pillow >= 13: keeping 0 bits gives a black image (as Pillow < 13
    and TF's RandAugment did) instead of Pillow 13's ValueError."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _fix_posterize(transform: Any) -> None:
    """Swap in `_posterize` for timm's in the (Rand/Auto/AugMix) augment ops of a timm transform.

    timm 1.0.31's RandAugment asks for 0 bits at magnitude 10 (m9-mstd0.5 reaches it ~2% of the time),
    and Pillow 13 raises on that, which would stop a training run within the first CIFAR-10 epoch.
    """
    for t in getattr(transform, "transforms", []):
        ops = list(getattr(t, "ops", [])) + [op for sub in getattr(t, "policy", []) for op in sub]
        for op in ops:
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = _posterize


def augment_config(cfg: DataConfig, resolution: int | None = None) -> Any:
    """The training recipe of `cfg` for the batched path (`autovit_ray.data.augment.AugmentConfig`)."""
    from .augment import AugmentConfig

    n, m, mstd = parse_rand_augment(cfg.auto_augment)
    mean, std = cfg.mean, cfg.std
    assert mean is not None and len(mean) == 3 and std is not None and len(std) == 3  # DataConfig checks both
    return AugmentConfig(resolution=resolution or cfg.input_resolution, crop=cfg.train_crop,
                         scale=cfg.scale or cfg.defaults.scale, pad=cfg.pad, hflip=cfg.hflip, rand_n=n, rand_m=m, rand_mstd=mstd, re_prob=cfg.re_prob,
                         mean=mean, std=std)


def resize_batch(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize an image batch [B, C, H, W] to resolution x resolution (bilinear, antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    shrink = resolution < min(x.shape[-2:])
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=shrink)


def renormalize(x: torch.Tensor, from_mean: Sequence[float], from_std: Sequence[float],
                to_mean: Sequence[float], to_std: Sequence[float]) -> torch.Tensor:
    """A batch normalised with (from_mean, from_std) re-expressed with (to_mean, to_std)."""
    if tuple(from_mean) == tuple(to_mean) and tuple(from_std) == tuple(to_std):
        return x

    def column(v: Sequence[float]) -> torch.Tensor:
        return torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)

    raw = x * column(from_std) + column(from_mean)
    return (raw - column(to_mean)) / column(to_std)


__all__ = ["PadCrop", "augment_config", "build_transform", "renormalize", "resize_batch", "train_ops"]
