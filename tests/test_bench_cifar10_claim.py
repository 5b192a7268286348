"""bench/cifar10_claim.py (issue 31): the reading fixed before looking, the random control's rejection
sampling, the refusals (another recipe, a random arch outside the budget, a latency file of another
backend or thread count, the second latency measurement within the hour) and the report from a
synthetic record. Seconds: the expensive calls (training, search, measurement) are fakes or absent."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cifar10_claim as claim  # noqa: E402
import common  # noqa: E402
from cifar10_recipe import Arm, arm_config, train_overrides  # noqa: E402

from autovit_ray.plan import count_params  # noqa: E402
from autovit_ray.space import load_space  # noqa: E402
from autovit_ray.training.config import load_config  # noqa: E402

SPACE = load_space("xxs", input_profile="cifar10-p1")


def fake_ratio(arch) -> float:
    """A deterministic stand-in for a measured latency ratio: 0.7-1.3 from the arch's hash."""
    return 0.7 + int(arch.arch_hash[:6], 16) % 600 / 1000


def peer_config(seed: int = 0, epochs: int = claim.EPOCHS) -> dict:
    return arm_config(Arm("stem1", "padcrop", seed, epochs), Path("/data/cifar10")).to_dict()


def arch_config(seed: int, *extra: str, epochs: int = claim.EPOCHS, recipe: str = "padcrop") -> dict:
    overrides = [*train_overrides(recipe, epochs, Path("/elsewhere/cifar10")), f"seed={seed}", *extra]
    return load_config("cifar10", overrides).to_dict()


# ---------------------------------------------------------------------------------------------------
# The reading


def test_the_random_reading_carries_its_noise_and_never_decides_by_it() -> None:
    """Beside "above the best random arch": the margin, one training's seed sd, and the searched arch
    against the random archs' mean with a Welch interval (reported, not deciding)."""
    v = claim.versus_random([84.0, 84.2, 84.1], [84.3, 84.5, 84.4], [83.0, 83.5, 84.3, 83.2, 83.6])
    assert v["margin_over_best"] == pytest.approx(-0.2) and v["random_mean"] == pytest.approx(83.52)
    assert v["seed_sd"] == pytest.approx(0.1)  # both arms' seed variances are 0.01
    welch = v["versus_mean"]
    assert welch["difference"] == pytest.approx(0.58) and welch["low"] < 0.58 < welch["high"]
    sentence = claim.random_sentence(v, 84.1, 84.3, 5)
    assert sentence.endswith("(reported, not deciding).")
    assert sentence.startswith("Searched vs random: the searched seed mean 84.10 is not above the best of the 5 "
                               "random archs (84.30): a margin of -0.20 points; one training's seed sd here is 0.10")
    one = claim.versus_random([84.0], [], [83.0])  # nothing to take an sd or an interval of
    assert one["seed_sd"] is None and one["random_sd"] is None and one["versus_mean"] is None
    assert claim.random_sentence(one, 84.0, 83.0, 1).endswith("a margin of +1.00 points. The random archs' mean is 83.00.")


def test_welch_has_no_interval_under_two_values_a_side_or_with_both_sides_constant() -> None:
    assert claim.welch_or_none([84.0, 84.0], [83.0, 83.0]) is None  # welch_interval would raise
    assert claim.welch_or_none([84.0], [83.0, 83.5]) is None
    assert claim.welch_or_none([84.0, 84.0], [83.0, 83.5])["difference"] == pytest.approx(0.75)
    assert claim.verdict([84.0, 84.0], [83.0, 83.0], None, None)["beats_peer"] is None


def test_the_smaller_arm_is_read_against_the_peer_with_its_noise() -> None:
    """The searched 0.8x arm (the paper's headline: faster and more accurate): a Welch interval from two
    seeds a side; with one seed, the peer's seed sd beside the difference; each backend's budget in words."""
    peer = {"test_top1": [84.0, 84.4, 84.2]}
    one = claim.smaller_sentence({"test_top1": [83.0], "latency_ratio": {"torch-cpu": [0.78, 0.79],
                                                                         "onnxruntime": [0.83, 0.81]}}, peer)
    assert one.startswith("The searched 0.8x model: 83.00 % test top-1 (1 seed), -1.20 points against the peer's "
                          "seed mean 84.20; one seed gives no interval, and the peer's seed sd, 0.20 points, is")
    assert "on torch-cpu at 0.78x and 0.79x the peer's measured latency in two measurements: within its 0.8x " \
           "budget (parity)" in one and "on onnxruntime at 0.83x and 0.81x the peer's measured latency: over its 0.8x budget in both measurements, " \
        "not met." in one
    two = claim.smaller_sentence({"test_top1": [83.0, 83.4], "latency_ratio": {"torch-cpu": [], "onnxruntime": []}}, peer)
    assert "-1.00 points against the peer's seed mean 84.20, Welch 95 % interval" in two and two.endswith(".")
    assert "(includes zero: no difference detected)" in two  # 2 seeds: -2.20 to +0.20
    worse = claim.smaller_sentence({"test_top1": [82.0, 82.1], "latency_ratio": {}}, peer)
    assert "(below zero: less accurate)" in worse
    assert claim.smaller_sentence({"test_top1": [], "latency_ratio": {}}, peer) is None


def test_the_verdict_is_decided_by_the_welch_interval_and_says_so_in_one_sentence() -> None:
    peer = [84.5, 84.6, 84.4]
    beats = claim.verdict(peer, [85.5, 85.7, 85.6], inherited=84.7, random_best=85.0)
    assert beats["beats_peer"] is True and beats["low"] > 0 and beats["difference"] == pytest.approx(1.1)
    assert beats["beats_peer_inherited"] is True and beats["inherited_above_every_peer_seed"] is True
    assert beats["beats_random"] is True
    assert claim.verdict_sentence(beats, (3, 3), {"torch-cpu": [0.97, 0.98]}).startswith("The searched model beats the hand-designed peer")

    # the interval holds zero: underpowered, "not supported", never "does not hold" nor "faster"
    even = claim.verdict([84.5, 84.9, 84.1], [84.6, 85.2, 84.0], inherited=84.55, random_best=84.9)
    assert even["beats_peer"] is False and even["low"] < 0 < even["high"]
    assert even["beats_peer_inherited"] is True  # 84.55 over the peer's mean 84.5 ...
    assert even["inherited_above_every_peer_seed"] is False  # ... but inside its seed spread
    assert even["beats_random"] is False  # the searched mean 84.6 is under the best random arch
    sentence = claim.verdict_sentence(even, (3, 3), {"torch-cpu": [0.98, 0.99], "onnxruntime": [0.99, 1.01]})
    assert "is not supported by this experiment" in sentence and "includes zero" in sentence
    assert "does not hold" not in sentence and "faster" not in sentence
    # every backend measured is named, each with its own reading of the budget
    assert "on torch-cpu at 0.98x and 0.99x" in sentence and "(parity)" in sentence
    assert sentence.endswith("; on onnxruntime at 0.99x and 1.01x the peer's measured latency: over its 1.0x budget "
                             "in one measurement, not met.")

    worse = claim.verdict(peer, [83.0, 83.2, 82.9], None, None)
    assert worse["beats_peer"] is False and worse["high"] < 0
    text = claim.verdict_sentence(worse, (3, 2), {"torch-cpu": [], "onnxruntime": []})
    assert text.startswith("The hand-designed peer beats the searched model") and "3 seeds of it, 2 of the peer" in text
    assert worse["beats_peer_inherited"] is None and worse["beats_random"] is None

    one_seed = claim.verdict(peer, [85.0], None, None)
    assert one_seed["beats_peer"] is None and claim.verdict_sentence(one_seed, (1, 3), {}).startswith("Not decided yet")


def test_a_latency_budget_holds_only_when_both_measurements_meet_it() -> None:
    assert "measured once" in claim.latency_words([0.98], 1.0)
    assert "not met" in claim.latency_words([0.98, 1.02], 1.0)
    assert "(parity)" in claim.latency_words([0.98, 0.99], 1.0)
    assert "parity" not in claim.latency_words([0.7, 0.72], 0.8) and "faster" not in claim.latency_words([0.7, 0.72], 0.8)


