"""One search of a trained supernet as a function: `run(SearchConfig)` (what `python -m autovit_ray.search`,
the pipeline's search stage and the Python API call).

Trials are light Tune functions (`evaluate_trial`) that send their arch to a shared pool of evaluator
actors (each actor holds one supernet replica); a `tune.Tuner` drives them with the AutoViT searcher,
and `Tuner.restore` resumes an interrupted search. Selection uses the held-out validation split; the
test split is read only at the end, to report the chosen models. A resume needs the same search
identity (`search_identity`: checkpoint content, LUT, data split, evaluation batches, budgets,
strategy, seed): another search under a used name fails with both identities, or with `new_run`
starts a fresh MLflow parent run.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import adapters, placement
from ..adapters import connect_ray, default_tracking_uri
from ..cli_exits import Interrupted
from ..experiment import SEARCH_RESULTS, Experiment
from ..io import atomic_write_text
from ..placement import ResourcePlan
from ..space import Arch, SearchSpace
from .algorithms import (
    STRATEGIES,
    Budget,
    BudgetUnreachableError,
    CostModel,
    Evaluation,
    SearchStrategy,
    make_strategy,
)
from .config import SearchConfig, identity_settings
from .measured import (
    MeasuredCandidate,
    Measuring,
    ReferenceTiming,
    make_measuring,
    measure_candidates,
    select_within,
    unmet_error,
)
from .results import SearchReport, read_search

if TYPE_CHECKING:  # checkpoint imports torch: the driver imports it where it runs
    from ..checkpoint import TrainingRecord


TRIAL_CPUS = 0.01  # a trial only waits on the evaluator pool


def evaluator_cpus(cpus_per_evaluator: float | None, evaluators: int, concurrent_trials: int | None) -> float:
    """CPUs per evaluator actor: --cpus-per-evaluator, else the free CPUs shared by the evaluators (at
    most 1 each) minus what the concurrent trials need; an actor that took the trials' last CPU would
    leave every trial pending forever. The search's settings, or the pipeline's search stage's."""
    import ray

    if cpus_per_evaluator is not None:
        return cpus_per_evaluator
    return evaluator_share(ray.available_resources().get("CPU", 0.0), evaluators, concurrent_trials or 2 * evaluators)


def plan_search(cfg: SearchConfig, cluster: placement.Cluster) -> ResourcePlan:
    """The evaluator actors' plan on the connected `cluster`: CPUs each as `evaluator_cpus`, GPUs as configured."""
    cpus = evaluator_cpus(cfg.cpus_per_evaluator, cfg.evaluators, cfg.concurrent_trials)
    evaluators = placement.plan_evaluators(cfg.evaluators, cpus, cfg.gpus_per_evaluator, cluster)
    return placement.make_plan(cluster, evaluators=evaluators)


def evaluator_share(free_cpus: float, evaluators: int, concurrent_trials: int) -> float:
    """The CPUs each of `evaluators` actors may reserve out of `free_cpus` once `concurrent_trials`
    trials have their `TRIAL_CPUS` each: at most 1, rounded down to 0.01; too few is a ValueError."""
    free = free_cpus - concurrent_trials * TRIAL_CPUS
    share = int(100 * free / evaluators) / 100
    if share < 0.01:
        raise ValueError(f"the Ray cluster has {free_cpus:.2f} free CPUs: too few for {evaluators} "
                         "evaluators and the Tune trials; use fewer --evaluators or a bigger cluster")
    return min(1.0, share)


