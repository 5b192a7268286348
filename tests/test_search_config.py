"""SearchConfig: the one definition of a search's settings, shared by the CLI, the pipeline and the
Python API."""

from __future__ import annotations

import dataclasses

import pytest

from autovit_ray.search.cli import build_parser
from autovit_ray.search.config import SearchConfig


def test_cli_defaults_are_the_config_defaults():
    args = build_parser().parse_args(["--checkpoint", "ckpt", "--name", "s"])
    assert SearchConfig.from_args(args) == SearchConfig(name="s", checkpoint="ckpt")


def test_config_round_trips_through_the_cli_flags():
    cfg = SearchConfig(name="s", checkpoint="ckpt", supernet="xxs", lut="xxs.parquet", params_budget=1.5e6,
                       latency_budget_ms=2.25, strategy="pareto", population=6, max_evaluations=12,
                       cpus_per_evaluator=0.5, export_formats=("onnx",), no_register=True, seed=3)
    assert SearchConfig.from_args(build_parser().parse_args(cfg.to_argv())) == cfg
    assert cfg.to_argv()[:4] == ["--name", "s", "--checkpoint", "ckpt"]


def test_python_values_are_coerced():
    cfg = SearchConfig(name="s", checkpoint="ckpt", params_budget=1500000, export_formats=["onnx", "coreml"])
    assert cfg.params_budget == 1.5e6 and cfg.export_formats == ("onnx", "coreml")
    assert [f.name for f in dataclasses.fields(cfg)][:2] == ["name", "checkpoint"]


@pytest.mark.parametrize("changes, message", [
    ({"evaluators": 0}, "--evaluators must be >= 1"),
    ({"latency_budget_ms": 3.0}, "needs --lut"),
    ({"strategy": "coarse_to_fine"}, "--strategy 'coarse_to_fine' is unknown"),
    ({"params_budget": -1}, "--params-budget must be positive"),
    ({"name": ""}, "--name '' is invalid"),
    ({"population": "many"}, "population = 'many' is invalid"),
])
def test_bad_settings_are_one_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**{"name": "s", "checkpoint": "ckpt", **changes})


def test_unknown_field_names_the_closest():
    with pytest.raises(ValueError, match="did you mean evaluators"):
        SearchConfig.from_dict({"name": "s", "checkpoint": "ckpt", "evaluatorz": 1})
