"""Supernet training on Ray Train (the library behind `python -m autovit_ray.train`).

One `ray.train.torch.TorchTrainer` per supernet; their `fit()` calls run concurrently (one driver
thread each), each with its own ScalingConfig (`plan_training`, per node), RunConfig(storage_path=
<output_dir>/<name>/checkpoints, name=<supernet>) and FailureConfig. Each worker runs
`autovit_ray.training.loop.SupernetTrainer` (plain torch) and reports a checkpoint every epoch through
`ray.train.report`; a restarted worker and a rerun of the same experiment name resume from the latest
checkpoint. `run_training(cfg)` takes the typed `TrainConfig`; `standalone_config` turns it into the
training of one arch alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from autovit_ray import adapters, placement
from autovit_ray.config import renamed_keys
from autovit_ray.experiment import Experiment
from autovit_ray.io import atomic_write_text
from autovit_ray.placement import Cluster, ResourcePlan, TrainerPlan
from autovit_ray.space import Arch, SearchSpace, load_space
from autovit_ray.training.config import (
    RENAMED_FIELDS,
    TrainConfig,
    config_from_dict,
    flatten,
)

if TYPE_CHECKING:
    from autovit_ray.tracking import OpenRuns

T = TypeVar("T")

# Config fields that may differ when an experiment is resumed: they do not change what is trained.
# data.augment and data.in_memory_limit_mb may change while the data path they resolve to does not
# (_check_data_path), e.g. 'auto' -> 'timm' to continue a supernet trained before 'auto' meant in memory.
RESUMABLE_FIELDS = ("output_dir", "supernets", "train.stop_after_epoch", "train.fail_after_epoch",
                    "train.progress_bar", "train.arch_log", "data.num_workers", "data.data_dir", "data.cache_dir",
                    "data.augment", "data.in_memory_limit_mb", "eval.", "ray.", "mlflow.")


@dataclass
class TrainResult:
    """What one supernet's training ended with (`run_training` returns one per supernet; the experiment's
    train_summary.json holds their `to_dict()`). `status`: OK (its TorchTrainer returned) or FAILED;
    an OK run stopped before `train.epochs` (train.stop_after_epoch, Ctrl-C) has `epoch` below them."""

    supernet: str
    status: str
    checkpoint: str | None = None  # the last complete epoch's checkpoint directory
    epoch: int | None = None  # that checkpoint's epoch
    error: str = ""  # FAILED: the worker's exception, in full
    worker: dict[str, Any] | None = None  # rank 0's node, pid and code path
    metrics: dict[str, float] = field(default_factory=dict)  # the last report's numbers
    mlflow_run_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def finished(self, epochs: int) -> bool:
        """Trained to the end: OK with a checkpoint of epoch `epochs` (or later)."""
        return self.ok and self.epoch is not None and self.epoch >= epochs

    def first_error_line(self) -> str:
        return self.error.splitlines()[0] if self.error else self.status

    def to_dict(self) -> dict[str, Any]:
        """The JSON of train_summary.json: unset fields are left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, "")}


# ---------------------------------------------------------------------------------------------------
# Checks before anything is written


def load_spaces(cfg: TrainConfig) -> dict[str, SearchSpace]:
    """{space name: SearchSpace} for cfg.supernets under cfg.input_profile."""
    spaces = {}
    for source in cfg.supernets:
        space = load_space(source, input_profile=cfg.input_profile)
        if space.name in spaces:
            raise ValueError(f"config field supernets = {list(cfg.supernets)} names supernet "
                             f"{space.name!r} twice")
        spaces[space.name] = space
    return spaces


def _differing_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    a, b = flatten(old), flatten(new)
    # Fields the old config lacks were added to the code since, with defaults that keep the behaviour.
    return sorted(k for k in set(a) & set(b)
                  if a[k] != b[k] and not any(k == f or (f.endswith(".") and k.startswith(f))
                                                      for f in RESUMABLE_FIELDS))