def evaluate_trial(config: dict[str, Any], pool: Any, finished: dict[str, dict[str, float]] | None = None) -> None:
    """A Tune trial: one arch, evaluated by the shared actor pool on the validation split.

    `finished`: results an interrupted run of this search already logged to MLflow (Tune's experiment
    state is saved every ~10 s, so a killed driver's last finished trials come back as unfinished);
    those archs are reported from there (`cached: 1`) instead of being evaluated again."""
    from ray import tune

    from .tune_searcher import arch_from_config

    arch = arch_from_config(config)
    if finished and arch.arch_hash in finished:
        tune.report({**finished[arch.arch_hash], "arch_hash": arch.arch_hash, "cached": 1})
        return
    result = pool.evaluate(arch, split="val")
    tune.report({"top1": result["val_top1"], "top5": result["val_top5"], "loss": result["val_loss"],
                 "params": result["params"], "macs": result["macs"],
                 "latency_ms": result["latency_ms"], "arch_hash": result["arch_hash"],
                 "cached": int(bool(result.get("cached")))})


def evaluation_overrides(cfg: SearchConfig) -> dict[str, Any]:
    """The checkpoint's data settings a search changes (DataConfig fields): where the data is
    (`--data-dir`), how many training images recalibrate BatchNorm (`--calib-size`)."""
    return {k: v for k, v in (("data_dir", cfg.data_dir), ("calib_size", cfg.calib_size)) if v}


def evaluation_data(record: TrainingRecord, data_overrides: dict[str, Any]) -> Any:
    """The DataConfig the evaluators read: the training data of a checkpoint (its `TrainingRecord`) with
    the search's overrides."""
    import dataclasses

    from ..training.config import config_from_dict

    return dataclasses.replace(config_from_dict(record.config).data, **data_overrides)


def checkpoint_digest(checkpoint: Path) -> str:
    """sha256 of a checkpoint's state.pt; of a few-shot folder, of its parts' digests by stage count."""
    from ..checkpoint import STATE_FILE, is_few_shot, read_few_shot
    from .cache import file_digest

    if not is_few_shot(checkpoint):
        return file_digest(checkpoint / STATE_FILE)
    parts = {count: file_digest(part / STATE_FILE) for count, part in sorted(read_few_shot(checkpoint).items())}
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def evaluation_context(checkpoint: Path, data: Any, settings: Any) -> dict[str, Any]:
    """What an evaluation's result depends on besides the arch (the evaluation cache's context): the
    checkpoint's content, the data the evaluator reads (`evaluation_data`) and the evaluation settings."""
    import dataclasses

    from ..data import dataset_record, resolve_data_path

    record = dataset_record(data)  # labels and split indices, whatever folder they are read from
    evaluation_fields = ("resolution", "batch_size", "calib_size", "split_seed", "val_size", "mean", "std",
                         "crop_pct", "interpolation")
    return {"checkpoint": checkpoint_digest(checkpoint), "dataset": record["name"],
            "data_digest": record["digest"], "data_path": resolve_data_path(data),
            "data": {k: getattr(data, k) for k in evaluation_fields}, "settings": dataclasses.asdict(settings)}


def search_identity(cfg: SearchConfig, context: dict[str, Any], space: SearchSpace, epoch: Any,
                    checkpoint: Path) -> tuple[str, dict[str, Any]]:
    """(digest, summary) of what makes two searches the same search: the evaluation context
    (`evaluation_context`: checkpoint content, data split, calibration and evaluation batches), the
    LUT's content, the space, and every setting that changes the proposals (budgets, strategy, seed,
    ...; `NOT_IN_IDENTITY` lists the others). A search resumes only a run of the same digest; the
    summary (readable, in the run's tags) is what an error shows of each side."""
    import dataclasses

    from .cache import file_digest

    lut_digest = file_digest(cfg.lut) if cfg.lut else None
    settings = identity_settings(dataclasses.asdict(cfg))
    # a search begun under a strategy's old name ("pareto") keeps its identity, so it resumes under the new one
    settings["strategy"] = {new: old for old, new in STRATEGIES.renamed.items()}.get(cfg.strategy, cfg.strategy)
    whole = {"evaluation": context, "lut": lut_digest, "space": space.fingerprint(), "settings": settings}
    digest = hashlib.sha256(json.dumps(whole, sort_keys=True, default=str).encode()).hexdigest()[:16]
    summary = {"checkpoint": str(checkpoint), "epoch": epoch, "checkpoint_digest": context["checkpoint"][:12],
               "lut": cfg.lut, "lut_digest": lut_digest[:12] if lut_digest else None,
               "strategy": cfg.strategy, "seed": cfg.seed, "params_budget": cfg.params_budget,
               "latency_budget_ms": cfg.latency_budget_ms, "evaluation": context["settings"]}
    return digest, summary


