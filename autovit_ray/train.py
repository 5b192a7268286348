"""Supernet training on Ray Train: `python -m autovit_ray.train`.

One `ray.train.torch.TorchTrainer` per supernet (`--supernets xxs,xs,s`, default all three); their
`fit()` calls run concurrently (one driver thread each), each with its own ScalingConfig,
RunConfig(storage_path=<output_dir>/<name>/checkpoints, name=<supernet>) and FailureConfig. Each
worker runs `autovit_ray.training.loop.SupernetTrainer` (plain torch) and reports a checkpoint every
epoch through `ray.train.report`; a restarted worker and a rerun of the same command with the same
`--name` resume from the latest checkpoint.

    python -m autovit_ray.train --config digits --name demo                 # local Ray, 3 supernets
    python -m autovit_ray.train --config cifar10 --supernets xxs --set optimizer.lr=5e-4
    ray job submit --address http://HEAD:8265 -- python -m autovit_ray.train --config imagenet ...

Bad input (an invalid config field, an unknown dataset, a missing data directory, a teacher that cannot
be loaded offline, an experiment name whose checkpoints come from another space or config) is
reported as one `error: ...` line before anything is written. See docs/outputs.md for the layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from autovit_ray import adapters, placement
from autovit_ray.cli_exits import cli_main
from autovit_ray.ray_train import connect_ray, plan_training, run_training, standalone_config
from autovit_ray.training.config import TrainConfig, describe_fields, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autovit_ray.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train AutoViT supernets (paper Algorithm 1) concurrently on Ray Train.",
        epilog="Config fields (YAML sections; override any with --set section.field=value, lists as "
               "a,b or [a, b]):\n" + describe_fields() + "\n\nOutput layout: docs/outputs.md.",
    )
    parser.add_argument("--config", default="digits",
                        help="YAML file or a name in configs/train/ (digits, cifar10, imagenet); default digits")
    parser.add_argument("--name", help="experiment name (config field name); the same name resumes")
    parser.add_argument("--supernets", help="comma-separated supernets, e.g. xxs,xs,s (config field supernets)")
    parser.add_argument("--output-dir", help="root of the experiments (config field output_dir)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--mlflow-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                                             "sqlite:///<output_dir>/<name>/mlflow.db)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, e.g. --set optimizer.lr=5e-4 (repeatable)")
    parser.add_argument("--arch", help="train this one subnet stand-alone from scratch instead of supernets: an "
                                       "arch JSON file or inline JSON, a search directory (its best model) or "
                                       "the MLflow run id of a searched candidate (default --name: "
                                       "<config name>-arch-<arch hash>)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resource plan as JSON (per supernet: workers, CPUs and GPUs per worker, "
                             "torch threads; whether it fits the nodes up now and the largest cluster) and exit; "
                             "exit status 1 when it does not fit")
    parser.add_argument("--cluster-file", help="with --dry-run: plan against this Ray cluster-launcher YAML or "
                                               "KubeRay RayJob/RayCluster manifest instead of a live cluster")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    extra: dict[str, Any] = {}
    if args.name is not None:
        extra["name"] = args.name
    if args.supernets is not None:
        extra["supernets"] = args.supernets
    if args.output_dir is not None:
        extra["output_dir"] = args.output_dir
    return load_config(args.config, args.set, extra)


def dry_run(cfg: TrainConfig, address: str | None, cluster_file: str | None) -> int:
    """Prints the resource plan of `cfg` as one JSON object; 1 when even the largest cluster cannot place it."""
    supernets = [Path(source).stem for source in cfg.supernets]
    if cluster_file:
        plan = plan_training(cfg, supernets, placement.read_cluster_file(cluster_file))
    else:
        started = connect_ray(cfg, address)
        try:
            plan = plan_training(cfg, supernets, adapters.cluster_node_groups())
        finally:
            if started:
                import ray

                ray.shutdown()
    print(json.dumps(plan.to_json(), indent=1))
    return 0 if plan.fits_max else 1


@cli_main(kept="finished epochs are kept (checkpoints); rerun the same command to resume")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    arch = None
    if args.arch:
        from autovit_ray.arch_source import resolve_arch

        arch = resolve_arch(args.arch, lambda: adapters.default_tracking_uri(cfg.experiment_dir, args.mlflow_uri))
        cfg, space = standalone_config(cfg, arch, named=args.name is not None)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if args.cluster_file and not args.dry_run:
        raise ValueError("--cluster-file plans without training: add --dry-run")
    if args.dry_run:
        return dry_run(cfg, args.address, args.cluster_file)
    results = run_training(cfg, address=args.address, mlflow_uri=args.mlflow_uri,
                           standalone=(arch, space) if arch is not None else None)
    for s, r in results.items():
        print(f"{s}: OK epoch {r.epoch} -> {r.checkpoint}" if r.ok else f"{s}: {r.status} ({r.first_error_line()})")
    failed = [r for r in results.values() if not r.ok]
    for r in failed:
        print(f"--- {r.supernet} failed ---\n{r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
