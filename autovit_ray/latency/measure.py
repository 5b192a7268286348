"""Interleaved timing of many prepared models, and the statistics kept for each.

Noise control: the repeats of all candidates are interleaved (round r times every candidate
before round r+1 starts, in a fresh random order each round), so slow drifts and bursts of load
from other processes spread over all candidates instead of biasing one; a discarded first round
warms caches and allocators; the summary statistic is the median. With many candidates per
round, each round's common slow-down (the machine's load at that moment, shared by every
candidate) is divided out first.

Other processes do not slow every model alike, though: on a shared machine, memory-heavy subnets
lose more to a neighbour's job than light ones, even on the thread clock (shared caches, memory
bandwidth, the host's sibling hyperthreads). No correction undoes that, so a `QuietGate` waits
(boundedly) for other processes to go quiet before each round, records how busy they were during
it, and the summary keeps the quiet rounds only. What it kept is reported.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .backends import PreparedModel

if TYPE_CHECKING:
    from .backends import LatencyBackend, Model

# A sample should last at least this long, so the clock's own overhead stays below ~0.1%.
MIN_SAMPLE_MS = 1.0
MAX_INNER = 200
# Round-load correction needs enough models per round to tell the machine's load from a model.
DRIFT_MIN_MODELS = 8


class QuietGate:
    """Wait until other processes use at most `max_other_cpus` cores (averaged over 1 s), for at most
    `max_wait_s` per round; record their average use during each round. Linux only (/proc/stat);
    elsewhere it never waits and every round counts as quiet.

    A wait that runs out shows a load that outlasts a wait: until a round begins quiet again, the next
    rounds wait at most `busy_wait_s` each, so a machine busy for the whole run costs one long wait and
    short ones, not `max_wait_s` per round (the quietest half of the rounds is kept all the same)."""

    def __init__(self, max_other_cpus: float = 0.3, max_wait_s: float = 60.0, busy_wait_s: float = 5.0) -> None:
        self.max_other_cpus, self.max_wait_s, self.busy_wait_s = max_other_cpus, max_wait_s, busy_wait_s
        self.round_loads: list[float] = []
        self.waited_s = 0.0
        self.timeouts = 0  # waits that ran out before the machine went quiet
        self.busy = False  # the last wait ran out: wait at most `busy_wait_s`
        self._mark: tuple[float, float, float] | None = None

    @staticmethod
    def _counters() -> tuple[float, float, float] | None:
        """(wall s, busy CPU-s of the whole machine, CPU-s of this process)."""
        try:
            fields = [float(v) for v in open("/proc/stat").readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    @staticmethod
    def _others(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
        wall = max(end[0] - start[0], 1e-3)
        return max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / wall

    def other_cpus(self, window_s: float = 1.0) -> float:
        """Cores used by other processes over the next `window_s` seconds (0 if unknown)."""
        start = self._counters()
        time.sleep(window_s)
        end = self._counters()
        return 0.0 if start is None or end is None else self._others(start, end)

    def before_round(self) -> None:
        if self._counters() is None:
            self._mark = None
            return
        limit = min(self.busy_wait_s, self.max_wait_s) if self.busy else self.max_wait_s
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if self.other_cpus() <= self.max_other_cpus:
                self.busy = False
                break
        else:
            if limit > 0:
                self.timeouts += 1
                self.busy = True
        self.waited_s += time.monotonic() - start
        self._mark = self._counters()

    def after_round(self) -> None:
        end = self._counters()
        self.round_loads.append(0.0 if self._mark is None or end is None else self._others(self._mark, end))

    def quiet_rounds(self, last: int) -> np.ndarray:
        """Mask over the `last` recorded rounds: the quiet ones, or the quietest half if fewer than
        half were quiet (a long neighbouring job must not leave nothing to summarise)."""
        loads = np.array(self.round_loads[-last:])
        quiet = loads <= self.max_other_cpus
        if quiet.sum() * 2 < last:
            quiet = loads <= np.sort(loads)[(last - 1) // 2]
        return quiet

    def report(self, last: int) -> dict[str, float]:
        loads = np.array(self.round_loads[-last:])
        return {"rounds": int(last), "quiet_rounds": int(self.quiet_rounds(last).sum()),
                "max_other_cpus": self.max_other_cpus, "waited_s": round(self.waited_s, 1), "timeouts": self.timeouts,
                "other_cpus_median": float(np.median(loads)) if loads.size else 0.0}


def describe_quiet(quiet: dict[str, float]) -> str:
    """A gate's report (`QuietGate.report`) as the build and the validation log it."""
    ran_out = int(quiet.get("timeouts", 0))
    busy = f"; {ran_out} wait{'s' * (ran_out != 1)} ran out, the machine stayed busy" if ran_out else ""
    return (f"kept {quiet['quiet_rounds']}/{quiet['rounds']} quiet rounds (others' median load "
            f"{quiet['other_cpus_median']:.2f} cores, waited {quiet['waited_s']:.0f} s{busy})")


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    samples: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> LatencyStats:
        a = np.asarray(samples, dtype=float)
        if a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError(f"latency samples must be a non-empty list of finite numbers, got {list(a[:5])}")
        return cls(float(np.median(a)), float(a.mean()), float(a.std()), float(np.percentile(a, 10)),
                   float(np.percentile(a, 90)), float(a.min()), int(a.size))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def calibrate_inner(prepared: PreparedModel) -> int:
    """Calls per sample so that one sample lasts >= MIN_SAMPLE_MS."""
    once = min(prepared.time(3))
    return int(min(MAX_INNER, max(1, math.ceil(MIN_SAMPLE_MS / max(once, 1e-4)))))