def run(cfg: SearchConfig) -> SearchReport:
    """Run one search; returns its results.json, read back (`search.results.read_search`)."""
    from ..checkpoint import read_record, resolve_checkpoint, space_of
    from .evaluate import EvalSettings
    from .tracking import SearchTracker

    cfg = cfg.with_absolute_paths()
    checkpoint = resolve_checkpoint(cfg.checkpoint, cfg.supernet)
    record = read_record(checkpoint)  # once per search: everything below takes it from here
    space = space_of(record.meta)
    num_classes = record.num_classes
    latency_fn = None
    measuring = None  # how the best archs are timed for a measured budget
    if cfg.lut:
        from ..latency import LatencyTable

        table = LatencyTable.load(cfg.lut, space=space)
        latency_fn = table.predict_latency
        if cfg.measured_budget:  # another device or an unknown reference fails here, before any actor starts
            measuring = make_measuring(cfg.measured_latency_budget_ms, cfg.measured_budget_reference,
                                       cfg.measured_budget_factor, table, space, num_classes)
    costs = CostModel(space, Budget(cfg.params_budget, cfg.latency_budget_ms), latency_fn, num_classes)
    # Budgets nothing can meet fail here, before any actor starts; the error names the closest arch.
    smallest = space.smallest()
    if not costs.fits(smallest):
        raise costs.unreachable([smallest], 1)
    strategy = make_strategy(cfg.strategy, space, costs, cfg)
    experiment = Experiment(Path(cfg.output_dir)) if cfg.output_dir else Experiment.of_checkpoint(checkpoint)
    search_dir = experiment.search_dir(cfg.name)
    data_overrides = evaluation_overrides(cfg)
    settings = EvalSettings(max_batches=cfg.eval_batches, calib_batches=cfg.calib_batches, val_half=cfg.val_half)
    data = evaluation_data(record, data_overrides)
    context = evaluation_context(checkpoint, data, settings)
    identity, identity_summary = search_identity(cfg, context, space, record.epoch, checkpoint)
    tracker = SearchTracker(default_tracking_uri(experiment.root, cfg.mlflow_uri), cfg.name)
    # The param "profile" (the input profile) keeps its old name: a resumed run logs the same params.
    tracker.start(identity=identity, summary=identity_summary, new_run=cfg.new_run, params={
        "strategy": cfg.strategy, "supernet": space.name, "profile": space.input_profile.name,
        "space_fingerprint": space.fingerprint(), "checkpoint": str(checkpoint), "lut": cfg.lut or "",
        "params_budget": cfg.params_budget, "latency_budget_ms": cfg.latency_budget_ms,
        "population": cfg.population, "generations": cfg.generations, "seed": cfg.seed,
        "evaluators": cfg.evaluators, "max_evaluations": strategy.max_evaluations,
        "num_classes": num_classes, "dataset": data.dataset})

    try:
        return _run_started(cfg, tracker, strategy, record, data, data_overrides, settings, context, identity,
                            experiment, search_dir, measuring)
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException:  # never leave the parent run RUNNING: a later resume would take it as live
        tracker.finish("FAILED")
        raise


