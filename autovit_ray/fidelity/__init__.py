"""Rank fidelity: does the accuracy a supernet's subnets inherit rank them as training each alone would?

A search trusts that it does. This measures it for any trained supernet:

    python -m autovit_ray.fidelity --checkpoint outputs/cifar10 --supernet xxs --truth outputs/xxs-truth \
        --subnets 12 --epochs 15 --lut outputs/cifar10/luts/xxs.parquet --band-ms 2.9,4.3 --in-band 8 --repeat 2

1. **Draw** `--subnets` archs (seeded) from a pool of random archs sorted by LUT latency (by
   parameters without a LUT): `--in-band` of them at evenly spaced quantiles inside the latency band
   `--band-ms` (where a search decides: a whole-space tau is inflated by size alone), the rest
   spread over the whole range.
2. **Truth**: each trained from scratch alone (`python -m autovit_ray.train --arch`'s code path) with
   the experiment's recipe for `--epochs`, in `--truth/<arch hash>-s<seed>/` (resumable: a killed run
   continues from its last epoch); the first `--repeat` again with seed + 1, so the truth's own seed
   noise is measured, and from it the ceiling of any tau (`truth_ceiling`). `truth.json` records the
   recipe: a truth folder trained with another recipe is refused. The runs train `--parallel` at once on Ray (default: as
   many as the cluster holds, a CPU per worker unless the recipe's `ray.*` says otherwise). As each
   run ends, its validation top-1 (the ranking's) and test top-1 (reported, never used to rank) go
   into `results.json`, a few hundred bytes a run: a finished run is never scored or trained again,
   so its folder (checkpoints, a few MB) can be deleted, or the ledger copied with `truth.json` to
   another machine, and further supernets are still scored against it.
3. **Scores** on the validation split: each subnet's inherited top-1 (BN recalibrated, on
   `--calib-batches` batches of `--calib-size` training images: a search's settings, or a larger
   sample to see whether more recalibration ranks better) from every `--checkpoint` (one truth scores
   any number of supernets of the same space), and its stand-alone top-1 (its own BN statistics).
   With `--calib-draws K`, each supernet is scored again on K - 1 other calibration subsets of the same
   size (`data.calib_seed`): how far the inherited scores move with the subset caps tau as the truth's
   seed noise does (`calibration_noise`).
4. **Report** (`<truth>/fidelity.json`, printed, an MLflow run "fidelity", a section of the experiment's
   report page when the truth is the default `<experiment>/fidelity`): per supernet, Kendall tau and Spearman rho of
   inherited vs stand-alone accuracy with bootstrap intervals, over all subnets and inside the band;
   the same tau for two predictors that need no supernet (MACs, parameters), and the supernet's tau
   minus MACs' with a paired bootstrap interval (does it rank better than counting MACs?); top-3
   overlap; regret (the best stand-alone accuracy minus that of the inherited-best subnet).

Before a truth's hours, `--scan N` (scan.py) is the cheap check: do the subnets' inherited accuracies
spread at all?
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write_text
from ..plan import count_macs, count_params
from ..space import Arch, SearchSpace

if TYPE_CHECKING:
    import threading

    from ..tracking import OpenRuns

TRUTH_FILE = "truth.json"
RESULTS_FILE = "results.json"  # {"runs": {"<arch hash>-s<seed>": {arch, seed, epochs, val_top1, test_top1}}}
REPORT_FILE = "fidelity.json"
# Settings of the stand-alone recipe that do not change what is trained (where, how, progress).
NOT_IN_RECIPE = ("name", "output_dir", "supernets", "seed", "ray", "mlflow", "train.stop_after_epoch",
                 "train.progress_bar", "train.arch_log", "train.fail_after_epoch", "train.keep_checkpoints",
                 "data.data_dir", "data.num_workers", "data.cache_dir", "data.seed", "eval")


@dataclass(frozen=True)
class FidelityConfig:
    checkpoints: tuple[str, ...]  # supernet checkpoint folders, all of one space
    truth: str  # the truth folder (stand-alone runs, truth.json, fidelity.json)
    subnets: int = 12
    seed: int = 0  # the draw and the first training seed
    epochs: int = 15  # stand-alone epochs (the schedule is fitted to them)
    lut: str | None = None  # latency table: the draw spreads over its latency (else over parameters)
    band_ms: tuple[float, float] | None = None  # the latency band where searches decide (table ms)
    in_band: int = 0  # subnets drawn inside the band
    repeat: int = 0  # the first `repeat` subnets trained again with seed + 1
    overrides: tuple[str, ...] = ()  # --set on the stand-alone recipe (the experiment's, by default)
    calib_batches: int | None = None  # BN recalibration batches for the inherited scores (None: all)
    calib_size: int | None = None  # BN recalibration images, from the training split (None: the checkpoint's)
    calib_draws: int = 1  # calibration subsets each supernet is scored on: > 1 measures the inherited scores' noise
    parallel: int | None = None  # stand-alone runs trained at once (None: as many as the cluster holds)
    pool: int = 10_000  # random archs the draw picks from
    resamples: int = 10_000  # bootstrap resamples
    address: str | None = None  # Ray address for the stand-alone trainings
    mlflow_uri: str | None = None

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ValueError("fidelity needs at least one supernet --checkpoint")
        if self.subnets < 4:
            raise ValueError(f"--subnets {self.subnets}: a rank correlation needs at least 4 subnets")
        if self.epochs < 1 or self.pool < self.subnets or self.resamples < 1:
            raise ValueError(f"--epochs must be >= 1 and --pool >= --subnets, got {self.epochs} and {self.pool}")
        if not 0 <= self.in_band <= self.subnets or not 0 <= self.repeat <= self.subnets:
            raise ValueError(f"--in-band {self.in_band} and --repeat {self.repeat}: expected 0..--subnets")
        if self.in_band and (self.band_ms is None or self.lut is None):
            raise ValueError("--in-band needs --band-ms and --lut (the band is in table milliseconds)")
        for name in ("calib_batches", "calib_size", "parallel"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive number, or none for the "
                                 "default")
        if self.calib_draws < 1:
            raise ValueError(f"--calib-draws {self.calib_draws}: expected 1 (the search's one calibration subset) "
                             "or more")
        if self.band_ms is not None and not 0 < self.band_ms[0] < self.band_ms[1]:
            raise ValueError(f"--band-ms {self.band_ms}: expected LOW,HIGH with 0 < LOW < HIGH")


# ---------------------------------------------------------------------------------------------------
# The draw


def draw_subnets(space: SearchSpace, count: int, seed: int, cost: Callable[[Arch], float],
                 band: tuple[float, float] | None = None, in_band: int = 0, pool: int = 10_000) -> list[Arch]:
    """`in_band` archs at evenly spaced quantiles of `cost` inside `band`, the rest at evenly spaced
    quantiles of the whole pool (`pool` random archs, seeded), all distinct."""
    rng = random.Random(f"fidelity/{seed}")
    archs = sorted({a.arch_hash: a for a in (space.sample(rng) for _ in range(pool))}.values(), key=cost)
    inside = [a for a in archs if band is not None and band[0] <= cost(a) <= band[1]]
    if in_band and len(inside) < in_band:
        raise ValueError(f"the latency band {list(band or ())} ms holds {len(inside)} of {len(archs)} random archs: "
                         f"fewer than the {in_band} asked for; widen --band-ms (the pool spans "
                         f"{cost(archs[0]):.3g}-{cost(archs[-1]):.3g} ms)")

    def spread(candidates: list[Arch], k: int, taken: dict[str, Arch]) -> None:
        free = [a for a in candidates if a.arch_hash not in taken]
        if len(free) < k:
            raise ValueError(f"only {len(free)} distinct archs left to draw {k} from: raise --pool")
        for i in range(k):
            arch = free[min(len(free) - 1, int((i + 0.5) * len(free) / k))]
            j = free.index(arch)
            while arch.arch_hash in taken:  # quantiles of a small pool may coincide: take the next free
                j = (j + 1) % len(free)
                arch = free[j]
            taken[arch.arch_hash] = arch

    taken: dict[str, Arch] = {}
    spread(inside, in_band, taken)
    spread(archs, count - in_band, taken)
    return sorted(taken.values(), key=cost)


# ---------------------------------------------------------------------------------------------------
# The truth: stand-alone runs


def truth_recipe(checkpoint_config: Any, epochs: int, overrides: Sequence[str]) -> Any:
    """The stand-alone recipe: the experiment's training config with `epochs`, uniform sampling of its
    one arch, no in-place distillation (a lone arch has no larger teacher), then `overrides`."""
    from ..training.config import config_from_dict, set_override

    values = checkpoint_config.to_dict()
    values["train"]["epochs"] = epochs
    values["train"]["sampler"] = "uniform"
    values["train"]["stop_after_epoch"] = None
    # a lone arch starts from random weights, whatever the supernet (a few-shot part) started from
    values["train"].update({"transformer_stages": None, "init_from": None})
    if values["kd"].get("inplace"):
        values["kd"].update({"kind": "none", "inplace": False})
    for item in overrides:
        set_override(values, item)
    return config_from_dict(values)


def recipe_record(cfg: Any) -> dict[str, Any]:
    """What defines a truth's recipe (the settings that change what is trained; a field added since
    enters it only when set, so older truth folders still match)."""
    from ..config import flatten
    from ..training.config import identity_dict

    return {k: v for k, v in flatten(identity_dict(cfg)).items()
            if not any(k == f or k.startswith(f + ".") for f in NOT_IN_RECIPE)}


def check_truth_folder(truth: Path, record: dict[str, Any], space: SearchSpace) -> None:
    """Refuse a truth folder made with another recipe or space; start one otherwise."""
    from ..config import renamed_keys
    from ..training.config import RENAMED_FIELDS

    path = truth / TRUTH_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("space_fingerprint") != space.fingerprint():
            raise ValueError(f"truth folder {truth} was trained on space {saved.get('space')!r} (fingerprint "
                             f"{saved.get('space_fingerprint')}), not {space.name!r} under input profile "
                             f"{space.input_profile.name!r} ({space.fingerprint()}): use another --truth")
        # a truth folder of an older version may name a field by its old name (`RENAMED_FIELDS`)
        recipe = renamed_keys(saved["recipe"], RENAMED_FIELDS, f"{path}", warn=False)
        differing = sorted(k for k in set(recipe) | set(record) if recipe.get(k) != record.get(k))
        if differing:
            raise ValueError(f"truth folder {truth} was trained with another recipe (differing: "
                             f"{', '.join(differing[:8])}); use another --truth or the same settings")
        return
    truth.mkdir(parents=True, exist_ok=True)
    # "profile": the input profile's name, under the key the truth folders have always had
    atomic_write_text(path, json.dumps({"space": space.name, "profile": space.input_profile.name,
                                        "space_fingerprint": space.fingerprint(), "recipe": record}, indent=1))


def run_name(arch: Arch, seed: int) -> str:
    """A stand-alone run's folder in the truth, and its key in `results.json`."""
    return f"{arch.arch_hash}-s{seed}"


