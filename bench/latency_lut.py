"""Benchmark for issue 4: does the latency lookup table predict measured latency on this CPU?

For each supernet: build the torch-cpu LUT one resolution at a time (build time per resolution),
merge, validate on fresh random subnets at the ImageNet input profile's resolutions (each measured twice
for the test-retest noise), time the predictor, and write a Markdown table for BENCHMARKS.md.

    .venv/bin/python bench/latency_lut.py --out outputs/bench/latency --supernets xxs,xs,s --samples 100

Resumable: every finished part (a resolution's table, a validation report) is a file under
--out and is skipped on the next run; delete it to redo that part. Runs one timing job at a
time; the machine's load average is recorded next to every part (other jobs share the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from common import write_json

from autovit_ray.latency import (
    BuildConfig,
    LatencyTable,
    TorchCPUBackend,
    build_table,
    merge_tables,
    validate_table,
    write_report,
)
from autovit_ray.latency._files import atomic_path
from autovit_ray.space import load_space

TARGETS = {"within_10": 99.0, "within_5": 90.0, "kendall_tau": 0.95, "mape_over_retest": 1.5}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", flush=True)


def build_part(space: Any, resolution: int, out: Path, config: BuildConfig) -> LatencyTable:
    path = out / f"lut_r{resolution}.parquet"
    if path.is_file():
        log(f"{space.name} r{resolution}: table exists, skipping build")
        return LatencyTable.load(path, space=space, backend="torch-cpu")
    load_before = os.getloadavg()[0]
    table = build_table(space, TorchCPUBackend(), [resolution], config=config, log=log)
    table.metadata["load_average"] = {"start": load_before, "end": os.getloadavg()[0]}
    table.save(path)
    return table


def predictor_speed(table: LatencyTable, calls: int = 100_000) -> float:
    rng = random.Random(0)
    archs = []
    for _ in range(2000):
        arch = table.space.sample(rng)
        if arch.resolution in table.resolutions:
            archs.append(arch)
    start = time.perf_counter()
    for i in range(calls):
        table.predict_latency(archs[i % len(archs)])
    return calls / (time.perf_counter() - start)


def level_diagnostic(rows: list[dict[str, Any]], method: str) -> dict[str, float]:
    """Overall predicted/measured ratio and the MAPE left without it (see ValidationReport.level)."""
    import numpy as np

    p = np.array([r[f"predicted_{method}_ms"] for r in rows])
    m = np.array([r["measured_ms"] for r in rows])
    b = np.array([r["retest_ms"] for r in rows])
    ratio, retest_ratio = float(np.median(p / m)), float(np.median(b / m))
    return {"ratio": ratio, "mape_after": float(np.mean(np.abs(p / ratio - m) / m) * 100),
            "retest_ratio": retest_ratio, "retest_mape_after": float(np.mean(np.abs(b / retest_ratio - m) / m) * 100)}


def run_supernet(name: str, args: argparse.Namespace) -> dict[str, Any]:
    space = load_space(name)
    out = Path(args.out) / name
    resolutions = [int(r) for r in args.resolutions.split(",")] if args.resolutions else list(space.resolutions)
    config = BuildConfig(rounds=args.rounds, repeats=1, references=args.references, seed=args.seed)
    parts = [build_part(space, r, out, config) for r in resolutions]
    table = merge_tables(parts)
    table.save(out / "lut.parquet")
    report_path = out / "validation.json"
    if report_path.is_file():
        log(f"{name}: validation exists, skipping")
        report = json.loads(report_path.read_text())
    else:
        load_before = os.getloadavg()[0]
        validation = validate_table(table, TorchCPUBackend(), samples=args.samples, seed=args.seed,
                                    rounds=args.val_rounds, repeats=1, log=log)
        write_report(validation, out)
        report = json.loads(report_path.read_text())
        report["load_average"] = {"start": load_before, "end": os.getloadavg()[0]}
        write_json(report_path, report, indent=2)
        log(validation.summary())
    result = {
        "supernet": name, "resolutions": resolutions, "method": table.method,
        "build_seconds": {r: parts[i].metadata["build_seconds"][str(r)] for i, r in enumerate(resolutions)},
        "build_load": {r: parts[i].metadata.get("load_average") for i, r in enumerate(resolutions)},
        "cv_mape": table.metadata["cv_mape"], "predictor": report["predictor"], "retest": report["retest"],
        "other_methods": report["other_methods"], "tau_macs": report["tau_macs"], "tau_params": report["tau_params"],
        "mape_over_retest": report["mape_over_retest"], "per_resolution": report["per_resolution"],
        "samples": report["samples"], "validation_seconds": report["seconds"],
        "validation_load": report.get("load_average"), "predict_calls_per_s": predictor_speed(table),
        "modules_per_resolution": len(table.values[table.method]) // len(resolutions) - 1,
        "level": level_diagnostic(report["rows"], table.method),
        "build_quiet": table.metadata.get("quiet"), "validation_quiet": report.get("quiet"),
        "device": table.device.get("cpu_model"), "settings": table.backend_settings}
    write_json(out / "result.json", result, indent=2)
    return result


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Command: `{command}`", "",
        "| supernet | method | MAPE % | within ±5% | within ±10% | Kendall τ | retest MAPE % | retest τ | "
        "MAPE / retest | τ MACs | τ params | other method (MAPE %, τ) | level pred/meas (retest) | MAPE without level "
        "(retest) | build s per res (of which quiet-gate wait) | predict calls/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p, t = r["predictor"], r["retest"]
        other = "; ".join(f"{k}: {v['mape']:.2f}, {v['kendall_tau']:.3f}" for k, v in r["other_methods"].items())
        quiet = r.get("build_quiet") or {}
        build = ", ".join(f"{res}: {s:.0f} ({(quiet.get(str(res)) or {}).get('waited_s', 0):.0f})"
                          for res, s in r["build_seconds"].items())
        lv = r["level"]
        lines.append(
            f"| {r['supernet']} (n={r['samples']}) | {r['method']} | {p['mape']:.2f} | {p['within_5']:.0f}% | "
            f"{p['within_10']:.0f}% | {p['kendall_tau']:.3f} | {t['mape']:.2f} | {t['kendall_tau']:.3f} | "
            f"{r['mape_over_retest']:.2f} | {r['tau_macs']:.3f} | {r['tau_params']:.3f} | {other} | "
            f"×{lv['ratio']:.3f} (×{lv['retest_ratio']:.3f}) | {lv['mape_after']:.2f} ({lv['retest_mape_after']:.2f}) | "
            f"{build} | "
            f"{r['predict_calls_per_s']:,.0f} |")
    lines += ["", f"Targets: within ±10% ≥ {TARGETS['within_10']:.0f}%, within ±5% ≥ {TARGETS['within_5']:.0f}%, "
              f"τ ≥ {TARGETS['kendall_tau']}, MAPE ≤ {TARGETS['mape_over_retest']} × retest MAPE, "
              "τ ≥ retest τ − 0.03, build ≤ 600 s per supernet and resolution."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/bench/latency")
    parser.add_argument("--supernets", default="xxs,xs,s")
    parser.add_argument("--resolutions", default=None, help="default: the imagenet input profile's (128,192,256)")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--references", type=int, default=BuildConfig.references)
    parser.add_argument("--rounds", type=int, default=BuildConfig.rounds)
    parser.add_argument("--val-rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    command = ".venv/bin/python bench/latency_lut.py " + " ".join(sys.argv[1:])
    results = []
    for name in args.supernets.split(","):
        log(f"=== {name} ===")
        results.append(run_supernet(name, args))
        table = markdown(results, command)
        with atomic_path(Path(args.out) / "summary.md") as tmp:
            tmp.write_text(table + "\n")
        write_json(Path(args.out) / "summary.json", results, indent=2)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
