"""Datasets, the three splits, timm transforms, data loaders and BatchNorm recalibration.

Datasets, by `DataConfig.dataset`:

- ``digits``: scikit-learn's handwritten digits (1,797 images of 8x8 px, 10 classes). It ships with
  scikit-learn, so nothing is downloaded; pixel values 0..16 are scaled to 0..255 and repeated on 3
  channels. It has no official test set: a fixed, stratified 20% (seed 0, whatever the config says)
  plays that role.
- ``cifar10``: from `data_dir`, in either of two layouts: ``train.npz`` / ``test.npz`` (JPEG bytes +
  offsets + labels, see docs/data.md) or torchvision's ``cifar-10-batches-py`` pickles
  (`data_dir` is that folder or contains it). The pickles are read with `pickle`, as torchvision does:
  only point it at files you trust.
- ``imagefolder``: ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*`` (ImageNet style);
  classes are the sorted folder names of ``train/``; every image is converted to RGB.

Splits (`make_splits`):

- ``test``: the official test set (``val/`` for imagefolder). Use it only to report final models.
- ``train`` / ``val``: a stratified split of the official *training* set; the search selects on ``val``.
  Its size is `val_size` (default: 5,000 for cifar10, 20% for digits, 10% for imagefolder).
- ``calib``: a fixed subset (`calib_size` images) of the ``train`` split for `evaluation.recalibrate_bn`.

The splits depend only on `split_seed` (default 0), never on `seed`. `seed` orders the batches and
seeds the augmentation; were the validation images drawn with it too, a supernet trained with another
`seed` would have trained on the images that the search later selects on.

Transforms come from timm (`timm.data.create_transform`: RandAugment, random erasing; `timm.data.Mixup`
for Mixup / CutMix with label smoothing). Small images need care:

- digits (8x8): ``augment="auto"`` means no per-image augmentation, only resize and normalise
  (timm's ``no_aug`` transform). A random-resized crop at timm's default scale keeps as little as
  2x2 px of an 8x8 digit, a horizontal flip turns some digits into other shapes, and RandAugment's
  translation (45% of the image) pushes strokes out of the frame. Mixup / CutMix still apply per batch.
- cifar10 (32x32): the random-resized crop keeps at least 35% of the image (``scale=(0.35, 1)``)
  instead of timm's 8% (a 9x9 px crop), and evaluation does not crop (``crop_pct=1``); at 32 px the
  border holds as much of the object as the centre.

The data path (`resolve_data_path`): images that fit in memory are decoded once to uint8 tensors and
batched on the training device (`autovit_ray.batches`, `autovit_ray.augment`); the others stream from
their files through timm's PIL transforms in DataLoader workers.

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

Our models see images normalised with `DataConfig.mean` / `std` (ImageNet's by default); `renormalize`
converts a batch to another normalisation (a teacher's, see `autovit_ray.distill.Teacher`).

timm 1.0.31's RandAugment can ask Pillow to posterize to 0 bits, which Pillow 13 rejects with a
ValueError (about once per 700 images at m9-mstd0.5); `build_transform` swaps in a posterize op that
gives the black image older Pillow gave.

Corrupt images raise a clear error; they are not skipped. Images are decoded when a sample is read, so
the error (a ValueError naming the file or the npz index) comes from the DataLoader, at the first
epoch that reads the image. The splits are fixed index sets: silently skipping would change the
training and validation sets from one machine to the next. Run `check_images(cfg)` to decode every
image once before a long run.

Data-parallel ranks: the train loader shards with `DistributedSampler` (seeded by `seed`; call
`Loaders.set_epoch(epoch)` each epoch, which also reseeds the worker processes' augmentation RNGs);
val and test loaders give rank r the images r, r + world_size, ... (no padding, so summed counts are
exact); the calib loader is not sharded, so every rank recalibrates BatchNorm on the same images and the
replicas stay identical. With ``num_workers=0`` augmentation draws from the process's global RNGs
(`random`, `torch`), and `timm.data.Mixup` always draws from `numpy.random`: seed or checkpoint those.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from autovit_ray.data_config import (  # noqa: F401 - the config's names, re-exported here
    AUGMENT_MODES,
    CROPS,
    DATASETS,
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    INPUT_PROFILE_DATASETS,
    DataConfig,
    _augments,
    _bad,
    _batched_refusal,
    _is_int,
)

if TYPE_CHECKING:
    from timm.data import Mixup

# timm and torchvision are imported where a transform is built: importing them costs about 2 s of CPU
# (torchvision pulls in torch._dynamo), which every Ray worker that only evaluates in-memory tensors paid.

SPLITS = ("train", "val", "test", "calib")
DATA_PATHS = ("batched", "tensors", "timm", "timm-no-aug")  # what resolve_data_path gives
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---------------------------------------------------------------------------------------------------
# Sources: one official split (train or test) of a dataset, decoded lazily to RGB PIL images.


class _Source:
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    files: tuple[Path, ...] = ()  # the files the images come from (the decode cache's key)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        raise NotImplementedError


class _ArraySource(_Source):
    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> None:
        self.images = images  # uint8 [N, H, W, 3]
        self.labels = labels.astype(np.int64)
        self.classes = tuple(classes)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


class _JpegSource(_Source):
    def __init__(self, path: Path, jpeg: np.ndarray, offsets: np.ndarray, labels: np.ndarray,
                 classes: Sequence[str]) -> None:
        self.path, self.jpeg, self.offsets = path, jpeg, offsets
        self.files = (path,)
        self.labels = labels.astype(np.int64)
        self.classes = tuple(classes)

    def image(self, i: int) -> Image.Image:
        data = self.jpeg[self.offsets[i]:self.offsets[i + 1]].tobytes()
        return _decode(io.BytesIO(data), f"{self.path}[{i}]")


class _FileSource(_Source):
    def __init__(self, paths: list[Path], labels: np.ndarray, classes: Sequence[str]) -> None:
        self.paths = paths
        self.files = tuple(paths)
        self.labels = labels.astype(np.int64)
        self.classes = tuple(classes)

    def image(self, i: int) -> Image.Image:
        return _decode(self.paths[i], str(self.paths[i]))


def _decode(file: Any, name: str) -> Image.Image:
    try:
        with Image.open(file) as img:
            return img.convert("RGB")  # convert() loads the pixels, so a truncated file fails here
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for unreadable / truncated images
        raise ValueError(
            f"corrupt or unreadable image {name}: {e}. Expected an image Pillow can decode; "
            "replace or remove the file (corrupt images are not skipped, see autovit_ray.data)"
        ) from e


def _load_digits() -> tuple[_Source, _Source]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [1797, 8, 8], values 0..16
    images = np.repeat(gray[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    train, test = _stratified_holdout(labels, round(0.2 * len(labels)), seed=0)
    classes = [str(c) for c in range(10)]
    return (_ArraySource(images[train], labels[train], classes),
            _ArraySource(images[test], labels[test], classes))


def _load_cifar10(root: Path) -> tuple[_Source, _Source]:
    if (root / "train.npz").is_file() and (root / "test.npz").is_file():
        return _load_cifar10_npz(root / "train.npz"), _load_cifar10_npz(root / "test.npz")
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file():
            return _load_cifar10_pickles(folder)
    raise ValueError(
        f"no CIFAR-10 data in {root}: expected train.npz and test.npz (docs/data.md), or "
        "torchvision's cifar-10-batches-py folder (data_batch_1..5, test_batch), there or in a subfolder"
    )


def _load_cifar10_npz(path: Path) -> _JpegSource:
    with np.load(path) as npz:
        missing = {"jpeg", "offsets", "labels"} - set(npz.files)
        if missing:
            raise ValueError(f"{path} is not a CIFAR-10 npz: missing arrays {sorted(missing)} "
                             "(expected jpeg, offsets, labels; see docs/data.md)")
        classes = tuple(str(c) for c in npz["classes"]) if "classes" in npz.files else CIFAR10_CLASSES
        return _JpegSource(path, npz["jpeg"], npz["offsets"], npz["labels"], classes)


def _load_cifar10_pickles(folder: Path) -> tuple[_Source, _Source]:
    def read(name: str) -> dict[bytes, Any]:
        path = folder / name
        if not path.is_file():
            raise ValueError(f"incomplete cifar-10-batches-py folder {folder}: {name} is missing "
                             "(expected data_batch_1..5 and test_batch)")
        try:
            with open(path, "rb") as f:
                return pickle.load(f, encoding="bytes")
        except Exception as e:
            raise ValueError(f"cannot read CIFAR-10 batch {path}: {e}") from e

    def to_source(batches: list[dict[bytes, Any]], classes: Sequence[str]) -> _ArraySource:
        data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # rows are R, G, B planes
        labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
        return _ArraySource(images, labels, classes)

    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        classes = tuple(n.decode() for n in read("batches.meta")[b"label_names"])
    train = to_source([read(f"data_batch_{i}") for i in range(1, 6)], classes)
    test = to_source([read("test_batch")], classes)
    train.files = tuple(folder / f"data_batch_{i}" for i in range(1, 6))
    test.files = (folder / "test_batch",)
    return train, test


def _scan_folder(root: Path, classes: tuple[str, ...] | None = None) -> _FileSource:
    if not root.is_dir():
        raise ValueError(f"imagefolder split {root} does not exist: expected <data_dir>/train/<class>/* "
                         "and <data_dir>/val/<class>/*")
    found = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    classes = classes if classes is not None else found
    if not classes:
        raise ValueError(f"{root} has no class folders: expected {root}/<class>/<image files>")
    extra = sorted(set(found) - set(classes))
    if extra:
        raise ValueError(f"{root} has class folders {extra} that train/ does not have")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file():
                paths.append(path)
                labels.append(label)
    if not paths:
        raise ValueError(f"{root} holds no images (extensions {IMAGE_EXTENSIONS})")
    return _FileSource(paths, np.asarray(labels, dtype=np.int64), classes)


def _load_imagefolder(root: Path) -> tuple[_Source, _Source]:
    train = _scan_folder(root / "train")
    return train, _scan_folder(root / "val", train.classes)


@functools.lru_cache(maxsize=4)
def _load_sources(dataset: str, data_dir: str | None) -> tuple[_Source, _Source]:
    """(official train, official test) of a dataset, cached per process."""
    if dataset == "digits":
        return _load_digits()
    layouts = {"cifar10": "train.npz + test.npz, or cifar-10-batches-py",
               "imagefolder": "train/<class>/* and val/<class>/*"}
    if data_dir is None:
        raise ValueError(f"dataset {dataset!r} needs DataConfig.data_dir: a folder with {layouts[dataset]}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ValueError(f"data_dir {str(root)!r} does not exist or is not a folder "
                         f"(dataset {dataset!r} expects {layouts[dataset]})")
    return _load_cifar10(root) if dataset == "cifar10" else _load_imagefolder(root)


def _sources(cfg: DataConfig) -> tuple[_Source, _Source]:
    data_dir = None if cfg.dataset == "digits" or cfg.data_dir is None else str(Path(cfg.data_dir).resolve())
    return _load_sources(cfg.dataset, data_dir)


# ---------------------------------------------------------------------------------------------------
# Splits


@dataclass(frozen=True)
class Splits:
    """Indices of each split: train / val / calib into the official training set, test into the test set."""

    train: np.ndarray
    val: np.ndarray
    calib: np.ndarray
    test: np.ndarray


def _stratified_holdout(labels: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) sorted indices; the held-out part takes about the same share of every class."""
    rng = np.random.default_rng(seed)
    key = np.empty(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        # The class's members in random order get keys spread evenly over [0, 1); the n smallest keys
        # of all classes then hold about n * (class share) images of each class.
        key[rng.permutation(members)] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.argsort(key, kind="stable")
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def make_splits(cfg: DataConfig) -> Splits:
    train_source, test_source = _sources(cfg)
    n = len(train_source)
    val_size = cfg.val_size if cfg.val_size is not None else cfg.defaults.val_size
    n_val = val_size if isinstance(val_size, int) else max(1, round(val_size * n))
    if n_val >= n:
        raise _bad("val_size", cfg.val_size, f"fewer images than the training set's {n}")
    train, val = _stratified_holdout(train_source.labels, n_val, cfg.split_seed)
    rng = np.random.default_rng([cfg.split_seed, 1])
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
    source = "sklearn.datasets.load_digits" if cfg.dataset == "digits" else str(Path(cfg.data_dir or "").resolve())
    return {"name": cfg.dataset, "source": source, "digest": digest.hexdigest()[:16],
            "sizes": {name: len(getattr(splits, name)) for name in ("train", "val", "calib", "test")},
            "num_classes": len(train_source.classes), "split_seed": cfg.split_seed}


# ---------------------------------------------------------------------------------------------------
# Transforms, datasets, loaders


def stored_size(cfg: DataConfig) -> tuple[int, int] | None:
    """(H, W) of the in-memory tensors: None keeps the native size (digits, cifar10: one size); an
    image folder's images become S x S squares (module doc)."""
    if cfg.dataset != "imagefolder":
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


def build_transform(cfg: DataConfig, train: bool, resolution: int | None = None) -> Any:
    """The timm transform of a split: PIL image -> normalised float tensor [3, r, r]."""
    from timm.data import create_transform
    from torchvision import transforms

    r = resolution or cfg.input_resolution
    common = dict(input_size=r, interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std)
    if not train:
        return create_transform(is_training=False, crop_pct=cfg.eval_crop_pct, **common)
    if not _augments(cfg):
        return create_transform(is_training=True, no_aug=True, **common)
    try:  # (crop + flip, RandAugment, to tensor + normalise + erasing); timm's implied jitter left out
        primary, secondary, final = create_transform(
            is_training=True, scale=cfg.scale or cfg.defaults.scale, hflip=cfg.hflip,
            auto_augment=cfg.auto_augment, re_prob=cfg.re_prob, re_mode="pixel", color_jitter=None,
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
        ops = [crop[a.crop]] + ([("hflip", a.hflip)] if a.hflip > 0 else [])
        ops += [("rand-augment", (a.rand_n, float(a.rand_m), float(a.rand_mstd)))] if a.rand_n > 0 else []
        ops += [("normalize", (_rounded(a.mean), _rounded(a.std)))]
        return ops + ([("erase", a.re_prob)] if a.re_prob > 0 else [])
    if path != "timm":
        raise ValueError(f"train_ops: path {path!r} is not an augmenting path: expected 'timm' or 'batched'")
    from torchvision import transforms

    ops: list[tuple[str, Any]] = []
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
            img = img.resize((r, r), Image.BILINEAR)
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


class ImageDataset(Dataset):
    """Samples `indices` of a source through `transform`; items are (image tensor, int label)."""

    def __init__(self, source: _Source, indices: np.ndarray, transform: Any) -> None:
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


def build_dataset(cfg: DataConfig, split: str, resolution: int | None = None,
                  part: tuple[int, int] | None = None) -> ImageDataset:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    train_source, test_source = _sources(cfg)
    indices = _part(getattr(make_splits(cfg), split), part)
    source = test_source if split == "test" else train_source
    return ImageDataset(source, indices, build_transform(cfg, split == "train", resolution))


def _epoch_seed(cfg: DataConfig, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, epoch, rank]).generate_state(1)[0])


