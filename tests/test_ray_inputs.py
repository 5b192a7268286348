"""The workers' inputs on a cluster (`ray.train_input`, autovit_ray.ray_inputs): the object store's
prepared data and Ray Data's stream give the same images, labels and splits as the local path; the
core pieces (PreparedData, StreamBatches, FolderImageDecoder) are checked without Ray, the Ray Data
dataset on the session's local Ray, and a whole training run on each input in the integration step
(tests/test_integration_cluster.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autovit_ray.data import (
    DataConfig,
    FolderImageDecoder,
    StreamBatches,
    TensorBatches,
    build_loader,
    build_loaders,
    make_splits,
    prepare_data,
    stored_size,
    train_files,
)
from autovit_ray.data.loaders import _tensors
from autovit_ray.data.sources import _load_sources
from autovit_ray.training.config import config_from_dict


def _folder(root: Path, per_class: int = 6) -> Path:
    """3 classes of random images of two sizes (one nested a folder deeper), train/ and val/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c, cls in enumerate(("cat", "dog", "emu")):
            for i in range(n):
                folder = root / split / cls / ("sub" if i == 0 else "")
                folder.mkdir(parents=True, exist_ok=True)
                h, w = (20, 24) if (i + c) % 2 else (26, 22)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _config(root: Path, tmp_path: Path, **changes) -> DataConfig:
    return DataConfig(dataset="imagefolder", data_dir=str(root), resolution=16, val_size=3, calib_size=4,
                      batch_size=4, cache_dir=str(tmp_path / "cache"), mixup=0.0, cutmix=0.0, **changes)


def _forget_sources() -> None:
    _load_sources.cache_clear()
    _tensors.cache_clear()


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_prepared_data_builds_the_same_loaders_without_the_files(tmp_path):
    root = _folder(tmp_path / "data")
    cfg = _config(root, tmp_path)
    local = build_loaders(cfg)
    local.set_epoch(1)
    expected = {split: _batches(getattr(local, split)) for split in ("train", "val", "test", "calib")}
    prepared = prepare_data(cfg)
    shutil.rmtree(root)  # a node without the data set's files
    _forget_sources()
    try:
        shipped = build_loaders(cfg, prepared=prepared)
        shipped.set_epoch(1)
        assert shipped.classes == ("cat", "dog", "emu") and shipped.data_path == local.data_path == "batched"
        for split, batches in expected.items():
            got = _batches(getattr(shipped, split))
            assert len(got) == len(batches) > 0
            for (x, y), (x0, y0) in zip(got, batches):
                assert torch.equal(x, x0) and torch.equal(y, y0), split
        with pytest.raises(ValueError, match="does not exist"):
            build_loaders(cfg)  # the files really are gone
    finally:
        _forget_sources()


def test_prepare_data_refuses_a_streaming_path(tmp_path):
    cfg = _config(_folder(tmp_path / "data"), tmp_path, in_memory_limit_mb=0)
    with pytest.raises(ValueError, match="only the in-memory paths"):
        prepare_data(cfg)
    _forget_sources()


def test_stream_batches_augment_as_tensor_batches_do(tmp_path):
    """Fed the images TensorBatches picks, in its order, the stream gives the same tensors: the same
    augmentation, seeded by (seed, epoch, step, rank)."""
    root = _folder(tmp_path / "data")
    cfg = _config(root, tmp_path, re_prob=0.25)
    tensor_batches = build_loader(cfg, "train", world_rank=1, world_size=2)
    assert isinstance(tensor_batches, TensorBatches)
    tensor_batches.set_epoch(3)
    order = tensor_batches._order()
    b = cfg.batch_size

    def epoch_stream(epoch: int):
        assert epoch == 3
        for step in range(len(tensor_batches)):
            index = order[step * b:(step + 1) * b]
            # the decoder's layout: [B, S, S, 3]
            yield {"image": tensor_batches.tensors.images[index].permute(0, 2, 3, 1), "label":
                   tensor_batches.tensors.labels[index]}

    stream = StreamBatches(epoch_stream, len(tensor_batches), augment=tensor_batches.augment,
                           resolution=16, mean=tuple(cfg.mean), std=tuple(cfg.std), crop_pct=cfg.eval_crop_pct,
                           seed=cfg.seed, rank=1)
    stream.set_epoch(3)
    expected, got = _batches(tensor_batches), _batches(stream)
    assert len(got) == len(expected) == len(stream) > 0
    for (x, y), (x0, y0) in zip(got, expected):
        assert torch.equal(x, x0) and torch.equal(y, y0)
    _forget_sources()


