"""Benchmark: a CIFAR-10 recipe that does the peer justice (issue 29).

The peer, timm ``mobilevit_xxs``, is trained with the product's reference trainer
(`autovit_ray.training.reference.train_reference`, what ``compare --train-references`` runs) under
small-input adaptations and recipes, chosen on the validation split, never the test split:

    .venv/bin/python bench/cifar10_recipe.py                    # resumable: rerun to continue
    .venv/bin/python bench/cifar10_recipe.py --stop-after pilot
    .venv/bin/python bench/cifar10_recipe.py --report-only       # section and JSON from what exists

1. ``pilot``: every (adaptation, recipe) arm for `PILOT_EPOCHS` epochs, the one-cycle schedule fitted
   to that length, seed 0; then the first arm again with seed 1, so the noise between two seeds of
   one arm stands beside the differences between arms. Validation top-1 on the full 5k split.
2. ``peer``: the best seed-0 arm by validation top-1, 30 epochs, seed 0; validation and test top-1.
3. ``span``: the largest and the smallest XXS subnet of the ``cifar10-p1`` input profile, each trained
   stand-alone through the product's ``python -m autovit_ray.train --arch`` with the chosen recipe for
   `PILOT_EPOCHS` epochs (beside the peer's pilot arm of the same length): the space's span on a fair
   recipe. Full 5k validation top-1 with each model's own BatchNorm statistics.
4. ``lut``: the torch-cpu latency table of the ``cifar10-p1`` XXS space at 32 px
   (``python -m autovit_ray.profile build``), validated on 100 fresh subnets (``profile validate``).

Adaptations (`MOBILEVIT_ADAPTATIONS`) set timm MobileViT's strides; every arm also lowers the patch
size where a 2x2 patch would leave one token per attention sequence (``min_tokens`` 4). Artifacts go to
``$AUTOVIT_BENCH_DIR/cifar10_recipe`` (default ``~/.cache/autovit-ray/bench``): one folder per run with
the trainer's resumable ``state.pt`` and ``history.json``, and ``results.json`` (every number, with the
code commit of each run). Run it from a pinned copy of the code. ``--report-only`` (from the checkout)
writes bench/results/cifar10_recipe.json and the BENCHMARKS.md section from the runs' folders, finished
or not, so a run in progress is reported as far as it got.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import ROOT, code_commit, log, run_cli, staged_parser, write_json

from autovit_ray.data import build_loader
from autovit_ray.evaluation import evaluate
from autovit_ray.io import atomic_write_text, replace_markdown_section
from autovit_ray.plan import count_macs, count_params
from autovit_ray.space import load_space
from autovit_ray.training.config import TrainConfig, load_config
from autovit_ray.training.reference import (
    MOBILEVIT_ADAPTATIONS,
    ReferenceSpec,
    attention_tokens,
    build_spec,
    train_reference,
)

STAGES = ("pilot", "peer", "span", "lut")
PEER = "mobilevit_xxs"
INPUT_PROFILE = "cifar10-p1"  # the space's small-input profile with >= 4 tokens per attention sequence
RESOLUTION = 32
MIN_TOKENS = 4
PILOT_EPOCHS = 10
PEER_EPOCHS = 30
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Per-sample pad-4 crop + flip, label smoothing, no Mixup / CutMix / erasing, the dataset's own
# normalisation, AdamW under a one-cycle schedule (peak 2e-3, 20 % warm-up from peak / 25, cosine to ~0).
BASE_RECIPE: dict[str, Any] = {
    "data.crop": "pad", "data.pad": 4, "data.hflip": 0.5, "data.auto_augment": None, "data.re_prob": 0.0,
    "data.color_jitter": 0.0, "data.mixup": 0.0, "data.cutmix": 0.0, "data.label_smoothing": 0.1,
    "data.mean": list(CIFAR10_MEAN), "data.std": list(CIFAR10_STD),
    "optimizer.lr": 2e-3, "optimizer.weight_decay": 0.05,
    "schedule.kind": "onecycle", "schedule.warmup_fraction": 0.2, "schedule.anneal": "cos",
    "schedule.warmup_lr": 8e-5, "schedule.min_lr": 1e-6,
    "train.grad_clip": 5.0, "eval.max_batches": None, "eval.every_n_epochs": 5,
}
RECIPES: dict[str, dict[str, Any]] = {
    "padcrop": {},
    "padcrop-ra5": {"data.auto_augment": "rand-m5-mstd0.5-inc1"},  # + light RandAugment (2 ops, m5)
}


@dataclass(frozen=True)
class Arm:
    adaptation: str
    recipe: str
    seed: int
    epochs: int

    @property
    def name(self) -> str:
        return f"{self.adaptation}-{self.recipe}-s{self.seed}-e{self.epochs}"


PILOT = [Arm("stem1", "padcrop", 0, PILOT_EPOCHS), Arm("stage2", "padcrop", 0, PILOT_EPOCHS),
         Arm("stem1", "padcrop-ra5", 0, PILOT_EPOCHS), Arm("stage2", "padcrop-ra5", 0, PILOT_EPOCHS),
         Arm("stem1", "padcrop", 1, PILOT_EPOCHS)]


def arm_config(arm: Arm, data_dir: Path) -> TrainConfig:
    extra = {**BASE_RECIPE, **RECIPES[arm.recipe], "name": arm.name, "seed": arm.seed,
             "train.epochs": arm.epochs, "data.data_dir": str(data_dir)}
    return load_config("cifar10", extra=extra)


def arm_spec(arm: Arm) -> ReferenceSpec:
    return ReferenceSpec(PEER, RESOLUTION, adaptation=arm.adaptation, min_tokens=MIN_TOKENS)


RESULTS_JSON = ROOT / "bench" / "results" / "cifar10_recipe.json"


def recorded_runs() -> dict[str, dict[str, Any]]:
    """Finished runs of the committed results (bench/results/cifar10_recipe.json), by arm name: on a new
    machine, whose artifact folder is empty, a finished run is reused from there, not trained again."""
    if not RESULTS_JSON.is_file():
        return {}
    saved = json.loads(RESULTS_JSON.read_text())
    runs = [*saved.get("pilot", []), *([saved["peer"]] if saved.get("peer") else [])]
    return {r["arm"]: r for r in runs if r.get("finished") and r.get("val_top1") is not None}


def run_arm(arm: Arm, out: Path, data_dir: Path, test: bool = False) -> dict[str, Any]:
    """Train (or resume) one arm; its record: validation top-1 of the last epoch, cost per epoch, and
    the test top-1 when `test` (the final peer only)."""
    run_dir = out / arm.name
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    recorded = recorded_runs().get(arm.name)
    if not run_dir.exists() and recorded is not None and (not test or recorded.get("test_top1") is not None):
        log(f"{arm.name}: reusing its recorded result ({RESULTS_JSON.name}, commits {recorded['commits']})")
        return {**recorded, "reused_from_record": True}
    cfg, spec = arm_config(arm, data_dir), arm_spec(arm)
    if not meta.get("finished"):
        run_dir.mkdir(parents=True, exist_ok=True)
        commits = meta.get("commits", []) + [code_commit()]  # one per (re)start of the run
        atomic_write_text(meta_path, json.dumps({"commits": commits, "finished": False}, indent=1))
        log(f"{arm.name}: training ({arm.epochs} epochs)")
        train_reference(cfg, spec, run_dir, log=log)
        meta = {"commits": commits, "finished": True}
        write_json(meta_path, meta)
    history = json.loads((run_dir / "history.json").read_text())
    model, note = build_spec(spec, 10)
    record: dict[str, Any] = {
        "arm": arm.name, "adaptation": arm.adaptation, "recipe": arm.recipe, "seed": arm.seed,
        "epochs": arm.epochs, "val_top1": history[-1]["val_top1"], "note": note,
        "tokens": attention_tokens(model, RESOLUTION),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_images_per_s": sorted(h["train_images_per_s"] for h in history)[len(history) // 2],
        "epoch_s": 45000 / sorted(h["train_images_per_s"] for h in history)[len(history) // 2],
        "commits": meta["commits"],
    }
    if test:
        if "test_top1" not in meta:
            model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True))
            meta["test_top1"] = evaluate(model, build_loader(cfg.data, "test", RESOLUTION), resolution=RESOLUTION,
                                         device=torch.device("cpu")).top1
            write_json(meta_path, meta)
        record["test_top1"] = meta["test_top1"]
    return record


def train_overrides(recipe: str, epochs: int, data_dir: Path) -> list[str]:
    """The recipe as `--set` overrides of `python -m autovit_ray.train --config cifar10`."""
    values = {**BASE_RECIPE, **RECIPES[recipe], "train.epochs": epochs, "data.data_dir": str(data_dir),
              "input_profile": INPUT_PROFILE, "train.progress_bar": False, "ray.torch_threads": 2}
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]  # JSON is YAML: null, lists, floats


def run_corner(corner: str, recipe: str, out: Path, data_dir: Path) -> dict[str, Any]:
    """Train the space's `corner` subnet stand-alone (`train --arch`, resumable) and score it on the
    full validation split with its own BatchNorm statistics."""
    from autovit_ray.checkpoint import find_checkpoint, load_supernet, read_meta
    from autovit_ray.data import build_loader

    space = load_space("xxs", input_profile=INPUT_PROFILE)
    arch = getattr(space, corner)()
    name = f"span-{corner}-{recipe}-e{PILOT_EPOCHS}"
    record_path = out / f"{name}.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    arch_file = out / f"{name}.arch.json"
    atomic_write_text(arch_file, arch.to_json())
    log(f"span: {corner} subnet {arch} stand-alone, {PILOT_EPOCHS} epochs")
    start = time.time()
    cli = ["autovit_ray.train", "--config", "cifar10", "--name", name, "--output-dir", str(out), "--arch", str(arch_file)]
    for item in train_overrides(recipe, PILOT_EPOCHS, data_dir):
        cli += ["--set", item]
    run_cli(cli, out / f"{name}.log")
    checkpoint = find_checkpoint(out / name, "xxs", final=True)
    supernet, _, config = load_supernet(checkpoint)
    model = supernet.get_active_subnet(arch).eval()
    val_top1 = evaluate(model, build_loader(config.data, "val", RESOLUTION), resolution=RESOLUTION,
                        device=torch.device("cpu")).top1
    record = {"arch": arch.to_dict(), "name": str(arch), "params_m": count_params(arch, 10, space) / 1e6,
              "macs_m": count_macs(arch, 10, space) / 1e6, "tokens": space.attention_tokens(RESOLUTION),
              "epochs": int(read_meta(checkpoint)["epoch"]), "val_top1": val_top1,
              "wall_s_this_run": time.time() - start, "commit": code_commit()}
    write_json(record_path, record)
    return record


def build_lut(out: Path) -> dict[str, Any]:
    """The torch-cpu table of the new profile, built and validated through `python -m autovit_ray.profile`."""
    path, report_dir = out / "luts" / f"xxs-{INPUT_PROFILE}-torch-cpu.parquet", out / "luts" / f"xxs-{INPUT_PROFILE}-validation"
    path.parent.mkdir(parents=True, exist_ok=True)
    common = ["--threads", "2", "--clock", "wall"]  # 2 threads, as trained; thread_cpu times one thread only
    if not path.is_file():
        log(f"lut: building the torch-cpu table of xxs {INPUT_PROFILE} at {RESOLUTION} px")
        run_cli(["autovit_ray.profile", "build", "--supernet", "xxs", "--input-profile", INPUT_PROFILE, "--backend", "torch-cpu",
                 "--resolution", str(RESOLUTION), "--num-classes", "10", "--references", "24", "--out", str(path),
                 *common], out / "lut.log")
    if not (report_dir / "validation.json").is_file():
        log("lut: validating it on 100 fresh subnets")
        run_cli(["autovit_ray.profile", "validate", "--lut", str(path), "--supernet", "xxs", "--input-profile", INPUT_PROFILE,
                 "--samples", "100", "--seed", "1", "--out", str(report_dir), *common], out / "lut.log")
    report = json.loads((report_dir / "validation.json").read_text())
    return {"path": str(path.relative_to(out)), "validation": {k: v for k, v in report.items() if k != "rows"},
            "commit": code_commit()}


GATE_VAL_TOP1 = 83.0
SECTION = "## A CIFAR-10 recipe that does the peer justice (issue 29)"


def arm_progress(arm: Arm, out: Path) -> dict[str, Any]:
    """What a run's folder holds so far (finished or not): epochs done, the last validation top-1
    (validation runs every 5 epochs and after the last), the median cost per epoch, the commits. A run
    with no folder here (another machine ran it) keeps its committed record."""
    run_dir = out / arm.name
    if not run_dir.exists() and arm.name in recorded_runs():
        return recorded_runs()[arm.name]
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else []
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").is_file() else {}
    rates = sorted(h["train_images_per_s"] for h in history)
    validated = [h for h in history if "val_top1" in h]
    return {"arm": arm.name, "adaptation": arm.adaptation, "recipe": arm.recipe, "seed": arm.seed,
            "epochs": arm.epochs, "epochs_done": len(history), "finished": bool(meta.get("finished")),
            "val_top1": validated[-1]["val_top1"] if validated else None,
            "val_epoch": validated[-1]["epoch"] if validated else None,
            "epoch_s": 45000 / rates[len(rates) // 2] if rates else None,
            "fastest_epoch_s": 45000 / rates[-1] if rates else None,
            "test_top1": meta.get("test_top1"), "commits": meta.get("commits", [])}


def tokens_table() -> dict[str, list[int]]:
    """Tokens per attention sequence at 32 px: our input profiles' 4 transformer stages, the peer's 3 blocks."""
    table = {f"autovit {p}": load_space("xxs", input_profile=p).attention_tokens(RESOLUTION) for p in ("cifar10", "cifar10-p1")}
    for adaptation in ("stem1", "stage2"):
        for min_tokens in (1, MIN_TOKENS):
            model, _ = build_spec(ReferenceSpec(PEER, RESOLUTION, adaptation=adaptation, min_tokens=min_tokens), 10)
            label = f"{PEER} {adaptation}" + (" + patch fix" if min_tokens > 1 else "")
            table[label] = attention_tokens(model, RESOLUTION)
    return table


def report(out: Path) -> dict[str, Any]:
    """bench/results/cifar10_recipe.json and the BENCHMARKS.md section from the runs' folders."""
    pilot = [arm_progress(arm, out) for arm in PILOT]
    done = [r for r in pilot if r["finished"] and r["seed"] == 0]
    repeat = [r for r in pilot if r["finished"] and r["seed"] != 0]
    twin = next((r for r in done if repeat and (r["adaptation"], r["recipe"]) == (repeat[0]["adaptation"],
                                                                                 repeat[0]["recipe"])), None)
    seed_gap = abs(twin["val_top1"] - repeat[0]["val_top1"]) if twin else None
    choice = max(done, key=lambda r: r["val_top1"]) if len(done) == len([a for a in PILOT if a.seed == 0]) else None
    peer = arm_progress(Arm(choice["adaptation"], choice["recipe"], 0, PEER_EPOCHS), out) if choice else None
    result: dict[str, Any] = {
        "pilot": pilot, "pilot_epochs": PILOT_EPOCHS, "seed_gap_val_top1": seed_gap,
        "recipes": {name: {**BASE_RECIPE, **over} for name, over in RECIPES.items()},
        "adaptations": {a: list(MOBILEVIT_ADAPTATIONS[a]) for a in ("stem1", "stage2")},
        "min_tokens": MIN_TOKENS, "tokens": tokens_table(),
        "choice": ({"adaptation": choice["adaptation"], "recipe": choice["recipe"],
                    "rule": "highest pilot validation top-1 among the seed-0 arms"} if choice else None),
        "peer": peer, "gate_val_top1": GATE_VAL_TOP1,
        "span": span_records(out),
        "lut": _lut_report(out),
        "gate_met": (peer["val_top1"] >= GATE_VAL_TOP1) if peer and peer["finished"] else None,
        "report_commit": code_commit(),
    }
    atomic_write_text(ROOT / "bench" / "results" / "cifar10_recipe.json", json.dumps(result, indent=1) + "\n")
    replace_markdown_section(ROOT / "BENCHMARKS.md", SECTION, section(result))
    return result


