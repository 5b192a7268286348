"""The one place where the platform meets Ray and MLflow: connecting to Ray, resolving the MLflow
tracking URI and opening the MLflow client.

The core (space, plan, nn, latency model, search algorithms, training loop, data) imports neither
Ray nor MLflow; the entry points (train, search, pipeline, export, compare) and the tracking
modules go through these functions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .experiment import Experiment

T = TypeVar("T")

# Ray Train V2 starts a PlacementGroupCleaner actor per training that asks the State API every second
# whether the controller is alive. A local Ray started without the dashboard has no State API, so each
# ask logs a warning: thousands of lines per hour of training. The cleaner only matters for a controller
# that crashes on a long-lived cluster; a local Ray ends with this process and its placement groups.
PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
LOCAL_RAY_RUNTIME_ENV = {"worker_process_setup_hook": "autovit_ray.adapters.quiet_placement_group_cleaner"}


def quiet_placement_group_cleaner() -> None:
    """Worker setup hook of the local Ray: the cleaner's State-API warnings are dropped (errors stay)."""
    logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).setLevel(logging.ERROR)


def connect_ray(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True) -> bool:
    """Connect to the cluster at `address` (else $RAY_ADDRESS, set under `ray job submit`), or start a
    fresh local Ray with `num_cpus` CPUs: address="local" never joins another user's `ray start` on
    this machine (ray.init's default would). Returns whether this call started the connection (and
    so should shut it down); an initialised Ray is left as it is."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver,
                 runtime_env=LOCAL_RAY_RUNTIME_ENV)
    return True


def cluster_node_groups() -> Any:
    """The connected Ray cluster as a `placement.Cluster`: the alive nodes grouped by shape (CPU, GPU,
    head), and the autoscaler's node types where Ray exposes them (autoscaler v2 reports them to the
    GCS; read through Ray's internal state API, as Ray Data does). A Ray this process started is fixed:
    its nodes are all it will have. Otherwise, without the node types, `max` is only the nodes up now."""
    import ray

    from autovit_ray.placement import Cluster, NodeGroup

    shapes: dict[tuple[float, float, bool], int] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            resources = node.get("Resources", {})
            key = (float(resources.get("CPU", 0)), float(resources.get("GPU", 0)),
                   "node:__internal_head__" in resources)
            shapes[key] = shapes.get(key, 0) + 1
    groups = [NodeGroup("head" if head else f"{cpus:g}cpu-{gpus:g}gpu", cpus, gpus, n, n, head)
              for (cpus, gpus, head), n in sorted(shapes.items(), key=lambda kv: not kv[0][2])]
    try:
        from ray._private import worker
        from ray._private.state import state

        config = state.get_cluster_config()
        started_here = bool(worker._global_node and worker._global_node.is_head())
    except Exception:  # an internal API that moved: plan against the nodes that are up
        config, started_here = None, False
    if config is None or not config.node_group_configs:
        return Cluster(tuple(groups), max_known=started_here)
    up = {(g.cpus, g.gpus): g.now for g in groups if not g.head}
    heads = {(g.cpus, g.gpus) for g in groups if g.head}
    types = []
    for config_group in config.node_group_configs:
        shape = (float(config_group.resources.get("CPU", 0)), float(config_group.resources.get("GPU", 0)))
        if shape in heads and config_group.max_count <= 1:
            continue  # the head's own type: the head is counted from the nodes up
        types.append(NodeGroup(config_group.name, *shape, up.pop(shape, 0), max(int(config_group.max_count), 0)))
    # nodes up that match no node type (the head, a node joined by hand) keep their own group
    rest = [g for g in groups if g.head or (g.cpus, g.gpus) in up]
    return Cluster(tuple(rest + types), max_known=True)


def default_tracking_uri(experiment_dir: str | os.PathLike[str], explicit: str | None = None) -> str:
    """`explicit`, else $MLFLOW_TRACKING_URI, else sqlite:///<experiment_dir>/mlflow.db."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return Experiment(Path(experiment_dir)).tracking_uri


def mlflow_client(tracking_uri: str, registry: bool = False) -> Any:
    """An MlflowClient on `tracking_uri` (with `registry`, also its model registry). A SQLite store is
    opened under a file lock: processes that open a new database at once (a pipeline's trainers and
    searches) would otherwise each run MLflow's schema migrations on it and fail ('duplicate column')."""
    from mlflow.tracking import MlflowClient

    def open_client() -> Any:
        if registry:
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        else:
            client = MlflowClient(tracking_uri=tracking_uri)
        _ = client._tracking_client.store  # creates (or migrates) the tables now, inside the lock
        return client

    if not tracking_uri.startswith("sqlite:///"):
        return open_client()
    import fcntl

    database = Path(tracking_uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return open_client()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def retry_locked(fn: Callable[[], T], attempts: int = 5) -> T:
    """sqlite allows one writer: concurrent writers may briefly see 'database is locked'."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # MlflowException / sqlalchemy OperationalError
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(0.2 * 2 ** i)
    raise AssertionError("unreachable")


__all__ = ["connect_ray", "default_tracking_uri", "mlflow_client", "retry_locked"]
