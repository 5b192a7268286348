"""Ray actors that keep supernet replicas for parallel validation (the paper's "Ray actors keep
supernet replicas"), and the pool that Tune trials share.

Each `EvaluatorActor` loads the checkpoint once (once per incarnation: Ray restarts a dead actor,
`max_restarts`, and the new incarnation loads again). `EvaluatorPool.evaluate` sends a request
to one actor, retries a request lost with a dead (or, after its timeout, hung and then restarted) actor
once on the next actor, and counts an evaluation only when a result comes back, so nothing is counted
twice. The timeouts are derived from a measured evaluation of the slowest arch unless set.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from ..space import Arch
from .cache import EvalCache
from .evaluate import EvalSettings

POOL_NAMESPACE = "autovit-ray"


@ray.remote(max_restarts=2, max_task_retries=0)
class EvaluatorActor:
    def __init__(self, checkpoint: str, lut: str | None, settings: dict[str, Any],
                 data_overrides: dict[str, Any], num_threads: int) -> None:
        import dataclasses

        from ..checkpoint import load_supernet
        from .evaluate import SubnetEvaluator

        supernet, space, config = load_supernet(checkpoint)
        data = dataclasses.replace(config.data, **data_overrides)
        latency_fn = None
        if lut:
            from ..latency import LatencyTable

            table = LatencyTable.load(lut, space=space)
            latency_fn = table.predict_latency
        # an actor given a GPU (gpus_per_evaluator) evaluates on it; the supernet replica stays on the CPU
        # and each calibrated subnet is copied to the GPU
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.evaluator = SubnetEvaluator(supernet, space, data, EvalSettings(**settings), latency_fn,
                                         num_threads, device=device)
        self.checkpoint_loads = 1
        self.started = time.time()

    def evaluate(self, arch_json: str, split: str = "val") -> dict[str, Any]:
        return self.evaluator.evaluate_split(Arch.from_json(arch_json), split)

    def time_evaluation(self, arch_json: str, splits: tuple[str, ...]) -> dict[str, Any]:
        """One uncounted selection evaluation of `arch_json` (the pool's warm-up): its seconds per batch
        and the batches one evaluation of each of `splits` reads."""
        arch = Arch.from_json(arch_json)
        result = self.evaluator.evaluate_split(arch, "val")
        self.evaluator.evaluations -= 1
        batches = {split: self.evaluator.batches_per_evaluation(split, arch.resolution) for split in {"val", *splits}}
        return {"seconds_per_batch": result["eval_seconds"] / batches["val"],
                "batches": {split: batches[split] for split in splits}}

    def stats(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "gpu_ids": [str(i) for i in ray.get_gpu_ids()], "device": self.evaluator.device,
                "checkpoint_loads": self.checkpoint_loads, "evaluations": self.evaluator.evaluations}


def _wait_until_alive(actor: Any, timeout_s: float = 180.0) -> None:
    """Block while Ray restarts a dead actor (calls fail fast with 'actor is restarting')."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            ray.get(actor.stats.remote(), timeout=60)
            return
        except (RayActorError, GetTimeoutError):
            time.sleep(0.5)


# A derived timeout: this many times the measured time of the slowest arch, and never below the floor
# (the first requests of a fresh actor also pay for imports and loader set-up).
TIMEOUT_FACTOR = 10.0
TIMEOUT_FLOOR_S = 30.0
WARMUP_TIMEOUT_S = 1800.0  # the warm-up itself: first loads of the data on a slow node
SPLITS = ("val", "val_other", "test")


def derived_timeouts(seconds_per_batch: float, batches: dict[str, int]) -> dict[str, float]:
    """Seconds one evaluation of each split may take: TIMEOUT_FACTOR x its expected time, at least the floor."""
    return {split: max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * seconds_per_batch * n) for split, n in batches.items()}


