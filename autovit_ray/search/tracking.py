"""MLflow for a search: a parent run per search, a nested child run per evaluated candidate.

The parent holds the budgets, strategy, seeds, checkpoint, LUT and fingerprints as params, and at
the end the best archs and Pareto front (JSON), the accuracy-vs-latency scatter with the front
marked (paper Figure 1) and the exported best models. Children carry the arch fields as params
and val top-1, params, MACs, LUT latency and generation as metrics. A resumed search (same name)
reuses its parent run and never logs a candidate twice (children are keyed by arch hash); a resume
needs the same name *and* identity (`autovit_ray.search.driver.search_identity`), so a search never takes
another search's candidates as its own.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param
from ray.tune import Callback

from ..adapters import mlflow_client, retry_locked
from ..space import Arch
from ..tracking import experiment_id
from .algorithms import Evaluation

if TYPE_CHECKING:
    from ray.tune.stopper import Stopper

SEARCH_EXPERIMENT = "autovit-search"


class SearchIdentityError(ValueError):
    """A search name already used by another search (another identity) in the tracking server."""


class SearchTracker:
    def __init__(self, tracking_uri: str, search_name: str, experiment: str = SEARCH_EXPERIMENT) -> None:
        self.tracking_uri, self.search_name, self.experiment = tracking_uri, search_name, experiment
        self.client = mlflow_client(tracking_uri)
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.logged: set[str] = set()
        # On a resume: {arch hash: Tune result} of the candidates an interrupted run finished and logged.
        self.finished: dict[str, dict[str, float]] = {}

    def start(self, params: dict[str, Any], identity: str, summary: dict[str, Any], new_run: bool = False) -> str:
        """Resume the parent run of this search (same name and identity) or create one. A parent of
        this name with another identity (another checkpoint, LUT, budgets, ...) is another search:
        a SearchIdentityError naming both, or with `new_run` a fresh parent beside it."""
        self.experiment_id = experiment_id(self.client, self.tracking_uri, self.experiment)
        namesakes = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.search_name = '{self.search_name}' and tags.role = 'search'")
        same = [run for run in namesakes if run.data.tags.get("search_identity") == identity]
        if same:  # a resume: keep the parent and skip candidates it already has
            self.parent_id = same[0].info.run_id
            complete = self.read_children()
            self.finished = {run.data.tags["arch_hash"]: _tune_result(run.data.metrics) for run in complete
                             if run.data.tags.get("arch_hash") and "val_top1" in run.data.metrics}
            self.client.update_run(self.parent_id, status="RUNNING")
            return self.parent_id
        if namesakes and not new_run:
            other = namesakes[0]
            raise SearchIdentityError(
                f"a search named {self.search_name!r} already exists in {self.tracking_uri} (run "
                f"{other.info.run_id}) as another search: {other.data.tags.get('search_identity_summary', '{}')} "
                f"(identity {other.data.tags.get('search_identity', 'not recorded')}); this one is {json.dumps(summary)} "
                f"(identity {identity}). Give this search another --name, or pass --new-run to start a "
                "fresh parent run under the same name")
        run = self.client.create_run(self.experiment_id, run_name=self.search_name, tags={
            "search_name": self.search_name, "role": "search", "search_identity": identity,
            "search_identity_summary": json.dumps(summary)})
        self.parent_id = run.info.run_id
        for key, value in params.items():
            self.client.log_param(self.parent_id, key, "" if value is None else value)
        return self.parent_id

    def read_children(self) -> list[Any]:
        """The parent's complete child runs, which become `logged`. A child is complete once terminated
        FINISHED (its last write); one cut by a kill of the driver while it was being logged is deleted,
        and its candidate logged again when it finishes."""
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
            max_results=50000)
        complete = [run for run in children if run.info.status == "FINISHED"]
        for run in children:
            if run.info.status != "FINISHED":
                retry_locked(functools.partial(self.client.delete_run, run.info.run_id))
        self.logged = {run.data.tags.get("arch_hash", "") for run in complete}
        return complete

    # A restored Tuner unpickles its callbacks, this tracker with them: the client is opened again.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.client = mlflow_client(self.tracking_uri)

    def log_candidate(self, config: dict[str, Any], result: dict[str, Any], generation: int | None) -> None:
        arch = Arch.from_json(config["arch_json"])
        if arch.arch_hash in self.logged or self.parent_id is None:
            return
        run = retry_locked(lambda: self.client.create_run(
            self.experiment_id, run_name=f"{self.search_name}-{arch.arch_hash}",
            tags={"mlflow.parentRunId": self.parent_id, "arch_hash": arch.arch_hash, "arch": str(arch),
                  "search_name": self.search_name, "role": "candidate"}))
        run_id = run.info.run_id
        metrics = {"val_top1": result.get("top1"), "val_top5": result.get("top5"), "params": result.get("params"),
                   "macs": result.get("macs"), "latency_ms": result.get("latency_ms"), "generation": generation}
        now = int(time.time() * 1000)
        # one request for the arch fields and the metrics (not one per value)
        retry_locked(lambda: self.client.log_batch(
            run_id, params=[Param(k, str(v)) for k, v in arch.to_params().items()],
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and math.isfinite(v)]))
        self.client.set_terminated(run_id, "FINISHED")
        self.logged.add(arch.arch_hash)

    def candidate_run_id(self, arch_hash: str) -> str | None:
        """The child run of the candidate with `arch_hash` (None when it was never logged)."""
        if not self.parent_id:
            return None
        runs = self.client.search_runs([self.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{self.parent_id}' and tags.arch_hash = '{arch_hash}'"), max_results=1)
        return runs[0].info.run_id if runs else None

    def tune_callback(self) -> Callback:
        return CandidateRuns(self)

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        if self.parent_id:
            self.client.log_artifact(self.parent_id, str(path), subdir)

    def log_summary(self, best: list[dict[str, Any]], front: list[Evaluation], history: list[Evaluation]) -> None:
        if not self.parent_id:
            return
        with tempfile.TemporaryDirectory() as tmp:
            best_path = Path(tmp) / "best_archs.json"
            best_path.write_text(json.dumps(best, indent=2, default=str))
            front_path = Path(tmp) / "pareto_front.json"
            front_path.write_text(json.dumps([e.to_dict() for e in front], indent=2))
            plot = Path(tmp) / "accuracy_vs_latency.png"
            plot_front(history, front, plot)
            for path in (best_path, front_path, plot):
                self.client.log_artifact(self.parent_id, str(path))
        if best:
            self.client.log_metric(self.parent_id, "best_val_top1", float(best[0]["val_top1"]))
            self.client.log_metric(self.parent_id, "best_test_top1", float(best[0]["test_top1"]))
            self.client.set_tag(self.parent_id, "best_arch", json.dumps(best[0]["arch"]))
        self.client.log_metric(self.parent_id, "evaluations", float(len(history)))

    def log_counts(self, counts: dict[str, int]) -> None:
        """This run's actor evaluations and evaluation-cache hits (parent-run metrics)."""
        for name, value in counts.items() if self.parent_id else ():
            self.client.log_metric(self.parent_id, name, float(value))

    def finish(self, status: str) -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status)


