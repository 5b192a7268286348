"""Progress with an estimate of the time left, for the long stages (training epochs, stand-alone
retraining, search candidates, latency-table rounds): elapsed, rate and what is left, in one short
phrase for a log line. Pure Python."""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """12 s, 4m05s, 2h07m."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Eta:
    """Units of work done out of `total`, counted from `done` (a resumed run's work is not this
    process's rate). `unit` is singular: `Eta(30, 12, "epoch").phrase(13)` after 4 minutes ->
    'elapsed 4m00s, 4 min/epoch, about 1h08m left'."""

    def __init__(self, total: int, done: int = 0, unit: str = "unit", clock=time.monotonic) -> None:
        if total < 0 or done < 0:
            raise ValueError(f"Eta needs total >= 0 and done >= 0, got {total} and {done}")
        self.total, self.start_done, self.unit, self.clock = total, done, unit, clock
        self.start = clock()

    def phrase(self, done: int) -> str:
        elapsed = self.clock() - self.start
        new = done - self.start_done
        if new <= 0 or elapsed <= 0:
            return f"elapsed {duration(elapsed)}"
        per_minute = 60.0 * new / elapsed
        unit = self.unit or "unit"
        rate = f"{per_minute:.3g} {unit}s/min" if per_minute >= 1 else f"{1 / per_minute:.3g} min/{unit}"
        left = max(0, self.total - done) * elapsed / new
        return f"elapsed {duration(elapsed)}, {rate}, about {duration(left)} left"


__all__ = ["Eta", "duration"]