def _standalone(recipe: Any, arch: Arch, truth: Path, seed: int) -> tuple[Any, SearchSpace]:
    """The training config of `arch` alone with `seed`, in `<truth>/<arch hash>-s<seed>`, and its space."""
    from ..ray_train import standalone_config

    cfg = dataclasses.replace(recipe, name=run_name(arch, seed), output_dir=str(truth), seed=seed,
                              data=dataclasses.replace(recipe.data, seed=seed))
    return standalone_config(cfg, arch, named=True)


def finished_standalone(recipe: Any, arch: Arch, truth: Path, seed: int) -> Path | None:
    """The final checkpoint of `arch` trained alone with `seed`, if that run has ended (else None)."""
    from ..checkpoint import find_checkpoint

    try:
        return find_checkpoint(_standalone(recipe, arch, truth, seed)[0].experiment_dir, arch.supernet, final=True)
    except ValueError:
        return None  # not trained, or not to the end


def train_standalone(recipe: Any, arch: Arch, truth: Path, seed: int, address: str | None,
                     mlflow_uri: str | None, open_runs: OpenRuns | None = None) -> Path:
    """Train (or resume, or reuse) `arch` alone with `seed`; returns its final checkpoint. `open_runs`:
    the `tracking.OpenRuns` its MLflow run is held in while it trains."""
    from ..checkpoint import find_checkpoint
    from ..ray_train import run_training

    finished = finished_standalone(recipe, arch, truth, seed)
    if finished is not None:
        return finished
    cfg, space = _standalone(recipe, arch, truth, seed)  # run_training resumes from the last epoch
    results = run_training(cfg, address=address, mlflow_uri=mlflow_uri, progress_bar=False, standalone=(arch, space),
                           open_runs=open_runs)
    failed = [r.to_dict() for r in results.values() if not r.ok]
    if failed:
        raise RuntimeError(f"stand-alone training of {arch} (seed {seed}) failed: {failed}")
    return find_checkpoint(cfg.experiment_dir, arch.supernet, final=True)


