"""Training augmentation on whole uint8 batches, on the batch's device (CPU or GPU).

timm's recipe (RandomResizedCrop, hflip, RandAugment, normalise, RandomErasing) as a few batched tensor
ops per batch instead of per-image PIL transforms. All randomness comes from the `torch.Generator`
passed in, drawn in a fixed order and amount that depend only on the config and the batch shape, so
reseeding it (from seed, epoch, step, rank) replays a batch exactly. Draws happen on the generator's
device and move to the images': a generator on the training device avoids the copies.

`train_batch`, on float [0, 1] images:

- crop "rrc": timm's RandomResizedCropAndInterpolation.get_params (10 tries at (scale, ratio), else
  the central fallback crop) for all samples at once, then one bilinear `grid_sample`; "pad": resize
  to r x r if needed, zero-pad `pad` px (torchvision's RandomCrop default), random r x r crop;
  "none": resize to r x r (bilinear, antialias). Then hflip with probability `hflip`.
- RandAugment as timm's ``rand-n{n}-m{m}-mstd{mstd}-inc1``: at each of `rand_n` layers every sample
  draws its own op (uniform, with replacement), magnitude N(m, mstd) clipped to [0, 10] (uniform in
  [0, m] when mstd > 100), a sign, and whether to apply it (probability `rand_p`, timm's default 0.5);
  each op then runs once on the subset of the batch that drew it.
- normalise with (mean, std), then random erasing as timm's re_mode='pixel', re_count=1.

Ops (timm's `_RAND_INCREASING_TRANSFORMS`, level m in [0, 10], ± a random sign per sample):
AutoContrast, Equalize, Invert; Rotate ±30·m/10 degrees about the centre; PosterizeIncreasing keeps
4 - int(0.4·m) bits; SolarizeIncreasing inverts levels >= 256 - int(25.6·m); SolarizeAdd adds
int(11·m) to levels < 128; Color/Contrast/Brightness/SharpnessIncreasing blend as PIL's ImageEnhance
with factor max(0.1, 1 ± 0.9·m/10); ShearX/Y ±0.3·m/10; TranslateX/YRel ±0.45·m/10 of the width /
height. Geometric ops use PIL's pixel geometry and fill with grey 128.

Deviations from timm: PosterizeIncreasing keeps at least 1 bit (timm asks for 0 bits at m = 10: Pillow 13
rejects that, older Pillow returned a black image). Only the "inc" op set exists, so 'rand-...'
without 'inc1' uses it too. Bilinear only (timm's training default picks bilinear or bicubic); the rrc
resize does not antialias when a crop is larger than the output; geometric ops blend the one-pixel
seam between image and fill where PIL cuts it hard. Images stay float between ops instead of being
rounded to uint8 after each; the ops defined on 8-bit levels (Posterize, Solarize*, Equalize) round
first, and Color / Contrast do not round their grey image as PIL's "L" conversion does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from kornia.geometry.transform import invert_affine_transform, warp_affine

from .config import parse_rand_augment  # noqa: F401 - part of this module's API

Tensor = torch.Tensor


@dataclass(frozen=True)
class AugmentConfig:
    resolution: int  # output size (square)
    crop: str = "rrc"  # "rrc" | "pad" | "none" (see the module docstring)
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad: int = 4
    hflip: float = 0.5
    rand_n: int = 0  # RandAugment ops per image (0: off)
    rand_m: float = 9.0  # magnitude, 0..10 as timm
    rand_mstd: float = 0.5  # per-op magnitude noise std (timm's mstd; > 100: uniform in [0, m])
    rand_p: float = 0.5  # probability of applying each drawn op (timm's 'p', default 0.5)
    re_prob: float = 0.0  # random erasing probability per image (re_mode='pixel', one box)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


# ---- random draws: all from the caller's generator, on its device, then moved to the data -----------

def _uniform(g: torch.Generator, shape: Sequence[int], device: torch.device,
             low: float = 0.0, high: float = 1.0) -> Tensor:
    return (torch.rand(tuple(shape), generator=g, device=g.device).to(device) * (high - low) + low)


def _randint(g: torch.Generator, high: Tensor) -> Tensor:
    """Integers uniform in [0, high] (inclusive, per element), as Python's random.randint(0, high)."""
    u = _uniform(g, high.shape, high.device)
    return torch.minimum(torch.floor(u * (high + 1)), high)