def span_records(out: Path) -> dict[str, Any]:
    """The finished span runs' records by corner (`span-<corner>-<recipe>-e<epochs>.json`, not the .arch.json)."""
    return {corner: json.loads(path.read_text()) for corner in ("largest", "smallest")
            for path in out.glob(f"span-{corner}-*-e{PILOT_EPOCHS}.json")}


def _lut_report(out: Path) -> dict[str, Any] | None:
    path = out / "luts" / f"xxs-{INPUT_PROFILE}-validation" / "validation.json"
    if not path.is_file():
        return None
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "rows"}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def measured_cost(r: dict[str, Any]) -> str:
    """The compute the plan estimated, as measured (wall clock; pauses for test suites included)."""
    pilot_h = sum(a["epochs_done"] * a["epoch_s"] for a in r["pilot"] if a.get("epoch_s")) / 3600
    parts = [f"pilot {pilot_h:.1f} h ({len(r['pilot'])} arms)"]
    if r["peer"] and r["peer"].get("epoch_s"):
        parts.append(f"peer {r['peer']['epochs_done'] * r['peer']['epoch_s'] / 3600:.1f} h "
                     f"({r['peer']['epochs_done']} epochs)")
    if r["span"]:
        parts.append(f"span {sum(v['wall_s_this_run'] for v in r['span'].values()) / 3600:.1f} h "
                     f"({len(r['span'])} subnets; the last run of each)")
    if r["lut"]:
        parts.append(f"LUT validation {r['lut']['seconds']:.0f} s")
    return ("**Measured cost** (plan: about 5 CPU-hours; wall clock on the 2-core machine, including the "
            "minutes a run was paused for the test suites): " + ", ".join(parts) + ".")