def read_results(truth: Path) -> dict[str, dict[str, Any]]:
    """The finished runs' scores, by run name (`run_name`): `results.json`, empty where there is none."""
    path = truth / RESULTS_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["runs"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a truth's results file ({error}); expected {{\"runs\": {{...}}}}: move it "
                         "away and rerun (finished runs are scored again from their checkpoints)") from None


def record_result(truth: Path, arch: Arch, seed: int, epochs: int, checkpoint: Path,
                  lock: threading.Lock) -> dict[str, Any]:
    """Score a finished run on the validation split (the ranking's) and the test split (reported only), and
    add it to `results.json` (`lock`: the runs finish in several threads, and each rewrites the file)."""
    result = {"arch": arch.to_dict(), "seed": seed, "epochs": epochs,
              "val_top1": standalone_top1(checkpoint, arch, "val"),
              "test_top1": standalone_top1(checkpoint, arch, "test")}
    with lock:
        runs = read_results(truth)
        runs[run_name(arch, seed)] = result
        atomic_write_text(truth / RESULTS_FILE, json.dumps({"runs": runs}, indent=1) + "\n")
    return result


def train_truth(recipe: Any, runs: Sequence[tuple[Arch, int]], truth: Path, cfg: FidelityConfig,
                log: Callable[[str], None]) -> dict[tuple[str, int], dict[str, Any]]:
    """{(arch hash, seed): its scores in `results.json`} of every run. A run with scores is done; a run
    whose training has ended is scored; the others are trained alone (a killed run resumes from its last
    epoch) and scored, `cfg.parallel` at once on Ray (None: as many as the cluster holds,
    `placement.concurrent_trainings`); each run's CPUs and torch threads come from the placement plan
    that trains that many at once. After a failure no further run starts; the running ones end, then
    the failure is raised (a rerun resumes)."""
    import collections
    import threading

    from .. import adapters, placement
    from ..ray_train import connect_ray, run_in_daemon_threads
    from ..tracking import OpenRuns

    scored = read_results(truth)
    lock = threading.Lock()
    trained: dict[tuple[str, int], dict[str, Any]] = {}
    pending: collections.deque[tuple[Arch, int]] = collections.deque()
    for arch, seed in runs:
        if run_name(arch, seed) in scored:
            trained[(arch.arch_hash, seed)] = scored[run_name(arch, seed)]
        elif (finished := finished_standalone(recipe, arch, truth, seed)) is not None:
            trained[(arch.arch_hash, seed)] = record_result(truth, arch, seed, recipe.train.epochs, finished, lock)
        else:
            pending.append((arch, seed))
    if not pending:
        return trained
    import ray

    started = connect_ray(recipe, cfg.address)
    try:
        cluster, r = adapters.cluster_node_groups(), recipe.ray
        at_once = min(len(pending), cfg.parallel or placement.concurrent_trainings(
            cluster, r.num_workers, r.use_gpu, r.gpus_per_worker, r.cpus_per_worker, r.torch_threads, len(pending)))
        plans = placement.plan_trainers([f"run{i}" for i in range(at_once)], r.num_workers, r.use_gpu,
                                        r.gpus_per_worker, r.cpus_per_worker, r.torch_threads, cluster)
        placement.check_fits(placement.make_plan(cluster, plans), cluster)
        plan = plans["run0"]
        recipe = dataclasses.replace(recipe, ray=dataclasses.replace(
            r, cpus_per_worker=plan.cpus_per_worker, torch_threads=plan.torch_threads))
        log(f"truth: {len(runs) - len(pending)} of {len(runs)} runs trained; {len(pending)} to train, {at_once} at "
            f"once ({plan.workers} worker(s) of {plan.cpus_per_worker:g} CPU, {plan.gpus_per_worker:g} GPU, "
            f"{plan.torch_threads} torch thread(s) each)")
        failed, open_runs = threading.Event(), OpenRuns()

        def trainer() -> None:
            while True:
                with lock:
                    if not pending or failed.is_set():  # after a failure no further run starts
                        return
                    arch, seed = pending.popleft()
                log(f"truth: training {arch} (seed {seed})")
                try:
                    checkpoint = train_standalone(recipe, arch, truth, seed, cfg.address, cfg.mlflow_uri, open_runs)
                    trained[(arch.arch_hash, seed)] = record_result(truth, arch, seed, recipe.train.epochs,
                                                                    checkpoint, lock)
                except BaseException:
                    failed.set()
                    raise

        try:
            run_in_daemon_threads({f"trainer{i}": trainer for i in range(at_once)})
        except KeyboardInterrupt:  # the runs the threads were training: stopped, not running, in MLflow
            open_runs.end_all("KILLED")
            raise
    finally:
        if started:
            ray.shutdown()
    return trained


