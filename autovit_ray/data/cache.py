"""The decode cache of the in-memory data paths (`batched`, `tensors`): every image decoded once to uint8.

A data set that fits in `data.in_memory_limit_mb` is decoded once into uint8 tensors `[N, 3, H, W]`
(CIFAR-10's 60,000 images: 176 MiB; an image folder's images as S x S squares, see
`autovit_ray.data.data_path`) and cached in `data.cache_dir` (default `$AUTOVIT_RAY_DATA_CACHE`, else
`~/.cache/autovit-ray/data`) under a key made of the data set, the stored size and a hash of its source
files, so a second run does not decode again. The cache file carries a hash of its own tensors: a
truncated or altered file is detected, said, and rebuilt, never used. It is memory-mapped, so the
processes of one machine (Ray workers, evaluator actors) share one copy of it in the page cache. A cache
directory that cannot be written is said once and the run goes on decoding in memory.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

DEFAULT_CACHE_DIR = Path("~/.cache/autovit-ray/data")
CACHE_ENV = "AUTOVIT_RAY_DATA_CACHE"  # overrides DEFAULT_CACHE_DIR when data.cache_dir is unset
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ImageTensors:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]


def decode(source: Any, size: tuple[int, int] | None = None) -> ImageTensors:
    """Every image of a data source (`autovit_ray.data.sources.Source`) as one uint8 tensor: at their own
    size (which must be one size), or each resized and centre-cropped to `size` (H, W)."""
    def pixels(i: int) -> np.ndarray:  # [H, W, 3]
        return fit(source.image(i), size)

    first = pixels(0)
    images = np.empty((len(source), *first.shape), dtype=np.uint8)  # [N, H, W, 3]
    for i in range(len(source)):
        image = pixels(i)
        if image.shape != first.shape:
            raise ValueError(f"image {i} is {image.shape[1]}x{image.shape[0]} px, image 0 is "
                             f"{first.shape[1]}x{first.shape[0]}: the in-memory path needs images of one "
                             "size; use data.augment=timm for this data set")
        images[i] = image
    return ImageTensors(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                        torch.from_numpy(np.asarray(source.labels, dtype=np.int64)))


def fit(image: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]: as it is (size None), else its shorter side resized and its centre
    cropped to `size` (H, W), as `ImageOps.fit` does."""
    if size is not None and image.size != (size[1], size[0]):
        image = ImageOps.fit(image, (size[1], size[0]), method=Image.Resampling.BILINEAR)
    return np.asarray(image)


def _tensor_digest(tensors: ImageTensors) -> str:
    digest = hashlib.sha256(tensors.images.numpy().tobytes())
    digest.update(tensors.labels.numpy().tobytes())
    return digest.hexdigest()


def source_key(dataset: str, sources: tuple[Any, ...], size: tuple[int, int] | None = None) -> str:
    """The cache key of a data set: its name, the stored size and a hash of its source files (or, for
    images that come from no file, such as digits, which ships inside scikit-learn, of the images and
    labels themselves)."""
    digest = hashlib.sha256(f"{dataset}/{CACHE_FORMAT}/{size}".encode())
    for source in sources:
        files = getattr(source, "files", ())
        if not files:
            images = getattr(source, "images", None)  # an ArraySource's; else each image, decoded
            for block in [images] if isinstance(images, np.ndarray) else map(source.image, range(len(source))):
                digest.update(np.ascontiguousarray(block).tobytes())
            digest.update(np.asarray(source.labels, dtype=np.int64).tobytes())
        for path in files:
            with open(path, "rb") as f:
                for block in iter(functools.partial(f.read, 1 << 24), b""):
                    digest.update(block)
    return f"{dataset}-{digest.hexdigest()[:16]}"


def load_tensors(dataset: str, sources: tuple[Any, ...], cache_dir: str | Path | None,
                 log: Callable[[str], None] = print, size: tuple[int, int] | None = None) -> tuple[ImageTensors, ...]:
    """The decoded tensors of `sources` (official train, official test), at `size` (`decode`), from the
    cache when it holds a sound copy, else decoded (and cached when the directory can be written)."""
    folder = Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()
    path = folder / f"{source_key(dataset, sources, size)}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True, mmap=True)
            parts = tuple(ImageTensors(p["images"], p["labels"]) for p in saved["parts"])
            if saved.get("format") == CACHE_FORMAT and [_tensor_digest(p) for p in parts] == saved["digests"]:
                return parts
            log(f"decode cache {path} does not match its hash: decoding {dataset} again")
        except Exception as e:  # a truncated or foreign file: rebuild it
            log(f"decode cache {path} is unreadable ({type(e).__name__}): decoding {dataset} again")
    count = sum(len(source) for source in sources)
    if count > 20_000 or size is not None:  # minutes, not seconds: say why the run is quiet
        log(f"decoding {dataset} ({count:,} images) once into {path}")
    parts = tuple(decode(source, size) for source in sources)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        torch.save({"format": CACHE_FORMAT, "parts": [{"images": p.images, "labels": p.labels} for p in parts],
                    "digests": [_tensor_digest(p) for p in parts]}, tmp)
        os.replace(tmp, path)
    except OSError as e:
        log(f"decode cache: cannot write {folder} ({e.strerror or e}); {dataset} is decoded again on each run "
            "(set data.cache_dir to a writable folder)")
    return parts


__all__ = ["CACHE_ENV", "CACHE_FORMAT", "DEFAULT_CACHE_DIR", "ImageTensors", "decode", "fit", "load_tensors",
           "source_key"]