def test_the_inherited_verdict_says_where_it_lies_beside_the_peers_seeds() -> None:
    peer = {"test_top1": [84.08, 83.61], "mean": 83.845, "sd": 0.33}
    assert claim.inherited_sentence(80.85, peer).endswith("not above the peer's mean, below every peer seed.")
    assert claim.inherited_sentence(83.9, peer).endswith("above the peer's mean, inside the peer's seed spread "
                                                         "(83.61-84.08).")
    assert claim.inherited_sentence(84.2, peer).endswith(": above the peer's mean, above every peer seed.")


def test_a_budget_measured_once_is_neither_met_nor_missed_in_the_report(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    _artifacts(out)
    (out / "latency2.json").unlink()
    monkeypatch.setattr(claim, "RECIPE_JSON", tmp_path / "absent.json")
    met = claim.collect(out)["verdict"]["budget_met"]
    assert set(met) == {f"{arm}/{b}" for arm in ("searched_1.0x", "searched_0.8x") for b in claim.LATENCY_BACKENDS}
    assert all(ok is None for ok in met.values())


def test_the_plotted_front_is_the_searchs_front_in_the_latency_accuracy_plane(tmp_path) -> None:
    results = claim.search_results(tmp_path, 1.0)
    results.parent.mkdir(parents=True)
    # the search's three-objective front: (4.0 ms, 79.0) stays on it by its parameters alone
    front = [{"latency": 5.0, "fitness": 80.5, "params": 900}, {"latency": 4.0, "fitness": 79.0, "params": 500},
             {"latency": 3.0, "fitness": 79.5, "params": 800}, {"latency": 4.5, "fitness": 80.0, "params": 850}]
    results.write_text(json.dumps({"pareto_front": front}))
    assert claim.latency_front(tmp_path, 1.0) == [{"latency_ms": 3.0, "val_top1": 79.5},
                                                  {"latency_ms": 4.5, "val_top1": 80.0},
                                                  {"latency_ms": 5.0, "val_top1": 80.5}]
    assert claim.latency_front(tmp_path, 0.8) == []  # no search yet


def test_the_selection_rule_takes_the_best_by_validation_that_meets_the_measured_budget() -> None:
    best = [{"arch": {"n": i}, "name": f"a{i}", "val_top1": 80.0 - i, "latency_ms": 3.0} for i in range(12)]
    candidates = claim.selection_candidates(list(reversed(best)))
    assert [c["name"] for c in candidates] == [f"a{i}" for i in range(10)]
    stats = [{"median_ms": 2.0}, {"median_ms": 2.2}, {"median_ms": 1.9}] + [{"median_ms": 1.0}] * 8
    chosen = claim.measured_selection(candidates, stats, 1.0)
    assert chosen["chosen"] == {"n": 1} and chosen["limit_ms"] == 2.0 and not chosen["candidates"][0]["meets"]
    assert claim.measured_selection(candidates, [{"median_ms": 1.0}] + [{"median_ms": 5.0}] * 10, 0.8)["chosen"] is None
    with pytest.raises(ValueError, match="peer's and 10 candidates' latencies"):
        claim.measured_selection(candidates, stats[:3], 1.0)


# ---------------------------------------------------------------------------------------------------
# The random control


def _draws(seed: int = 0):
    rng = random.Random(seed)
    return lambda: SPACE.sample(rng)


def test_the_random_control_is_rejection_sampled_to_0_9_1_0x_by_measured_latency() -> None:
    measured: list[list] = []

    def ratios(archs: list) -> list[float]:
        measured.append(archs)
        return [fake_ratio(a) for a in archs]

    def small(arch) -> bool:
        return count_params(arch, 10, SPACE) <= 1.6e6

    found = claim.sample_random_control(_draws(), small, ratios, count=5, batch=4)
    assert len(found["archs"]) == 5 and all(0.9 <= row["ratio"] <= 1.0 for row in found["archs"])
    assert all(len(group) == 4 for group in measured) and all(small(a) for group in measured for a in group)
    rejected = [row for row in found["tried"] if not row["accepted"]]
    assert rejected and all(not 0.9 <= row["ratio"] <= 1.0 or row in found["tried"][-4:] for row in rejected)
    assert len({row["name"] for row in found["tried"]}) == len(found["tried"])  # distinct archs
    again = claim.sample_random_control(_draws(), small, lambda archs: [fake_ratio(a) for a in archs], count=5, batch=4)
    assert [row["name"] for row in again["archs"]] == [row["name"] for row in found["archs"]]  # seeded
    with pytest.raises(ValueError, match="fewer than the 5 needed"):
        claim.sample_random_control(_draws(), small, lambda archs: [1.2] * len(archs), count=5, batch=4, max_measured=12)


def _control(budgets: dict) -> dict:
    found = claim.sample_random_control(_draws(), lambda a: True, lambda archs: [fake_ratio(a) for a in archs])
    for row in found["archs"]:
        row["params"] = 1_000_000
    return {**found, "budget": {"latency_budget_ms": budgets["latency_budget_ms"]["1.0"],
                                "params_budget": budgets["params_budget"]}}


BUDGETS = {"peer_lut_ms": 3.0, "peer_params": 1_000_000, "params_budget": 1_400_000.0,
           "latency_budget_ms": {"1.0": 3.0, "0.8": 2.4}}


def test_a_random_arch_outside_the_budget_or_another_budgets_list_is_refused() -> None:
    control = _control(BUDGETS)
    assert len(claim.check_random_control(control, BUDGETS)) == claim.RANDOM_ARCHS
    slow = json.loads(json.dumps(control))
    slow["archs"][2]["ratio"] = 1.03
    with pytest.raises(claim.Mismatch, match=r"1.030x the peer's measured latency.*outside the control's budget"):
        claim.check_random_control(slow, BUDGETS)
    large = json.loads(json.dumps(control))
    large["archs"][0]["params"] = 1_500_000
    with pytest.raises(claim.Mismatch, match="outside the control's budget"):
        claim.check_random_control(large, BUDGETS)
    with pytest.raises(claim.Mismatch, match="sampled under the budgets"):
        claim.check_random_control(control, {**BUDGETS, "params_budget": 2e6})
    with pytest.raises(claim.Mismatch, match="holds 4 archs"):
        claim.check_random_control({**control, "archs": control["archs"][:4]}, BUDGETS)


# ---------------------------------------------------------------------------------------------------
# Refusals


def test_arms_of_another_recipe_epochs_or_data_path_than_the_peers_are_refused() -> None:
    peer = {k: v for k, v in peer_config().items() if k not in ("name", "output_dir", "supernets", "mlflow", "ray")}
    # another seed, data folder, input profile and threads: the same recipe
    claim.check_same_recipe(peer, {"searched-1.0x-s2": arch_config(2), "peer-s1": peer_config(1)})
    for config, what in ((arch_config(0, epochs=10), "epochs 10"),
                         (arch_config(0, recipe="padcrop-ra5"), "data.auto_augment"),
                         (arch_config(0, "data.augment=timm"), "data.augment 'timm'"),
                         (arch_config(0, "optimizer.lr=0.001"), "optimizer.lr")):
        with pytest.raises(claim.Mismatch, match=f"random-1.0x-0-s0 was trained with another recipe.*{what}"):
            claim.check_same_recipe(peer, {"random-1.0x-0-s0": config})


def _latency_file(threads: int = 1, backends: tuple[str, ...] = claim.LATENCY_BACKENDS, finished_at: float = 0.0,
                  ratio: float = 0.98) -> dict:
    def stats(ms: float) -> dict:
        return {"median_ms": ms, "p10_ms": 1.8, "p90_ms": 2.2}

    models = {"peer": stats(2.0), "searched_1.0x": stats(2.0 * ratio), "searched_0.8x": stats(1.5),
              **{f"random_1.0x/{i}": stats(1.9) for i in range(5)}}
    return {"finished_at": finished_at, "backends": {
        b: {"backend": b, "threads": threads, "clock": claim.CLOCK, "models": models} for b in backends}}


def test_a_latency_file_of_another_backend_or_thread_count_is_refused(tmp_path) -> None:
    path = tmp_path / "latency.json"
    claim.check_latency_file(_latency_file(), path)
    with pytest.raises(claim.Mismatch, match="latency.json was measured as .*'torch-cpu', 2, 'wall'"):
        claim.check_latency_file(_latency_file(threads=2), path)
    with pytest.raises(claim.Mismatch, match="coreml"):
        claim.check_latency_file(_latency_file(backends=("torch-cpu", "coreml")), path)
    with pytest.raises(claim.Mismatch, match="this experiment measures"):
        claim.check_latency_file(_latency_file(backends=("torch-cpu",)), path)


def test_a_latency_measurements_host_is_its_own_record_else_the_host_logs_line_before_it(tmp_path) -> None:
    import calendar
    import time

    def at(text: str) -> float:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))

    (tmp_path / claim.HOSTS_LOG).write_text("2026-12-06T12:07:08Z Intel(R) Xeon(R) Processor 2 cpus, session 32\n"
                                            "not a host line\n"
                                            "2026-12-06T14:39:26Z AMD EPYC 7B13 2 cpus, the driver started\n")
    assert claim.latency_hosts(tmp_path) == {}  # nothing measured yet
    (tmp_path / "latency.json").write_text(json.dumps({"process_started_at": at("2026-12-06T08:59:00Z")}))
    (tmp_path / "latency2.json").write_text(json.dumps({"process_started_at": at("2026-12-06T13:00:00Z")}))
    assert claim.latency_hosts(tmp_path) == {"latency": None, "latency2": "Intel(R) Xeon(R) Processor 2 cpus"}
    assert claim.host_at((tmp_path / claim.HOSTS_LOG).read_text().splitlines(), at("2026-12-06T15:00:00Z")) == (
        "AMD EPYC 7B13 2 cpus")
    # a measurement that recorded its host (this code's latency stage) is not looked up
    started = at("2026-12-06T16:00:00Z")
    (tmp_path / "latency2.json").write_text(json.dumps({"process_started_at": started,
                                                        "host": claim.host_line(started)}))
    assert claim.latency_hosts(tmp_path)["latency2"] == claim.host_line(started).partition(" ")[2]
    assert claim.host_line(started).startswith("2026-12-06T16:00:00Z ") and claim.host_line(started).endswith(" cpus")


