"""`python -m autovit_ray.pipeline`: the whole AutoViT pipeline from one config.

    python -m autovit_ray.pipeline --config demo                     # configs/pipeline/demo.yaml
    python -m autovit_ray.pipeline --config my.yaml --stages search,compare
    python -m autovit_ray.pipeline --config demo --force search --set search.strategy=evolution

Stages, in order: train (the supernets concurrently on Ray Train) -> profile (a latency table per
supernet) -> search (the AutoViT searcher in Ray Tune per supernet, evaluator actors, exports) ->
retrain (opt-in: each search's best arch trained stand-alone from scratch, `train --arch`) ->
compare (searched and retrained models against reference models, measured on the same backend).
Each stage calls the same code as its own CLI (`train`, `profile build`, `search`, `train --arch`,
`compare`), and prints the equivalent command.

    python -m autovit_ray.pipeline --config demo --stages retrain,compare --set retrain.set=[train.epochs=30]

A stage is skipped when it finished before with the same fingerprint: a hash of its settings and of
its inputs (the training config; the space, device and backend of a latency table; the checkpoint
epoch and the table's content for a search). Records live in `<output_dir>/<name>/pipeline/`. An
interrupted pipeline resumes when rerun: training from its last epoch checkpoint, a search from its
Tune state (finished candidates are not evaluated again), and a stage that had finished is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from autovit_ray.adapters import default_tracking_uri
from autovit_ray.cli_exits import cli_main
from autovit_ray.experiment import COMPARE_JSON
from autovit_ray.pipeline import STAGES, Pipeline, PipelineError, StageTiming, load_pipeline_config


def print_summary(pipeline: Pipeline, timings: Sequence[StageTiming]) -> None:
    exp = pipeline.exp_dir.resolve()
    total = sum(t.seconds for t in timings)
    print(f"\n== pipeline {pipeline.cfg.name}: {total:.0f} s ==")
    print(f"{'stage':8} {'status':14} {'seconds':>8} {'budget':>7}  share")
    for t in timings:
        share = f"{100 * t.seconds / total:5.1f}%" if total else "    -"
        flag = "  OVER BUDGET" if t.over_budget else ""
        last = pipeline.last_run(t.stage) if t.status == "reused" else None
        ran = f"  (ran in {last['seconds']:.1f} s, {last['finished']})" if last else ""
        print(f"{t.stage:8} {t.status:14} {t.seconds:8.1f} {t.budget_s:7.0f}  {share}{flag}{ran}")
    print(f"\noutputs under {exp}:")
    for key, value in pipeline.outputs.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for supernet, path in items:
            print(f"  {key:12} {supernet:4} {path}")
    print(f"  {'summary':12} {'':4} {pipeline.experiment.summary_json}")
    compare_json = Path(pipeline.outputs.get("compare", pipeline.experiment.compare_dir)) / COMPARE_JSON
    verdict = json.loads(compare_json.read_text()).get("summary") if compare_json.is_file() else None
    if verdict:
        print(f"\n{verdict}")
    uri = default_tracking_uri(exp, pipeline.cfg.mlflow_uri)
    print(f"\nMLflow: {uri}\n  open the UI with: make mlflow-ui EXP={pipeline.exp_dir}"
          f"   (or: mlflow ui --backend-store-uri {uri})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autovit_ray.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help="YAML file or a name in configs/pipeline/ (default demo)")
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: the config's)")
    parser.add_argument("--force", default="", help="comma-separated stages to rerun even when up to date")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, e.g. --set search.evaluators=1 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resource plan as JSON (training workers per supernet, evaluators; whether "
                             "they fit the nodes up now and the largest cluster) and exit; exit status 1 when it "
                             "does not fit")
    return parser


@cli_main(kept="finished stages, epochs and search candidates are kept; rerun the same command to resume",
          bad_input=(PipelineError,))
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_pipeline_config(args.config, args.set)
    if args.print_config:
        print(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg))), sort_keys=False), end="")
        return 0
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    pipeline = Pipeline(cfg, force=[s.strip() for s in args.force.split(",") if s.strip()])
    if args.dry_run:
        try:
            plan = pipeline.resource_plan()
        finally:
            pipeline.close()
        print(json.dumps(plan.to_json(), indent=1))
        return 0 if plan.fits_max else 1
    timings = pipeline.run(stages)
    print_summary(pipeline, timings)
    return 0


__all__ = ["build_parser", "main", "print_summary"]
