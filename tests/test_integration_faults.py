"""Fault integration tests: a training worker killed mid-epoch, an evaluator actor killed
mid-search, the search driver killed and rerun. Each runs the real CLI (`python -m autovit_ray.train`
/ `python -m autovit_ray.search`) in a subprocess with its own local Ray under its own temp dir, kills
processes by PID, and checks afterwards that no Ray process of that temp dir is left."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from integration_utils import (
    PYTHON,
    RayTemp,
    mlflow_runs,
    ray_actor_pids,
    search_tune_dir,
    tail,
    tiny_train_argv,
    tune_trial_results,
    wait_for,
)

pytestmark = pytest.mark.integration

EPOCHS, STEPS = 4, 8
SEARCH = ["--params-budget", "10M", "--strategy", "random", "--evaluators", "2", "--cpus-per-evaluator", "0.5",
          "--eval-batches", "1", "--calib-batches", "1", "--top-k", "1", "--export-formats", "torchscript",
          "--num-cpus", "2"]


def _arch_log_epochs(path: Path) -> list[int]:
    """The epoch of every step line of an arch log, in order."""
    if not path.is_file():
        return []
    return [int(line.split()[0]) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def killed_worker_run(tmp_path_factory):
    """`python -m autovit_ray.train` (xxs, 4 epochs of 8 steps, one worker, ray.max_failures=1) whose
    RayTrainWorker is SIGKILLed in the middle of epoch 2, after epoch 1's checkpoint exists."""
    root = tmp_path_factory.mktemp("faults-train")
    with RayTemp() as temp:
        argv = tiny_train_argv(root, "fault", "xxs", "train.arch_log=true", f"train.epochs={EPOCHS}",
                               f"train.max_steps_per_epoch={STEPS}", "ray.cpus_per_worker=1",
                               "ray.max_failures=1")
        log = root / "train.log"
        proc = temp.spawn([PYTHON, "-m", "autovit_ray.train", *argv, "--set", "ray.num_cpus=2"], log)
        exp = root / "fault"
        arch_log = exp / "arch_log" / "xxs" / "rank0.txt"
        wait_for(lambda: (exp / "checkpoints" / "xxs" / "epoch_0001" / "meta.json").is_file(), 300,
                 "epoch 1's checkpoint", alive=proc)
        workers = ray_actor_pids(str(temp.path), "RayTrainWorker")
        assert len(workers) == 1, workers
        # Mid-epoch 2: at least one of its steps started, at least two to go. The worker is frozen before
        # its log is read, so the count read is exactly the count at the kill.
        wait_for(lambda: 1 <= _arch_log_epochs(arch_log).count(2) <= STEPS - 2, 120,
                 "the first steps of epoch 2", interval=0.05, alive=proc)
        os.kill(workers[0], signal.SIGSTOP)
        killed_at_step = _arch_log_epochs(arch_log).count(2)
        os.kill(workers[0], signal.SIGKILL)
        rc = temp.wait(proc, 420, "training after the worker kill", log)
        # The driver shut its Ray down: nothing of this temp dir may be running any more.
        left_after_exit = temp.stop_all()
    return {"rc": rc, "log": log, "exp": exp, "arch_log": arch_log, "killed_pid": workers[0],
            "killed_at_step": killed_at_step, "left_after_exit": left_after_exit, "leftover": temp.leftover}


def test_training_worker_killed_mid_epoch_resumes_from_last_checkpoint(killed_worker_run):
    from autovit_ray.checkpoint import find_checkpoint, load_supernet, read_meta

    run = killed_worker_run
    assert run["rc"] == 0, tail(run["log"])
    output = run["log"].read_text()
    assert "[xxs] resumed after epoch 1" in output  # Ray Train restarted the worker from the checkpoint
    # At most one epoch lost: epoch 1 ran once, epoch 2 was cut at the kill and rerun in full, the rest once.
    epochs = Counter(_arch_log_epochs(run["arch_log"]))
    partial = epochs.pop(2) - STEPS
    assert epochs == {1: STEPS, 3: STEPS, 4: STEPS} and partial == run["killed_at_step"], \
        (epochs, partial, run["killed_at_step"])
    summary = json.loads((run["exp"] / "train_summary.json").read_text())["xxs"]
    assert summary["status"] == "OK" and summary["epoch"] == EPOCHS
    assert summary["worker"]["pid"] not in (None, run["killed_pid"])  # a new worker finished the run
    final = find_checkpoint(run["exp"], "xxs", final=True)
    supernet, space, config = load_supernet(final)
    assert read_meta(final)["epoch"] == EPOCHS and space.name == "xxs" and config.train.epochs == EPOCHS
    runs = mlflow_runs(run["exp"] / "mlflow.db", "fault")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert not run["left_after_exit"], f"Ray processes outlived the driver: {run['left_after_exit']}"
    assert not run["leftover"]