def test_the_host_log_is_kept_so_a_report_written_on_another_machine_names_the_hosts(tmp_path, monkeypatch) -> None:
    """A report rewritten on a new machine (`--report-only` from the kept records) still knows which CPU
    each latency measurement ran on: the host log is kept with the records and restored where missing."""
    monkeypatch.setattr(common, "KEPT", tmp_path / "kept")
    old = tmp_path / "old-machine" / "cifar10_claim"
    old.mkdir(parents=True)
    (old / claim.HOSTS_LOG).write_text("2026-12-06T21:18:00Z AMD EPYC 2 cpus, session 35\n")
    (old / "latency2.json").write_text(json.dumps({"process_started_at": 1796600000.0}))  # 2026-12-06T23:33Z
    assert "cifar10_claim/hosts.log" in common.keep_files(claim.kept_files(old))
    new = tmp_path / "new-machine" / "cifar10_claim"
    common.restore_files(claim.kept_files(new))
    assert claim.latency_hosts(new) == {"latency2": "AMD EPYC 2 cpus"}


def _claim(out: Path, record: dict) -> claim.Claim:
    return claim.Claim(out, Path("/data/cifar10"), (out / "supernet", "sandwich"), {"adaptation": "stem1", "recipe":
                       "padcrop"}, False, record, lambda: None)


def test_latency2_waits_an_hour_after_the_first_measurement(tmp_path, monkeypatch) -> None:
    assert claim.latency2_wait_s({"finished_at": 1000.0}, 1000.0 + 1800) == 1800.0
    assert claim.latency2_wait_s({"finished_at": 1000.0}, 1000.0 + 3600) <= 0
    monkeypatch.setattr(claim, "run_cli", lambda *a, **k: pytest.fail("measured within the hour"))
    (tmp_path / "latency.json").write_text(json.dumps(_latency_file(finished_at=claim.time.time() - 600)))
    with pytest.raises(claim.NotYet, match=r"latency2 .* wait 50 min more \(until \d\d:\d\d\)"):
        claim.run_latency(_claim(tmp_path, {}), "latency2")
    (tmp_path / "latency.json").write_text(json.dumps(_latency_file(finished_at=claim.time.time() - 3700)))
    started = []
    monkeypatch.setattr(claim, "run_cli", lambda args, log, env: started.append(args) or (
        tmp_path / "latency2.json").write_text(json.dumps(_latency_file())))
    record: dict = {}
    claim.run_latency(_claim(tmp_path, record), "latency2")
    assert started[0][:3] == ["cifar10_claim", "--measure-latency", "latency2"]  # a process of its own
    assert record["latency2"]["file"].endswith("latency2.json")