# ---------------------------------------------------------------------------------------------------
# Scores and the report


def standalone_top1(checkpoint: Path, arch: Arch, split: str = "val") -> float:
    """Top-1 of a stand-alone run with its own BatchNorm statistics on `split` (validation, the truth's
    ranking; "test" only reports)."""
    import torch

    from ..checkpoint import load_supernet
    from ..data import build_loader
    from ..evaluation import evaluate

    supernet, _, config = load_supernet(checkpoint)
    model = supernet.get_active_subnet(arch).eval()
    result = evaluate(model, build_loader(config.data, split, arch.resolution), resolution=arch.resolution,
                      device=torch.device("cpu"))
    return 100.0 * result.correct1 / result.seen


def inherited_top1(checkpoint: Path, archs: Sequence[Arch], calib_batches: int | None,
                   calib_size: int | None = None, calib_seed: int | None = None) -> list[float]:
    """Validation top-1 of each arch with the supernet's weights, BatchNorm recalibrated as a search does,
    on the first `calib_batches` batches of `calib_size` training images (None: all batches; the
    checkpoint's own data.calib_size), drawn by `calib_seed` (None: the subset the search uses)."""
    from ..checkpoint import load_supernet
    from ..search.evaluate import EvalSettings, SubnetEvaluator

    supernet, space, config = load_supernet(checkpoint)
    data = dataclasses.replace(config.data, calib_size=calib_size or config.data.calib_size,
                               calib_seed=config.data.calib_seed if calib_seed is None else calib_seed)
    evaluator = SubnetEvaluator(supernet, space, data, EvalSettings(calib_batches=calib_batches))
    return [float(evaluator.evaluate(arch)["val_top1"]) for arch in archs]