def augment_config(cfg: DataConfig, resolution: int | None = None) -> Any:
    """The training recipe of `cfg` for the batched path (`autovit_ray.augment.AugmentConfig`)."""
    from autovit_ray.augment import AugmentConfig, parse_rand_augment

    n, m, mstd = parse_rand_augment(cfg.auto_augment)
    return AugmentConfig(resolution=resolution or cfg.input_resolution, crop=cfg.train_crop,
                         scale=cfg.scale or cfg.defaults.scale, pad=cfg.pad, hflip=cfg.hflip, rand_n=n, rand_m=m, rand_mstd=mstd, re_prob=cfg.re_prob,
                         mean=tuple(cfg.mean), std=tuple(cfg.std))


@functools.lru_cache(maxsize=2)
def _tensors(dataset: str, data_dir: str | None, cache_dir: str | None,
             size: tuple[int, int] | None) -> tuple[Any, ...]:
    """(official train, official test) as decoded tensors, once per process."""
    from autovit_ray.batches import load_tensors

    return load_tensors(dataset, _load_sources(dataset, data_dir), cache_dir, size=size)


def prepare_in_memory(cfg: DataConfig) -> None:
    """Decode and cache the in-memory tensors of `cfg` here, once, before several processes (Ray Train
    workers, evaluator actors) each need them: they then map the cache file instead of each decoding."""
    if resolve_data_path(cfg) in ("batched", "tensors"):
        from autovit_ray.batches import load_tensors

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

    def tensors(self) -> tuple[Any, Any]:
        """(official train, official test) as `ImageTensors` over these arrays (no copy)."""
        import warnings

        from autovit_ray.batches import ImageTensors

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
    from autovit_ray.batches import load_tensors

    train, test = load_tensors(cfg.dataset, _sources(cfg), cfg.cache_dir, size=stored_size(cfg))
    return PreparedData(make_splits(cfg), _sources(cfg)[0].classes, train.images.numpy(), train.labels.numpy(),
                        test.images.numpy(), test.labels.numpy())


