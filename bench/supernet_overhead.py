"""Cost of running a subnet inside the supernet (sliced weights) vs as an extracted static module.

For N random archs per supernet, at a fixed batch and resolution, measure interleaved:
  (a) a training step (forward, backward, SGD step) and (b) eval inference,
for the active path in the supernet and for the extracted static subnet; report the median
ratio supernet / static (target <= 1.10). Also the training throughput of the largest XXS subnet
against timm's `mobilevit_xxs` at the same batch and resolution.

    .venv/bin/python bench/supernet_overhead.py [--archs 5] [--batch 64] [--rounds 5] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import random
import statistics
import time
from collections.abc import Callable

import timm
import torch
from torch import nn

from autovit_ray.io import replace_markdown_section
from autovit_ray.nn import Supernet
from autovit_ray.space import load_space


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_pair(dynamic: nn.Module, static: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 rounds: int) -> tuple[float, float]:
    """Median time ratios (train, eval) of dynamic over static, interleaving the two each round."""
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=1e-4) for m in (dynamic, static)}
    samples: dict[str, list[float]] = {"train_dyn": [], "train_sta": [], "eval_dyn": [], "eval_sta": []}
    for round_index in range(rounds + 1):  # round 0 is warm-up
        for key, model in (("dyn", dynamic), ("sta", static)):
            model.train()
            t_train = timed(lambda m=model: train_step(m, x, y, opts[id(m)]))
            model.eval()
            with torch.inference_mode():
                t_eval = timed(lambda m=model: m(x))
            if round_index:
                samples[f"train_{key}"].append(t_train)
                samples[f"eval_{key}"].append(t_eval)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return med["train_dyn"] / med["train_sta"], med["eval_dyn"] / med["eval_sta"]


def throughput(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rounds: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()
    train_step(model, x, y, opt)  # warm-up
    times = [timed(lambda: train_step(model, x, y, opt)) for _ in range(rounds)]
    return x.shape[0] / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=None, help="default: each space's default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the markdown table into this file's section")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rows = []
    for name in ("xxs", "xs", "s"):
        space = load_space(name)
        resolution = args.resolution or space.default_resolution
        supernet = Supernet(space, num_classes=1000)
        rng = random.Random(args.seed)
        x = torch.randn(args.batch, 3, resolution, resolution)
        y = torch.randint(0, 1000, (args.batch,))
        for _ in range(args.archs):
            arch = dataclasses.replace(space.sample(rng), resolution=resolution)
            supernet.set_active(arch)
            static = supernet.get_active_subnet()
            train_ratio, eval_ratio = measure_pair(supernet, static, x, y, args.rounds)
            rows.append((name, str(arch), train_ratio, eval_ratio))
            print(f"{name} {arch}: train {train_ratio:.3f}  eval {eval_ratio:.3f}", flush=True)
    xxs = load_space("xxs")
    resolution = args.resolution or xxs.default_resolution
    largest = Supernet(xxs, 1000).get_active_subnet(dataclasses.replace(xxs.largest(), resolution=resolution))
    peer = timm.create_model("mobilevit_xxs", num_classes=1000)
    x = torch.randn(args.batch, 3, resolution, resolution)
    y = torch.randint(0, 1000, (args.batch,))
    ours, theirs = throughput(largest, x, y, args.rounds), throughput(peer, x, y, args.rounds)
    table = render(rows, ours, theirs, args, resolution)
    print(table)
    if args.out:
        replace_markdown_section(args.out, "## Supernet overhead (issue 2)", table)


def render(rows, ours: float, theirs: float, args, resolution: int) -> str:
    lines = [
        "## Supernet overhead (issue 2)",
        "",
        f"Command: `.venv/bin/python bench/supernet_overhead.py --archs {args.archs} --batch {args.batch} "
        f"--rounds {args.rounds} --out BENCHMARKS.md`",
        f"({platform.processor() or platform.machine()}, {args.threads} threads, batch {args.batch}, "
        f"{resolution} px, medians of {args.rounds} interleaved rounds after one warm-up.)",
        "",
        "Ratio = time of the active path inside the supernet / time of the extracted static subnet "
        "(target <= 1.10).",
        "",
        "| supernet | arch | train step ratio | eval ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | `{a}` | {t:.3f} | {e:.3f} |" for n, a, t, e in rows]
    for name in ("xxs", "xs", "s"):
        sel = [r for r in rows if r[0] == name]
        lines.append(f"| **{name} median** | | **{statistics.median(r[2] for r in sel):.3f}** | "
                     f"**{statistics.median(r[3] for r in sel):.3f}** |")
    lines += ["", f"Training throughput at batch {args.batch}, {resolution} px: largest XXS subnet "
              f"{ours:.1f} img/s, timm `mobilevit_xxs` {theirs:.1f} img/s (ratio {ours / theirs:.2f}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
