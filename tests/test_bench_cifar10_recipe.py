"""bench/cifar10_recipe.py (issue 29): a finished run recorded in the committed results is reused on a
machine whose artifact folder lacks it, and a run in progress is reported as far as it got."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cifar10_recipe as bench  # noqa: E402


def test_a_recorded_finished_run_is_reused_not_trained_again(tmp_path, monkeypatch):
    arm = bench.PILOT[0]
    record = {"arm": arm.name, "finished": True, "val_top1": 77.46, "commits": ["abc"], "epochs_done": 10}
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"pilot": [record], "peer": None}))
    monkeypatch.setattr(bench, "RESULTS_JSON", results)
    monkeypatch.setattr(bench, "train_reference", lambda *a, **k: pytest.fail("a recorded run was trained again"))
    out = tmp_path / "artifacts"
    out.mkdir()
    reused = bench.run_arm(arm, out, tmp_path / "data")
    assert reused["val_top1"] == 77.46 and reused["reused_from_record"] is True
    assert bench.arm_progress(arm, out) == record
    # an unfinished record is not reused: that arm would be trained
    assert bench.recorded_runs().keys() == {arm.name}
    results.write_text(json.dumps({"pilot": [{**record, "finished": False}], "peer": None}))
    assert bench.recorded_runs() == {}


def test_progress_of_a_run_in_its_folder(tmp_path):
    arm = bench.PILOT[1]
    run = tmp_path / arm.name
    run.mkdir()
    (run / "history.json").write_text(json.dumps([
        {"epoch": 1, "train_images_per_s": 300.0}, {"epoch": 2, "train_images_per_s": 200.0},
        {"epoch": 3, "train_images_per_s": 250.0, "val_top1": 60.5}]))
    (run / "meta.json").write_text(json.dumps({"commits": ["abc"], "finished": False}))
    progress = bench.arm_progress(arm, tmp_path)
    assert (progress["epochs_done"], progress["val_top1"], progress["val_epoch"], progress["finished"]) == (3, 60.5, 3, False)
    assert progress["epoch_s"] == pytest.approx(45000 / 250.0)


def test_the_packaged_cifar10_p1_config_carries_the_pilot_recipe():
    """configs/train/cifar10-p1.yaml is the recipe the pilot chose (bench.BASE_RECIPE), on the cifar10-p1
    profile: the two cannot drift apart."""
    from autovit_ray.training.config import load_config

    cfg = load_config("cifar10-p1").to_dict()
    assert cfg["input_profile"] == "cifar10-p1" and cfg["data"]["crop"] == "pad"
    for key, value in bench.BASE_RECIPE.items():
        if key.startswith("eval."):  # how often and how much the bench evaluates, not the recipe
            continue
        section, field = key.split(".")
        got = cfg[section][field]
        got = list(got) if isinstance(got, tuple) else got
        expected = pytest.approx(value) if isinstance(value, (float, list)) else value
        assert got == expected, (key, got, value)


def test_span_records_are_the_finished_records_not_the_arch_files(tmp_path):
    (tmp_path / "span-largest-padcrop-e10.arch.json").write_text('{"supernet": "xxs"}')
    assert bench.span_records(tmp_path) == {}  # the run has started: its arch file exists, no record yet
    (tmp_path / "span-largest-padcrop-e10.json").write_text('{"name": "xxs_r32", "val_top1": 80.0}')
    assert bench.span_records(tmp_path) == {"largest": {"name": "xxs_r32", "val_top1": 80.0}}


def test_benchmarks_md_shows_the_committed_results():
    """The section in BENCHMARKS.md is what `--report-only` renders from bench/results/cifar10_recipe.json
    (the LUT's validation included), so neither can be edited without the other."""
    committed = json.loads(bench.RESULTS_JSON.read_text())
    text = bench.section(committed)
    assert text.strip() in (bench.ROOT / "BENCHMARKS.md").read_text()
    if committed.get("lut"):
        assert "predicted / measured = x" in text and "Kendall tau" in text
