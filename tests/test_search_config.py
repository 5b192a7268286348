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
                       latency_budget_ms=2.25, strategy="coarse-to-fine-dominance", population=6, max_evaluations=12,
                       cpus_per_evaluator=0.5, export_formats=("onnx",), no_register=True, seed=3, calib_size=4096,
                       measured_latency_budget_ms=2.5, measured_candidates=20)
    assert SearchConfig.from_args(build_parser().parse_args(cfg.to_argv())) == cfg
    assert cfg.to_argv()[:4] == ["--name", "s", "--checkpoint", "ckpt"]
    by_reference = dataclasses.replace(cfg, measured_latency_budget_ms=None, measured_budget_reference="mobilevit_xxs",
                                       measured_budget_factor=0.8)
    assert SearchConfig.from_args(build_parser().parse_args(by_reference.to_argv())) == by_reference


def test_the_evaluators_read_the_checkpoints_data_with_the_searchs_overrides():
    from autovit_ray.search.driver import evaluation_overrides

    assert evaluation_overrides(SearchConfig(name="s", checkpoint="ckpt")) == {}
    cfg = SearchConfig(name="s", checkpoint="ckpt", data_dir="/data/cifar10", calib_size=4096)
    assert evaluation_overrides(cfg) == {"data_dir": "/data/cifar10", "calib_size": 4096}


def test_settings_added_later_enter_the_identity_only_when_set():
    """A search begun before --calib-size existed resumes (its identity had no such key); set, it is
    another search."""
    from autovit_ray.search.config import identity_settings

    unset = identity_settings(dataclasses.asdict(SearchConfig(name="s", checkpoint="ckpt")))
    assert "calib_size" not in unset and "name" not in unset and unset["population"] == 50
    assert identity_settings(dataclasses.asdict(SearchConfig(name="s", checkpoint="ckpt", calib_size=4096))) == {
        **unset, "calib_size": 4096}


def test_a_measured_budget_chooses_among_the_evaluations_so_it_is_not_in_the_identity():
    """A finished search rerun with another measured budget resumes and chooses again from its evaluations."""
    from autovit_ray.search.config import identity_settings

    plain = SearchConfig(name="s", checkpoint="ckpt", lut="t.parquet")
    measured = dataclasses.replace(plain, measured_latency_budget_ms=4.0, measured_candidates=5)
    assert identity_settings(dataclasses.asdict(measured)) == identity_settings(dataclasses.asdict(plain))
    by_reference = dataclasses.replace(plain, measured_budget_reference="mobilevit_xxs", measured_budget_factor=0.8)
    assert identity_settings(dataclasses.asdict(by_reference)) == identity_settings(dataclasses.asdict(plain))
    assert by_reference.measured_budget and measured.measured_budget and not plain.measured_budget


def test_a_registered_models_budgets_tag_names_each_budget():
    from autovit_ray.search.driver import budgets_tag

    plain = SearchConfig(name="s", checkpoint="ckpt", lut="t.parquet")
    assert budgets_tag(plain) == "none"
    assert budgets_tag(dataclasses.replace(plain, params_budget=1.6e6, latency_budget_ms=5.0,
                                           measured_latency_budget_ms=5.2)) == (
        "params<=1.6e+06,latency_ms<=5,measured_latency_ms<=5.2")
    assert budgets_tag(dataclasses.replace(plain, measured_budget_reference="mobilevit_xxs",
                                           measured_budget_factor=0.8)) == "measured_latency<=0.8*mobilevit_xxs"


def test_python_values_are_coerced():
    cfg = SearchConfig(name="s", checkpoint="ckpt", params_budget=1500000, export_formats=["onnx", "coreml"])
    assert cfg.params_budget == 1.5e6 and cfg.export_formats == ("onnx", "coreml")
    assert [f.name for f in dataclasses.fields(cfg)][:2] == ["name", "checkpoint"]


