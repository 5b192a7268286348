"""bench/rank_fidelity.py: which subnets it trains, its rank statistics and its report (seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autovit_ray.plan import count_params
from autovit_ray.space import load_space

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import rank_fidelity as rank  # noqa: E402


def test_the_subnets_are_distinct_and_spread_over_the_latency_range() -> None:
    space = load_space("xxs", input_profile="cifar10")

    def params(arch):  # a cheap stand-in for the LUT's latency
        return float(count_params(arch, 10, space))

    archs = rank.spread_over_latency(space, params, count=6, pool=600, seed=3)
    values = [params(a) for a in archs]
    assert len({a.arch_hash for a in archs}) == 6 and values == sorted(values)
    assert archs == rank.spread_over_latency(space, params, count=6, pool=600, seed=3)  # seeded
    import random

    rng = random.Random(3)
    pool = sorted(params(space.sample(rng)) for _ in range(600))
    assert values[0] <= pool[len(pool) // 6] and values[-1] >= pool[-len(pool) // 6]  # both tails reached
    with pytest.raises(ValueError, match="distinct archs"):
        rank.spread_over_latency(space, params, count=50, pool=20)


def test_rank_correlation_with_its_bootstrap_interval() -> None:
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    same = rank.rank_correlation(a, [10.0, 20.0, 25.0, 40.0, 41.0, 60.0], resamples=200)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["kendall_tau_ci"] is None  # bounds nothing
    reversed_ = rank.rank_correlation(a, a[::-1], resamples=200)
    assert reversed_["kendall_tau"] == pytest.approx(-1.0) and reversed_["spearman_rho"] == pytest.approx(-1.0)
    noisy = rank.rank_correlation(a, [2.0, 1.0, 3.0, 5.0, 4.0, 6.0], resamples=500)
    low, high = noisy["kendall_tau_ci"]
    assert low < noisy["kendall_tau"] < high and 0.0 < noisy["kendall_tau"] < 1.0
    constant = rank.rank_correlation(a, [10.0] * 6, resamples=50)
    assert constant["kendall_tau"] is None and constant["kendall_tau_ci"] is None
    with pytest.raises(ValueError, match="equal-length sequences of >= 3 values"):
        rank.rank_correlation([1.0, 2.0], [1.0, 2.0])


def test_a_rerun_with_other_subnets_or_schedule_is_refused() -> None:
    record: dict = {}
    rank.check_setup(record, {"subnets": 12, "short_epochs": 5})
    rank.check_setup(record, {"subnets": 12, "short_epochs": 5})
    with pytest.raises(rank.base.Mismatch, match="made with"):
        rank.check_setup(record, {"subnets": 12, "short_epochs": 3})


def test_the_report_says_how_far_the_trainings_are_and_quotes_tau() -> None:
    subnets = [{"run": rank.run_name(i), "name": f"arch{i}", "params": 1e6, "lut_ms": 4.0 + i} for i in range(3)]
    record = {"setup": {"subnets": 3, "short_epochs": 5}, "subnets": subnets,
              "val_top1": {"rank-00": {"no-KD": 70.0, "stand-alone": 60.0}, "rank-01": {"no-KD": 71.0}}}
    text = "\n".join(rank.report_sections(record))
    assert "Status: 1 of 3 stand-alone trainings evaluated" in text and "Stand-alone trainings:" not in text
    record["train"] = {"rank-00": {"wall_s": 420.0}, "rank-01": {"wall_s": 480.0}, "rank-02": {}}
    assert "median **7.5 min** each (wall, Ray start-up included; 2 measured, 0.2 h in all)" in \
        "\n".join(rank.report_sections(record))
    assert "| 00 | `arch0` | 1.000 M | 4.00 | 70.00 | 60.00 |" in text and "| 01 | `arch1` | 1.000 M | 5.00 | 71.00 | – |" in text
    record["correlation"] = {"no-KD": {"kendall_tau": 0.5, "kendall_tau_ci": [0.1, 0.8], "spearman_rho": 0.6,
                                       "spearman_rho_ci": [0.2, 0.9], "subnets": 3}}
    text = "\n".join(rank.report_sections(record))
    assert "Kendall τ **0.50 [0.10, 0.80]**, Spearman ρ 0.60 [0.20, 0.90]" in text
    assert "Reading (no-KD): the inherited accuracy ranks these subnets as training them alone does. The " \
           "inherited top-1 of the 1 subnets spans 0.00 pt and the stand-alone 0.00 pt, while one accuracy on " \
           "5,000 images has a standard error of about 0.6 pt" in text
    record["correlation"]["no-KD"]["kendall_tau_ci"] = [-0.6, 0.4]
    assert "τ's interval includes 0" in "\n".join(rank.report_sections(record))


def test_it_needs_a_trained_supernet_not_the_whole_first_result(tmp_path) -> None:
    import json

    with pytest.raises(SystemExit, match="search-inputs"):
        rank.trained_result(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"pilot": {"epochs": 6}}))
    with pytest.raises(SystemExit, match="no trained supernet"):
        rank.trained_result(tmp_path)
    found = {"pilot": {"epochs": 6}, "train": {"recipe": "light", "adaptation": "stem1", "supernet": {}}}
    (tmp_path / "results.json").write_text(json.dumps(found))
    assert rank.trained_result(tmp_path) == found  # no peer, searches or headline needed
