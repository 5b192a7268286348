"""The cheap check before a truth: do a supernet's subnets inherit accuracies that spread at all?

    python -m autovit_ray.fidelity --scan 50 --checkpoint outputs/cifar10 --supernet xxs --lut luts/xxs.parquet

For each supernet checkpoint: the largest subnet, the smallest and `subnets` random ones (seeded), each
scored on the whole validation split with the weights it inherits (BatchNorm recalibrated, as a search
scores it), against its latency-table milliseconds (its parameters without a table). The largest minus
the smallest comes with a paired bootstrap interval and McNemar's p over the same validation images:
the two share every image, so their difference is far less noisy than either accuracy alone. A supernet
whose largest and smallest inherit nearly the same accuracy cannot rank much else; minutes here can
save the truth's hours. Written to `<truth>/scan.json` (the report page draws it) and printed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write_text

SCAN_FILE = "scan.json"


@dataclass(frozen=True)
class ScanConfig:
    checkpoints: tuple[str, ...]  # supernet checkpoint folders
    out: str  # where scan.json goes (the truth folder: the experiment's report page reads <experiment>/fidelity)
    subnets: int = 50  # random subnets, besides the largest and the smallest
    seed: int = 0
    lut: str | None = None  # latency table: each subnet's table milliseconds
    calib_batches: int | None = None  # BN recalibration batches (None: all)
    calib_size: int | None = None  # BN recalibration images (None: the checkpoint's data.calib_size)

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ValueError("--scan needs at least one supernet --checkpoint")
        if self.subnets < 2:
            raise ValueError(f"--scan {self.subnets}: expected at least 2 random subnets (a span needs two)")
        for name in ("calib_batches", "calib_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive number, or none for the "
                                 "default")


def scan_supernet(checkpoint: Path, subnets: int, seed: int, lut: str | None, calib_batches: int | None,
                  calib_size: int | None = None) -> dict[str, Any]:
    """One supernet's scan (module doc): its rows (`role`: largest, smallest, random-<i>), the largest minus
    the smallest with its paired interval (`span_paired`), and the random subnets' span."""
    import dataclasses

    from ..checkpoint import load_supernet, read_meta
    from ..data import build_loader
    from ..evaluation import calibrated_subnet, evaluate
    from ..search.evaluate import EvalSettings, SubnetEvaluator
    from ..stats import paired_difference

    supernet, space, config = load_supernet(checkpoint)
    data = dataclasses.replace(config.data, calib_size=calib_size) if calib_size else config.data
    table = None
    if lut:
        from ..latency import LatencyTable

        table = LatencyTable.load(lut, space=space)  # refuses a table of another space
    evaluator = SubnetEvaluator(supernet, space, data, EvalSettings(calib_batches=calib_batches))
    rng = random.Random(seed)
    archs = [("largest", space.largest()), ("smallest", space.smallest()),
             *((f"random-{i}", space.sample(rng)) for i in range(subnets))]
    start = time.time()
    rows = []
    for role, arch in archs:
        result = evaluator.evaluate(arch)
        rows.append({"role": role, "arch": arch.to_dict(), "name": str(arch), "val_top1": result["val_top1"],
                     "lut_ms": table.predict_latency(arch) if table is not None else None,
                     "params": result["params"], "macs": result["macs"]})
    hits = []  # the same two subnets, calibrated the same way, scored image by image
    for _, arch in archs[:2]:
        calib = build_loader(data, "calib", resolution=arch.resolution)
        subnet = calibrated_subnet(supernet, arch, calib, num_batches=calib_batches)
        score = evaluate(subnet, build_loader(data, "val", resolution=arch.resolution), resolution=arch.resolution,
                         per_image=True)
        hits.append(score.correct_per_image)
    random_top1 = [row["val_top1"] for row in rows[2:]]
    return {"checkpoint": str(checkpoint), "epochs_done": int(read_meta(checkpoint)["epoch"]),
            "sampler": config.train.sampler, "subnets": rows,
            "largest_minus_smallest": rows[0]["val_top1"] - rows[1]["val_top1"],
            "random_span": max(random_top1) - min(random_top1),
            "span_paired": paired_difference(hits[0], hits[1]),  # largest vs smallest
            "calib_batches": calib_batches, "calib_size": data.calib_size, "seconds": time.time() - start}


def run_scan(cfg: ScanConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Scan every supernet; write `<out>/scan.json` ({"supernets": {checkpoint: scan}, settings}) and return it."""
    report: dict[str, Any] = {"subnets": cfg.subnets, "seed": cfg.seed, "lut": cfg.lut,
                              "calib_batches": cfg.calib_batches, "calib_size": cfg.calib_size, "supernets": {}}
    for checkpoint in cfg.checkpoints:
        log(f"{checkpoint}: the largest, the smallest and {cfg.subnets} random subnets, inherited weights, the whole "
            "validation split")
        found = scan_supernet(Path(checkpoint), cfg.subnets, cfg.seed, cfg.lut, cfg.calib_batches, cfg.calib_size)
        report["supernets"][checkpoint] = found
        paired = found["span_paired"]
        log(f"{checkpoint}: largest minus smallest {found['largest_minus_smallest']:+.2f} points "
            f"[{paired['low']:+.2f}, {paired['high']:+.2f}] (paired, {paired['images']:,} images; McNemar p "
            f"{paired['mcnemar_p']:.3g}); the {cfg.subnets} random subnets span {found['random_span']:.2f} points")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SCAN_FILE, json.dumps(report, indent=1) + "\n")
    return report


__all__ = ["SCAN_FILE", "ScanConfig", "run_scan", "scan_supernet"]