def check_resume(cfg: TrainConfig, spaces: Mapping[str, SearchSpace]) -> dict[str, Path | None]:
    """The checkpoint each supernet resumes from (None: a fresh start); refuses an experiment whose
    checkpoints come from another space or another training config."""
    from autovit_ray.checkpoint import list_checkpoints, read_meta, space_of

    resume: dict[str, Path | None] = {}
    for name, space in spaces.items():
        found = list_checkpoints(cfg.experiment_dir, name)
        if not found:
            resume[name] = None
            continue
        meta = read_meta(found[-1])
        space_of(meta, space)  # raises on a fingerprint mismatch
        # a checkpoint of an older version may store a field under its old name (`RENAMED_FIELDS`)
        stored = renamed_keys(meta["config"], RENAMED_FIELDS, "checkpoint config", warn=False)
        differing = _differing_fields(stored, cfg.to_dict())
        if differing:
            old, new = flatten(stored), flatten(cfg.to_dict())
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differing[:6])
            raise ValueError(f"experiment {str(cfg.experiment_dir)!r} already holds supernet {name!r} "
                             f"checkpoints trained with another config ({details}); use the same settings "
                             "to resume it, or another --name")
        _check_data_path(meta, cfg, name)
        resume[name] = found[-1]
    return resume


def _check_data_path(meta: Mapping[str, Any], cfg: TrainConfig, name: str) -> None:
    """Refuse to continue a supernet on another data path than it trained on (the default moved from
    timm's PIL pipeline to the in-memory one: an older experiment must not switch halfway)."""
    from autovit_ray.data import legacy_data_path
    from autovit_ray.ray_inputs import training_data_path

    trained = meta.get("data_path") or legacy_data_path(config_from_dict(meta["config"]).data)
    now = training_data_path(cfg)
    if trained != now:
        how = {"timm": "data.augment: timm", "timm-no-aug": "data.in_memory_limit_mb: 0",
               "batched": "data.augment: batched", "tensors": "data.augment: none",
               "ray-data": "ray.train_input: ray-data"}[trained]
        raise ValueError(f"experiment {str(cfg.experiment_dir)!r}: supernet {name!r} was trained on data path "
                         f"{trained!r}, this config resolves to {now!r}; set {how} to resume it, or use another "
                         "--name")


def check_inputs(cfg: TrainConfig, spaces: dict[str, SearchSpace] | None = None
                 ) -> tuple[dict[str, SearchSpace], int, dict[str, Path | None]]:
    """Everything that can be checked on the driver: spaces (loaded from cfg.supernets unless given),
    data, teacher, earlier checkpoints."""
    from autovit_ray.data import num_classes as dataset_num_classes
    from autovit_ray.distill import build_teacher
    from autovit_ray.ray_inputs import check_train_input

    spaces = spaces if spaces is not None else load_spaces(cfg)
    n_classes = dataset_num_classes(cfg.data)  # unknown dataset / missing data_dir -> ValueError
    check_train_input(cfg)
    build_teacher(cfg.kd, n_classes, cfg.data.mean, cfg.data.std)  # offline loadability -> ValueError
    check_few_shot_part(cfg, spaces, n_classes)
    for space in spaces.values():
        if cfg.data.input_resolution < max(space.resolutions):
            print(f"note: data at {cfg.data.input_resolution} px is upsampled to {max(space.resolutions)} px "
                  f"(input profile {cfg.input_profile!r})", file=sys.stderr)
    return spaces, n_classes, check_resume(cfg, spaces)


def check_few_shot_part(cfg: TrainConfig, spaces: Mapping[str, SearchSpace], num_classes: int) -> None:
    """Refuse a `train.transformer_stages` the space lacks, and a `train.init_from` that is not a
    checkpoint of this one supernet, input profile and dataset."""
    from autovit_ray.checkpoint import read_record, resolve_checkpoint, space_of

    t = cfg.train
    for space in spaces.values():
        if t.transformer_stages is not None:
            try:
                space.with_transformer_stage_count(t.transformer_stages)
            except ValueError as e:
                raise ValueError(f"config field train.transformer_stages = {t.transformer_stages}: {e}") from None
    if t.init_from is None:
        return
    if len(spaces) != 1:
        raise ValueError(f"config field train.init_from = {t.init_from!r} starts one supernet; supernets "
                         f"= {list(cfg.supernets)} names {len(spaces)}: train one supernet per run")
    space = next(iter(spaces.values()))
    try:
        record = read_record(resolve_checkpoint(t.init_from, space.name))
        space_of(record.meta, space)
    except ValueError as e:
        raise ValueError(f"config field train.init_from: {e}") from None
    if record.num_classes != num_classes:
        raise ValueError(f"config field train.init_from = {t.init_from!r} has {record.num_classes} classes; "
                         f"this dataset has {num_classes}")


