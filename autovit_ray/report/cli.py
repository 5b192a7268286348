"""`python -m autovit_ray.report`: one self-contained HTML page per experiment.

    python -m autovit_ray.report --experiment outputs/digits-demo    # writes outputs/digits-demo/report.html

The page (`<experiment>/report.html`) gathers what the stages left in the experiment directory:

1. Stage timings: `pipeline_summary.json` (each stage's status, wall time and budget).
2. Training curves: validation top-1 per epoch of the smallest, largest and random subnets of each
   supernet, from the training runs in MLflow (`mlflow.db`); a trained reference model's
   `references/<name>/history.json` (compare --train-references) is drawn beside them when present.
3. Latency tables: per `luts/<supernet>.parquet`, predicted vs measured latency of its reference
   archs, with the y = x line and the MAPE.
4. Searches: per `search/<name>/results.json`, validation top-1 vs LUT latency of every candidate,
   the Pareto front, the best models, the latency budget, and the comparison's reference model.
5. Comparison: the table of `compare/compare.json` and its plot `compare/compare.png`.

Every image is embedded as a base64 PNG and the CSS is inline: the file can be mailed or archived
alone and opens offline. A part that is missing or unreadable becomes one "missing: ..." line (also
passed to `log`) and the rest of the page is still written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autovit_ray.cli_exits import cli_main
from autovit_ray.report import write_report

# ---------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autovit_ray.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="the experiment directory (<output_dir>/<name>)")
    return p


@cli_main()
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = write_report(Path(args.experiment), log=lambda line: print(line, file=sys.stderr))
    print(path)
    return 0


__all__ = ["build_parser", "main"]
