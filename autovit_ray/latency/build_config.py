"""`BuildConfig`: how a latency table is built (`autovit_ray.latency.build.build_table`). Pure Python."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BuildConfig:
    rounds: int = 10  # interleaved rounds over all modules and reference models
    repeats: int = 1  # samples per candidate per round (a module sample averages >= 1 ms of calls)
    references: int = 100  # random reference archs per resolution, on top of the witness archs
    folds: int = 5  # cross-validation folds over the reference archs
    seed: int = 0
    drift_correction: bool = True
    quiet_cpus: float | None = 0.3  # keep rounds in which other processes used <= this many cores (None: off)
    quiet_wait_s: float = 60.0  # wait at most this long before each round for them to go quiet


__all__ = ["BuildConfig"]