class EvaluatorPool:
    """N evaluator actors serving one search. Picklable (it holds actor handles), so it can be
    passed to Tune trials with `tune.with_parameters`."""

    def __init__(self, checkpoint: str, num_evaluators: int, lut: str | None = None,
                 settings: EvalSettings | None = None, data_overrides: dict[str, Any] | None = None,
                 cpus_per_evaluator: float = 1.0, threads_per_evaluator: int = 1,
                 scheduling_strategy: str = "SPREAD", cache: EvalCache | None = None,
                 timeout_s: float | None = None, gpus_per_evaluator: float = 0.0,
                 timing_arch: Arch | None = None) -> None:
        """`timeout_s`: seconds any evaluation may take; None with `timing_arch` (the slowest arch, e.g. the
        space's largest): derived per split from that arch's measured time on every actor
        (`derived_timeouts`); None without it: no timeout."""
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"the evaluation timeout must be positive seconds or None, got {timeout_s!r}")
        if not isinstance(num_evaluators, int) or num_evaluators < 1:
            raise ValueError(f"the search needs at least one evaluator actor, got --evaluators {num_evaluators!r}")
        self.actors = [
            # SPREAD: on a multi-node cluster the replicas go to different nodes (best effort).
            # (Ray's stubs type the decorated class as the plain class, which has no `.options`)
            EvaluatorActor.options(  # type: ignore[attr-defined]
                num_cpus=cpus_per_evaluator, num_gpus=gpus_per_evaluator,
                scheduling_strategy=scheduling_strategy).remote(
                str(checkpoint), str(lut) if lut else None, asdict(settings or EvalSettings()), dict(data_overrides or {}),
                threads_per_evaluator)
            for _ in range(num_evaluators)]
        self.cache = cache
        self.retries = 0  # requests lost with a dead actor and sent again (this process's pool object)
        self.stats()  # fail fast: surface a bad checkpoint or LUT here, not inside the first trial
        self.timeouts: dict[str, float | None] = {split: timeout_s for split in SPLITS}
        if timeout_s is None and timing_arch is not None:
            timings = ray.get([actor.time_evaluation.remote(timing_arch.to_json(), SPLITS) for actor in self.actors],
                              timeout=WARMUP_TIMEOUT_S)
            slowest = max(timings, key=lambda t: t["seconds_per_batch"])
            self.timeouts = dict(derived_timeouts(slowest["seconds_per_batch"], slowest["batches"]))

    def evaluate(self, arch: Arch, split: str = "val", attempts: int = 2) -> dict[str, Any]:
        """Evaluate on the actor chosen by the arch hash; on a dead actor retry once on the next. With a
        cache, an arch it holds is not evaluated again (the result comes with `cached: True`)."""
        if self.cache is not None:
            hit = self.cache.get(arch, split)
            if hit is not None:
                return hit
        result = self._evaluate(arch, split, attempts)
        if self.cache is not None:
            self.cache.put(arch, split, result)
        return result

    def _evaluate(self, arch: Arch, split: str, attempts: int) -> dict[str, Any]:
        first = int(arch.arch_hash, 16) % len(self.actors)
        error: Exception | None = None
        for attempt in range(attempts):
            actor = self.actors[(first + attempt) % len(self.actors)]
            try:
                return ray.get(actor.evaluate.remote(arch.to_json(), split), timeout=self.timeouts[split])
            except (RayActorError, GetTimeoutError) as exc:  # died mid-request, or hangs: restart it
                error = exc
                if isinstance(exc, GetTimeoutError):  # a hung actor would hang every search step after it
                    ray.kill(actor, no_restart=False)
                if attempt + 1 < attempts:
                    self.retries += 1
                _wait_until_alive(actor)
        raise RuntimeError(f"evaluation of {arch} failed on {attempts} evaluator actors: {error}")

    def stats(self) -> list[dict[str, Any]]:
        return ray.get([actor.stats.remote() for actor in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
