"""`python -m autovit_ray.pipeline`: config loading, bad input, stage fingerprints, and the retrain stage
on its own (the end-to-end runs, Ctrl-C and resume are in tests/test_integration_demo.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_SETTINGS

from autovit_ray.pipeline import (
    CONFIG_DIR,
    DEFAULT_STAGES,
    STAGES,
    Pipeline,
    PipelineConfig,
    _combine,
    fingerprint,
    load_pipeline_config,
    quantile,
)
from autovit_ray.pipeline.cli import main
from autovit_ray.progress import duration


def test_demo_config_loads_with_every_stage():
    cfg = load_pipeline_config("demo")
    assert cfg.name == "digits-demo"
    assert cfg.stages == DEFAULT_STAGES == tuple(s for s in STAGES if s != "retrain")  # retrain is opt-in
    assert cfg.supernets == ("xxs", "xs", "s")
    assert cfg.search.strategy == "coarse-to-fine"
    assert set(cfg.search.export_formats) == {"torchscript", "onnx", "coreml"}
    # every stage has a time budget, and the demo's add up to the README's 10 minutes
    assert sum(getattr(cfg, s).budget_s for s in cfg.stages) <= 600


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_pipeline_config_builds_its_training_config(path):
    """A config a user copies (demo.yaml, imagefolder.yaml) must load, and so must the training
    config it names with its overrides."""
    from autovit_ray.training.config import load_config

    cfg = load_pipeline_config(str(path))
    train = load_config(cfg.train.config, cfg.train.set)
    assert train.supernets and cfg.search.export_formats


def test_imagefolder_template_is_full_size():
    cfg = load_pipeline_config("imagefolder")
    assert (cfg.search.population, cfg.search.generations) == (50, 20)  # the paper's 1,000 evaluations
    assert cfg.profile.rounds == 10 and cfg.profile.references == 100 and cfg.profile.quiet_cpus >= 0
    assert "kd.kind=none" in cfg.train.set  # imagenet.yaml's teacher needs weights for the user's classes


def test_overrides_reach_nested_fields():
    cfg = load_pipeline_config("demo", ["search.evaluators=1", "train.set=[train.epochs=1]", "output_dir=/x"])
    assert cfg.search.evaluators == 1
    assert cfg.train.set == ("train.epochs=1",)
    assert cfg.experiment_dir.as_posix() == "/x/digits-demo"


@pytest.mark.parametrize("argv, message", [
    (["--config", "no-such-config"], "pipeline config 'no-such-config' does not exist"),
    (["--set", "search.populaton=4"], "did you mean search.population"),
    (["--set", "search.population=many"], "search.population"),
    (["--set", "stages=[train,deploy]"], "stages ['deploy'] are unknown"),
    (["--set", "search.auto_quantile=0"], "auto_quantile"),
    (["--stages", "train,bake"], "stages ['bake'] are unknown"),
    (["--force", "everything"], "--force ['everything'] is unknown"),
])
def test_bad_input_is_one_clear_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


def test_config_without_name_is_refused(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text("supernets: [xxs]\n")
    assert main(["--config", str(path)]) == 2
    assert "has no `name`" in capsys.readouterr().err


def test_print_config_round_trips(capsys, tmp_path):
    assert main(["--print-config", "--set", "search.top_k=2"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert load_pipeline_config(str(path)) == load_pipeline_config("demo", ["search.top_k=2"])


def test_fingerprints_change_with_settings_not_with_budgets():
    a = fingerprint("search", {"population": 8}, "ckpt", 3)
    assert a == fingerprint("search", {"population": 8}, "ckpt", 3)
    assert a != fingerprint("search", {"population": 9}, "ckpt", 3)
    assert a != fingerprint("search", {"population": 8}, "ckpt", 4)  # a later epoch: search again
    from autovit_ray.pipeline import _settings

    cfg = load_pipeline_config("demo")
    slower = load_pipeline_config("demo", ["search.budget_s=9999"])
    assert _settings(cfg.search) == _settings(slower.search)


def test_stage_records_reuse_only_matching_fingerprints(tmp_path):
    cfg = PipelineConfig(name="exp", output_dir=str(tmp_path))
    pipeline = Pipeline(cfg)
    assert pipeline._reusable("profile", "xxs", "abc") is None  # nothing recorded yet
    pipeline._save_record("profile", "xxs", "abc", {"lut": "luts/xxs.parquet"})
    record = json.loads((tmp_path / "exp" / "pipeline" / "profile-xxs.json").read_text())
    assert record["fingerprint"] == "abc" and record["outputs"] == {"lut": "luts/xxs.parquet"}
    assert pipeline._reusable("profile", "xxs", "abc")["outputs"]["lut"] == "luts/xxs.parquet"
    assert pipeline._reusable("profile", "xxs", "other") is None  # settings or inputs changed
    assert Pipeline(cfg, force=["profile"])._reusable("profile", "xxs", "abc") is None


def test_a_train_stage_recorded_before_the_input_profile_rename_is_up_to_date(tmp_path, monkeypatch):
    """The train config's `profile` became `input_profile`; the stage fingerprints hash the old spelling,
    so an experiment the version before made is reused, not trained again."""
    import autovit_ray.checkpoint
    from autovit_ray.training.config import FINGERPRINTED_WHEN_SET, fingerprint_dict

    cfg = load_pipeline_config("demo", [f"output_dir={tmp_path}", "supernets=[xxs]"])
    pipeline = Pipeline(cfg, log=lambda _: None)
    train_cfg = pipeline.train_config()
    assert train_cfg.input_profile == "digits" and "input_profile" in train_cfg.to_dict()
    # what the version before hashed: TrainConfig.to_dict() with the key "profile", without the fields
    # added since (the few-shot ones)
    before = {("profile" if k == "input_profile" else k): v for k, v in train_cfg.to_dict().items()}
    for section, name in FINGERPRINTED_WHEN_SET:
        del before[section][name]
    assert fingerprint_dict(train_cfg) == before
    pipeline._save_record("train", None, fingerprint("train", before), {})
    monkeypatch.setattr(autovit_ray.checkpoint, "find_checkpoint", lambda exp, s, final: exp / s / "epoch_0008")
    assert pipeline.run_train() == "reused"


def test_quantile_picks_an_observed_value():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert quantile(values, 0.5) == 3.0
    assert quantile(values, 1.0) == 5.0
    assert quantile(values, 0.01) == 1.0


def test_search_section_is_search_config_and_checked_before_training():
    import dataclasses

    from autovit_ray.pipeline import PER_SEARCH_FIELDS, SearchStage
    from autovit_ray.search.config import SearchConfig

    shared = [f.name for f in dataclasses.fields(SearchConfig) if f.name not in PER_SEARCH_FIELDS]
    assert [f.name for f in dataclasses.fields(SearchStage)] == [*shared, "auto_quantile", "latency_budget_reference",
                                                                 "latency_budget_factor", "params_budget_factor",
                                                                 "budget_s"]
    assert load_pipeline_config("demo", ["search.params_budget=1.2M"]).search.params_budget == "1.2M"
    with pytest.raises(ValueError, match="search section: --strategy 'coarse_to_fine' is unknown"):
        load_pipeline_config("demo", ["search.strategy=coarse_to_fine"])
    with pytest.raises(ValueError, match="search section: --evaluators must be >= 1"):
        load_pipeline_config("demo", ["search.evaluators=0"])


def test_search_stage_as_mypy_sees_it_matches_the_class_built_at_run_time():
    """SearchStage is built by make_dataclass (SearchConfig's fields are its fields), which mypy cannot
    see, so autovit_ray/pipeline/__init__.py declares a twin under TYPE_CHECKING by hand: every field the
    twin names must exist at run time with the same type, or mypy checks the pipeline against a lie."""
    import ast
    import dataclasses
    import inspect

    import autovit_ray.pipeline as pipeline

    def normal(annotation: str) -> str:  # one spelling per type: "float|None" and "float | None" alike
        return ast.unparse(ast.parse(annotation, mode="eval"))

    twin = next(node for node in ast.walk(ast.parse(inspect.getsource(pipeline)))
                if isinstance(node, ast.ClassDef) and node.name == "SearchStage")
    declared = {node.target.id: normal(ast.unparse(node.annotation)) for node in twin.body
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    built = {f.name: normal(f.type if isinstance(f.type, str) else f.type.__name__)
             for f in dataclasses.fields(pipeline.SearchStage)}
    assert len(declared) >= 10  # the twin was found and read
    assert {name: (annotation, built.get(name)) for name, annotation in declared.items()
            if built.get(name) != annotation} == {}


def test_latency_budget_of_a_reference_is_measured_once_per_table(tmp_path):
    """search.latency_budget_reference: the reference timed beside random subnets on the table's backend,
    converted into table ms, and kept: a rerun (a resume) gets the same budget, so the same search.
    On the deterministic fake backend the table predicts every subnet exactly, so the conversion ratio
    is exactly 1 and the budget is the reference's own fake latency."""
    from test_latency import FakeBackend, fake_latency

    import autovit_ray.latency.backends as backends
    from autovit_ray.latency import BuildConfig, build_table
    from autovit_ray.space import load_space
    from autovit_ray.training.reference import build_reference

    space = load_space("xxs", input_profile="digits")
    table = build_table(space, FakeBackend(), num_classes=10, log=lambda _: None,
                        config=BuildConfig(rounds=1, references=2, folds=2, quiet_cpus=None))
    lut = table.save(tmp_path / "xxs.parquet")
    cfg = load_pipeline_config("demo", [f"output_dir={tmp_path}", "search.latency_budget_reference=mobilevit_xxs"])
    lines: list[str] = []
    pipeline = Pipeline(cfg, log=lines.append)
    with backends.BACKENDS.registered("fake", FakeBackend):
        budget = pipeline.reference_budget(space, table, lut, 10)
    record = json.loads((tmp_path / "digits-demo" / "pipeline" / "budget-xxs.json").read_text())["outputs"]
    reference, _ = build_reference("mobilevit_xxs", 10, tuple(space.input_profile.strides))
    truth = fake_latency(reference, (1, 3, 8, 8))
    assert record["ratio"] == pytest.approx(1.0, rel=1e-9) and record["subnets"] == 12
    assert record["measured_ms"] == pytest.approx(truth, rel=1e-9)
    assert record["table_ms"] == budget == pytest.approx(truth, rel=1e-9) and record["reference"] == "mobilevit_xxs"
    assert any("latency budget" in line and "mobilevit_xxs measured" in line for line in lines)
    lines.clear()
    assert pipeline.reference_budget(space, table, lut, 10) == budget and lines == []
    # a supernet whose smallest subnet the table puts above the reference's latency is not searched
    smallest_ms = table.predict_latency(space.smallest())
    assert pipeline._slower_than_reference(space, lut, smallest_ms) is None
    reason = pipeline._slower_than_reference(space, lut, smallest_ms * 0.9)
    assert reason.startswith(f"its smallest subnet takes {smallest_ms:.4f} table ms, more than mobilevit_xxs's")
    assert [_combine(statuses) for statuses in (["skipped", "reused"], ["skipped", "ran"], ["skipped"])] == \
        ["reused", "ran", "skipped"]


def test_budget_factors_multiply_the_references_latency_and_parameters(tmp_path, monkeypatch):
    """search.latency_budget_factor and params_budget_factor: the budgets as multiples of the reference's
    table-ms latency and of its parameters (built as the comparison builds it); a search's fingerprint
    holds the budgets they give, not the factors, so searches made before the factors existed hold."""
    import autovit_ray.latency
    from autovit_ray.pipeline import search_settings
    from autovit_ray.space import load_space
    from autovit_ray.training.reference import build_reference

    space = load_space("xxs", input_profile="digits")
    lut = tmp_path / "xxs.parquet"
    cfg = load_pipeline_config("demo", [f"output_dir={tmp_path}", "search.latency_budget_factor=0.8",
                                        "search.params_budget_factor=1.4"])
    pipeline = Pipeline(cfg, log=lambda _: None)
    # the reference's latency in table ms (measured in the test above): here 5 ms of a table never read
    monkeypatch.setattr(autovit_ray.latency.LatencyTable, "load", staticmethod(lambda *args, **kwargs: "table"))
    monkeypatch.setattr(pipeline, "reference_budget", lambda space_, table, lut_, classes: 5.0 if table == "table" else 0)
    reference, _ = build_reference("mobilevit_xxs", 10, tuple(space.input_profile.strides))
    params, latency = pipeline.auto_budgets(space, lut, 10)
    assert params == pytest.approx(1.4 * sum(p.numel() for p in reference.parameters())) and latency == pytest.approx(4.0)
    assert search_settings(cfg.search) == search_settings(load_pipeline_config("demo").search)
    slower = load_pipeline_config("demo", ["search.eval_timeout_s=99", "search.budget_s=9999"]).search
    assert search_settings(slower) == search_settings(load_pipeline_config("demo").search)


def test_a_measured_latency_budget_enters_the_search_stages_fingerprint_only_when_set():
    """It is not part of the search's identity (the search resumes and chooses again), but it changes the
    stage's best models, so the stage reruns; unset, the fingerprints of earlier experiments hold."""
    from autovit_ray.pipeline import search_settings

    plain = search_settings(load_pipeline_config("demo").search)
    assert "measured_latency_budget_ms" not in plain and "measured_candidates" not in plain
    measured = load_pipeline_config("demo", ["search.measured_latency_budget_ms=4.5",
                                             "search.measured_candidates=6"]).search
    assert search_settings(measured) == {**plain, "measured_latency_budget_ms": 4.5, "measured_candidates": 6}
    assert "measured_budget_reference" not in plain and "measured_budget_factor" not in plain
    by_reference = load_pipeline_config("demo", ["search.measured_budget_reference=mobilevit_xxs",
                                                 "search.measured_budget_factor=0.8"]).search
    assert search_settings(by_reference) == {**plain, "measured_budget_reference": "mobilevit_xxs",
                                             "measured_budget_factor": 0.8, "measured_candidates": 10}
    with pytest.raises(ValueError, match="search section: --measured-budget-factor 0.8 needs --measured-budget-reference"):
        load_pipeline_config("demo", ["search.measured_budget_factor=0.8"])



def test_a_measured_budget_without_a_latency_table_is_one_error_naming_the_pipeline_keys(tmp_path):
    """Without a table the search falls back to a parameter budget; a measured budget cannot fall back
    (nothing says which backend and device time the candidates), so it stops the stage, naming the keys."""
    from autovit_ray.pipeline import PipelineError

    lines: list[str] = []
    plain = Pipeline(load_pipeline_config("demo", [f"output_dir={tmp_path}"]), log=lines.append)
    assert plain.search_table("xxs") is None and "searching with a parameter budget only" in lines[-1]
    measured = Pipeline(load_pipeline_config("demo", [f"output_dir={tmp_path}", "search.measured_budget_reference="
                                                      "mobilevit_xxs", "search.measured_budget_factor=0.8"]))
    with pytest.raises(PipelineError, match=r"search xxs: search.measured_budget_reference needs a latency table .* "
                                            r"there is none at .*: run the profile stage first, or unset it"):
        measured.search_table("xxs")
    table = plain.experiment.lut("xxs")
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_bytes(b"")  # only its existence is read here
    assert measured.search_table("xxs") == table

@pytest.mark.parametrize("overrides, message", [
    (["search.latency_budget_reference=null", "search.latency_budget_factor=0.8"],
     "need search.latency_budget_reference"),
    (["search.params_budget_factor=0"], "search.params_budget_factor 0.0 is invalid: expected a positive multiple"),
    (["search.params_budget_factor=1.4", "search.params_budget=1.2M"], "both set: expected one"),
])
def test_bad_budget_factors_are_refused_at_load(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_pipeline_config("demo", overrides)


def test_the_cifar10_result_config_is_the_first_results_experiment():
    """configs/pipeline/cifar10-result.yaml (the recipe and budget cross-checks against the benchmark's own
    record are in tests/test_bench_cifar10_result.py)."""
    cfg = load_pipeline_config("cifar10-result")
    train = Pipeline(cfg).train_config()
    assert (cfg.supernets, train.input_profile, train.train.epochs) == (("xxs",), "cifar10", 30)
    assert (train.data.auto_augment, train.data.re_prob, train.data.mixup, train.data.cutmix) == (None, 0, 0, 0)
    assert cfg.profile.resolutions == (32,) and cfg.profile.backend == cfg.compare.backend == "torch-cpu"
    s = cfg.search
    assert (s.latency_budget_reference, s.latency_budget_factor, s.params_budget_factor) == ("mobilevit_xxs", 1.0, 1.4)
    assert cfg.compare.references == ("mobilevit_xxs",) and cfg.compare.train_references
    arm = load_pipeline_config("cifar10-result", ["search.latency_budget_factor=0.8"])
    assert arm.experiment_dir == cfg.experiment_dir  # the 0.8x arm: another search of the same supernet


def test_unknown_budget_reference_is_refused_at_load():
    with pytest.raises(ValueError, match="search.latency_budget_reference 'no_such_net' is not a timm model"):
        load_pipeline_config("demo", ["search.latency_budget_reference=no_such_net"])
    with pytest.raises(ValueError, match="search.measured_budget_reference 'no_such_net' is not a timm model"):
        load_pipeline_config("demo", ["search.measured_budget_reference=no_such_net"])


def test_a_reused_stage_reports_what_it_took_when_it_ran(tmp_path, capsys):
    """The summary (and the report's table) of a rerun give each reused stage the wall time of the run
    that did its work (stage bodies replaced here: this is about the bookkeeping, not the stages)."""
    from autovit_ray.pipeline.cli import print_summary

    cfg = load_pipeline_config("demo", [f"output_dir={tmp_path}"])

    def pipeline_whose_stages(status: str) -> Pipeline:
        pipeline = Pipeline(cfg, log=lambda _: None)
        for stage in STAGES:
            setattr(pipeline, f"run_{stage}", lambda: status)
        return pipeline

    pipeline_whose_stages("ran").run(STAGES)
    first = {s["stage"]: s for s in json.loads((cfg.experiment_dir / "pipeline_summary.json").read_text())["stages"]}
    assert all("last_ran_seconds" not in s for s in first.values())
    again = pipeline_whose_stages("reused")
    timings = again.run(STAGES)
    summary = json.loads((cfg.experiment_dir / "pipeline_summary.json").read_text())
    for stage in summary["stages"]:
        assert stage["status"] == "reused" and stage["last_ran_seconds"] == round(first[stage["stage"]]["seconds"], 1)
        assert stage["last_ran"].endswith("Z")
    print_summary(again, timings)
    assert "(ran in " in capsys.readouterr().out
    assert "last ran (s)" in (cfg.experiment_dir / "report.html").read_text()


def test_each_stage_starts_with_the_pipeline_progress(tmp_path):
    """Elapsed time and what is left by the budgets of the stages still to run (selected ones only)."""
    from autovit_ray.pipeline import pipeline_eta

    assert pipeline_eta(65.0, {"search": 200.0, "compare": 60.0}) == (
        "pipeline: elapsed 1m05s; 2 stage(s) to go (search, compare), about 4m20s left by their budgets")
    cfg = load_pipeline_config("demo", [f"output_dir={tmp_path}"])
    lines: list[str] = []
    pipeline = Pipeline(cfg, log=lines.append)
    for stage in STAGES:
        setattr(pipeline, f"run_{stage}", lambda: "reused")
    pipeline.run(["train", "search", "compare"])
    progress = [line for line in lines if line.startswith("pipeline: elapsed")]
    budgets = {s: getattr(cfg, s).budget_s for s in ("train", "search", "compare")}
    assert [p.split("; ")[1] for p in progress] == [
        f"3 stage(s) to go (train, search, compare), about {duration(sum(budgets.values()))} left by their budgets",
        f"2 stage(s) to go (search, compare), about {duration(budgets['search'] + budgets['compare'])} left by their "
        "budgets",
        f"1 stage(s) to go (compare), about {duration(budgets['compare'])} left by their budgets"]


def test_retrain_trains_each_searched_best_alone_and_compare_picks_it_up(finished_digits_search, ray_session, tmp_path):
    """The retrain stage: the search's best arch through `train --arch` in <experiment>/retrain, its MLflow run
    in the experiment's store; a rerun reuses it; compare takes the checkpoint only while it is the current
    search's best. (The search record and results.json are the session's finished search, copied in.)"""
    import shutil

    from autovit_ray.adapters import mlflow_client
    from autovit_ray.checkpoint import load_supernet, read_meta
    from autovit_ray.space import Arch

    search = finished_digits_search
    cfg = load_pipeline_config("demo", [f"output_dir={tmp_path}", "supernets=[xxs]",
                                        f"train.set=[{', '.join(TINY_TRAIN_SETTINGS)}]",
                                        "retrain.set=[train.epochs=1]"])
    exp = cfg.experiment_dir
    shutil.copytree(search.dir / "search" / search.name, exp / "search" / search.name)
    lines: list[str] = []
    pipeline = Pipeline(cfg, log=lines.append)
    pipeline._save_record("search", "xxs", "fp", {"name": search.name})
    best = Arch.from_dict(search.results["best"][0]["arch"])

    timings = {t.stage: t.status for t in pipeline.run(["retrain"])}
    assert timings == {"train": "not selected", "profile": "not selected", "search": "not selected",
                       "retrain": "ran", "compare": "not selected"}
    checkpoint = Path(pipeline.outputs["retrained"]["xxs"])
    assert checkpoint.is_relative_to(exp / "retrain" / f"xxs-{best.arch_hash[:12]}")
    _, space, trained = load_supernet(checkpoint)
    assert space.size() == 1 and space.largest() == best and read_meta(checkpoint)["epoch"] == trained.train.epochs == 1
    assert trained.data.batch_size == 16  # the train stage's settings, then retrain.set
    assert any(line.startswith("  $ python -m autovit_ray.train --config digits") and "--arch" in line for line in lines)
    client = mlflow_client(f"sqlite:///{exp / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("digits-demo-retrain").experiment_id])
    assert run.data.tags["standalone_arch"] == best.to_json() and run.info.status == "FINISHED"
    assert pipeline.retrained_checkpoints() == [checkpoint]

    again = Pipeline(cfg, log=lines.append)
    assert {t.stage: t.status for t in again.run(["retrain"])}["retrain"] == "reused"
    # another best (a new search): the old stand-alone training is not compared as if it were the new one
    results = exp / "search" / search.name / "results.json"
    data = json.loads(results.read_text())
    data["best"] = data["best"][1:]
    results.write_text(json.dumps(data))
    assert Pipeline(cfg).retrained_checkpoints() == []

    with pytest.raises(ValueError, match=r"retrain.set \['train.epochz=1'\]: .*epochz"):
        Pipeline(load_pipeline_config("demo", [f"output_dir={tmp_path}", "retrain.set=[train.epochz=1]"])).run(
            ["retrain"])


def test_the_logged_train_commands_give_the_stage_configs(tmp_path):
    """The pipeline builds its TrainConfigs directly; the `python -m autovit_ray.train` lines it logs,
    run through the train CLI's own parsing, give the same configs."""
    from autovit_ray.ray_train import standalone_config
    from autovit_ray.space import load_space
    from autovit_ray.train import build_parser, config_from_args

    pipeline = Pipeline(load_pipeline_config("demo", [f"output_dir={tmp_path}", "supernets=[xxs,s]",
                                                      "train.set=[train.epochs=2, data.batch_size=16]",
                                                      "retrain.set=[train.epochs=1]"]))
    parsed = config_from_args(build_parser().parse_args(pipeline.train_argv()))
    assert parsed.to_dict() == pipeline.train_config().to_dict()
    assert pipeline.train_config().supernets == ("xxs", "s") and pipeline.train_config().train.epochs == 2
    arch = load_space("xxs", input_profile="digits").smallest()
    printed, _ = standalone_config(config_from_args(build_parser().parse_args(pipeline.retrain_argv("xxs", arch))),
                                   arch, named=True)
    built, space = pipeline.retrain_config("xxs", arch)
    assert printed.to_dict() == built.to_dict() and space.smallest() == arch
    assert built.train.epochs == 1 and built.mlflow.experiment == "digits-demo-retrain"
