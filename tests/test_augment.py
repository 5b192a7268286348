"""Batched training / eval augmentation (autovit_ray.data.augment) on tiny CPU tensors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from autovit_ray.data.augment import (
    _OPS,
    AugmentConfig,
    eval_batch,
    parse_rand_augment,
    train_batch,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY = 128 / 255


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 64, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, h, w), generator=_gen(seed), dtype=torch.uint8)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return TF.normalize(x, MEAN, STD)


def _op(name: str, x: torch.Tensor, m: float, sign: float = 1.0) -> torch.Tensor:
    n = x.shape[0]
    return _OPS[name](x.clone(), torch.full((n,), float(m)), torch.full((n,), float(sign)))


FULL = AugmentConfig(resolution=12, rand_n=2, re_prob=0.5)


@pytest.mark.parametrize("crop", ["rrc", "pad", "none"])
def test_train_batch_shape_dtype_range(crop):
    images = _images(h=16, w=20)
    out = train_batch(images, AugmentConfig(resolution=12, crop=crop, rand_n=2), _gen())
    assert out.shape == (64, 3, 12, 12) and out.dtype == torch.float32 and out.device == images.device
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    per_channel = out.transpose(0, 1).flatten(1)
    assert (per_channel.amin(1) >= lo - 1e-5).all() and (per_channel.amax(1) <= hi + 1e-5).all()
    erased = train_batch(images, AugmentConfig(resolution=12, crop=crop, re_prob=1.0), _gen())
    assert torch.isfinite(erased).all()
    with pytest.raises(TypeError, match="uint8"):
        train_batch(images.float(), AugmentConfig(resolution=12, crop=crop), _gen())


def test_eval_batch_matches_resize_centre_crop_normalise():
    images = _images(b=2, h=20, w=26)
    x = images.float() / 255
    ref = _normalise(TF.center_crop(TF.resize(x, 18, antialias=True), [16, 16]))  # floor(16 / 0.875) = 18
    torch.testing.assert_close(eval_batch(images, 16, MEAN, STD, crop_pct=0.875), ref, atol=1e-5, rtol=0)
    same = _images(b=2)
    assert torch.equal(eval_batch(same, 16, MEAN, STD), _normalise(same.float() / 255))


def test_same_seed_replays_other_seed_differs():
    images = _images()
    a, b = train_batch(images, FULL, _gen(1)), train_batch(images, FULL, _gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, train_batch(images, FULL, _gen(2)))


def test_ops_are_chosen_per_sample():
    images = _images(b=1).expand(64, -1, -1, -1)
    cfg = AugmentConfig(resolution=16, crop="none", hflip=0.0, rand_n=1, rand_p=1.0, rand_mstd=0.0)
    out = train_batch(images, cfg, _gen())
    assert torch.unique(out.flatten(1), dim=0).shape[0] > 3


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
                                  "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                                  "SharpnessIncreasing"])
def test_magnitude_zero_is_identity(name):
    x = _images(b=4).float() / 255
    torch.testing.assert_close(_op(name, x, 0.0), x, atol=1e-5, rtol=0)


def _hf_energy(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def test_colour_ops_move_in_the_expected_direction():
    x = _images(b=4).float() / 255 * 0.5 + 0.25  # mid-range: room to move both ways
    assert torch.equal(_op("Invert", x, 9), 1 - x)
    stretched = _op("AutoContrast", x, 9)
    assert stretched.amin() == 0 and stretched.amax() == 1
    assert _op("Equalize", x, 9).std() > x.std()
    flat = torch.full((1, 3, 8, 8), 0.4)
    assert torch.equal(_op("Equalize", flat, 9), torch.round(flat * 255) / 255)  # constant channel kept
    assert set((_op("PosterizeIncreasing", x, 10) * 255).round().unique().tolist()) <= {0.0, 128.0}
    levels = torch.round(x * 255)
    torch.testing.assert_close(_op("SolarizeIncreasing", x, 5) * 255,  # threshold 128
                               torch.where(levels >= 128, 255 - levels, levels))
    torch.testing.assert_close(_op("SolarizeAdd", x, 10) * 255,
                               torch.where(levels < 128, levels + 110, levels))
    spread = (x - x.mean(1, keepdim=True)).abs().mean()  # distance from grey across channels
    for name, measure in [("ColorIncreasing", lambda y: (y - y.mean(1, keepdim=True)).abs().mean()),
                          ("ContrastIncreasing", torch.std), ("BrightnessIncreasing", torch.mean),
                          ("SharpnessIncreasing", _hf_energy)]:
        base = measure(x) if name != "ColorIncreasing" else spread
        assert measure(_op(name, x, 9, +1)) > base > measure(_op(name, x, 9, -1)), name


def test_geometric_ops_move_content_and_fill_grey():
    white = torch.ones(1, 3, 20, 20)
    rotated = _op("Rotate", white, 9)
    assert torch.allclose(rotated[..., 0, 0], torch.tensor(GREY)) and rotated[..., 10, 10].eq(1).all()
    sheared = _op("ShearX", white, 10)  # input x = x + 0.3 y (+ 0.15 at the top row centres): bottom right is fill
    assert sheared[..., 0, :-1].eq(1).all() and torch.allclose(sheared[..., -1, -1], torch.tensor(GREY))
    sheared = _op("ShearY", white, 10)
    assert sheared[..., :-1, 0].eq(1).all() and torch.allclose(sheared[..., -1, -1], torch.tensor(GREY))
    x = _images(b=2, h=20, w=20).float() / 255
    m = 20 / 9  # 0.45 * m / 10 * 20 px = 2 px
    shifted = _op("TranslateXRel", x, m)  # content moves left
    torch.testing.assert_close(shifted[..., :, :-2], x[..., :, 2:], atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted[..., :, -2:], torch.full_like(shifted[..., :, -2:], GREY))
    shifted = _op("TranslateYRel", x, m, sign=-1)  # content moves down
    torch.testing.assert_close(shifted[..., 2:, :], x[..., :-2, :], atol=1e-5, rtol=0)


def test_hflip_one_flips_exactly():
    images = _images()
    cfg = AugmentConfig(resolution=16, crop="none", hflip=1.0)
    assert torch.equal(train_batch(images, cfg, _gen()), _normalise(images.flip(-1).float() / 255))


def test_random_erasing_erases_one_box_per_image():
    images = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    out = train_batch(images, AugmentConfig(resolution=32, crop="none", hflip=0.0, re_prob=1.0), _gen())
    erased = (out != _normalise(images.float())).all(1)  # [B, H, W]; noise never hits the base value
    for mask in erased:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        assert rows.numel() and cols.numel()
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and 0.01 * 1024 <= mask.sum() <= 0.45 * 1024  # 0.02..1/3, up to rounding


def test_pad_crop_shifts_by_at_most_pad():
    images = _images(b=16)
    out = train_batch(images, AugmentConfig(resolution=16, crop="pad", pad=4, hflip=0.0), _gen())
    levels = torch.round((out * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255)
    padded = F.pad(images.float(), (4, 4, 4, 4))
    shifts = set()
    for img, got in zip(padded, levels):
        found = [(i, j) for i in range(9) for j in range(9) if torch.equal(img[:, i:i + 16, j:j + 16], got)]
        assert found
        shifts.add(found[0])
    assert len(shifts) > 1


def test_rrc_whole_image_is_identity_or_plain_resize():
    images = _images(b=4)
    cfg = AugmentConfig(resolution=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    x = images.float() / 255
    torch.testing.assert_close(train_batch(images, cfg, _gen()), _normalise(x), atol=1e-5, rtol=0)
    up = train_batch(images, AugmentConfig(**{**cfg.__dict__, "resolution": 32}), _gen())
    ref = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, _normalise(ref), atol=1e-5, rtol=0)


def test_parse_rand_augment():
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == (2, 9.0, 0.5)
    assert parse_rand_augment("rand-n3-m7") == (3, 7.0, 0.0)
    assert parse_rand_augment("rand") == (2, 10.0, 0.0)
    assert parse_rand_augment(None)[0] == 0
    for bad in ("augmix-m5-w4", "original", "rand-m9-p0.3", "rand-tweights"):
        with pytest.raises(ValueError, match="expected 'rand'"):
            parse_rand_augment(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_input_device():
    images = _images().cuda()
    out = train_batch(images, FULL, torch.Generator(device="cuda").manual_seed(0))
    assert out.device == images.device and torch.isfinite(out).all()


def test_module_is_pure():
    code = ("import sys, autovit_ray.data.augment\n"
            "bad = [m for m in ('ray', 'mlflow', 'timm', 'PIL') if m in sys.modules]\nassert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