class CandidateRuns(Callback):
    """Tune callback: a child run per finished candidate. `Tuner.restore` unpickles it as it was when
    the search first started, so at each start it reads again which candidates the parent holds."""

    def __init__(self, tracker: SearchTracker) -> None:
        self.tracker = tracker

    def setup(self, stop: Stopper | None = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        if self.tracker.parent_id:
            self.tracker.read_children()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if "top1" in result:
            self.tracker.log_candidate(trial.config, result, None)


def _tune_result(metrics: dict[str, float]) -> dict[str, float]:
    """The trial result (`evaluate_trial`'s keys) of a candidate's logged child-run metrics."""
    names = {"top1": "val_top1", "top5": "val_top5", "params": "params", "macs": "macs", "latency_ms": "latency_ms"}
    return {key: metrics[name] for key, name in names.items() if name in metrics}


def plot_front(history: list[Evaluation], front: list[Evaluation], path: Path) -> None:
    """Validation top-1 vs predicted latency (or parameters when no LUT), front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [e for e in history if e.ok]
    use_latency = all(e.latency is not None for e in ok)

    # `front` is a subset of the successful evaluations `ok`: each has a fitness, and a latency when
    # `use_latency`
    def x(e: Evaluation) -> float:
        if use_latency:
            assert e.latency is not None
            return float(e.latency)
        return e.params / 1e6

    def y(e: Evaluation) -> float:
        assert e.fitness is not None
        return e.fitness

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([x(e) for e in ok], [y(e) for e in ok], s=10, alpha=0.5, label="candidates")
    front_sorted = sorted(front, key=x)
    ax.plot([x(e) for e in front_sorted], [y(e) for e in front_sorted], "r.-", label="Pareto front")
    ax.set_xlabel("predicted latency (ms)" if use_latency else "parameters (M)")
    ax.set_ylabel("validation top-1 (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