def calibration_noise(draws: Sequence[Sequence[float]], standalone: Sequence[float],
                      in_band: Sequence[bool]) -> dict[str, Any]:
    """How far one supernet's inherited scores move with the BatchNorm calibration subset (`draws`: the
    scores of the same subnets on each subset, the search's first): `tau_between_draws`, the mean Kendall
    tau between two draws (a cap on the supernet's tau, as the truth's seed noise is); `draw_sd`, the
    root-mean-square over subnets of their sd across draws (points); `tau_averaged` and
    `tau_in_band_averaged`, the tau of the scores averaged over draws against the truth (what averaging
    would buy; a search scores on one subset)."""
    import itertools
    import statistics

    from ..stats import kendall_tau

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    pairs = [kendall_tau(a, b) for a, b in itertools.combinations(draws, 2)]
    averaged = [statistics.fmean(scores) for scores in zip(*draws)]
    band = [i for i, inside in enumerate(in_band) if inside]
    return {"calib_draws": len(draws), "inherited_draws": [list(d) for d in draws[1:]],
            "tau_between_draws": finite(statistics.fmean(pairs)) if pairs else None,
            "draw_sd": statistics.fmean(statistics.variance(scores) for scores in zip(*draws)) ** 0.5,
            "tau_averaged": finite(kendall_tau(averaged, standalone)),
            "tau_in_band_averaged": finite(kendall_tau([averaged[i] for i in band], [standalone[i] for i in band]))
            if len(band) >= 3 else None}


