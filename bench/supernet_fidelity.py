"""Benchmark: a supernet whose ranking can be trusted (issue 30), on the recipe and input profile that
bench/cifar10_recipe.py chose (issue 29).

Everything runs through the product's commands, from a pinned copy of the code:

    .venv/bin/python bench/supernet_fidelity.py --data-dir /path/to/cifar10    # resumable: rerun to continue
    .venv/bin/python bench/supernet_fidelity.py --stop-after scan
    .venv/bin/python bench/supernet_fidelity.py --report-only                  # JSON and section from what exists
    .venv/bin/python bench/supernet_fidelity.py --past-gate "why"   # go on past a failed gate, the reason recorded

1. ``supernets``: two XXS supernets of the ``cifar10-p1`` input profile, `EPOCHS` epochs each, through
   ``python -m autovit_ray.train --config cifar10-p1``: ``sandwich`` (the largest, the smallest and one
   random subnet per step, the largest on labels, the others distilled in place from its detached
   predictions; dropout only on the largest: BigNAS / AttentiveNAS) and the ``uniform`` control (one
   random subnet per step, Algorithm 1 as the paper trains it; about 1/3 of a sandwich step).
2. ``scan``: the cheap check before the truth's hours. `SCAN_SUBNETS` random subnets plus the largest
   and the smallest, each with the accuracy it inherits (BatchNorm recalibrated) on the full 5k
   validation split, against its latency-table milliseconds. The sandwich supernet is scanned as soon
   as it is trained, before the uniform control: if its largest minus smallest is under `SPAN_GATE`
   points the run stops there (``gate.json``), as the control and the truth would not be worth their
   hours until the cause is known; a rerun with ``--past-gate REASON`` goes on, the reason recorded.
3. ``band``: the peer's latency in the table's milliseconds (the peer and 12 random subnets measured in
   one interleaved run; their median table/measured ratio converts), and the band 0.8-1.2x of it.
4. ``truth``: ``python -m autovit_ray.fidelity`` with both checkpoints: `TRUTH_SUBNETS` subnets, at least
   `TRUTH_IN_BAND` inside the band, each trained alone for `TRUTH_EPOCHS` epochs (one-cycle fitted to
   that length; two runs at once, a core each), the first `TRUTH_REPEAT` again with a second seed;
   Kendall tau with bootstrap intervals over all and in band, the MACs and parameter baselines, top-3
   overlap, regret (plotted: `FIDELITY_PNG`, once the truth has ended); every stand-alone run's test
   top-1 is reported beside its validation accuracy and never used to choose.
5. ``calibration``: a remedy measured against the same truth without a training: every supernet's
   inherited scores again, with BatchNorm recalibrated on `REMEDY_CALIB_IMAGES` training images
   instead of the recipe's 1,024 (``fidelity --calib-size``), and the same statistics.
6. ``remedies``: only when the sandwich supernet misses the goal (in-band tau >= `TAU_GOAL` and above the
   MACs baseline), the two remedies that cost a training, each from the sandwich supernet with its
   settings, scored against the same truth: ``fewshot``, a few-shot split on the transformer stage
   count (one part per count, each trained `REMEDY_EPOCHS` more epochs on its own subnets only, two at
   once: ``train.transformer_stages``, ``train.init_from``, then ``python -m autovit_ray.fewshot``), and
   ``longer``, the whole supernet trained `LONGER_EPOCHS` more epochs, the parts' training compute
   together (the "longer training" remedy, and the few-shot split's control at equal compute: what the
   parts gain from more training alone).

The peer and the recipe come from the recipe issue's committed bench/results/cifar10_recipe.json; the
latency table is built on this machine (bench/cifar10_recipe.py's ``lut`` stage) before the scans when
it has none. Artifacts go to ``$AUTOVIT_BENCH_DIR/supernet_fidelity`` (default ``~/.cache/autovit-ray/bench``);
``--report-only`` writes bench/results/supernet_fidelity.json and the BENCHMARKS.md section from what
exists, so a run in progress is reported as far as it got, and copies the run's small measurements
(`kept_files`: the truth's finished runs, the latency table and band its draw came from) into
bench/results/kept/: committed with the report, they are put back by a run on a new machine, which
then goes on from them instead of training those runs again.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cifar10_recipe import (
    GATE_VAL_TOP1,
    INPUT_PROFILE,
    MIN_TOKENS,
    PEER,
    PEER_EPOCHS,
    RESOLUTION,
    build_lut,
)
from common import (
    ROOT,
    bench_dir,
    code_commit,
    keep_files,
    log,
    public_path,
    public_paths,
    restore_files,
    run_at_once,
    run_cli,
    staged_parser,
)

from autovit_ray.io import atomic_write_text, replace_markdown_section

STAGES = ("supernets", "scan", "band", "truth", "calibration", "remedies")
SUPERNET = "xxs"
EPOCHS = 30
SAMPLERS: dict[str, list[str]] = {
    "sandwich": ["train.sampler=sandwich", "train.sandwich_random=1", "kd.kind=soft", "kd.inplace=true",
                 "kd.alpha=1.0", "model.regularize=largest"],
    "uniform": [],
}
SCAN_SUBNETS = 50
SCAN_CALIB_BATCHES = 8  # = eval.calib_batches of configs/train/cifar10-p1.yaml
SPAN_GATE = 3.0  # points of validation top-1 between the sandwich supernet's largest and smallest
# A remedy the issue names, measured without a training: the truth's subnets scored again on 4x the
# recipe's 1,024 recalibration images (the sandwich scan's subnets moved by up to 0.36 points between the two).
REMEDY_CALIB_IMAGES = 4096
# The remedies that cost a training (stage 6), tried when the sandwich supernet misses the goal.
TAU_GOAL = 0.5
REMEDY_EPOCHS = 10
FEW_SHOT_COUNTS = (3, 4)  # the XXS space's transformer stage counts: one few-shot part each
LONGER_EPOCHS = REMEDY_EPOCHS * len(FEW_SHOT_COUNTS)  # the control at the parts' compute together
BAND = (0.8, 1.2)
TRUTH_SUBNETS, TRUTH_IN_BAND, TRUTH_EPOCHS, TRUTH_REPEAT = 14, 8, 15, 2
SECTION = "## A supernet whose ranking can be trusted (issue 30)"
RESULTS_JSON = ROOT / "bench" / "results" / "supernet_fidelity.json"
SCAN_PNG_IN_REPO = Path("bench", "results", "supernet_scan.png")  # where the section links it
SCAN_PNG = ROOT / SCAN_PNG_IN_REPO
FIDELITY_PNG_IN_REPO = Path("bench", "results", "supernet_fidelity.png")
FIDELITY_PNG = ROOT / FIDELITY_PNG_IN_REPO
RECIPE_JSON = ROOT / "bench" / "results" / "cifar10_recipe.json"  # the peer and the recipe (issue 29)
BENCHMARKS = ROOT / "BENCHMARKS.md"
STAGE_COMMITS = "stage_commits.json"  # {stage: the commits of the code that ran it} (`note_stage`)
# Earlier runs of this driver that ended before their truth did: their committed record, and why they ended.
EARLIER_RUNS = {
    Path("bench", "results", "supernet_fidelity_run1.json"): (
        "its machine was replaced between two sessions on 2026-12-05, and every artifact outside the repository "
        "(supernets, latency table, band, the truth's runs) went with it; nothing but the report was committed then, "
        "so this run starts again from the same recipe and seeds, and keeps its small measurements in the repository "
        "as it goes"),
}


def lut_file() -> Path:
    """The cifar10-p1 XXS torch-cpu table that bench/cifar10_recipe.py builds and validates."""
    return bench_dir() / "cifar10_recipe" / "luts" / f"xxs-{INPUT_PROFILE}-torch-cpu.parquet"


def lut_validation_file() -> Path:
    return bench_dir() / "cifar10_recipe" / "luts" / f"xxs-{INPUT_PROFILE}-validation" / "validation.json"


def ensure_lut() -> Path:
    """The table, built and validated here when this machine has none and the repository keeps none of
    this run's (`kept_files`). Runs between the supernets and the scans, so that nothing else shares the
    cores while it times."""
    if not lut_file().is_file():
        build_lut(bench_dir() / "cifar10_recipe")
    return lut_file()


def lut_quality() -> dict[str, Any] | None:
    """How well the table predicts this machine (`profile validate` on fresh subnets): predictor vs
    measured, the same subnets measured twice (the noise), and the table's level (predicted / measured)."""
    path = lut_validation_file()
    if not path.is_file():
        return None
    found = json.loads(path.read_text())
    keep = ("mape", "kendall_tau")
    return {"samples": found["samples"], "method": found["method"],
            "predictor": {k: found["predictor"][k] for k in keep}, "retest": {k: found["retest"][k] for k in keep},
            "level": found["level"]["ratio"], "retest_level": found["level"]["retest_ratio"],
            "mape_after_level": found["level"]["mape_after"]}


