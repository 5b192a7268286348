"""`python -m autovit_ray.compare`: a finished search's best models from MLflow against
timm reference models, measured on one backend; table, CSV / JSON / plot, MLflow run "compare"."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time

import pytest
import timm
import torch
from conftest import tiny_train_argv, writable_copy, write_toy_space
from torch import nn

from autovit_ray.compare import (
    NOT_TRAINED,
    CompareConfig,
    ExperimentFacts,
    compare_argv,
    compare_experiment,
    input_profile_strides,
    reference_candidates,
    reference_latency_budget,
    registered_candidates,
    runnable_resolution,
    search_space,
    searched_candidates,
    standalone_candidates,
)
from autovit_ray.compare.cli import build_parser, config_from_args, main
from autovit_ray.space import Arch, load_space


def test_compare_table_files_and_mlflow_run(finished_digits_search, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    search = writable_copy(finished_digits_search, tmp_path)  # this test logs a compare run
    # A "trained" reference: a saved state dict of the same architecture (fresh weights are enough
    # to show the test split is read); test_resnet stays untrained.
    reference = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=10)
    weights = tmp_path / "mobilevit_xxs.pt"
    torch.save({"model": reference.state_dict(), "epoch": 1}, weights)
    out = tmp_path / "cmp"
    started_ms = int(time.time() * 1000)  # this test's compare run, whatever other tests logged before
    rows = compare_experiment(CompareConfig(str(search.dir), references=("test_resnet", "mobilevit_xxs"),
                                            reference_checkpoints=(("mobilevit_xxs", str(weights)),), repeats=4,
                                            rounds=2, out=str(out), eval_batches=2))
    printed = capsys.readouterr().out

    best = search.results["best"]
    assert [r["model"] for r in rows[:2]] == [f"{search.name}-top1", f"{search.name}-top2"]
    for row, reported in zip(rows[:2], best):
        assert row["kind"] == "searched" and row["resolution"] == 8
        assert row["test_top1"] == pytest.approx(reported["test_top1"])
        assert row["params"] == reported["params"] and row["macs"] == reported["macs"]
        assert row["arch_hash"] == Arch.from_dict(reported["arch"]).arch_hash
    resnet, mobilevit = rows[2], rows[3]
    assert resnet["test_top1"] == NOT_TRAINED and resnet["latency_ratio"] == 1.0  # the first reference
    assert mobilevit["kind"] == "reference" and mobilevit["model"].startswith("mobilevit_xxs (digits strides)")
    assert isinstance(mobilevit["test_top1"], float) and 0.0 <= mobilevit["test_top1"] <= 100.0
    assert mobilevit["params"] == sum(p.numel() for p in reference.parameters())
    for row in rows:
        assert row["latency_ms"] > 0 and row["macs"] > 0 and row["samples"] == 4
        assert row["latency_ratio"] == pytest.approx(row["latency_ms"] / resnet["latency_ms"])
        assert row["model"] in printed
    assert NOT_TRAINED in printed

    with open(out / "compare.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == [r["model"] for r in rows]
    assert json.loads((out / "compare.json").read_text())["backend"] == "torch-cpu"
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"

    client = MlflowClient(search.mlflow_uri)
    experiment = client.get_experiment_by_name("autovit-search")
    (run,) = client.search_runs([experiment.experiment_id],
                                f"tags.role = 'compare' and attributes.start_time >= {started_ms}")
    assert run.info.run_name == "compare" and run.info.status == "FINISHED"
    assert run.data.params["backend"] == "torch-cpu" and run.data.params["references"] == "test_resnet,mobilevit_xxs"
    assert {"compare.csv", "compare.json", "compare.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.metrics[f"{search.name}-top1/latency_ms"] == pytest.approx(rows[0]["latency_ms"])


def test_registered_models_join_the_comparison(finished_digits_search, tmp_path):
    """compare --models models:/...: the registered champion is built from its logged arch + weights
    (registered_candidates only: compare_experiment would log a second compare run into the fixture)."""
    search = finished_digits_search
    best = search.results["best"][0]
    facts = ExperimentFacts()
    (candidate,) = registered_candidates(["models:/autovit-digits-test-xxs@champion"], search.mlflow_uri,
                                         tmp_path, facts)
    assert candidate.name == "autovit-digits-test-xxs v1" and candidate.kind == "searched"
    assert candidate.extra["arch_hash"] == Arch.from_dict(best["arch"]).arch_hash
    assert candidate.test_top1 == pytest.approx(best["test_top1"], abs=1e-3)
    assert (facts.num_classes, facts.supernet, facts.input_profile) == (10, "xxs", "digits")
    exported = timm.create_model("autovit", arch=best["arch_json"], num_classes=10, checkpoint_path=best["weights"])
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(candidate.model(x), exported.eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match="classifies 10 classes; the other models here 100"):
        registered_candidates(["models:/autovit-digits-test-xxs/1"], search.mlflow_uri, tmp_path / "b",
                              ExperimentFacts(num_classes=100))


def test_standalone_training_joins_the_comparison(finished_digits_search, ray_session, tmp_path):
    """compare --standalone: the search's best arch trained alone (`train --arch <search dir>`) is tested on
    the experiment's test split with its own BatchNorm statistics and named after its searched twin
    (standalone_candidates only: compare_experiment would log a second compare run into the fixture)."""
    from autovit_ray.adapters import mlflow_client
    from autovit_ray.checkpoint import META_FILE, STATE_FILE, find_checkpoint, load_supernet
    from autovit_ray.compare import _test_images, _test_loader
    from autovit_ray.evaluation import evaluate
    from autovit_ray.train import main as train_main

    search = finished_digits_search
    best = Arch.from_dict(search.results["best"][0]["arch"])
    argv = tiny_train_argv(tmp_path, "alone", "xxs", "train.epochs=1")
    assert train_main([*argv, "--arch", str(search.dir / "search" / search.name)]) == 0
    checkpoint = find_checkpoint(tmp_path / "alone", "xxs", final=True)

    client = mlflow_client(search.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("autovit-search").experiment_id],
                              "tags.role = 'search' and attributes.status = 'FINISHED'")
    searched, facts = searched_candidates(client, runs, tmp_path / "dl")
    (candidate,) = standalone_candidates([checkpoint], facts, searched, None, None)
    assert candidate.name == f"{search.name}-top1-standalone" and candidate.kind == "searched"
    assert candidate.extra["arch_hash"] == best.arch_hash and candidate.resolution == best.resolution
    assert candidate.lut_latency_ms == searched[0].lut_latency_ms
    assert "trained stand-alone from scratch (1 of 1 epochs)" in candidate.note
    supernet, _, _ = load_supernet(checkpoint)  # its own BatchNorm statistics: no recalibration
    score = evaluate(supernet.get_active_subnet(best), _test_loader(facts, None), resolution=best.resolution,
                     device=torch.device("cpu"))
    assert score.seen == _test_images(facts, None) and candidate.test_top1 == pytest.approx(score.top1)

    with pytest.raises(ValueError, match="with .* subnets: expected one of `python -m autovit_ray.train --arch`"):
        standalone_candidates([search.checkpoint], facts, searched, None, None)
    with pytest.raises(ValueError, match="has 10 classes under input profile 'digits'; the searched models have 100"):
        standalone_candidates([checkpoint], dataclasses.replace(facts, num_classes=100), searched, None, None)
    with pytest.raises(ValueError, match="is not an autovit-ray supernet checkpoint"):
        standalone_candidates([tmp_path], facts, searched, None, None)
    # The same checkpoint as if trained with data.split_seed=7: its state and meta.json hold the training
    # config the check reads (training a second model for it took ~25 s of the unit suite)
    shutil.copytree(tmp_path / "alone", tmp_path / "other-splits")
    other_splits = find_checkpoint(tmp_path / "other-splits", "xxs", final=True)
    meta = json.loads((other_splits / META_FILE).read_text())
    meta["config"]["data"]["split_seed"] = 7
    (other_splits / META_FILE).write_text(json.dumps(meta))
    state = torch.load(other_splits / STATE_FILE, weights_only=True)
    state["config"]["data"]["split_seed"] = 7
    torch.save(state, other_splits / STATE_FILE)
    with pytest.raises(ValueError, match="expected the same data set and splits"):
        standalone_candidates([other_splits], facts, searched, None, None)


class _NeedsMultipleOf32(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32:
            raise RuntimeError(f"input size {x.shape[-1]} not divisible by 32")
        return x.mean(dim=(2, 3))


def test_a_reference_is_not_built_without_the_experiments_class_count():
    # timm drops a None num_classes and would build its 1000-class default without a word
    with pytest.raises(ValueError, match="cannot build reference mobilevit_xxs: .* number of classes"):
        reference_candidates(["mobilevit_xxs"], {}, ExperimentFacts(), 32, None, None)


def test_reference_measured_at_smallest_supported_resolution():
    assert runnable_resolution(_NeedsMultipleOf32(), 64) == (64, "")
    resolution, note = runnable_resolution(_NeedsMultipleOf32(), 8)
    assert resolution == 32 and "measured at 32 px" in note and "not divisible by 32" in note


def test_a_searchs_models_are_rebuilt_in_the_space_it_ran_in(tmp_path):
    """A search in a space of the user's own (the toy dsconv space): its checkpoint's space; with the
    checkpoint gone, only a built-in space whose fingerprint is the run's, else one clear error."""
    from autovit_ray.checkpoint import save_checkpoint
    from autovit_ray.training.loop import space_info

    toy_path = write_toy_space(tmp_path)
    toy = load_space(toy_path)
    checkpoint = save_checkpoint(tmp_path / "epoch_0001", {"epoch": 1, "num_classes": 10, "config": {},
                                                          "space": space_info(toy, str(toy_path))})
    params = {"supernet": "toy", "profile": "digits", "space_fingerprint": toy.fingerprint(),
              "checkpoint": str(checkpoint)}
    assert search_space(params, "s").fingerprint() == toy.fingerprint()
    moved = {**params, "checkpoint": str(tmp_path / "moved")}
    with pytest.raises(ValueError, match=rf"search 's' ran in space 'toy' \(fingerprint {toy.fingerprint()}\), "
                                         "which is not the built-in space of that name, and its checkpoint"):
        search_space(moved, "s")
    xxs = load_space("xxs", input_profile="digits")
    builtin = {**moved, "supernet": "xxs", "space_fingerprint": xxs.fingerprint()}
    assert search_space(builtin, "s").fingerprint() == xxs.fingerprint()
    with pytest.raises(ValueError, match="not the built-in space of that name"):
        search_space({**builtin, "space_fingerprint": toy.fingerprint()}, "s")
    # a reference takes the strides of the space itself, which need not be a built-in one
    facts = ExperimentFacts(num_classes=10, input_profile="digits", supernet="toy", space=toy)
    assert input_profile_strides(facts) == tuple(toy.input_profile.strides)


