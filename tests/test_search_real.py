"""A small real search: the trained digits supernet, evaluator actors, `tune.run` with
the AutoViT searcher, MLflow parent + child runs, exports, actor failure, resume, bad input."""

from __future__ import annotations

import json
import random
import re

import pytest
import timm
import torch
from conftest import writable_copy

import autovit_ray.models  # noqa: F401 - registers 'autovit' in timm
from autovit_ray.checkpoint import find_checkpoint, load_supernet
from autovit_ray.data import make_splits
from autovit_ray.search.actors import EvaluatorPool
from autovit_ray.search.cli import main, parse_count
from autovit_ray.search.evaluate import EvalSettings, SubnetEvaluator
from autovit_ray.space import Arch

TINY = ["--population", "3", "--generations", "2", "--parents", "2", "--coarse-samples", "40",
        "--skeletons", "2", "--evaluators", "2", "--cpus-per-evaluator", "0.3", "--eval-batches", "1",
        "--calib-batches", "1", "--top-k", "1", "--export-formats", "onnx"]


def test_parse_count():
    assert parse_count("1.8M") == 1.8e6 and parse_count("900k") == 9e5 and parse_count("1500") == 1500
    with pytest.raises(Exception, match="expected a count"):
        parse_count("lots")


def test_evaluator_uses_validation_split_and_keeps_supernet_stats(trained_digits_experiment):
    supernet, space, config = load_supernet(find_checkpoint(trained_digits_experiment.dir, "xxs"))
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    evaluator = SubnetEvaluator(supernet, space, config.data, EvalSettings(max_batches=2, calib_batches=1))
    arch = space.sample(random.Random(0))
    result = evaluator.evaluate(arch)
    assert result["split"] == "val" and 0.0 <= result["val_top1"] <= 100.0 and result["images"] > 0
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())  # a copy was recalibrated
    with pytest.raises(ValueError, match="'val' \\(selection\\), 'val_other' .* or 'test'"):
        evaluator.evaluate_split(arch, "train")
    # the cap is for selection: the final test report reads the whole test split
    test = evaluator.evaluate_split(arch, "test")
    assert result["images"] == 2 * config.data.batch_size
    assert test["images"] == len(make_splits(config.data).test) > result["images"]