@pytest.mark.parametrize("changes, message", [
    ({"evaluators": 0}, "--evaluators must be >= 1"),
    ({"calib_size": 0}, "--calib-size must be >= 1"),
    ({"latency_budget_ms": 3.0}, "needs --lut"),
    ({"measured_latency_budget_ms": 3.0}, "--measured-latency-budget-ms needs --lut"),
    ({"measured_latency_budget_ms": 0.0, "lut": "t.parquet"}, "--measured-latency-budget-ms must be positive"),
    ({"measured_candidates": 0}, "--measured-candidates must be >= 1"),
    ({"measured_budget_reference": "mobilevit_xxs"}, "--measured-budget-reference needs --lut"),
    ({"measured_budget_reference": "mobilevit_xxs", "measured_latency_budget_ms": 3.0, "lut": "t.parquet"},
     "--measured-latency-budget-ms and --measured-budget-reference are both set: expected one"),
    ({"measured_budget_factor": 0.8, "lut": "t.parquet"}, "--measured-budget-factor 0.8 needs --measured-budget-reference"),
    ({"measured_budget_factor": 0.0, "measured_budget_reference": "mobilevit_xxs", "lut": "t.parquet"},
     "--measured-budget-factor must be positive"),
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


def test_yaml_config_then_flags_then_set(tmp_path):
    from autovit_ray.search.cli import config_from_argv

    path = tmp_path / "search.yaml"
    path.write_text("checkpoint: ckpt\nname: from-yaml\npopulation: 8\ngenerations: 4\nparams_budget: 1.2M\n"
                    "export_formats: [onnx]\n")
    cfg = config_from_argv(["--config", str(path), "--population", "50", "--set", "generations=2",
                            "--set", "seed=7"])
    # a flag given equal to its default still overrides the YAML
    assert (cfg.name, cfg.checkpoint, cfg.population, cfg.generations, cfg.seed) == ("from-yaml", "ckpt", 50, 2, 7)
    assert cfg.params_budget == 1.2e6 and cfg.export_formats == ("onnx",)
    assert config_from_argv(["--checkpoint", "c", "--name", "n"]) == SearchConfig(name="n", checkpoint="c")
    assert config_from_argv(["--checkpoint", "c", "--set", "name=n", "--set", "params_budget=900k"]).params_budget == 9e5


@pytest.mark.parametrize("argv, message", [
    (["--set", "name=n"], "no checkpoint: give --checkpoint or set it in --config"),
    (["--config", "missing.yaml"], "search config 'missing.yaml' does not exist"),
    (["--checkpoint", "c", "--name", "n", "--set", "populaton=3"], "unknown config field populaton"),
    (["--checkpoint", "c", "--name", "n", "--set", "params_budget=lots"], "expected a count like 1.8M"),
])
def test_bad_search_config_input_is_one_error(argv, message):
    from autovit_ray.search.cli import config_from_argv

    with pytest.raises(ValueError, match=message):
        config_from_argv(argv)


def test_flags_without_config_still_require_checkpoint_and_name(capsys):
    from autovit_ray.search.cli import config_from_argv

    with pytest.raises(SystemExit) as exit_info:
        config_from_argv(["--name", "n"])
    assert exit_info.value.code == 2 and "required: --checkpoint" in capsys.readouterr().err


def test_paths_become_absolute_before_a_search_runs(tmp_path, monkeypatch):
    """README's search takes paths relative to the project directory; Tune runs trials in folders of
    their own, where those paths meant nothing (every trial failed: 'unable to open database file')."""
    monkeypatch.chdir(tmp_path)
    cfg = SearchConfig(name="c2f", checkpoint="outputs/exp", supernet="xxs", lut="outputs/exp/luts/xxs.parquet",
                       output_dir="outputs/exp", eval_cache="cache.sqlite")
    absolute = cfg.with_absolute_paths()
    assert absolute.checkpoint == str(tmp_path / "outputs" / "exp") and absolute.eval_cache == str(tmp_path / "cache.sqlite")
    assert absolute.lut == str(tmp_path / "outputs/exp/luts/xxs.parquet") and absolute.data_dir is None
    assert dataclasses.replace(absolute, checkpoint=cfg.checkpoint, lut=cfg.lut, output_dir=cfg.output_dir,
                               eval_cache=cfg.eval_cache) == cfg  # nothing else changes