def test_a_short_stream_is_an_error_not_a_hang():
    images = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    stream = StreamBatches(lambda _e: [{"image": images, "label": torch.zeros(4, dtype=torch.long)}], 2,
                           augment=None, resolution=8, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0, seed=0)
    with pytest.raises(RuntimeError, match="ended after 1 batches in epoch 0, expected 2"):
        list(stream)
    assert len(list(StreamBatches(lambda _e: iter([{"image": images, "label": torch.zeros(4, dtype=torch.long)}] * 3),
                                  2, augment=None, resolution=8, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0,
                                  seed=0))) == 2
    with pytest.raises(ValueError, match="at least one batch"):
        StreamBatches(lambda _e: [], 0, augment=None, resolution=8, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0,
                      seed=0)


def _image_key(image: np.ndarray) -> str:  # [S, S, 3] uint8
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def _in_memory_train_split(cfg: DataConfig) -> Counter:
    """(label, image digest) of every training-split image as the in-memory path decodes it."""
    prepared = prepare_data(cfg)
    return Counter((int(prepared.train_labels[i]), _image_key(prepared.train_images[i].transpose(1, 2, 0)))
                   for i in prepared.splits.train)


def test_folder_decoder_labels_and_pixels_match_the_in_memory_path(tmp_path):
    root = _folder(tmp_path / "data")
    cfg = _config(root, tmp_path)
    files, classes = train_files(cfg)
    assert len(files) == len(make_splits(cfg).train) and classes == ("cat", "dog", "emu")
    side = stored_size(cfg)[0]
    decoder = FolderImageDecoder(str(root / "train"), classes, side)
    rows = decoder({"bytes": np.array([Path(f).read_bytes() for f in files], dtype=object),
                    "path": np.array(files, dtype=object)})
    assert rows["image"].shape == (len(files), side, side, 3) and rows["image"].dtype == np.uint8
    got = Counter((int(label), _image_key(image)) for label, image in zip(rows["label"], rows["image"]))
    assert got == _in_memory_train_split(cfg)
    with pytest.raises(ValueError, match="is not in a class folder"):
        decoder.label(str(tmp_path / "elsewhere" / "x.png"))
    with pytest.raises(ValueError, match="corrupt or unreadable image .*broken.png"):
        decoder({"bytes": np.array([b"not an image"], dtype=object),
                 "path": np.array([str(root / "train" / "cat" / "broken.png")], dtype=object)})
    _forget_sources()


def test_train_input_errors_are_one_clear_line(tmp_path):
    from autovit_ray.ray_inputs import check_train_input

    root = _folder(tmp_path / "data")
    data = {k: v for k, v in dataclasses.asdict(_config(root, tmp_path)).items() if k != "seed"}

    def cfg(data_changes=None, **ray):
        return config_from_dict({"data": {**data, **(data_changes or {})}, "ray": ray})

    check_train_input(cfg(train_input="ray-data"))
    check_train_input(cfg(train_input="object-store"))
    with pytest.raises(ValueError, match="object-store needs an in-memory data path"):
        check_train_input(cfg({"in_memory_limit_mb": 0}, train_input="object-store"))
    with pytest.raises(ValueError, match="data.color_jitter must be 0"):
        check_train_input(cfg({"color_jitter": 0.4}, train_input="ray-data"))
    with pytest.raises(ValueError, match="reads image folders, not dataset 'digits'"):
        check_train_input(cfg({"dataset": "digits", "data_dir": None}, train_input="ray-data"))
    with pytest.raises(ValueError, match="ray.train_input"):
        cfg(train_input="nfs")
    _forget_sources()


def test_ray_data_reads_the_training_split_the_in_memory_path_trains_on(ray_session, tmp_path):
    """The Ray Dataset the workers stream: every training-split image once, with its label, decoded as
    the in-memory path decodes it; no validation or test image."""
    from autovit_ray.ray_inputs import train_dataset

    root = _folder(tmp_path / "data")
    data = {k: v for k, v in dataclasses.asdict(_config(root, tmp_path)).items() if k != "seed"}
    cfg = config_from_dict({"data": data, "ray": {"train_input": "ray-data"}})
    rows = train_dataset(cfg).take_all()
    got = Counter((int(row["label"]), _image_key(row["image"])) for row in rows)
    assert got == _in_memory_train_split(cfg.data) and len(rows) == len(make_splits(cfg.data).train)
    _forget_sources()
