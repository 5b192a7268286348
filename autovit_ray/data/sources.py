"""The data sets: one official split (train or test) of a dataset, decoded lazily to RGB PIL images.

A dataset's loader (its registration's, `autovit_ray.data.datasets`) returns its official train and test
splits as sources: `ArraySource` (uint8 images in memory), `FileSource` (image files), or any `Source`
subclass. The built-in datasets, by `DataConfig.dataset`:

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

Corrupt images raise a clear error; they are not skipped. Images are decoded when a sample is read, so
the error (a ValueError naming the file or the npz index) comes from the DataLoader, at the first
epoch that reads the image. The splits are fixed index sets: silently skipping would change the
training and validation sets from one machine to the next. Run `check_images(cfg)` to decode every
image once before a long run.
"""

from __future__ import annotations

import functools
import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .cache import fit
from .config import DataConfig
from .datasets import dataset_spec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Source:
    """One official split: `len()` images, `image(i)` an RGB PIL image, `labels[i]` its class index."""

    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    files: tuple[Path, ...] = ()  # the files the images come from (the decode cache's key)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        raise NotImplementedError


class ArraySource(Source):
    """Images held in memory: uint8 [N, H, W, 3] (RGB), labels [N] in 0..len(classes) - 1."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> None:
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ArraySource images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
        if labels.shape != images.shape[:1] or (labels.size and not 0 <= labels.min() <= labels.max() < len(classes)):
            raise ValueError(f"ArraySource labels must be {len(images)} class indices in 0..{len(classes) - 1}, "
                             f"got shape {list(labels.shape)}")
        self.images = images
        self.labels = labels.astype(np.int64)
        self.classes = tuple(classes)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


class _JpegSource(Source):
    def __init__(self, path: Path, jpeg: np.ndarray, offsets: np.ndarray, labels: np.ndarray,
                 classes: Sequence[str]) -> None:
        self.path, self.jpeg, self.offsets = path, jpeg, offsets
        self.files = (path,)
        self.labels = labels.astype(np.int64)
        self.classes = tuple(classes)

    def image(self, i: int) -> Image.Image:
        data = self.jpeg[self.offsets[i]:self.offsets[i + 1]].tobytes()
        return _decode(io.BytesIO(data), f"{self.path}[{i}]")


class FileSource(Source):
    """Image files, each decoded to RGB when read."""

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
            "replace or remove the file (corrupt images are not skipped, see autovit_ray.data.sources)"
        ) from e


def load_digits(data_dir: Path | None = None) -> tuple[Source, Source]:
    """scikit-learn's digits (it reads no folder: `data_dir` is None)."""
    from sklearn import datasets

    digits = datasets.load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [1797, 8, 8], values 0..16
    images = np.repeat(gray[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    train, test = _stratified_holdout(labels, round(0.2 * len(labels)), seed=0)
    classes = [str(c) for c in range(10)]
    return (ArraySource(images[train], labels[train], classes),
            ArraySource(images[test], labels[test], classes))


def _stratified_holdout(labels: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) sorted indices; the held-out part takes about the same share of every class
    (digits' test set here, every dataset's validation split in `autovit_ray.data.splits`)."""
    rng = np.random.default_rng(seed)
    key = np.empty(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        # The class's members in random order get keys spread evenly over [0, 1); the n smallest keys
        # of all classes then hold about n * (class share) images of each class.
        key[rng.permutation(members)] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.argsort(key, kind="stable")
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def load_cifar10(root: Path | None) -> tuple[Source, Source]:
    assert root is not None  # the registry's data_dir is set: _load_sources passes the folder
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


def _load_cifar10_pickles(folder: Path) -> tuple[Source, Source]:
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

    def to_source(batches: list[dict[bytes, Any]], classes: Sequence[str]) -> ArraySource:
        data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # rows are R, G, B planes
        labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
        return ArraySource(images, labels, classes)

    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        classes = tuple(n.decode() for n in read("batches.meta")[b"label_names"])
    train = to_source([read(f"data_batch_{i}") for i in range(1, 6)], classes)
    test = to_source([read("test_batch")], classes)
    train.files = tuple(folder / f"data_batch_{i}" for i in range(1, 6))
    test.files = (folder / "test_batch",)
    return train, test


def _scan_folder(root: Path, classes: tuple[str, ...] | None = None) -> FileSource:
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
    return FileSource(paths, np.asarray(labels, dtype=np.int64), classes)


def load_imagefolder(root: Path | None) -> tuple[Source, Source]:
    assert root is not None  # the registry's data_dir is set: _load_sources passes the folder
    train = _scan_folder(root / "train")
    return train, _scan_folder(root / "val", train.classes)


@functools.lru_cache(maxsize=4)
def _load_sources(dataset: str, data_dir: str | None) -> tuple[Source, Source]:
    """(official train, official test) of a dataset, cached per process."""
    spec = dataset_spec(dataset)
    root = None
    if spec.data_dir is not None:
        if data_dir is None:
            raise ValueError(f"dataset {spec.name!r} needs DataConfig.data_dir: a folder with {spec.data_dir}")
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise ValueError(f"data_dir {str(root)!r} does not exist or is not a folder "
                             f"(dataset {spec.name!r} expects {spec.data_dir})")
    sources = spec.loader()(root)
    if not (isinstance(sources, tuple) and len(sources) == 2 and all(isinstance(s, Source) for s in sources)):
        raise ValueError(f"the loader of dataset {spec.name!r} returned {type(sources).__name__}: expected "
                         "(official train, official test) as two autovit_ray.data.sources.Source objects")
    return sources


def source_dir(cfg: DataConfig) -> str | None:
    """The absolute folder `cfg`'s dataset reads (None: it reads no folder, or none was given)."""
    if cfg.defaults.data_dir is None or cfg.data_dir is None:
        return None
    return str(Path(cfg.data_dir).resolve())


def _sources(cfg: DataConfig) -> tuple[Source, Source]:
    return _load_sources(cfg.dataset, source_dir(cfg))


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
        images = np.empty((len(batch["path"]), self.size, self.size, 3), dtype=np.uint8)
        for i, (data, path) in enumerate(zip(batch["bytes"], batch["path"])):
            images[i] = fit(_decode(io.BytesIO(data), str(path)), (self.size, self.size))
        return {"image": images, "label": np.asarray([self.label(str(p)) for p in batch["path"]], dtype=np.int64)}


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


__all__ = ["CIFAR10_CLASSES", "IMAGE_EXTENSIONS", "ArraySource", "FileSource", "FolderImageDecoder", "Source",
           "check_images", "load_cifar10", "load_digits", "load_imagefolder", "num_classes", "source_dir"]
