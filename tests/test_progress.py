"""The ETA phrase of the long stages, on a clock the test sets."""

from __future__ import annotations

import pytest

from autovit_ray.progress import Eta, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_duration_reads_like_a_person_would_say_it():
    assert [duration(s) for s in (0, 12.4, 245, 3600 + 7 * 60 + 20)] == ["0 s", "12 s", "4m05s", "1h07m"]


def test_eta_counts_only_this_runs_work():
    clock = Clock()
    eta = Eta(total=30, done=10, unit="epoch", clock=clock)
    assert eta.phrase(10) == "elapsed 0 s"
    clock.now += 600  # 2 epochs in 10 minutes: 5 min per epoch, 18 epochs left
    assert eta.phrase(12) == "elapsed 10m00s, 5 min/epoch, about 1h30m left"
    fast = Eta(total=500, unit="candidate", clock=clock)
    clock.now += 60
    assert fast.phrase(20) == "elapsed 1m00s, 20 candidates/min, about 24m00s left"
    with pytest.raises(ValueError, match="total >= 0"):
        Eta(total=-1)
