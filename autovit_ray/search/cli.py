"""`python -m autovit_ray.search`: search a trained supernet with the AutoViT searcher in Ray Tune.

    python -m autovit_ray.search --checkpoint outputs/digits-demo --supernet xxs \
        --lut outputs/digits-demo/luts/xxs.parquet --params-budget 1.8M --latency-budget-ms 5 \
        --strategy coarse-to-fine --evaluators 2 --name xxs-search

Trials are light Tune functions that send their arch to a shared pool of evaluator actors (each
actor holds one supernet replica). Selection uses the held-out validation split; the test split
is read only at the end, to report the chosen models. Rerunning the same command with the same
`--name` resumes the Tune experiment without re-evaluating finished candidates. A resume needs the same
search identity (`search_identity`: checkpoint content, LUT, data split, evaluation batches, budgets,
strategy, seed): another search under a used name fails with both identities, or with `--new-run`
starts a fresh MLflow parent run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autovit_ray.cli_exits import cli_main

from .. import adapters
from ..adapters import connect_ray
from ..config import parse_override, read_yaml_mapping, set_path
from .algorithms import STRATEGIES
from .config import DEFAULTS, SearchConfig, count
from .driver import plan_search, run


def parse_count(text: str) -> float:
    """'1.8M' -> 1.8e6, '900k' -> 9e5, '1500000' -> 1.5e6 (argparse's type for --params-budget)."""
    try:
        return count(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    """The flags of `SearchConfig` (its defaults); `SearchConfig.from_args` turns them into one."""
    p = argparse.ArgumentParser(prog="python -m autovit_ray.search", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="a YAML file of search settings (the flags' names with '_' for '-', e.g. "
                        "population: 50); flags given on the command line override it, --set overrides both")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one setting, e.g. --set generations=10 (repeatable)")
    p.add_argument("--checkpoint", default=None,
                   help="a supernet checkpoint directory, or an experiment directory with --supernet "
                        "(required, here or in --config)")
    p.add_argument("--supernet", default=None, help="xxs, xs or s (when --checkpoint is an experiment)")
    p.add_argument("--lut", default=None, help="latency table (.parquet) from `python -m autovit_ray.profile build`")
    p.add_argument("--params-budget", type=parse_count, default=None, help="T_p, e.g. 1.8M")
    p.add_argument("--latency-budget-ms", type=float, default=None, help="T_l in ms (needs --lut)")
    p.add_argument("--measured-latency-budget-ms", type=float, default=None,
                   help="after the search, time its --measured-candidates best archs by validation on the "
                        "table's backend and device (this machine must be it) and keep only those within this "
                        "many ms (needs --lut; docs/search.md)")
    p.add_argument("--measured-budget-reference", default=None,
                   help="instead of --measured-latency-budget-ms: a timm model (e.g. mobilevit_xxs, adapted to the "
                        "space's input profile) timed beside the candidates, in the same interleaved run; the "
                        "measured budget is --measured-budget-factor x its latency there (needs --lut)")
    p.add_argument("--measured-budget-factor", type=float, default=DEFAULTS["measured_budget_factor"],
                   help="the measured budget as a multiple of --measured-budget-reference's latency "
                        "(default %(default)s)")
    p.add_argument("--measured-candidates", type=int, default=DEFAULTS["measured_candidates"],
                   help="best archs by validation timed for the measured budget (default %(default)s)")
    p.add_argument("--strategy", default=DEFAULTS["strategy"],
                   help=f"one of {', '.join(STRATEGIES.names())} (default %(default)s), or one a plugin registers "
                        "(docs/extending.md)")
    p.add_argument("--population", type=int, default=DEFAULTS["population"])
    p.add_argument("--generations", type=int, default=DEFAULTS["generations"])
    p.add_argument("--parents", type=int, default=DEFAULTS["parents"])
    p.add_argument("--coarse-samples", type=int, default=DEFAULTS["coarse_samples"], help="random archs screened by the coarse stage")
    p.add_argument("--skeletons", type=int, default=DEFAULTS["skeletons"], help="K skeletons kept by the coarse stage")
    p.add_argument("--max-evaluations", type=int, default=None, help="default: population x generations")
    p.add_argument("--evaluators", type=int, default=DEFAULTS["evaluators"], help="evaluator actors (supernet replicas)")
    p.add_argument("--cpus-per-evaluator", type=float, default=None,
                   help="default: the free CPUs shared by the evaluators (at most 1 each), leaving a "
                        "little for the Tune trials, which only wait on the pool")
    p.add_argument("--threads-per-evaluator", type=int, default=DEFAULTS["threads_per_evaluator"])
    p.add_argument("--gpus-per-evaluator", type=float, default=DEFAULTS["gpus_per_evaluator"],
                   help="GPUs per evaluator actor, fractions share one GPU (e.g. 0.25: four per GPU); "
                        "default 0: CPU evaluators")
    p.add_argument("--eval-timeout-s", type=float, default=DEFAULTS["eval_timeout_s"],
                   help="seconds one evaluation may take; a hung evaluator actor is then restarted and the "
                        "request sent again (default: derived per split, 10x the measured time of the space's "
                        "largest arch on each actor, at least 30 s)")
    p.add_argument("--concurrent-trials", type=int, default=None, help="default: 2 x evaluators")
    p.add_argument("--eval-batches", type=int, default=None, help="validation batches per candidate (default all)")
    p.add_argument("--calib-batches", type=int, default=None, help="BN recalibration batches (default all)")
    p.add_argument("--calib-size", type=int, default=None,
                   help="BN recalibration images, drawn from the training split (default: the checkpoint's "
                        "data.calib_size; `python -m autovit_ray.fidelity --calib-size` tells whether more ranks better)")
    p.add_argument("--val-half", type=int, default=None,
                   help="select on this fixed half (0 or 1) of the validation split; the best models are "
                        "also scored on the other half (val_other_top1), unbiased by their selection")
    p.add_argument("--data-dir", default=None, help="override the checkpoint's data directory")
    p.add_argument("--eval-cache", default=None,
                   help="SQLite store of evaluations, shared by searches of one checkpoint (default "
                        "<output-dir>/search/eval_cache.sqlite): an arch is not evaluated twice on the same terms")
    p.add_argument("--no-eval-cache", action="store_true", help="evaluate every candidate, store nothing")
    p.add_argument("--top-k", type=int, default=DEFAULTS["top_k"], help="best models to report on the test split and export")
    p.add_argument("--export-formats", default=",".join(DEFAULTS["export_formats"]))
    p.add_argument("--registered-model-name", default=None,
                   help="MLflow registered model for the best model (default: autovit-<training name>-<supernet>)")
    p.add_argument("--no-register", action="store_true",
                   help="log the MLflow Models but register nothing in the Model Registry")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--name", default=None,
                   help="search name: Tune experiment and MLflow parent run (required, here or in --config)")
    p.add_argument("--output-dir", default=None, help="default: the checkpoint's experiment directory")
    p.add_argument("--mlflow-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite in the output dir")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray")
    p.add_argument("--dry-run", action="store_true",
                   help="print the evaluators' resource plan as JSON (count, CPUs, GPUs each; whether they fit "
                        "the nodes up now and the largest cluster) and exit; exit status 1 when it does not fit")
    p.add_argument("--new-run", action="store_true",
                   help="when a search of this --name exists with another identity (another checkpoint, "
                        "LUT, budgets, strategy or seed), start a fresh parent run instead of failing")
    return p


def dry_run(cfg: SearchConfig) -> int:
    """Prints the search's resource plan as one JSON object; 1 when even the largest cluster cannot place it."""
    import ray

    started = connect_ray(cfg.address, cfg.num_cpus, log_to_driver=False)
    try:
        plan = plan_search(cfg, adapters.cluster_node_groups())
    finally:
        if started:
            ray.shutdown()
    print(json.dumps(plan.to_json(), indent=1))
    return 0 if plan.fits_max else 1


def config_from_argv(argv: list[str]) -> SearchConfig:
    """The SearchConfig of a command line: SearchConfig's defaults, then --config's YAML, then the
    flags given on the command line, then each --set. Bad input: one ValueError (argparse's own
    usage errors exit 2 as usual)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {action.dest for action in parser._actions
             if {token.split("=", 1)[0] for token in argv if token.startswith("--")} & set(action.option_strings)}
    given -= {"config", "set", "help"}
    if args.config is None and not args.set:
        missing = [f"--{name}" for name in ("checkpoint", "name") if getattr(args, name) is None]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
        return SearchConfig.from_args(args)
    values: dict[str, Any] = {}
    if args.config is not None:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"search config {args.config!r} does not exist: expected a YAML file")
        values = read_yaml_mapping(path, "search")
    values.update({name: getattr(args, name) for name in given})
    for item in args.set:
        key, value = parse_override(item)
        set_path(values, key, value)
    missing = [name for name in ("checkpoint", "name") if values.get(name) is None]
    if missing:
        raise ValueError(f"no {' or '.join(missing)}: give --{missing[0]} or set it in --config")
    return SearchConfig.from_dict(values)


@cli_main()
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--dry-run" in argv:  # a flag of this command, not a field of the search's config
        return dry_run(config_from_argv([a for a in argv if a != "--dry-run"]))
    run(config_from_argv(argv))
    return 0


__all__ = ["build_parser", "config_from_argv", "dry_run", "main", "parse_count"]