def _first_fit(ok: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """Per row, the values at the first attempt where `ok` holds (argmax returns the first maximum)."""
    first = ok.int().argmax(1, keepdim=True)
    return (ok.any(1), *(v.gather(1, first)[:, 0] for v in values))


# ---- crop / flip / normalise / erase ----------------------------------------------------------------

def _rrc(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    n, _, h, w = x.shape
    r = cfg.resolution
    area = _uniform(g, (n, 10), x.device, *cfg.scale) * (h * w)
    aspect = torch.exp(_uniform(g, (n, 10), x.device, math.log(cfg.ratio[0]), math.log(cfg.ratio[1])))
    cw, ch = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    found, cw, ch = _first_fit((cw <= w) & (ch <= h), cw, ch)
    # timm's fallback: the central crop with the aspect ratio clamped into `ratio`
    lo, hi = min(cfg.ratio), max(cfg.ratio)
    fw, fh = (w, round(w / lo)) if w / h < lo else (round(h * hi), h) if w / h > hi else (w, h)
    cw, ch = torch.where(found, cw, float(fw)), torch.where(found, ch, float(fh))
    top = torch.where(found, _randint(g, h - ch), float((h - fh) // 2))
    left = torch.where(found, _randint(g, w - cw), float((w - fw) // 2))
    # map the output's [-1, 1] onto the crop's edges (align_corners=False), as PIL's resized crop
    zero = torch.zeros_like(cw)
    theta = torch.stack([cw / w, zero, (2 * left + cw) / w - 1,
                         zero, ch / h, (2 * top + ch) / h - 1], 1).view(n, 2, 3)
    grid = F.affine_grid(theta, [n, 3, r, r], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _as_float(images: Tensor) -> Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"expected uint8 images [B, C, H, W], got {images.dtype} {tuple(images.shape)}")
    return images.float() / 255


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _pad_crop(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    r, p = cfg.resolution, cfg.pad
    x = F.pad(_resize(x, (r, r)), (p, p, p, p))  # zero padding
    n = x.shape[0]
    offsets = _randint(g, torch.full((2, n), 2.0 * p, device=x.device)).long()
    span = torch.arange(r, device=x.device)
    rows, cols = offsets[0, :, None] + span, offsets[1, :, None] + span
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [n, r, r, C] -> NCHW


def _normalise(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _erase(x: Tensor, prob: float, g: torch.Generator) -> Tensor:
    """timm's RandomErasing(mode='pixel', max_count=1): area 0.02..1/3, log-uniform aspect 0.3..1/0.3."""
    n, _, h, w = x.shape
    do = _uniform(g, (n,), x.device) < prob
    area = _uniform(g, (n, 10), x.device, 0.02, 1 / 3) * (h * w)
    aspect = torch.exp(_uniform(g, (n, 10), x.device, math.log(0.3), math.log(1 / 0.3)))
    eh, ew = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    found, eh, ew = _first_fit((ew < w) & (eh < h), eh, ew)  # no box fits in 10 tries: not erased
    top, left = _randint(g, (h - eh).clamp(min=0)), _randint(g, (w - ew).clamp(min=0))
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (do & found)[:, None, None, None] & in_rows[:, None, :, None] & in_cols[:, None, None, :]
    noise = torch.randn(tuple(x.shape), generator=g, device=g.device).to(x.device, x.dtype)
    return torch.where(mask, noise, x)


# ---- RandAugment ops: (x float [k,3,H,W] in [0,1], magnitude [k] in [0,10], sign [k] of ±1) -> x ----

def _v(t: Tensor) -> Tensor:
    return t.view(-1, 1, 1, 1)


def _levels(x: Tensor) -> Tensor:
    """The 8-bit levels PIL would see."""
    return torch.round(x * 255)


def _blend(degenerate: Tensor, x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    """PIL's ImageEnhance with timm's increasing factor max(0.1, 1 ± 0.9·m/10)."""
    factor = _v((1 + s * 0.9 * m / 10).clamp(min=0.1))
    return (degenerate + factor * (x - degenerate)).clamp(0, 1)


def _auto_contrast(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    flat = hi <= lo  # PIL leaves a constant channel alone
    return torch.where(flat, x, (x - lo) / torch.where(flat, 1.0, hi - lo))


def _equalize(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    # kornia takes level int(255·x): centre x on its level so that is the rounded level; a channel
    # kornia leaves unchanged comes back off-centre (equalised levels never are), restore it. Level
    # 255 centred would be 255.5/255 > 1, which kornia < 0.9 refuses: 1.0 is the same level.
    centred = ((_levels(x) + 0.5) / 255).clamp(max=1.0)
    out = kornia.enhance.equalize(centred)
    return torch.where(out == centred, _levels(x) / 255, out)


def _posterize(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    bits = (4 - torch.floor(m * 0.4)).clamp(min=1)  # timm: 4..0 bits kept; 0 would be all black
    step = _v(2.0 ** (8 - bits))
    return torch.floor(_levels(x) / step) * step / 255


def _solarize(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    threshold = 256 - torch.floor(m / 10 * 256).clamp(max=256)
    q = _levels(x)
    return torch.where(q >= _v(threshold), 255 - q, q) / 255


def _solarize_add(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    add = torch.floor(m / 10 * 110).clamp(max=128)
    q = _levels(x)
    return torch.where(q < 128, (q + _v(add)).clamp(max=255), q) / 255


def _contrast(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    mean = torch.round(kornia.color.rgb_to_grayscale(x).mean((1, 2, 3)) * 255) / 255
    return _blend(_v(mean).expand_as(x), x, m, s)


def _sharpness(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    smooth = x.clone()  # PIL's SMOOTH filter leaves the 1-pixel border as it is
    smooth[..., 1:-1, 1:-1] = F.conv2d(x, kernel.expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
    return _blend(smooth, x, m, s)


def _warp(x: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """PIL's Image.transform(AFFINE, (a..f)): output (x, y) samples input (ax + by + c, dx + ey + f) in
    PIL's corner-origin coordinates; converted to pixel-index coordinates for kornia (align_corners)."""
    c = c + 0.5 * (a + b - 1)
    f = f + 0.5 * (d + e - 1)
    out_to_in = torch.stack([a, b, c, d, e, f], 1).view(-1, 2, 3)
    fill = torch.full((x.shape[1],), 128 / 255, dtype=x.dtype, device=x.device)
    return warp_affine(x, invert_affine_transform(out_to_in), (x.shape[2], x.shape[3]),
                       padding_mode="fill", fill_value=fill).clamp(0, 1)


def _rotate(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    # PIL's Image.rotate(deg): counter-clockwise about (w/2, h/2)
    angle = -torch.deg2rad(s * 30 * m / 10)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = x.shape[3] / 2, x.shape[2] / 2
    return _warp(x, cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)


def _affine(kind: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    def op(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
        one, zero = torch.ones_like(m), torch.zeros_like(m)
        shear, shift = s * 0.3 * m / 10, s * 0.45 * m / 10
        matrices = {
            "ShearX": (one, shear, zero, zero, one, zero),
            "ShearY": (one, zero, zero, shear, one, zero),
            "TranslateXRel": (one, zero, shift * x.shape[3], zero, one, zero),
            "TranslateYRel": (one, zero, zero, zero, one, shift * x.shape[2]),
        }
        return _warp(x, *matrices[kind])
    return op


_OPS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "AutoContrast": _auto_contrast,
    "Equalize": _equalize,
    "Invert": lambda x, m, s: 1 - x,
    "Rotate": _rotate,
    "PosterizeIncreasing": _posterize,
    "SolarizeIncreasing": _solarize,
    "SolarizeAdd": _solarize_add,
    "ColorIncreasing": lambda x, m, s: _blend(kornia.color.rgb_to_grayscale(x), x, m, s),  # as PIL's "L"
    "ContrastIncreasing": _contrast,
    "BrightnessIncreasing": lambda x, m, s: _blend(torch.zeros_like(x), x, m, s),
    "SharpnessIncreasing": _sharpness,
    "ShearX": _affine("ShearX"),
    "ShearY": _affine("ShearY"),
    "TranslateXRel": _affine("TranslateXRel"),
    "TranslateYRel": _affine("TranslateYRel"),
}


def _rand_augment(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    n, dev, ops = x.shape[0], x.device, list(_OPS.values())
    for _ in range(cfg.rand_n):
        choice = torch.floor(_uniform(g, (n,), dev) * len(ops)).clamp(max=len(ops) - 1)
        applied = _uniform(g, (n,), dev) < cfg.rand_p
        if cfg.rand_mstd > 100:  # timm: uniform magnitude in [0, m]
            magnitude = _uniform(g, (n,), dev, 0.0, cfg.rand_m)
        else:
            noise = torch.randn((n,), generator=g, device=g.device).to(dev)
            magnitude = cfg.rand_m + cfg.rand_mstd * noise
        magnitude = magnitude.clamp(0, 10)
        sign = torch.where(_uniform(g, (n,), dev) < 0.5, -1.0, 1.0)
        for k, op in enumerate(ops):
            idx = torch.nonzero(applied & (choice == k)).squeeze(1)
            if idx.numel():
                x[idx] = op(x[idx], magnitude[idx], sign[idx])
    return x


# ---- public API -------------------------------------------------------------------------------------

def train_batch(images: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """uint8 [B,3,H,W] -> float32 [B,3,r,r] normalised: crop/resize, flip, RandAugment, normalise, erase."""
    x = _as_float(images)
    r = cfg.resolution
    if cfg.crop == "rrc":
        x = _rrc(x, cfg, generator)
    elif cfg.crop == "pad":
        x = _pad_crop(x, cfg, generator)
    elif cfg.crop == "none":
        x = _resize(x, (r, r))
    else:
        raise ValueError(f"unknown crop {cfg.crop!r}: expected 'rrc', 'pad' or 'none'")
    flip = _uniform(generator, (x.shape[0],), x.device) < cfg.hflip
    x = torch.where(_v(flip), x.flip(-1), x)
    if cfg.rand_n > 0:
        x = _rand_augment(x, cfg, generator)
    x = _normalise(x, cfg.mean, cfg.std)
    if cfg.re_prob > 0:
        x = _erase(x, cfg.re_prob, generator)
    return x


def eval_batch(images: Tensor, resolution: int, mean: Sequence[float], std: Sequence[float],
               crop_pct: float = 1.0) -> Tensor:
    """uint8 [B,3,H,W] -> float32 [B,3,r,r] normalised, as timm's eval transform (crop_mode 'center'):
    resize the shorter side to floor(r / crop_pct) (bilinear, antialias), centre crop r, normalise."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    h, w = images.shape[-2:]
    short = math.floor(resolution / crop_pct)
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)  # torchvision's Resize
    x = _resize(_as_float(images), size)
    top, left = int(round((size[0] - resolution) / 2)), int(round((size[1] - resolution) / 2))
    return _normalise(x[..., top:top + resolution, left:left + resolution], mean, std)