def _run_started(cfg: SearchConfig, tracker: Any, strategy: SearchStrategy, record: TrainingRecord, data: Any,
                 data_overrides: dict[str, Any], settings: Any, context: dict[str, Any], identity: str,
                 experiment: Experiment, search_dir: Path, measuring: Measuring | None = None) -> SearchReport:
    """`run` once its MLflow parent run exists: the evaluator pool, the Tune experiment (a `tune.Tuner`,
    or `Tuner.restore` of this search's interrupted one), the summary. `record`: the checkpoint's
    `TrainingRecord`; `measuring`: how the best archs are timed for a measured budget, or None."""
    import time

    from ray import tune

    from ..data import prepare_in_memory
    from .actors import EvaluatorPool
    from .cache import EvalCache
    from .tune_searcher import AutoViTSearcher, SearchProgress

    connect_ray(cfg.address, cfg.num_cpus, log_to_driver=False)
    prepare_in_memory(data)
    cache = None if cfg.no_eval_cache else EvalCache(cfg.eval_cache or experiment.eval_cache, context)
    cluster = adapters.cluster_node_groups()
    plan = plan_search(cfg, cluster)
    placement.check_fits(plan, cluster)  # before any actor starts
    evaluators = plan.evaluators
    assert evaluators is not None  # plan_search plans the evaluators
    pool = EvaluatorPool(str(record.directory), evaluators.count, cfg.lut, settings, data_overrides, evaluators.cpus,
                         cfg.threads_per_evaluator, cache=cache, timeout_s=cfg.eval_timeout_s,
                         gpus_per_evaluator=evaluators.gpus, timing_arch=strategy.space.largest())
    print(f"[{cfg.name}] evaluation timeouts (s): {pool.timeouts}", flush=True)
    searcher = AutoViTSearcher(strategy, metric="top1", mode="max")
    # Re-passed on a restore: the pool's object references do not survive Tune's pickle of the trainable.
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, pool=pool, finished=tracker.finished), {"cpu": TRIAL_CPUS})
    tune_dir = experiment.tune_dir(cfg.name, identity)  # resumes only the same search
    started = time.time()
    try:
        if tune.Tuner.can_restore(str(tune_dir)):
            # The searcher and callbacks come back from the Tuner's pickle, the searcher's state from
            # Tune's last experiment checkpoint; trials cut by the interruption run again.
            tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable)
        else:  # a new search, or one interrupted before Tune saved anything: start (again) from scratch
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, metric="top1", mode="max", num_samples=-1,
                                            max_concurrent_trials=cfg.concurrent_trials or 2 * cfg.evaluators,
                                            reuse_actors=True),  # a fresh trial process costs seconds of imports
                run_config=tune.RunConfig(name=tune_dir.name, storage_path=str(tune_dir.parent), verbose=0,
                                          callbacks=[tracker.tune_callback(), SearchProgress(strategy, cfg.name)]))
        grid = tuner.fit()
    except BudgetUnreachableError:
        pool.shutdown()
        raise
    # The searcher Tune drove may be the restored copy: this one takes its final state, which Tune saves
    # when the experiment ends.
    searcher.restore_from_dir(str(tune_dir))
    failures = failed_trials(grid)
    if failures:
        print(f"[{cfg.name}] {len(failures)} trial(s) failed (each counts as a failed evaluation); the first "
              f"error in full:\n{failures[0]['error']}", file=sys.stderr)
    if not strategy.finished:  # Tune stops early only on Ctrl-C / SIGTERM, and then returns normally
        pool.shutdown()
        raise Interrupted(f"search {cfg.name} interrupted after {len(strategy.history)} of "
                                f"{strategy.max_evaluations} evaluations; rerun the same command to resume")
    # This run's work, before the test report adds its own: unique evaluations vs cache hits.
    counts = {"actor_evaluations": sum(s["evaluations"] for s in pool.stats()),
              "cache_hits": cache_hits(grid, since=started),
              "cache_entries": len(cache) if cache is not None else 0,
              **{f"candidates_{k}": v for k, v in strategy.proposals.items()}}
    try:
        summary = summarise(strategy, pool, cfg, search_dir, tracker, record, data, failures, measuring)
    except BaseException:
        pool.shutdown()
        raise
    stats = pool.stats()
    summary.update(counts, failed_trials=failures, evaluator_stats=stats, eval_timeouts_s=pool.timeouts,
                   eval_cache=str(cache.path) if cache is not None else None)
    tracker.log_counts(counts)
    pool.shutdown()
    atomic_write_text(search_dir / SEARCH_RESULTS, json.dumps(summary, indent=2, default=str))
    tracker.log_artifact(search_dir / SEARCH_RESULTS)
    tracker.finish("FINISHED")
    return read_search(search_dir / SEARCH_RESULTS)