def test_search_cli_end_to_end_with_mlflow_and_resume(finished_digits_search, tmp_path):
    from mlflow.tracking import MlflowClient

    search = finished_digits_search
    results = search.results
    assert results["evaluations"] == 6 and all(b["params"] <= 1.6e6 for b in results["best"])
    assert "test_top1" in results["best"][0] and len(results["best"]) == 2
    # every candidate is listed; the reported best are the top of them by validation top-1, in order
    assert len(results["evaluated"]) == 6
    ranked = sorted((e["fitness"] for e in results["evaluated"] if e["fitness"] is not None), reverse=True)
    assert [b["val_top1"] for b in results["best"]] == ranked[:2]
    # The best's accuracy, evaluated again here without Tune, the actors or the cache: the same subnet,
    # recalibrated on the same batch, on the same validation batch.
    supernet, space, config = load_supernet(search.checkpoint)
    again = SubnetEvaluator(supernet, space, config.data, EvalSettings(max_batches=1, calib_batches=1))
    assert again.evaluate(Arch.from_dict(results["best"][0]["arch"]))["val_top1"] == pytest.approx(
        results["best"][0]["val_top1"], abs=1e-6)
    # One checkpoint load per actor; every evaluation went through the pool (6 val + 2 test).
    stats = results["evaluator_stats"]
    assert [s["checkpoint_loads"] for s in stats] == [1, 1]
    assert sum(s["evaluations"] for s in stats) == 6 + 2  # the timing warm-up is not counted
    # no --eval-timeout-s: per-split timeouts derived from the largest arch's measured time (at least 30 s)
    assert set(results["eval_timeouts_s"]) == {"val", "val_other", "test"}
    assert all(t >= 30.0 for t in results["eval_timeouts_s"].values())
    # the evaluation cache holds all of them; nothing of this first run came from it
    assert results["actor_evaluations"] == 6 and results["cache_hits"] == 0 and results["cache_entries"] == 6
    assert results["eval_cache"] == str(search.dir / "search" / "eval_cache.sqlite")
    client = MlflowClient(search.mlflow_uri)
    experiment = client.get_experiment_by_name("autovit-search")
    assert experiment.artifact_location.startswith((search.dir / "mlartifacts").resolve().as_uri())
    parent = client.search_runs([experiment.experiment_id], f"tags.role = 'search' and tags.search_name = '{search.name}'")[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 6 and all("val_top1" in c.data.metrics for c in children)
    assert {"best_archs.json", "pareto_front.json", "accuracy_vs_latency.png", "exports"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    # The reported models are MLflow Models in their candidate runs; the best is the registry's champion.
    best = results["best"][0]
    assert set(best["model_uris"]) == {"pyfunc", "onnx"} and best["measured_latency_ms"] > 0
    assert best["registered"] == {"name": "autovit-digits-test-xxs", "version": 1, "champion": True}
    assert "registered" not in results["best"][1]
    registry = MlflowClient(search.mlflow_uri, registry_uri=search.mlflow_uri)
    version = registry.get_model_version_by_alias("autovit-digits-test-xxs", "champion")
    assert version.tags["arch_hash"] == Arch.from_dict(best["arch"]).arch_hash
    assert version.tags["budgets"] == "params<=1.6e+06" and version.tags["num_classes"] == "10"
    assert float(version.tags["val_top1"]) == pytest.approx(best["val_top1"], abs=1e-3)
    import mlflow

    from autovit_ray.registry import using_tracking_uri

    x = torch.randn(2, 3, 8, 8)
    exported = timm.create_model("autovit", arch=best["arch_json"], num_classes=10, checkpoint_path=best["weights"])
    with torch.no_grad():
        expected = exported.eval()(x).numpy()
    with using_tracking_uri(search.mlflow_uri):
        served = mlflow.pyfunc.load_model(best["model_uris"]["pyfunc"]).predict(x.numpy())
    assert abs(served - expected).max() <= 1e-4
    # Rerun (on a copy: the fixture is shared): the finished search resumes, evaluates nothing new, logs
    # no duplicate children or versions.
    copy = writable_copy(search, tmp_path)
    untouched = (search.dir / "mlflow.db").stat().st_mtime_ns
    assert main(copy.argv) == 0
    assert (search.dir / "mlflow.db").stat().st_mtime_ns == untouched, "the rerun wrote into the shared fixture"
    rerun = json.loads((copy.dir / "search" / copy.name / "results.json").read_text())
    assert rerun["actor_evaluations"] == 0 and rerun["evaluations"] == 6
    client = MlflowClient(copy.mlflow_uri)
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 6
    registry = MlflowClient(copy.mlflow_uri, registry_uri=copy.mlflow_uri)
    assert len(registry.search_model_versions("name = 'autovit-digits-test-xxs'")) == 1


def test_actor_killed_mid_request_is_retried_once(trained_digits_experiment, ray_session):
    """The request is sent to a stopped actor (SIGSTOP: it cannot answer), then the actor is killed:
    the request is lost with it, Ray restarts the actor, and the pool sends the request again."""
    import os
    import signal
    import threading
    import time

    checkpoint = find_checkpoint(trained_digits_experiment.dir, "xxs")
    pool = EvaluatorPool(str(checkpoint), 1, settings=EvalSettings(max_batches=1, calib_batches=1),
                         cpus_per_evaluator=0.3)
    _, space, _ = load_supernet(checkpoint)
    arch = space.smallest()
    old_pid = pool.stats()[0]["pid"]
    os.kill(old_pid, signal.SIGSTOP)
    results: list[dict] = []
    request = threading.Thread(target=lambda: results.append(pool.evaluate(arch)))
    request.start()
    time.sleep(1.0)  # the request is sent; the stopped actor holds it
    assert request.is_alive() and pool.retries == 0
    os.kill(old_pid, signal.SIGKILL)
    request.join(timeout=240)
    assert not request.is_alive() and results and results[0]["arch_hash"] == arch.arch_hash
    assert pool.retries == 1
    stats = pool.stats()[0]
    assert stats["pid"] != old_pid  # a new incarnation answered
    assert stats["evaluations"] == 1 and stats["checkpoint_loads"] == 1
    pool.shutdown()


def test_pool_answers_a_cached_arch_without_its_actors(trained_digits_experiment, ray_session, tmp_path):
    from autovit_ray.checkpoint import read_record
    from autovit_ray.search.cache import EvalCache
    from autovit_ray.search.driver import evaluation_context, evaluation_data

    checkpoint = find_checkpoint(trained_digits_experiment.dir, "xxs")
    settings = EvalSettings(max_batches=1, calib_batches=1)
    cache = EvalCache(tmp_path / "cache.sqlite", evaluation_context(checkpoint, evaluation_data(read_record(checkpoint), {}), settings))
    pool = EvaluatorPool(str(checkpoint), 1, settings=settings, cpus_per_evaluator=0.3, cache=cache)
    _, space, _ = load_supernet(checkpoint)
    arch = space.smallest()
    first = pool.evaluate(arch)
    again = pool.evaluate(arch)
    assert "cached" not in first and again.pop("cached") is True
    same = [k for k in first if k != "latency_ms"]  # no LUT here: NaN, which equals nothing
    assert set(again) == set(first) and {k: again[k] for k in same} == {k: first[k] for k in same}
    assert pool.stats()[0]["evaluations"] == 1  # the second answer did not reach the actor
    pool.evaluate(arch, split="test")  # another split is another entry
    assert pool.stats()[0]["evaluations"] == 2 and len(cache) == 2
    pool.shutdown()


def test_bad_search_inputs(trained_digits_experiment, tmp_path, capsys):
    checkpoint = str(find_checkpoint(trained_digits_experiment.dir, "xxs"))
    base = ["--checkpoint", checkpoint, "--name", "bad", "--output-dir", str(tmp_path)]
    assert main([*base, "--evaluators", "0"]) == 2
    assert "--evaluators must be >= 1" in capsys.readouterr().err
    assert main([*base, "--latency-budget-ms", "3"]) == 2
    assert "needs --lut" in capsys.readouterr().err
    assert main([*base, "--params-budget", "10k", *TINY]) == 2
    assert "budget" in capsys.readouterr().err.lower()
    assert main(["--checkpoint", str(tmp_path), "--name", "x"]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err


CHEAP = ["--strategy", "random", "--max-evaluations", "2", "--evaluators", "1", "--cpus-per-evaluator", "0.3",
         "--eval-batches", "1", "--calib-batches", "1", "--top-k", "1", "--export-formats", "", "--no-register"]


def _search_results(output_dir, name):
    import json

    return json.loads((output_dir / "search" / name / "results.json").read_text())


def _clash_search(checkpoint, out, *extra):
    return main(["--checkpoint", str(checkpoint), "--name", "clash", "--output-dir", str(out), *CHEAP, *extra])


def test_a_search_never_resumes_a_namesake_in_a_shared_tracking_database(trained_digits_experiment, tmp_path,
                                                                          capsys):
    """Two searches named 'clash', from the epoch-1 and the epoch-2 checkpoint, in other output folders
    with one shared tracking database: the second is another search. It fails naming both, or with
    --new-run evaluates afresh; it never takes the first one's candidates (accuracies) as its own."""
    from autovit_ray.checkpoint import list_checkpoints

    epoch1, epoch2 = list_checkpoints(trained_digits_experiment.dir, "xxs")[:2]
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = tmp_path / "first", tmp_path / "second"
    assert _clash_search(epoch1, first, "--mlflow-uri", shared) == 0
    assert _search_results(first, "clash")["actor_evaluations"] == 2
    assert _clash_search(epoch2, second, "--mlflow-uri", shared) == 2
    error = capsys.readouterr().err
    assert "already exists" in error and "--new-run" in error
    assert str(epoch1) in error and str(epoch2) in error  # both sides, by their checkpoints
    assert _clash_search(epoch2, second, "--mlflow-uri", shared, "--new-run") == 0
    fresh = _search_results(second, "clash")
    assert fresh["actor_evaluations"] == 2 and fresh["cache_hits"] == 0
    # the same search again resumes its own parent run: nothing is evaluated again
    assert _clash_search(epoch2, second, "--mlflow-uri", shared) == 0
    assert _search_results(second, "clash")["actor_evaluations"] == 0


def test_a_search_rerun_after_more_training_is_another_search(trained_digits_experiment, tmp_path, capsys):
    """One experiment folder (its tracking database, Tune folder and evaluation cache): 'clash' on the
    epoch-1 checkpoint, then again under the same name once epoch 2 exists."""
    from autovit_ray.checkpoint import list_checkpoints

    epoch1, epoch2 = list_checkpoints(trained_digits_experiment.dir, "xxs")[:2]
    assert _clash_search(epoch1, tmp_path) == 0
    assert _clash_search(epoch2, tmp_path) == 2
    assert "already exists" in capsys.readouterr().err
    assert _clash_search(epoch2, tmp_path, "--new-run") == 0
    rerun = _search_results(tmp_path, "clash")
    assert rerun["actor_evaluations"] == 2 and rerun["cache_hits"] == 0
    assert len(list((tmp_path / "tune").glob("clash-*"))) == 2  # one Tune experiment per search identity


def test_tracker_resume_keeps_finished_children_and_deletes_cut_ones(tmp_path):
    """The MLflow side of a resume, on a SQLite store: a parent with one FINISHED child and one child a
    killed driver left RUNNING. Resuming deletes the RUNNING one (its candidate is logged again when
    it finishes) and reports exactly the finished candidate's result."""
    from mlflow.tracking import MlflowClient

    from autovit_ray.search.tracking import SearchTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space_archs = [Arch.from_dict(a) for a in _two_archs()]
    first = SearchTracker(uri, "resume")
    parent = first.start({"strategy": "random"}, identity="id-1", summary={})
    first.log_candidate({"arch_json": space_archs[0].to_json()},
                        {"top1": 71.5, "top5": 90.0, "params": 1e6, "macs": 2e7, "latency_ms": 1.5}, 0)
    client = MlflowClient(uri)
    cut = client.create_run(first.experiment_id, tags={"mlflow.parentRunId": parent, "role": "candidate",
                                                       "arch_hash": space_archs[1].arch_hash})
    again = SearchTracker(uri, "resume")
    assert again.start({"strategy": "random"}, identity="id-1", summary={}) == parent
    assert again.finished == {space_archs[0].arch_hash: {"top1": 71.5, "top5": 90.0, "params": 1e6, "macs": 2e7,
                                                         "latency_ms": 1.5}}
    assert again.logged == {space_archs[0].arch_hash}
    assert client.get_run(cut.info.run_id).info.lifecycle_stage == "deleted"


def _two_archs() -> list[dict]:
    from autovit_ray.space import load_space

    space = load_space("xxs", input_profile="digits")
    return [space.smallest().to_dict(), space.largest().to_dict()]


def test_a_search_that_fails_after_its_parent_run_started_leaves_nothing_running(trained_digits_experiment,
                                                                                   tmp_path):
    """A failure once the MLflow parent exists (here: an evaluation cache the search cannot create)
    ends the parent FAILED, so that no later resume takes it for a live search."""
    from mlflow.tracking import MlflowClient

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    checkpoint = find_checkpoint(trained_digits_experiment.dir, "xxs")
    with pytest.raises(OSError):
        main(["--checkpoint", str(checkpoint), "--name", "broken", "--output-dir", str(tmp_path), *CHEAP,
              "--eval-cache", str(blocker / "cache.sqlite")])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("autovit-search")
    runs = client.search_runs([experiment.experiment_id], "tags.search_name = 'broken'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_failed_trials_carry_the_error_in_full(ray_session, tmp_path):
    from ray import tune

    from autovit_ray.search.driver import failed_trials

    def broken(config):
        raise ValueError(f"planted failure for arch {config['arch_json']}")

    grid = tune.Tuner(tune.with_resources(broken, {"cpu": 0.1}), param_space={"arch_json": "x"},
                      run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    (failure,) = failed_trials(grid)
    assert failure["arch"] == "x" and "ValueError: planted failure for arch x" in failure["error"]
    assert "raise ValueError" in failure["error"]  # in full (with the stack), not its last line


def test_a_hung_actor_is_restarted_after_the_timeout(trained_digits_experiment, ray_session):
    """An actor that never answers (SIGSTOP) would hang the search: after `timeout_s` the pool kills it,
    Ray restarts it and the request goes again."""
    import os
    import signal

    checkpoint = find_checkpoint(trained_digits_experiment.dir, "xxs")
    pool = EvaluatorPool(str(checkpoint), 1, settings=EvalSettings(max_batches=1, calib_batches=1),
                         cpus_per_evaluator=0.3, timeout_s=5.0)
    _, space, _ = load_supernet(checkpoint)
    arch = space.smallest()
    hung = pool.stats()[0]["pid"]
    os.kill(hung, signal.SIGSTOP)
    result = pool.evaluate(arch)
    assert result["arch_hash"] == arch.arch_hash and pool.retries == 1
    assert pool.stats()[0]["pid"] != hung
    pool.shutdown()
    with pytest.raises(ValueError, match="evaluation timeout must be positive"):
        EvaluatorPool(str(checkpoint), 1, cpus_per_evaluator=0.3, timeout_s=0)


def _fake_table(checkpoint, path, device=None):
    """A latency table of the checkpoint's space on test_latency's deterministic "fake" backend (each model
    priced from its shapes), saved at `path`; `device`: fingerprint keys to record instead of this machine's."""
    from test_latency import FakeBackend

    from autovit_ray.checkpoint import read_record, space_of
    from autovit_ray.latency import BuildConfig, LatencyTable, build_table

    space = space_of(read_record(checkpoint).meta)
    table = build_table(space, FakeBackend(), [space.input_profile.resolutions[0]], num_classes=10,
                        config=BuildConfig(rounds=1, repeats=1, references=8, folds=3, quiet_cpus=None),
                        log=lambda _m: None)
    if device:
        metadata = {**table.metadata, "device_fingerprint": {**table.device, **device}}
        table = LatencyTable(table.space, table.backend, table.rows, metadata)
    table.save(path)
    return path


def test_a_measured_latency_budget_keeps_the_best_archs_that_measure_within_it(trained_digits_experiment,
                                                                               tmp_path, capsys):
    """`--measured-latency-budget-ms` end to end: the best archs by validation timed on the table's backend
    (test_latency's deterministic "fake" one, so the times are known), the best within the budget reported and
    registered, a rerun choosing again from the same evaluations, and the two errors."""
    from mlflow import MlflowClient
    from test_latency import FakeBackend, fake_latency

    from autovit_ray.latency import BACKENDS
    from autovit_ray.models import create_subnet

    checkpoint = find_checkpoint(trained_digits_experiment.dir, "xxs")
    # 6 evaluations (argparse: the last one given), the best registered
    cheap = [*(a for a in CHEAP if a != "--no-register"), "--max-evaluations", "6"]
    with BACKENDS.registered("fake", FakeBackend):
        lut = _fake_table(checkpoint, tmp_path / "fake.parquet")
        base = ["--checkpoint", str(checkpoint), "--name", "measured", "--output-dir", str(tmp_path / "out"),
                "--lut", str(lut), "--measured-candidates", "4", *cheap]
        assert main([*base, "--measured-latency-budget-ms", "1e6"]) == 0
        results = _search_results(tmp_path / "out", "measured")
        selection = results["measured_selection"]
        candidates = selection["candidates"]
        assert selection["backend"] == "fake" and selection["chosen_ranks"] == [1]
        assert [c["rank"] for c in candidates] == [1, 2, 3, 4] and all(c["within_budget"] for c in candidates)
        evaluated = {str(Arch.from_dict(e["arch"])): e for e in results["evaluated"]}
        fitness = [evaluated[c["arch"]]["fitness"] for c in candidates]
        assert fitness == sorted(fitness, reverse=True) == [c["val_top1"] for c in candidates]
        space = load_supernet(checkpoint)[1]
        for c in candidates:  # timed as whole models on the table's backend: the fake backend's price
            arch = Arch.from_dict(evaluated[c["arch"]]["arch"])
            shape = (1, 3, arch.resolution, arch.resolution)
            assert c["measured_ms"] == pytest.approx(fake_latency(create_subnet(arch, 10, space), shape))
        assert results["best"][0]["name"] == candidates[0]["arch"]
        assert "timed on fake for the measured budget" in capsys.readouterr().out
        version = results["best"][0]["registered"]["version"]
        tags = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}").get_model_version(
            "autovit-digits-test-xxs", version).tags
        assert tags["budgets"] == "measured_latency_ms<=1e+06"  # its own champion group

        # Rerun (the finished search resumes, evaluates nothing) with the fastest candidate's time as the
        # budget: the best model is the first within it, not the best by validation.
        measured = [c["measured_ms"] for c in candidates]
        fastest = measured.index(min(measured))
        assert fastest > 0, "the best by validation is also the fastest: pick a seed whose budget excludes it"
        assert main([*base, "--measured-latency-budget-ms", repr(min(measured))]) == 0
        results = _search_results(tmp_path / "out", "measured")
        assert results["actor_evaluations"] == 0 and results["evaluations"] == 6
        assert results["measured_selection"]["chosen_ranks"] == [fastest + 1]
        assert results["best"][0]["name"] == candidates[fastest]["arch"]
        assert [c["within_budget"] for c in results["measured_selection"]["candidates"]] == [
            i == fastest for i in range(4)]

        # The same budget as a factor of a reference model timed beside the candidates (again no evaluation).
        from autovit_ray.compare import budget_reference

        reference, resolution = budget_reference("mobilevit_xxs", space, 10)
        reference_ms = fake_latency(reference, (1, 3, resolution, resolution))
        assert main([*base, "--measured-budget-reference", "mobilevit_xxs",
                     "--measured-budget-factor", repr(min(measured) / reference_ms)]) == 0
        results = _search_results(tmp_path / "out", "measured")
        selection = results["measured_selection"]
        assert results["actor_evaluations"] == 0 and selection["chosen_ranks"] == [fastest + 1]
        assert selection["reference"]["measured_ms"] == pytest.approx(reference_ms)
        assert selection["budget_ms"] == pytest.approx(min(measured))
        assert "which measured" in capsys.readouterr().out
        tags = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}").get_model_version(
            "autovit-digits-test-xxs", results["best"][0]["registered"]["version"]).tags
        assert re.fullmatch(r"measured_latency<=[0-9.e+-]+\*mobilevit_xxs", tags["budgets"])
        # an unknown reference: refused before the search starts
        assert main([*base, "--name", "unknown-reference", "--measured-budget-reference", "mobilevit_xxxl"]) == 2
        assert "unknown timm model 'mobilevit_xxxl' as a reference" in capsys.readouterr().err
        assert not (tmp_path / "out" / "search" / "unknown-reference").exists()

        # Under every candidate: one error naming the fastest candidate.
        capsys.readouterr()
        assert main([*base, "--measured-latency-budget-ms", repr(min(measured) / 2)]) == 2
        err = capsys.readouterr().err
        assert "none of the 4 best candidates measured within --measured-latency-budget-ms" in err
        assert candidates[fastest]["arch"] in err

        # A table profiled on another device: refused before the search starts.
        other = _fake_table(checkpoint, tmp_path / "other.parquet", device={"cpu_model": "Another CPU"})
        assert main(["--checkpoint", str(checkpoint), "--name", "elsewhere", "--output-dir", str(tmp_path / "out2"),
                     "--lut", str(other), "--measured-latency-budget-ms", "5", *cheap]) == 2
        err = capsys.readouterr().err
        assert "this machine is not it (cpu_model: table 'Another CPU'" in err
        assert not (tmp_path / "out2" / "search" / "elsewhere").exists()