def kept_files(out: Path) -> dict[str, Path]:
    """The run's measurements that a new machine could not remake as they were, kept in the repository
    (bench/results/kept/supernet_fidelity/) by the report and put back by the next run where they are
    missing (`common.keep_files`, `common.restore_files`): the truth's recipe and its finished runs'
    scores (hours of training; `results.json` of `python -m autovit_ray.fidelity`), and the latency
    table with the band measured against it, which fix the truth's draw (a table built anew times
    slightly differently, and would draw other subnets). Supernets and stand-alone checkpoints are
    too large to keep: a new machine trains a missing supernet again."""
    from autovit_ray.fidelity import RESULTS_FILE, TRUTH_FILE

    return {"supernet_fidelity/lut.parquet": lut_file(), "supernet_fidelity/lut-validation.json": lut_validation_file(),
            "supernet_fidelity/band.json": out / "band.json",
            f"supernet_fidelity/truth/{TRUTH_FILE}": out / "truth" / TRUTH_FILE,
            f"supernet_fidelity/{STAGE_COMMITS}": out / STAGE_COMMITS,
            f"supernet_fidelity/truth/{RESULTS_FILE}": out / "truth" / RESULTS_FILE}


def final_supernet(sampler: str, out: Path) -> Path:
    """The final checkpoint of one supernet, `<out>/<sampler>-e<EPOCHS>` (ValueError while it is missing or
    unfinished); bench/cifar10_claim.py searches the chosen one."""
    from autovit_ray.checkpoint import find_checkpoint

    return find_checkpoint(out / f"{sampler}-e{EPOCHS}", SUPERNET, final=True)


def chosen_checkpoint(chosen: str, out: Path) -> Path:
    """The supernet `chosen` names, ready to search: a trained supernet's final checkpoint, or a remedy's
    (the few-shot folder, the longer training's final checkpoint); ValueError while it is missing."""
    if chosen in SAMPLERS:
        return final_supernet(chosen, out)
    found = remedy_checkpoints(out)
    if chosen not in found:
        raise ValueError(f"no finished {chosen!r} supernet under {out}: rerun bench/supernet_fidelity.py to finish it")
    return found[chosen]


def note_stage(out: Path, stage: str) -> None:
    """Add this code's commit to the commits that ran `stage` (`stage_commits.json`: {stage: [commit, ...]}
    in the order they ran it; a training resumed by newer code lists both)."""
    path = out / STAGE_COMMITS
    record = json.loads(path.read_text()) if path.is_file() else {}
    commits = record.setdefault(stage, [])
    if code_commit() not in commits:
        commits.append(code_commit())
        atomic_write_text(path, json.dumps(record, indent=1))


def train_supernet(sampler: str, out: Path, data_dir: Path) -> Path:
    """`python -m autovit_ray.train` for one supernet (it resumes from its last epoch on a rerun)."""
    name = f"{sampler}-e{EPOCHS}"
    try:
        return final_supernet(sampler, out)
    except ValueError:
        pass
    log(f"supernets: {name}: training ({EPOCHS} epochs; resumes from its last epoch)")
    note_stage(out, f"supernet {sampler}")
    cli = ["autovit_ray.train", "--config", "cifar10-p1", "--name", name, "--output-dir", str(out),
           "--supernets", SUPERNET]
    for item in [f"train.epochs={EPOCHS}", f"data.data_dir={data_dir}", "train.progress_bar=false",
                 "ray.torch_threads=2", "ray.use_gpu=false", *SAMPLERS[sampler]]:
        cli += ["--set", item]
    run_cli(cli, out / f"{name}.log")
    return final_supernet(sampler, out)


def scan(checkpoint: Path, out: Path, sampler: str) -> dict[str, Any]:
    """Inherited full-validation top-1 of the largest, the smallest and `SCAN_SUBNETS` random subnets, and
    the largest minus the smallest with its paired interval: the product's scan (`python -m
    autovit_ray.fidelity --scan`), with the recipe's BatchNorm recalibration (`scan-<sampler>.json`)."""
    path = out / f"scan-{sampler}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from autovit_ray.fidelity.scan import scan_supernet

    log(f"scan {sampler}: {SCAN_SUBNETS + 2} subnets, inherited weights, full validation split")
    record = scan_supernet(checkpoint, SCAN_SUBNETS, 0, str(lut_file()), SCAN_CALIB_BATCHES)
    record.update(checkpoint=public_path(checkpoint), sampler=sampler, commit=code_commit())
    atomic_write_text(path, json.dumps(record, indent=1))
    return record


def check_gate(scan_record: dict[str, Any], out: Path, reason: str | None) -> bool:
    """Whether the run goes on past the sandwich scan: its largest minus smallest is at least `SPAN_GATE`
    points, or a reason to go on anyway was given (now, or on an earlier run: `gate.json` keeps it)."""
    path = out / "gate.json"
    earlier = json.loads(path.read_text()).get("continued_because") if path.is_file() else None
    span = scan_record["largest_minus_smallest"]
    passed = span >= SPAN_GATE
    because = None if passed else (reason or earlier)
    atomic_write_text(path, json.dumps({"span": span, "gate": SPAN_GATE, "passed": passed,
                                        "continued_because": because, "epochs_done": scan_record.get("epochs_done"),
                                        "commit": code_commit()}, indent=1))
    if passed:
        log(f"scan: the sandwich supernet's largest minus smallest is {span:.2f} points (gate {SPAN_GATE}): met")
    elif because:
        log(f"scan: the sandwich supernet's largest minus smallest is {span:.2f} points (< {SPAN_GATE}); going on "
            f"because: {because}")
    else:
        log(f"scan: the sandwich supernet's largest minus smallest is {span:.2f} points (< {SPAN_GATE}): stopping "
            "before the uniform control and the truth; find out why, then rerun with --past-gate REASON to go on")
    return passed or bool(because)