def test_the_command_refuses_to_start_until_issue_30_chose_a_supernet(tmp_path, monkeypatch, capsys) -> None:
    fidelity = tmp_path / "supernet_fidelity.json"
    fidelity.write_text(json.dumps({"chosen": None}))
    monkeypatch.setattr(claim, "FIDELITY_JSON", fidelity)
    assert claim.main(["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)]) == 2
    assert "names no `chosen` supernet yet: run bench/supernet_fidelity.py" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path))
    fidelity.write_text(json.dumps({"chosen": "longer"}))  # a remedy: not trained again by this command
    assert claim.main(["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)]) == 2
    assert "no finished 'longer' supernet" in capsys.readouterr().err
    fidelity.write_text(json.dumps({"chosen": "sandwich"}))
    assert claim.main(["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path), "--supernet",
                       str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint of supernet 'xxs'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_new_machine_trains_the_peers_first_pair_then_the_chosen_supernet_again(tmp_path, monkeypatch) -> None:
    """Checkpoints are not kept: where the chosen supernet is missing, the command trains the peer's first
    seeds (they read no supernet) and then the supernet with bench/supernet_fidelity.py's command, before
    any stage that reads it; a training that does not repeat issue 30's epoch for epoch is scored against
    issue 30's truth, and the report quotes that tau; a rerun does none of it again."""
    scored = [{"epoch": e, "smallest": 70.0 + e, "largest": 71.0 + e, "random_mean": 70.5 + e} for e in (1, 2)]
    subnets = [{"arch": _arch(i), "val_top1": 70.0 + i, "macs": 1e6 * i, "params": 1e5 * i, "in_band": i % 2 == 0}
               for i in range(4)]
    fidelity = tmp_path / "supernet_fidelity.json"
    fidelity.write_text(json.dumps({"chosen": "sandwich", "macs_tau_in_band": 0.34,
                                    "standalone": {"epochs": 15, "subnets": subnets},
                                    "supernets": {"sandwich": {"per_epoch": scored, "tau_in_band": 0.41,
                                                               "tau_in_band_ci": [-0.09, 0.82]}}}))
    monkeypatch.setattr(claim, "FIDELITY_JSON", fidelity)
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path / "bench"))
    monkeypatch.setattr(claim, "recipe_choice", lambda: {"adaptation": "stem1", "recipe": "padcrop"})
    events: list[str] = []
    trained = tmp_path / "bench" / "supernet_fidelity" / "sandwich-e30"

    def train_in_child(c, run):  # stands in for `python -m cifar10_claim --train-run <run>`
        events.append(run.name)
        claim.write_json(claim.score_path(c.out, run), {"run": run.name})

    def chosen_checkpoint(chosen, out):  # stands in for a finished checkpoint once trained
        if chosen not in events:
            raise ValueError("no checkpoint of supernet 'xxs'")
        return trained

    def score_on_truth(checkpoint, rows, seed, calib_batches, calib_size):  # minutes of inference
        events.append("scored")
        assert (checkpoint, rows, seed, calib_batches, calib_size) == (trained, subnets, 0, claim.SCAN_CALIB_BATCHES,
                                                                      None)
        if events.count("scored") == 1:
            raise KeyboardInterrupt  # the session ends while it scores
        return {"inherited": [71.0, 70.5, 70.0, 69.0], "tau_in_band": 0.2, "tau_in_band_ci": [-0.3, 0.6],
                "tau_over_macs": 0.1, "tau_over_macs_ci": [-0.4, 0.5]}

    monkeypatch.setattr(claim, "train_in_child", train_in_child)
    monkeypatch.setattr(claim, "chosen_checkpoint", chosen_checkpoint)
    monkeypatch.setattr(claim, "train_supernet", lambda sampler, out, data_dir: events.append(sampler))
    monkeypatch.setattr(claim, "score_on_truth", score_on_truth)
    # its training's own validation: epoch 1 as issue 30 scored it, epoch 2 one digit off
    monkeypatch.setattr(claim, "per_epoch", lambda folder: [scored[0], {**scored[1], "largest": 73.01}]
                        if folder == trained else pytest.fail(f"read {folder}"))
    monkeypatch.setattr(claim, "supernet_checkpoint", lambda override: (chosen_checkpoint("sandwich", None), "sandwich"))
    argv = ["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path), "--stop-after", "supernet"]
    assert claim.main(argv) == 130
    assert events == ["peer-s0", "peer-s1", "sandwich", "scored"]
    record = json.loads((tmp_path / "out" / "claim.json").read_text())
    assert record["peer"]["runs"] == ["peer-s0", "peer-s1"]
    assert record["supernet"]["source"] == "sandwich" and record["supernet"]["trained_again"]
    assert record["supernet"]["same_per_epoch"] == {"epochs": 2, "same": 1}
    sentence = claim.supernet_sentence(claim.searched_supernet({**record, "budgets": {"supernet_source": "sandwich"}}))
    assert "1 of its 2 epochs has the same validation numbers" in sentence and "does not describe it" in sentence
    assert "not scored against issue 30's truth yet" in sentence and "0.41" not in sentence

    assert claim.main(argv) == 0  # the rerun scores it, and trains nothing
    assert events == ["peer-s0", "peer-s1", "sandwich", "scored", "scored"]
    record = json.loads((tmp_path / "out" / "claim.json").read_text())
    assert record["supernet"]["truth_fidelity"]["tau_in_band"] == 0.2
    assert record["supernet"]["truth_fidelity"]["subnets"] == 4 and record["supernet"]["truth_fidelity"]["truth_epochs"] == 15
    supernet = claim.searched_supernet({**record, "budgets": {"supernet_source": "sandwich"}})
    sentence = claim.supernet_sentence(supernet)
    assert "Scored here against issue 30's truth (15-epoch stand-alone runs)" in sentence
    assert "Kendall tau 0.20 [-0.30, 0.60] (MACs alone: 0.34; issue 30's training of it: 0.41 [-0.09, 0.82])" in sentence
    assert "includes zero" in sentence
    assert sentence.endswith("Over the whole truth its tau minus MACs' is +0.10 [-0.40, +0.50]: it is not shown to rank "
                             "better than counting MACs.")
    assert claim.truth_check(tmp_path / "out", [], supernet) is None  # (before the inherited stage)
    assert claim.main(argv) == 0
    assert events.count("scored") == 2 and events.count("sandwich") == 1  # nothing trained or scored twice

    # a training that repeats issue 30's epoch for epoch is issue 30's supernet: its tau, nothing scored here
    repeated = {**record, "budgets": {"supernet_source": "sandwich"},
                "supernet": {"source": "sandwich", "trained_again": True, "same_per_epoch": {"epochs": 2, "same": 2}}}
    override = claim.searched_supernet({"budgets": {"supernet_source": "--supernet"}})
    assert claim.supernet_sentence(override) == ("The searches read a supernet given with --supernet, which issue 30 "
                                                 "did not score.") and override["tau_in_band"] is None
    sentence = claim.supernet_sentence(claim.searched_supernet(repeated))
    assert "2 of its 2 epochs have the same validation numbers as the one issue 30 scored, to every digit. It ranks" \
        in sentence and "Kendall tau 0.41 [-0.09, 0.82] (MACs alone: 0.34):" in sentence


# ---------------------------------------------------------------------------------------------------
# The stand-alone stage and the report, on a synthetic record


def _arch(i: int) -> dict:
    return SPACE.sample(random.Random(100 + i)).to_dict()


@pytest.fixture(autouse=True)
def _kept_in_tmp(tmp_path, monkeypatch):
    """No test writes into (or restores from) the repository's kept files."""
    monkeypatch.setattr(common, "KEPT", tmp_path / "kept")


def _artifacts(out: Path) -> dict:
    """A finished run's files, made up: claim.json, random.json, the latency files, a search's front."""
    select = {claim.search_name(f): {"chosen": _arch(int(f * 10)), "peer_measured": {"median_ms": 2.0},
                                     "candidates": [{"meets": True, "measured": {"median_ms": 1.9 * f}}],
                                     "inherited": {"name": "x", "val_top1": 80.0, "test_top1": 84.0, "params": 1,
                                                   "macs": 1, "latency_ms": 3.0}, "commit": "c" * 40}
              for f in claim.FACTORS}
    record = {"budgets": {**BUDGETS, "supernet_source": "sandwich", "commit": "b" * 40}, "select": select,
              "code_runs": []}
    out.mkdir(parents=True, exist_ok=True)
    (out / "claim.json").write_text(json.dumps(record))
    (out / "random.json").write_text(json.dumps(_control(BUDGETS)))
    (out / "latency.json").write_text(json.dumps(_latency_file(ratio=0.97)))
    (out / "latency2.json").write_text(json.dumps(_latency_file(ratio=0.99)))
    front = out / "search" / "c2f-1.0x" / "results.json"
    front.parent.mkdir(parents=True)
    front.write_text(json.dumps({"pareto_front": [{"latency": 2.5, "fitness": 78.0}, {"latency": 3.0, "fitness": 79.0}]}))
    return record


def _test_record(run: claim.Run, top1: float, config: dict) -> dict:
    rng = random.Random(f"{run.name}")
    return {"run": run.name, "arm": run.arm, "seed": run.seed, "index": run.index, "arch": None, "params": 1_300_000,
            "test_top1": top1, "correct": "".join(rng.choice("01") for _ in range(200)), "config": config,
            "folder": "x", "reused": False, "wall_s": 1.0, "commit": "d" * 40}


def test_the_standalone_stage_trains_in_order_and_refuses_an_arm_of_another_recipe(tmp_path, monkeypatch,
                                                                                     one_thread) -> None:
    assert [r.name for r in claim.standalone_runs(False)] == [
        "peer-s0", "searched-1.0x-s0", "peer-s1", "searched-1.0x-s1", "peer-s2", "searched-1.0x-s2",
        *(f"random-1.0x-{i}-s0" for i in range(5)), "searched-0.8x-s0"]
    assert [r.name for r in claim.standalone_runs(True)][-3:] == ["searched-0.8x-s0", "searched-0.8x-s1",
                                                                   "searched-0.8x-s2"]
    record = _artifacts(tmp_path)
    trained = []

    def score_run(c, run, arch):  # stands in for the hours of training and the test evaluation
        trained.append((run.name, arch))
        epochs = 10 if run.name == "peer-s2" else claim.EPOCHS
        return _test_record(run, 84.0, arch_config(run.seed, epochs=epochs) if arch else peer_config(run.seed, epochs))

    monkeypatch.setattr(claim, "score_run", score_run)
    monkeypatch.setattr(claim, "train_in_child", claim.train_one)  # this process, not one of its own
    monkeypatch.setattr(claim, "STANDALONE_AT_ONCE", 1)  # one at a time: the order below is the start order
    with pytest.raises(claim.Mismatch, match="peer-s2 was trained with another recipe.*epochs 10"):
        claim.run_standalone(_claim(tmp_path, record))
    assert [name for name, _ in trained] == ["peer-s0", "searched-1.0x-s0", "peer-s1", "searched-1.0x-s1", "peer-s2"]
    assert trained[1][1].to_dict() == record["select"]["c2f-1.0x"]["chosen"] and trained[0][1] is None
    assert not claim.score_path(tmp_path, claim.Run("peer", 2)).exists()  # refused: not scored, retried on a rerun
    assert claim.score_path(tmp_path, claim.Run("searched_1.0x", 1)).is_file()


def test_stand_alone_runs_train_two_at_once_each_in_a_process_of_its_own(tmp_path, monkeypatch) -> None:
    import threading
    import time

    record = _artifacts(tmp_path)
    c = _claim(tmp_path, record)
    lock, active, started = threading.Lock(), [0], []

    def train_in_child(c, run):  # stands in for `python -m cifar10_claim --train-run <run>`
        with lock:
            active[0] += 1
            started.append((run.name, active[0]))
        time.sleep(0.2)
        claim.write_json(claim.score_path(c.out, run), {"run": run.name})
        with lock:
            active[0] -= 1

    monkeypatch.setattr(claim, "train_in_child", train_in_child)
    claim.score_path(tmp_path, claim.Run("peer", 0)).parent.mkdir(parents=True)
    claim.write_json(claim.score_path(tmp_path, claim.Run("peer", 0)), {"run": "peer-s0"})  # done before
    claim.run_standalone(c)
    names = [r.name for r in claim.standalone_runs(False)]
    assert [name for name, _ in started] == names[1:]  # in order, the scored one not again
    assert max(n for _, n in started) == claim.STANDALONE_AT_ONCE == 2
    assert record["standalone"]["runs"] == len(names)
    # the process each run gets: this experiment's settings, and the run named
    argv = claim.child_argv(c, claim.Run("random_1.0x", 0, 3))
    assert argv[:3] == ["cifar10_claim", "--train-run", "random-1.0x-3-s0"]
    assert "--supernet" not in argv and "--full" not in argv  # a run's process reads no supernet
    # a failed run stops further starts; the running ones end; the failure is raised
    started.clear()
    for name in names:
        claim.score_path(tmp_path, next(r for r in claim.standalone_runs(False) if r.name == name)).unlink(
            missing_ok=True)

    def failing(c, run):
        started.append((run.name, 0))
        if run.name == "searched-1.0x-s0":
            raise RuntimeError("killed")
        time.sleep(0.3)

    monkeypatch.setattr(claim, "train_in_child", failing)
    with pytest.raises(RuntimeError, match="killed"):
        claim.run_standalone(c)
    assert [name for name, _ in started] == ["peer-s0", "searched-1.0x-s0"]


def test_a_train_run_process_trains_the_run_it_names_and_writes_no_record(tmp_path, monkeypatch, capsys) -> None:
    record = _artifacts(tmp_path)
    before = (tmp_path / "claim.json").read_text()
    monkeypatch.setattr(claim, "supernet_checkpoint", lambda override: pytest.fail("a run's process read the supernet"))
    trained = []
    monkeypatch.setattr(claim, "train_one", lambda c, run: trained.append((run, c.supernet, c.full, c.record)))
    c = _claim(tmp_path, record)
    argv = claim.child_argv(c, claim.Run("random_1.0x", 0, 3))[1:]  # less the module name
    assert claim.main(argv) == 0
    assert trained == [(claim.Run("random_1.0x", 0, 3), None, False, json.loads(before))]
    assert (tmp_path / "claim.json").read_text() == before  # the parent alone writes the record
    assert claim.main(["--train-run", "random-1.0x-9-s0", *argv[2:]]) == 2
    assert "--train-run 'random-1.0x-9-s0' is not a run of this experiment" in capsys.readouterr().err


def test_the_inherited_stage_scores_every_subnet_arm_once_with_the_truths_calibration(tmp_path,
                                                                                      monkeypatch) -> None:
    import autovit_ray.fidelity

    record = _artifacts(tmp_path)
    scored = []

    def inherited_top1(checkpoint, archs, calib_batches):  # stands in for the supernet's validation pass
        scored.append((checkpoint, archs, calib_batches))
        return [70.0 + i for i in range(len(archs))]

    monkeypatch.setattr(autovit_ray.fidelity, "inherited_top1", inherited_top1)
    c = _claim(tmp_path, record)
    claim.run_inherited(c)
    claim.run_inherited(c)  # done: not scored again
    assert len(scored) == 1 and scored[0][0] == tmp_path / "supernet" and scored[0][2] == claim.SCAN_CALIB_BATCHES
    saved = json.loads((tmp_path / "inherited.json").read_text())
    assert list(saved["subnets"]) == ["searched_1.0x", "searched_0.8x", *(f"random_1.0x/{i}" for i in range(5))]
    assert saved["subnets"]["searched_0.8x"] == {"arch": record["select"]["c2f-0.8x"]["chosen"], "val_top1": 71.0}
    assert saved["supernet_source"] == "sandwich" and record["inherited"]["file"].endswith("inherited.json")


def test_the_truth_check_ranks_30_epoch_runs_by_inherited_accuracy_beside_the_15_epoch_truth(tmp_path) -> None:
    supernet = {"source": "sandwich", "truth_epochs": 15, "tau_in_band": 0.55, "tau_in_band_ci": [0.1, 0.9]}
    assert claim.truth_check(tmp_path, [], supernet) is None  # before the inherited stage
    keys = ["searched_1.0x", "searched_0.8x", "random_1.0x/0", "random_1.0x/1"]
    (tmp_path / "inherited.json").write_text(json.dumps({"subnets": {
        k: {"arch": {}, "val_top1": v} for k, v in zip(keys, (80.0, 78.0, 76.0, 77.0))}}))
    runs = [claim.Run("peer", 0), claim.Run("searched_1.0x", 0), claim.Run("searched_1.0x", 1),
            claim.Run("searched_0.8x", 0), claim.Run("random_1.0x", 0, 0), claim.Run("random_1.0x", 0, 1)]
    tests = [_test_record(run, top1, {}) for run, top1 in zip(runs, (99.0, 85.0, 86.0, 84.0, 83.0, 82.0))]
    # read only once every subnet arm has a score: three concordant points would resample to [1.00, 1.00]
    partial = claim.truth_check(tmp_path, tests[:5], supernet, resamples=200)
    assert [s["key"] for s in partial["subnets"]] == keys[:3]  # random arch 1 has no 30-epoch run yet
    assert partial["kendall_tau"] is None and partial["tau_ci"] is None and partial["intervals_overlap"] is None
    assert claim.truth_check_sentence(partial) == ("Issue 30's 15-epoch truth checked at 30 epochs: 3 of the 4 subnet "
                                                   "arms trained so far; the check waits for all of them.")
    assert claim.truth_check_sentence(claim.truth_check(tmp_path, tests[:1], supernet)) is None  # none trained yet
    check = claim.truth_check(tmp_path, tests, supernet, resamples=200)
    assert [s["key"] for s in check["subnets"]] == keys
    assert check["subnets"][0]["standalone_test_top1"] == 85.5 and check["subnets"][0]["seeds"] == 2
    # the random archs' pair is the one discordant pair of six: tau (5 - 1) / 6
    assert check["kendall_tau"] == pytest.approx(2 / 3) and check["truth"]["epochs"] == 15
    low, high = check["tau_ci"]
    assert low < 2 / 3 <= high and check["intervals_overlap"] is True  # four points: a wide interval
    sentence = claim.truth_check_sentence(check)
    assert "over the 4 subnet arms" in sentence and "Kendall tau 0.67 [" in sentence
    assert "15-epoch truth's in-band tau 0.55 [0.10, 0.90]" in sentence
    # a perfectly ordered sample: every bootstrap resample is too, so [1.00, 1.00] would bound nothing
    ordered = [*tests[:5], _test_record(runs[5], 82.5, {})]
    (tmp_path / "inherited.json").write_text(json.dumps({"subnets": {
        k: {"arch": {}, "val_top1": v} for k, v in zip(keys, (80.0, 78.0, 77.0, 76.0))}}))
    concordant = claim.truth_check(tmp_path, ordered, supernet, resamples=200)
    assert concordant["kendall_tau"] == pytest.approx(1.0) and concordant["tau_ci"] is None
    assert concordant["intervals_overlap"] is None
    assert ("Kendall tau 1.00 (no bootstrap interval: every resample of a sample this ordered ranks alike)"
            in claim.truth_check_sentence(concordant)) and "no interval to compare" in claim.truth_check_sentence(concordant)
    unscored = {**supernet, "source": "--supernet", "tau_in_band": None, "tau_in_band_ci": None}
    other = claim.truth_check(tmp_path, tests, unscored, resamples=200)  # a checkpoint issue 30 did not score
    assert other["truth"] is None and "no truth of issue 30" in claim.truth_check_sentence(other)


def test_the_peers_seed_0_trained_here_is_set_beside_the_recipe_issues_run_of_that_seed() -> None:
    peer = {"seeds": [0, 1], "test_top1": [84.08, 83.61], "reused_seed0": False,
            "recipe_run": {"arm": "stem1-padcrop-s0-e30", "val_top1": 84.5, "test_top1": 84.58}}
    sentence = claim.peer_seed0_sentence(peer)
    assert "trained here, with 1 torch thread" in sentence
    assert "it scores 84.08 % test top-1 where the recipe issue's run of the same seed and recipe" in sentence
    assert "scored 84.58" in sentence
    assert claim.peer_seed0_sentence({**peer, "seeds": [1], "test_top1": [83.61]}).endswith("not on this machine).")
    assert claim.peer_seed0_sentence({**peer, "reused_seed0": True}) == "The peer's seed 0 is the recipe issue's 30-epoch run."


def test_the_report_from_a_synthetic_record_has_the_issues_fields(tmp_path, monkeypatch) -> None:
    for name, value in (("RESULTS_JSON", tmp_path / "cifar10_claim.json"), ("BENCHMARKS", tmp_path / "BENCHMARKS.md"),
                        ("PNG", tmp_path / "cifar10_claim.png"), ("FIDELITY_JSON", tmp_path / "fidelity.json")):
        monkeypatch.setattr(claim, name, value)
    (tmp_path / "fidelity.json").write_text(json.dumps({"chosen": "sandwich", "standalone": {"epochs": 15},
                                                        "supernets": {"sandwich": {"tau_in_band": 0.6,
                                                                                   "tau_in_band_ci": [0.2, 0.9],
                                                                                   "tau_over_macs": 0.3,
                                                                                   "tau_over_macs_ci": [0.05, 0.6]}},
                                                        "macs_tau_in_band": 0.34}))
    out = tmp_path / "out"
    empty = claim.report(out)  # nothing run yet: a report without numbers
    assert empty["verdict"]["beats_peer"] is None and not (tmp_path / "cifar10_claim.png").exists()
    assert empty["truth_check"] is None
    _artifacts(out)
    keys = ["searched_1.0x", "searched_0.8x", *(f"random_1.0x/{i}" for i in range(5))]
    (out / "inherited.json").write_text(json.dumps({"subnets": {
        k: {"arch": {}, "val_top1": 70.0 + i} for i, k in enumerate(keys)}}))
    (out / "standalone").mkdir()
    top1 = {"peer": [84.5, 84.6, 84.4], "searched_1.0x": [85.5, 85.7, 85.6], "searched_0.8x": [84.0]}
    for run in claim.standalone_runs(False):
        value = 83.0 + run.index * 0.3 if run.index is not None else top1[run.arm][run.seed]
        config = peer_config(run.seed) if run.arm == "peer" else arch_config(run.seed)
        (out / "standalone" / f"{run.name}.test.json").write_text(json.dumps(_test_record(run, value, config)))
    table6 = out / "table6" / "search_strategies.json"
    table6.parent.mkdir()
    runs = [{"strategy": s, "seed": seed, "best_val_half": 80.0, "best_val_other_half": 79.5, "best_test": 79.0,
             "actor_evaluations": 300, "wall_s": 600.0, "curve": [80.0]} for s in ("coarse-to-fine", "evolution",
                                                                                  "random") for seed in (0, 1, 2)]
    reach = {"target_val_half": 80.0, "evaluations": 301, "interval_95": [120, 301], "budget": 300,
             "not_reached_means": 301, "claim_holds": False}
    table6.write_text(json.dumps({"evaluations": 300, "seeds": [0, 1, 2], "runs": runs, "reach": reach, "inputs": {}}))

    result = claim.report(out)
    saved = json.loads((tmp_path / "cifar10_claim.json").read_text())
    assert saved["recipe"]["adaptation"] == "stem1" and saved["recipe"]["recipe"] == "padcrop" and saved["epochs"] == 30
    assert set(saved["arms"]) == {"peer", "searched_1.0x", "searched_0.8x", "random_1.0x"}
    for arm in ("peer", "searched_1.0x", "searched_0.8x"):
        entry = saved["arms"][arm]
        assert entry["test_top1"] == top1[arm] and entry["params"] == 1_300_000 and entry["arch"]
        assert set(entry["latency_ratio"]) == {"torch-cpu", "onnxruntime"}
        assert all(len(r) == 2 for r in entry["latency_ratio"].values())  # both measurements
    assert saved["arms"]["searched_1.0x"]["latency_ratio"]["torch-cpu"] == pytest.approx([0.97, 0.99])
    assert saved["arms"]["searched_1.0x"]["latency_ms"]["onnxruntime"][1] == [pytest.approx(1.98), 1.8, 2.2]
    assert saved["arms"]["searched_0.8x"]["inherited"]["test_top1"] == 84.0  # beside its stand-alone numbers
    randoms = saved["arms"]["random_1.0x"]
    assert randoms["test_top1"] == pytest.approx([83.0, 83.3, 83.6, 83.9, 84.2]) and len(randoms["arch"]) == 5
    assert len(randoms["params"]) == 5 and all(len(r) == 2 for r in randoms["latency_ratio"]["torch-cpu"])
    v = saved["verdict"]
    assert {"beats_peer", "difference", "low", "high", "beats_peer_inherited", "beats_random"} <= set(v)
    assert v["beats_peer"] is True and v["beats_peer_inherited"] is False and v["beats_random"] is True
    assert [d["seed"] for d in v["paired_by_seed"]] == [0, 1, 2] and v["budget_met"]["searched_1.0x/torch-cpu"]
    seed0 = v["paired_by_seed"][0]
    assert (f"- seed 0: paired image-level difference {seed0['difference']:+.2f} [{seed0['low']:+.2f}, "
            f"{seed0['high']:+.2f}] (bootstrap over the 200 test images; McNemar exact p = {seed0['mcnemar_p']:.2g}; "
            "reported, not deciding)") in (tmp_path / "BENCHMARKS.md").read_text()
    assert len(saved["table6"]["runs"]) == 9 and "curve" not in saved["table6"]["runs"][0]
    assert saved["commits"]["budgets"] == "b" * 40 and saved["commits"]["standalone/peer-s1"] == "d" * 40
    assert saved["commits"]["select/c2f-1.0x"] == "c" * 40
    assert (tmp_path / "cifar10_claim.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert text.count(claim.SECTION) == 1 and result["verdict"]["sentence"] in text
    assert "The searched model beats the hand-designed peer" in text and "| coarse-to-fine | 3 |" in text
    # the issue's Table 6 question: does coarse-to-fine reach evolution's final best in fewer evaluations
    assert "Coarse-to-fine does not reach plain evolution's final best (80.00%, median over seeds) within 300 " \
           "evaluations" in text and "is not supported by this experiment" in text
    assert "Inherited weights: the searched 1.0x model scores 84.00 % on the test set against the peer's seed " \
           "mean 84.50 (sd 0.10, 3 seeds): not above the peer's mean, below every peer seed." in text
    assert len(saved["truth_check"]["subnets"]) == 7 and saved["truth_check"]["truth"]["tau_in_band"] == 0.6
    assert "Issue 30's 15-epoch truth checked at 30 epochs: over the 7 subnet arms" in text
    assert "The searched 0.8x model: 84.00 % test top-1 (1 seed), -0.50 points against the peer's seed mean" in text
    assert saved["supernet"] == {"source": "sandwich", "tau_in_band": 0.6, "tau_in_band_ci": [0.2, 0.9],
                                 "scored_here": False, "issue30_tau_in_band": 0.6, "issue30_tau_in_band_ci": [0.2, 0.9],
                                 "truth_epochs": 15, "macs_tau_in_band": 0.34, "tau_over_macs": 0.3,
                                 "tau_over_macs_ci": [0.05, 0.6], "trained_again": False, "same_per_epoch": None}
    assert "supernet. It ranks stand-alone accuracy inside the peer's latency band at Kendall tau 0.60 " \
           "[0.20, 0.90] (MACs alone: 0.34): its interval excludes zero. Over the whole truth its tau minus MACs' is " \
           "+0.30 [+0.05, +0.60]: it ranks better than counting MACs." in text and "trained again" not in text
    # the product's page of the artifacts folder: the arms as its comparison, the verdict on top
    compare = json.loads((out / "compare" / "compare.json").read_text())
    assert [r["model"] for r in compare["rows"]] == ["mobilevit_xxs", "searched_1.0x", "searched_0.8x",
                                                     *(f"random_1.0x/{i}" for i in range(5))]
    assert compare["rows"][1]["test_top1"] == pytest.approx(85.6) and compare["rows"][1]["kind"] == "searched"
    assert compare["rows"][0]["latency_ratio"] == pytest.approx(1.0) and "seeds [0, 1, 2]" in compare["rows"][0]["note"]
    page = (out / "report.html").read_text()
    assert "<p class=verdict>The searched model beats the hand-designed peer" in page and "random_1.0x/4" in page
    assert ("Searched vs random: the searched seed mean 85.60 is above the best of the 5 random archs (84.20): a "
            "margin of +1.40 points; one training's seed sd here is 0.10 points (pooled over the searched arm's and "
            "the peer's seeds), and each random arch is one training, so the best of them is lifted by its seed noise "
            "too. The random archs' mean is 83.60 (sd 0.47 over "
            "archs); the searched seed mean minus it: +2.00 points, Welch 95 % interval +1.42 to +2.58 (reported, "
            "not deciding).") in text
    assert v["versus_random"]["margin_over_best"] == pytest.approx(1.4)
    # with random archs still training, "beats random" is not read (the best so far is not the best of them)
    for index in (2, 4):
        (out / "standalone" / f"random-1.0x-{index}-s0.test.json").unlink()
    partial = claim.report(out)
    assert partial["verdict"]["beats_random"] is None and partial["arms"]["random_1.0x"]["best"] == pytest.approx(83.9)
    assert partial["verdict"]["versus_random"] is None
    # two of five give no spread to read: the mean and sd over archs wait too, and the table counts
    assert partial["arms"]["random_1.0x"]["mean"] is None and partial["arms"]["random_1.0x"]["sd"] is None
    assert "| random_1.0x | 3 of 5 | 83.00 / 83.30 / – / 83.90 / – | – | – |" in (tmp_path / "BENCHMARKS.md").read_text()
    assert ("Searched vs random: 3 of the 5 random archs trained so far (best 83.90); the reading waits for all "
            "of them.") in (tmp_path / "BENCHMARKS.md").read_text()


# ---------------------------------------------------------------------------------------------------
# The search and select stages' wiring (the product's commands stood in by their argument parsers)


def _best(n: int) -> list[dict]:
    """A search's results.json `best`, made up: n archs, validation falling with the rank."""
    return [{"rank": i + 1, "arch": _arch(i), "name": f"a{i}", "val_top1": 80.0 - i, "test_top1": 79.0 - i,
             "params": 1_000_000, "macs": 20_000_000, "latency_ms": 2.9} for i in range(n)]


def test_the_search_stage_runs_the_products_search_with_the_issues_settings(tmp_path, monkeypatch):
    from autovit_ray.search.cli import config_from_argv

    monkeypatch.setattr(claim, "lut_file", lambda: tmp_path / "lut.parquet")
    configs = []

    def run_cli(args, log, env):  # stands in for `python -m autovit_ray.search`: its own parser reads the flags
        assert args[0] == "autovit_ray.search" and env["MLFLOW_TRACKING_URI"]
        config = config_from_argv(args[1:])
        configs.append(config)
        path = tmp_path / "search" / config.name / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"best": _best(3), "pareto_front": []}))

    monkeypatch.setattr(claim, "run_cli", run_cli)
    record: dict = {"budgets": dict(BUDGETS)}
    c = _claim(tmp_path, record)
    claim.run_search(c)
    claim.run_search(c)  # done: not searched again
    assert [(x.name, x.latency_budget_ms) for x in configs] == [("c2f-1.0x", 3.0), ("c2f-0.8x", 2.4)]
    for x in configs:
        assert (x.strategy, x.population * x.generations, x.top_k, x.seed) == ("coarse-to-fine", 500, 10, 0)
        assert x.params_budget == 1_400_000.0 and x.export_formats == () and x.no_register
        assert x.checkpoint == str(tmp_path / "supernet") and x.lut == str(tmp_path / "lut.parquet")
    assert set(record["search"]) == {"c2f-1.0x", "c2f-0.8x"}


def test_the_select_stage_takes_the_best_by_validation_that_meets_the_measured_budget(tmp_path, monkeypatch):
    for name in ("c2f-1.0x", "c2f-0.8x"):
        path = tmp_path / "search" / name / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"best": _best(12)}))
    measured = []

    def measure(models, backend, clock, rounds, seed, resolution):  # stands in for the interleaved timing
        measured.append((len(models), backend, resolution))
        return [{"median_ms": 2.0}, {"median_ms": 2.5}] + [{"median_ms": 1.5}] * (len(models) - 2)

    monkeypatch.setattr(claim, "measure", measure)
    record: dict = {}
    claim.run_select(_claim(tmp_path, record))
    assert measured == [(11, "torch-cpu", 32)] * 2  # the peer and the 10 best by validation
    chosen = record["select"]["c2f-1.0x"]
    assert chosen["chosen"] == _arch(1) and chosen["inherited"]["name"] == "a1"  # a0 is over the budget
    assert chosen["inherited"]["test_top1"] == 78.0 and len(chosen["candidates"]) == 10
    assert record["select"]["c2f-0.8x"]["chosen"] == _arch(1)  # 1.5 <= 0.8 x 2.0