def _in_memory_path(cfg: DataConfig) -> str:
    """The in-memory data path of prepared data (`prepare_data` refuses the others)."""
    return "batched" if _augments(cfg) else "tensors"


def train_files(cfg: DataConfig) -> tuple[list[str], tuple[str, ...]]:
    """(files of the training split, class names) of an image folder: what a distributed reader (Ray
    Data) reads; the same images, in the same split, as every other data path."""
    if cfg.dataset != "imagefolder":
        raise ValueError(f"dataset {cfg.dataset!r} has no image files to read: expected dataset 'imagefolder'")
    source = _sources(cfg)[0]
    assert isinstance(source, _FileSource)
    return [str(source.paths[i]) for i in make_splits(cfg).train], source.classes


class FolderImageDecoder:
    """Batches of image files {"bytes": [B], "path": [B]} (Ray Data's `read_binary_files(...,
    include_paths=True)`) -> {"image": uint8 [B, S, S, 3], "label": int64 [B]}: decoded to RGB, fitted to
    S x S (`stored_size`) and labelled by their class folder under `root`, as `_scan_folder` labels them."""

    def __init__(self, root: str, classes: Sequence[str], size: int) -> None:
        self.root = Path(root).resolve()
        self.index = {name: i for i, name in enumerate(classes)}
        self.size = size

    def label(self, path: str) -> int:
        try:
            return self.index[Path("/", path).relative_to(self.root).parts[0]]
        except (ValueError, KeyError, IndexError):
            raise ValueError(f"image {path} is not in a class folder of {self.root} "
                             f"(expected {self.root}/<class>/...; classes {sorted(self.index)[:5]}...)") from None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from autovit_ray.batches import fit

        images = np.empty((len(batch["path"]), self.size, self.size, 3), dtype=np.uint8)
        for i, (data, path) in enumerate(zip(batch["bytes"], batch["path"])):
            images[i] = fit(_decode(io.BytesIO(data), str(path)), (self.size, self.size))
        return {"image": images, "label": np.asarray([self.label(str(p)) for p in batch["path"]], dtype=np.int64)}