def failed_trials(grid: Any) -> list[dict[str, Any]]:
    """The trials that ended in an error (a Tune `ResultGrid`): trial folder, arch and the error text."""
    out = []
    for result in grid:
        if result.error is None:
            continue
        out.append({"trial": Path(result.path).name, "arch": (result.config or {}).get("arch_json"),
                    "error": str(result.error) or type(result.error).__name__})
    return out


def cache_hits(grid: Any, since: float) -> int:
    """Candidates answered without an evaluation (the evaluation cache, or an interrupted run's MLflow
    log) among the trials that reported at or after `since` (epoch s): this run's, not a restored run's."""
    return sum(1 for result in grid if result.metrics and result.metrics.get("cached")
               and result.metrics.get("timestamp", 0) >= int(since))


def summarise(strategy: SearchStrategy, pool: Any, cfg: SearchConfig, search_dir: Path, tracker: Any, record: TrainingRecord,
              data: Any, failures: list[dict[str, Any]] | None = None,
              measuring: Measuring | None = None) -> dict[str, Any]:
    """The search's best models (the `top_k` best by validation; with a measured budget, of those within
    it), each scored on the test split, exported, logged and the first registered; the results.json dict."""
    from ..checkpoint import load_supernet
    from ..data import build_loader
    from ..evaluation import calibrated_subnet
    from ..export import export_model
    from ..models import save_subnet

    checkpoint = record.directory
    best = strategy.ranked(cfg.top_k)
    front = sorted(strategy.pareto_front(), key=lambda e: (e.latency or 0.0, e.params))
    if not best:
        first = f"; the first of {len(failures)} failed trials:\n{failures[0]['error']}" if failures else ""
        raise RuntimeError(f"no candidate of search {cfg.name!r} was evaluated successfully{first}")
    selection: dict[str, Any] = {}
    if measuring is not None:
        best, selection = measured_best(strategy, cfg, measuring, record.num_classes)
    supernet, space, _ = load_supernet(checkpoint)
    formats = cfg.export_formats
    reported, models = [], []
    for rank, evaluation in enumerate(best, start=1):
        test = pool.evaluate(evaluation.arch, split="test")  # report only: selection is already done
        other = pool.evaluate(evaluation.arch, split="val_other") if cfg.val_half is not None else None
        calib = build_loader(data, "calib", resolution=evaluation.arch.resolution)
        # extracted from the recalibrated supernet copy: the weights `python -m autovit_ray.export` writes
        model, _ = calibrated_subnet(supernet, evaluation.arch, calib, num_batches=cfg.calib_batches,
                                     with_reference=True)
        name = f"{cfg.name}-top{rank}-{evaluation.arch.arch_hash}"
        export_dir = search_dir / "exports"
        arch_path, weights = save_subnet(model, evaluation.arch, export_dir, name)
        paths = export_model(model, evaluation.arch.resolution, export_dir, name, formats) if formats else {}
        for path in (arch_path, weights, *paths.values()):
            tracker.log_artifact(path, "exports")
        models.append((model, next(iter(calib))[0]))
        reported.append({"rank": rank, "arch": evaluation.arch.to_dict(), "name": str(evaluation.arch),
                         "val_top1": evaluation.fitness, "test_top1": test["test_top1"],
                         "params": evaluation.params, "latency_ms": evaluation.latency,
                         "macs": test["macs"], "exports": {k: str(v) for k, v in paths.items()},
                         "weights": str(weights), "arch_json": str(arch_path),
                         **({"val_other_top1": other["val_other_top1"]} if other is not None else {})})
    log_mlflow_models(cfg, reported, models, tracker, record, space, data)
    tracker.log_summary(reported, front, strategy.history)
    print_tables(reported, front)
    return {"best": reported, "pareto_front": [e.to_dict() for e in front],
            "evaluations": len(strategy.history), "failed": sum(not e.ok for e in strategy.history),
            "evaluated": [e.to_dict() for e in strategy.history],  # every candidate, in evaluation order
            **({"measured_selection": selection} if selection else {})}