def test_the_table6_stage_runs_three_strategies_on_this_supernet_and_the_1x_budgets(tmp_path, monkeypatch):
    import search_strategies

    from autovit_ray.search.cli import config_from_argv

    monkeypatch.setattr(claim, "lut_file", lambda: tmp_path / "lut.parquet")
    configs = []

    def run_cli(args, log, env):  # stands in for `python -m autovit_ray.search`: its own parser reads the flags
        config = config_from_argv(args[1:])
        configs.append(config)
        path = Path(config.output_dir) / "search" / config.name / "results.json"
        path.parent.mkdir(parents=True)
        best = {**_best(1)[0], "val_other_top1": 77.0}
        path.write_text(json.dumps({"best": [best], "evaluations": 4, "actor_evaluations": 4, "cache_hits": 0,
                                    "evaluated": [{"fitness": f} for f in (None, 70.0, 79.0, 80.0)]}))

    monkeypatch.setattr(search_strategies, "run_cli", run_cli)
    record: dict = {"budgets": dict(BUDGETS)}
    claim.run_table6(_claim(tmp_path, record))
    assert sorted({x.strategy for x in configs}) == ["coarse-to-fine", "evolution", "random"]
    assert len(configs) == 9 and {x.seed for x in configs} == {0, 1, 2}
    assert all((x.latency_budget_ms, x.params_budget, x.checkpoint) == (3.0, 1_400_000.0, str(tmp_path / "supernet"))
               for x in configs)
    saved = json.loads((tmp_path / "table6" / "search_strategies.json").read_text())
    assert saved["evaluations"] == claim.TABLE6_EVALUATIONS and len(saved["runs"]) == 9
    assert record["table6"]["results"].endswith("search_strategies.json")


