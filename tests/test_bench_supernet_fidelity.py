"""bench/supernet_fidelity.py (issue 30): the sandwich settings are the issue's, the report reads what
exists (scans, band, the fidelity report) and chooses by in-band tau; the run reads the recipe issue's
committed record (a new machine has nothing else) and builds the latency table only where it is missing."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import common  # noqa: E402
import supernet_fidelity as bench  # noqa: E402


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path, monkeypatch):
    """No test reads this machine's benchmark artifacts or writes into the repository's kept files."""
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path / "bench"))
    monkeypatch.setattr(common, "KEPT", tmp_path / "kept")


def test_the_sandwich_arm_is_bignas_style_and_the_control_is_uniform():
    assert bench.SAMPLERS == {
        "sandwich": ["train.sampler=sandwich", "train.sandwich_random=1", "kd.kind=soft", "kd.inplace=true",
                     "kd.alpha=1.0", "model.regularize=largest"],
        "uniform": []}
    assert (bench.TRUTH_SUBNETS, bench.TRUTH_IN_BAND, bench.TRUTH_EPOCHS, bench.TRUTH_REPEAT) == (14, 8, 15, 2)


def _scan(sampler: str, largest: float, smallest: float) -> dict:
    rows = [{"role": "largest", "val_top1": largest, "lut_ms": 4.1}, {"role": "smallest", "val_top1": smallest,
             "lut_ms": 2.2}, {"role": "random-0", "val_top1": 70.0, "lut_ms": 2.9},
            {"role": "random-1", "val_top1": 74.5, "lut_ms": 3.3}]
    return {"sampler": sampler, "subnets": rows, "largest_minus_smallest": largest - smallest, "random_span": 4.5}


def test_report_reads_what_exists_and_chooses_by_in_band_tau(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS_JSON", tmp_path / "supernet_fidelity.json")
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "RECIPE_JSON", tmp_path / "cifar10_recipe.json")
    monkeypatch.setattr(bench, "SCAN_PNG", tmp_path / "supernet_scan.png")
    monkeypatch.setattr(bench, "FIDELITY_PNG", tmp_path / "supernet_fidelity.png")
    (tmp_path / "cifar10_recipe.json").write_text(json.dumps(
        {"peer": {"val_top1": 85.1, "test_top1": 84.3}, "choice": {"adaptation": "stem1", "recipe": "padcrop"}}))
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n")
    # nothing run yet: a report with no numbers, and no choice
    first = bench.report(out)
    assert first["chosen"] is None and first["supernets"]["sandwich"]["epochs_done"] == 0 and first["lut"] is None
    assert not (tmp_path / "supernet_scan.png").exists()  # no scan, no plot
    assert "The truth (stand-alone runs) has not run yet." in (tmp_path / "BENCHMARKS.md").read_text()
    (out / "scan-sandwich.json").write_text(json.dumps(_scan("sandwich", 82.0, 74.0)))
    (out / "scan-uniform.json").write_text(json.dumps(_scan("uniform", 76.0, 75.2)))
    (out / "band.json").write_text(json.dumps({"peer_lut_ms": 3.0, "band_ms": [2.4, 3.6]}))
    bench.lut_validation_file().parent.mkdir(parents=True)
    bench.lut_validation_file().write_text(json.dumps({
        "samples": 100, "method": "in_context", "predictor": {"mape": 6.15, "kendall_tau": 0.807, "within_5": 48.0},
        "retest": {"mape": 17.7, "kendall_tau": 0.805}, "rows": [],
        "level": {"ratio": 0.948, "mape_after": 3.76, "retest_ratio": 1.19, "retest_mape_after": 3.9}}))
    (out / "truth").mkdir()
    stats = {"kendall_tau": 0.4, "tau_low": 0.1, "tau_high": 0.7, "tau_macs": 0.3, "tau_params": 0.2,
             "top3_overlap": 2, "regret": 0.5}
    (out / "truth" / "fidelity.json").write_text(json.dumps({
        "standalone": {"epochs": 15, "seed_sd": 0.3, "repeats": [{}, {}],
                       "subnets": [{"val_top1": 78.0 + 0.2 * i, "macs": float(i % 4), "in_band": i < 8}
                                   for i in range(14)]},
        "supernets": {"/x/sandwich-e30/checkpoints/xxs/epoch_0030": {**stats, "tau_in_band": 0.6,
                                                                      "inherited": [70.0 + i for i in range(14)]},
                      "/x/uniform-e30/checkpoints/xxs/epoch_0030": {**stats, "tau_in_band": 0.1,
                                                                     "inherited": [75.0] * 14}}}))
    result = bench.report(out)
    assert result["chosen"] == "sandwich"
    assert (tmp_path / "supernet_scan.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "supernet_fidelity.png").read_bytes()[:4] == b"\x89PNG"
    assert result["supernets"]["sandwich"]["inherited_span"] == 8.0
    assert result["supernets"]["uniform"]["tau_in_band"] == 0.1
    assert result["peer"] == {"val_top1": 85.1, "test_top1": 84.3, "epochs": 30, "adaptation": "stem1",
                              "recipe": "padcrop"}
    assert json.loads((tmp_path / "supernet_fidelity.json").read_text())["chosen"] == "sandwich"
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| sandwich | 0/30 | 8.00 | 4.50 | 0.40 [0.10, 0.70] | 0.60 | 0.30 |" in text
    # the tau a perfect predictor would reach against this truth (its fidelity.json had none: computed here)
    from autovit_ray.stats import noise_ceiling_tau

    ceiling = noise_ceiling_tau([78.0 + 0.2 * i for i in range(14)], 0.3)
    in_band = noise_ceiling_tau([78.0 + 0.2 * i for i in range(8)], 0.3)
    assert result["standalone"]["tau_ceiling"] == ceiling and result["standalone"]["tau_ceiling_in_band"] == in_band
    assert 0.5 < in_band < ceiling < 1.0  # a narrower spread is harder to order through the same noise
    assert (f"seed noise sd 0.30 points, so a perfect predictor would reach tau {ceiling:.2f} against it "
            f"({in_band:.2f} in band)") in text and "from 2 seed pairs" in text
    # the calibration remedy, set against the recipe's own inherited scores of the same subnets
    rescored = [70.0 + i for i in range(14)]
    rescored[0], rescored[1] = rescored[1], rescored[0]
    (out / "remedy-calibration.json").write_text(json.dumps({"calib_size": 4096, "supernets": {
        "sandwich": {**stats, "tau_in_band": 0.5, "inherited": rescored}}}))
    remedy = bench.report(out)["supernets"]["sandwich"]["calibration_remedy"]
    assert remedy["tau_between_calibrations"] == pytest.approx(1 - 2 / 91)  # one of 91 pairs swapped
    assert remedy["inherited_span"] == 13.0 and remedy["tau_in_band"] == 0.5
    assert "recalibrations agree at: sandwich tau 0.98" in (tmp_path / "BENCHMARKS.md").read_text()
    # a sandwich supernet under the goal: nothing is chosen until the training remedies are scored
    fidelity = json.loads((out / "truth" / "fidelity.json").read_text())
    fidelity["supernets"]["/x/sandwich-e30/checkpoints/xxs/epoch_0030"]["tau_in_band"] = 0.45
    (out / "truth" / "fidelity.json").write_text(json.dumps(fidelity))
    waiting = bench.report(out)
    assert waiting["chosen"] is None and waiting["remedies_due"]
    assert "nothing is chosen until the training remedies are scored" in (tmp_path / "BENCHMARKS.md").read_text()
    (out / "remedy-training.json").write_text(json.dumps({"epochs": {"longer": 20}, "supernets": {
        "longer": {**stats, "tau_in_band": 0.55, "inherited_span": 1.0, "inherited": [84.0 - i for i in range(14)]}}}))
    scored = bench.report(out)
    assert scored["chosen"] == "longer" and not scored["remedies_due"]
    scored_text = (tmp_path / "BENCHMARKS.md").read_text()
    assert ("Chosen supernet: longer (in-band tau 0.55, the best of 3); the goal (in-band tau >= 0.5 and above "
            "MACs') is met by longer.") in scored_text
    # tau differences on the same in-band subnets and resamples: the reversed ranking is 2 below the perfect one
    # on every resample, so the bootstrap cannot bound it (no interval); a constant score (uniform) has no tau,
    # so no difference
    paired = {name: s["paired_in_band"] for name, s in scored["supernets"].items()}
    assert paired["longer"]["minus_sandwich"] | {"resamples": 0} == {
        "difference": -2.0, "low": None, "high": None, "n": 8, "resamples": 0, "significant": False}
    assert paired["uniform"]["minus_sandwich"]["difference"] is None and "minus_sandwich" not in paired["sandwich"]
    from autovit_ray.stats import kendall_tau

    macs_tau = kendall_tau([float(i % 4) for i in range(8)], [78.0 + 0.2 * i for i in range(8)])
    assert paired["sandwich"]["minus_macs"]["difference"] == pytest.approx(1.0 - macs_tau)
    assert (f"minus MACs' (in-band tau {macs_tau:.2f}): sandwich {1 - macs_tau:+.2f} [" in scored_text
            and "Minus the sandwich supernet's: uniform – [–, –]; longer -2.00 [–, –]." in scored_text)
    assert text.count(bench.SECTION) == 1
    # the latency table's quality, which the band and every lut_ms rest on
    assert result["lut"]["predictor"] == {"mape": 6.15, "kendall_tau": 0.807} and result["lut"]["level"] == 0.948
    assert ("validated on 100 fresh subnets: predictor vs measured MAPE 6.2 %, Kendall tau 0.81; the same subnets "
            "measured twice (the noise): MAPE 17.7 %, tau 0.81; level predicted / measured x0.95 (retest x1.19), "
            "MAPE 3.8 % with it divided out.") in text
    # the earlier run that ended with its machine: its committed record, quoted with its paired spans
    (run1,) = result["earlier_runs"]
    assert run1["record"] == "bench/results/supernet_fidelity_run1.json" and run1["truth_finished"] == 6
    assert "It had measured largest − smallest: sandwich 1.06 [0.40, 1.74]; uniform 0.50 [-0.20, 1.20] points" in text
    # how far this run repeats it: the per-epoch numbers both have, compared digit for digit
    before = json.loads((bench.ROOT / run1["record"]).read_text())["supernets"]["sandwich"]["per_epoch"]
    now = {"sandwich": {"per_epoch": [before[0], {**before[1], "largest": before[1]["largest"] + 0.1}]}}
    assert bench.earlier_runs(now, {})[0]["same_per_epoch"] == {"sandwich": {"epochs": 2, "same": 1}}
    assert bench.earlier_runs({}, {})[0]["same_per_epoch"] == {}
    # and its scans: the same subnets (role and arch) compared by their inherited validation top-1
    scanned = json.loads((bench.ROOT / run1["record"]).read_text())["scans"]["sandwich"]
    again = [scanned[0], {**scanned[1], "val_top1": scanned[1]["val_top1"] + 0.02}, {**scanned[2], "arch": {}}]
    assert bench.earlier_runs({}, {"sandwich": again})[0]["same_scan"] == {"sandwich": {"subnets": 2, "same": 1}}
    assert bench.earlier_runs({}, {})[0]["same_scan"] == {}


def test_the_run_refuses_a_recipe_record_whose_peer_is_under_the_gate(tmp_path, monkeypatch):
    record = tmp_path / "cifar10_recipe.json"
    record.write_text(json.dumps({"choice": {"adaptation": "stem1", "recipe": "padcrop"},
                                  "peer": {"val_top1": bench.GATE_VAL_TOP1 - 0.5}}))
    monkeypatch.setattr(bench, "RECIPE_JSON", record)
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=f"reached {bench.GATE_VAL_TOP1 - 0.5} % validation top-1, under the recipe"):
        bench.main(["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)])
    assert not (tmp_path / "out").exists()


def test_the_latency_table_is_built_only_where_this_machine_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path))
    built = []

    def build_lut(out: Path) -> dict:  # stands in for the minutes of `profile build` and `profile validate`
        built.append(out)
        bench.lut_file().parent.mkdir(parents=True)
        bench.lut_file().write_bytes(b"table")
        return {}

    monkeypatch.setattr(bench, "build_lut", build_lut)
    assert bench.ensure_lut() == tmp_path / "cifar10_recipe" / "luts" / "xxs-cifar10-p1-torch-cpu.parquet"
    assert bench.ensure_lut().read_bytes() == b"table"
    assert built == [tmp_path / "cifar10_recipe"]


def test_a_tie_in_band_tau_goes_to_the_better_inherited_accuracy_at_the_peers_latency():
    band = {"band_ms": [2.8, 3.4]}  # random-1 (3.3 ms) is inside; largest, smallest, random-0 are not
    scans = {"sandwich": _scan("sandwich", 82.0, 74.0), "uniform": _scan("uniform", 76.0, 75.2)}
    scans["uniform"]["subnets"][3] = {**scans["uniform"]["subnets"][3], "val_top1": 77.0}
    assert bench.best_inherited_in_band(scans["uniform"], band) == 77.0
    assert bench.best_inherited_in_band(scans["sandwich"], {"band_ms": [5.0, 6.0]}) is None
    tied = {"sandwich": {"tau_in_band": 0.501}, "uniform": {"tau_in_band": 0.498}}
    assert bench.choose(tied, scans, band) == "uniform"  # 0.50 = 0.50; 77.0 > 74.5 in the band
    assert bench.choose({**tied, "uniform": {"tau_in_band": 0.48}}, scans, band) == "sandwich"
    assert bench.choose({**tied, "uniform": {"tau_in_band": None}}, scans, band) is None


def test_the_sandwich_is_scanned_before_the_control_trains_and_a_failed_gate_stops_until_a_reason(tmp_path,
                                                                                                  monkeypatch):
    record = tmp_path / "cifar10_recipe.json"
    record.write_text(json.dumps({"choice": {"adaptation": "stem1", "recipe": "padcrop"},
                                  "peer": {"val_top1": bench.GATE_VAL_TOP1 + 1.0}}))
    monkeypatch.setattr(bench, "RECIPE_JSON", record)
    steps = []

    def train_supernet(sampler, out, data_dir):  # stands in for hours of `autovit_ray.train`
        steps.append(f"train {sampler}")
        return tmp_path / sampler

    def scan(checkpoint, out, sampler):  # stands in for the validation passes
        steps.append(f"scan {sampler}")
        return {**_scan(sampler, 76.0, 74.5), "epochs_done": 30}

    monkeypatch.setattr(bench, "train_supernet", train_supernet)
    monkeypatch.setattr(bench, "scan", scan)
    monkeypatch.setattr(bench, "ensure_lut", lambda: steps.append("lut"))
    monkeypatch.setattr(bench, "peer_band", lambda out: steps.append("band") or {"band_ms": [2.4, 3.6]})
    out = tmp_path / "out"
    argv = ["--out", str(out), "--data-dir", str(tmp_path), "--stop-after", "band"]
    assert bench.main(argv) == 1  # 1.5 points < the gate: stopped before the control
    assert steps == ["train sandwich", "lut", "scan sandwich"]
    # no table on this machine: the code that builds it is recorded with the stages
    assert json.loads((out / bench.STAGE_COMMITS).read_text()) == {"latency table": [common.code_commit()]}
    gate = json.loads((out / "gate.json").read_text())
    assert gate["span"] == 1.5 and gate["passed"] is False and gate["continued_because"] is None
    steps.clear()
    assert bench.main([*argv, "--past-gate", "the space spans 1.7 points stand-alone"]) == 0
    assert steps == ["train sandwich", "lut", "scan sandwich", "train uniform", "scan sandwich", "scan uniform", "band"]
    steps.clear()
    assert bench.main(argv) == 0  # a rerun keeps the recorded reason
    assert json.loads((out / "gate.json").read_text())["continued_because"] == "the space spans 1.7 points stand-alone"
    monkeypatch.setattr(bench, "RESULTS_JSON", tmp_path / "supernet_fidelity.json")
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n")
    assert bench.report(out)["gate"]["passed"] is False
    assert ("Measured 1.50 points: not met; the run went on because: the space spans 1.7 points stand-alone."
            in (tmp_path / "BENCHMARKS.md").read_text())


def test_the_per_epoch_separation_is_read_from_the_trainings_mlflow_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    from autovit_ray.experiment import Experiment

    experiment = tmp_path / "sandwich-e30"
    assert bench.per_epoch(experiment) == []  # not trained yet
    experiment.mkdir()
    client = MlflowClient(Experiment(experiment).tracking_uri)
    run = client.create_run(client.create_experiment("sandwich-e30"), tags={"supernet": "xxs"})
    assert bench.training_hours(experiment) is None  # no epoch ended yet
    for epoch in range(1, 12):
        for key, value in (("smallest", 60.0 + epoch), ("largest", 60.0 + 1.2 * epoch), ("random_mean", 61.0)):
            client.log_metric(run.info.run_id, f"val_top1_{key}", value, step=epoch)
        client.log_metric(run.info.run_id, "train_time_s", 300.0 if epoch != 4 else 1500.0, step=epoch)
        client.log_metric(run.info.run_id, "eval_time_s", 60.0, step=epoch)
    hours = bench.training_hours(experiment)
    assert hours["epochs"] == 11 and hours["hours"] == pytest.approx((11 * 360 + 1200) / 3600)
    assert hours["quiet_hours"] == pytest.approx(11 * 360 / 3600)  # epoch 4 was paused: not the pace
    rows = bench.compute(tmp_path, {"sandwich": {"seconds": 720.0}, "uniform": {}})
    assert len(hours["intervals"]) == 11 and all(end - start == pytest.approx(360.0 if e != 3 else 1560.0)
                                                  for e, (start, end) in enumerate(hours["intervals"]))
    assert rows[0] == {"step": "sandwich supernet, 30 epochs (11 done)", "plan": "2.5-3.5",
                       **{k: hours[k] for k in ("epochs", "hours", "quiet_hours")}}
    # two runs side by side count once; the hours between two sessions not at all
    assert bench.covered_hours([[0, 3600], [1800, 5400], [10_000, 13_600]]) == 2.5
    assert rows[1]["step"] == "uniform control, 30 epochs (0 done)" and rows[1].get("hours") is None
    assert rows[2]["hours"] == 0.2 and "(1 of 2 timed)" in rows[2]["step"]
    assert rows[3]["hours"] is None and rows[3]["begun"] == rows[3]["finished"] == 0  # no truth yet
    assert "| sandwich supernet, 30 epochs (11 done) | 2.5-3.5 | 1.4 | 1.1 |" in bench.compute_lines(rows)
    rows = bench.per_epoch(experiment)
    assert [r["epoch"] for r in rows] == list(range(1, 12))
    assert rows[9] == {"epoch": 10, "smallest": 70.0, "largest": 72.0, "random_mean": 61.0}
    (line,) = [text for text in bench.per_epoch_lines({"sandwich": {"per_epoch": rows}}) if text]
    assert "sandwich: epoch 5 +1.0, epoch 10 +2.0, epoch 11 +2.2." in line


def test_the_scan_is_the_products_with_the_recipes_calibration_and_is_read_back(tmp_path, monkeypatch):
    import autovit_ray.fidelity.scan

    calls = []

    def scan_supernet(checkpoint, subnets, seed, lut, calib_batches):  # the product's scan (tests/test_fidelity.py)
        calls.append((checkpoint, subnets, seed, lut, calib_batches))
        return {**_scan("uniform", 80.0, 78.5), "span_paired": {"difference": 1.5, "low": 0.5, "high": 2.5}}

    monkeypatch.setattr(autovit_ray.fidelity.scan, "scan_supernet", scan_supernet)
    record = bench.scan(tmp_path / "ck", tmp_path, "sandwich")
    assert calls == [(tmp_path / "ck", bench.SCAN_SUBNETS, 0, str(bench.lut_file()), bench.SCAN_CALIB_BATCHES)]
    assert record["sampler"] == "sandwich" and record["commit"] == bench.code_commit()
    assert bench.scan(tmp_path / "ck", tmp_path, "sandwich") == record and len(calls) == 1  # read back
    assert bench._span(record) == "1.50 [0.50, 2.50]"
    assert bench._span(_scan("uniform", 76.0, 75.2)) == "0.80"


def test_the_calibration_remedy_rescores_the_truths_subnets_on_more_images(tmp_path, monkeypatch):
    import random

    from test_fidelity import _supernet_checkpoint

    from autovit_ray.checkpoint import load_supernet
    from autovit_ray.fidelity import inherited_top1

    checkpoint = Path(_supernet_checkpoint(tmp_path, "xxs", 1))
    _, space, _ = load_supernet(checkpoint)
    rng = random.Random(1)
    archs = [space.largest(), space.smallest(), space.sample(rng), space.sample(rng)]
    out = tmp_path / "out"
    (out / "truth").mkdir(parents=True)
    subnets = [{"arch": a.to_dict(), "val_top1": top1, "macs": m, "params": m, "in_band": True}
               for a, top1, m in zip(archs, (70.0, 60.0, 66.0, 64.0), (4.0, 1.0, 3.0, 2.0))]
    (out / "truth" / "fidelity.json").write_text(json.dumps({"seed": 0, "standalone": {"subnets": subnets}}))
    monkeypatch.setattr(bench, "REMEDY_CALIB_IMAGES", 64)
    record = bench.calibration_remedy({"sandwich": checkpoint}, out)
    assert record["calib_size"] == 64
    assert record["supernets"]["sandwich"]["inherited"] == inherited_top1(checkpoint, archs, None, 64)
    assert record["supernets"]["sandwich"]["tau_macs"] == 1.0  # the statistics of the fidelity report
    assert bench.calibration_remedy({}, out) == json.loads(json.dumps(record))  # read back, not scored again
    # the report puts it beside the recipe's scores
    lines = bench.remedy_lines({"sandwich": {"kendall_tau": 0.2, "tau_in_band": 0.1, "calibration_remedy": {
        "calib_size": 4096, "kendall_tau": 0.4, "tau_low": 0.1, "tau_high": 0.7, "tau_in_band": 0.3}}})
    assert lines[1] == ("More BatchNorm recalibration (the same subnets and truth; 4,096 training images instead of "
                        "the recipe's 1,024): sandwich: Kendall tau 0.20 -> 0.40 [0.10, 0.70], in band 0.10 -> 0.30.")
    assert bench.remedy_lines({"uniform": {"kendall_tau": 0.2}}) == []
    # the two recalibrations against each other: the inherited score's own noise
    agreement = bench.recalibration_agreement([78.0, 78.5, 79.0, 79.5], [78.2, 78.3, 79.4, 79.3])
    assert agreement["tau_between_calibrations"] == pytest.approx(2 / 3)  # one of six pairs swapped
    assert agreement["sd_between_calibrations"] == pytest.approx(statistics.stdev([0.2, -0.2, 0.4, -0.2]))
    assert agreement["inherited_span"] == 1.5
    lines = bench.remedy_lines({"sandwich": {"kendall_tau": 0.2, "tau_in_band": 0.1, "calibration_remedy": {
        "calib_size": 4096, "kendall_tau": 0.4, "tau_low": 0.1, "tau_high": 0.7, "tau_in_band": 0.3, **agreement}}})
    assert lines[2].startswith("The same subnets' inherited scores under the two recalibrations agree at: sandwich "
                               "tau 0.67, the difference's sd 0.30 points against an inherited span of 1.50.")


def test_the_remedies_run_only_when_the_goal_is_missed():
    assert bench.goal_met({"tau_in_band": 0.6, "tau_macs": 0.3})
    assert not bench.goal_met({"tau_in_band": 0.6, "tau_macs": 0.7})  # not above the MACs baseline
    assert not bench.goal_met({"tau_in_band": 0.4, "tau_macs": 0.1})
    assert not bench.goal_met({"tau_in_band": None, "tau_macs": 0.1})
    # a choice made with the goal missed everywhere says so
    missed = {"sandwich": {"tau_in_band": 0.41, "tau_macs": 0.26}, "longer": {"tau_in_band": 0.29, "tau_macs": 0.26}}
    assert bench.chosen_words("sandwich", missed) == (
        "Chosen supernet: sandwich (in-band tau 0.41, the best of 2); none of the 2 meets the goal (in-band tau "
        ">= 0.5 and above MACs').")


def test_a_remedy_trains_from_the_sandwich_supernet_with_its_settings(tmp_path, monkeypatch):
    commands = []

    def run_cli(cli, log_path):
        commands.append(cli)
        raise RuntimeError("stop here")

    monkeypatch.setattr(bench, "run_cli", run_cli)
    for count in (3, None):
        with pytest.raises(RuntimeError, match="stop here"):
            bench.train_remedy(tmp_path / "sandwich-e30" / "epoch_0030", tmp_path, tmp_path / "data", count, threads=1)
    part, longer = (dict(cli[i + 1].split("=", 1) for i, flag in enumerate(cli) if flag == "--set") for cli in commands)
    assert commands[0][commands[0].index("--name") + 1] == "fewshot-t3"
    assert commands[1][commands[1].index("--name") + 1] == f"longer-e{2 * bench.REMEDY_EPOCHS}"
    assert (part["train.epochs"], longer["train.epochs"]) == (str(bench.REMEDY_EPOCHS), str(2 * bench.REMEDY_EPOCHS))
    for settings in (part, longer):
        assert settings["train.init_from"] == str(tmp_path / "sandwich-e30" / "epoch_0030")
        assert all(settings[k] == v for k, v in (s.split("=", 1) for s in bench.SAMPLERS["sandwich"]))
    assert part["train.transformer_stages"] == "3" and "train.transformer_stages" not in longer


def test_the_remedies_are_scored_against_the_truth_and_can_be_chosen(tmp_path, monkeypatch):
    import random

    from test_fewshot import _train

    from autovit_ray.checkpoint import load_supernet

    _, parent = _train(tmp_path, "parent")
    trained = {count: Path(_train(tmp_path, f"part{count}", f"train.transformer_stages={count}",
                                  f"train.init_from={parent}")[1]) for count in (3, 4)}
    out = tmp_path / "out"
    # where the stage's own training would write it, so that `remedy_checkpoints` finds it
    trained[None] = Path(_train(out, bench.remedy_name("longer"), f"train.init_from={parent}")[1])
    (out / "truth").mkdir(parents=True)
    _, space, _ = load_supernet(parent)
    rng = random.Random(1)
    archs = [space.largest(), space.smallest(), space.sample(rng), space.sample(rng)]
    subnets = [{"arch": a.to_dict(), "val_top1": top1, "macs": m, "params": m, "in_band": True}
               for a, top1, m in zip(archs, (70.0, 60.0, 66.0, 64.0), (4.0, 1.0, 3.0, 2.0))]
    (out / "truth" / "fidelity.json").write_text(json.dumps({"seed": 0, "standalone": {"subnets": subnets}}))

    def train_remedy(sandwich, out_, data_dir, count, threads):  # the tiny digits trainings above
        assert (sandwich, out_, threads) == (Path(parent), out, 1 if count else 2)
        return trained[count]

    monkeypatch.setattr(bench, "train_remedy", train_remedy)
    record = bench.training_remedies(Path(parent), out, tmp_path / "data")
    assert set(record["supernets"]) == {"fewshot", "longer"}
    assert bench.chosen_checkpoint("fewshot", out) == out / "fewshot"
    assert record["supernets"]["fewshot"]["tau_macs"] == 1.0  # the fidelity statistics, over the truth's subnets
    assert bench.training_remedies(Path(parent), out, tmp_path / "data") == json.loads(json.dumps(record))
    lines = bench.training_remedy_lines({"sandwich": {"tau_in_band": 0.1}, "fewshot": {
        "remedy": "few-shot", "tau_in_band": 0.4, "kendall_tau": 0.5, "tau_low": 0.1, "tau_high": 0.8, "regret": 0.3}})
    assert lines[1].endswith("few-shot: in-band tau 0.40 (sandwich 0.10), Kendall tau 0.50 [0.10, 0.80], "
                             "regret 0.30 points.")


def test_finished_truth_runs_are_reported_and_kept_for_a_new_machine(tmp_path, monkeypatch):
    """The report lists every finished stand-alone run (validation and test top-1) while the truth trains,
    and copies the run's small measurements into the repository's kept files; a new machine's run puts
    them back where they are missing, and never over what it has."""
    for name, value in (("RESULTS_JSON", tmp_path / "r.json"), ("BENCHMARKS", tmp_path / "B.md"),
                        ("RECIPE_JSON", tmp_path / "none.json"), ("FIDELITY_PNG", tmp_path / "f.png")):
        monkeypatch.setattr(bench, name, value)
    (tmp_path / "B.md").write_text("# Benchmarks\n")
    out = tmp_path / "out"
    runs = {"abc-s0": {"arch": {"supernet": "xxs"}, "seed": 0, "epochs": 15, "val_top1": 80.0, "test_top1": 79.5},
            "abc-s1": {"arch": {"supernet": "xxs"}, "seed": 1, "epochs": 15, "val_top1": 80.4, "test_top1": 79.1}}
    (out / "truth").mkdir(parents=True)
    (out / "truth" / "results.json").write_text(json.dumps({"runs": runs}))
    (out / "truth" / "truth.json").write_text(json.dumps({"recipe": {"train.epochs": 15}}))
    (out / "band.json").write_text(json.dumps({"peer_lut_ms": 5.4, "band_ms": [4.3, 6.5]}))
    bench.lut_file().parent.mkdir(parents=True)
    bench.lut_file().write_bytes(b"PAR1 a table")
    result = bench.report(out)
    assert result["standalone"] is None  # the truth has not ended
    assert result["truth_runs"] == {name: {k: run[k] for k in ("seed", "epochs", "val_top1", "test_top1")}
                                    for name, run in runs.items()}
    kept = tmp_path / "kept" / "supernet_fidelity"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "band.json", "lut.parquet", "truth/results.json", "truth/truth.json"]  # no validation report yet: none kept
    # a new machine: nothing in its artifacts folder; its run restores the kept files before anything else
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path / "new-machine"))
    fresh = tmp_path / "new-machine" / "supernet_fidelity"
    (fresh / "truth").mkdir(parents=True)
    (fresh / "band.json").write_text("{}")  # measured here already: not replaced
    restored = common.restore_files(bench.kept_files(fresh))
    assert sorted(restored) == ["supernet_fidelity/lut.parquet", "supernet_fidelity/truth/results.json",
                                "supernet_fidelity/truth/truth.json"]
    assert bench.lut_file().read_bytes() == b"PAR1 a table" and (fresh / "band.json").read_text() == "{}"
    assert json.loads((fresh / "truth" / "results.json").read_text()) == {"runs": runs}
    monkeypatch.setattr(common, "KEPT_LIMIT_BYTES", 8)
    with pytest.raises(ValueError, match="over the 8 bytes a file kept in the repository may have"):
        common.keep_files(bench.kept_files(fresh))


def test_each_stage_records_the_commits_of_the_code_that_ran_it(tmp_path, monkeypatch):
    """A training resumed by newer code lists both commits; measurements give their own record's commit;
    the section names them all."""
    for name, value in (("RESULTS_JSON", tmp_path / "r.json"), ("BENCHMARKS", tmp_path / "B.md"),
                        ("RECIPE_JSON", tmp_path / "none.json"), ("SCAN_PNG", tmp_path / "s.png")):
        monkeypatch.setattr(bench, name, value)
    (tmp_path / "B.md").write_text("# Benchmarks\n")
    out = tmp_path / "out"
    out.mkdir()
    for commit in ("a" * 40, "a" * 40, "b" * 40):
        monkeypatch.setattr(bench, "code_commit", lambda commit=commit: commit)
        bench.note_stage(out, "supernet sandwich")
    bench.note_stage(out, "truth")
    (out / "scan-sandwich.json").write_text(json.dumps({**_scan("sandwich", 80.0, 77.0), "commit": "c" * 40}))
    result = bench.report(out)
    assert result["stage_commits"] == {"supernet sandwich": ["a" * 40, "b" * 40], "truth": ["b" * 40],
                                       "scan sandwich": ["c" * 40]}
    assert ("Code (commit of each stage; a stage resumed by newer code lists both): supernet sandwich aaaaaaa, "
            "bbbbbbb; truth bbbbbbb; scan sandwich ccccccc.") in (tmp_path / "B.md").read_text()