def _search_cmd(exp: Path, out: Path, name: str, max_evaluations: int) -> list[str]:
    return [PYTHON, "-m", "autovit_ray.search", "--checkpoint", str(exp), "--supernet", "xxs", *SEARCH,
            "--max-evaluations", str(max_evaluations), "--name", name, "--output-dir", str(out)]


def _children(out: Path) -> list:
    return mlflow_runs(out / "mlflow.db", "autovit-search", "tags.role = 'candidate'") \
        if (out / "mlflow.db").is_file() else []


def _finished_candidates(out: Path) -> int:
    """Candidates the running search has finished: its complete (FINISHED) MLflow child runs, logged as each trial completes
    (Tune copies trial result files into its storage only every ~10 s). Read with sqlite3, read-only:
    an MlflowClient would create / migrate the database under the search that is creating it."""
    db = out / "mlflow.db"
    if not db.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return con.execute("SELECT COUNT(*) FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid WHERE "
                               "tags.key = 'role' AND tags.value = 'candidate' AND runs.status = 'FINISHED'"
                               ).fetchone()[0]
    except sqlite3.Error:  # not created yet, or locked by the writer: ask again
        return 0


def _search_with_a_signalled_actor(exp: Path, tmp_path: Path, name: str, total: int, sig: int) -> dict:
    """Run a search of `total` candidates and send `sig` to one of its two EvaluatorActor processes after
    the first candidates finished. The search must complete with every candidate evaluated exactly once
    (one Tune result per trial, one MLflow child per arch, all distinct); returns its results.json
    with `signalled_pid`."""
    with RayTemp() as temp:
        log = tmp_path / "search.log"
        proc = temp.spawn(_search_cmd(exp, tmp_path, name, total), log)
        wait_for(lambda: _finished_candidates(tmp_path) >= 2, 400, "the first finished candidates", alive=proc,
                 interval=0.2)
        actors = ray_actor_pids(str(temp.path), "EvaluatorActor")
        assert len(actors) == 2, actors
        done_before = _finished_candidates(tmp_path)
        os.kill(actors[0], sig)
        rc = temp.wait(proc, 400, f"the search after signal {sig} to an actor", log)
        left_after_exit = temp.stop_all()
    assert rc == 0, tail(log)
    assert done_before < total, "the search finished before the signal: nothing was tested"
    assert not left_after_exit and not temp.leftover, (left_after_exit, temp.leftover)
    results = json.loads((tmp_path / "search" / name / "results.json").read_text())
    assert results["evaluations"] == total and results["failed"] == 0
    trial_results = tune_trial_results(search_tune_dir(tmp_path, name))
    assert len(trial_results) == total and len({r["arch_hash"] for r in trial_results}) == total
    children = _children(tmp_path)
    assert len(children) == total and len({c.data.tags["arch_hash"] for c in children}) == total
    return {**results, "signalled_pid": actors[0]}


def test_evaluator_actor_killed_mid_search(killed_worker_run, tmp_path):
    """SIGKILL one EvaluatorActor process after the first candidates finished: Ray restarts it, the pool
    retries the lost request, the search completes with every evaluation counted exactly once."""
    results = _search_with_a_signalled_actor(killed_worker_run["exp"], tmp_path, "actor-kill", 10, signal.SIGKILL)
    # The killed actor was restarted (a new process that loaded the checkpoint again).
    pids = [s["pid"] for s in results["evaluator_stats"]]
    assert results["signalled_pid"] not in pids
    assert all(s["checkpoint_loads"] == 1 for s in results["evaluator_stats"])


