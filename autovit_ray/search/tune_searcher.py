"""`AutoViTSearcher`: any `SearchStrategy` (random, plain evolution, coarse-to-fine) as a Ray Tune
`Searcher`, so `tune.run` / `tune.Tuner` schedule the evaluations.

    from ray import tune
    from autovit_ray.search import CoarseToFineSearch, CostModel, Budget
    from autovit_ray.search.tune_searcher import AutoViTSearcher, arch_from_config

    def evaluate(config):
        arch = arch_from_config(config)
        tune.report({"top1": my_accuracy(arch)})

    searcher = AutoViTSearcher(CoarseToFineSearch(space, CostModel(space, Budget(1.5e6, 8.0), lut)))
    tune.run(tune.with_resources(evaluate, {"cpu": 0.1}), search_alg=searcher,
             metric="top1", mode="max", num_samples=-1)

Each trial's config holds the arch as flat params (`Arch.to_params()`) plus `arch_json`.
Concurrency: the searcher hands out the members of the current generation as Tune asks and
returns None (Tune asks again later) while the generation's last members are still running, so
any number of concurrent trials works, more or fewer than the population. Failed and errored
trials are told as failures, so a generation always completes. `Searcher.FINISHED` is returned
once the strategy's budget is spent. State is saved as JSON (`save` / `restore`, called by Tune
for `tune.run(resume=...)` and `Tuner.restore`): archs whose trials finished before an
interruption are never evaluated again; the ones still running are re-run by Tune under their
old trial ids (its default for unfinished trials) and reported then.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ray.tune import Callback
from ray.tune.search import Searcher

from autovit_ray.io import atomic_write_text
from autovit_ray.progress import Eta
from autovit_ray.search.algorithms import Evaluation, SearchStrategy
from autovit_ray.space import Arch

if TYPE_CHECKING:
    from ray.tune.stopper import Stopper

logger = logging.getLogger(__name__)

SEARCHER_STATE_FORMAT = 1


def trial_config(arch: Arch) -> dict[str, Any]:
    """The Tune config of a trial evaluating `arch`: flat params plus the canonical JSON."""
    return {**arch.to_params(), "arch_json": arch.to_json()}


def arch_from_config(config: Mapping[str, Any]) -> Arch:
    """The arch of a trial config (from `arch_json` when present, else the flat params)."""
    if "arch_json" in config:
        return Arch.from_json(config["arch_json"])
    return Arch.from_params(config)


class AutoViTSearcher(Searcher):
    """Ray Tune searcher driving a `SearchStrategy` through ask / tell.

    `metric` / `mode` default to "top1" / "max"; Tune's own `metric` / `mode` arguments override
    them when Tune passes them on (it does when a `config` / `param_space` is given). With
    mode "min" the strategy maximises the negated metric."""

    def __init__(self, strategy: SearchStrategy, metric: str | None = "top1", mode: str | None = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        self.strategy = strategy
        self._live: dict[str, Arch] = {}  # trial id -> arch, for trials suggested and not completed
        self._last_value: dict[str, float] = {}  # latest metric a live trial reported
        # Time spent inside this searcher's callbacks (the benchmark's overhead per suggestion).
        self.suggest_seconds = 0.0
        self.complete_seconds = 0.0
        self.save_seconds = 0.0
        self.num_suggested = 0

    # -- Tune API -------------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        if metric:
            self._metric = metric
        if mode:
            if mode not in ("min", "max"):
                raise ValueError(f"AutoViTSearcher mode must be 'min' or 'max', got {mode!r}")
            self._mode = mode
        return True

    # Ray's hint omits the `Searcher.FINISHED` (a str) that its docs tell `suggest` to return when done
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        start = time.perf_counter()
        try:
            if self.strategy.exhausted:
                return Searcher.FINISHED
            arch = self.strategy.ask()
            if arch is None:  # waiting for the rest of the generation; Tune will ask again
                return Searcher.FINISHED if self.strategy.exhausted else None
            self._live[trial_id] = arch
            self.num_suggested += 1
            return trial_config(arch)
        finally:
            self.suggest_seconds += time.perf_counter() - start

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = self._metric_value(result)
        if trial_id in self._live and value is not None:
            self._last_value[trial_id] = value

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        start = time.perf_counter()
        try:
            arch = self._live.pop(trial_id, None)
            last = self._last_value.pop(trial_id, None)
            if arch is None:
                logger.warning("AutoViTSearcher: completion of unknown trial %s ignored", trial_id)
                return
            value = None if error else self._metric_value(result)
            if value is None and not error:
                value = last
                if value is None:
                    logger.warning("trial %s (%s) finished without a finite %r; counted as failed "
                                   "(result keys: %s)", trial_id, arch, self._metric,
                                   sorted(result) if result else None)
            fitness = None if value is None else (value if self._mode != "min" else -value)
            self.strategy.tell(arch, fitness)
        finally:
            self.complete_seconds += time.perf_counter() - start

    def save(self, checkpoint_path: str) -> None:
        start = time.perf_counter()
        state = {
            "format": SEARCHER_STATE_FORMAT,
            "metric": self._metric,
            "mode": self._mode,
            "live": {tid: arch.to_dict() for tid, arch in self._live.items()},
            "last_value": self._last_value,
            "strategy": self.strategy.state_dict(),
        }
        # Atomic: a driver killed mid-save leaves the previous state, not a truncated file.
        atomic_write_text(checkpoint_path, json.dumps(state))
        self.save_seconds += time.perf_counter() - start

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        if state.get("format") != SEARCHER_STATE_FORMAT:
            raise ValueError(f"{checkpoint_path}: searcher state format {state.get('format')!r} is not "
                             f"{SEARCHER_STATE_FORMAT}")
        self.strategy.load_state_dict(state["strategy"])
        self._metric, self._mode = state["metric"], state["mode"]
        self._live = {tid: Arch.from_dict(a) for tid, a in state["live"].items()}
        self._last_value = {tid: float(v) for tid, v in state["last_value"].items()}

    # -- helpers --------------------------------------------------------------------------------
    def _metric_value(self, result: Mapping[str, Any] | None) -> float | None:
        if not result or self._metric is None:
            return None
        value = result.get(self._metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    @property
    def overhead_per_suggestion_s(self) -> float:
        """Seconds spent in `suggest` + `on_trial_complete` per suggested trial."""
        return (self.suggest_seconds + self.complete_seconds) / max(self.num_suggested, 1)


class SearchProgress(Callback):
    """A Tune callback printing one line per finished candidate: count, generation, best so far.
    `Tuner.restore` unpickles it with the searcher it was pickled with, so `strategy` stays the one
    Tune restores and drives."""

    def __init__(self, strategy: SearchStrategy, name: str) -> None:
        self.strategy, self.name = strategy, name
        # started at the first finished candidate: a resume restores the searcher's history inside
        # Tune, and that restored work is not this run's rate
        self.eta: Eta | None = None

    def setup(self, stop: Stopper | None = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        self.eta = None  # this run's rate, also after a restore

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        strategy = self.strategy
        done = len(strategy.history)
        if self.eta is None:
            self.eta = Eta(total=strategy.max_evaluations, done=max(0, done - 1), unit="candidate")
        def fitness(e: Evaluation) -> float:
            assert e.fitness is not None  # only successful evaluations are compared
            return e.fitness

        best = max((e for e in strategy.history if e.ok), key=fitness, default=None)
        best_text = f"best val top-1 {best.fitness:.2f} ({best.arch})" if best else "no result yet"
        print(f"[{self.name}] {done}/{strategy.max_evaluations} evaluated, generation {strategy.generation}, "
              f"{best_text} ({self.eta.phrase(done)})", flush=True)