def measured_best(strategy: SearchStrategy, cfg: SearchConfig, how: Measuring,
                  num_classes: int) -> tuple[list[Evaluation], dict[str, Any]]:
    """(the `top_k` best archs within the measured budget, the record of their selection) from the
    `measured_candidates` best by the strategy's ranking, timed as `how` says (`search.measured`).
    None within it: `MeasuredBudgetUnmetError`, after the timings are printed."""
    candidates = strategy.ranked(max(cfg.measured_candidates, cfg.top_k))
    backend = how.backend
    print(f"[{cfg.name}] timing the {len(candidates)} best archs on {backend.name} for the measured latency "
          f"budget {how.describe()} (batch 1, interleaved)", flush=True)
    measured, budget, reference = measure_candidates(candidates, strategy.space, num_classes, how, seed=cfg.seed)
    print_measured(measured, budget, backend.name, reference)
    chosen = select_within(measured, cfg.top_k)
    if not chosen:
        raise unmet_error(measured, budget, cfg.latency_budget_ms, reference)
    selection = {"budget_ms": budget, "backend": backend.name, "settings": backend.settings(),
                 **({"reference": reference.to_dict()} if reference is not None else {}),
                 "candidates": [m.to_dict() for m in measured], "chosen_ranks": [i + 1 for i in chosen]}
    return [candidates[i] for i in chosen], selection


def log_mlflow_models(cfg: SearchConfig, reported: list[dict[str, Any]], models: list[tuple[Any, Any]],
                      tracker: Any, record: TrainingRecord, space: SearchSpace, data: Any) -> None:
    """Each reported model as MLflow Models in its candidate run (pyfunc + ONNX when exported), with its
    measured latency; the best one registered (`autovit_ray.registry`). Adds the model URIs, measured
    latency and registry version to `reported`."""
    from ..latency import get_backend, measure_models
    from ..registry import ModelFacts, log_searched_model, register, registered_model_name

    # the reported models measured alike, interleaved (batch 1, 1 thread, wall clock)
    stats = measure_models(get_backend("torch-cpu", threads=1, clock="wall"),
                           [(model, (1, 3, r["arch"]["resolution"], r["arch"]["resolution"]))
                            for (model, _), r in zip(models, reported)], rounds=5, repeats=10)
    # the LUT file's content hash: which table predicted the latencies
    lut_fingerprint = hashlib.sha256(Path(cfg.lut).read_bytes()).hexdigest()[:16] if cfg.lut else None
    budgets = budgets_tag(cfg)
    split = f"{data.dataset}/split_seed={data.split_seed}/val_size={data.val_size}"
    for entry, (model, batch), measured in zip(reported, models, stats):
        arch = Arch.from_dict(entry["arch"])
        entry["measured_latency_ms"] = measured.median_ms
        facts = ModelFacts(arch=arch, input_profile=space.input_profile.name, num_classes=record.num_classes,
                           mean=tuple(data.mean), std=tuple(data.std), params=int(entry["params"]), macs=int(entry["macs"]), val_top1=float(entry["val_top1"]),
                           test_top1=float(entry["test_top1"]), checkpoint=str(record.directory),
                           space_fingerprint=space.fingerprint(), data_split=split, budgets=budgets,
                           lut_latency_ms=entry["latency_ms"], lut_fingerprint=lut_fingerprint,
                           measured_latency_ms=measured.median_ms)
        run_id = tracker.candidate_run_id(arch.arch_hash)
        if run_id is None:  # no MLflow parent run (tracking off): nothing to log the models into
            continue
        onnx_path = Path(entry["exports"]["onnx"]) if "onnx" in entry["exports"] else None
        entry["model_uris"] = log_searched_model(tracker.tracking_uri, run_id, model, facts, space,
                                                 Path(entry["arch_json"]), Path(entry["weights"]), onnx_path, batch)
        if entry["rank"] == 1 and not cfg.no_register:
            name = cfg.registered_model_name or registered_model_name(record.experiment_name, arch.supernet)
            entry["registered"] = register(tracker.tracking_uri, name, entry["model_uris"]["pyfunc"], run_id, facts)