def test_the_random_stage_writes_its_control_before_any_training(tmp_path, monkeypatch):
    from autovit_ray.latency import LatencyTable

    class Table:  # stands in for the machine's latency table: 2.4-3.6 ms from the arch's hash
        def predict_latency(self, arch) -> float:
            return 2.4 + int(arch.arch_hash[6:12], 16) % 1200 / 1000

    monkeypatch.setattr(LatencyTable, "load", classmethod(lambda cls, path, space: Table()))
    monkeypatch.setattr(claim, "lut_file", lambda: tmp_path / "lut.parquet")

    def measure(models, backend, clock, rounds, seed, resolution):  # the peer, then each arch at fake_ratio
        archs = [m.arch for m in models[1:]]
        return [{"median_ms": 2.0}] + [{"median_ms": 2.0 * fake_ratio(a)} for a in archs]

    monkeypatch.setattr(claim, "measure", measure)
    record: dict = {"budgets": dict(BUDGETS)}
    claim.run_random(_claim(tmp_path, record))
    saved = json.loads((tmp_path / "random.json").read_text())
    assert len(saved["archs"]) == claim.RANDOM_ARCHS and record["random"]["archs"] == claim.RANDOM_ARCHS
    assert all(0.9 <= row["ratio"] <= 1.0 and row["params"] <= 1_400_000 for row in saved["archs"])
    assert all(0.8 * 3.0 <= row["lut_ms"] <= 1.1 * 3.0 for row in saved["tried"])  # only archs near the budget
    assert [a.to_dict() for a in claim.random_archs(tmp_path, BUDGETS)] == [row["arch"] for row in saved["archs"]]
    claim.run_random(_claim(tmp_path, record))  # written: never drawn again
    assert json.loads((tmp_path / "random.json").read_text()) == saved


