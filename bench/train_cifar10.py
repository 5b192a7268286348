"""Benchmark: supernet training on CIFAR-10 (issue 3; DESIGN.md section 4).

One resumable command (rerun it to continue; it runs for hours on a 2-core CPU, so start it in the
background):

    nohup .venv/bin/python bench/train_cifar10.py > outputs/bench/train_cifar10.log 2>&1 &

What it trains, all at 32 px on the 45k-image training split, with the recipe of configs/train/cifar10.yaml
(AdamW, cosine with warm-up, RandAugment, Mixup / CutMix, random erasing, label smoothing), the same
epochs, batch and seed for every model:

1. ``cifar10-xxs``: the XXS supernet without a teacher, through `python -m autovit_ray.train`
   (Ray Train), checkpoints in outputs/bench/cifar10-xxs/checkpoints/xxs/;
2. ``mobilevit_xxs``: timm's MobileViT-XXS from scratch with the same small-input adaptation as our
   cifar10 profile: stem stride 1 instead of 2 (ours: strides [1,1,2,2,1,2,2,1]; both end on a 2x2 map);
3. ``teacher``: timm ``resnet10t`` trained here at 64 px (the 32 px batch upsampled: its stride-4 stem
   then sees 16x16 maps, like removing the max-pool, but loadable by name), saved in the
   'checkpoint:<path>' teacher format; then ``cifar10-xxs-kd``: the XXS supernet with hard KD from it.

The three first runs advance one epoch at a time in turn, so partial results stay comparable; the KD
run starts when the teacher is done. After each round the section "## Supernet training on CIFAR-10
(issue 3)" of BENCHMARKS.md is rewritten with validation / test top-1 of the largest and smallest
subnets (BN recalibrated on the calibration subset) and of mobilevit_xxs, and the training throughput
ratio. `--report-only` just rewrites the section from what exists.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autovit_ray.checkpoint import find_checkpoint, list_checkpoints, load_supernet, read_meta  # noqa: E402
from autovit_ray.data import Loaders, build_loaders, resize_batch  # noqa: E402
from autovit_ray.distill import cross_entropy, save_teacher_checkpoint  # noqa: E402
from autovit_ray.io import replace_markdown_section  # noqa: E402
from autovit_ray.training.config import TrainConfig, load_config  # noqa: E402
from autovit_ray.training.loop import (  # noqa: E402
    SupernetTrainer,
    derive_seed,
    evaluate_subnet,
    sample_step_archs,
    seed_everything,
    top1,
)
from autovit_ray.training.optim import build_optimizer, build_scheduler  # noqa: E402

SECTION = "## Supernet training on CIFAR-10 (issue 3)"
TRAIN_IMAGES = 45_000  # CIFAR-10's 50k training images less the 5k held-out validation split
SUPERNET_RUNS = {"cifar10-xxs": "no teacher", "cifar10-xxs-kd": "hard KD from the local teacher"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bench_config(args: argparse.Namespace, overrides: list[str] = ()) -> TrainConfig:
    return load_config("cifar10", [f"data.data_dir={args.data_dir}", f"train.epochs={args.epochs}",
                                   *overrides], {"output_dir": str(args.output_dir)})


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------
# Supernet runs: the real CLI, one epoch per call (train.stop_after_epoch keeps the schedule)


def supernet_epochs_done(args: argparse.Namespace, name: str) -> int:
    found = list_checkpoints(args.output_dir / name, "xxs")
    return read_meta(found[-1])["epoch"] if found else 0


def advance_supernet(args: argparse.Namespace, name: str, epoch: int, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "autovit_ray.train", "--config", "cifar10", "--name", name,
           "--supernets", "xxs", "--output-dir", str(args.output_dir),
           "--set", f"data.data_dir={args.data_dir}", "--set", f"train.epochs={args.epochs}",
           "--set", f"train.stop_after_epoch={epoch}", "--set", "train.progress_bar=false"]
    if args.max_steps:
        extra = [*extra, f"train.max_steps_per_epoch={args.max_steps}", "eval.max_batches=1"]
    for item in extra:
        cmd += ["--set", item]
    log(f"{name}: training to epoch {epoch}")
    with open(args.output_dir / f"{name}.log", "a") as out:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"{name}: `{' '.join(cmd)}` failed (exit {rc}); see {args.output_dir / name}.log")


# ---------------------------------------------------------------------------------------------------
# Plain (non-supernet) models: mobilevit_xxs and the teacher, same data / optimizer / schedule / loss


def mobilevit_xxs_stem1(num_classes: int) -> nn.Module:
    model = timm.create_model("mobilevit_xxs", num_classes=num_classes)
    model.stem.conv.stride = (1, 1)  # the cifar10 profile's small-input adaptation (DESIGN.md 4)
    return model


def teacher_model(num_classes: int) -> nn.Module:
    return timm.create_model("resnet10t", num_classes=num_classes)


TEACHER_RESOLUTION = 64


def train_plain(args: argparse.Namespace, name: str, build: Callable[[int], nn.Module], resolution: int,
                until_epoch: int, loaders: Loaders, cfg: TrainConfig) -> dict[str, Any]:
    """Train a plain model to `until_epoch` (resumable from <out>/<name>/state.pt); returns its state."""
    out = args.output_dir / name
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pt"
    seed_everything(cfg.seed)
    model = build(loaders.num_classes)
    optimizer = build_optimizer(model, replace(cfg.optimizer, freeze_inactive=False))
    steps = min(len(loaders.train), args.max_steps or len(loaders.train))
    scheduler = build_scheduler(optimizer, cfg.train.epochs, steps, cfg.schedule)
    state: dict[str, Any] = {"epoch": 0, "history": []}
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    global_step = state["epoch"] * steps
    scheduler.step_update(global_step)  # the schedule is a function of the step: resume it there
    while state["epoch"] < until_epoch:
        epoch = state["epoch"] + 1
        log(f"{name}: epoch {epoch}")
        seed_everything(derive_seed(cfg.seed, epoch, 0))
        loaders.set_epoch(epoch)
        model.train()
        start, images, loss_sum = time.perf_counter(), 0, 0.0
        for i, (x, y) in enumerate(loaders.train):
            if i >= steps:
                break
            x, y = loaders.mixup_fn(x, y) if loaders.mixup_fn else (x, y)
            loss = cross_entropy(model(resize_batch(x, resolution)), y, loaders.label_smoothing)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            scheduler.step_update(global_step)
            images += len(x)
            loss_sum += float(loss.detach())
        elapsed = time.perf_counter() - start
        record = {"epoch": epoch, "train_loss": loss_sum / steps, "train_images_per_s": images / elapsed}
        # the same per-epoch curve as the supernet's (eval.max_batches = 10 batches: 1,280 images)
        correct, seen = top1(model, loaders.val, resolution, torch.device("cpu"), cfg.eval.max_batches)
        record["val_top1_curve"] = 100.0 * correct / seen
        if epoch % args.eval_every == 0 or epoch == cfg.train.epochs:
            for split in ("val", "test"):
                correct, seen = top1(model, getattr(loaders, split), resolution, torch.device("cpu"),
                                     args.max_eval_batches)
                record[f"{split}_top1"] = 100.0 * correct / seen
        log(f"{name}: {record}")
        state = {"epoch": epoch, "history": state["history"] + [record], "model": model.state_dict(),
                 "optimizer": optimizer.state_dict()}
        _save_atomic(state, state_path)
    return state


# ---------------------------------------------------------------------------------------------------
# Evaluation of the supernet checkpoints and the cost of exact freezing


def evaluate_supernet_run(args: argparse.Namespace, name: str, results: dict[str, Any]) -> None:
    """Full val / test top-1 of the smallest and largest subnets of the latest checkpoint (cached)."""
    try:
        path = find_checkpoint(args.output_dir / name, "xxs")
    except ValueError:
        return
    meta = read_meta(path)
    run = results.setdefault(name, {"evals": {}, "history": {}})
    run["history"][str(meta["epoch"])] = meta["metrics"]
    epoch = meta["epoch"]
    if str(epoch) in run["evals"] or not (epoch % args.eval_every == 0 or epoch == args.epochs):
        return
    model, space, cfg = load_supernet(path)
    loaders = build_loaders(cfg.data)
    row: dict[str, float] = {}
    for label, arch in (("smallest", space.smallest()), ("largest", space.largest())):
        for split in ("val", "test"):
            correct, seen = evaluate_subnet(model, arch, loaders, torch.device("cpu"), split,
                                            args.max_eval_batches)
            row[f"{split}_top1_{label}"] = 100.0 * correct / seen
    log(f"{name} epoch {epoch}: {row}")
    run["evals"][str(epoch)] = row


def measure_freeze_cost(args: argparse.Namespace, steps: int) -> dict[str, float]:
    """ms per training step (forward + backward + update) with exact freezing vs plain AdamW, on the
    same CIFAR-10 batches and subnets, interleaved to share the machine's noise."""
    times: dict[bool, list[float]] = {True: [], False: []}
    trainers = {freeze: SupernetTrainer(bench_config(args, [f"optimizer.freeze_inactive={freeze}"]),
                                        _space(), log=lambda _: None) for freeze in (True, False)}
    batches = iter(trainers[True].loaders.train)
    for step in range(steps):
        x, y = next(batches)
        x, y = trainers[True].loaders.mixup_fn(x, y)
        archs = sample_step_archs(trainers[True].space, "uniform", 0, 1, step)
        for freeze, trainer in trainers.items():
            trainer.model.train()
            start = time.perf_counter()
            trainer.train_step(x, y, archs)
            if step >= 3:  # the first steps fill the mask cache and allocate the optimizer state
                times[freeze].append(time.perf_counter() - start)
    exact, plain = statistics.median(times[True]) * 1e3, statistics.median(times[False]) * 1e3
    return {"exact_ms": exact, "plain_ms": plain, "ratio": exact / plain, "steps": len(times[True])}