def peer_band(out: Path) -> dict[str, Any]:
    """The peer's latency in table milliseconds, and the band around it (see the module doc)."""
    path = out / "band.json"
    if path.is_file():
        return json.loads(path.read_text())
    from autovit_ray.latency import LatencyTable, measure_models
    from autovit_ray.latency.backends import backend_from_settings
    from autovit_ray.models import create_subnet
    from autovit_ray.space import load_space
    from autovit_ray.training.reference import ReferenceSpec, build_spec

    recipe = json.loads(RECIPE_JSON.read_text())["choice"]
    space = load_space(SUPERNET, input_profile=INPUT_PROFILE)
    table = LatencyTable.load(lut_file(), space=space)
    rng = random.Random(0)
    references = [space.sample(rng) for _ in range(12)]
    peer, _ = build_spec(ReferenceSpec(PEER, RESOLUTION, adaptation=recipe["adaptation"], min_tokens=MIN_TOKENS), 10)
    settings = dict(table.metadata.get("backend_settings") or {})  # the table's own threads and clock
    log(f"band: the peer beside 12 random subnets, {table.backend} {settings}, interleaved")
    runner = backend_from_settings(table.backend, settings)
    shape = (1, 3, RESOLUTION, RESOLUTION)
    models = [(m.eval(), shape) for m in (peer, *(create_subnet(a, 10, space) for a in references))]
    stats = [s.to_dict() for s in measure_models(runner, models, 30, 5, seed=1, calibrate=True)]
    level = statistics.median(table.predict_latency(a) / s["median_ms"] for a, s in zip(references, stats[1:]))
    peer_ms = stats[0]["median_ms"] * level
    record = {"peer_measured_ms": stats[0]["median_ms"], "level": level, "peer_lut_ms": peer_ms,
              "band_ms": [BAND[0] * peer_ms, BAND[1] * peer_ms], "backend_settings": settings, "commit": code_commit()}
    atomic_write_text(path, json.dumps(record, indent=1))
    return record


def truth(checkpoints: dict[str, Path], band: dict[str, Any], out: Path) -> dict[str, Any]:
    """`python -m autovit_ray.fidelity` over both supernets with one truth (resumable)."""
    report_path = out / "truth" / "fidelity.json"
    low, high = band["band_ms"]
    cli = ["autovit_ray.fidelity", "--truth", str(out / "truth"), "--supernet", SUPERNET, "--lut", str(lut_file()),
           "--subnets", str(TRUTH_SUBNETS), "--in-band", str(TRUTH_IN_BAND), "--band-ms", f"{low:.4f},{high:.4f}",
           "--epochs", str(TRUTH_EPOCHS), "--repeat", str(TRUTH_REPEAT), "--calib-batches", str(SCAN_CALIB_BATCHES),
           # one thread per run, so two runs train at once on 2 cores: 1.34x the images per second of one
           # two-thread run (a mid-size subnet's training steps, measured beside each other in one minute)
           "--set", "train.progress_bar=false", "--set", "ray.torch_threads=1", "--set", "ray.use_gpu=false"]
    for checkpoint in checkpoints.values():
        cli += ["--checkpoint", str(checkpoint)]
    log(f"truth: {TRUTH_SUBNETS} subnets ({TRUTH_IN_BAND} in {low:.3f}-{high:.3f} table ms), {TRUTH_EPOCHS} "
        f"epochs alone each, {TRUTH_REPEAT} repeated with a second seed")
    if not report_path.is_file():
        note_stage(out, "truth")
    run_cli(cli, out / "truth.log")
    return json.loads(report_path.read_text())


def against_truth(checkpoints: dict[str, Path], out: Path, calib_batches: int | None,
                  calib_size: int | None) -> dict[str, Any]:
    """Every supernet's inherited scores of the truth's subnets (BatchNorm recalibrated on `calib_batches`
    batches of `calib_size` images; None: the fidelity defaults), with the fidelity statistics against
    the truth's stand-alone accuracies."""
    fidelity = json.loads((out / "truth" / "fidelity.json").read_text())
    return {name: score_on_truth(checkpoint, fidelity["standalone"]["subnets"], fidelity["seed"], calib_batches,
                                 calib_size) for name, checkpoint in checkpoints.items()}


def score_on_truth(checkpoint: Path, subnets: Sequence[Mapping[str, Any]], seed: int, calib_batches: int | None,
                   calib_size: int | None) -> dict[str, Any]:
    """One supernet's inherited validation top-1 of the truth's `subnets` (rows of its `fidelity.json`:
    arch, val_top1, macs, params, in_band) and `fidelity_stats` against their stand-alone top-1; `seed`:
    the truth's, for the bootstrap."""
    from autovit_ray.fidelity import fidelity_stats, inherited_top1
    from autovit_ray.space import Arch

    inherited = inherited_top1(checkpoint, [Arch.from_dict(s["arch"]) for s in subnets], calib_batches, calib_size)
    return {"inherited": inherited, **fidelity_stats(
        inherited, [s["val_top1"] for s in subnets], [s["macs"] for s in subnets], [s["params"] for s in subnets],
        [s["in_band"] for s in subnets], 10_000, seed)}


def calibration_remedy(checkpoints: dict[str, Path], out: Path) -> dict[str, Any]:
    """The truth's subnets scored by every supernet with BatchNorm recalibrated on `REMEDY_CALIB_IMAGES`
    images (all their batches), against the same stand-alone accuracies: does more recalibration rank
    better? (`remedy-calibration.json`)"""
    path = out / "remedy-calibration.json"
    if path.is_file():
        return json.loads(path.read_text())
    log(f"calibration: the truth's subnets, BatchNorm recalibrated on {REMEDY_CALIB_IMAGES} images")
    record = {"calib_size": REMEDY_CALIB_IMAGES, "supernets": against_truth(checkpoints, out, None, REMEDY_CALIB_IMAGES),
              "commit": code_commit()}
    atomic_write_text(path, json.dumps(record, indent=1))
    return record


def goal_met(stats: dict[str, Any]) -> bool:
    """The issue's goal: in-band tau at least `TAU_GOAL` and above the MACs baseline."""
    tau, macs = stats.get("tau_in_band"), stats.get("tau_macs")
    return tau is not None and tau >= TAU_GOAL and (macs is None or tau > macs)


def remedy_name(remedy: str, count: int | None = None) -> str:
    """The experiment folder of a remedy's training: `fewshot-t<count>` (a part) or `longer-e<epochs>`."""
    return f"fewshot-t{count}" if remedy == "fewshot" else f"longer-e{LONGER_EPOCHS}"


def train_remedy(sandwich: Path, out: Path, data_dir: Path, count: int | None, threads: int) -> Path:
    """`python -m autovit_ray.train` for one remedy run from the sandwich supernet's weights and settings,
    `REMEDY_EPOCHS` epochs for a few-shot part (`count` set), else `LONGER_EPOCHS`; resumes from its last
    epoch."""
    from autovit_ray.checkpoint import find_checkpoint

    name = remedy_name("fewshot" if count else "longer", count)
    epochs = REMEDY_EPOCHS if count else LONGER_EPOCHS
    try:
        return find_checkpoint(out / name, SUPERNET, final=True)
    except ValueError:
        pass
    log(f"remedies: {name}: training ({epochs} epochs from the sandwich supernet; resumes from its last epoch)")
    note_stage(out, f"remedy {name}")
    cli = ["autovit_ray.train", "--config", "cifar10-p1", "--name", name, "--output-dir", str(out),
           "--supernets", SUPERNET]
    settings = [f"train.epochs={epochs}", f"data.data_dir={data_dir}", "train.progress_bar=false",
                f"ray.torch_threads={threads}", f"ray.cpus_per_worker={threads}", "ray.use_gpu=false",
                *SAMPLERS["sandwich"], f"train.init_from={sandwich}"]
    if count:
        settings.append(f"train.transformer_stages={count}")
    for item in settings:
        cli += ["--set", item]
    run_cli(cli, out / f"{name}.log")
    return find_checkpoint(out / name, SUPERNET, final=True)