def _tensor_loader(cfg: DataConfig, split: str, resolution: int | None, world_rank: int, world_size: int,
                   device: torch.device | str, augment: bool, part: tuple[int, int] | None,
                   prepared: PreparedData | None = None) -> Any:
    from autovit_ray.batches import TensorBatches

    if prepared is not None:
        train_tensors, test_tensors = prepared.tensors()
        splits = prepared.splits
    else:
        data_dir = None if cfg.dataset == "digits" or cfg.data_dir is None else str(Path(cfg.data_dir).resolve())
        train_tensors, test_tensors = _tensors(cfg.dataset, data_dir, cfg.cache_dir, stored_size(cfg))
        splits = make_splits(cfg)
    indices = _part(getattr(splits, split), part)
    r = resolution or cfg.input_resolution
    loader = TensorBatches(
        test_tensors if split == "test" else train_tensors, indices, cfg.batch_size, train=split == "train",
        augment=augment_config(cfg, r) if split == "train" and augment else None, resolution=r, mean=tuple(cfg.mean),
        std=tuple(cfg.std), crop_pct=cfg.eval_crop_pct, seed=cfg.seed, rank=world_rank, world_size=world_size,
        shard=split != "calib", device=device)
    if split == "train" and len(loader) < 1:
        raise _bad("batch_size", cfg.batch_size,
                   f"at most the {len(indices) // world_size} training images of rank {world_rank} (the last "
                   "incomplete batch is dropped)")
    return loader


