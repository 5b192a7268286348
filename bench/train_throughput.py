"""Training throughput on this machine (issue 12): the data path, where a step's time goes, the cost of
exact freezing, bf16, and the resulting CIFAR-10 epoch time of the XXS supernet and its peer.

    .venv/bin/python bench/train_throughput.py [--subnets 30] [--batch 128] [--threads 2] [--out BENCHMARKS.md]
    .venv/bin/python bench/train_throughput.py --report-only    # section + chart again from the JSON

One interleaved run on CIFAR-10 (32 px, the `cifar10` input profile, the DeiT recipe's augmentation), the same
`--subnets` archs drawn uniformly from the XXS space for every variant. Per round, in a shuffled order:

- data: one training batch from the timm path (PIL RandAugment + random erasing per image, DataLoader
  with `num_workers: 0`) and one from the batched path (in-memory uint8 tensors, per-sample RandAugment
  on whole batches, `data.augment: batched`); Mixup / CutMix are the same batch op in both, left out;
- one training step, timed in parts (forward, backward, optimiser) for: the subnet inside the supernet
  (exact freezing: tracker + MaskedAdamW), the same subnet extracted as a static module (AdamW), the
  supernet under bf16 autocast, and timm's `mobilevit_xxs` with stem stride 1 (the benchmark's peer).

Medians per variant; per-arch ratios supernet / static. The epoch estimate is 45,000 images / batch x
(mean step over the sampled archs + the batched data path's batch): uniform sampling trains each arch
about equally often. Writes its section of BENCHMARKS.md, bench/results/train_throughput.json and a
stacked bar chart bench/results/train_throughput.png. Pause other work on the machine while it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from common import ROOT, cifar10_dir, code_identity, write_json
from torch import nn

from autovit_ray.data import DataConfig, build_loader
from autovit_ray.io import replace_markdown_section
from autovit_ray.nn import Supernet
from autovit_ray.space import load_space
from autovit_ray.training.optim import ActiveWeightTracker, MaskedAdamW

HEADING = "## Training throughput (issue 12)"
EPOCH_IMAGES = 45_000
PARTS = ("data", "forward", "backward", "optimizer")
VARIANTS = ("supernet fp32", "static fp32", "supernet bf16", "peer fp32")


def clock() -> float:
    return time.perf_counter()


class Variant:
    """One way to train: a model (set to the round's arch when it is a supernet), its optimiser, autocast."""

    def __init__(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, dtype: torch.dtype | None,
                 tracker: ActiveWeightTracker | None = None) -> None:
        self.name, self.model, self.optimizer, self.dtype, self.tracker = name, model, optimizer, dtype, tracker

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Forward, backward and optimiser step, each timed (CPU: the ops are synchronous)."""
        if self.tracker is not None:
            self.tracker.reset()
        t0 = clock()
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype is not None):
            loss = nn.functional.cross_entropy(self.model(x).float(), y)
        t1 = clock()
        loss.backward()
        t2 = clock()
        if isinstance(self.optimizer, MaskedAdamW):
            self.optimizer.set_regions(self.tracker.regions)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t3 = clock()
        return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def batch_timer(loader: Any) -> Callable[[], tuple[float, tuple[torch.Tensor, torch.Tensor]]]:
    """A function returning (seconds, batch) for the next batch of `loader`, cycling through epochs."""
    state = {"epoch": 0, "it": iter(())}

    def next_batch() -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
        start = clock()
        try:
            batch = next(state["it"])
        except StopIteration:
            state["epoch"] += 1
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(state["epoch"])
            elif hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(state["epoch"])
            state["it"] = iter(loader)
            start = clock()
            batch = next(state["it"])
        return clock() - start, batch

    return next_batch


def peer_model() -> nn.Module:
    model = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=10)
    model.stem.conv.stride = (1, 1)  # the small-input adaptation of the cifar10 input profile
    return model


def run(subnets: int, batch: int, threads: int, data_dir: str, seed: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    space = load_space("xxs", input_profile="cifar10")
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(subnets)]
    data = DataConfig(dataset="cifar10", data_dir=data_dir, batch_size=batch, seed=seed)
    loaders = {"timm": build_loader(dataclasses.replace(data, augment="timm"), "train"),
               "batched": build_loader(dataclasses.replace(data, augment="batched"), "train")}
    fetch = {name: batch_timer(loader) for name, loader in loaders.items()}
    supernet = Supernet(space, 10)
    bf16_net = Supernet(space, 10)
    bf16_net.load_state_dict(supernet.state_dict())
    peer = peer_model()
    persistent = [
        Variant("supernet fp32", supernet, MaskedAdamW(supernet.parameters()), None, ActiveWeightTracker(supernet)),
        Variant("supernet bf16", bf16_net, MaskedAdamW(bf16_net.parameters()), torch.bfloat16,
                ActiveWeightTracker(bf16_net)),
        Variant("peer fp32", peer, torch.optim.AdamW(peer.parameters(), foreach=True), None),
    ]
    _, (x, y) = fetch["batched"]()
    for net in (supernet, bf16_net):  # every optimiser state allocated before timing (the largest reads all)
        net.set_active(space.largest())
    for v in persistent:
        v.step(x, y)
    samples: dict[str, list[dict[str, float]]] = {}
    for round_index, arch in enumerate([archs[0], *archs]):  # round 0 warms every variant up
        supernet.set_active(arch)
        bf16_net.set_active(arch)
        static = supernet.get_active_subnet()
        variants = [*persistent, Variant("static fp32", static, torch.optim.AdamW(static.parameters(), foreach=True),
                                         None)]
        variants[-1].step(x, y)  # allocates the static optimiser's state (the supernet's already has it)
        jobs: list[tuple[str, Callable[[], dict[str, float]]]] = [
            (f"data {name}", lambda f=f: {"data": f()[0]}) for name, f in fetch.items()]
        _, (x, y) = fetch["batched"]()
        jobs += [(v.name, lambda v=v, x=x, y=y: v.step(x, y)) for v in variants]
        rng.shuffle(jobs)
        for name, job in jobs:
            result = job()
            if round_index:
                samples.setdefault(name, []).append({**result, "arch": str(arch)})
        print(f"round {round_index}/{subnets}: " + ", ".join(
            f"{k} {1e3 * sum(v for p, v in s[-1].items() if p != 'arch'):.0f} ms" for k, s in samples.items()),
            flush=True)
    return summarise(samples, batch, threads)


def summarise(samples: dict[str, list[dict[str, float]]], batch: int, threads: int) -> dict[str, Any]:
    def med(name: str, part: str) -> float:
        return statistics.median(s.get(part, 0.0) for s in samples[name])

    def step(s: dict[str, float]) -> float:
        return sum(s.get(p, 0.0) for p in PARTS[1:])

    steps = [n for n in samples if not n.startswith("data")]
    parts = {n: {p: med(n, p) for p in PARTS[1:]} for n in steps}
    data = {n[len("data "):]: med(n, "data") for n in samples if n.startswith("data")}
    ratio = [step(a) / step(b) for a, b in zip(samples["supernet fp32"], samples["static fp32"])]
    bf16 = [step(a) / step(b) for a, b in zip(samples["supernet fp32"], samples["supernet bf16"])]
    mean_step = {n: statistics.fmean(step(s) for s in samples[n]) for n in steps}
    epoch = {n: EPOCH_IMAGES / batch * (mean_step[n] + data["batched"]) for n in ("supernet fp32", "peer fp32",
                                                                                 "supernet bf16")}
    return {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads,
                    "torch": torch.__version__, "batch": batch, "subnets": len(samples["supernet fp32"])},
        "data_batch_s": data, "step_parts_s": parts, "mean_step_s": mean_step,
        "supernet_over_static": {"median": statistics.median(ratio), "max": max(ratio)},
        "bf16_speedup": {"median": statistics.median(bf16), "min": min(bf16)},
        "data_share": {name: t / (t + mean_step["supernet fp32"]) for name, t in data.items()},
        "epoch_minutes": {n: t / 60 for n, t in epoch.items()},
        "epoch_images_per_s": {n: EPOCH_IMAGES / t for n, t in epoch.items()},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    names = [n for n in VARIANTS if n in result["step_parts_s"]]
    bottom = [result["data_batch_s"]["batched"] * 1e3] * len(names)
    ax.bar(names, bottom, label="data (batched path)")
    for part in PARTS[1:]:
        values = [result["step_parts_s"][n][part] * 1e3 for n in names]
        ax.bar(names, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.axhline(result["data_batch_s"]["timm"] * 1e3, color="k", linestyle=":", label="one timm-path batch")
    ax.set_ylabel(f"ms per batch of {result['machine']['batch']} (median)")
    ax.set_ylim(0, max(bottom) * 1.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def section(result: dict[str, Any], command: str) -> str:
    m, d, p = result["machine"], result["data_batch_s"], result["step_parts_s"]
    rows = "\n".join(f"| {n} | " + " | ".join(f"{p[n][k] * 1e3:.0f}" for k in PARTS[1:])
                     + f" | {sum(p[n].values()) * 1e3:.0f} |" for n in VARIANTS if n in p)
    so, bf, share, ep = (result["supernet_over_static"], result["bf16_speedup"], result["data_share"],
                         result["epoch_minutes"])
    ips = result["epoch_images_per_s"]
    return f"""{HEADING}

Command: `{command}` ({m['cpu']}, {m['threads']} threads, torch {m['torch']}, batch {m['batch']}, 32 px,
{m['subnets']} XXS subnets drawn uniformly, every variant interleaved in one run). Chart:
[bench/results/train_throughput.png](bench/results/train_throughput.png); numbers:
bench/results/train_throughput.json.

Data path, one training batch: timm (PIL per image) {d['timm'] * 1e3:.0f} ms, batched (in-memory tensors)
{d['batched'] * 1e3:.1f} ms; share of a supernet step: {100 * share['timm']:.1f} % vs {100 * share['batched']:.1f} %
(target <= 5 %).

Median step time by part (ms):

| variant | forward | backward | optimizer | step |
|---|---|---|---|---|
{rows}

- Supernet step / static subnet step (exact freezing, same arch): median {so['median']:.3f}x, worst
  {so['max']:.3f}x (target <= 1.05x).
- bf16 autocast over fp32, supernet: median {bf.get('median', 0):.2f}x faster (slowest arch {bf.get('min', 0):.2f}x).
- A CIFAR-10 epoch (45,000 images) with the batched data path: XXS supernet fp32 {ep['supernet fp32']:.2f} min
  ({ips['supernet fp32']:.0f} img/s; target <= 2 min, >= 375 img/s), bf16 {ep['supernet bf16']:.2f} min, the peer
  {ep['peer fp32']:.2f} min ({ips['peer fp32']:.0f} img/s).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subnets", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=cifar10_dir())
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the section and the chart from bench/results/train_throughput.json")
    args = parser.parse_args(argv)
    results = ROOT / "bench" / "results"
    if args.report_only:
        result = json.loads((results / "train_throughput.json").read_text())
    else:
        result = {**run(args.subnets, args.batch, args.threads, args.data_dir, args.seed), "code": code_identity()}
        write_json(results / "train_throughput.json", result)
    plot(result, results / "train_throughput.png")
    subnets = result["machine"]["subnets"]
    command = "python bench/train_throughput.py" + (f" --subnets {subnets}" if subnets != 30 else "")
    replace_markdown_section(args.out, HEADING, section(result, command))
    print(section(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