def remedy_checkpoints(out: Path) -> dict[str, Path]:
    """The remedies' supernets that exist: the few-shot folder, the longer training's final checkpoint."""
    from autovit_ray.checkpoint import find_checkpoint, is_few_shot

    found = {"fewshot": out / "fewshot"} if is_few_shot(out / "fewshot") else {}
    try:
        found["longer"] = find_checkpoint(out / remedy_name("longer"), SUPERNET, final=True)
    except ValueError:
        pass
    return found


def training_remedies(sandwich: Path, out: Path, data_dir: Path) -> dict[str, Any]:
    """Stage 6 (module doc): the few-shot parts two at once (a core each), then the longer training alone,
    then both scored against the truth as the truth scored the supernets (`remedy-training.json`)."""
    path = out / "remedy-training.json"
    if path.is_file():
        return json.loads(path.read_text())
    parts: dict[int, Path] = {}

    def part(count: int) -> None:
        parts[count] = train_remedy(sandwich, out, data_dir, count, threads=1)

    run_at_once(list(FEW_SHOT_COUNTS), part, at_once=2)
    cli = ["autovit_ray.fewshot", "--out", str(out / "fewshot")]
    for count in FEW_SHOT_COUNTS:
        cli += ["--part", f"{count}={parts[count]}"]
    run_cli(cli, out / "fewshot.log")
    train_remedy(sandwich, out, data_dir, None, threads=2)
    log("remedies: the few-shot supernet and the longer training against the truth")
    record = {"epochs": {"fewshot": REMEDY_EPOCHS, "longer": LONGER_EPOCHS}, "from": public_path(sandwich),
              "calib_batches": SCAN_CALIB_BATCHES,
              "supernets": against_truth(remedy_checkpoints(out), out, SCAN_CALIB_BATCHES, None),
              "commit": code_commit()}
    atomic_write_text(path, json.dumps(record, indent=1))
    return record