def _part(indices: np.ndarray, part: tuple[int, int] | None) -> np.ndarray:
    """Part k of n of a split: positions k, k + n, ... of its sorted indices (fixed by the split alone)."""
    if part is None:
        return indices
    k, n = part
    return indices[k::n]


def build_loader(cfg: DataConfig, split: str, resolution: int | None = None, world_rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu", part: tuple[int, int] | None = None,
                 prepared: PreparedData | None = None) -> Any:
    """One split's loader at `resolution` (default: `cfg.input_resolution`), sharded for `world_rank`: on
    the in-memory paths a `TensorBatches` that prepares batches on `device`, else a DataLoader over timm
    transforms (`resolve_data_path`). `part` = (k, n): only the k-th of n fixed interleaved parts of the
    split (`_part`; e.g. a search selecting on one half of the validation split). `prepared`: the
    driver's `prepare_data(cfg)`, read instead of `data_dir` (in-memory paths only)."""
    if part is not None and not (isinstance(part, tuple) and len(part) == 2 and all(_is_int(v) for v in part)
                                 and 0 <= part[0] < part[1]):
        raise ValueError(f"part {part!r} is invalid: expected (k, n) with 0 <= k < n")
    if not (_is_int(world_size) and world_size >= 1 and _is_int(world_rank) and 0 <= world_rank < world_size):
        raise ValueError(f"world_rank={world_rank!r}, world_size={world_size!r}: expected 0 <= rank < size")
    if resolution is not None and not (_is_int(resolution) and resolution > 0):
        raise ValueError(f"resolution {resolution!r} is invalid: expected a positive integer or None")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    path = resolve_data_path(cfg) if prepared is None else _in_memory_path(cfg)
    if path in ("batched", "tensors"):
        return _tensor_loader(cfg, split, resolution, world_rank, world_size, device, augment=path == "batched",
                              part=part, prepared=prepared)
    dataset = build_dataset(cfg, split, resolution, part)
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
    loaders = {s: build_loader(cfg, s, resolution, world_rank, world_size, device, prepared=prepared)
               for s in SPLITS if not (s == "train" and train is not None)}
    classes = prepared.classes if prepared is not None else _sources(cfg)[0].classes
    mixup_fn = build_mixup(cfg, len(classes))
    data_path = "ray-data" if train is not None else (
        resolve_data_path(cfg) if prepared is None else _in_memory_path(cfg))
    return Loaders(
        train=train if train is not None else loaders.pop("train"), **loaders, num_classes=len(classes),
        classes=classes, mixup_fn=mixup_fn, label_smoothing=cfg.label_smoothing,
        resolution=resolution or cfg.input_resolution, mean=cfg.mean, std=cfg.std, cfg=cfg, data_path=data_path,
        world_rank=world_rank,
    )


def num_classes(cfg: DataConfig) -> int:
    return len(_sources(cfg)[0].classes)


def check_images(cfg: DataConfig) -> int:
    """Decode every image of the dataset once; returns the count, raises ValueError on the first bad one."""
    count = 0
    for source in _sources(cfg):
        for i in range(len(source)):
            source.image(i)
            count += 1
    return count


# ---------------------------------------------------------------------------------------------------
# Batch helpers and BatchNorm recalibration


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


__all__ = [
    "CIFAR10_CLASSES", "DATASETS", "DATA_PATHS", "SPLITS", "DataConfig", "FolderImageDecoder", "ImageDataset",
    "Loaders", "PreparedData", "Splits",
    "build_dataset", "build_loader", "build_loaders", "build_mixup", "build_transform", "check_images",
    "in_memory_mb", "legacy_data_path", "make_splits", "prepare_in_memory", "num_classes", "renormalize", "resize_batch",
    "prepare_data", "resolve_data_path", "set_epoch", "stored_size", "train_files",
]
