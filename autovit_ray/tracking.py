"""MLflow tracking of the training runs: one run per supernet in one experiment per training name.

The driver creates (or, on a resume, finds) the runs and logs the flattened config as params and the
tags (supernet, Ray run name, checkpoint location, space fingerprint); the rank-0 worker of each
trainer logs the per-epoch metrics into its run by id; the driver sets the final status. The tracking
URI comes from `--mlflow-uri`, else MLFLOW_TRACKING_URI, else a sqlite database in the experiment
directory. On a multi-node cluster use a tracking server (or a database) the workers can reach.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .adapters import default_tracking_uri, mlflow_client, retry_locked

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def ui_command(tracking_uri: str) -> str:
    return f".venv/bin/mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1"


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a sqlite database (`<dir>/mlartifacts`), so
    one experiment directory holds everything; a tracking server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The id of MLflow experiment `name`, created (with `artifact_location`) if missing."""
    found = retry_locked(lambda: client.get_experiment_by_name(name))
    if found is not None:
        return found.experiment_id
    return retry_locked(lambda: client.create_experiment(name, artifact_location=artifact_location(tracking_uri)))


def start_runs(tracking_uri: str, experiment: str, name: str, supernets: Mapping[str, Mapping[str, Any]],
               params: Mapping[str, Any], dataset: Mapping[str, Any] | None = None) -> dict[str, str]:
    """One MLflow run per supernet ({supernet: run_id}); reuses the runs of an earlier launch of the
    same training name (a resume). `supernets` maps each name to its extra tags; `dataset`
    (`autovit_ray.data.dataset_record`) is logged as each new run's training input."""
    client = mlflow_client(tracking_uri)
    exp_id = experiment_id(client, tracking_uri, experiment)
    run_ids = {}
    for supernet, tags in supernets.items():
        ray_run_name = f"{name}/{supernet}"
        existing = retry_locked(functools.partial(client.search_runs, [exp_id],
                                                  filter_string=f"tags.ray_run_name = '{ray_run_name}'",
                                                  max_results=1))
        all_tags = {"supernet": supernet, "ray_run_name": ray_run_name, **{k: str(v) for k, v in tags.items()}}
        if existing:
            run_id = existing[0].info.run_id
            retry_locked(functools.partial(client.update_run, run_id, status="RUNNING"))
            for key, value in all_tags.items():
                retry_locked(functools.partial(client.set_tag, run_id, key, value))
        else:
            run = retry_locked(functools.partial(client.create_run, exp_id, run_name=supernet, tags=all_tags))
            run_id = run.info.run_id
            log_params(tracking_uri, run_id, params)
            if dataset is not None:
                log_dataset(tracking_uri, run_id, dataset)
        run_ids[supernet] = run_id
    return run_ids


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    client = mlflow_client(tracking_uri)
    items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        retry_locked(functools.partial(client.log_batch, run_id, params=items[i:i + 100]))


def log_dataset(tracking_uri: str, run_id: str, record: Mapping[str, Any], context: str = "training") -> None:
    """`record` (name, source, digest, split sizes) as an MLflow dataset input of the run."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=record["name"], digest=record["digest"], source_type="local",
                      source=json.dumps({"uri": record["source"]}),
                      profile=json.dumps({k: v for k, v in record.items() if k not in ("name", "digest", "source")}))
    tags = [InputTag("mlflow.data.context", context)]
    retry_locked(lambda: mlflow_client(tracking_uri).log_inputs(run_id, datasets=[DatasetInput(dataset, tags)]))


def system_metrics_monitor(tracking_uri: str, run_id: str, resume: bool) -> Any:
    """MLflow's system-metrics monitor (CPU, memory, disk, network; GPU where its library is there)
    for `run_id`, started; None when MLflow cannot monitor here (no psutil). Call `.finish()` at the end."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        return None
    monitor = SystemMetricsMonitor(run_id, sampling_interval=5, resume_logging=resume, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


def finish_system_metrics(monitor: Any) -> None:
    """Stop `monitor`; a run shorter than its sampling interval would otherwise log no system metrics
    (MLflow drops the samples it has not published yet), so those are published first."""
    first_step = getattr(monitor, "_logging_step", None)  # MLflow internals: skip the flush if they change
    monitor.finish()
    if first_step is not None and monitor._logging_step == first_step:
        metrics = monitor.aggregate_metrics()
        if metrics:
            monitor.publish_metrics(metrics)
            monitor.mlflow_logger.flush()


def log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    from mlflow.entities import Metric

    client = mlflow_client(tracking_uri)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    retry_locked(lambda: client.log_batch(run_id, metrics=items))


def set_tags(tracking_uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    client = mlflow_client(tracking_uri)
    for key, value in tags.items():
        retry_locked(functools.partial(client.set_tag, run_id, key, str(value)))


def end_run(tracking_uri: str, run_id: str, status: str) -> None:
    """status: FINISHED, FAILED or KILLED (stopped early: train.stop_after_epoch, Ctrl-C)."""
    client = mlflow_client(tracking_uri)
    retry_locked(lambda: client.set_terminated(run_id, status=status))


class OpenRuns:
    """MLflow runs started and not yet ended. A command that trains in daemon threads catches Ctrl-C in
    its main thread, where the threads' own endings never run: it ends what is still open as KILLED."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: set[tuple[str, str]] = set()

    def add(self, tracking_uri: str, run_ids: Iterable[str]) -> None:
        with self._lock:
            self._runs.update((tracking_uri, run_id) for run_id in run_ids)

    def end(self, tracking_uri: str, run_id: str, status: str) -> None:
        end_run(tracking_uri, run_id, status)
        with self._lock:
            self._runs.discard((tracking_uri, run_id))

    def end_all(self, status: str) -> None:
        with self._lock:
            runs, self._runs = sorted(self._runs), set()
        for tracking_uri, run_id in runs:
            end_run(tracking_uri, run_id, status)


__all__ = ["OpenRuns", "default_tracking_uri", "end_run", "log_dataset", "log_metrics", "log_params", "set_tags", "start_runs",
           "finish_system_metrics", "system_metrics_monitor", "ui_command"]