def compute(out: Path, scans: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's compute plan beside what each step took so far (hours; None: not measured yet)."""
    supernets = {s: {k: v for k, v in (training_hours(out / f"{s}-e{EPOCHS}") or {"epochs": 0}).items()
                     if k != "intervals"} for s in SAMPLERS}
    truths = [t for t in (training_hours(d) for d in sorted((out / "truth").glob("*-s*")) if d.is_dir()) if t]
    scan_seconds = [v["seconds"] for v in scans.values() if "seconds" in v]
    return [
        {"step": f"sandwich supernet, {EPOCHS} epochs ({supernets['sandwich']['epochs']} done)", "plan": "2.5-3.5",
         **supernets["sandwich"]},
        {"step": f"uniform control, {EPOCHS} epochs ({supernets['uniform']['epochs']} done)", "plan": "1.2",
         **supernets["uniform"]},
        {"step": f"scans, {SCAN_SUBNETS + 2} subnets each ({len(scan_seconds)} of {len(SAMPLERS)} timed)",
         "plan": "0.5", "hours": sum(scan_seconds) / 3600 if scan_seconds else None},
        {"step": f"truth, {TRUTH_SUBNETS + TRUTH_REPEAT} runs x {TRUTH_EPOCHS} epochs, two at once ({len(truths)} "
                 "begun; wall clock while any trained)", "plan": "6-12",
         "hours": covered_hours([i for t in truths for i in t["intervals"]]) if truths else None,
         "begun": len(truths), "finished": sum(t["epochs"] >= TRUTH_EPOCHS for t in truths)},
    ] + remedy_compute(out)


def remedy_compute(out: Path) -> list[dict[str, Any]]:
    """The remedies' training rows (none before they start)."""
    runs = {remedy_name("fewshot", c): training_hours(out / remedy_name("fewshot", c)) for c in FEW_SHOT_COUNTS}
    parts = [r for r in runs.values() if r]
    rows = []
    if parts:
        rows.append({"step": f"remedy: few-shot parts, {len(FEW_SHOT_COUNTS)} x {REMEDY_EPOCHS} epochs, two at once "
                             f"({sum(p['epochs'] for p in parts)} epochs done)", "plan": "3-7",
                     "hours": covered_hours([i for p in parts for i in p["intervals"]])})
    longer = training_hours(out / remedy_name("longer"))
    if longer:
        rows.append({"step": f"remedy: longer training, {LONGER_EPOCHS} epochs ({longer['epochs']} done)",
                     "plan": "3-7", **{k: v for k, v in longer.items() if k != "intervals"}})
    return rows


def covered_hours(intervals: list[list[float]]) -> float:
    """Hours covered by the union of [start, end] intervals in seconds: epochs of runs that trained side by
    side count once, and the hours between sessions, when nothing trained, not at all."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total / 3600


def compute_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| step | plan (h) | measured wall clock (h) | at the fastest epoch's pace (h) |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['step']} | {row['plan']} | {_num(row.get('hours'), 1)} | "
                     f"{_num(row.get('quiet_hours'), 1)} |")
    return ["Compute (2 cores; the wall clock includes the minutes a run was paused or shared the cores with "
            "test runs, so the fastest epoch's pace is the cleaner cost):", "", *lines, ""]


def report(out: Path) -> dict[str, Any]:
    """bench/results/supernet_fidelity.json and the BENCHMARKS.md section from what exists."""
    recipe = json.loads(RECIPE_JSON.read_text()) if RECIPE_JSON.is_file() else {}
    peer = recipe.get("peer") or {}
    scans = {s: json.loads((out / f"scan-{s}.json").read_text()) for s in SAMPLERS if (out / f"scan-{s}.json").is_file()}
    fidelity_path = out / "truth" / "fidelity.json"
    fidelity = json.loads(fidelity_path.read_text()) if fidelity_path.is_file() else None
    remedy_path = out / "remedy-calibration.json"
    remedy = json.loads(remedy_path.read_text()) if remedy_path.is_file() else None
    supernets: dict[str, Any] = {}
    for sampler in SAMPLERS:
        progress = _epochs_done(out / f"{sampler}-e{EPOCHS}")
        entry: dict[str, Any] = {"sampler": sampler, "epochs": EPOCHS, "epochs_done": progress,
                                 "settings": SAMPLERS[sampler], "per_epoch": per_epoch(out / f"{sampler}-e{EPOCHS}")}
        if sampler in scans:
            entry["scan"] = {k: v for k, v in scans[sampler].items() if k != "subnets"}
            entry["inherited_span"] = scans[sampler]["largest_minus_smallest"]
        if fidelity:
            stats = truth_stats(fidelity, sampler)
            if stats:
                entry.update({k: stats.get(k) for k in TAU_KEYS})
        if remedy and sampler in remedy["supernets"]:
            stats = remedy["supernets"][sampler]
            entry["calibration_remedy"] = {"calib_size": remedy["calib_size"], **{
                k: stats.get(k) for k in ("kendall_tau", "tau_low", "tau_high", "tau_in_band", "tau_in_band_ci",
                                          "top3_overlap", "regret")}}
            recipe_scores = (truth_stats(fidelity, sampler) or {}).get("inherited") if fidelity else None
            if recipe_scores:
                entry["calibration_remedy"].update(recalibration_agreement(recipe_scores, stats["inherited"]))
        supernets[sampler] = entry
    training_path = out / "remedy-training.json"
    training = json.loads(training_path.read_text()) if training_path.is_file() else None
    for remedy, stats in (training or {}).get("supernets", {}).items():
        # a remedy has no scan: its span is over the truth's subnets
        more = training["epochs"][remedy]
        supernets[remedy] = {"sampler": "sandwich", "remedy": REMEDY_WORDS[remedy], "epochs": EPOCHS + more,
                             "epochs_done": EPOCHS + more, "inherited_span": stats["inherited_span"],
                             **{k: stats.get(k) for k in TAU_KEYS}}
    macs_tau_in_band = None
    if fidelity:
        inherited_scores = {name: scored["inherited"] for name in SAMPLERS
                            if (scored := truth_stats(fidelity, name))}
        inherited_scores |= {name: scored["inherited"] for name, scored in (training or {}).get("supernets", {}).items()}
        macs_tau_in_band, paired = paired_in_band(inherited_scores, fidelity["standalone"]["subnets"])
        for name, differences in paired.items():
            supernets[name]["paired_in_band"] = differences
    band_path = out / "band.json"
    band = json.loads(band_path.read_text()) if band_path.is_file() else None
    gate_path = out / "gate.json"
    gate = json.loads(gate_path.read_text()) if gate_path.is_file() else None
    # nothing is chosen while the remedies the missed goal calls for are still training
    remedies_due = fidelity is not None and training is None and not goal_met(supernets["sandwich"])
    chosen = choose(supernets, scans, band) if fidelity and not remedies_due else None
    from autovit_ray.fidelity import read_results, truth_ceiling

    # the tau a perfect predictor would reach against this truth (a truth scored before it was reported: here)
    standalone = {**truth_ceiling(fidelity["standalone"]["subnets"], fidelity["standalone"]["seed_sd"]),
                  **fidelity["standalone"]} if fidelity else None

    # every finished stand-alone run's scores, while the truth trains and after (test: reported only)
    truth_runs = {name: {k: run[k] for k in ("seed", "epochs", "val_top1", "test_top1")}
                  for name, run in sorted(read_results(out / "truth").items())}
    scanned = {s: v["subnets"] for s, v in scans.items()}
    result = {
        "peer": {"val_top1": peer.get("val_top1"), "test_top1": peer.get("test_top1"), "epochs": PEER_EPOCHS,
                 "adaptation": (recipe.get("choice") or {}).get("adaptation"),
                 "recipe": (recipe.get("choice") or {}).get("recipe")},
        "supernets": supernets, "span_gate": SPAN_GATE, "gate": gate,
        "lut": lut_quality(), "band": band,
        "standalone": standalone, "truth_runs": truth_runs, "chosen": chosen, "remedies_due": remedies_due,
        "macs_tau_in_band": macs_tau_in_band,
        "earlier_runs": earlier_runs(supernets, scanned),
        "scans": scanned, "compute": compute(out, scans),
        "stage_commits": stage_commits(out, scans, band), "report_commit": code_commit(),
    }
    atomic_write_text(RESULTS_JSON, json.dumps(public_paths(result), indent=1) + "\n")
    keep_files(kept_files(out))
    if scans:
        plot_scans(scans, result["band"], SCAN_PNG)
    if fidelity:
        found = {sampler: truth_stats(fidelity, sampler) for sampler in SAMPLERS}
        inherited = {sampler: stats["inherited"] for sampler, stats in found.items() if stats}
        inherited.update({name: stats["inherited"] for name, stats in (training or {}).get("supernets", {}).items()})
        if inherited:
            plot_fidelity(inherited, standalone["subnets"], supernets, FIDELITY_PNG)
    replace_markdown_section(BENCHMARKS, SECTION, section(result))
    return result


TAU_KEYS = ("kendall_tau", "tau_low", "tau_high", "tau_in_band", "tau_in_band_ci", "tau_macs", "tau_params",
            "top3_overlap", "regret")
REMEDY_WORDS = {"fewshot": f"few-shot split on the transformer stage count {list(FEW_SHOT_COUNTS)}, each part "
                           f"{REMEDY_EPOCHS} more epochs from the sandwich supernet on its own subnets",
                "longer": f"the sandwich supernet trained {LONGER_EPOCHS} more epochs (the parts' compute together)"}


def truth_stats(fidelity: dict[str, Any], sampler: str) -> dict[str, Any] | None:
    """One supernet's statistics in the truth's fidelity.json (keyed by checkpoint path)."""
    return next((v for k, v in fidelity["supernets"].items() if f"{sampler}-e{EPOCHS}" in k), None)


def paired_in_band(inherited: dict[str, list[float]],
                   subnets: list[dict[str, Any]]) -> tuple[float | None, dict[str, dict[str, Any]]]:
    """MACs' in-band tau, and each supernet's in-band tau against the truth minus MACs' and (but the
    sandwich's own) minus the sandwich supernet's, on the same in-band subnets and bootstrap resamples
    (`stats.paired_tau_difference`): whether one ranks better than another beyond the noise their shared
    truth gives both."""
    from autovit_ray.stats import kendall_tau, paired_tau_difference

    band = [i for i, row in enumerate(subnets) if row["in_band"]]
    if len(band) < 3:
        return None, {}
    truth = [subnets[i]["val_top1"] for i in band]
    macs = [subnets[i]["macs"] for i in band]
    found: dict[str, dict[str, Any]] = {}
    for name, scores in inherited.items():
        in_band = [scores[i] for i in band]
        found[name] = {"minus_macs": paired_tau_difference(in_band, macs, truth)}
        if name != "sandwich" and "sandwich" in inherited:
            found[name]["minus_sandwich"] = paired_tau_difference(
                in_band, [inherited["sandwich"][i] for i in band], truth)
    macs_tau = kendall_tau(macs, truth)
    return (macs_tau if math.isfinite(macs_tau) else None), found


def best_inherited_in_band(scan_record: dict[str, Any], band: dict[str, Any] | None) -> float | None:
    """The best inherited validation top-1 among a scan's subnets inside the band (None: none there)."""
    if band is None:
        return None
    low, high = band["band_ms"]
    inside = [row["val_top1"] for row in scan_record["subnets"] if low <= row["lut_ms"] <= high]
    return max(inside, default=None)


def choose(supernets: dict[str, Any], scans: dict[str, Any], band: dict[str, Any] | None) -> str | None:
    """The issue's rule: the better in-band tau; at a tie (equal to two decimals, the precision the
    section reports), the better inherited accuracy at the peer's latency (the scan's best in the band).
    None until every supernet has its tau."""
    if not supernets or any(entry.get("tau_in_band") is None for entry in supernets.values()):
        return None

    def key(name: str) -> tuple[float, float]:
        at_peer = best_inherited_in_band(scans[name], band) if name in scans else None
        return round(supernets[name]["tau_in_band"], 2), -1.0 if at_peer is None else at_peer

    return max(supernets, key=key)


def plot_fidelity(inherited: dict[str, list[float]], subnets: list[dict[str, Any]], supernets: dict[str, Any],
                  path: Path) -> None:
    """Inherited against stand-alone validation top-1, one panel per supernet, tau with its interval
    (the in-band subnets filled)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.2 * len(inherited), 3.4))
    axes = figure.subplots(1, len(inherited), squeeze=False)[0]
    truth = [s["val_top1"] for s in subnets]
    in_band = [bool(s.get("in_band")) for s in subnets]
    for ax, (name, scores) in zip(axes, inherited.items()):
        stats = supernets.get(name, {})
        for inside, label in ((True, "in the band"), (False, "outside")):
            points = [(x, y) for x, y, b in zip(scores, truth, in_band) if b == inside]
            if points:
                ax.scatter(*zip(*points), s=16, color="tab:blue", facecolors=None if inside else "none", label=label)
        ax.set_title(f"{name}: tau {_num(stats.get('kendall_tau'))} [{_num(stats.get('tau_low'))}, "
                     f"{_num(stats.get('tau_high'))}]\nin band {_num(stats.get('tau_in_band'))}", fontsize=8)
        ax.set_xlabel("inherited val top-1 %", fontsize=8)
    axes[0].set_ylabel("stand-alone val top-1 %", fontsize=8)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=110)
    tmp.replace(path)


def plot_scans(scans: dict[str, Any], band: dict[str, Any] | None, path: Path) -> None:
    """Inherited validation top-1 against table latency, one colour per supernet (the cheap check)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    for (sampler, record), colour in zip(scans.items(), ("tab:blue", "tab:orange")):
        rows = record["subnets"]
        axes.scatter([r["lut_ms"] for r in rows], [r["val_top1"] for r in rows], s=14, color=colour,
                     label=f"{sampler} (epoch {record.get('epochs_done', '?')}): largest - smallest "
                           f"{_span(record)} pt")
    if band:
        axes.axvspan(*band["band_ms"], color="0.9", zorder=0, label="0.8-1.2x the peer's latency")
    axes.set_xlabel("latency-table ms (torch-cpu, 32 px)")
    axes.set_ylabel("inherited validation top-1 % (BN recalibrated)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=110)
    tmp.replace(path)


def _training_run(experiment: Path) -> tuple[Any, str] | None:
    """(MLflow client, run id) of the XXS training in an experiment folder (None before it exists)."""
    from mlflow.tracking import MlflowClient

    from autovit_ray.experiment import Experiment

    layout = Experiment(experiment)
    if not layout.tracking_db.is_file():
        return None
    client = MlflowClient(layout.tracking_uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.data.tags.get("supernet") == SUPERNET]
    return (client, runs[0].info.run_id) if runs else None


def training_hours(experiment: Path) -> dict[str, float] | None:
    """A training's cost from its MLflow run: `hours`, the wall clock of its epochs (training and
    validation; pauses and whatever shared the cores included), and `quiet_hours`, as many epochs at its
    fastest epoch's pace (None before an epoch ends)."""
    found = _training_run(experiment)
    if found is None:
        return None
    client, run_id = found
    epochs: dict[int, float] = {}
    ends: dict[int, float] = {}
    for key in ("train_time_s", "eval_time_s"):
        for m in client.get_metric_history(run_id, key):
            epochs[m.step] = epochs.get(m.step, 0.0) + m.value
            ends[m.step] = max(ends.get(m.step, 0.0), m.timestamp / 1000)
    if not epochs:
        return None
    return {"epochs": len(epochs), "hours": sum(epochs.values()) / 3600,
            "quiet_hours": len(epochs) * min(epochs.values()) / 3600,
            # [start, end] of each epoch in seconds since 1970: runs that trained side by side overlap
            "intervals": [[ends[e] - epochs[e], ends[e]] for e in sorted(epochs)]}


def per_epoch(experiment: Path) -> list[dict[str, float]]:
    """The training's own per-epoch validation (1,280 images, the training's BatchNorm statistics) of the
    smallest, the largest and the random subnets' mean, from the experiment's MLflow database ([] before
    it exists): how the largest and the smallest separate while the supernet trains."""
    found = _training_run(experiment)
    if found is None:
        return []
    client, run_id = found
    curves = {key: {m.step: m.value for m in client.get_metric_history(run_id, f"val_top1_{key}")}
              for key in ("smallest", "largest", "random_mean")}
    return [{"epoch": epoch, **{key: curve[epoch] for key, curve in curves.items()}}
            for epoch in sorted(curves["largest"]) if all(epoch in curve for curve in curves.values())]


def same_epochs(now: list[dict[str, float]], before: list[dict[str, float]]) -> dict[str, int]:
    """How far a training repeats an earlier one of the same recipe and seeds (`per_epoch` rows of each):
    the epochs both have, and how many of them have the same validation numbers to every digit."""
    earlier = {row["epoch"]: row for row in before}
    both = [row for row in now if row["epoch"] in earlier]
    return {"epochs": len(both), "same": sum(row == earlier[row["epoch"]] for row in both)}


def _epochs_done(experiment: Path) -> int:
    from autovit_ray.checkpoint import find_checkpoint, read_meta

    try:
        return int(read_meta(find_checkpoint(experiment, SUPERNET))["epoch"])
    except (ValueError, OSError):
        return 0


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _span(scan_record: dict[str, Any]) -> str:
    """The largest minus the smallest, with its paired 95% interval when the scan has one."""
    paired = scan_record.get("span_paired")
    span = _num(scan_record.get("largest_minus_smallest"))
    return f"{span} [{paired['low']:.2f}, {paired['high']:.2f}]" if paired else span


def per_epoch_lines(supernets: dict[str, Any]) -> list[str]:
    """The largest minus the smallest at every fifth epoch (and the last) of each supernet's training."""
    lines = []
    for name, s in supernets.items():
        rows = s.get("per_epoch") or []
        shown = [r for r in rows if r["epoch"] % 5 == 0 or r is rows[-1]]
        if shown:
            lines.append(f"{name}: " + ", ".join(f"epoch {r['epoch']} {r['largest'] - r['smallest']:+.1f}"
                                                 for r in shown))
    if not lines:
        return []
    return ["", "Largest minus smallest in the training's own per-epoch validation (1,280 images, the training's "
                "BatchNorm statistics; one accuracy's standard error there is about 1.2 points): "
            + "; ".join(lines) + "."]


def gate_words(gate: dict[str, Any] | None) -> str:
    """What `gate.json` says, as the end of the section's gate sentence ("" before the scan)."""
    if gate is None:
        return ""
    measured = f" Measured {gate['span']:.2f} points: "
    if gate["passed"]:
        return measured + "met."
    if gate["continued_because"]:
        return measured + f"not met; the run went on because: {gate['continued_because'].rstrip('.')}."
    return measured + "not met; the run stopped there."


def recalibration_agreement(before: list[float], after: list[float]) -> dict[str, float]:
    """How far the same subnets' inherited scores move between two BatchNorm recalibrations: the
    scores' own noise, which caps tau as the truth's seed noise does. `tau_between_calibrations`: their
    Kendall tau; `sd_between_calibrations`: the sd of the per-subnet difference (points); `inherited_span`:
    the spread it is measured against."""
    import statistics

    from autovit_ray.stats import kendall_tau

    return {"tau_between_calibrations": kendall_tau(before, after),
            "sd_between_calibrations": statistics.stdev(b - a for a, b in zip(before, after)),
            "inherited_span": max(before) - min(before)}


def remedy_lines(supernets: dict[str, Any]) -> list[str]:
    """The calibration remedy beside the recipe's scores ([] before it ran)."""
    cells, agreement = [], []
    for name, s in supernets.items():
        remedy = s.get("calibration_remedy")
        if remedy:
            cells.append(f"{name}: Kendall tau {_num(s.get('kendall_tau'))} -> {_num(remedy['kendall_tau'])} "
                         f"[{_num(remedy['tau_low'])}, {_num(remedy['tau_high'])}], in band "
                         f"{_num(s.get('tau_in_band'))} -> {_num(remedy['tau_in_band'])}")
            calib_size = remedy["calib_size"]
            if "tau_between_calibrations" in remedy:
                agreement.append(f"{name} tau {_num(remedy['tau_between_calibrations'])}, the difference's sd "
                                 f"{_num(remedy['sd_between_calibrations'])} points against an inherited span of "
                                 f"{_num(remedy['inherited_span'])}")
    if not cells:
        return []
    lines = ["", f"More BatchNorm recalibration (the same subnets and truth; {calib_size:,} training images instead "
                 "of the recipe's 1,024): " + "; ".join(cells) + "."]
    if agreement:
        lines.append("The same subnets' inherited scores under the two recalibrations agree at: " + "; ".join(agreement)
                     + ". The inherited score has noise of its own (the calibration sample), a second cap on tau "
                       "beside the truth's seed noise; a change of tau smaller than its interval is not a remedy.")
    return lines


def training_remedy_lines(supernets: dict[str, Any]) -> list[str]:
    """The remedies that cost a training, against the sandwich supernet they started from ([] before)."""
    base = supernets.get("sandwich", {})
    cells = [f"{s['remedy']}: in-band tau {_num(s.get('tau_in_band'))} (sandwich {_num(base.get('tau_in_band'))}), "
             f"Kendall tau {_num(s.get('kendall_tau'))} [{_num(s.get('tau_low'))}, {_num(s.get('tau_high'))}], "
             f"regret {_num(s.get('regret'))} points" for s in supernets.values() if s.get("remedy")]
    if not cells:
        return []
    return ["", f"Remedies that cost a training (the sandwich supernet missed the goal of in-band tau ≥ {TAU_GOAL} "
                "above the MACs baseline): " + "; ".join(cells) + "."]


def chosen_words(chosen: str | None, supernets: dict[str, Any]) -> str:
    """The choice and whether it met the goal (every supernet's tau is in the table above)."""
    goal = f"in-band tau >= {TAU_GOAL} and above MACs'"
    if chosen is None:
        return f"The sandwich supernet misses the goal ({goal}): nothing is chosen until the training remedies are scored."
    met = [name for name, s in supernets.items() if goal_met(s)]
    return (f"Chosen supernet: {chosen} (in-band tau {_num(supernets[chosen].get('tau_in_band'))}, the best of "
            f"{len(supernets)}); " + (f"the goal ({goal}) is met by {', '.join(met)}." if met else
                                      f"none of the {len(supernets)} meets the goal ({goal})."))


def paired_lines(supernets: dict[str, Any], macs_tau_in_band: float | None) -> list[str]:
    """The paired in-band tau differences (`paired_in_band`) as one paragraph ([] before the truth)."""
    def cell(d: dict[str, Any]) -> str:
        return f"{_signed(d['difference'])} [{_signed(d['low'])}, {_signed(d['high'])}]"

    macs = [f"{name} {cell(s['paired_in_band']['minus_macs'])}" for name, s in supernets.items()
            if s.get("paired_in_band")]
    sandwich = [f"{name} {cell(s['paired_in_band']['minus_sandwich'])}" for name, s in supernets.items()
                if (s.get("paired_in_band") or {}).get("minus_sandwich")]
    if not macs:
        return []
    lines = ["", "Paired differences of in-band tau (the same in-band subnets, truth and bootstrap resamples for "
                 "both sides, 95% interval: the truth's noise is shared, so a difference can be surer than the "
                 "two taus' own intervals suggest): minus MACs' (in-band tau "
                 f"{_num(macs_tau_in_band)}): "
                 + "; ".join(macs) + "."]
    if sandwich:
        lines[-1] += " Minus the sandwich supernet's: " + "; ".join(sandwich) + "."
    return lines


def stage_commits(out: Path, scans: dict[str, Any], band: dict[str, Any] | None) -> dict[str, list[str]]:
    """{stage: the commits of the code that ran it}: the trainings and the truth from `stage_commits.json`,
    the measurements from their own records."""
    path = out / STAGE_COMMITS
    found: dict[str, list[str]] = json.loads(path.read_text()) if path.is_file() else {}
    records = {f"scan {name}": scan for name, scan in scans.items()} | {"band": band or {}}
    for name in ("calibration", "training"):
        remedy = out / f"remedy-{name}.json"
        records[f"remedy {name} scores"] = json.loads(remedy.read_text()) if remedy.is_file() else {}
    return found | {stage: [record["commit"]] for stage, record in records.items() if record.get("commit")}


def _scanned(row: dict[str, Any]) -> str:
    """A scanned subnet's identity across runs: its role and its arch."""
    return json.dumps([row["role"], row.get("arch")], sort_keys=True)


def earlier_runs(supernets: dict[str, Any], scans: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """What each earlier run (`EARLIER_RUNS`) had measured when it ended: its scans' largest minus smallest
    with the paired interval, and its truth's progress; and how far this run repeats it (the same recipe
    and seeds): `same_per_epoch`, per supernet, the epochs both have and how many of them have the same
    per-epoch validation numbers (`supernets`: this run's, with their `per_epoch`); `same_scan`, per
    supernet, the scanned subnets both have (same role and arch) and how many inherit the same validation
    top-1 (`scans`: this run's scanned subnets)."""
    found = []
    for path, why in EARLIER_RUNS.items():
        record = json.loads((ROOT / path).read_text())
        truth_row = next((row for row in record.get("compute", []) if "begun" in row), {})
        same = {}
        for name, s in record["supernets"].items():
            repeated = same_epochs((supernets.get(name) or {}).get("per_epoch", []), s.get("per_epoch", []))
            if repeated["epochs"]:
                same[name] = repeated
        same_scan = {}
        for name, rows in record.get("scans", {}).items():
            before = {_scanned(row): row["val_top1"] for row in rows}
            now = [row for row in scans.get(name, []) if _scanned(row) in before]
            if now:
                same_scan[name] = {"subnets": len(now), "same": sum(row["val_top1"] == before[_scanned(row)] for row in now)}
        found.append({"record": path.as_posix(), "why_ended": why, "report_commit": record.get("report_commit"),
                      "spans": {name: (s.get("scan") or {}).get("span_paired") or {"difference": s.get("inherited_span")}
                                for name, s in record["supernets"].items()},
                      "truth_finished": truth_row.get("finished", 0), "same_per_epoch": same,
                      "same_scan": same_scan})
    return found


def code_lines(commits: dict[str, list[str]]) -> list[str]:
    if not commits:
        return []
    return ["Code (commit of each stage; a stage resumed by newer code lists both): " + "; ".join(
        f"{stage} {', '.join(c[:7] for c in found)}" for stage, found in commits.items()) + ".", ""]


def earlier_run_lines(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for i, run in enumerate(runs, 1):
        spans = "; ".join(f"{name} {_span({'largest_minus_smallest': span.get('difference'), 'span_paired': span})}"
                          for name, span in run["spans"].items())
        lines += ["", f"Run {i} ([record]({run['record']})) ended before its truth did: {run['why_ended']}. It had "
                  f"measured largest − smallest: {spans} points; {run['truth_finished']} of its "
                  f"{TRUTH_SUBNETS + TRUTH_REPEAT} stand-alone runs had finished, their scores not kept."
                  + (" This run repeats its trainings so far: " + "; ".join(
                      f"{name}: {c['same']} of the {c['epochs']} epochs both runs trained have the same per-epoch "
                      "validation numbers to every digit" for name, c in run["same_per_epoch"].items()) + "."
                     if run["same_per_epoch"] else "")
                  + (" Its scans again: " + "; ".join(
                      f"{name}: {c['same']} of the {c['subnets']} subnets both scanned inherit the same validation "
                      "top-1 to every digit" for name, c in run["same_scan"].items()) + "."
                     if run.get("same_scan") else ""), ""]
    return lines


def section(r: dict[str, Any]) -> str:
    lines = [SECTION, "",
             "Command: `.venv/bin/python bench/supernet_fidelity.py --data-dir <cifar10>` (resumable), from a pinned "
             f"worktree; report: `--report-only`. XXS supernets on the `{INPUT_PROFILE}` profile and the recipe chosen "
             f"in the section above, {EPOCHS} epochs each. Validation split only (5k images held out of training).", "",
             *compute_lines(r["compute"]), *code_lines(r.get("stage_commits") or {}),
             "| supernet | epochs done | largest − smallest (inherited, val) [95%, paired] | random 50: span "
             "| Kendall tau [95%] | tau in band | tau of MACs |", "|---|---|---|---|---|---|---|"]
    for name, s in r["supernets"].items():
        scan_ = s.get("scan") or {}
        lines.append(f"| {name} | {s['epochs_done']}/{s['epochs']} | {_span(scan_)} | "
                     f"{_num(scan_.get('random_span'))} | {_num(s.get('kendall_tau'))} [{_num(s.get('tau_low'))}, "
                     f"{_num(s.get('tau_high'))}] | {_num(s.get('tau_in_band'))} | {_num(s.get('tau_macs'))} |")
    lines += ["", f"Gate before the truth: the sandwich supernet's largest minus smallest ≥ {r['span_gate']:.0f} "
                  f"points.{gate_words(r.get('gate'))}", *per_epoch_lines(r["supernets"]),
              *earlier_run_lines(r.get("earlier_runs", []))]
    if r["scans"]:
        lines += ["", f"![inherited validation top-1 vs table latency]({SCAN_PNG_IN_REPO.as_posix()})", ""]
    if r.get("lut"):
        q = r["lut"]
        lines.append(f"The latency table (torch-cpu, kept in bench/results/kept/), validated on {q['samples']} fresh "
                     f"subnets: predictor vs measured MAPE {q['predictor']['mape']:.1f} %, Kendall tau "
                     f"{q['predictor']['kendall_tau']:.2f}; the same subnets measured twice (the noise): MAPE "
                     f"{q['retest']['mape']:.1f} %, tau {q['retest']['kendall_tau']:.2f}; level predicted / measured "
                     f"x{q['level']:.2f} (retest x{q['retest_level']:.2f}), MAPE {q['mape_after_level']:.1f} % with "
                     "it divided out.")
    if r["band"]:
        lines.append(f"The peer's latency: {r['band']['peer_lut_ms']:.3f} table ms; band "
                     f"{r['band']['band_ms'][0]:.3f}–{r['band']['band_ms'][1]:.3f}.")
    if r["standalone"]:
        sd = r["standalone"].get("seed_sd")
        lines.append(f"Truth: {len(r['standalone']['subnets'])} subnets, {r['standalone']['epochs']} epochs alone; "
                     f"seed noise sd {_num(sd)} points, so a perfect predictor would reach tau "
                     f"{_num(r['standalone'].get('tau_ceiling'))} against it "
                     f"({_num(r['standalone'].get('tau_ceiling_in_band'))} in band): the ceiling of every tau "
                     f"above (the sd is from {len(r['standalone'].get('repeats') or [])} seed pairs, itself "
                     f"uncertain). " + chosen_words(r["chosen"], r["supernets"]))
        lines += remedy_lines(r["supernets"]) + training_remedy_lines(r["supernets"])
        lines += paired_lines(r["supernets"], r.get("macs_tau_in_band"))
        lines += ["", f"![inherited vs stand-alone validation top-1]({FIDELITY_PNG_IN_REPO.as_posix()})", ""]
    elif any(row.get("begun") for row in r["compute"]):
        truth_row = next(row for row in r["compute"] if "begun" in row)
        lines.append(f"The truth (stand-alone runs) is training: {truth_row['begun']} of "
                     f"{TRUTH_SUBNETS + TRUTH_REPEAT} runs begun, {truth_row['finished']} finished.")
    else:
        lines.append("The truth (stand-alone runs) has not run yet.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = staged_parser(__doc__, "supernet_fidelity", STAGES)
    parser.add_argument("--past-gate", default=None, metavar="REASON",
                        help="go on past a sandwich scan under the gate, for this recorded reason")
    args = parser.parse_args(argv)
    out = args.out.expanduser().resolve()
    if args.report_only:
        report(out)
        return 0
    # the recipe issue's committed result: a new machine has none of its artifacts, only this record
    peer = json.loads(RECIPE_JSON.read_text()).get("peer") or {}
    if (peer.get("val_top1") or 0.0) < GATE_VAL_TOP1:  # the recipe issue's gate: a peer worth beating
        raise SystemExit(f"error: the 30-epoch peer reached {peer.get('val_top1')} % validation top-1, under the "
                         f"recipe's gate of {GATE_VAL_TOP1} %: fix the recipe before training supernets on it")
    out.mkdir(parents=True, exist_ok=True)
    restore_files(kept_files(out))
    data_dir = args.data_dir.resolve()
    start = time.time()
    sandwich = train_supernet("sandwich", out, data_dir)
    if args.stop_after != "supernets":  # the gate before the control's hours
        if not lut_file().is_file():
            note_stage(out, "latency table")
        ensure_lut()
        if not check_gate(scan(sandwich, out, "sandwich"), out, args.past_gate):
            return 1
    checkpoints = {"sandwich": sandwich, "uniform": train_supernet("uniform", out, data_dir)}
    if args.stop_after == "supernets":
        return 0
    for sampler, checkpoint in checkpoints.items():
        scan(checkpoint, out, sampler)  # the sandwich's is on disk already: read back
    if args.stop_after == "scan":
        return 0
    band = peer_band(out)
    if args.stop_after == "band":
        return 0
    truth(checkpoints, band, out)
    if args.stop_after == "truth":
        return 0
    calibration_remedy(checkpoints, out)
    if args.stop_after == "calibration":
        return 0
    sandwich_stats = truth_stats(json.loads((out / "truth" / "fidelity.json").read_text()), "sandwich")
    if goal_met(sandwich_stats):
        log(f"remedies: none needed (the sandwich supernet's in-band tau {sandwich_stats['tau_in_band']:.2f} meets "
            f"the goal)")
    else:
        training_remedies(sandwich, out, data_dir)
    log(f"done in {(time.time() - start) / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