def measure_samples(prepared: Sequence[PreparedModel], rounds: int, repeats: int,
                    inner: Sequence[int] | None = None, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None,
                    gate: QuietGate | None = None) -> np.ndarray:
    """Raw samples [model, round, repeat] in ms: every model is timed `repeats` times per round,
    rounds interleaved in a fresh random order; one warm-up round runs first and is discarded.
    With a `gate`, each timed round waits for quiet first and its neighbours' load is recorded
    (`gate.quiet_rounds(rounds)` then says which rounds to keep)."""
    if rounds < 1 or repeats < 1:
        raise ValueError(f"rounds and repeats must be >= 1, got {rounds} and {repeats}")
    inner = list(inner) if inner is not None else [1] * len(prepared)
    rng = random.Random(seed)
    samples = np.zeros((len(prepared), rounds, repeats))
    order = list(range(len(prepared)))
    for r in range(-1, rounds):
        rng.shuffle(order)
        if gate is not None and r >= 0:
            gate.before_round()
        for i in order:
            got = prepared[i].time(repeats, inner[i])
            if r >= 0:
                samples[i, r] = got
        if gate is not None and r >= 0:
            gate.after_round()
        if progress is not None and r >= 0:
            progress(r + 1, rounds)
    return samples


def round_factors(samples: np.ndarray) -> np.ndarray:
    """The load level of each round, relative to the typical round: the median over models of
    (model's median in this round / model's median over all rounds). Every model runs in every
    round, so a round that is slow for all of them was slowed by the machine, not by a model."""
    per_round = np.median(samples, axis=2)  # [model, round]
    relative = per_round / np.median(per_round, axis=1, keepdims=True)
    factors = np.median(relative, axis=0)
    return factors / np.median(factors)


def summarize(samples: np.ndarray, drift_correction: bool = True,
              keep_rounds: np.ndarray | None = None) -> list[LatencyStats]:
    """LatencyStats per model over the rounds in `keep_rounds` (default all); with
    `drift_correction` (and >= DRIFT_MIN_MODELS models) each round's samples are first divided by
    that round's load factor."""
    if keep_rounds is not None:
        samples = samples[:, np.asarray(keep_rounds, dtype=bool)]
    if drift_correction and samples.shape[0] >= DRIFT_MIN_MODELS and samples.shape[1] >= 2:
        samples = samples / round_factors(samples)[None, :, None]
    return [LatencyStats.of(s.ravel()) for s in samples]


def measure_interleaved(prepared: Sequence[PreparedModel], rounds: int, repeats: int,
                        inner: Sequence[int] | None = None, seed: int = 0, drift_correction: bool = True,
                        progress: Callable[[int, int], None] | None = None,
                        gate: QuietGate | None = None) -> list[LatencyStats]:
    """`measure_samples` then `summarize` (over the gate's quiet rounds): one LatencyStats per model."""
    samples = measure_samples(prepared, rounds, repeats, inner, seed, progress, gate)
    keep = gate.quiet_rounds(rounds) if gate is not None else None
    return summarize(samples, drift_correction, keep)


def measure_models(backend: LatencyBackend, models: Iterable[tuple[Model, tuple[int, ...]]], rounds: int,
                   repeats: int, seed: int = 0, calibrate: bool = False) -> list[LatencyStats]:
    """Each (model, input shape) prepared on `backend`, then all timed interleaved (`measure_interleaved`);
    every prepared model is closed again, also when preparing or timing one fails. `calibrate`: a sample
    repeats a fast model until it lasts MIN_SAMPLE_MS (`calibrate_inner`), else it is one call."""
    prepared: list[PreparedModel] = []
    try:
        for model, shape in models:  # an iterator builds each model only when its turn comes
            prepared.append(backend.prepare(model, shape))
        inner = [calibrate_inner(p) for p in prepared] if calibrate else None
        return measure_interleaved(prepared, rounds, repeats, inner, seed)
    finally:
        for p in prepared:
            p.close()