def test_the_reference_budget_times_subnets_of_the_space_it_is_given(tmp_path):
    """On the deterministic fake backend a table predicts the subnets of its own space exactly: the
    LUT / measured ratio is 1 only if the timed subnets are built in the toy space, not a namesake."""
    from test_latency import FakeBackend

    import autovit_ray.latency.backends as backends
    from autovit_ray.latency import BuildConfig, build_table

    toy = load_space(write_toy_space(tmp_path))
    space = toy.restricted_to(toy.smallest())  # one subnet: a small table, still a space of the user's own
    table = build_table(space, FakeBackend(), num_classes=10, log=lambda _: None,
                        config=BuildConfig(rounds=1, references=2, folds=2, quiet_cpus=None))
    with backends.BACKENDS.registered("fake", FakeBackend):
        budget = reference_latency_budget("mobilevit_xxs", table, space, 10, subnets=3, rounds=1, repeats=1)
    assert budget.ratio == pytest.approx(1.0, rel=1e-9) and budget.subnets == 3


def test_bad_compare_inputs(finished_digits_search, tmp_path, capsys):
    def fails(*argv: str) -> str:
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
        return err

    exp = str(finished_digits_search.dir)
    assert "not a directory" in fails("--experiment", "no-such-experiment")
    assert "no mlflow.db" in fails("--experiment", str(tmp_path))
    assert "no MLflow experiment 'nope'" in fails("--experiment", "nope", "--mlflow-uri",
                                                   finished_digits_search.mlflow_uri, "--out", str(tmp_path))
    assert "unknown timm model 'no_such_net'" in fails("--experiment", exp, "--references", "no_such_net")
    assert "expects NAME=PATH" in fails("--experiment", exp, "--reference-checkpoint", "mobilevit_xxs")
    assert "no file" in fails("--experiment", exp, "--reference-checkpoint", f"mobilevit_xxs={tmp_path}/x.pt")
    assert "no finished search named ['other']" in fails("--experiment", exp, "--searches", "other")
    assert "unknown latency backend" in fails("--experiment", exp, "--backend", "tpu", "--references", "")


def test_the_logged_compare_command_gives_the_same_config(tmp_path):
    """The pipeline logs `compare_argv(cfg)`; the CLI parses it back into the same CompareConfig."""
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    cfg = CompareConfig(str(tmp_path / "exp"), mlflow_uri="sqlite:///x.db", references=("mobilevit_xxs", "test_resnet"),
                        reference_checkpoints=(("mobilevit_xxs", str(weights)),), backend="onnxruntime", repeats=7,
                        rounds=3, seed=2, out=str(tmp_path / "out"), searches=("a", "b"), data_dir="/d",
                        eval_batches=4, models=("models:/m@champion",), train_references=True,
                        standalone=(str(tmp_path / "c1"), str(tmp_path / "c2")))
    assert config_from_args(build_parser().parse_args(compare_argv(cfg))) == cfg
    default = CompareConfig("exp")
    assert config_from_args(build_parser().parse_args(compare_argv(default))) == default
    with pytest.raises(ValueError, match="--repeats and --rounds must be >= 1"):
        CompareConfig("exp", rounds=0)
