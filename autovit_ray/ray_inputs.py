"""Where the training workers' images come from on a Ray cluster (`ray.train_input`).

- ``local``: each worker reads `data.data_dir` on its own node (every node needs the data set's files;
  on one machine the decoded tensors are shared through the decode cache, `autovit_ray.data.cache`).
- ``object-store``: in-memory data paths (CIFAR-10, small image folders): the driver decodes the
  images once (`autovit_ray.data.prepare_data`) and puts the uint8 arrays, the splits and the class
  names into Ray's object store; every node receives one copy and its workers map it without a copy.
  The batches are exactly those of ``local`` (same order, same augmentation): a run may switch between
  the two on resume.
- ``ray-data``: image folders too large for memory (ImageNet): the training split's files are read
  and decoded (to S x S uint8, `FolderImageDecoder`) by Ray Data tasks on any node with CPUs, and each
  worker streams its shard (`streaming_split`, equal shards) through `iter_torch_batches` into the
  batched augmentation on its own device (`autovit_ray.data.StreamBatches`). Files are shuffled
  anew every epoch (seeded by `data.seed`); the images of a step depend on task scheduling, so an
  interrupted epoch does not replay exactly. The validation, calibration and test splits are still
  read from `data.data_dir` on each worker's node (a shared mount): evaluation needs exact, ordered
  shards. The recipe must be one the batched augmentation runs (RandAugment, bilinear, no colour jitter).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autovit_ray.data import (
    FolderImageDecoder,
    Loaders,
    augment_config,
    build_loaders,
    prepare_data,
    resolve_data_path,
    stored_size,
    train_files,
)
from autovit_ray.data.config import _augments, _batched_refusal
from autovit_ray.training.config import TrainConfig


def training_data_path(cfg: TrainConfig) -> str:
    """The data path a checkpoint of `cfg` records: 'ray-data', or `resolve_data_path` of its data."""
    return "ray-data" if cfg.ray.train_input == "ray-data" else resolve_data_path(cfg.data)


def check_train_input(cfg: TrainConfig) -> None:
    """One clear error, on the driver, for a train input the data cannot use."""
    data, how = cfg.data, cfg.ray.train_input
    if how == "object-store" and resolve_data_path(data) not in ("batched", "tensors"):
        raise ValueError(f"ray.train_input=object-store needs an in-memory data path, but the data resolves to "
                         f"{resolve_data_path(data)!r} (data.augment {data.augment!r}, in_memory_limit_mb "
                         f"{data.in_memory_limit_mb}); use ray.train_input=ray-data for an image folder, or local")
    if how == "ray-data":
        if not data.defaults.image_folder:
            raise ValueError(f"ray.train_input=ray-data reads image folders, not dataset {data.dataset!r}: "
                             "use ray.train_input=object-store to share in-memory data across nodes")
        refusal = _batched_refusal(data)
        if refusal is not None or data.augment == "timm":
            field, needs = refusal or ("augment", "'auto', 'batched' or 'none' (the batched augmentation)")
            raise ValueError(f"ray.train_input=ray-data augments batches on the worker's device: data.{field} "
                             f"must be {needs}")


def driver_inputs(cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what every worker's payload carries, TorchTrainer's `datasets`) for `cfg.ray.train_input`;
    called once on the driver, inside the Ray session, for all supernets."""
    import ray

    check_train_input(cfg)
    if cfg.ray.train_input == "object-store":
        return {"prepared_data": ray.put(prepare_data(cfg.data))}, {}
    if cfg.ray.train_input == "ray-data":
        return {}, {"train": train_dataset(cfg)}
    return {}, {}


def train_dataset(cfg: TrainConfig) -> Any:
    """The training split of an image folder as a Ray Dataset of {"image": uint8 [S, S, 3], "label"}."""
    import ray.data
    from ray.data import FileShuffleConfig

    # Ray Data's progress bars print a line per refresh into the driver's log, every epoch; the
    # workers already report the epoch's progress and rate.
    ray.data.DataContext.get_current().enable_progress_bars = False
    files, classes = train_files(cfg.data)
    size = stored_size(cfg.data)
    assert size is not None  # an image folder is stored as S x S squares
    root = f"{cfg.data.data_dir}/train"
    return (ray.data.read_binary_files(files, include_paths=True, shuffle=FileShuffleConfig(seed=cfg.data.seed))
            .map_batches(FolderImageDecoder(root, classes, size[0]), batch_format="numpy"))


def worker_loaders(cfg: TrainConfig, payload: Mapping[str, Any], resolution: int, rank: int, world_size: int,
                   device: Any) -> Loaders:
    """The loaders of one Ray Train worker for `cfg.ray.train_input`."""
    import ray
    import ray.train

    from autovit_ray.data import StreamBatches

    data = cfg.data
    if cfg.ray.train_input == "object-store":
        return build_loaders(data, resolution, rank, world_size, device, prepared=ray.get(payload["prepared_data"]))
    if cfg.ray.train_input == "local":
        return build_loaders(data, resolution, rank, world_size, device)
    shard = ray.train.get_dataset_shard("train")
    steps = len(train_files(data)[0]) // world_size // data.batch_size  # equal shards, last batch dropped
    stream = StreamBatches(
        lambda _epoch: shard.iter_torch_batches(batch_size=data.batch_size, drop_last=True, device="cpu"),
        steps, augment=augment_config(data, resolution) if _augments(data) else None, resolution=resolution,
        mean=tuple(data.mean), std=tuple(data.std), crop_pct=data.eval_crop_pct, seed=data.seed, rank=rank,
        device=device)
    return build_loaders(data, resolution, rank, world_size, device, train=stream)


__all__ = ["check_train_input", "driver_inputs", "train_dataset", "training_data_path", "worker_loaders"]