def init_weights(trainer: Any, init_from: str, device: Any) -> None:
    """Start a fresh training from another checkpoint's supernet weights (`train.init_from`); every
    rank loads the same file, so the replicas start identical."""
    from autovit_ray.checkpoint import load_checkpoint, resolve_checkpoint, space_of

    parent = load_checkpoint(resolve_checkpoint(init_from, trainer.space.name), map_location=device)
    space_of(parent, trainer.space)
    trainer.model.load_state_dict(parent["model"])


# ---------------------------------------------------------------------------------------------------
# Ray


def connect_ray(cfg: TrainConfig, address: str | None = None) -> bool:
    """Connect to the cluster (--address, ray.address, RAY_ADDRESS under `ray job submit`) or start a
    local Ray. Returns whether this call initialised Ray (and so should shut it down)."""
    # num_cpus None: Ray's own detection, which honours a container's CPU limit (os.cpu_count() does not)
    return adapters.connect_ray(address or cfg.ray.address, cfg.ray.num_cpus)


def plan_training(cfg: TrainConfig, supernets: Sequence[str], cluster: Cluster) -> ResourcePlan:
    """Per-node CPUs / GPUs of every training worker (all supernets train at once) and torch threads:
    by default the largest CPU share that places every worker on the cluster's largest form, e.g.
    2 CPUs / 3 trainers = 0.66 on a laptop, 8 on the 8-CPU GPU nodes of a cluster."""
    r = cfg.ray
    trainers = placement.plan_trainers(supernets, r.num_workers, r.use_gpu, r.gpus_per_worker, r.cpus_per_worker,
                                       r.torch_threads, cluster)
    return placement.make_plan(cluster, trainers)


class _Bar:
    """tqdm_ray bar with the tqdm calls the loop makes (tqdm_ray has no set_postfix)."""

    def __init__(self, total: int, desc: str) -> None:
        from ray.experimental.tqdm_ray import tqdm

        self.bar, self.desc = tqdm(total=total, desc=desc), desc

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_description(f"{self.desc} " + " ".join(f"{k}={v}" for k, v in values.items()))

    def close(self) -> None:
        self.bar.close()


def _newer_checkpoint_on_disk(cfg: TrainConfig, supernet: str, epoch: int, device: Any) -> dict[str, Any] | None:
    """The state of the newest complete checkpoint in the experiment's storage if its epoch is > epoch."""
    from autovit_ray.checkpoint import list_checkpoints, load_checkpoint, read_record

    for path in reversed(list_checkpoints(cfg.experiment_dir, supernet)):
        try:
            if read_record(path).epoch <= epoch:
                return None
            return load_checkpoint(path, map_location=device)
        except Exception:  # e.g. cut by a kill while Ray copied it into storage: try the one before
            continue
    return None