def budgets_tag(cfg: SearchConfig) -> str:
    """A registered model's budgets (its champion group): "params<=1.6e+06,latency_ms<=5", with a measured
    budget "measured_latency_ms<=5.2" or "measured_latency<=0.8*mobilevit_xxs"; "none" without any."""
    parts = [f"{k}<={v:g}" for k, v in (("params", cfg.params_budget), ("latency_ms", cfg.latency_budget_ms),
                                        ("measured_latency_ms", cfg.measured_latency_budget_ms)) if v is not None]
    if cfg.measured_budget_reference is not None:
        parts.append(f"measured_latency<={cfg.measured_budget_factor:g}*{cfg.measured_budget_reference}")
    return ",".join(parts) or "none"


def print_measured(measured: list[MeasuredCandidate], budget_ms: float, backend: str,
                   reference: ReferenceTiming | None = None) -> None:
    print(f"\nThe best archs by validation, timed on {backend} for the measured budget {budget_ms:.4g} ms" + (
        f" ({reference.factor:g}x {reference.name}, which measured {reference.measured_ms:.3f} ms "
        f"[p10-p90 {reference.p10_ms:.3f}-{reference.p90_ms:.3f}] beside them):" if reference is not None else ":"))
    print(f"{'rank':>4} {'val top1':>9} {'table ms':>9} {'measured ms':>12} {'p10-p90':>15}  within  arch")
    for m in measured:
        table = math.nan if m.table_ms is None else m.table_ms
        spread = f"{m.p10_ms:.3f}-{m.p90_ms:.3f}"
        print(f"{m.rank:>4} {m.val_top1:9.2f} {table:9.3f} {m.measured_ms:12.3f} {spread:>15}  "
              f"{'yes' if m.within_budget else 'no':>6}  {m.arch}")


def print_tables(reported: list[dict[str, Any]], front: list[Evaluation]) -> None:
    # table ms (what the budget reads) beside measured ms: a search picks the archs its table underestimates
    print("\nBest models (selected on the validation split; test top-1 reported only; measured: this machine, "
          "torch-cpu, batch 1, 1 thread):")
    print(f"{'rank':>4} {'val top1':>9} {'test top1':>10} {'params':>9} {'table ms':>9} {'measured ms':>12}  arch")
    for r in reported:
        table, measured = (math.nan if v is None else v for v in (r["latency_ms"], r.get("measured_latency_ms")))
        print(f"{r['rank']:>4} {r['val_top1']:9.2f} {r['test_top1']:10.2f} {r['params'] / 1e6:8.3f}M "
              f"{table:9.3f} {measured:12.3f}  {r['name']}")
    print("\nPareto front (val top-1, latency, params):")
    for e in front:
        print(f"  {e.fitness:7.2f}  {(e.latency if e.latency is not None else math.nan):8.3f} ms  "
              f"{e.params / 1e6:6.3f}M  {e.arch}")


__all__ = [
    "TRIAL_CPUS", "cache_hits", "evaluate_trial", "evaluation_context", "evaluation_data", "evaluator_cpus",
    "evaluator_share", "failed_trials", "measured_best", "plan_search", "run", "search_identity", "summarise",
]