def test_evaluator_actor_frozen_mid_search(killed_worker_run, tmp_path):
    """SIGSTOP one EvaluatorActor process after the first candidates finished: it neither answers nor
    dies. The pool's timeout (derived from the measured time of the space's largest arch, not a
    constant) expires, the actor is killed and restarted, the request is sent again, and the search
    completes with every evaluation counted exactly once."""
    results = _search_with_a_signalled_actor(killed_worker_run["exp"], tmp_path, "actor-freeze", 10, signal.SIGSTOP)
    timeouts = results["eval_timeouts_s"]
    assert set(timeouts) == {"val", "val_other", "test"} and all(t >= 30.0 for t in timeouts.values())
    pids = [s["pid"] for s in results["evaluator_stats"]]
    assert results["signalled_pid"] not in pids, "the frozen actor was never replaced"


def _trials_in_flight(out: Path, name: str) -> int:
    """Trials of search `name`'s Tune experiment that started (their folder exists) and reported nothing yet."""
    found = sorted((out / "tune").glob(f"{name}-*"))
    if not found:
        return 0
    return sum(1 for trial in found[0].iterdir() if trial.is_dir() and not (
        (trial / "result.json").is_file() and (trial / "result.json").stat().st_size))


def test_search_driver_killed_and_rerun_resumes(killed_worker_run, tmp_path):
    """SIGKILL the `python -m autovit_ray.search` driver after some candidates finished and while others
    are in flight, stop what it left, rerun the same command (same --name): `Tuner.restore` resumes it,
    the cut trials run again, the search finishes, and no finished candidate is evaluated again."""
    total = 10
    exp = killed_worker_run["exp"]
    with RayTemp() as temp:
        log = tmp_path / "search1.log"
        proc = temp.spawn(_search_cmd(exp, tmp_path, "driver-kill", total), log)
        wait_for(lambda: _finished_candidates(tmp_path) >= 3 and _trials_in_flight(tmp_path, "driver-kill") >= 1,
                 400, "3 finished candidates and one in flight", alive=proc, interval=0.2)
        in_flight = _trials_in_flight(tmp_path, "driver-kill")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        logged_before = {c.data.tags["arch_hash"] for c in _children(tmp_path) if c.info.status == "FINISHED"}
        assert 3 <= len(logged_before) < total, "the search finished before the kill: nothing was tested"
        assert in_flight >= 1, "no trial was in flight at the kill"
        temp.stop_all()  # what the killed driver's local Ray left behind (workers, raylet, GCS), by PID

        log2 = tmp_path / "search2.log"
        rerun_start = time.time()
        rc = temp.run(_search_cmd(exp, tmp_path, "driver-kill", total), log2, timeout=420)
        left_after_exit = temp.stop_all()
    assert rc == 0, tail(log2)
    assert "Restoring the run" in log2.read_text(errors="replace")  # Tuner.restore, not a fresh start
    results = json.loads((tmp_path / "search" / "driver-kill" / "results.json").read_text())
    assert results["evaluations"] == total and results["failed"] == 0
    # The rerun's trial results: evaluated by the pool, or (`cached`) reported from the MLflow child of a
    # candidate the killed run finished after Tune's last experiment checkpoint.
    rerun = [r for r in tune_trial_results(search_tune_dir(tmp_path, "driver-kill")) if r["timestamp"] >= int(rerun_start)]
    evaluated = Counter(r["arch_hash"] for r in rerun if not r.get("cached"))
    assert not set(evaluated) & logged_before, "finished candidates were evaluated again"
    assert all(n == 1 for n in evaluated.values()), evaluated
    assert len(evaluated) <= total - len(logged_before)  # it resumed: no fresh start
    # Every evaluation the rerun's actors made is one of those (plus the top-1's test-split report).
    assert sum(s["evaluations"] for s in results["evaluator_stats"]) == len(evaluated) + 1
    children = _children(tmp_path)
    assert len(children) == total and len({c.data.tags["arch_hash"] for c in children}) == total
    assert all(c.info.status == "FINISHED" and "val_top1" in c.data.metrics for c in children)
    assert logged_before <= {c.data.tags["arch_hash"] for c in children}
    parents = mlflow_runs(tmp_path / "mlflow.db", "autovit-search", "tags.role = 'search'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the rerun reused the parent
    assert not left_after_exit and not temp.leftover, (left_after_exit, temp.leftover)
