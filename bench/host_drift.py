"""How steady is this machine's speed when nothing else runs? (issue 4: the latency targets' noise floor)

Times three fixed XXS subnets (smallest, a random one, largest; 128 px; torch-cpu exactly as the
latency table uses it: 1 thread, thread-CPU clock, steady allocator) round-robin for --minutes, and
reports each model's median per window of --window seconds relative to its overall median. If the
three move together, the machine's speed drifts (host contention, frequency), not one model's timing;
no latency table built in one window can then predict another window within that drift.

    .venv/bin/python bench/host_drift.py --minutes 6 --out outputs/bench/host_drift.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from common import code_identity, write_json

from autovit_ray.latency import TorchCPUBackend
from autovit_ray.nn import Supernet
from autovit_ray.space import load_space


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--window", type=float, default=20.0, help="seconds per reported window")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/host_drift.json"))
    args = parser.parse_args(argv)

    space = load_space("xxs", input_profile="imagenet")
    archs = {"smallest": space.smallest(), "random": space.sample(random.Random(0)), "largest": space.largest()}
    backend, supernet = TorchCPUBackend(), Supernet(space, num_classes=1000)
    prepared = {}
    for name, arch in archs.items():
        arch = dataclasses.replace(arch, resolution=args.resolution)
        supernet.set_active(arch)
        prepared[name] = backend.prepare(supernet.get_active_subnet().eval(), (1, 3, arch.resolution, arch.resolution))

    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in prepared}  # (seconds, ms)
    start = time.monotonic()
    while (now := time.monotonic() - start) < args.minutes * 60:
        for name, model in prepared.items():
            samples[name].append((now, model.time(1)[0]))

    windows = int(args.minutes * 60 // args.window)
    relative = {}
    for name, points in samples.items():
        t, ms = np.array(points).T
        overall = float(np.median(ms))
        relative[name] = [float(np.median(ms[(t >= w * args.window) & (t < (w + 1) * args.window)]) / overall)
                          for w in range(windows)]
    rel = np.array(list(relative.values()))  # (models, windows)
    corr = np.corrcoef(rel)[np.triu_indices(len(rel), 1)]
    result = {
        "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_end": os.getloadavg()[0], "resolution": args.resolution, "window_s": args.window,
        "samples_per_model": {n: len(p) for n, p in samples.items()},
        "median_ms": {n: float(np.median([ms for _, ms in p])) for n, p in samples.items()},
        "window_median_over_overall": relative,
        "spread_max_over_min": {n: max(v) / min(v) for n, v in relative.items()},
        "window_correlation_between_models": [float(c) for c in corr],
    }
    write_json(args.out, {**result, "code": code_identity()}, indent=2)
    for name, values in relative.items():
        print(f"{name:9s} median {result['median_ms'][name]:7.2f} ms; per-window / overall: "
              + " ".join(f"{v:.3f}" for v in values))
    print(f"max/min window ratio: {', '.join(f'{n} {v:.3f}' for n, v in result['spread_max_over_min'].items())}; "
          f"correlation of window medians between models: {', '.join(f'{c:.2f}' for c in corr)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
