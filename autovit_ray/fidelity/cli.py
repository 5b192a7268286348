"""`python -m autovit_ray.fidelity`: the command line of the rank-fidelity check (autovit_ray/fidelity/,
whose module doc says what it measures). A thin shim: nothing imports it but `__main__.py`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import fidelity
from ..cli_exits import cli_main
from ..experiment import Experiment
from . import FidelityConfig, run
from .scan import ScanConfig, run_scan


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in table ms, got {text!r}") from None
    return low, high


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autovit_ray.fidelity", description=fidelity.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", required=True,
                   help="a supernet checkpoint, or an experiment folder with --supernet (repeatable: one truth "
                        "scores several supernets of the same space)")
    p.add_argument("--supernet", default=None, help="xxs, xs or s, for experiment folders")
    p.add_argument("--truth", default=None,
                   help="folder of the stand-alone runs and the report (default: <experiment>/fidelity, which "
                        "the report page reads)")
    p.add_argument("--scan", type=int, default=None, metavar="N",
                   help="the cheap check instead of a truth: the largest, the smallest and N random subnets with "
                        "their inherited validation top-1 against --lut latency (<truth>/scan.json); trains nothing")
    p.add_argument("--subnets", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=15, help="stand-alone epochs (default 15)")
    p.add_argument("--lut", default=None, help="latency table: the draw spreads over its latency")
    p.add_argument("--band-ms", type=_pair, default=None, help="LOW,HIGH: the latency band (table ms)")
    p.add_argument("--in-band", type=int, default=0, help="subnets drawn inside --band-ms")
    p.add_argument("--repeat", type=int, default=0, help="the first N subnets trained again with seed + 1")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override the stand-alone recipe (the experiment's training config)")
    p.add_argument("--calib-batches", type=int, default=None,
                   help="BatchNorm recalibration batches of the inherited scores (default: all)")
    p.add_argument("--calib-size", type=int, default=None,
                   help="BatchNorm recalibration images, drawn from the training split (default: the "
                        "checkpoint's data.calib_size)")
    p.add_argument("--calib-draws", type=int, default=1, metavar="K",
                   help="score each supernet on K calibration subsets of the same size (default 1, the search's): "
                        "how far its inherited scores move with the subset, a cap on its tau")
    p.add_argument("--parallel", type=int, default=None,
                   help="stand-alone runs trained at once (default: as many as the cluster holds, each worker "
                        "with its ray.cpus_per_worker, else its ray.torch_threads, else one CPU)")
    p.add_argument("--pool", type=int, default=10_000)
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument("--address", default=None)
    p.add_argument("--mlflow-uri", default=None)
    return p


@cli_main(kept="finished stand-alone runs and epochs are kept in the truth folder; rerun the same command "
              "to resume")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scan is not None:  # a scan trains nothing: the truth's settings would be silently ignored
        truth_only = ("subnets", "epochs", "band_ms", "in_band", "repeat", "set", "calib_draws", "parallel", "pool",
                      "resamples", "address", "mlflow_uri")
        given = [f"--{name.replace('_', '-')}" for name in truth_only
                 if getattr(args, name) != parser.get_default(name)]
        if given:
            raise ValueError(f"--scan trains nothing, so {', '.join(given)} (settings of the truth) do not apply: "
                             "drop them, or drop --scan to train the truth")
    from ..checkpoint import resolve_checkpoint  # after parsing: --help imports no torch

    checkpoints = tuple(str(resolve_checkpoint(c, args.supernet)) for c in args.checkpoint)
    # <experiment>/checkpoints/<supernet>/epoch_N: the first supernet's experiment holds the default truth
    truth = args.truth or str(Experiment.of_checkpoint(checkpoints[0]).fidelity_dir)
    if args.scan is not None:
        run_scan(ScanConfig(checkpoints=checkpoints, out=truth, subnets=args.scan, seed=args.seed, lut=args.lut,
                            calib_batches=args.calib_batches, calib_size=args.calib_size))
        return 0
    run(FidelityConfig(checkpoints=checkpoints, truth=truth, subnets=args.subnets, seed=args.seed,
                       epochs=args.epochs, lut=args.lut, band_ms=args.band_ms, in_band=args.in_band,
                       repeat=args.repeat, overrides=tuple(args.set), calib_batches=args.calib_batches,
                       calib_size=args.calib_size, calib_draws=args.calib_draws, parallel=args.parallel,
                       pool=args.pool, resamples=args.resamples, address=args.address, mlflow_uri=args.mlflow_uri))
    return 0


