"""bench/cifar10_beyond.py: what it refuses to build on, and its report (seconds; the runs take hours)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from autovit_ray.space import load_space

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cifar10_beyond as beyond  # noqa: E402


def test_an_unfinished_first_result_stops_the_run_with_what_to_do(tmp_path) -> None:
    with pytest.raises(SystemExit, match="run bench/cifar10_result.py to its end first"):
        beyond.first_result(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"train": {}, "budgets": {}}))
    with pytest.raises(SystemExit, match="no 'headline'"):
        beyond.first_result(tmp_path)
    no_choice = {"selection": {"c2f-1.0x": {"chosen": None}}}
    with pytest.raises(SystemExit, match="chose no subnet at 1.0x"):
        beyond.chosen_arch(no_choice, 1.0)


def test_the_kd_run_is_soft_in_place_distillation_and_a_no_kd_checkpoint_is_refused(tmp_path) -> None:
    settings = beyond.Settings(out=tmp_path, data_dir="/nonexistent", epochs=30, pilot_epochs=6, threads=1)
    kd = settings.config("light", beyond.KD_OVERRIDES)
    assert (kd.kd.kind, kd.kd.inplace, kd.kd.teacher, kd.train.sampler) == ("soft", True, None, "uniform")
    plain = {"config": settings.config("light").to_dict(), "space": {"name": "xxs", "profile": "cifar10"}}
    with pytest.raises(beyond.Mismatch, match="distillation"):
        beyond.base.check_supernet_meta(plain, kd, tmp_path)


def test_a_stand_alone_checkpoint_of_another_arch_is_refused(tmp_path) -> None:
    space = load_space("xxs", input_profile="cifar10")
    arch, other = space.sample(random.Random(0)), space.sample(random.Random(1))
    check = beyond.standalone_check(arch)
    check({"space": {"fingerprint": space.restricted_to(arch).fingerprint()}}, tmp_path)
    with pytest.raises(beyond.Mismatch, match="trained another arch"):
        check({"space": {"fingerprint": space.restricted_to(other).fingerprint()}}, tmp_path / "a" / "b" / "c")


def test_the_report_marks_partial_training_and_quotes_the_paired_differences() -> None:
    first = {"train": {"recipe": "light", "adaptation": "stem1", "supernet": {"1": {"val_top1_smallest": 40.0}},
                       "peer": [{"val_top1_curve": 45.0}]}}
    record = {"train": {beyond.KD_RUN: {"epochs": {"1": {"val_top1_smallest": 42.5}}, "wall_s": 3600.0}}}
    lines = "\n".join(beyond.report_sections(record, first, epochs=30))
    assert "KD supernet: 1/30 epochs, 1.00 h of training calls — in progress, numbers partial." in lines
    assert "| 1 | 40.0 | 42.5 |" in lines
    assert "Status: in progress; the comparison" in lines
    measured = {"median_ms": 2.0, "p10_ms": 1.9, "p90_ms": 2.2, "ratio": 1.0}
    diff = {"difference": 1.25, "low": 0.5, "high": 2.0, "a_only": 300, "b_only": 175, "images": 10_000}
    record["compare"] = {"rows": {"peer": {"val_top1": 80.0, "test_top1": 79.0, "params": 1_000_000,
                                           "macs": 2e8, "measured": measured}},
                         "differences": {"stand-alone vs inherited (no-KD supernet)": diff}}
    lines = "\n".join(beyond.report_sections(record, first, epochs=30))
    assert "| peer | 80.00 | 79.00 | – | 1.000 M | 200.0 | 2.000 (1.900–2.200) | 1.00 |" in lines
    assert "Status: in progress" not in lines
    assert "| stand-alone vs inherited (no-KD supernet) | +1.25 [+0.50, +2.00] | 300 | 175 |" in lines


def test_the_reading_follows_the_paired_intervals() -> None:
    def diff(low: float, high: float) -> dict:
        return {"difference": (low + high) / 2, "low": low, "high": high}

    rows = {"chosen 1.0x, KD search and supernet": {"test_vs_peer": diff(0.2, 1.4), "measured": {"ratio": 0.98}},
            "chosen 1.0x (no-KD search), stand-alone": {"test_vs_peer": diff(-0.5, 0.7)}}
    differences = {"chosen 1.0x: KD vs no-KD": diff(0.5, 2.5),
                   "same arch inherited: KD vs no-KD supernet": diff(-0.2, 0.4),
                   "stand-alone vs inherited (no-KD supernet)": diff(-2.0, -0.4)}
    text = beyond.reading({"rows": rows, "differences": differences})
    assert "the KD search's chosen subnet beats the peer (+0.80 pp [+0.20, +1.40], at 0.98×" in text
    assert "compared with the no-KD search's choice it beats that subnet (+1.50 pp" in text
    assert "At ≤ 0.8× the peer's latency the KD search chose no subnet." in text
    assert "inherited from the KD supernet is not distinguishable from its no-KD inheritance" in text
    assert "that arch loses to its no-KD inheritance (-1.20 pp [-2.00, -0.40]) and is not distinguishable from the peer" in text
