"""Does bf16 autocast train as well as fp32 on this CPU? (issue 12)

    .venv/bin/python bench/bf16_accuracy.py [--epochs 3] [--threads 2]   # resumable: rerun to continue
    .venv/bin/python bench/bf16_accuracy.py --report-only                  # section again from the JSON

The XXS supernet (`cifar10` input profile, configs/train/cifar10.yaml with the recipe the CIFAR-10 result's
pilot chose, `light`: random-resized crop + flip + label smoothing on the in-memory batched data path,
no RandAugment, erasing, Mixup or CutMix; a 1-epoch warm-up, then cosine over `--epochs`) is trained twice from the same seed, once with
`train.amp: fp32` and once with `train.amp: bf16`, the two runs interleaved epoch by epoch (the first
to go alternates) so both see the same machine. After every epoch each is scored on the 5,000 held-out
validation images (BN recalibrated), in its own precision, on the same fixed subnets: smallest,
largest and 4 random ones. Both runs' state is saved after each epoch under
`$AUTOVIT_BENCH_DIR/bf16_accuracy` (default ~/.cache/autovit-ray/bench), so a stopped run continues.

"Within noise": the difference of two top-1 accuracies measured on 5,000 images has a standard error
of about sqrt(2 p (1 - p) / 5000), 0.9 points at p = 60%; the section gives the per-subnet
differences and their mean. Writes its section of BENCHMARKS.md and bench/results/bf16_accuracy.json.
Pause other work on the machine while it runs (the epoch times are the speed-up measurement).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from common import ROOT, bench_dir, cifar10_dir, code_identity, log, write_json

from autovit_ray.checkpoint import load_checkpoint, save_checkpoint
from autovit_ray.io import replace_markdown_section
from autovit_ray.space import load_space
from autovit_ray.training.config import load_config
from autovit_ray.training.loop import SupernetTrainer

HEADING = "## bf16 vs fp32 training on the CPU (issue 12)"
PRECISIONS = ("fp32", "bf16")
RESULT_PATH = ROOT / "bench" / "results" / "bf16_accuracy.json"
VAL_IMAGES = 5000
# bench/cifar10_result.py's `light` recipe: the one its pilot chose for 30 epochs
LIGHT_RECIPE = ("data.auto_augment=null", "data.re_prob=0", "data.mixup=0", "data.cutmix=0")


def trainer_for(amp: str, epochs: int, data_dir: str, out: Path, max_steps: int | None) -> SupernetTrainer:
    smoke = [f"train.max_steps_per_epoch={max_steps}", "eval.max_batches=1", "eval.calib_batches=1"] if max_steps else []
    cfg = load_config("cifar10", [f"data.data_dir={data_dir}", f"train.epochs={epochs}", f"train.amp={amp}",
                                  *LIGHT_RECIPE, "schedule.warmup_epochs=1", "supernets=xxs",
                                  "eval.num_random_subnets=4", "eval.max_batches=null", *smoke],
                      {"output_dir": str(out)})
    trainer = SupernetTrainer(cfg, load_space("xxs", input_profile="cifar10"), log=log)
    saved = out / amp
    if (saved / "state.pt").is_file():
        trainer.load_state_dict(load_checkpoint(saved))
        log(f"{amp}: resumed after epoch {trainer.epoch}")
    return trainer


def run(epochs: int, data_dir: str, threads: int, max_steps: int | None) -> dict[str, Any]:
    torch.set_num_threads(threads)
    out = bench_dir() / "bf16_accuracy"
    history_path = out / "history.json"
    history: dict[str, list[dict[str, float]]] = {amp: [] for amp in PRECISIONS}
    if history_path.is_file():
        history = json.loads(history_path.read_text())
    trainers = {amp: trainer_for(amp, epochs, data_dir, out, max_steps) for amp in PRECISIONS}
    for amp, trainer in trainers.items():  # history beyond a saved state (a stop between the two writes)
        history[amp] = history[amp][:trainer.epoch]
    for epoch in range(1, epochs + 1):
        order = PRECISIONS if epoch % 2 else PRECISIONS[::-1]
        for amp in order:
            trainer = trainers[amp]
            if trainer.epoch >= epoch:
                continue
            trained = trainer.train_epoch()
            scores = trainer.evaluate()
            row = {"epoch": epoch, "train_time_s": trained["train_time_s"], "train_loss": trained["train_loss"],
                   **{k: v for k, v in scores.items() if k.startswith("val_top1_")}}
            log(f"{amp} epoch {epoch}: {row}")
            save_checkpoint(out / amp, trainer.state_dict(row))
            history[amp].append(row)
            write_json(history_path, history)
    return {**summarise(history, epochs, threads, trainers["fp32"].precision, trainers["bf16"].precision),
            "code": code_identity()}


def summarise(history: dict[str, list[dict[str, float]]], epochs: int, threads: int, *precisions: str) -> dict[str, Any]:
    final = {amp: rows[-1] for amp, rows in history.items()}
    subnets = sorted(k for k in final["fp32"] if k.startswith("val_top1_") and k != "val_top1_random_mean")
    diffs = {k.removeprefix("val_top1_"): final["bf16"][k] - final["fp32"][k] for k in subnets}
    p = statistics.mean(final["fp32"][k] for k in subnets) / 100
    times = {amp: statistics.mean(r["train_time_s"] for r in rows) for amp, rows in history.items()}
    return {
        "epochs": epochs, "threads": threads, "precisions": list(precisions), "history": history,
        "bf16_minus_fp32": diffs, "mean_difference": statistics.mean(diffs.values()),
        "difference_standard_error": 100 * math.sqrt(2 * p * (1 - p) / VAL_IMAGES),
        "epoch_time_s": times, "bf16_speedup": times["fp32"] / times["bf16"],
    }


def section(result: dict[str, Any], command: str) -> str:
    history = result["history"]
    subnets = list(result["bf16_minus_fp32"])
    lines = [
        HEADING,
        "",
        f"Command: `{command}` (resumable; `--report-only` rewrites this from "
        "`bench/results/bf16_accuracy.json`). The XXS supernet on CIFAR-10 (`cifar10` profile, "
        "configs/train/cifar10.yaml with the `light` recipe: crop, flip, label smoothing; in-memory batched "
        f"data path), {result['epochs']} epochs (1 of warm-up, then cosine), {result['threads']} threads, trained twice from seed 0 with `train.amp: fp32` and "
        "`train.amp: bf16`, interleaved epoch by epoch; validation top-1 (%) on the 5,000 held-out images, "
        "each in its own precision, after BN recalibration, on the same subnets.",
        "",
        "| epoch | " + " | ".join(f"fp32 {s} | bf16 {s}" for s in ("smallest", "largest", "random_mean"))
        + " | fp32 s | bf16 s |",
        "|---|" + "---|" * 8,
    ]
    for fp32, bf16 in zip(history["fp32"], history["bf16"]):
        cells = [f"{fp32[f'val_top1_{s}']:.2f} | {bf16[f'val_top1_{s}']:.2f}"
                 for s in ("smallest", "largest", "random_mean")]
        lines.append(f"| {fp32['epoch']} | " + " | ".join(cells)
                     + f" | {fp32['train_time_s']:.0f} | {bf16['train_time_s']:.0f} |")
    se = result["difference_standard_error"]
    lines += [
        "",
        "bf16 - fp32 after the last epoch, per subnet (points): "
        + ", ".join(f"{s} {result['bf16_minus_fp32'][s]:+.2f}" for s in subnets)
        + f"; mean {result['mean_difference']:+.2f}. One difference's standard error on 5,000 images is "
        f"about {se:.2f} points, so differences within +-{2 * se:.1f} are noise.",
        f"Epoch time: fp32 {result['epoch_time_s']['fp32'] / 60:.2f} min, bf16 "
        f"{result['epoch_time_s']['bf16'] / 60:.2f} min: bf16 is {result['bf16_speedup']:.2f}x as fast. "
        "`train.amp: auto` stays fp32 on a CPU: the gain is small; `train.amp: bf16` asks for it.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=cifar10_dir())
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--results", type=Path, default=RESULT_PATH)
    parser.add_argument("--max-steps", type=int, default=None, help="steps per epoch (smoke runs only)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the section from bench/results/bf16_accuracy.json")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: expected at least 1")
    command = f"nohup .venv/bin/python bench/bf16_accuracy.py --epochs {args.epochs} &"
    if args.report_only:
        result = json.loads(args.results.read_text())
    else:
        result = run(args.epochs, args.data_dir, args.threads, args.max_steps)
        write_json(args.results, result)
    replace_markdown_section(args.out, HEADING, section(result, command))
    print(section(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
