"""`python -m autovit_ray.compare`: searched models against reference models, measured alike.

    python -m autovit_ray.compare --experiment outputs/digits-demo --references mobilevit_xxs \\
        --backend torch-cpu --repeats 200

Reads the searches of an experiment from MLflow (`MlflowClient`: each finished search's parent run,
its `best_archs.json` and exported weights), builds the best models from their arch JSON and
weights through timm, builds the reference models by timm name (`pretrained=False`, the
experiment's class count, the same input resolution and small-input stem adaptation as the search
space's input profile) and measures all of them on ONE latency backend with interleaved repeats. Prints
and writes a table (test top-1, params, MACs, measured latency, ratio to the first reference) as
CSV and JSON, a scatter plot of test top-1 vs measured latency, and logs them to a new MLflow run
"compare" in the searches' experiment. A reference gets a test top-1 only from a checkpoint given
with `--reference-checkpoint name=path`, or trained here with `--train-references` (the supernets'
recipe, data and steps: `autovit_ray.training.reference`); otherwise its top-1 reads "not trained
here". With a trained reference, one sentence says whether searched models beat it (higher test
top-1 at equal or lower measured latency), printed and written to compare.json ("summary").
`--standalone CHECKPOINT` adds a searched arch trained alone from scratch (`train --arch`).
"""

from __future__ import annotations

import argparse

from autovit_ray.cli_exits import cli_main
from autovit_ray.compare import (
    DEFAULT_REFERENCES,
    CompareConfig,
    compare_experiment,
    parse_reference_checkpoints,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autovit_ray.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True,
                   help="an experiment directory (its mlflow.db), or an MLflow experiment name with --mlflow-uri")
    p.add_argument("--mlflow-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite in the experiment dir")
    p.add_argument("--searches", default=None, help="comma-separated search names (default: every finished search)")
    p.add_argument("--models", default="",
                   help="comma-separated registered models to add: models:/<name>@<alias> or models:/<name>/<version>")
    p.add_argument("--references", default=",".join(DEFAULT_REFERENCES),
                   help="comma-separated timm model names (empty: none)")
    p.add_argument("--reference-checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="trained weights of a reference (a state dict, or a dict with 'model'): gives it a test top-1")
    p.add_argument("--standalone", action="append", default=[], metavar="CHECKPOINT",
                   help="a checkpoint of `python -m autovit_ray.train --arch` (one subnet trained stand-alone "
                        "from scratch): measured and tested beside the searched models (repeatable)")
    p.add_argument("--train-references", action="store_true",
                   help="train each reference without a checkpoint with the supernets' recipe first "
                        "(<experiment>/references/<name>, resumable), so it gets a test top-1")
    p.add_argument("--backend", default="torch-cpu", help="latency backend (autovit_ray.latency.BACKENDS)")
    p.add_argument("--repeats", type=int, default=100, help="timed samples per model")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds the samples are split into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="override the data directory (reference test top-1)")
    p.add_argument("--eval-batches", type=int, default=None, help="test batches for a reference checkpoint")
    p.add_argument("--out", default=None, help="output directory (default: <experiment dir>/compare)")
    return p


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    checkpoints = parse_reference_checkpoints(args.reference_checkpoint)
    return CompareConfig(
        experiment=args.experiment, mlflow_uri=args.mlflow_uri, references=tuple(args.references.split(",")),
        reference_checkpoints=tuple(checkpoints.items()), backend=args.backend, repeats=args.repeats,
        rounds=args.rounds, seed=args.seed, out=args.out,
        searches=tuple(s for s in args.searches.split(",") if s) if args.searches else None,
        data_dir=args.data_dir, eval_batches=args.eval_batches,
        models=tuple(m for m in args.models.split(",") if m), train_references=args.train_references,
        standalone=tuple(args.standalone))


@cli_main()
def main(argv: list[str] | None = None) -> int:
    compare_experiment(config_from_args(build_parser().parse_args(argv)))
    return 0


__all__ = ["build_parser", "config_from_args", "main"]