def _space() -> Any:
    from autovit_ray.space import load_space

    return load_space("xxs", profile="cifar10")


# ---------------------------------------------------------------------------------------------------
# Report


def _fmt(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def remaining_compute(total: int, epochs_done: dict[str, int], throughputs: dict[str, float]) -> str:
    """Training hours left at the median img/s measured so far (evaluation time not included). The KD
    supernet, before it has run, is costed at the plain supernet's speed: a lower bound, since the
    teacher's forward pass comes on top."""
    speeds = dict(throughputs)
    speeds.setdefault("cifar10-xxs-kd", throughputs.get("cifar10-xxs", math.nan))
    hours = {name: (total - epochs_done.get(name, 0)) * TRAIN_IMAGES / speed / 3600
             for name, speed in speeds.items() if speed and not math.isnan(speed)}
    parts = ", ".join(f"{name} {h:.1f} h" for name, h in hours.items())
    return (f"Remaining training compute at the median throughputs above ({TRAIN_IMAGES:,} images per epoch, "
            f"evaluation not included): **{sum(hours.values()):.0f} h** ({parts}).")


def write_report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    lines = [SECTION, "",
             f"Command: `nohup .venv/bin/python bench/train_cifar10.py > outputs/bench/train_cifar10.log 2>&1 &` "
             f"(resumable: rerun to continue; `--report-only` rewrites this section). Target: {args.epochs} "
             "epochs each, CIFAR-10 at 32 px, 45k training / 5k held-out validation images (split_seed 0), "
             "official 10k test set; recipe configs/train/cifar10.yaml (AdamW lr 1e-3, wd 0.05, cosine, "
             "3 warm-up epochs, batch 128, RandAugment m9, Mixup 0.8 / CutMix 1.0, random erasing 0.25, "
             "label smoothing 0.1); 2 CPU threads shared with other jobs. mobilevit_xxs gets the same "
             "small-input adaptation as our cifar10 profile (stem stride 1; both end on 2x2 maps). "
             "Subnets are evaluated after BN recalibration on 1,024 training images; full val / test "
             f"top-1 every {args.eval_every} epochs and at the end (the epoch is given in brackets), the "
             "1,280-image validation curve every epoch. "
             f"Updated {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "| model | teacher | epochs done | val top-1, last epoch, 1,280 images (%) | val top-1 (%) | "
             "test top-1 (%) | train img/s (median) |",
             "|---|---|---|---|---|---|---|"]
    throughputs: dict[str, float] = {}
    epochs_done: dict[str, int] = {}
    for name, teacher in SUPERNET_RUNS.items():
        run = results.get(name)
        if not run:
            lines.append(f"| XXS supernet ({name}) | {teacher} | 0 | – | – | – | – |")
            continue
        done = epochs_done[name] = max(int(e) for e in run["history"])
        speeds = [m.get("train_images_per_s") for m in run["history"].values() if m.get("train_images_per_s")]
        throughputs[name] = statistics.median(speeds) if speeds else math.nan
        evals = run["evals"]
        last = evals[max(evals, key=int)] if evals else {}
        at = f" (at epoch {max(evals, key=int)})" if evals else ""
        curve = run["history"][str(done)]
        for label in ("largest", "smallest"):
            lines.append(f"| XXS supernet, {label} subnet ({name}) | {teacher} | {done}{at} | "
                         f"{_fmt(curve.get(f'val_top1_{label}'))} | "
                         f"{_fmt(last.get(f'val_top1_{label}'))} | {_fmt(last.get(f'test_top1_{label}'))} | "
                         f"{_fmt(throughputs[name], 0)} |")
    for name, label, teacher in (("mobilevit_xxs", "timm mobilevit_xxs (stem stride 1)", "none"),
                                 ("teacher", f"teacher: timm resnet10t at {TEACHER_RESOLUTION} px", "none")):
        run = results.get(name)
        if not run or not run["history"]:
            lines.append(f"| {label} | {teacher} | 0 | – | – | – | – |")
            continue
        history = run["history"]
        evaluated = [h for h in history if "val_top1" in h]
        last = evaluated[-1] if evaluated else {}
        speed = statistics.median(h["train_images_per_s"] for h in history)
        throughputs[name] = speed
        epochs_done[name] = history[-1]["epoch"]
        at = f" (at epoch {last['epoch']})" if last else ""
        lines.append(f"| {label} | {teacher} | {history[-1]['epoch']}{at} | "
                     f"{_fmt(history[-1].get('val_top1_curve'))} | {_fmt(last.get('val_top1'))} | "
                     f"{_fmt(last.get('test_top1'))} | {_fmt(speed, 0)} |")
    lines.append("")
    if "cifar10-xxs" in throughputs and "mobilevit_xxs" in throughputs:
        ratio = throughputs["cifar10-xxs"] / throughputs["mobilevit_xxs"]
        lines.append(f"Training throughput ratio, XXS supernet (one random subnet per step, exact freezing) "
                     f"/ mobilevit_xxs: **{ratio:.2f}** (medians of per-epoch img/s; the supernet's "
                     "includes the masked optimizer and dynamic slicing).")
    cost = results.get("freeze_cost")
    if cost:
        lines.append(f"Cost of exact freezing (`optimizer.freeze_inactive: true`, masked AdamW) vs plain "
                     f"AdamW over the whole supernet (AutoFormer): {cost['exact_ms']:.0f} vs "
                     f"{cost['plain_ms']:.0f} ms per training step (median of {cost['steps']} interleaved "
                     f"CIFAR-10 steps, batch 128, same subnets): ×{cost['ratio']:.2f}.")
    total = args.epochs
    if any(results.get(n, {}).get("history") for n in ("cifar10-xxs", "mobilevit_xxs")):
        done = min(max((int(e) for e in results.get("cifar10-xxs", {}).get("history", {"0": 0})), default=0),
                   len(results.get("mobilevit_xxs", {}).get("history", [])))
        if done < total:
            lines.append(f"Status: in progress ({done} of {total} epochs on both sides); numbers are partial "
                         "and will change.")
            lines.append(remaining_compute(total, epochs_done, throughputs))
    lines.append("")
    section = "\n".join(lines)
    log(f"wrote {replace_markdown_section(args.benchmarks_file, SECTION, section)}")


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=ROOT / "outputs" / "bench")
    parser.add_argument("--data-dir", default=str((ROOT.parent / "shared" / "data" / "cifar10").resolve()))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=5, help="full val/test evaluation every n epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--freeze-cost-steps", type=int, default=12)
    parser.add_argument("--max-steps", type=int, default=None, help="smoke runs: steps per epoch")
    parser.add_argument("--max-eval-batches", type=int, default=None, help="smoke runs: eval batches")
    parser.add_argument("--skip-kd", action="store_true", help="no teacher, no KD run")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--benchmarks-file", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    args.output_dir = args.output_dir.resolve()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    results_path = args.output_dir / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=1))
        write_report(args, results)

    if args.report_only:
        for name in SUPERNET_RUNS:
            evaluate_supernet_run(args, name, results)
        save()
        return 0
    if "freeze_cost" not in results:
        results["freeze_cost"] = measure_freeze_cost(args, args.freeze_cost_steps)
        log(f"freeze cost: {results['freeze_cost']}")
        save()
    cfg = bench_config(args)
    loaders = build_loaders(cfg.data)
    teacher_path = args.output_dir / "teacher" / "teacher.pt"
    kd_overrides = ["kd.kind=hard", f"kd.teacher=checkpoint:{teacher_path}",
                    f"kd.teacher_resolution={TEACHER_RESOLUTION}"]
    for epoch in range(1, args.epochs + 1):
        if supernet_epochs_done(args, "cifar10-xxs") < epoch:
            advance_supernet(args, "cifar10-xxs", epoch, [])
        evaluate_supernet_run(args, "cifar10-xxs", results)
        save()
        results["mobilevit_xxs"] = {"history": train_plain(
            args, "mobilevit_xxs", mobilevit_xxs_stem1, 32, epoch, loaders, cfg)["history"]}
        save()
        if args.skip_kd:
            continue
        teacher = train_plain(args, "teacher", teacher_model, TEACHER_RESOLUTION, epoch, loaders, cfg)
        results["teacher"] = {"history": teacher["history"]}
        if teacher["epoch"] == args.epochs and not teacher_path.is_file():
            model = teacher_model(loaders.num_classes)
            model.load_state_dict(teacher["model"])
            save_teacher_checkpoint(teacher_path, model, "resnet10t", loaders.num_classes, cfg.data.mean,
                                    cfg.data.std)
        save()
    if not args.skip_kd:
        for epoch in range(supernet_epochs_done(args, "cifar10-xxs-kd") + 1, args.epochs + 1):
            advance_supernet(args, "cifar10-xxs-kd", epoch, kd_overrides)
            evaluate_supernet_run(args, "cifar10-xxs-kd", results)
            save()
    for name in SUPERNET_RUNS:
        evaluate_supernet_run(args, name, results)
    save()
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