def section(r: dict[str, Any]) -> str:
    lines = [SECTION, "",
             "The peer, timm `mobilevit_xxs`, trained by the product's reference trainer (what `compare "
             "--train-references` runs) under two small-input adaptations and two recipes, chosen on the "
             f"5k validation split (never the test split). Pilot: {r['pilot_epochs']} epochs per arm, one-cycle "
             "schedule fitted to that length; then the winner for 30 epochs. Command, from a pinned worktree: "
             "`.venv/bin/python bench/cifar10_recipe.py --data-dir <CIFAR-10 npz folder, docs/data.md>` (resumable); "
             "this section: `--report-only`. Numbers: "
             "`bench/results/cifar10_recipe.json`.", "",
             "Recipe (both arms): per-sample pad-4 crop + flip, label smoothing 0.1, no Mixup/CutMix/erasing, "
             "CIFAR-10's own mean/std, AdamW (wd 0.05) with a one-cycle lr (peak 2e-3, 20 % linear warm-up "
             "from 8e-5, cosine to 1e-6), batch 128, 2 threads. `padcrop-ra5` adds RandAugment (2 ops, m5).", "",
             "| arm | adaptation (timm strides) | recipe | seed | epochs done | validation top-1 % | s / epoch (median) "
             "| fastest epoch s |",
             "|---|---|---|---|---|---|---|---|"]
    for a in r["pilot"]:
        val = _pct(a["val_top1"])
        if not a["finished"] and a["val_top1"] is not None:
            val += f" (epoch {a['val_epoch']})"
        cost = "–" if a["epoch_s"] is None else f"{a['epoch_s']:.0f}"
        fastest = "–" if a.get("fastest_epoch_s") is None else f"{a['fastest_epoch_s']:.0f}"
        strides = tuple(r["adaptations"][a["adaptation"]])
        lines.append(f"| {a['arm']} | {a['adaptation']} {strides} | {a['recipe']} | {a['seed']} | "
                     f"{a['epochs_done']}/{a['epochs']} | {val} | {cost} | {fastest} |")
    lines += ["", "The epoch times are wall clock of 45,000 training images, including any time the run was paused "
              "(`kill -STOP`) for the test suites; the fastest epoch of an arm is the cleaner cost figure."]
    gap = r["seed_gap_val_top1"]
    lines += ["", f"Noise between two seeds of one arm: {'not measured yet' if gap is None else f'{gap:.2f} points'} "
              "(validation top-1, one pair of seeds, so a single draw of the seed noise; one accuracy on 5,000 "
              "images has a binomial standard error of about 0.59 points at 77 %, a difference of two about 0.84 "
              "points: pilot gaps under about 1.7 points are within noise).", ""]
    lines += ["Tokens per attention sequence at 32 px (transformer stages / MobileViT blocks in order):", ""]
    lines += [f"- {name}: {tokens}" for name, tokens in r["tokens"].items()]
    peer = r["peer"]
    lines += [""]
    if r["choice"] is None:
        lines.append("**Status:** the pilot is still running; the 30-epoch peer starts when it ends.")
    elif peer is None or not peer["finished"]:
        done = 0 if peer is None else peer["epochs_done"]
        lines.append(f"**Choice:** {r['choice']['adaptation']} + {r['choice']['recipe']} ({r['choice']['rule']}). "
                     f"**Status:** the 30-epoch peer has {done}/30 epochs; the gate (validation >= "
                     f"{r['gate_val_top1']:.0f} %) is not decided yet.")
    else:
        verdict = "met" if r["gate_met"] else "missed"
        lines.append(f"**Peer, 30 epochs, seed 0** ({r['choice']['adaptation']} + {r['choice']['recipe']}): validation "
                     f"{peer['val_top1']:.2f} %, test {peer['test_top1']:.2f} %. Gate (validation >= "
                     f"{r['gate_val_top1']:.0f} %): **{verdict}**.")
    if r["span"]:
        lines += ["", f"The space's span on the chosen recipe ({PILOT_EPOCHS} epochs stand-alone, `train --arch`, "
                  f"profile {INPUT_PROFILE}):", "", "| subnet | params (M) | MACs (M) | validation top-1 % |", "|---|---|---|---|"]
        lines += [f"| {corner}: `{v['name']}` | {v['params_m']:.2f} | {v['macs_m']:.1f} | {v['val_top1']:.2f} |"
                  for corner, v in r["span"].items()]
    lines += ["", measured_cost(r)]
    if r["lut"]:
        v = r["lut"]
        pred, retest, level = v["predictor"], v["retest"], v["level"]
        lines += ["", f"The torch-cpu latency table of xxs {INPUT_PROFILE} at {RESOLUTION} px (2 threads, wall clock, "
                  f"`profile build` then `profile validate` on {v['samples']} fresh subnets, seed {v['seed']}, "
                  f"method {v['method']}): predictor vs measured MAPE {pred['mape']:.1f} %, Kendall tau "
                  f"{pred['kendall_tau']:.2f}; the same subnets measured twice (the noise): MAPE "
                  f"{retest['mape']:.1f} %, tau {retest['kendall_tau']:.2f}; tau of MACs {v['tau_macs']:.2f}, of "
                  f"params {v['tau_params']:.2f}. The table agrees with one measurement better than two "
                  f"measurements agree with each other, but its level is off: predicted / measured = x{level['ratio']:.2f} (retest "
                  f"x{level['retest_ratio']:.2f}); with that one factor divided out, MAPE {level['mape_after']:.1f} %. "
                  "Budgets in table milliseconds are therefore set from the peer measured beside subnets in one "
                  "run and converted to table milliseconds (issue 30's `band` stage), never from a measured "
                  "peer latency directly."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = staged_parser(__doc__, "cifar10_recipe", STAGES).parse_args(argv)
    if args.report_only:
        report(args.out.resolve())
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir.resolve()
    torch.set_num_threads(2)
    results: dict[str, Any] = {"pilot": [], "peer": None}

    def save() -> None:
        write_json(args.out / "results.json", results)

    for arm in PILOT:
        results["pilot"].append(run_arm(arm, args.out, data_dir))
        save()
    seed0 = [r for r in results["pilot"] if r["seed"] == 0]
    best = max(seed0, key=lambda r: r["val_top1"])
    results["choice"] = {"adaptation": best["adaptation"], "recipe": best["recipe"],
                         "rule": "highest pilot validation top-1 among the seed-0 arms"}
    save()
    log(f"pilot winner: {best['arm']} ({best['val_top1']:.2f} % validation)")
    if args.stop_after == "pilot":
        return 0
    peer = Arm(best["adaptation"], best["recipe"], 0, PEER_EPOCHS)
    results["peer"] = run_arm(peer, args.out, data_dir, test=True)
    save()
    log(f"peer {peer.name}: validation {results['peer']['val_top1']:.2f} %, test {results['peer']['test_top1']:.2f} %")
    if args.stop_after == "peer":
        return 0
    results["span"] = {corner: run_corner(corner, best["recipe"], args.out, data_dir) for corner in ("largest", "smallest")}
    save()
    if args.stop_after == "span":
        return 0
    results["lut"] = build_lut(args.out)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