def test_a_budget_is_the_table_latency_where_subnets_measure_its_factor_x_the_peer() -> None:
    # table / measured 1.2, 1.25, 1.3 around the budget: the median ratio puts the peer on the table's scale
    got = claim.calibrated_budget(0.8, 2.0, [2.4, 2.5, 2.6], [2.0, 2.0, 2.0])
    assert got == {"peer_measured_ms": 2.0, "level": 1.25, "budget_ms": pytest.approx(0.8 * 2.0 * 1.25), "subnets": 3}
    with pytest.raises(ValueError, match="same subnets"):
        claim.calibrated_budget(1.0, 2.0, [2.4], [])


def test_the_budgets_stage_calibrates_each_budget_beside_subnets_near_it_at_one_thread(tmp_path, monkeypatch):
    """The band's estimate (the peer at 3.0 table ms) only says where to draw; each budget comes from the
    peer measured beside subnets near it, at the claim's setting."""
    from autovit_ray.latency import LatencyTable

    class Table:  # stands in for the machine's latency table: 2.0-3.6 ms from the arch's hash
        def predict_latency(self, arch) -> float:
            return 2.0 + int(arch.arch_hash[6:12], 16) % 1600 / 1000

    monkeypatch.setattr(LatencyTable, "load", classmethod(lambda cls, path, space: Table()))
    monkeypatch.setattr(claim, "lut_file", lambda: tmp_path / "lut.parquet")
    monkeypatch.setattr(claim, "ensure_lut", lambda: None)
    monkeypatch.setattr(claim, "peer_band", lambda out: {"peer_lut_ms": 3.0})
    calls: list[tuple[int, float, float]] = []

    def measure(models, backend, clock, rounds, seed, resolution):  # the peer at 2.0 ms, each subnet at table / 1.25
        assert (backend, clock, rounds, resolution) == ("torch-cpu", claim.CLOCK, claim.ROUNDS, 32)
        luts = [Table().predict_latency(m.arch) for m in models[1:]]
        calls.append((len(luts), min(luts), max(luts)))
        return [{"median_ms": 2.0}] + [{"median_ms": lut / 1.25} for lut in luts]

    monkeypatch.setattr(claim, "measure", measure)
    record: dict = {}
    claim.run_budgets(_claim(tmp_path, record))
    budgets = record["budgets"]
    assert budgets["latency_budget_ms"] == {"1.0": pytest.approx(0.97 * 2.5), "0.8": pytest.approx(0.97 * 2.0)}
    assert budgets["peer_lut_ms"] == pytest.approx(2.5) and budgets["band_peer_lut_ms"] == 3.0
    assert budgets["calibration"]["0.8"]["level"] == pytest.approx(1.25)
    assert budgets["params_budget"] == claim.PARAMS_FACTOR * budgets["peer_params"]
    low, high = claim.CALIBRATION_WINDOW
    assert [n for n, _, _ in calls] == [claim.CALIBRATION_SUBNETS] * 2
    for (_, lo, hi), factor in zip(calls, claim.FACTORS, strict=True):  # drawn near the band's estimate
        assert low * factor * 3.0 <= lo <= hi <= high * factor * 3.0
    sentence = claim.budgets_sentence(budgets, None)
    assert "3% under where" in sentence and ("1.0x 2.425 ms (level 1.250 over 12 subnets: random draws near the "
                                              "band's estimate), 0.8x 1.940 ms (level 1.250 over 12") in sentence
    claim.run_budgets(_claim(tmp_path, record))  # done: not measured again
    assert len(calls) == 2

    # where a first search's candidates were measured beside the peer, they are the calibration set
    candidates = [{"lut_ms": lut, "measured_ms": 2.0} for lut in (1.9, 2.0, 2.1)]  # level 1.0
    first = {"peer_lut_ms": 3.0, "select": {"c2f-1.0x": {"peer_measured_ms": 2.0, "candidates": candidates},
                                            "c2f-0.8x": {"peer_measured_ms": 2.2, "candidates": candidates}}}
    again: dict = {"first_budgets": first}
    claim.run_budgets(_claim(tmp_path, again))
    assert len(calls) == 2  # nothing measured
    assert again["budgets"]["latency_budget_ms"] == {"1.0": pytest.approx(0.97 * 2.0), "0.8": pytest.approx(0.97 * 0.8 * 2.2)}
    assert again["budgets"]["calibration"]["0.8"]["subnets_from"] == "first search c2f-0.8x"
    first = {"peer_lut_ms": 3.0, "select": {"c2f-1.0x": {**first["select"]["c2f-1.0x"], "ratios": [1.005, 1.054]},
                                            "c2f-0.8x": {**first["select"]["c2f-0.8x"], "ratios": [0.818, 0.855]}}}
    assert ("the peer beside random subnets of every size, at the table's 2 threads: 3.000 ms): each search's 10 best "
            "by validation then measured above its budget x the peer (c2f-1.0x: 1.005-1.054x; c2f-0.8x: "
            "0.818-0.855x), so the fixed selection rule chose none.") in claim.budgets_sentence(budgets, first)


