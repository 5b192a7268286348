"""AutoViTSearcher: the search strategies driven by Ray Tune.

The first tests drive the searcher as Tune does (suggest / on_trial_complete) without Ray
running; the last ones run real `tune.run` / `tune.Tuner` experiments on a tiny space, with
fractional CPUs, on the session's Ray instance. Because a generation is bred only once all its
members reported, and bred from the set of results (not their order), a Tune-driven search
evaluates exactly the archs the synchronous `run_search` loop does: the tests check that.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from integration_utils import processes_tagged, wait_for
from ray import cloudpickle
from ray.tune.search import Searcher

from autovit_ray.search import CoarseConfig, CoarseToFineSearch, EvolutionConfig, EvolutionSearch, run_search
from autovit_ray.search.synthetic import make_synthetic_problem, tiny_space
from autovit_ray.search.tune_searcher import AutoViTSearcher, arch_from_config, trial_config
from autovit_ray.space import Arch

# Trainables defined here are shipped to Ray workers by value (workers cannot import this file).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem("xxs", seed=0)


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_problem(tiny_space(), seed=5, num_classes=10)


def evolution(problem, population=10, generations=5, seed=0):
    config = EvolutionConfig(population, generations, num_parents=4, p_depth=0.1, p_block=0.1)
    return EvolutionSearch(problem.space, problem.cost_model(), config, seed=seed)


def fails(arch) -> bool:
    return int(arch.arch_hash, 16) % 4 == 0


def evaluated(strategy):
    return sorted((e.arch.arch_hash, e.fitness) for e in strategy.history)


# -- without Ray running -------------------------------------------------------------------


def test_trial_config_carries_the_arch(problem):
    arch = problem.target
    config = trial_config(arch)
    assert config["arch_json"] == arch.to_json() and config["transformer1_heads"] == arch.transformer_heads[0]
    assert arch_from_config(config) == arch
    del config["arch_json"]
    assert arch_from_config(config) == arch  # from the flat params alone


@pytest.mark.parametrize("concurrency", [1, 3, 10, 25])
def test_any_concurrency_runs_the_same_search_without_deadlock(problem, concurrency):
    """Tune-like driver: keep up to `concurrency` trials live, finish them in random order,
    a quarter of them failing or erroring; more and fewer live trials than the population (10)."""
    searcher = AutoViTSearcher(evolution(problem))
    rng = random.Random(concurrency)
    live: dict[str, tuple[dict, int]] = {}  # trial id -> (config, generation)
    finished, ids = False, 0
    while not finished or live:
        while not finished and len(live) < concurrency:
            ids += 1
            config = searcher.suggest(f"t{ids}")
            if config == Searcher.FINISHED:
                finished = True
            elif config is None:
                assert live, "searcher waits while no trial is running: deadlock"
                break
            else:
                generation = searcher.strategy.generation
                assert all(g == generation for _, g in live.values()), "generations overlap"
                live[f"t{ids}"] = (config, generation)
        if not live:
            continue
        trial_id = rng.choice(sorted(live))
        arch = arch_from_config(live.pop(trial_id)[0])
        if fails(arch):
            searcher.on_trial_complete(trial_id, None, error=rng.random() < 0.5)
        else:
            searcher.on_trial_result(trial_id, {"top1": 0.0, "training_iteration": 1})
            searcher.on_trial_complete(trial_id, {"top1": problem.accuracy(arch)})
    assert searcher.strategy.finished and len(searcher.strategy.history) == 50

    reference = evolution(problem)
    run_search(reference, lambda a: None if fails(a) else problem.accuracy(a))
    assert evaluated(searcher.strategy) == evaluated(reference)
    assert any(not e.ok for e in searcher.strategy.history)


def test_metric_missing_counts_as_failure_and_min_mode_negates(problem):
    searcher = AutoViTSearcher(evolution(problem), metric="loss", mode="min")
    searcher.on_trial_complete("ghost", {"loss": 1.0})  # unknown trial: ignored
    arch_a = arch_from_config(searcher.suggest("a"))
    arch_b = arch_from_config(searcher.suggest("b"))
    arch_c = arch_from_config(searcher.suggest("c"))
    searcher.on_trial_complete("a", {"loss": 0.25})
    searcher.on_trial_complete("b", {"top1": 0.9})  # wrong metric: failed
    searcher.on_trial_result("c", {"loss": 0.5})
    searcher.on_trial_complete("c", {"done": True})  # falls back to the last reported value
    fitness = {e.arch: e.fitness for e in searcher.strategy.history}
    assert fitness == {arch_a: -0.25, arch_b: None, arch_c: -0.5}


def test_save_and_restore_mid_generation_resume_exactly(problem, tmp_path):
    def drive(searcher, stop_after=None):
        told = 0
        while not searcher.strategy.finished:
            batch = {}
            while (config := searcher.suggest(f"t{len(searcher.strategy.history)}-{len(batch)}")) not in (
                    None, Searcher.FINISHED):
                batch[f"t{len(searcher.strategy.history)}-{len(batch)}"] = config
            for tid, config in batch.items():
                if stop_after is not None and told == stop_after:
                    return batch  # interrupted: these trials are still live
                searcher.on_trial_complete(tid, {"top1": problem.accuracy(arch_from_config(config))})
                told += 1
        return {}

    reference = AutoViTSearcher(evolution(problem))
    drive(reference)

    first = AutoViTSearcher(evolution(problem))
    live = drive(first, stop_after=17)  # mid second generation
    path = tmp_path / "searcher.json"
    first.save(str(path))
    json.loads(path.read_text())  # plain JSON

    resumed = AutoViTSearcher(evolution(problem))
    resumed.restore(str(path))
    assert len(resumed.strategy.history) == 17 and len(resumed.strategy.in_flight()) == 3
    for tid, config in live.items():  # Tune re-runs the unfinished trials under their ids
        if tid in resumed._live:
            resumed.on_trial_complete(tid, {"top1": problem.accuracy(arch_from_config(config))})
    drive(resumed)
    assert evaluated(resumed.strategy) == evaluated(reference.strategy)


# -- with Ray Tune ---------------------------------------------------------------------------


@pytest.fixture
def quick_tune(monkeypatch):
    """Tune settings for tiny trials: no per-result logger files, no periodic experiment snapshot
    (these tests do not resume), which on 2 busy cores cuts a trial from ~1 s to ~0.3 s."""
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1000")


def tune_kwargs(tmp_path):
    return dict(storage_path=str(tmp_path), verbose=0, reuse_actors=True)


def test_tune_run_with_two_concurrent_trials_finds_the_optimum(ray_session, quick_tune, tiny, tmp_path):
    from ray import tune

    def make():
        return CoarseToFineSearch(tiny.space, tiny.cost_model(), EvolutionConfig(6, 4, 3), CoarseConfig(200, 3),
                                  seed=5)

    accuracy = tiny.accuracy

    def trainable(config):
        tune.report({"top1": accuracy(arch_from_config(config))})

    searcher = AutoViTSearcher(make())
    analysis = tune.run(tune.with_resources(trainable, {"cpu": 0.1}), search_alg=searcher, metric="top1",
                        mode="max", num_samples=-1, max_concurrent_trials=2, **tune_kwargs(tmp_path))
    assert len(analysis.trials) == 24 and searcher.strategy.finished
    assert analysis.best_config["arch_json"] == tiny.target.to_json()  # the optimum itself
    assert analysis.best_result["top1"] == pytest.approx(tiny.optimum)
    reference = make()
    run_search(reference, tiny.accuracy)
    assert evaluated(searcher.strategy) == evaluated(reference)


def test_tuner_with_more_concurrent_trials_than_population_and_failing_trials(ray_session, quick_tune, tiny,
                                                                              tmp_path):
    from ray import tune

    accuracy = tiny.accuracy

    def trainable(config):
        arch = arch_from_config(config)
        if fails(arch):
            raise RuntimeError("evaluator crashed")
        tune.report({"top1": accuracy(arch)})

    searcher = AutoViTSearcher(evolution(tiny, population=3, generations=3, seed=1))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 0.1}),
        tune_config=tune.TuneConfig(search_alg=searcher, metric="top1", mode="max", num_samples=-1,
                                    max_concurrent_trials=5, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results) == 9 and searcher.strategy.finished
    reference = evolution(tiny, population=3, generations=3, seed=1)
    run_search(reference, lambda a: None if fails(a) else accuracy(a))
    assert evaluated(searcher.strategy) == evaluated(reference)
    assert results.num_errors == sum(not e.ok for e in reference.history) > 0


DRIVER = textwrap.dedent("""
    import gc, os, signal, sys, ray
    from ray import tune
    from ray.tune.execution.tune_controller import TuneController
    from autovit_ray.search import EvolutionConfig, EvolutionSearch
    from autovit_ray.search.synthetic import make_synthetic_problem, tiny_space
    from autovit_ray.search.tune_searcher import AutoViTSearcher, arch_from_config

    address, storage, log = sys.argv[1:4]
    ray.init(address=address, log_to_driver=False)
    problem = make_synthetic_problem(tiny_space(), seed=5, num_classes=10)
    accuracy = problem.accuracy

    def trainable(config):
        arch = arch_from_config(config)
        with open(config["log"], "a") as f:
            f.write(arch.arch_hash + "\\n")
        tune.report({"top1": accuracy(arch)})

    class CrashInSecondGeneration(tune.Callback):
        # The driver dies between two steps of the controller loop, as a real crash would, once the
        # experiment state (searcher included) is saved and uploaded to the storage path: never halfway
        # through Tune's own (non-atomic) state write or its background upload. Tune hands callbacks no
        # handle on its controller, hence gc. Tuner.restore unpickles this callback into the resuming
        # process: only the driver with CRASH_THIS_DRIVER crashes.
        completed = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.completed += 1

        def on_step_end(self, iteration, trials, **info):
            if self.completed >= 6 and os.environ.get("CRASH_THIS_DRIVER"):  # mid second generation
                controller = next(o for o in gc.get_objects() if isinstance(o, TuneController))
                controller.checkpoint(force=True, wait=True)
                os.kill(os.getpid(), signal.SIGKILL)

    config = EvolutionConfig(4, 4, num_parents=2, p_depth=0.1, p_block=0.1)
    searcher = AutoViTSearcher(EvolutionSearch(problem.space, problem.cost_model(), config, seed=2))
    tune.Tuner(
        tune.with_resources(trainable, {"cpu": 0.1}), param_space={"log": log},
        tune_config=tune.TuneConfig(search_alg=searcher, metric="top1", mode="max", num_samples=-1,
                                    max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name="resume", storage_path=storage, verbose=0,
                                  callbacks=[CrashInSecondGeneration()])).fit()
