"""`python -m autovit_ray.report`: the self-contained HTML page of an experiment.

One experiment directory is assembled from the session's real tiny experiment: the trained digits
supernets' config and MLflow store, the finished search's results.json, plus the stage outputs those
fixtures do not make, written by the real writers: a latency table (a deterministic fake backend),
a search with LUT latencies and its MLflow run (for the budget line), the comparison files and the
pipeline summary. The page is then checked as text, in a headless Chromium, and with stage outputs
removed or corrupted.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from html import escape as html_escape
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from autovit_ray.report import PNG_SIGNATURE, write_report
from autovit_ray.report.cli import main

SECTIONS = ("Stage timings", "Training curves", "Latency tables", "Searches", "Comparison")
VERDICT = "The searched xxs model is 12.0 points more accurate than mobilevit_xxs at 0.8x its latency."
LATENCY_BUDGET_MS = 0.05
IMG = re.compile(r"<img [^>]*>")


def _fake_backend() -> Any:
    """Latency = a deterministic function of a module's size and input: known, repeatable, no timing."""
    from autovit_ray.latency import LatencyBackend, PreparedModel

    class Prepared(PreparedModel):
        def __init__(self, value: float) -> None:
            self.value = value

        def time(self, repeats: int, inner: int = 1) -> list[float]:
            return [self.value] * repeats

    class Fake(LatencyBackend):
        name = "fake"

        def settings(self) -> dict[str, Any]:
            return {"kind": "deterministic"}

        def prepare(self, model: Any, input_shape: tuple[int, ...]) -> PreparedModel:
            params = sum(p.numel() for p in model.parameters())
            return Prepared(1e-3 + 1e-5 * params ** 0.5 * input_shape[-1])

    return Fake()