def fidelity_stats(inherited: Sequence[float], standalone: Sequence[float], macs: Sequence[float],
                   params: Sequence[float], in_band: Sequence[bool], resamples: int, seed: int) -> dict[str, Any]:
    """The report of one supernet against the truth (module doc, step 4)."""
    from ..stats import kendall_tau, paired_tau_difference, rank_correlation

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    whole = rank_correlation(inherited, standalone, resamples=resamples, seed=seed)
    # does the supernet rank better than counting MACs? on the same subnets and resamples, so the truth's
    # noise, shared by both, does not widen the interval of the difference
    over_macs = paired_tau_difference(inherited, macs, standalone, resamples=resamples, seed=seed)
    band = [i for i, inside in enumerate(in_band) if inside]
    band_stats = (rank_correlation([inherited[i] for i in band], [standalone[i] for i in band], resamples=resamples,
                                   seed=seed) if len(band) >= 3 else None)
    top = min(3, len(standalone))
    by_inherited = sorted(range(len(inherited)), key=lambda i: -inherited[i])
    by_truth = sorted(range(len(standalone)), key=lambda i: -standalone[i])
    return {
        "kendall_tau": whole["kendall_tau"], "tau_low": (whole["kendall_tau_ci"] or [None, None])[0],
        "tau_high": (whole["kendall_tau_ci"] or [None, None])[1], "spearman_rho": whole["spearman_rho"],
        "rho_ci": whole["spearman_rho_ci"],
        "tau_in_band": band_stats["kendall_tau"] if band_stats else None,
        "tau_in_band_ci": band_stats["kendall_tau_ci"] if band_stats else None, "in_band": len(band),
        "tau_macs": finite(kendall_tau(macs, standalone)), "tau_params": finite(kendall_tau(params, standalone)),
        "tau_over_macs": over_macs["difference"],
        "tau_over_macs_ci": None if over_macs["low"] is None else [over_macs["low"], over_macs["high"]],
        "top3_overlap": len(set(by_inherited[:top]) & set(by_truth[:top])),
        "regret": standalone[by_truth[0]] - standalone[by_inherited[0]],
        "inherited_span": max(inherited) - min(inherited),
    }


def truth_ceiling(subnets: Sequence[Mapping[str, Any]], seed_sd: float | None, seed: int = 0) -> dict[str, Any]:
    """`tau_ceiling` (all subnets) and `tau_ceiling_in_band`: the tau a perfect predictor would reach against
    this truth, given its seed noise (`stats.noise_ceiling_tau`): no supernet can be expected above it.
    None without repeats to measure the noise (or under 3 subnets in the band)."""
    from ..stats import noise_ceiling_tau

    def ceiling(values: list[float]) -> float | None:
        return noise_ceiling_tau(values, seed_sd, seed=seed) if seed_sd is not None and len(values) >= 3 else None

    return {"tau_ceiling": ceiling([s["val_top1"] for s in subnets]),
            "tau_ceiling_in_band": ceiling([s["val_top1"] for s in subnets if s.get("in_band")])}


