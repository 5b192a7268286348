"""A search's results.json read as typed records (`autovit_ray.search.results`)."""

from __future__ import annotations

import json
import random

import pytest

from autovit_ray.arch_source import arch_from_search_results
from autovit_ray.search.algorithms import Evaluation
from autovit_ray.search.results import read_search
from autovit_ray.space import load_space


def _results(space, n_best: int) -> dict:
    rng = random.Random(0)
    evaluated = [Evaluation(space.sample(rng), 50.0 + i, 1000 + i, 1.5 + i, 0) for i in range(3)]
    evaluated.append(Evaluation(space.smallest(), None, 900, None, 1))  # a failed candidate
    best = [{"rank": r, "arch": e.arch.to_dict(), "name": str(e.arch), "val_top1": e.fitness, "test_top1": 40.0,
             "params": e.params, "latency_ms": e.latency, "macs": 12345, "exports": {"onnx": "m.onnx"},
             "weights": "m.pth", "arch_json": "m.arch.json", "measured_latency_ms": 2.5}
            for r, e in enumerate(sorted(evaluated[:3], key=lambda e: -e.fitness)[:n_best], start=1)]
    return {"best": best, "pareto_front": [evaluated[2].to_dict()], "evaluations": 4, "failed": 1,
            "evaluated": [e.to_dict() for e in evaluated], "cache_hits": 3}


def test_results_json_reads_back_typed(tmp_path):
    space = load_space("xxs", input_profile="digits")
    data = _results(space, 2)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    report = read_search(path)
    assert [m.rank for m in report.best] == [1, 2] and report.champion is report.best[0]
    assert report.champion.arch.to_dict() == data["best"][0]["arch"] and report.champion.exports == {"onnx": "m.onnx"}
    assert report.champion.val_top1 == 52.0 and report.champion.model_uris == {} and report.champion.registered is None
    assert [e.to_dict() for e in report.evaluated] == data["evaluated"] and not report.evaluated[-1].ok
    assert report.evaluations == 4 and report.failed == 1 and report.extra == {"cache_hits": 3}
    assert arch_from_search_results(path) == report.champion.arch


def test_a_search_without_a_best_model_and_bad_files(tmp_path):
    space = load_space("xxs", input_profile="digits")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(_results(space, 0)))
    assert read_search(empty).champion is None
    with pytest.raises(ValueError, match="found no model within its budgets"):
        arch_from_search_results(empty)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(empty.read_text()[:50])
    with pytest.raises(ValueError, match="truncated.json is not a finished search's results.json"):
        read_search(truncated)
    with pytest.raises(ValueError, match="missing.json does not exist"):
        read_search(tmp_path / "missing.json")


def test_the_printed_best_models_show_table_and_measured_latency(capsys):
    from autovit_ray.search.driver import print_tables

    space = load_space("xxs", input_profile="digits")
    best = _results(space, 2)["best"]
    best[1] = {**best[1], "latency_ms": None, "measured_latency_ms": None}  # no table, not measured
    print_tables(best, [])
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("rank"))
    assert header.split()[-5:] == ["table", "ms", "measured", "ms", "arch"]
    first, second = (line.split() for line in lines[lines.index(header) + 1:lines.index(header) + 3])
    assert first[4:6] == [f"{best[0]['latency_ms']:.3f}", "2.500"] and second[4:6] == ["nan", "nan"]
