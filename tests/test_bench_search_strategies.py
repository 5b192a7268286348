"""bench/search_strategies.py (Table 6): its reach statistic, its verdict and its report (seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import search_strategies as strategies  # noqa: E402


def _run(strategy: str, seed: int, curve: list[float | None]) -> dict:
    best = max(v for v in curve if v is not None)
    return {"strategy": strategy, "seed": seed, "evaluations": len(curve), "best_val_half": best,
            "best_val_other_half": best - 0.5, "best_test": best - 1.0, "best_arch": f"arch-{strategy}-{seed}",
            "best_params": 700_000, "best_latency_ms": 5.0, "curve": curve, "actor_evaluations": len(curve) - 2,
            "cache_hits": 2, "candidates": {"proposed": len(curve) + 9, "over_budget": 7, "duplicate": 2},
            "wall_s": 600.0}


def _rising(length: int, reach_at: int, final: float) -> list[float | None]:
    """A best-so-far curve: None first (over-budget), rising to `final` at evaluation `reach_at`."""
    return [None] + [final - 5.0 + 5.0 * min(i, reach_at) / reach_at for i in range(1, length)]


def test_evaluations_to_reach_counts_from_one_and_skips_missing_values() -> None:
    assert strategies.evaluations_to_reach([None, 70.0, 75.0, 75.0], 75.0) == 3
    assert strategies.evaluations_to_reach([None, 70.0], 71.0) is None


def test_the_claim_holds_when_coarse_to_fine_matches_evolution_in_well_under_half_the_budget() -> None:
    runs = [_run("coarse-to-fine", s, _rising(300, 100 + s, 78.0)) for s in range(3)]
    runs += [_run("evolution", s, _rising(300, 280, 77.8 + 0.1 * s)) for s in range(3)]
    reach = strategies.reach_statistics(runs, resamples=500)
    assert reach["target_val_half"] == pytest.approx(77.9)
    assert 100 <= reach["evaluations"] <= 150 and reach["budget"] == 300 and reach["claim_holds"]
    low, high = reach["interval_95"]
    assert low <= reach["evaluations"] <= high <= 150  # every seed reaches it near evaluation 100
    assert "bootstrap interval over seeds, about their range with so few," in strategies.reach_sentence(reach)
    assert strategies.reach_sentence(reach).endswith("holds here.")
    # the median within half the budget, one seed late: the interval is not, so the claim does not hold
    late = [_run("coarse-to-fine", s, _rising(300, (100, 110, 260)[s], 78.0)) for s in range(3)]
    late += [r for r in runs if r["strategy"] == "evolution"]
    slow = strategies.reach_statistics(late, resamples=500)
    assert slow["evaluations"] <= 150 and slow["interval_95"][1] > 150 and not slow["claim_holds"]


def test_the_claim_fails_when_coarse_to_fine_never_reaches_evolutions_best() -> None:
    runs = [_run("coarse-to-fine", s, _rising(300, 50, 77.0)) for s in range(3)]
    runs += [_run("evolution", s, _rising(300, 280, 78.0)) for s in range(3)]
    reach = strategies.reach_statistics(runs, resamples=200)
    assert reach["evaluations"] == reach["not_reached_means"] == 301 and not reach["claim_holds"]
    text = strategies.section({"inputs": {"checkpoint": "ck", "lut": "/x/lut.parquet", "params_budget": 1.3e6,
                                          "latency_budget_ms": 5.5},
                               "evaluations": 300, "seeds": [0, 1, 2], "runs": runs, "reach": reach},
                              "cmd", "bench/results/s.png")
    assert "does not reach plain evolution's final best" in text and "within 300 evaluations" in text and "is not supported by this experiment." in text
    assert "Code: not recorded." in text  # a result without code_runs says so
    assert strategies.reach_statistics([r for r in runs if r["strategy"] == "evolution"]) == {}


def test_report_only_writes_the_section_and_plot_with_the_runs_code(tmp_path: Path) -> None:
    runs = [_run(name, 0, _rising(60, 30, 77.0)) for name in strategies.STRATEGIES]
    result = {"inputs": {"checkpoint": "ck", "lut": "lut.parquet", "params_budget": 1.3e6, "latency_budget_ms": 5.5},
              "evaluations": 60, "seeds": [0], "runs": runs, "reach": strategies.reach_statistics(runs, resamples=100),
              "code_runs": [{"autovit_ray": "/w/pinned-abc/autovit_ray/__init__.py", "root": "/w/pinned-abc",
                             "commit": "abc1234def"}]}
    results = tmp_path / "bench" / "results" / "search_strategies.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps(result))
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\n## Another section\n\nkept\n")
    assert strategies.main(["--report-only", "--results", str(results), "--benchmarks-file", str(benchmarks)]) == 0
    text = benchmarks.read_text()
    assert strategies.HEADING in text and "kept" in text and "commit abc1234 (`pinned-abc`)" in text
    assert results.with_suffix(".png").stat().st_size > 0
    assert "The supernet" not in text  # a result without the supernet's summary (a smoke run) says nothing of it


def test_the_section_describes_the_searched_supernet() -> None:
    first = {"code_runs": [{"root": "/w/pinned-bb49058", "commit": "bb49058aa"}],
             "train": {"supernet_wall_s": 1.5 * 3600,
                       "supernet": {"2": {"val_top1_smallest": 40.0},
                                    "10": {"val_top1_smallest": 70.0, "val_top1_largest": 71.25,
                                           "val_top1_random_mean": 70.5}}}}
    summary = strategies.supernet_summary(first)
    assert summary["epochs"] == 10 and summary["final_val"]["val_top1_largest"] == 71.25  # epochs sort as numbers
    text = "\n".join(strategies.supernet_lines(summary))
    assert "10 epochs (1.50 h" in text and "commit bb49058 (`pinned-bb49058`)" in text and "largest 71.2" in text


def test_a_smoke_run_on_another_checkpoint_records_the_environment_only(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path))  # no CIFAR-10 result there
    fields = strategies.provenance({"checkpoint": "other", "lut": "x", "params_budget": 1.0,
                                    "latency_budget_ms": 1.0})
    assert set(fields) == {"environment"} and "torch" in fields["environment"]["packages"]
    # beside a CIFAR-10 result's record whose supernet is gone (the claim's table6 on another machine)
    record = tmp_path / "cifar10_result" / "results.json"
    record.parent.mkdir()
    record.write_text(json.dumps({"train": {"recipe": "light"}, "budgets": {"params_budget": 1.0}}))
    other = {"checkpoint": str(tmp_path / "cifar10_claim" / "ck"), "lut": "x", "params_budget": 1.0,
             "latency_budget_ms": 1.0}
    assert set(strategies.provenance(other)) == {"environment"}


def test_finished_runs_are_read_back_without_searching_or_claiming_this_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path))  # no CIFAR-10 result there
    out = tmp_path / "strategies"
    for strategy in strategies.STRATEGIES:
        path = strategies.results_path(out, strategy, 0)
        path.parent.mkdir(parents=True)
        evaluated = [{"fitness": None}] + [{"fitness": 70.0 + i} for i in range(5)]
        path.write_text(json.dumps({
            "evaluations": 6, "evaluated": evaluated, "actor_evaluations": 6, "cache_hits": 0,
            "candidates_proposed": 9, "candidates_over_budget": 3, "candidates_duplicate": 0,
            "best": [{"val_top1": 74.0, "val_other_top1": 73.5, "test_top1": 73.0, "name": "a", "params": 1,
                      "latency_ms": 2.0}]}))
    results = tmp_path / "bench" / "results" / "search_strategies.json"
    results.parent.mkdir(parents=True)
    argv = ["--checkpoint", "ck", "--lut", "lut.parquet", "--params-budget", "1e6", "--latency-budget-ms", "5",
            "--evaluations", "6", "--seeds", "0", "--out", str(out), "--results", str(results),
            "--benchmarks-file", str(tmp_path / "BENCHMARKS.md")]
    assert strategies.main(argv) == 0
    result = json.loads(results.read_text())
    assert [r["curve"] for r in result["runs"]] == [[None, 70.0, 71.0, 72.0, 73.0, 74.0]] * 3
    assert result["code_runs"] == [] and not (out / "code_runs.json").exists()  # nothing ran here
    assert set(result) >= {"environment", "inputs"} and "recipe" not in result  # not the CIFAR-10 supernet
    assert "Code: not recorded." in (tmp_path / "BENCHMARKS.md").read_text()


def test_the_summary_gives_each_strategys_median_and_range_over_seeds() -> None:
    runs = [_run("evolution", s, _rising(40, 20, 76.0 + s)) for s in range(3)]
    runs += [_run("random", 0, _rising(40, 20, 75.0))]
    header, rule, *rows = strategies.strategy_summary(runs)
    assert "val half 1" in header and len(rows) == 2  # no coarse-to-fine runs: no row
    assert rows[0] == "| evolution | 3 | 77.00 (76.00-78.00) | 76.50 (75.50-77.50) | 76.00 (75.00-77.00) | 38 | 10.0 |"
    assert rows[1].startswith("| random | 1 | 75.00 (75.00-75.00) |")


def test_the_reading_compares_the_winners_on_held_out_images() -> None:
    runs = [_run("coarse-to-fine", 0, _rising(40, 20, 77.0)), _run("evolution", 0, _rising(40, 20, 77.5))]
    text = strategies.held_out_reading(runs)
    assert "within 0.50 points of each other on the test set (coarse-to-fine 76.00, evolution 76.50)" in text
    assert strategies.held_out_reading(runs[:1]) == ""