def test_a_new_machine_goes_on_from_the_kept_records_without_the_supernet(tmp_path, monkeypatch) -> None:
    """The report keeps the claim's records and every score file in the repository; a run on a new machine
    (an empty artifacts folder) puts them back and, with the supernet's stages done, neither needs the
    supernet nor runs a finished stage again."""
    first = tmp_path / "machine-1"
    record = _artifacts(first)
    record.update({"search": {claim.search_name(f): {"factor": f} for f in claim.FACTORS}, "inherited": {},
                   "table6": {}, "random": {}})
    (first / "claim.json").write_text(json.dumps(record))
    (first / "search" / "c2f-0.8x" / "results.json").parent.mkdir(parents=True)
    (first / "search" / "c2f-0.8x" / "results.json").write_text(json.dumps({"pareto_front": []}))
    run = claim.Run("peer", 0)
    claim.score_path(first, run).parent.mkdir(parents=True)
    claim.write_json(claim.score_path(first, run), _test_record(run, 84.2, peer_config(0)))
    claim.write_json(claim.score_path(first, claim.Run("peer", 1)), _test_record(run, 84.0, peer_config(1)))
    for name, value in (("RESULTS_JSON", tmp_path / "claim.json"), ("BENCHMARKS", tmp_path / "B.md"),
                        ("PNG", tmp_path / "claim.png")):
        monkeypatch.setattr(claim, name, value)
    (tmp_path / "B.md").write_text("# Benchmarks\n")
    monkeypatch.setattr(claim, "experiment_page", lambda out, result: None)
    claim.report(first)
    kept = tmp_path / "kept" / "cifar10_claim"
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        "claim.json", "latency.json", "latency2.json", "random.json", "search/c2f-0.8x/results.json",
        "search/c2f-1.0x/results.json", "standalone/peer-s0.test.json", "standalone/peer-s1.test.json"]
    # machine 2: nothing on disk; the stages up to `random` are all done by the kept records
    second = tmp_path / "machine-2"
    monkeypatch.setattr(claim, "supernet_checkpoint", lambda override: pytest.fail("the supernet was asked for"))
    monkeypatch.setattr(claim, "run_cli", lambda *a, **k: pytest.fail("a finished stage ran again"))
    monkeypatch.setattr(claim, "measure", lambda *a, **k: pytest.fail("a finished stage measured again"))
    monkeypatch.setattr(claim, "recipe_choice", lambda: {"adaptation": "stem1", "recipe": "padcrop"})
    monkeypatch.setattr(claim, "train_in_child", lambda *a: pytest.fail("a kept run trained again"))
    assert claim.main(["--out", str(second), "--data-dir", str(tmp_path), "--stop-after", "random"]) == 0
    assert json.loads(claim.score_path(second, run).read_text())["test_top1"] == 84.2
    assert json.loads((second / "claim.json").read_text())["select"] == record["select"]
    # a stage that reads the supernet and is not done: the supernet is asked for before anything runs
    (second / "claim.json").write_text(json.dumps({k: v for k, v in record.items() if k != "table6"}))
    monkeypatch.setattr(claim, "supernet_checkpoint", lambda override: (_ for _ in ()).throw(
        ValueError("no checkpoint of supernet 'xxs'")))
    assert claim.main(["--out", str(second), "--data-dir", str(tmp_path), "--stop-after", "table6", "--supernet",
                       str(tmp_path / "nowhere")]) == 2
