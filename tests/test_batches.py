"""The in-memory data path (`data.augment: batched`; `autovit_ray.data.cache`, `.batches`): the decode
cache, the batched loaders' order, sharding and determinism, and training through it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from autovit_ray.data import (
    DataConfig,
    TensorBatches,
    build_loader,
    build_loaders,
    cache,
    in_memory_mb,
    make_splits,
    resolve_data_path,
    stored_size,
)
from autovit_ray.data.cache import load_tensors
from autovit_ray.data.loaders import _tensors
from autovit_ray.data.sources import _load_sources


def _digits(**overrides) -> DataConfig:
    return DataConfig(dataset="digits", augment="batched", batch_size=16, mixup=0.0, cutmix=0.0, **overrides)


def test_decode_cache_is_reused_checked_and_rebuilt(tmp_path, monkeypatch) -> None:
    sources = _load_sources("digits", None)
    lines: list[str] = []
    train, test = load_tensors("digits", sources, tmp_path, log=lines.append)
    assert train.images.shape == (len(sources[0]), 3, 8, 8) and train.images.dtype == torch.uint8
    assert torch.equal(train.labels, torch.as_tensor(sources[0].labels)) and len(test.labels) == len(sources[1])
    assert int(train.images.max()) == 255 and lines == []
    (cached,) = tmp_path.glob("digits-*.pt")

    def no_decoding(_source):
        raise AssertionError("decoded although the cache is sound")
    monkeypatch.setattr(cache, "decode", no_decoding)
    again, _ = load_tensors("digits", sources, tmp_path, log=lines.append)
    assert torch.equal(again.images, train.images) and lines == []
    monkeypatch.undo()

    # an altered cache is detected by its hash and rebuilt, a truncated one too
    saved = torch.load(cached, weights_only=True)
    saved["parts"][0]["images"][0, 0, 0, 0] ^= 1
    torch.save(saved, cached)
    again, _ = load_tensors("digits", sources, tmp_path, log=lines.append)
    assert "does not match its hash" in lines[-1] and torch.equal(again.images, train.images)
    cached.write_bytes(cached.read_bytes()[:1000])
    again, _ = load_tensors("digits", sources, tmp_path, log=lines.append)
    assert "is unreadable" in lines[-1] and torch.equal(again.images, train.images)

    # a cache directory that cannot be written: said, and the run goes on
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    again, _ = load_tensors("digits", sources, blocked / "cache", log=lines.append)
    assert "cannot write" in lines[-1] and torch.equal(again.images, train.images)


def _all(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_train_batches_replay_per_epoch_and_shard_across_ranks(tmp_path) -> None:
    cfg = _digits(cache_dir=str(tmp_path), auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    loader = build_loader(cfg, "train")
    assert isinstance(loader, TensorBatches) and len(loader) == len(make_splits(cfg).train) // 16
    loader.set_epoch(1)
    x1, y1 = _all(loader)
    assert x1.dtype == torch.float32 and x1.shape[1:] == (3, 8, 8) and torch.isfinite(x1).all()
    fresh = build_loader(cfg, "train")
    fresh.set_epoch(1)  # a resumed run: a new loader set to the same epoch replays it
    x1b, y1b = _all(fresh)
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)
    loader.set_epoch(2)
    x2, y2 = _all(loader)
    assert not torch.equal(y1, y2)  # another order
    # two ranks: disjoint halves of one permutation, the same number of steps
    ranks = [build_loader(cfg, "train", world_rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    assert len(ranks[0]) == len(ranks[1])
    orders = [r._order() for r in ranks]
    assert not set(orders[0].tolist()) & set(orders[1].tolist())
    assert set(orders[0].tolist()) | set(orders[1].tolist()) <= set(make_splits(cfg).train.tolist())


def test_eval_batches_cover_the_split_once_and_match_the_timm_path(tmp_path) -> None:
    cfg = _digits(cache_dir=str(tmp_path))
    val = build_loader(cfg, "val")
    x, y = _all(val)
    splits = make_splits(cfg)
    assert len(y) == len(splits.val)
    shards = [_all(build_loader(cfg, "val", world_rank=r, world_size=2))[1] for r in (0, 1)]
    assert len(shards[0]) + len(shards[1]) == len(splits.val)
    # the same images as timm's eval transform (8 px: resize is the identity, then normalise)
    timm_x, timm_y = _all(build_loader(dataclasses.replace(cfg, augment="none", in_memory_limit_mb=0), "val"))
    assert torch.equal(y, timm_y) and torch.allclose(x, timm_x, atol=1e-5)
    assert len(_all(build_loader(cfg, "calib", world_rank=1, world_size=2))[1]) == len(splits.calib)  # not sharded


def test_batched_path_refuses_what_it_cannot_do() -> None:
    too_small = DataConfig(dataset="digits", augment="batched", in_memory_limit_mb=0)
    with pytest.raises(ValueError, match="in_memory_limit_mb = 0 is invalid: expected at least the 1 MiB .*"
                                         "data.augment=timm streams them"):
        build_loader(too_small, "train")
    with pytest.raises(ValueError, match="a RandAugment policy .* with data.augment=batched"):
        DataConfig(dataset="digits", augment="batched", auto_augment="augmix-m5")
    with pytest.raises(ValueError, match="'bilinear' with data.augment=batched"):
        DataConfig(dataset="digits", augment="batched", interpolation="bicubic")
    with pytest.raises(ValueError, match="in_memory_limit_mb = -1 is invalid"):
        DataConfig(in_memory_limit_mb=-1)


@pytest.mark.parametrize("overrides, path", [
    (dict(), "tensors"),  # digits' recipe is no augmentation: in memory
    (dict(in_memory_limit_mb=0), "timm-no-aug"),  # the old default, streamed
    (dict(augment="batched"), "batched"),
    (dict(augment="timm"), "timm"),
    (dict(augment="none"), "tensors"),
])
def test_data_path_resolution(overrides, path) -> None:
    cfg = DataConfig(dataset="digits", **overrides)
    assert resolve_data_path(cfg) == path
    loader = build_loader(cfg, "val")
    assert isinstance(loader, TensorBatches) == (path in ("batched", "tensors"))


def test_auto_falls_back_to_timm_for_what_only_timm_runs(tmp_path) -> None:
    folder = _write_folder(tmp_path, sizes=[(20, 20)])
    base = DataConfig(dataset="imagefolder", data_dir=str(folder), resolution=16, val_size=2)
    assert resolve_data_path(base) == "batched"
    assert resolve_data_path(dataclasses.replace(base, auto_augment="augmix-m5")) == "timm"
    assert resolve_data_path(dataclasses.replace(base, interpolation="bicubic")) == "timm"
    assert resolve_data_path(dataclasses.replace(base, in_memory_limit_mb=0)) == "timm"


def _write_folder(root, sizes) -> object:
    """train/ with 6 images per class and val/ with 2, of the given (width, height) sizes in turn."""
    from PIL import Image

    rng = np.random.default_rng(0)
    k = 0
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                w, h = sizes[k % len(sizes)]
                k += 1
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_image_folder_in_memory_as_squares(tmp_path) -> None:
    folder = _write_folder(tmp_path / "data", sizes=[(40, 30), (30, 44), (36, 36)])
    cfg = DataConfig(dataset="imagefolder", data_dir=str(folder), resolution=16, val_size=2, batch_size=4,
                     calib_size=4, cache_dir=str(tmp_path / "cache"), mixup=0.0, cutmix=0.0)
    # floor(16 / 0.875) = 18 px squares (the first image is larger); train + test = 16 images
    assert stored_size(cfg) == (18, 18) and in_memory_mb(cfg) == 16 * 3 * 18 * 18 / 2**20
    loaders = build_loaders(cfg)
    assert loaders.data_path == "batched" and isinstance(loaders.train, TensorBatches)
    assert tuple(loaders.train.tensors.images.shape) == (12, 3, 18, 18)
    for split in ("train", "val", "test", "calib"):
        for x, _ in getattr(loaders, split):
            assert x.shape[1:] == (3, 16, 16)
    # a folder of small images is not upsampled: the squares take the first image's shorter side
    small = _write_folder(tmp_path / "small", sizes=[(12, 14)])
    assert stored_size(dataclasses.replace(cfg, data_dir=str(small))) == (12, 12)


def test_image_folder_eval_matches_timm_on_images_of_the_stored_size(tmp_path) -> None:
    folder = _write_folder(tmp_path / "data", sizes=[(18, 18)])
    cfg = DataConfig(dataset="imagefolder", data_dir=str(folder), resolution=16, val_size=2, batch_size=4,
                     cache_dir=str(tmp_path / "cache"))
    x, y = _all(build_loader(cfg, "test"))
    timm_x, timm_y = _all(build_loader(dataclasses.replace(cfg, augment="timm"), "test"))
    assert torch.equal(y, timm_y)
    assert (x - timm_x).abs().max() < 0.05  # bilinear resize 18 -> 16 in torch vs PIL: within a grey level or so


def test_supernet_trains_through_the_batched_path(tmp_path, one_thread) -> None:
    from autovit_ray.space import load_space
    from autovit_ray.training.config import load_config
    from autovit_ray.training.loop import SupernetTrainer

    cfg = load_config("digits", ["data.augment=batched", f"data.cache_dir={tmp_path}", "data.batch_size=16",
                                 "train.epochs=1", "train.max_steps_per_epoch=3", "eval.max_batches=1",
                                 "eval.calib_batches=1", "eval.num_random_subnets=0", "supernets=xxs"])
    trainer = SupernetTrainer(cfg, load_space("xxs", input_profile="digits"), log=lambda _: None)
    assert isinstance(trainer.loaders.train, TensorBatches)
    metrics = trainer.train_epoch()
    assert metrics["train_loss"] > 0 and trainer.global_step == 3
    assert 0.0 <= trainer.evaluate()["val_top1_largest"] <= 100.0
    assert isinstance(build_loaders(cfg.data).val, TensorBatches)


def test_prepare_in_memory_decodes_once_for_the_processes_that_follow(tmp_path, monkeypatch) -> None:
    """The driver decodes and caches; a worker then loads the cached tensors without decoding."""
    from autovit_ray.data import prepare_in_memory

    cfg = DataConfig(dataset="digits", cache_dir=str(tmp_path), batch_size=16)
    prepare_in_memory(cfg)
    assert len(list(tmp_path.glob("digits-*.pt"))) == 1
    _tensors.cache_clear()  # as in a fresh worker process

    def no_decoding(*_args):
        raise AssertionError("a worker decoded although the driver had cached the tensors")
    monkeypatch.setattr(cache, "decode", no_decoding)
    assert len(_all(build_loader(cfg, "val"))[1]) == len(make_splits(cfg).val)
    _tensors.cache_clear()
    prepare_in_memory(dataclasses.replace(cfg, in_memory_limit_mb=0))  # a streamed path: nothing to prepare
