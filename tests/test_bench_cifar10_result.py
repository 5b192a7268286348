"""bench/cifar10_result.py: the paired interval, and the refusals of artifacts made with other settings.

The benchmark itself runs for hours; these check the parts that decide whether an artifact on disk may
be reused (fingerprints) and the statistic the headline reports, on digits and fake tables (seconds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from test_latency import FakeBackend

from autovit_ray.data import build_loaders
from autovit_ray.latency import BuildConfig, build_table
from autovit_ray.space import load_space
from autovit_ray.training.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cifar10_result as bench  # noqa: E402


def _settings(tmp_path: Path) -> bench.Settings:
    return bench.Settings(out=tmp_path, data_dir="/nonexistent", epochs=30, pilot_epochs=6, threads=1,
                          max_steps=1, max_eval_batches=1)


def test_bootstrap_difference_is_paired() -> None:
    a = [True] * 60 + [False] * 40
    same = bench.bootstrap_difference(a, a)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    assert same["a_only"] == same["b_only"] == 0
    b = [True] * 50 + [False] * 50  # a is right on 10 more images, b never where a is wrong
    d = bench.bootstrap_difference(a, b, resamples=2000)
    assert d["difference"] == pytest.approx(10.0) and d["a_only"] == 10 and d["b_only"] == 0
    assert 0.0 < d["low"] < 10.0 < d["high"] < 20.0
    with pytest.raises(ValueError, match="equal-length"):
        bench.bootstrap_difference(a, b[:-1])


def test_supernet_checkpoint_of_another_split_profile_or_recipe_is_refused(tmp_path) -> None:
    settings = _settings(tmp_path)
    cfg = settings.config("deit")
    meta = {"config": cfg.to_dict(), "space": {"name": "xxs", "profile": "cifar10"}}
    bench.check_supernet_meta(meta, cfg, tmp_path)  # its own checkpoint passes
    other_split = settings.config("deit", ["data.split_seed=1"]).to_dict()
    with pytest.raises(bench.Mismatch, match="recipe or data split"):
        bench.check_supernet_meta({**meta, "config": other_split}, cfg, tmp_path)
    with pytest.raises(bench.Mismatch, match="recipe or data split"):
        bench.check_supernet_meta({**meta, "config": settings.config("light").to_dict()}, cfg, tmp_path)
    with pytest.raises(bench.Mismatch, match="profile 'imagenet'"):
        bench.check_supernet_meta({**meta, "space": {"name": "xxs", "profile": "imagenet"}}, cfg, tmp_path)
    distilled = settings.config("deit", ["kd.kind=soft", "kd.inplace=true"]).to_dict()
    with pytest.raises(bench.Mismatch, match="distillation"):
        bench.check_supernet_meta({**meta, "config": distilled}, cfg, tmp_path)
    with pytest.raises(ValueError, match="recipe 'heavy' is unknown"):
        settings.config("heavy")


def test_peer_state_of_another_recipe_is_refused_and_a_corrupt_one_is_redone(tmp_path) -> None:
    torch.set_num_threads(1)
    settings = _settings(tmp_path)
    cfg = load_config("digits", ["data.resolution=32", "data.batch_size=16", "eval.max_batches=1",
                                 "train.epochs=2"])
    loaders = build_loaders(cfg.data)
    run_dir = tmp_path / "peer"
    state = bench.train_peer(settings, run_dir, "stage1", cfg, 1, loaders, eval_every=1)
    assert state["epoch"] == 1 and 0.0 <= state["history"][0]["val_top1"] <= 100.0
    with pytest.raises(bench.Mismatch, match="trained with other settings"):
        bench.train_peer(settings, run_dir, "stem1", cfg, 1, loaders, eval_every=1)  # other adaptation
    other = load_config("digits", ["data.resolution=32", "data.batch_size=16", "eval.max_batches=1",
                                   "train.epochs=2", "optimizer.lr=0.01"])
    with pytest.raises(bench.Mismatch, match="trained with other settings"):
        bench.train_peer(settings, run_dir, "stage1", other, 1, bench.build_loaders(other.data), eval_every=1)
    (run_dir / "state.pt").write_bytes(b"not a checkpoint")
    redone = bench.train_peer(settings, run_dir, "stage1", cfg, 1, loaders, eval_every=1)
    assert redone["epoch"] == 1 and len(redone["history"]) == 1


def test_lut_of_another_profile_is_refused_and_a_corrupt_one_rebuilt(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    assert bench.load_lut(corrupt, "torch-cpu") is None  # the stage builds it again
    config = BuildConfig(rounds=1, repeats=1, references=4, folds=2, quiet_cpus=None)
    space = load_space("xxs", input_profile="digits")
    table = build_table(space, FakeBackend(), [space.input_profile.resolutions[0]], num_classes=10, config=config,
                        log=lambda _m: None)
    foreign = tmp_path / "digits.parquet"
    table.save(foreign)
    with pytest.raises(bench.Mismatch, match="not a torch-cpu table of the xxs/cifar10 space"):
        bench.load_lut(foreign, "torch-cpu")


@pytest.mark.parametrize("adaptation", sorted(bench.ADAPTATIONS))
def test_both_peer_adaptations_end_on_a_2x2_map(adaptation) -> None:
    model = bench.build_peer(adaptation).eval()
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (2, 2)
    with pytest.raises(ValueError, match="expected one of"):
        bench.build_peer("stem4")


def test_a_finished_committed_pilot_is_reused_and_an_unfinished_one_not(tmp_path, monkeypatch) -> None:
    arms = {f"{r}/{a}": {"recipe": r, "adaptation": a, "val_top1": 50.0, "curve": [40.0], "train_images_per_s": 1.0}
            for r, a in bench.pilot_arms()}
    committed = tmp_path / "cifar10_result.json"
    monkeypatch.setattr(bench, "COMMITTED_RESULTS", committed)
    committed.write_text(json.dumps({"pilot": {"epochs": 6, "arms": arms, "chosen": {"recipe": "light",
                                                                                     "adaptation": "stage1"}}}))
    results: dict = {}
    bench.reuse_committed_pilot(results, 6)
    assert results["pilot"]["chosen"] == {"recipe": "light", "adaptation": "stage1"}
    for epochs, pilot in ((3, {"epochs": 6, "arms": arms, "chosen": {}}),  # other epochs
                          (6, {"epochs": 6, "arms": dict(list(arms.items())[:2]), "chosen": {"recipe": "deit"}})):
        committed.write_text(json.dumps({"pilot": pilot}))
        results = {}
        bench.reuse_committed_pilot(results, epochs)
        assert "pilot" not in results


def test_the_reading_states_the_outcome_from_the_paired_intervals() -> None:
    def row(low: float, high: float, ratio: float) -> dict:
        return {"test_vs_peer": {"difference": (low + high) / 2, "low": low, "high": high}, "ratio_torch-cpu": ratio}

    text = bench.reading({"chosen 1.0x": row(-1.8, -0.3, 1.02), "chosen 0.8x": row(-0.4, 0.9, 0.79)})
    assert "≤ 1.0× the peer's latency the chosen subnet loses to the peer: -1.05 pp" in text
    assert "within the machine's noise" in text  # 1.02x over a 1.0x budget is explained, 0.79x is not
    assert "≤ 0.8× the peer's latency the chosen subnet is not distinguishable from the peer" in text
    assert "beats the peer" in bench.reading({"chosen 1.0x": row(0.2, 1.0, 0.9)})
    assert "≤ 0.8× the peer's latency no subnet was chosen" in bench.reading({"chosen 1.0x": row(0.2, 1.0, 0.9)})


def test_the_code_line_names_each_runs_commit_and_work_tree() -> None:
    record = {"code_runs": [{"root": "pinned-a", "commit": "a" * 40}, {"root": "pinned-b", "commit": "b" * 40}]}
    assert bench.code_line(record) == "Code that ran the stages: commit aaaaaaa (`pinned-a`), then commit bbbbbbb " \
        "(`pinned-b`)."
    assert bench.code_line({}) == "Code: not recorded."


def test_the_pipeline_config_of_this_result_has_its_recipe_and_budget_rules() -> None:
    """configs/pipeline/cifar10-result.yaml is this benchmark's experiment as a product pipeline: the recipe
    its pilot chose, its search settings, and budgets as the same multiples of the same peer (whose
    parameters the product builds as the benchmark did: the committed budgets' peer_params)."""
    from autovit_ray.pipeline import Pipeline, load_pipeline_config
    from autovit_ray.training.reference import build_reference

    committed = json.loads(bench.COMMITTED_RESULTS.read_text())
    recipe = committed["pilot"]["chosen"]["recipe"]
    cfg = load_pipeline_config("cifar10-result")
    product = bench.recipe_fingerprint(Pipeline(cfg).train_config())
    benchmark = bench.recipe_fingerprint(_settings(Path("/nonexistent")).config(recipe))
    for fingerprint in (product, benchmark):  # the data path (in memory / timm's PIL) is not the recipe
        fingerprint["data"].pop("augment")
    assert product == benchmark
    s = cfg.search
    assert s.params_budget_factor == bench.PARAMS_FACTOR and s.latency_budget_factor in bench.LATENCY_FACTORS
    assert (s.population, s.generations, s.parents, s.top_k) == (50, 10, 10, bench.SELECTION_CANDIDATES)
    space = load_space(bench.SUPERNET, input_profile=bench.INPUT_PROFILE)
    peer, _ = build_reference(s.latency_budget_reference, 10, tuple(space.input_profile.strides))
    assert sum(p.numel() for p in peer.parameters()) == committed["budgets"]["peer_params"]