""")


def searcher_state(experiment: Path) -> dict:
    path = max(experiment.glob("searcher-state-*.pkl"))  # the newest session's, as Tune picks it
    return json.loads(path.read_text())["strategy"]


@pytest.mark.integration  # a fault test (two launches): runs in CI's integration step
def test_search_killed_mid_generation_resumes_without_reevaluating(ray_session, tiny, tmp_path):
    from ray import tune

    log = tmp_path / "evaluations.log"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0", "PYTHONPATH": str(ROOT), "CRASH_THIS_DRIVER": "1"}
    address = ray_session.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, str(script), address, str(tmp_path), str(log)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        driver.wait(timeout=120)
    except subprocess.TimeoutExpired:
        driver.kill()
        pytest.fail("the driver did not reach its crash in the second generation in time")
    assert driver.returncode == -signal.SIGKILL, f"the driver exited with {driver.returncode}, not by its crash"
    # The killed driver's trial actors die with it (Ray's fate-sharing), asynchronously: wait until none is
    # left, so no late write to the log can follow the read below.
    wait_for(lambda: not [cmd for cmd in processes_tagged("ray::").values() if cmd.startswith("ray::ImplicitFunc")],
             timeout=60, what="the killed driver's trial actors to exit")
    before = log.read_text().split()

    experiment = tmp_path / "resume"
    saved = searcher_state(experiment)
    assert 0 < len(saved["history"]) < 16, "the kill should land mid-search"
    finished_before = {Arch.from_dict(e["arch"]).arch_hash for e in saved["history"]}

    accuracy = tiny.accuracy

    def trainable(config):
        arch = arch_from_config(config)
        with open(config["log"], "a") as f:
            f.write(arch.arch_hash + "\n")
        tune.report({"top1": accuracy(arch)})

    tuner = tune.Tuner.restore(str(experiment), tune.with_resources(trainable, {"cpu": 0.1}),
                               param_space={"log": str(log)})
    results = tuner.fit()
    after = log.read_text().split()[len(before):]

    final = searcher_state(experiment)
    final_hashes = [Arch.from_dict(e["arch"]).arch_hash for e in final["history"]]
    assert len(final_hashes) == len(set(final_hashes)) == 16 and not final["in_flight"]
    assert not finished_before & set(after), "an arch finished before the kill was evaluated again"
    assert finished_before | set(after) == set(final_hashes)
    assert len(results) == 16 and not results.errors

    config = EvolutionConfig(4, 4, num_parents=2, p_depth=0.1, p_block=0.1)
    reference = EvolutionSearch(tiny.space, tiny.cost_model(), config, seed=2)
    run_search(reference, tiny.accuracy)
    assert sorted(final_hashes) == sorted(e.arch.arch_hash for e in reference.history)
