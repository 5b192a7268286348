"""Rank fidelity (`python -m autovit_ray.fidelity`): the draw, the statistics, and a whole run on tiny
digits supernets (a stand-alone truth trained through train --arch's code path, resumed, refused with
another recipe)."""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from autovit_ray.fidelity import (
    FidelityConfig,
    calibration_noise,
    draw_subnets,
    fidelity_stats,
    run,
    truth_ceiling,
)
from autovit_ray.fidelity.cli import main
from autovit_ray.plan import count_params
from autovit_ray.space import load_space


def test_draw_spreads_over_the_range_and_fills_the_band():
    space = load_space("xxs", input_profile="digits")
    cost = lambda a: float(count_params(a, 10, space))  # noqa: E731
    pool = sorted(cost(space.sample(__import__("random").Random(i))) for i in range(200))
    band = (pool[50], pool[150])
    archs = draw_subnets(space, 8, seed=0, cost=cost, band=band, in_band=5, pool=500)
    assert len({a.arch_hash for a in archs}) == 8
    assert sum(band[0] <= cost(a) <= band[1] for a in archs) >= 5
    assert [a.arch_hash for a in archs] == [a.arch_hash for a in draw_subnets(space, 8, 0, cost, band, 5, pool=500)]
    assert [a.arch_hash for a in archs] != [a.arch_hash for a in draw_subnets(space, 8, 1, cost, band, 5, pool=500)]
    with pytest.raises(ValueError, match="holds 0 of .* fewer than the 2 asked for"):
        draw_subnets(space, 4, 0, cost, band=(1.0, 2.0), in_band=2, pool=200)