def run(cfg: FidelityConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Draw, train the truth (resumable), score every supernet; returns and writes the report."""
    import statistics

    from ..checkpoint import read_record, space_of
    from ..training.config import config_from_dict

    checkpoints = [Path(c) for c in cfg.checkpoints]
    records = [read_record(c) for c in checkpoints]
    spaces = [space_of(r.meta) for r in records]
    for checkpoint, space in zip(checkpoints[1:], spaces[1:]):
        if space.fingerprint() != spaces[0].fingerprint():
            raise ValueError(f"checkpoint {checkpoint} is supernet {space.name!r} under input profile "
                             f"{space.input_profile.name!r} "
                             f"(fingerprint {space.fingerprint()}), not {spaces[0].name!r} under "
                             f"{spaces[0].input_profile.name!r} ({spaces[0].fingerprint()}): one truth scores supernets "
                             "of one space")
    space, record = spaces[0], records[0]
    num_classes = record.num_classes
    table = None
    if cfg.lut:
        from ..latency import LatencyTable

        table = LatencyTable.load(cfg.lut, space=space)  # refuses a table of another space
    cost = table.predict_latency if table is not None else (lambda a: float(count_params(a, num_classes, space)))
    archs = draw_subnets(space, cfg.subnets, cfg.seed, cost, cfg.band_ms, cfg.in_band, cfg.pool)
    recipe = truth_recipe(config_from_dict(record.config), cfg.epochs, cfg.overrides)
    truth = Path(cfg.truth)
    check_truth_folder(truth, recipe_record(recipe), space)
    # each subnet, and after each of the first `repeat` its second seed: the order the runs start in
    runs = [(arch, seed) for i, arch in enumerate(archs) for seed in (cfg.seed, cfg.seed + 1)[:1 + (i < cfg.repeat)]]
    trained = train_truth(recipe, runs, truth, cfg, log)
    standalone = [trained[(arch.arch_hash, cfg.seed)]["val_top1"] for arch in archs]
    test = [trained[(arch.arch_hash, cfg.seed)]["test_top1"] for arch in archs]
    repeats = [{"arch_hash": arch.arch_hash, "top1": [top1, trained[(arch.arch_hash, cfg.seed + 1)]["val_top1"]],
                "test_top1": [trained[(arch.arch_hash, s)]["test_top1"] for s in (cfg.seed, cfg.seed + 1)]}
               for arch, top1 in zip(archs[:cfg.repeat], standalone)]
    # the truth's own noise: the standard deviation of one run, from pairs of seeds (sd = |a - b| / sqrt 2)
    seed_sd = (statistics.fmean(abs(a - b) ** 2 / 2 for a, b in (r["top1"] for r in repeats)) ** 0.5
               if repeats else None)
    in_band = [cfg.band_ms is not None and cfg.band_ms[0] <= cost(a) <= cfg.band_ms[1] for a in archs]
    macs = [float(count_macs(a, num_classes, space)) for a in archs]
    params = [float(count_params(a, num_classes, space)) for a in archs]
    report: dict[str, Any] = {
        # "profile": the input profile (the report's key, as the truth folder's)
        "space": space.name, "profile": space.input_profile.name, "space_fingerprint": space.fingerprint(),
        "epochs": cfg.epochs, "seed": cfg.seed, "band_ms": list(cfg.band_ms) if cfg.band_ms else None,
        "lut": cfg.lut, "calib_batches": cfg.calib_batches, "calib_size": cfg.calib_size, "standalone": {
            "epochs": cfg.epochs, "seed_sd": seed_sd, "repeats": repeats,
            # test_top1: reported beside the validation accuracy the ranking uses, never used to rank
            "subnets": [{"arch": a.to_dict(), "name": str(a), "val_top1": s, "test_top1": t,
                         "lut_ms": table.predict_latency(a) if table is not None else None, "params": p, "macs": m,
                         "in_band": b} for a, s, t, p, m, b in zip(archs, standalone, test, params, macs, in_band)]},
        "supernets": {}}
    report["standalone"].update(truth_ceiling(report["standalone"]["subnets"], seed_sd, cfg.seed))
    for checkpoint, checkpoint_record in zip(checkpoints, records):
        inherited = inherited_top1(checkpoint, archs, cfg.calib_batches, cfg.calib_size)
        stats = fidelity_stats(inherited, standalone, macs, params, in_band, cfg.resamples, cfg.seed)
        if cfg.calib_draws > 1:  # the same subnets on other calibration subsets: the inherited scores' own noise
            draws = [inherited] + [inherited_top1(checkpoint, archs, cfg.calib_batches, cfg.calib_size, calib_seed=k)
                                   for k in range(1, cfg.calib_draws)]
            stats.update(calibration_noise(draws, standalone, in_band))
        config = checkpoint_record.config
        report["supernets"][str(checkpoint)] = {
            "epochs_done": checkpoint_record.epoch, "sampler": config["train"]["sampler"],
            "inherited": inherited, **stats}
        log(f"{checkpoint}: Kendall tau {_fmt(stats['kendall_tau'])} [{_fmt(stats['tau_low'])}, "
            f"{_fmt(stats['tau_high'])}], in band {_fmt(stats['tau_in_band'])} ({stats['in_band']} subnets), "
            f"MACs baseline {_fmt(stats['tau_macs'])} (the supernet's tau minus it, paired: "
            f"{_fmt(stats['tau_over_macs'])} {_interval(stats['tau_over_macs_ci'])}), top-3 overlap "
            f"{stats['top3_overlap']}/3, regret "
            f"{stats['regret']:.2f} points; inherited span {stats['inherited_span']:.2f} points")
        if cfg.calib_draws > 1:
            log(f"  on {cfg.calib_draws} calibration subsets: the inherited scores move by sd {stats['draw_sd']:.2f} "
                f"points, two subsets order them alike at tau {_fmt(stats['tau_between_draws'])}; averaged over "
                f"the subsets they rank at tau {_fmt(stats['tau_averaged'])} (in band "
                f"{_fmt(stats['tau_in_band_averaged'])})")
    if seed_sd is not None:
        log(f"the truth's own seed noise: sd {seed_sd:.2f} points of validation top-1 ({len(repeats)} pairs); a "
            f"perfect predictor would reach tau {_fmt(report['standalone']['tau_ceiling'])} against it (in band "
            f"{_fmt(report['standalone']['tau_ceiling_in_band'])})")
    atomic_write_text(truth / REPORT_FILE, json.dumps(report, indent=1) + "\n")
    report["mlflow_run_id"] = log_to_mlflow(report, cfg, truth)
    return report


def log_to_mlflow(report: dict[str, Any], cfg: FidelityConfig, truth: Path) -> str:
    """One MLflow run "fidelity" (experiment "<space>-fidelity"): the settings as params, each supernet's
    statistics as metrics `supernet<i>/<name>` (tag `supernet<i>`: its checkpoint), the report as an
    artifact. Tracking URI: --mlflow-uri, $MLFLOW_TRACKING_URI, else sqlite in the truth folder."""
    from ..adapters import default_tracking_uri, mlflow_client, retry_locked
    from ..tracking import experiment_id

    uri = default_tracking_uri(truth, cfg.mlflow_uri)
    client = mlflow_client(uri)
    eid = experiment_id(client, uri, f"{report['space']}-fidelity")
    run = retry_locked(lambda: client.create_run(eid, run_name="fidelity", tags={"truth": str(truth.resolve())}))
    run_id = run.info.run_id
    params = {"subnets": cfg.subnets, "epochs": cfg.epochs, "seed": cfg.seed, "repeat": cfg.repeat,
              "in_band": cfg.in_band, "band_ms": cfg.band_ms, "lut": cfg.lut, "profile": report["profile"]}
    for key, value in params.items():
        client.log_param(run_id, key, "" if value is None else str(value))
    for i, (checkpoint, stats) in enumerate(report["supernets"].items()):
        client.set_tag(run_id, f"supernet{i}", checkpoint)
        for name in ("kendall_tau", "tau_low", "tau_high", "spearman_rho", "tau_in_band", "tau_macs", "tau_params",
                     "tau_over_macs", "top3_overlap", "regret", "inherited_span", "tau_between_draws", "draw_sd",
                     "tau_averaged", "tau_in_band_averaged"):
            if isinstance(stats.get(name), (int, float)):
                client.log_metric(run_id, f"supernet{i}/{name}", float(stats[name]))
    for name in ("seed_sd", "tau_ceiling", "tau_ceiling_in_band"):
        if report["standalone"].get(name) is not None:
            client.log_metric(run_id, f"truth_{name}", float(report["standalone"][name]))
    client.log_artifact(run_id, str(truth / REPORT_FILE))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _interval(bounds: Sequence[float] | None) -> str:
    return "[n/a]" if bounds is None else f"[{bounds[0]:+.2f}, {bounds[1]:+.2f}]"


__all__ = ["NOT_IN_RECIPE", "REPORT_FILE", "RESULTS_FILE", "TRUTH_FILE", "FidelityConfig", "draw_subnets",
           "fidelity_stats", "inherited_top1", "read_results", "run"]
