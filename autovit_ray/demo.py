"""`make demo`: the main job on the embedded default (scikit-learn's handwritten digits).

Today it describes the three search spaces, builds the XXS supernet for the digits input profile,
extracts the smallest, the largest and a random subnet, checks each against the supernet's
active path, and exports one of them to TorchScript, ONNX and CoreML. Training, latency tables
and the search join this job as they land (see README).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from .export import check_onnx, example_input, export_model
from .io import atomic_write_text
from .nn import Supernet
from .space import BUILTIN_SPACES, count_macs, count_params, load_space

PAPER_PARAMS = {"xxs": "1.0-1.8 M", "xs": "1.6-2.6 M", "s": "4.0-7.2 M"}


def describe_spaces() -> None:
    print("== search spaces (ImageNet-style profile, 1000 classes) ==")
    print(f"{'space':5} {'constrained':>12} {'unconstrained':>14} {'params (ours)':>16} {'paper':>10}")
    for name in BUILTIN_SPACES:
        info = load_space(name).describe(1000)
        params = f"{info['params_min'] / 1e6:.2f}-{info['params_max'] / 1e6:.2f} M"
        print(f"{name:5} {info['size_constrained']:12.2e} {info['size_unconstrained']:14.2e} "
              f"{params:>16} {PAPER_PARAMS[name]:>10}")


def extract_and_check(out_dir: Path, seed: int) -> dict[str, object]:
    space = load_space("xxs", profile="digits")
    torch.manual_seed(seed)
    supernet = Supernet(space, num_classes=10).eval()
    print(f"\n== XXS supernet, digits profile (fingerprint {space.fingerprint()}) ==")
    archs = [space.smallest(), space.largest(), space.sample(random.Random(seed))]
    for arch in archs:
        subnet = supernet.get_active_subnet(arch).eval()
        x = example_input(arch.resolution, batch=4, seed=seed)
        with torch.no_grad():
            diff = (supernet(x) - subnet(x)).abs().max().item()
        print(f"{arch}  params {count_params(arch, 10, space) / 1e3:.0f} k  "
              f"MACs {count_macs(arch, 10, space) / 1e6:.1f} M  |supernet - static| = {diff:.1e}")
        if diff > 1e-5:
            raise RuntimeError(f"static subnet {arch} differs from the supernet by {diff}")
    chosen = archs[-1]
    subnet = supernet.get_active_subnet(chosen).eval()
    print(f"\n== export {chosen.arch_hash} ==")
    paths = export_model(subnet, chosen.resolution, out_dir / "exports", str(chosen))
    error = check_onnx(paths["onnx"], subnet, example_input(chosen.resolution))
    atomic_write_text(out_dir / "exports" / f"{chosen}.arch.json", chosen.to_json())
    for fmt, path in paths.items():
        print(f"  {fmt:12} {path}")
    print(f"  onnxruntime vs torch: max relative error {error:.1e}")
    return {"arch": chosen.to_dict(), "exports": {k: str(v) for k, v in paths.items()}, "onnx_rel_error": error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autovit_ray.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="experiment directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    start = time.perf_counter()
    describe_spaces()
    summary = extract_and_check(out_dir, args.seed)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out_dir / "demo-summary.json", json.dumps(summary, indent=2))
    print(f"\ndone in {summary['seconds']} s; summary in {out_dir / 'demo-summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