def train_loop_per_worker(payload: dict[str, Any]) -> None:
    """The function each Ray Train worker runs."""
    import ray.train
    import ray.train.torch
    import torch

    from autovit_ray.checkpoint import epoch_dir_name, load_checkpoint, save_checkpoint, space_of
    from autovit_ray.ray_inputs import worker_loaders
    from autovit_ray.tracking import finish_system_metrics, log_metrics, system_metrics_monitor
    from autovit_ray.training.loop import SupernetTrainer, World

    cfg = config_from_dict(payload["config"])
    torch.set_num_threads(payload["torch_threads"])
    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    world = World(rank, size, ray.train.torch.get_device())
    space = load_space(payload["space_source"], input_profile=cfg.input_profile)
    arch_log = Experiment(cfg.experiment_dir).arch_log(space.name, rank) if cfg.train.arch_log else None
    loaders = worker_loaders(cfg, payload, max(space.resolutions), rank, size, world.device)
    trainer = SupernetTrainer(cfg, space, world, arch_log=arch_log, space_source=payload["space_source"],
                              loaders=loaders)

    state = None
    checkpoint = ray.train.get_checkpoint()  # a restart after a failure, or Ray restoring the run
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory, map_location=world.device)
    elif payload.get("resume_from"):  # a rerun of the same command: the latest checkpoint on disk
        state = load_checkpoint(payload["resume_from"], map_location=world.device)
    # Ray's latest checkpoint can lag the storage: a worker killed just after `ray.train.report` dies
    # before the controller has collected that report, and the restarted group gets the checkpoint
    # before it (or none: a restart from scratch). So a restart takes the newest complete checkpoint
    # on disk when it is newer (this run wrote it; a rerun's were checked by check_resume).
    newer = _newer_checkpoint_on_disk(cfg, space.name, -1 if state is None else int(state["epoch"]),
                                      world.device)
    if newer is not None:
        state = newer
    if state is not None:
        space_of(state, space)
        trainer.load_state_dict(state)
        if rank == 0:
            print(f"[{space.name}] resumed after epoch {trainer.epoch}", flush=True)
    elif cfg.train.init_from:
        init_weights(trainer, cfg.train.init_from, world.device)
        if rank == 0:
            print(f"[{space.name}] started from the weights of {cfg.train.init_from}", flush=True)
    resumed = state is not None
    # Where this rank runs (train_summary.json "worker": multi-node placement, restarts after a fault).
    # worker_code: the autovit_ray package this worker imported (a pinned copy or an editable checkout?)
    package_file = sys.modules["autovit_ray"].__file__
    assert package_file is not None  # a regular package: imported from its __init__.py
    worker = {"worker_node_id": ray.get_runtime_context().get_node_id(), "worker_pid": os.getpid(),
              "worker_code": os.path.dirname(package_file)}

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report = None
            if rank == 0:
                save_checkpoint(tmp, trainer.state_dict(metrics))
                report = ray.train.Checkpoint.from_directory(tmp)
                if payload.get("mlflow_run_id"):
                    log_metrics(payload["mlflow_uri"], payload["mlflow_run_id"], metrics, step=epoch)
            ray.train.report({**metrics, **worker}, checkpoint=report, checkpoint_dir_name=epoch_dir_name(epoch))
        if cfg.train.fail_after_epoch == epoch and not resumed:
            raise RuntimeError(f"injected failure after epoch {epoch} (train.fail_after_epoch)")

    progress = _Bar if payload.get("progress_bar") and rank == 0 else None
    monitor = None
    if rank == 0 and payload.get("mlflow_run_id"):  # what train.amp resolved to on this device
        from autovit_ray.tracking import set_tags

        set_tags(payload["mlflow_uri"], payload["mlflow_run_id"], {"precision": trainer.precision,
                                                                  "data_path": trainer.loaders.data_path})
    if rank == 0 and payload.get("mlflow_run_id"):  # system metrics of the node training this supernet
        monitor = system_metrics_monitor(payload["mlflow_uri"], payload["mlflow_run_id"], resume=resumed)
    try:
        trainer.fit(on_epoch_end, progress=progress)
    finally:
        if monitor is not None:
            finish_system_metrics(monitor)


def scaling_config(plan: TrainerPlan) -> Any:
    """Ray Train's ScalingConfig of one supernet's plan."""
    from ray.train import ScalingConfig

    use_gpu = plan.gpus_per_worker > 0
    resources = {"CPU": plan.cpus_per_worker, **({"GPU": plan.gpus_per_worker} if use_gpu else {})}
    return ScalingConfig(num_workers=plan.workers, use_gpu=use_gpu, resources_per_worker=resources)


def torch_backend(cfg: TrainConfig) -> dict[str, Any]:
    """TorchTrainer's `torch_config` for `ray.torch_backend`: none for auto (Ray's choice: NCCL with GPUs);
    gloo lets a cluster that only declares GPUs (tests, no CUDA) run its workers."""
    if cfg.ray.torch_backend == "auto":
        return {}
    from ray.train.torch import TorchConfig

    return {"torch_config": TorchConfig(backend=cfg.ray.torch_backend)}