def _write_latency_search(exp: Path, table: Any, space: Any) -> list[dict[str, Any]]:
    """A search over the LUT's latencies (results.json as the search CLI writes it) and its MLflow
    parent run (SearchTracker, the search's own writer) recording the latency budget."""
    from autovit_ray.adapters import default_tracking_uri
    from autovit_ray.io import atomic_write_text
    from autovit_ray.plan import count_params
    from autovit_ray.search.algorithms import Evaluation
    from autovit_ray.search.tracking import SearchTracker

    rng = random.Random(0)
    evaluated = []
    for i in range(24):
        arch = space.sample(rng)
        latency = table.predict_latency(arch)
        top1 = min(20 + 400 * latency + rng.uniform(-3, 3), 99.0)
        evaluated.append(Evaluation(arch, top1, count_params(arch, 10, space), latency, i // 8))
    evaluated.append(Evaluation(space.smallest(), None, 1, None, 3))  # a failed candidate: not drawn
    ranked = sorted((e for e in evaluated if e.fitness is not None), key=lambda e: -e.fitness)[:3]
    # timed for a measured budget of 3 ms (search.measured): the best by validation missed it, the next two
    # are the best models
    timed = [{"rank": r, "arch": str(e.arch), "val_top1": e.fitness, "table_ms": e.latency, "measured_ms": ms,
              "p10_ms": ms - 0.1, "p90_ms": ms + 0.1, "within_budget": ms <= 3.0}
             for r, (e, ms) in enumerate(zip(ranked, (3.5, 2.5, 2.9)), start=1)]
    selection = {"budget_ms": 3.0, "backend": "torch-cpu", "settings": {"threads": 1}, "candidates": timed,
                 "chosen_ranks": [2, 3]}
    best = [{"rank": r, "arch": e.arch.to_dict(), "name": str(e.arch), "val_top1": e.fitness,
             "test_top1": e.fitness - 1, "params": e.params, "latency_ms": e.latency, "macs": 1000}
            for r, e in enumerate(ranked[1:], start=1)]
    atomic_write_text(exp / "search" / "lat" / "results.json", json.dumps(
        {"best": best, "pareto_front": [], "evaluations": len(evaluated), "failed": 1,
         "evaluated": [e.to_dict() for e in evaluated], "measured_selection": selection}, indent=2))
    tracker = SearchTracker(default_tracking_uri(exp), "lat")
    tracker.start({"strategy": "evolution", "latency_budget_ms": LATENCY_BUDGET_MS, "params_budget": None},
                  identity="lat-identity", summary={})
    tracker.finish("FINISHED")
    return best


@pytest.fixture(scope="module")
def experiment(trained_digits_experiment, finished_digits_search, tmp_path_factory):
    """A full experiment directory (every section drawable) and its report; `.dir`, `.page`, `.log`."""
    import torch

    from autovit_ray.compare import NOT_TRAINED, write_outputs
    from autovit_ray.latency import BuildConfig, build_table
    from autovit_ray.pipeline import Pipeline, StageTiming, load_pipeline_config
    from autovit_ray.space import load_space

    exp = tmp_path_factory.mktemp("report") / "digits-test"
    exp.mkdir()
    for name in ("config.yaml", "mlflow.db"):  # the fixtures are read-only: copy, never write into them
        shutil.copy2(trained_digits_experiment.dir / name, exp / name)
    shutil.copytree(finished_digits_search.dir / "search" / finished_digits_search.name,
                    exp / "search" / finished_digits_search.name, ignore=shutil.ignore_patterns("exports"))

    space = load_space("xxs", input_profile="digits")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = build_table(space, _fake_backend(), num_classes=10, log=lambda _m: None,
                            config=BuildConfig(rounds=1, repeats=1, references=6, folds=2, quiet_cpus=None))
    finally:
        torch.set_num_threads(threads)
    table.save(exp / "luts" / "xxs.parquet")
    best = _write_latency_search(exp, table, space)

    rows = [{"model": f"lat-top{b['rank']}", "kind": "searched", "resolution": 8, "test_top1": b["test_top1"],
             "params": b["params"], "macs": 1000, "lut_latency_ms": b["latency_ms"], "latency_ms": 2 * b["latency_ms"],
             "latency_p10_ms": 1.9 * b["latency_ms"], "latency_p90_ms": 2.1 * b["latency_ms"],
             "latency_ratio": 1.0, "note": ""} for b in best]
    rows += [{"model": "mobilevit_xxs (stem stride 1)", "kind": "reference", "resolution": 8, "test_top1": 20.0,
              "params": 950_000, "macs": 5000, "lut_latency_ms": None, "latency_ms": 0.05, "latency_p10_ms": 0.04,
              "latency_p90_ms": 0.06, "latency_ratio": 1.0, "note": "stem stride 1"},
             {"model": "test_resnet", "kind": "reference", "resolution": 8, "test_top1": NOT_TRAINED,
              "params": 100_000, "macs": 800, "lut_latency_ms": None, "latency_ms": 0.02, "latency_p10_ms": 0.01,
              "latency_p90_ms": 0.03, "latency_ratio": 0.4, "note": ""}]
    write_outputs(rows, exp / "compare", {"backend": "torch-cpu", "repeats": 4, "summary": VERDICT})

    (exp / "references" / "mobilevit_xxs").mkdir(parents=True)
    (exp / "references" / "mobilevit_xxs" / "history.json").write_text(json.dumps(
        [{"epoch": 1, "val_top1": 11.0, "train_loss": 2.2}, {"epoch": 2, "val_top1": 14.5, "train_loss": 2.0}]))
    pipeline = Pipeline(load_pipeline_config("demo", [f"name={exp.name}", f"output_dir={exp.parent}"]))
    pipeline.outputs = {"luts": {}}
    pipeline._write_summary([StageTiming("train", "ran", 42.0, 600.0), StageTiming("profile", "ran", 3.5, 1.0),
                             StageTiming("search", "reused", 0.1, 900.0),
                             StageTiming("compare", "not selected", 0.0, 300.0)])
    lines: list[str] = []
    page = write_report(exp, log=lines.append)
    return SimpleNamespace(dir=exp, page=page, log=lines, html=page.read_text())


def check_self_contained(html: str) -> list[bytes]:
    """No reference outside the file; returns the decoded images (each a PNG)."""
    for needle in ("http://", "https://", 'src="file:', "<link", "<script", "url("):
        assert needle not in html, needle
    images = []
    for tag in IMG.findall(html):
        src = re.search(r'src="([^"]*)"', tag).group(1)
        assert src.startswith("data:image/png;base64,"), tag[:80]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        images.append(data)
    return images


def test_report_of_a_full_experiment(experiment):
    html, exp = experiment.html, experiment.dir
    assert experiment.page == exp / "report.html"
    assert experiment.log == [] and "missing:" not in html
    images = check_self_contained(html)
    # training (one figure, a panel per supernet), latency tables, two searches, compare.png
    assert len(images) == 5
    assert [h for h in re.findall(r"<h2>([^<]*)</h2>", html)] == list(SECTIONS)
    # stages, training, LUTs, each search's best, one search's measured selection, comparison
    assert html.count("<table>") == 1 + 1 + 1 + 2 + 1 + 1
    assert f"<p class=verdict>{VERDICT}</p>" in html
    for text in ("OVER BUDGET", "<td class=l>profile</td>", *(f"<td class=l>{s}</td>" for s in ("xxs", "xs", "s")),
                 "MAPE (%)",
                 "<h3>lat</h3>", "<h3>tiny</h3>", "plotted against parameters", "median LUT/measured latency ratio",
                 "mobilevit_xxs (stem stride 1)", "not trained here", "latency measured on torch-cpu",
                 "measured latency budget 3 ms on torch-cpu: 2 of the 3 best archs by validation measured within it",
                 "the best models are ranks 2, 3.", "<td class=l>3.400-3.600</td><td class=l>no</td>"):
        assert text in html, text


def test_cli_rebuilds_the_page(experiment, capsys):
    experiment.page.write_text("stale")
    assert main(["--experiment", str(experiment.dir)]) == 0
    assert capsys.readouterr().out.strip() == str(experiment.dir / "report.html")
    assert experiment.page.read_text().startswith("<!DOCTYPE html>")


def test_missing_and_corrupt_stage_outputs_become_missing_lines(experiment, tmp_path):
    exp = tmp_path / "broken"
    shutil.copytree(experiment.dir, exp)
    (exp / "pipeline_summary.json").unlink()
    (exp / "mlflow.db").unlink()
    results = exp / "search" / "lat" / "results.json"
    results.write_text(results.read_text()[:200])  # truncated mid-write
    (exp / "luts" / "xxs.parquet").write_bytes(b"PAR1 not really")
    (exp / "luts" / "xs.parquet").write_text("")
    (exp / "references" / "broken").mkdir()
    (exp / "references" / "broken" / "history.json").write_text('[{"epoch": 1}]')
    (exp / "compare" / "compare.png").write_text("not a png")
    lines: list[str] = []
    html = write_report(exp, log=lines.append).read_text()

    expected = [f"missing: stage timings: no file {exp / 'pipeline_summary.json'}",
                f"missing: MLflow tracking store: no file {(exp / 'mlflow.db').resolve()}",
                f"missing: search lat results: {results} is unreadable (JSONDecodeError",
                f"missing: latency table xxs: {exp / 'luts' / 'xxs.parquet'} is unreadable",
                f"missing: latency table xs: {exp / 'luts' / 'xs.parquet'} is unreadable",
                f"missing: comparison plot: {exp / 'compare' / 'compare.png'} is not a PNG file",
                f"missing: reference history: {exp / 'references' / 'broken' / 'history.json'} is unreadable (ValueError"]
    assert len(lines) == len(expected)
    for line, start in zip(sorted(lines), sorted(expected)):
        assert line.startswith(start), (line, start)
        assert f"<p class=missing>{html_escape(line)}</p>" in html
    assert len(check_self_contained(html)) == 2  # the good peer's curve and the tiny search are still drawn
    assert "<h3>tiny</h3>" in html and f"<p class=verdict>{VERDICT}</p>" in html


def test_a_barely_started_experiment_lists_every_missing_part(experiment, tmp_path):
    exp = tmp_path / "fresh"
    (exp / "search" / "half").mkdir(parents=True)  # a search that never finished
    shutil.copy2(experiment.dir / "config.yaml", exp / "config.yaml")
    (exp / "compare").mkdir()
    (exp / "compare" / "compare.json").write_text('{"rows": [{"model": 1}')
    lines: list[str] = []
    html = write_report(exp, log=lines.append).read_text()
    assert [line.split(":")[1].strip() for line in lines] == [
        "comparison table", "stage timings", "MLflow tracking store", "latency tables", "search half results"]
    assert html.count("class=missing") == 5 and not IMG.findall(html)
    assert not (exp / "mlflow.db").exists()  # reading never creates a tracking store


def test_a_measured_budget_set_by_a_reference_names_it_in_the_caption():
    from autovit_ray.report import measured_selection

    row = {"rank": 1, "arch": "a", "val_top1": 80.0, "table_ms": 2.0, "measured_ms": 2.5, "p10_ms": 2.4,
           "p90_ms": 2.6, "within_budget": True}
    selection = {"budget_ms": 2.4, "backend": "torch-cpu", "candidates": [row, {**row, "rank": 2, "within_budget": False}],
                 "chosen_ranks": [1]}
    plain = measured_selection(selection)
    assert "measured latency budget 2.4 ms on torch-cpu: 1 of the 2 best archs" in plain and "beside" not in plain
    reference = {"name": "mobilevit_xxs", "factor": 0.8, "measured_ms": 3.0, "p10_ms": 2.9, "p90_ms": 3.1}
    assert ("measured latency budget 2.4 ms (0.8x mobilevit_xxs, which measured 3 ms beside them) on torch-cpu"
            in measured_selection({**selection, "reference": reference}))


def test_not_an_experiment_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    cases = {"empty": "is not an experiment directory: it has none of config.yaml",
             "file.txt": "is not a directory: expected an experiment directory",
             "nowhere": "does not exist: expected an experiment directory"}
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            write_report(tmp_path / name)
        assert main(["--experiment", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / name} ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "empty" / "report.html").exists()


# ---------------------------------------------------------------------------------------------------
# A real browser


PAGE_CHECKS = """(() => ({
  images: Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth})),
  tables: document.querySelectorAll('table').length,
  sections: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
  verdict: (document.querySelector('.verdict') || {}).textContent,
  height: document.documentElement.scrollHeight,
}))()"""


def test_page_renders_in_headless_chromium(experiment, tmp_path):
    from browser import Browser, find_chromium
    from PIL import Image

    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: `make browser` (a prerequisite of `make test`) installs it")
        pytest.skip("chromium is not installed (apt-get install chromium; `make browser` does it)")
    with Browser(binary, tmp_path) as browser:
        rendered = browser.load(experiment.page, PAGE_CHECKS)
    assert rendered.errors == []
    # nothing fetched beside the file itself (its images are data: URLs)
    assert [u for u in rendered.requests if not u.startswith("data:image/png;base64,")] == [experiment.page.resolve().as_uri()]
    checks = rendered.value
    assert checks["sections"] == list(SECTIONS) and checks["tables"] == 7 and checks["verdict"] == VERDICT
    assert len(checks["images"]) == 5 and all(i["ok"] for i in checks["images"]), checks["images"]
    assert rendered.screenshot.startswith(PNG_SIGNATURE)
    (tmp_path / "report.png").write_bytes(rendered.screenshot)
    with Image.open(tmp_path / "report.png") as shot:
        shot.load()
        assert shot.width >= 1000 and shot.height >= min(checks["height"], 2000)


def test_a_rank_fidelity_report_gets_its_section(experiment, tmp_path):
    """`python -m autovit_ray.fidelity`'s report in <experiment>/fidelity/ becomes a section: the table
    per supernet and the inherited vs stand-alone scatter; without it the page has no such section."""
    from autovit_ray.fidelity import calibration_noise, fidelity_stats
    from autovit_ray.stats import noise_ceiling_tau

    exp = tmp_path / "with-fidelity"
    shutil.copytree(experiment.dir, exp)
    truth = [60.0, 62.0, 61.0, 66.0]
    inherited = [70.0, 71.5, 71.0, 72.0]
    stats = fidelity_stats(inherited, truth, [1, 2, 3, 4], [4, 3, 2, 1], [True] * 4, resamples=100, seed=0)
    stats.update(calibration_noise([inherited, [70.2, 71.3, 71.6, 71.9]], truth, [True] * 4))
    subnets = [{"name": f"net{i}", "lut_ms": 4.0 + i, "in_band": i < 2, "params": 1000 * i, "val_top1": t,
                "test_top1": t - 0.5} for i, t in enumerate(truth)]
    subnets[3].pop("test_top1")  # a run scored by a version that had no test score
    pair = {"arch_hash": "h", "top1": [80.0, 80.4], "test_top1": [79.0, 79.5]}
    report = {"standalone": {"epochs": 15, "seed_sd": 0.4, "subnets": subnets, "repeats": [pair, pair]},
              "supernets": {"sandwich": {"sampler": "sandwich", "epochs_done": 30, "inherited": inherited, **stats}}}
    (exp / "fidelity").mkdir()
    (exp / "fidelity" / "fidelity.json").write_text(json.dumps(report))
    lines: list[str] = []
    html = write_report(exp, log=lines.append).read_text()
    assert lines == [] and re.findall(r"<h2>([^<]*)</h2>", html) == [*SECTIONS, "Rank fidelity"]
    assert "truth&#x27;s own seed noise: sd 0.40 points (from 2 seed pairs: a rough estimate)" in html
    assert "<td class=l>sandwich</td>" in html
    ceiling = noise_ceiling_tau(truth, 0.4)  # the report has none: the page computes it from the same record
    assert (f"a perfect predictor would reach tau {ceiling:+.2f} against it (in band n/a): about the ceiling of the "
            "taus below, an expected value that one sample can pass") in html and ceiling < 1
    assert "<th>stand-alone test top-1</th>" in html and "<td class=l>net1</td>" in html
    assert f"+0.67 ({stats['draw_sd']:.2f}) over 2</td>" in html  # one of six pairs swapped between the subsets
    over = stats["tau_over_macs_ci"]
    assert (f"<td class=l>{stats['tau_over_macs']:+.2f} [{over[0]:+.2f}, {over[1]:+.2f}]</td>" in html
            and "<th>tau minus MACs&#x27; [95%, paired]</th>" in html)
    assert len(check_self_contained(html)) == len(check_self_contained(experiment.page.read_text())) + 1
    # the scan, before any truth: its own section, before the fidelity report's
    rows = [{"role": role, "val_top1": v, "lut_ms": ms, "params": 10_000 * (i + 1)} for i, (role, v, ms) in enumerate(
        (("largest", 72.0, 6.0), ("smallest", 69.5, 2.0), ("random-0", 70.5, 4.0), ("random-1", 71.0, 4.5)))]
    scan = {"subnets": 2, "seed": 0, "supernets": {"sandwich": {
        "sampler": "sandwich", "epochs_done": 30, "subnets": rows, "largest_minus_smallest": 2.5, "random_span": 0.5,
        "span_paired": {"difference": 2.5, "low": 1.5, "high": 3.5, "mcnemar_p": 0.001}}}}
    (exp / "fidelity" / "scan.json").write_text(json.dumps(scan))
    html = write_report(exp, log=lines.append).read_text()
    assert lines == [] and re.findall(r"<h2>([^<]*)</h2>", html) == [*SECTIONS, "Supernet scan", "Rank fidelity"]
    assert "<td class=l>+2.50 [+1.50, +3.50]</td>" in html and "2 random subnets (seed 0)" in html
    assert len(check_self_contained(html)) == len(check_self_contained(experiment.page.read_text())) + 2