def test_fidelity_statistics_by_hand():
    truth = [60.0, 62.0, 64.0, 66.0, 68.0]
    same = fidelity_stats([70, 71, 72, 73, 74], truth, macs=[1, 2, 3, 4, 5], params=[5, 4, 3, 2, 1],
                          in_band=[False, True, True, True, False], resamples=200, seed=0)
    assert same["kendall_tau"] == 1.0 and same["tau_in_band"] == 1.0 and same["in_band"] == 3
    assert same["tau_macs"] == 1.0 and same["tau_params"] == -1.0
    # as good as MACs on every resample: the paired difference is exactly 0
    assert same["tau_over_macs"] == 0.0 and same["tau_over_macs_ci"] == [0.0, 0.0]
    assert same["top3_overlap"] == 3 and same["regret"] == 0.0 and same["inherited_span"] == 4.0
    flipped = fidelity_stats([74, 73, 72, 71, 70], truth, [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [True] * 5, 200, 0)
    assert flipped["kendall_tau"] == -1.0 and flipped["regret"] == 8.0 and flipped["top3_overlap"] == 1
    # -2 on every resample of 5 items (both taus at their bounds): the bootstrap cannot bound it
    assert flipped["tau_over_macs"] == -2.0 and flipped["tau_over_macs_ci"] is None
    constant_macs = fidelity_stats([70, 71, 72, 73, 74], truth, [3] * 5, [1, 2, 3, 4, 5], [True] * 5, 200, 0)
    assert constant_macs["tau_macs"] is None and constant_macs["tau_over_macs"] is None
    assert constant_macs["tau_over_macs_ci"] is None


def test_calibration_noise_by_hand():
    # the same four subnets on two calibration subsets: the last two swap places
    noise = calibration_noise([[70.0, 71.0, 72.0, 73.0], [70.0, 71.0, 73.0, 72.0]], [60.0, 61.0, 62.0, 63.0],
                              [False, True, True, True])
    assert noise["calib_draws"] == 2 and noise["inherited_draws"] == [[70.0, 71.0, 73.0, 72.0]]
    assert noise["tau_between_draws"] == pytest.approx(4 / 6)  # 5 of 6 pairs agree, 1 is swapped
    assert noise["draw_sd"] == pytest.approx(0.5)  # variances 0, 0, 0.5, 0.5: their mean's root
    assert noise["tau_averaged"] == pytest.approx(5 / 30 ** 0.5)  # averaged: the last two tie (tau-b)
    assert noise["tau_in_band_averaged"] == pytest.approx(2 / 6 ** 0.5)
    assert calibration_noise([[1.0, 2.0, 3.0]] * 3, [1.0, 2.0, 3.0], [True] * 3)["tau_between_draws"] == 1.0


def test_the_truths_ceiling_needs_its_seed_noise_and_three_subnets():
    from autovit_ray.stats import noise_ceiling_tau

    subnets = [{"val_top1": 78.0 + 0.5 * i, "in_band": i % 2 == 0} for i in range(7)]
    ceiling = truth_ceiling(subnets, 0.4)
    assert ceiling == {"tau_ceiling": noise_ceiling_tau([78.0 + 0.5 * i for i in range(7)], 0.4),
                       "tau_ceiling_in_band": noise_ceiling_tau([78.0, 79.0, 80.0, 81.0], 0.4)}
    assert 0.0 < ceiling["tau_ceiling"] < ceiling["tau_ceiling_in_band"] < 1.0  # the band's subnets lie further apart
    assert truth_ceiling(subnets, None) == {"tau_ceiling": None, "tau_ceiling_in_band": None}  # no repeats
    assert truth_ceiling(subnets[:4], 0.4)["tau_ceiling_in_band"] is None  # 2 in the band: no order to speak of


def test_bad_fidelity_settings():
    with pytest.raises(ValueError, match="at least 4 subnets"):
        FidelityConfig(checkpoints=("x",), truth="t", subnets=3)
    with pytest.raises(ValueError, match="--in-band needs --band-ms and --lut"):
        FidelityConfig(checkpoints=("x",), truth="t", in_band=2)
    with pytest.raises(ValueError, match="--calib-size 0: expected a positive number"):
        FidelityConfig(checkpoints=("x",), truth="t", calib_size=0)
    with pytest.raises(ValueError, match="--calib-draws 0: expected 1"):
        FidelityConfig(checkpoints=("x",), truth="t", calib_draws=0)


def test_inherited_scores_recalibrate_on_as_many_images_as_asked(tmp_path):
    import dataclasses

    from autovit_ray.checkpoint import load_supernet
    from autovit_ray.fidelity import inherited_top1
    from autovit_ray.search.evaluate import EvalSettings, SubnetEvaluator

    checkpoint = _supernet_checkpoint(tmp_path, "xxs", 1)
    supernet, space, config = load_supernet(checkpoint)
    archs = [space.largest(), space.smallest()]
    assert config.data.calib_size == 32
    assert inherited_top1(checkpoint, archs, None) == inherited_top1(checkpoint, archs, None, 32)
    wider = SubnetEvaluator(supernet, space, dataclasses.replace(config.data, calib_size=96), EvalSettings())
    more = inherited_top1(checkpoint, archs, None, 96)
    assert more == [wider.evaluate(a)["val_top1"] for a in archs]
    assert more != inherited_top1(checkpoint, archs, None)  # other statistics, other scores (seeded: stable)


def test_the_truth_trains_as_many_runs_at_once_as_the_cluster_holds(ray_session, tmp_path, monkeypatch):
    """Two at once on the session's 2 CPUs (a CPU each), each with the plan's CPUs and threads; finished
    runs are not trained again; --parallel 1 trains one at a time."""
    import random
    import threading
    import time
    from pathlib import Path

    from autovit_ray import fidelity
    from autovit_ray.training.config import load_config

    space = load_space("xxs", input_profile="digits")
    archs = [space.largest(), space.smallest(), space.sample(random.Random(0))]
    runs = [(archs[0], 0), (archs[0], 1), (archs[1], 0), (archs[2], 0)]
    recipe = load_config("digits", ["ray.torch_threads=1", "ray.use_gpu=false"])
    lock, active, seen = threading.Lock(), [0], []

    def train_standalone(recipe, arch, truth, seed, address, mlflow_uri, open_runs):  # stands in for a Ray Train run
        with lock:
            active[0] += 1
            seen.append((arch.arch_hash, seed, active[0], recipe.ray.cpus_per_worker, recipe.ray.torch_threads))
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return Path(f"{arch.arch_hash}-s{seed}")

    finished = Path("already")
    scored = []

    def standalone_top1(checkpoint, arch, split="val"):  # each split scored once per finished run
        scored.append((str(checkpoint), split))
        return {"val": 60.0, "test": 50.0}[split] + len(str(checkpoint)) / 100

    monkeypatch.setattr(fidelity, "train_standalone", train_standalone)
    monkeypatch.setattr(fidelity, "standalone_top1", standalone_top1)
    monkeypatch.setattr(fidelity, "finished_standalone",
                        lambda recipe, arch, truth, seed: finished if (arch, seed) == runs[0] else None)
    messages = []
    cfg = FidelityConfig(checkpoints=("x",), truth=str(tmp_path))
    trained = fidelity.train_truth(recipe, runs, tmp_path, cfg, messages.append)
    assert len(trained) == 4 and sorted(scored) == sorted(
        [("already", "val"), ("already", "test")] + [(f"{a.arch_hash}-s{seed}", split) for a, seed in runs[1:]
                                                     for split in ("val", "test")])
    last = trained[(archs[2].arch_hash, 0)]
    assert last == {"arch": archs[2].to_dict(), "seed": 0, "epochs": recipe.train.epochs,
                    "val_top1": 60.0 + len(f"{archs[2].arch_hash}-s0") / 100,
                    "test_top1": 50.0 + len(f"{archs[2].arch_hash}-s0") / 100}
    assert fidelity.read_results(tmp_path) == {fidelity.run_name(a, seed): trained[(a.arch_hash, seed)]
                                               for a, seed in runs}  # every run in the ledger, both threads'
    assert [s[:2] for s in seen] == [(a.arch_hash, seed) for a, seed in runs[1:]]  # in order, the finished skipped
    assert max(s[2] for s in seen) == 2 and {s[3:] for s in seen} == {(1.0, 1)}
    assert "1 of 4 runs trained; 3 to train, 2 at once (1 worker(s) of 1 CPU, 0 GPU, 1 torch thread(s) each)" \
        in messages[0]
    # a run in the ledger is done: neither trained nor scored again, whether or not its folder is still there
    seen.clear()
    scored.clear()
    assert fidelity.train_truth(recipe, runs, tmp_path, cfg, messages.append) == trained and not seen and not scored
    (tmp_path / fidelity.RESULTS_FILE).write_text(json.dumps({"runs": {fidelity.run_name(*runs[0]): last}}))
    fidelity.train_truth(recipe, runs, tmp_path, dataclasses.replace(cfg, parallel=1), messages.append)
    assert max(s[2] for s in seen) == 1 and {s[3:] for s in seen} == {(2.0, 1)}  # the whole machine, one thread
    # a failed run: no further run starts, the running one ends, then the failure is raised
    seen.clear()

    def failing(recipe, arch, truth, seed, address, mlflow_uri, open_runs):
        if arch == archs[1]:
            seen.append((arch.arch_hash, seed, 0, None, None))
            raise RuntimeError("killed")
        return train_standalone(recipe, arch, truth, seed, address, mlflow_uri, open_runs)

    monkeypatch.setattr(fidelity, "train_standalone", failing)
    (tmp_path / fidelity.RESULTS_FILE).unlink()
    with pytest.raises(RuntimeError, match="killed"):
        fidelity.train_truth(recipe, runs, tmp_path, cfg, messages.append)
    assert {s[:2] for s in seen} == {(archs[1].arch_hash, 0), (archs[0].arch_hash, 1)}  # archs[2] never started
    # what was scored before the failure is kept: the finished run and the run that ended beside the failure
    assert set(fidelity.read_results(tmp_path)) == {fidelity.run_name(*runs[0]), fidelity.run_name(*runs[1])}
    (tmp_path / fidelity.RESULTS_FILE).write_text("{}")
    with pytest.raises(ValueError, match="is not a truth's results file"):
        fidelity.read_results(tmp_path)
    with pytest.raises(ValueError, match="--parallel 0: expected a positive number"):
        FidelityConfig(checkpoints=("x",), truth="t", parallel=0)


def test_ctrl_c_during_the_truth_leaves_no_run_running_in_mlflow(ray_session, tmp_path, monkeypatch):
    """The runs train in daemon threads; Ctrl-C reaches the main thread, which ends their MLflow runs
    as KILLED (stopped; a rerun resumes them), not the threads, which never see it."""
    import _thread
    import signal
    import threading

    from mlflow.tracking import MlflowClient

    from autovit_ray import fidelity, tracking
    from autovit_ray.training.config import load_config

    space = load_space("xxs", input_profile="digits")
    runs = [(space.largest(), 0), (space.smallest(), 0)]
    started, both, release = [], threading.Barrier(2), threading.Event()

    def train_standalone(recipe, arch, truth, seed, address, mlflow_uri, open_runs):
        uri = f"sqlite:///{tmp_path / arch.arch_hash}.db"  # each run's own experiment folder and store
        run_ids = tracking.start_runs(uri, "truth", f"{arch.arch_hash}-s{seed}", {"xxs": {}}, {})
        open_runs.add(uri, run_ids.values())
        started.extend((uri, run_id) for run_id in run_ids.values())
        if both.wait(timeout=30) == 0:
            _thread.interrupt_main()  # Ctrl-C, while both still train
        release.wait(30)

    monkeypatch.setattr(fidelity, "train_standalone", train_standalone)
    monkeypatch.setattr(fidelity, "finished_standalone", lambda recipe, arch, truth, seed: None)
    monkeypatch.setattr(fidelity, "record_result", lambda *args: {})  # the threads end after the test's Ctrl-C
    recipe = load_config("digits", ["ray.torch_threads=1", "ray.use_gpu=false"])
    # Python's own Ctrl-C handler: an earlier test's Ray Tune run may have left its own in place
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            fidelity.train_truth(recipe, runs, tmp_path, FidelityConfig(checkpoints=("x",), truth=str(tmp_path),
                                                                        parallel=2), lambda _: None)
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
    assert len(started) == 2 and {MlflowClient(uri).get_run(r).info.status for uri, r in started} == {"KILLED"}


def _supernet_checkpoint(output_dir, supernet: str, epochs: int) -> str:
    """A tiny digits supernet trained `epochs` epochs by the training loop itself (no Ray: the Ray Train
    path is the session fixture's and the integration tests'), saved as `train` saves it; its last
    checkpoint directory."""
    from conftest import TINY_TRAIN_SETTINGS

    from autovit_ray.checkpoint import checkpoint_root, epoch_dir_name, save_checkpoint
    from autovit_ray.training.config import load_config
    from autovit_ray.training.loop import SupernetTrainer

    cfg = load_config("digits", [*TINY_TRAIN_SETTINGS, f"supernets={supernet}", f"train.epochs={epochs}",
                                 f"output_dir={output_dir}", "name=fidelity-supernets"])
    trainer = SupernetTrainer(cfg, load_space(supernet, input_profile="digits"), log=lambda _: None)
    root = checkpoint_root(cfg.experiment_dir, supernet)
    trainer.fit(lambda epoch, metrics: save_checkpoint(root / epoch_dir_name(epoch), trainer.state_dict(metrics)))
    return str(root / epoch_dir_name(epochs))


TINY = ("data.batch_size=16", "data.calib_size=32", "train.max_steps_per_epoch=2", "eval.num_random_subnets=0",
        "eval.max_batches=1", "eval.calib_batches=1", "ray.torch_threads=1", "ray.cpus_per_worker=0.5")


@pytest.mark.integration  # five Ray Train runs (~2 min): the integration step, not the 12-minute unit suite
def test_a_whole_fidelity_run_resumes_and_refuses_another_recipe(ray_session, tmp_path, monkeypatch, capsys,
                                                                 one_thread):
    from autovit_ray import fidelity, ray_train
    from autovit_ray.space import Arch

    xxs = _supernet_checkpoint(tmp_path / "supernets", "xxs", epochs=2)
    cfg = FidelityConfig(checkpoints=(xxs,), truth=str(tmp_path / "truth"), subnets=4, epochs=1, repeat=1,
                         overrides=TINY, pool=200, resamples=200, calib_draws=2)
    report = run(cfg, log=lambda _: None)
    subnets = report["standalone"]["subnets"]
    assert len(subnets) == 4 and all(0.0 <= s[k] <= 100.0 for s in subnets for k in ("val_top1", "test_top1"))
    ledger = fidelity.read_results(tmp_path / "truth")  # 4 subnets and the repeat, each scored once
    assert len(ledger) == 5 and [ledger[fidelity.run_name(Arch.from_dict(s["arch"]), 0)]["test_top1"]
                                 for s in subnets] == [s["test_top1"] for s in subnets]
    (pair,) = report["standalone"]["repeats"]
    assert report["standalone"]["seed_sd"] == pytest.approx(abs(pair["top1"][0] - pair["top1"][1]) / 2 ** 0.5)
    assert {k: report["standalone"][k] for k in ("tau_ceiling", "tau_ceiling_in_band")} == truth_ceiling(
        subnets, report["standalone"]["seed_sd"])
    scored = report["supernets"][xxs]
    assert scored["epochs_done"] == 2 and scored["sampler"] == "uniform" and len(scored["inherited"]) == 4
    assert scored["kendall_tau"] is None or -1.0 <= scored["kendall_tau"] <= 1.0
    assert scored["inherited_span"] == pytest.approx(max(scored["inherited"]) - min(scored["inherited"]))
    assert statistics.fmean(scored["inherited"]) > 0
    # scored again on a second calibration subset: the same scores as that subset alone gives
    from autovit_ray.fidelity import inherited_top1

    archs = [Arch.from_dict(s["arch"]) for s in subnets]
    assert scored["inherited_draws"] == [inherited_top1(xxs, archs, None, calib_seed=1)]
    assert scored["calib_draws"] == 2 and scored["draw_sd"] >= 0.0
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(f"sqlite:///{tmp_path / 'truth' / 'mlflow.db'}").get_run(report["mlflow_run_id"])
    assert logged.data.tags["supernet0"] == xxs and logged.data.params["subnets"] == "4"
    assert logged.data.metrics["supernet0/inherited_span"] == pytest.approx(scored["inherited_span"])
    assert logged.data.metrics["truth_tau_ceiling"] == pytest.approx(report["standalone"]["tau_ceiling"])
    assert scored["tau_over_macs"] is None or logged.data.metrics["supernet0/tau_over_macs"] == pytest.approx(
        scored["tau_over_macs"])
    # a rerun finds the truth trained: nothing is trained again, even with the runs' folders gone (the ledger)
    import shutil

    for folder in (tmp_path / "truth").glob("*-s*"):
        shutil.rmtree(folder)
    monkeypatch.setattr(ray_train, "run_training", lambda *a, **k: pytest.fail("the truth was trained again"))
    assert run(cfg, log=lambda _: None)["standalone"]["subnets"] == subnets
    monkeypatch.undo()
    # the CLI: another recipe in the same truth folder, and supernets of two spaces, are refused
    base = ["--checkpoint", xxs, "--truth", cfg.truth, "--subnets", "4", "--epochs", "1", "--pool", "200"]
    assert main([*base, *(f"--set={s}" for s in TINY), "--set", "optimizer.lr=0.01"]) == 2
    assert "was trained with another recipe (differing: optimizer.lr)" in capsys.readouterr().err
    xs = _supernet_checkpoint(tmp_path / "supernets", "xs", epochs=1)
    assert main([*base, "--checkpoint", xs]) == 2
    assert "one truth scores supernets of one space" in capsys.readouterr().err
    # the CLI scores the same truth on three calibration subsets, training nothing
    assert main([*base, *(f"--set={s}" for s in TINY), "--repeat", "1", "--calib-draws", "3"]) == 0
    rescored = json.loads((tmp_path / "truth" / "fidelity.json").read_text())["supernets"][xxs]
    assert rescored["calib_draws"] == 3 and len(rescored["inherited_draws"]) == 2
    assert rescored["inherited"] == scored["inherited"] and rescored["inherited_draws"][0] == scored["inherited_draws"][0]
    assert "on 3 calibration subsets: the inherited scores move by sd" in capsys.readouterr().out


def test_the_scan_spreads_the_inherited_accuracies_and_pairs_the_extremes(tmp_path, capsys):
    """`--scan N`: the largest, the smallest and N random subnets with the validation top-1 they inherit
    (the search's scores: BatchNorm recalibrated), and the largest minus the smallest paired image by
    image (the same number); trains nothing; N < 2 refused."""
    import json
    from pathlib import Path

    from autovit_ray.checkpoint import load_supernet
    from autovit_ray.fidelity.scan import SCAN_FILE
    from autovit_ray.search.evaluate import EvalSettings, SubnetEvaluator

    checkpoint = _supernet_checkpoint(tmp_path, "xxs", 1)
    assert main(["--scan", "3", "--checkpoint", checkpoint, "--truth", str(tmp_path / "scan"),
                 "--calib-batches", "1"]) == 0
    report = json.loads((tmp_path / "scan" / SCAN_FILE).read_text())
    found = report["supernets"][checkpoint]
    assert [r["role"] for r in found["subnets"]] == ["largest", "smallest", "random-0", "random-1", "random-2"]
    supernet, space, config = load_supernet(checkpoint)
    evaluator = SubnetEvaluator(supernet, space, config.data, EvalSettings(calib_batches=1))
    assert [r["val_top1"] for r in found["subnets"][:2]] == [evaluator.evaluate(a)["val_top1"]
                                                            for a in (space.largest(), space.smallest())]
    paired = found["span_paired"]
    assert paired["difference"] == pytest.approx(found["largest_minus_smallest"])  # the same images, one by one
    assert paired["low"] <= paired["difference"] <= paired["high"] and paired["images"] > 0
    assert found["epochs_done"] == 1 and all(r["lut_ms"] is None for r in found["subnets"])  # no --lut
    assert "largest minus smallest" in capsys.readouterr().out
    assert not list(Path(tmp_path / "scan").glob("*-s*"))  # nothing trained
    assert main(["--scan", "1", "--checkpoint", checkpoint, "--truth", str(tmp_path / "scan")]) == 2
    assert "--scan 1: expected at least 2 random subnets" in capsys.readouterr().err
    assert main(["--scan", "3", "--checkpoint", checkpoint, "--epochs", "5", "--repeat", "1"]) == 2
    assert "--scan trains nothing, so --epochs, --repeat (settings of the truth) do not apply" in capsys.readouterr().err
    assert main(["--scan", "3", "--checkpoint", checkpoint, "--calib-draws", "2"]) == 2
    assert "--calib-draws (settings of the truth) do not apply" in capsys.readouterr().err