def _fit_one(cfg_dict: dict[str, Any], space_source: str, name: str, plan: TrainerPlan,
             payload: dict[str, Any], datasets: dict[str, Any]) -> TrainResult:
    """Runs one TorchTrainer to completion (in a driver thread).
    `datasets`: Ray Datasets of the workers' input (`autovit_ray.ray_inputs.driver_inputs`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    cfg = config_from_dict(cfg_dict)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**payload, "config": cfg_dict, "space_source": space_source,
                           "torch_threads": plan.torch_threads},
        scaling_config=scaling_config(plan), **torch_backend(cfg), datasets=datasets,
        run_config=RunConfig(
            name=name, storage_path=str(Experiment(cfg.experiment_dir).checkpoints_dir),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        ),
    )
    if _STOPPING.is_set():  # Ctrl-C while the trainer was being built
        raise KeyboardInterrupt
    try:
        result = trainer.fit()
    except Exception as e:  # TrainingFailedError: the worker's exception is in its message
        if _STOPPING.is_set():  # stop_fits killed its controller: stopped by Ctrl-C, not failed
            raise KeyboardInterrupt from None
        return TrainResult(name, "FAILED", error=f"{type(e).__name__}: {e}")
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    metrics = dict(result.metrics or {})
    worker = {"node_id": metrics.pop("worker_node_id", None), "pid": metrics.pop("worker_pid", None),
              "code": metrics.pop("worker_code", None)}
    return TrainResult(name, "OK", checkpoint=checkpoint, worker=worker,
                       metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})


# The threads of `run_in_daemon_threads` still running, of every caller (nested ones too: the
# fidelity truth's trainer threads run trainings whose fits run in threads) -> whether stop_fits has
# killed the Ray Train controller its fit waits on.
_RUNNING: dict[threading.Thread, bool] = {}
_RUNNING_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set by stop_fits: a call or fit not yet begun does not begin
STOP_TIMEOUT_S = 60.0  # how long Ctrl-C waits for the threads to end before the command exits anyway


def _train_controller(frame: FrameType | None) -> Any:
    """The Ray Train controller actor a fit thread waits on: the `controller` local of the Ray Train
    frame that created it (Ray Train keeps no public handle to it); None until it exists."""
    from ray.actor import ActorHandle

    while frame is not None:
        controller = frame.f_locals.get("controller")
        if isinstance(controller, ActorHandle):
            return controller
        frame = frame.f_back
    return None


def stop_fits(timeout_s: float | None = None) -> None:
    """Ctrl-C with fits running in threads: kills each fit's Ray Train controller (its workers end with
    it; checkpoints are written whole) and waits for every thread of `run_in_daemon_threads` to end, so
    that none calls Ray after the caller shuts Ray down: such a call ends the process with exit status 1
    ("The core worker has already been shutdown") or starts a new local Ray. A fit still starting is
    waited for until its controller exists. After `timeout_s` (default STOP_TIMEOUT_S), returns anyway."""
    import ray

    _STOPPING.set()
    try:
        deadline = time.monotonic() + (STOP_TIMEOUT_S if timeout_s is None else timeout_s)
        while time.monotonic() < deadline:
            with _RUNNING_LOCK:
                running = [thread for thread, killed in _RUNNING.items() if not killed]
                if not _RUNNING:
                    return
            frames = sys._current_frames()
            for thread in running:
                controller = _train_controller(frames.get(thread.ident or -1))
                if controller is not None:
                    ray.kill(controller, no_restart=True)
                    with _RUNNING_LOCK:
                        if thread in _RUNNING:
                            _RUNNING[thread] = True
            time.sleep(0.1)
    finally:
        _STOPPING.clear()


def run_in_daemon_threads(calls: dict[str, Callable[[], T]]) -> dict[str, T]:
    """{key: call()} with the calls run concurrently, each in a daemon thread; an exception of a call is
    raised here. Daemon threads, because on Ctrl-C the command must exit at once: the interpreter joins
    a ThreadPoolExecutor's threads at exit, and a fit still starting when the caller shut Ray down
    started a new local Ray and trained to its last epoch before the command could end. On Ctrl-C the
    fits are stopped (`stop_fits`) before it is raised here, so the caller can shut Ray down."""
    results: dict[str, T] = {}
    errors: dict[str, BaseException] = {}

    def run(key: str, call: Callable[[], T]) -> None:
        try:
            if _STOPPING.is_set():
                raise KeyboardInterrupt
            results[key] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            errors[key] = exc
        finally:
            with _RUNNING_LOCK:
                del _RUNNING[threading.current_thread()]

    threads = [threading.Thread(target=run, args=(key, call), name=f"fit-{key}", daemon=True)
               for key, call in calls.items()]
    try:
        for thread in threads:
            with _RUNNING_LOCK:  # before it starts: stop_fits must see it even before it runs
                _RUNNING[thread] = False
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # short waits: Ctrl-C reaches the main thread between them
    except KeyboardInterrupt:
        with _RUNNING_LOCK:  # a thread Ctrl-C kept from starting never ends
            for thread in threads:
                if thread.ident is None:
                    _RUNNING.pop(thread, None)
        stop_fits()
        raise
    for exc in errors.values():
        raise exc
    return {key: results[key] for key in calls}


def run_training(cfg: TrainConfig, address: str | None = None, mlflow_uri: str | None = None,
                 progress_bar: bool | None = None,
                 standalone: tuple[Arch, SearchSpace] | None = None,
                 open_runs: OpenRuns | None = None) -> dict[str, TrainResult]:
    """Train cfg.supernets concurrently on Ray; returns {supernet: TrainResult}. Raises ValueError on bad
    input before writing anything. `standalone`: (arch, its one-arch space) of `standalone_config`;
    `open_runs`: a `tracking.OpenRuns` that holds this training's MLflow runs until they end (a caller
    training in threads ends them on Ctrl-C)."""
    import ray

    from autovit_ray import tracking
    from autovit_ray.checkpoint import checkpoint_root, find_checkpoint, read_record
    from autovit_ray.data import dataset_record, prepare_in_memory
    from autovit_ray.ray_inputs import driver_inputs

    arch = standalone[0] if standalone else None
    open_runs = open_runs if open_runs is not None else tracking.OpenRuns()
    cfg = dataclasses.replace(cfg, data=cfg.data.with_absolute_paths())  # the workers' working folders differ
    if cfg.train.init_from:  # likewise
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, init_from=str(Path(cfg.train.init_from).expanduser().resolve())))
    spaces, n_classes, resume = check_inputs(cfg, {standalone[1].name: standalone[1]} if standalone else None)
    exp_dir = cfg.experiment_dir
    # Read by Ray Train's controller (the driver's RAY_TRAIN_* variables are passed on to it).
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(cfg.ray.worker_start_timeout_s))
    # Ray Train V2 copies every print of a worker into its logger too, so each line reached the driver twice.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    started = connect_ray(cfg, address)
    try:
        cluster = adapters.cluster_node_groups()
        plan = plan_training(cfg, list(spaces), cluster)
        placement.check_fits(plan, cluster)  # before anything is written or started
        exp_dir.mkdir(parents=True, exist_ok=True)
        if standalone:  # where the workers and later loads of the checkpoint read the space from
            _write_space(cfg, standalone[1])
        if cfg.ray.train_input == "local":
            prepare_in_memory(cfg.data)  # the workers map the decoded tensors instead of each decoding them
        input_payload, datasets = driver_inputs(cfg)  # object-store / ray-data: decoded or read once, here
        atomic_write_text(Experiment(exp_dir).config_yaml, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        uri = tracking.default_tracking_uri(exp_dir, mlflow_uri or cfg.mlflow.tracking_uri)
        sources = {space.name: src for src, space in zip(cfg.supernets, spaces.values())}
        run_ids = tracking.start_runs(
            uri, cfg.mlflow.experiment or cfg.name, cfg.name,
            {s: {"checkpoint_location": checkpoint_root(exp_dir, s), "space_fingerprint": sp.fingerprint(),
                 "space_profile": cfg.input_profile, "num_classes": n_classes,
                 **({"standalone_arch": arch.to_json()} if arch is not None else {})} for s, sp in spaces.items()},
            {**flatten(cfg.to_dict()), "num_classes": n_classes}, dataset=dataset_record(cfg.data),
        )
        open_runs.add(uri, run_ids.values())
        if progress_bar is None:
            progress_bar = cfg.train.progress_bar if isinstance(cfg.train.progress_bar, bool) \
                else sys.stderr.isatty()
        print(f"training {list(spaces)} in {exp_dir} (plan {json.dumps(plan.to_json())}); MLflow: {uri}", flush=True)
        # One thread per supernet: each fit() only waits on its TrainController actor, so threads
        # run them concurrently without a process (and its torch import) per supernet, as Ray tasks
        # would need. Ray Train registers its Ctrl-C handler only in the main thread.
        try:
            results = run_in_daemon_threads({s: functools.partial(
                _fit_one, cfg.to_dict(), sources[s], s, plan.supernets[s], {
                    "mlflow_uri": uri, "mlflow_run_id": run_ids[s], "progress_bar": progress_bar,
                    "resume_from": str(resume[s]) if resume[s] else None, **input_payload}, datasets) for s in spaces})
        except KeyboardInterrupt:  # stopped, not running, in MLflow until a rerun resumes them
            for run_id in run_ids.values():
                open_runs.end(uri, run_id, "KILLED")
            raise
    finally:
        if started:
            ray.shutdown()
    for s, result in results.items():
        if result.ok:
            try:
                latest = find_checkpoint(exp_dir, s)
                result.checkpoint, result.epoch = str(latest), read_record(latest).epoch
            except ValueError as e:
                result.status, result.error = "FAILED", str(e)
        # MLflow's run status; KILLED: stopped before its last epoch (stop_after_epoch, Ctrl-C)
        status = "FAILED" if not result.ok else "FINISHED" if result.finished(cfg.train.epochs) else "KILLED"
        tracking.set_tags(uri, run_ids[s], {"checkpoint": result.checkpoint or "",
                                            "completed_epochs": "" if result.epoch is None else result.epoch})
        open_runs.end(uri, run_ids[s], status)
        result.mlflow_run_id = run_ids[s]
    atomic_write_text(Experiment(exp_dir).train_summary,
                      json.dumps({s: r.to_dict() for s, r in results.items()}, indent=1, default=str))
    return results


def standalone_config(cfg: TrainConfig, arch: Arch, named: bool) -> tuple[TrainConfig, SearchSpace]:
    """The training config that trains `arch` alone: one supernet whose space holds only `arch`
    (`SearchSpace.restricted_to`), so it gets Algorithm 1's loop, checkpoints, resume, MLflow and
    export unchanged. The space is written as YAML into the experiment (`spaces/`), where the workers,
    the checkpoints and `load_supernet` find it. Refuses an arch of another space or input profile."""
    import dataclasses

    try:
        space = load_space(arch.supernet, input_profile=cfg.input_profile)
        restricted = space.restricted_to(arch)
    except ValueError as e:
        raise ValueError(f"--arch {arch} is not a subnet of supernet {arch.supernet!r} under the config's "
                         f"input profile {cfg.input_profile!r}: {e}") from None
    name = cfg.name if named else f"{cfg.name}-arch-{arch.arch_hash}"
    cfg = dataclasses.replace(cfg, name=name)
    if cfg.train.sampler != "uniform":  # sandwich steps would run the one arch 2 + n times per batch
        print(f"note: train.sampler {cfg.train.sampler!r} -> 'uniform' for the one arch of --arch", file=sys.stderr)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, sampler="uniform"))
    source = Experiment(cfg.experiment_dir).standalone_space(arch.supernet, arch.arch_hash)
    return dataclasses.replace(cfg, supernets=(str(source),)), restricted


def _write_space(cfg: TrainConfig, space: SearchSpace) -> None:
    path = Path(cfg.supernets[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "# one arch, trained stand-alone (python -m autovit_ray.train --arch)\n"
                      + yaml.safe_dump(space.to_yaml_dict(), sort_keys=False))


__all__ = [
    "RESUMABLE_FIELDS", "TrainResult", "check_inputs", "check_resume", "connect_ray", "plan_training",
    "run_in_daemon_threads", "run_training", "scaling_config", "standalone_config", "stop_fits", "torch_backend", "train_loop_per_worker",
]
