"""Benchmark: the AutoViT result on CIFAR-10 (issue 13).

One resumable command runs every stage in order, skips what is done, and prints progress with an ETA:

    nohup .venv/bin/python bench/cifar10_result.py > ~/.cache/autovit-ray/bench/cifar10_result.log 2>&1 &

Artifacts live outside the checkout: ``$AUTOVIT_BENCH_DIR`` (default ``~/.cache/autovit-ray/bench``)
``/cifar10_result/``. Run it from a pinned copy of the code (``git worktree add`` at a commit, installed
into its own venv) so that edits in the checkout do not change a run halfway. Stages:

1. ``pilot``: the peer, timm ``mobilevit_xxs``, with each small-input adaptation (``stem1``: stem stride
   1; ``stage1``: stem stride 2, the first stride-2 stage at stride 1 — both end on a 2x2 map at 32 px)
   and each recipe (``deit``: configs/train/cifar10.yaml as is; ``light``: crop + flip + label smoothing,
   no RandAugment, erasing, Mixup or CutMix), trained ``--pilot-epochs`` with a cosine schedule over
   those epochs, scored on the 5k validation split held out of the training images (never the test
   split). The best arm by validation top-1 fixes the recipe and the peer for everything below.
2. ``train``: the XXS supernet through the product's own ``python -m autovit_ray.train`` (one epoch per
   call, so partial results stay comparable) and the chosen peer, interleaved epoch by epoch, 30 epochs
   each, with the winning recipe, the same batch, data path (timm's PIL pipeline) and precision (fp32).

``--stop-after search-inputs`` trains the supernet alone, builds the torch-cpu table and the budgets (from
the peer's architecture), and stops: the inputs of bench/search_strategies.py, regenerated on a machine
where the first result's artifacts are gone without paying for the peer's training first.

The product's own run of this experiment is ``configs/pipeline/cifar10-result.yaml`` (``python -m
autovit_ray.pipeline --config cifar10-result``: the chosen recipe, the torch-cpu table, the search under
1.0x / 0.8x the peer's latency and 1.4x its parameters, the peer trained alike and compared); this driver
keeps what the committed result did beyond it: the pilot, the onnxruntime table and both validations,
and the selection of the searched candidates by latency measured beside the peer.

Bad input: a supernet checkpoint of another supernet, input profile, data split or recipe, and a peer state
of another recipe or adaptation, are refused with one clear error (``Mismatch``); a stage artifact that
cannot be read is redone, not used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import timm
import torch
from common import (
    ROOT,
    SELECTION_CANDIDATES,
    Mismatch,
    bench_dir,
    cifar10_dir,
    code_line,
    environment,
    log,
    measure,
    measured_selection,
    mlflow_env,
    open_record,
    public_path,
    readable_json,
    recipe_fingerprint,
    run_cli,
    save_figure,
    selection_candidates,
    write_json,
)
from torch import nn

import autovit_ray
from autovit_ray.checkpoint import list_checkpoints, read_meta
from autovit_ray.compare import measure_macs
from autovit_ray.data import Loaders, build_loaders
from autovit_ray.evaluation import calibrated_subnet, evaluate
from autovit_ray.io import atomic_path, replace_markdown_section
from autovit_ray.search.config import SearchConfig
from autovit_ray.training.config import TrainConfig, load_config
from autovit_ray.training.loop import seed_everything
from autovit_ray.training.optim import build_optimizer, build_scheduler
from autovit_ray.training.reference import train_epoch

TRAIN_IMAGES = 45_000  # CIFAR-10's 50k training images less the 5k held-out validation split
RESOLUTION = 32
SUPERNET = "xxs"
INPUT_PROFILE = "cifar10"

# Each recipe is a list of overrides of configs/train/cifar10.yaml (the paper's DeiT recipe).
RECIPES: dict[str, tuple[str, ...]] = {
    "deit": (),
    "light": ("data.auto_augment=null", "data.re_prob=0", "data.mixup=0", "data.cutmix=0"),
}


def _stem_stride_1(model: nn.Module) -> None:
    model.stem.conv.stride = (1, 1)


def _first_downsampling_stage_stride_1(model: nn.Module) -> None:
    # timm's mobilevit_xxs: stem /2, stages[0] /1, stages[1] /2 (its first block's 3x3 depthwise conv)
    block = model.stages[1][0]
    block.conv2_kxk.conv.stride = (1, 1)


ADAPTATIONS: dict[str, Callable[[nn.Module], None]] = {
    "stem1": _stem_stride_1,
    "stage1": _first_downsampling_stage_stride_1,
}


def build_peer(adaptation: str, num_classes: int = 10) -> nn.Module:
    """timm mobilevit_xxs with one small-input adaptation; both leave a 2x2 final map at 32 px."""
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"peer adaptation {adaptation!r} is unknown: expected one of {sorted(ADAPTATIONS)}")
    model = timm.create_model("mobilevit_xxs", num_classes=num_classes)
    ADAPTATIONS[adaptation](model)
    return model


def _save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@dataclass(frozen=True)
class Settings:
    """What this run is: every artifact records the part of it that made it."""

    out: Path
    data_dir: str
    epochs: int
    pilot_epochs: int
    threads: int
    lut_references: int = 24
    lut_samples: int = 100
    lut_rounds: int | None = None  # None: the product's default
    lut_quiet_cpus: float = 0.3  # the profiler's quiet gate; negative turns it off (smoke runs)
    population: int = 50
    generations: int = 10
    max_steps: int | None = None  # smoke runs only
    max_eval_batches: int | None = None  # smoke runs only

    def config(self, recipe: str, extra: Sequence[str] = ()) -> TrainConfig:
        if recipe not in RECIPES:
            raise ValueError(f"recipe {recipe!r} is unknown: expected one of {sorted(RECIPES)}")
        # data.augment=timm: this experiment's trainings started on timm's PIL pipeline, before the
        # in-memory path became the default; a change of path halfway would void their resumes.
        return load_config("cifar10", [f"data.data_dir={self.data_dir}", f"train.epochs={self.epochs}",
                                       "data.augment=timm", *RECIPES[recipe], *extra], {"output_dir": str(self.out)})


# ---------------------------------------------------------------------------------------------------
# Plain models (the peer): the supernet's data, optimiser, schedule and loss


def train_peer(settings: Settings, run_dir: Path, adaptation: str, cfg: TrainConfig, until_epoch: int,
               loaders: Loaders, eval_every: int) -> dict[str, Any]:
    """Train the peer to `until_epoch` (resumable from run_dir/state.pt); returns its state (history)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.pt"
    fingerprint = {"adaptation": adaptation, "recipe": recipe_fingerprint(cfg)}
    seed_everything(cfg.seed)
    model = build_peer(adaptation, loaders.num_classes)
    optimizer = build_optimizer(model, replace(cfg.optimizer, freeze_inactive=False))
    steps = min(len(loaders.train), settings.max_steps or len(loaders.train))
    scheduler = build_scheduler(optimizer, cfg.train.epochs, steps, cfg.schedule)
    state: dict[str, Any] = {"epoch": 0, "history": [], "fingerprint": fingerprint}
    if state_path.is_file():
        try:
            saved = torch.load(state_path, weights_only=True)
        except Exception as e:  # a truncated or foreign file: redo the run rather than use it
            log(f"{state_path} is unreadable ({e}); training {run_dir.name} again from scratch")
            saved = None
        if saved is not None:
            if saved.get("fingerprint") != fingerprint:
                raise Mismatch(f"{state_path} was trained with other settings: {saved.get('fingerprint')}; "
                               f"this run needs {fingerprint}. Move it away or pass another --out")
            state = saved
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
    scheduler.step_update(state["epoch"] * steps)  # the schedule is a function of the step: resume it there
    device = torch.device("cpu")
    while state["epoch"] < until_epoch:
        epoch = state["epoch"] + 1
        # no teacher: the peer trains on the labels (the recipe's mixup, smoothing, clipping, schedule)
        record = train_epoch(model, loaders, cfg, epoch, steps, optimizer, scheduler)
        record["val_top1_curve"] = evaluate(model, loaders.val, resolution=RESOLUTION, device=device,
                                            max_batches=cfg.eval.max_batches).top1
        if epoch % eval_every == 0 or epoch == cfg.train.epochs:
            record["val_top1"] = evaluate(model, loaders.val, resolution=RESOLUTION, device=device,
                                          max_batches=settings.max_eval_batches).top1
        log(f"{run_dir.name}: {record}")
        state = {"epoch": epoch, "history": state["history"] + [record], "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "fingerprint": fingerprint}
        _save_atomic(state, state_path)
    return state


# ---------------------------------------------------------------------------------------------------
# Stage 1: the pilot


def pilot_arms() -> list[tuple[str, str]]:
    return [(recipe, adaptation) for adaptation in ADAPTATIONS for recipe in RECIPES]


COMMITTED_RESULTS = ROOT / "bench" / "results" / "cifar10_result.json"


def reuse_committed_pilot(results: dict[str, Any], pilot_epochs: int) -> None:
    """On a machine without this run's artifacts, take the pilot's decision from the committed results
    (bench/results/cifar10_result.json) when it finished there with the same epochs and arms: the
    pilot only chooses the recipe and the peer, and rerunning it costs an hour."""
    try:
        pilot = json.loads(COMMITTED_RESULTS.read_text()).get("pilot")
    except (OSError, json.JSONDecodeError):
        return
    arms = {f"{recipe}/{adaptation}" for recipe, adaptation in pilot_arms()}
    if pilot and pilot.get("epochs") == pilot_epochs and set(pilot.get("arms", {})) == arms and pilot.get("chosen"):
        log(f"pilot: reusing the finished pilot of {COMMITTED_RESULTS} (chose {pilot['chosen']})")
        results["pilot"] = {**pilot, "reused_from": str(COMMITTED_RESULTS)}


def run_pilot(settings: Settings, results: dict[str, Any], save: Callable[[], None]) -> tuple[str, str]:
    """Train every (recipe, adaptation) arm of the peer for pilot_epochs; returns the best by val top-1."""
    pilot = results.setdefault("pilot", {"epochs": settings.pilot_epochs, "arms": {}})
    if pilot["epochs"] != settings.pilot_epochs:
        raise Mismatch(f"the pilot in {settings.out} ran {pilot['epochs']} epochs; this run asks for "
                       f"{settings.pilot_epochs}. Pass --pilot-epochs {pilot['epochs']} or another --out")
    extra = (f"train.epochs={settings.pilot_epochs}", "schedule.warmup_epochs=1")
    for n, (recipe, adaptation) in enumerate(pilot_arms()):
        key = f"{recipe}/{adaptation}"
        if key in pilot["arms"]:
            continue
        log(f"pilot arm {n + 1}/{len(pilot_arms())}: {key}")
        cfg = settings.config(recipe, extra)
        loaders = build_loaders(cfg.data)
        state = train_peer(settings, settings.out / "pilot" / f"{recipe}-{adaptation}", adaptation, cfg,
                           settings.pilot_epochs, loaders, eval_every=settings.pilot_epochs)
        history = state["history"]
        pilot["arms"][key] = {"recipe": recipe, "adaptation": adaptation, "val_top1": history[-1]["val_top1"],
                              "curve": [h["val_top1_curve"] for h in history],
                              "train_images_per_s": statistics.median(h["train_images_per_s"] for h in history)}
        save()
    best = max(pilot["arms"].values(), key=lambda arm: arm["val_top1"])
    pilot["chosen"] = {"recipe": best["recipe"], "adaptation": best["adaptation"]}
    save()
    return best["recipe"], best["adaptation"]


# ---------------------------------------------------------------------------------------------------
# Stage 2: the supernet (the product's CLI) and the peer, interleaved


SUPERNET_RUN = "cifar10-xxs"
PEER_RUN = "peer"


def supernet_epochs_done(settings: Settings, cfg: TrainConfig) -> int:
    found = list_checkpoints(settings.out / SUPERNET_RUN, SUPERNET)
    if not found:
        return 0
    meta = read_meta(found[-1])
    check_supernet_meta(meta, cfg, found[-1])
    return int(meta["epoch"])


def check_supernet_meta(meta: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint of another supernet, input profile, data split or recipe."""
    saved = meta["config"]
    wanted = cfg.to_dict()
    problems = []
    space = meta.get("space", {})
    if (space.get("name"), space.get("profile")) != (SUPERNET, INPUT_PROFILE):
        problems.append(f"supernet {space.get('name')!r} / input profile {space.get('profile')!r} "
                        f"(expected {SUPERNET!r} / {INPUT_PROFILE!r})")
    if recipe_fingerprint(config_from_saved(saved)) != recipe_fingerprint(cfg):
        problems.append("another recipe or data split: "
                        f"{recipe_fingerprint(config_from_saved(saved))} vs {recipe_fingerprint(cfg)}")
    if saved["train"].get("sampler") != wanted["train"]["sampler"]:
        problems.append(f"sampler {saved['train'].get('sampler')!r}")
    distillation = ("kind", "inplace", "alpha", "tau", "teacher")
    if [saved["kd"].get(k) for k in distillation] != [wanted["kd"][k] for k in distillation]:
        problems.append(f"distillation {saved['kd']} (expected {wanted['kd']})")
    if problems:
        raise Mismatch(f"checkpoint {path} does not belong to this run: {'; '.join(problems)}. "
                       "Move the experiment away or pass another --out")


def config_from_saved(saved: dict[str, Any]) -> TrainConfig:
    from autovit_ray.training.config import config_from_dict

    return config_from_dict(saved)


def advance_supernet(settings: Settings, recipe: str, epoch: int, run: str = SUPERNET_RUN,
                     extra: Sequence[str] = (), arch: str | None = None) -> None:
    """Train experiment `run` to `epoch` through the product's CLI (`python -m autovit_ray.train`), the
    recipe's overrides plus `extra`; `arch`: a file of one arch to train stand-alone (`--arch`)."""
    cmd = ["autovit_ray.train", "--config", "cifar10", "--name", run,
           "--supernets", SUPERNET, "--output-dir", str(settings.out)]
    if arch is not None:
        cmd += ["--arch", arch]
    # data.augment=timm: every training of this experiment runs on timm's PIL pipeline (the first
    # started there, before the in-memory path became the default).
    overrides = [f"data.data_dir={settings.data_dir}", f"train.epochs={settings.epochs}", "data.augment=timm",
                 f"train.stop_after_epoch={epoch}", "train.progress_bar=false", f"ray.torch_threads={settings.threads}",
                 *RECIPES[recipe], *extra]
    if settings.max_steps:
        overrides += [f"train.max_steps_per_epoch={settings.max_steps}", "eval.max_batches=1"]
    for item in overrides:
        cmd += ["--set", item]
    run_cli(cmd, settings.out / f"{run}.log", mlflow_env(settings.out))


def run_training(settings: Settings, recipe: str, adaptation: str, results: dict[str, Any],
                 save: Callable[[], None], chunk: int, with_peer: bool = True) -> None:
    """The supernet and (with_peer) the peer, `chunk` epochs each in turn; without the peer, the
    supernet alone (what the searches need), the peer then trains when a later run asks for it."""
    cfg = settings.config(recipe)
    loaders = build_loaders(cfg.data)
    train = results.setdefault("train", {"recipe": recipe, "adaptation": adaptation, "supernet": {}})
    if (train["recipe"], train["adaptation"]) != (recipe, adaptation):
        raise Mismatch(f"the training stage in {settings.out} used recipe {train['recipe']!r} and peer "
                       f"{train['adaptation']!r}; the pilot now chooses {recipe!r} / {adaptation!r}")
    # Both sides advance `chunk` epochs in turn: partial results stay comparable, and the supernet's
    # CLI (a Ray start per call) is called epochs / chunk times.
    start, epochs_run = time.time(), 0
    for until in range(chunk, settings.epochs + chunk, chunk):
        until = min(until, settings.epochs)
        done_before = supernet_epochs_done(settings, cfg)
        if done_before < until:
            t0 = time.time()
            log(f"{SUPERNET_RUN}: training epochs {done_before + 1}-{until}")
            advance_supernet(settings, recipe, until)
            train["supernet_wall_s"] = train.get("supernet_wall_s", 0.0) + time.time() - t0
            epochs_run += until - done_before
        for path in list_checkpoints(settings.out / SUPERNET_RUN, SUPERNET):
            meta = read_meta(path)
            train["supernet"][str(meta["epoch"])] = meta.get("metrics", {})
        save()
        if with_peer:
            peer_before = len(train.get("peer", []))
            state = train_peer(settings, settings.out / PEER_RUN, adaptation, cfg, until, loaders, eval_every=5)
            train["peer"] = state["history"]
            epochs_run += max(0, until - peer_before)
            save()
        left = (2 * settings.epochs - len(train["peer"]) if with_peer else settings.epochs) - until
        eta = f"{left * (time.time() - start) / epochs_run / 3600:.1f} h" if epochs_run else "?"
        log(f"train: {until}/{settings.epochs} epochs {'on both sides' if with_peer else 'of the supernet'}; ETA of the training stage {eta}")


# ---------------------------------------------------------------------------------------------------
# Stage 3: latency tables at 32 px (the product's `profile build` / `profile validate`)


LUT_BACKENDS = ("torch-cpu", "onnxruntime")
SEARCH_BACKEND = "torch-cpu"  # the tables' default; onnxruntime latencies are reported beside it


def lut_flags(settings: Settings) -> list[str]:
    rounds = ["--rounds", str(settings.lut_rounds)] if settings.lut_rounds else []
    return [*rounds, "--quiet-cpus", str(settings.lut_quiet_cpus)]


def lut_path(settings: Settings, backend: str) -> Path:
    return settings.out / "luts" / f"{SUPERNET}_{RESOLUTION}_{backend}.parquet"


def load_lut(path: Path, backend: str) -> Any:
    """The table at `path` for the cifar10 XXS space and `backend`; None when the file is corrupt (it
    is then rebuilt); Mismatch when it is a readable table of another space, input profile or backend."""
    from autovit_ray.latency import LatencyTable
    from autovit_ray.space import load_space

    try:
        LatencyTable.load(path)
    except ValueError as e:
        log(f"{path} is unreadable ({e}); building it again")
        return None
    try:
        return LatencyTable.load(path, space=load_space(SUPERNET, input_profile=INPUT_PROFILE), backend=backend,
                                 resolutions=[RESOLUTION])
    except ValueError as e:
        raise Mismatch(f"{path} is not a {backend} table of the {SUPERNET}/{INPUT_PROFILE} space at "
                       f"{RESOLUTION} px: {e}") from None


def run_luts(settings: Settings, results: dict[str, Any], save: Callable[[], None],
             backends: Sequence[str] = LUT_BACKENDS, validate: bool = True) -> dict[str, Any]:
    """Build (and with `validate`, validate) a table per backend; a backend enters `luts` once validated."""
    luts = results.setdefault("luts", {})
    for backend in backends:
        path = lut_path(settings, backend)
        table = load_lut(path, backend) if path.is_file() else None
        if table is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            log(f"LUT: building the {backend} table at {RESOLUTION} px")
            run_cli(["autovit_ray.profile", "build", "--supernet", SUPERNET, "--input-profile", INPUT_PROFILE,
                     "--backend", backend, "--resolution", str(RESOLUTION), "--num-classes", "10",
                     "--references", str(settings.lut_references), "--out", str(path), *lut_flags(settings)],
                    settings.out / "luts.log", mlflow_env(settings.out))
            table = load_lut(path, backend)
            luts.pop(backend, None)
        report_dir = path.with_name(f"{path.stem}_validation")
        if validate and (backend not in luts or not (report_dir / "validation.json").is_file()):
            log(f"LUT: validating the {backend} table on {settings.lut_samples} fresh subnets (two passes)")
            run_cli(["autovit_ray.profile", "validate", "--lut", str(path), "--supernet", SUPERNET,
                     "--input-profile", INPUT_PROFILE, "--samples", str(settings.lut_samples), "--seed", "1",
                     "--out", str(report_dir), *lut_flags(settings)], settings.out / "luts.log", mlflow_env(settings.out))
            report = json.loads((report_dir / "validation.json").read_text())
            luts[backend] = {"path": public_path(path), "method": table.method, "metadata": table.metadata,
                             "validation": {k: v for k, v in report.items() if k != "rows"},
                             "validation_png": public_path(report_dir / "validation.png")}
            save()
    return luts


# ---------------------------------------------------------------------------------------------------
# Measurement: batch 1, 1 thread, rounds interleaved in random order (common.measure)


def load_peer(settings: Settings, adaptation: str) -> nn.Module:
    state = torch.load(settings.out / PEER_RUN / "state.pt", map_location="cpu", weights_only=True)
    model = build_peer(adaptation)
    model.load_state_dict(state["model"])
    return model.eval()


def final_supernet(settings: Settings, cfg: TrainConfig, run: str = SUPERNET_RUN) -> Path:
    from autovit_ray.checkpoint import find_checkpoint

    path = find_checkpoint(settings.out / run, SUPERNET, final=True)
    check_supernet_meta(read_meta(path), cfg, path)
    return path


# ---------------------------------------------------------------------------------------------------
# Stage 4: budgets relative to the peer's measured latency


LATENCY_FACTORS = (1.0, 0.8)
PARAMS_FACTOR = 1.4


def run_budgets(settings: Settings, adaptation: str, results: dict[str, Any], save: Callable[[], None]) -> dict:
    """The peer's latency in the search table's units: the peer and 12 random subnets measured with the
    table's own backend settings in one interleaved run; the subnets' median LUT/measured ratio (the
    machine's level against the table's build) converts the peer's time into table milliseconds. The
    peer is measured untrained: its latency and parameter count depend on its architecture only, so
    the budgets do not wait for its training."""
    if "budgets" in results:
        return results["budgets"]
    import random

    from autovit_ray.models import create_subnet
    from autovit_ray.search.algorithms import Budget, CostModel
    from autovit_ray.space import load_space

    space = load_space(SUPERNET, input_profile=INPUT_PROFILE)
    table = load_lut(lut_path(settings, SEARCH_BACKEND), SEARCH_BACKEND)
    rng = random.Random(0)
    references = [space.sample(rng) for _ in range(12)]
    peer = build_peer(adaptation).eval()
    log("budgets: measuring the peer beside 12 random subnets (torch-cpu, 1 thread, thread clock)")
    stats = measure([peer, *(create_subnet(a, 10, space) for a in references)], SEARCH_BACKEND, "thread_cpu",
                    rounds=30, seed=1)
    level = statistics.median(table.predict_latency(a) / s["median_ms"] for a, s in zip(references, stats[1:]))
    peer_params = sum(p.numel() for p in peer.parameters())
    peer_lut_ms = stats[0]["median_ms"] * level
    budgets: dict[str, Any] = {"peer_params": peer_params, "peer_measured_ms": stats[0], "level": level,
                               "peer_lut_ms": peer_lut_ms, "params_budget": PARAMS_FACTOR * peer_params,
                               "by_factor": {}}
    sample_rng = random.Random(2)
    randoms = [space.sample(sample_rng) for _ in range(10_000)]
    for factor in LATENCY_FACTORS:
        costs = CostModel(space, Budget(PARAMS_FACTOR * peer_params, factor * peer_lut_ms), table.predict_latency,
                          10)
        budgets["by_factor"][str(factor)] = {"latency_budget_ms": factor * peer_lut_ms,
                                             "random_share_fitting": sum(map(costs.fits, randoms)) / len(randoms)}
    log(f"budgets: {budgets}")
    results["budgets"] = budgets
    save()
    return budgets


# ---------------------------------------------------------------------------------------------------
# Stage 5: the searches (the product's `python -m autovit_ray.search`)


def search_name(factor: float) -> str:
    return f"c2f-{factor:.1f}x"


def search(settings: Settings, checkpoint: Path, name: str, latency_budget_ms: float,
           params_budget: float) -> Path:
    """One coarse-to-fine search of the product (`python -m autovit_ray.search`) under the budgets,
    selecting on the validation split; returns its results.json."""
    log(f"search {name}: latency <= {latency_budget_ms:.3f} LUT ms, params <= {params_budget:,.0f}")
    config = SearchConfig(name=name, checkpoint=str(checkpoint), output_dir=str(settings.out),
                          lut=str(lut_path(settings, SEARCH_BACKEND)), params_budget=params_budget,
                          latency_budget_ms=latency_budget_ms, strategy="coarse-to-fine",
                          population=settings.population, generations=settings.generations, parents=10,
                          evaluators=2, top_k=SELECTION_CANDIDATES, export_formats=("onnx",), seed=0)
    run_cli(["autovit_ray.search", *config.to_argv()], settings.out / f"search-{name}.log", mlflow_env(settings.out))
    return settings.out / "search" / name / "results.json"


def run_searches(settings: Settings, checkpoint: Path, budgets: dict[str, Any], results: dict[str, Any],
                 save: Callable[[], None]) -> None:
    searches = results.setdefault("searches", {})
    for factor in LATENCY_FACTORS:
        name = search_name(factor)
        path = settings.out / "search" / name / "results.json"
        if name in searches and readable_json(path):
            continue
        start = time.time()
        search(settings, checkpoint, name, budgets["by_factor"][str(factor)]["latency_budget_ms"],
               budgets["params_budget"])
        searches[name] = {"factor": factor, "wall_s": time.time() - start, "results": public_path(path)}
        save()


# ---------------------------------------------------------------------------------------------------
# Stage 6: selection by measured latency, then the headline measurements


def subnet_of(checkpoint: Path, arch: Any, loaders: Loaders) -> nn.Module:
    from autovit_ray.checkpoint import load_supernet

    supernet, _, _ = load_supernet(checkpoint)
    model, _ = calibrated_subnet(supernet, arch, loaders.calib, with_reference=True)  # as the search exports it
    return model


def select_by_measured_latency(settings: Settings, checkpoint: Path, adaptation: str, search_results: Path,
                               factor: float, loaders: Loaders) -> dict[str, Any]:
    """The rule fixed before looking: the SELECTION_CANDIDATES best by validation top-1 that fit the LUT
    budget are measured beside the peer (torch-cpu, batch 1, 1 thread, wall clock, interleaved); the
    chosen model is the best by validation top-1 whose measured latency meets factor x the peer's."""
    from autovit_ray.space import Arch

    candidates = selection_candidates(json.loads(search_results.read_text())["best"])
    models = [subnet_of(checkpoint, Arch.from_dict(c["arch"]), loaders) for c in candidates]
    log(f"selection {search_results.parent.name}: measuring {len(models)} candidates beside the peer")
    stats = measure([load_peer(settings, adaptation), *models], "torch-cpu", "wall", rounds=40, seed=3)
    selection = measured_selection(candidates, stats, factor)
    chosen = next((r["name"] for r in selection["candidates"] if r["meets"]), None)
    log(f"selection {search_results.parent.name}: chosen {chosen}")
    return selection


def run_selection(settings: Settings, checkpoint: Path, adaptation: str, results: dict[str, Any],
                  save: Callable[[], None]) -> None:
    selection = results.setdefault("selection", {})
    cfg = config_from_saved(read_meta(checkpoint)["config"])
    loaders = build_loaders(cfg.data)
    for factor in LATENCY_FACTORS:
        name = search_name(factor)
        if name not in selection:
            selection[name] = select_by_measured_latency(
                settings, checkpoint, adaptation, settings.out / "search" / name / "results.json", factor, loaders)
            save()


def bootstrap_difference(a: Sequence[bool], b: Sequence[bool], resamples: int = 10_000,
                         seed: int = 0) -> dict[str, Any]:
    """Paired difference of top-1 (a - b, points) on the same images with its 95% bootstrap interval,
    the discordant counts and McNemar's p (`autovit_ray.stats.paired_difference`)."""
    from autovit_ray.stats import paired_difference

    return paired_difference(a, b, resamples=resamples, seed=seed)


def run_headline(settings: Settings, checkpoint: Path, adaptation: str, results: dict[str, Any],
                 save: Callable[[], None]) -> None:
    """Full val / test top-1, params, MACs, measured latency on both runtimes for the peer, each chosen
    subnet, the smallest and the largest subnet; paired test differences against the peer."""
    if "headline" in results:
        return
    from autovit_ray.latency import LatencyTable
    from autovit_ray.plan import count_macs
    from autovit_ray.space import Arch, load_space

    space = load_space(SUPERNET, input_profile=INPUT_PROFILE)
    cfg = config_from_saved(read_meta(checkpoint)["config"])
    loaders = build_loaders(cfg.data)
    rows: dict[str, dict[str, Any]] = {"peer": {"label": f"timm mobilevit_xxs ({adaptation})"}}
    models: dict[str, nn.Module] = {"peer": load_peer(settings, adaptation)}
    archs: dict[str, Any] = {"smallest": space.smallest(), "largest": space.largest()}
    for factor in LATENCY_FACTORS:
        chosen = results["selection"][search_name(factor)]["chosen"]
        if chosen is not None:
            archs[f"chosen {factor:.1f}x"] = Arch.from_dict(chosen)
    for key, arch in archs.items():
        models[key] = subnet_of(checkpoint, arch, loaders)
        rows[key] = {"label": key, "arch": str(arch), "macs": count_macs(arch, 10, space)}
        for backend in LUT_BACKENDS:
            table = LatencyTable.load(lut_path(settings, backend), space=space, backend=backend)
            rows[key][f"lut_ms_{backend}"] = table.predict_latency(arch)
    rows["peer"]["macs"] = measure_macs(models["peer"], RESOLUTION)
    correct: dict[str, dict[str, tuple[bool, ...]]] = {}
    for key, model in models.items():
        rows[key]["params"] = sum(p.numel() for p in model.parameters())
        correct[key] = {split: evaluate(model, getattr(loaders, split), per_image=True).correct_per_image
                        for split in ("val", "test")}
        for split in ("val", "test"):
            rows[key][f"{split}_top1"] = 100.0 * sum(correct[key][split]) / len(correct[key][split])
        log(f"headline: {key} {rows[key]}")
    keys = list(models)
    for backend in LUT_BACKENDS:
        log(f"headline: measuring {len(keys)} models on {backend} (wall clock, interleaved)")
        stats = measure([models[k] for k in keys], backend, "wall", rounds=40, seed=4)
        for key, s in zip(keys, stats):
            rows[key][f"measured_{backend}"] = s
            rows[key][f"ratio_{backend}"] = s["median_ms"] / stats[0]["median_ms"]
    for key in keys[1:]:
        rows[key]["test_vs_peer"] = bootstrap_difference(correct[key]["test"], correct["peer"]["test"])
    results["headline"] = rows
    save()


# ---------------------------------------------------------------------------------------------------
# Report: BENCHMARKS.md section, bench/results/cifar10_result.json, bench/results/cifar10_result.png


SECTION = "## The AutoViT result on CIFAR-10 (issue 13)"
COMMAND = "nohup .venv/bin/python bench/cifar10_result.py > ~/.cache/autovit-ray/bench/cifar10_result.log 2>&1 &"


def _f(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _lat(stats: dict[str, float] | None) -> str:
    if not stats:
        return "–"
    return f"{stats['median_ms']:.2f} ({stats['p10_ms']:.2f}–{stats['p90_ms']:.2f})"


def follow_up_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments of every driver that builds on this result's artifacts (bench/cifar10_beyond.py,
    bench/rank_fidelity.py); each adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="the first result's artifacts (default: "
                                                               "$AUTOVIT_BENCH_DIR/cifar10_result)")
    parser.add_argument("--data-dir", default=cifar10_dir())
    parser.add_argument("--epochs", type=int, default=30, help="the supernets' epochs (their checkpoints' check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="smoke runs: steps per epoch")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--benchmarks-file", type=Path, default=ROOT / "BENCHMARKS.md")
    return parser


def worker_code(out: Path, runs: Sequence[str]) -> dict[str, Any]:
    """{run: the autovit_ray package its training worker imported} from each run's train summary."""
    found = {}
    for run in runs:
        summary = out / run / "train_summary.json"
        if summary.is_file():
            code = json.loads(summary.read_text()).get(SUPERNET, {}).get("worker", {}).get("code")
            found[run] = public_path(code) if code else code
    return found


def provenance(first: dict[str, Any], out: Path, runs: Sequence[str]) -> dict[str, Any]:
    """The fields a follow-up benchmark's results JSON shares with the first result's: environment,
    training workers' code, recipe, precision, data path, seed, time."""
    recipe = first["train"]["recipe"]
    return {"environment": environment(), "training_worker_code": worker_code(out, runs),
            "recipe": {"name": recipe, "overrides": list(RECIPES[recipe])},
            "peer_adaptation": first["train"]["adaptation"], "precision": "fp32",
            "data_path": "timm PIL pipeline per image (data.augment timm, num_workers 0)", "seed": 0,
            "updated": time.strftime("%Y-%m-%d %H:%M")}


# Planning figures where nothing is measured yet (2 quiet cores, issue 12's table):
# the supernet's mean training speed over uniformly sampled subnets, the peer's, and the stages
# after training (LUT builds + validations, two 500-evaluation searches, measurements).
PLANNED_IMAGES_PER_S = {"supernet": 330.0, "peer": 250.0}
PLANNED_HOURS_AFTER_TRAINING = {"latency tables": 0.5, "searches": 1.5, "selection + headline": 0.3}


def compute_plan(results: dict[str, Any], epochs: int) -> list[str]:
    """CPU-hours per stage: measured where the stage ran (median img/s of its epochs), else planned."""
    rows: list[tuple[str, float, str]] = []
    pilot = results.get("pilot", {"epochs": 6, "arms": {}})
    for recipe, adaptation in pilot_arms():
        arm = pilot["arms"].get(f"{recipe}/{adaptation}")
        speed, how = (arm["train_images_per_s"], "measured") if arm else (PLANNED_IMAGES_PER_S["peer"], "planned")
        rows.append((f"pilot {recipe}/{adaptation}, {pilot['epochs']} epochs", pilot["epochs"] * TRAIN_IMAGES / speed / 3600,
                     f"{how}, {speed:.0f} img/s"))
    train = results.get("train", {})
    sup = [m["train_images_per_s"] for m in train.get("supernet", {}).values() if m.get("train_images_per_s")]
    peer = [h["train_images_per_s"] for h in train.get("peer", [])]
    for name, measured in (("supernet", sup), ("peer", peer)):
        speed = statistics.median(measured) if measured else PLANNED_IMAGES_PER_S[name]
        how = f"measured over {len(measured)} epochs" if measured else "planned"
        rows.append((f"{name}, {epochs} epochs", epochs * TRAIN_IMAGES / speed / 3600, f"{how}, {speed:.0f} img/s"))
    rows += [(name, hours, "planned") for name, hours in PLANNED_HOURS_AFTER_TRAINING.items()]
    lines = ["**Compute plan** (hours of the 2-core machine; training time only, evaluation on top):", "",
             "| stage | hours | from |", "|---|---|---|"]
    lines += [f"| {name} | {hours:.2f} | {how} |" for name, hours, how in rows]
    lines += [f"| **total** | **{sum(h for _, h, _ in rows):.1f}** | |", "",
              "Measured img/s are wall-clock over whole epochs: an epoch during which the run was paused "
              "(`kill -STOP`, for the test suites) or shared the cores reads low; the medians damp that.", ""]
    return lines


def report_sections(results: dict[str, Any], epochs: int) -> list[str]:
    lines = [SECTION, "",
             f"Command (one resumable command, every stage in order; rerun it to continue): `{COMMAND}`, run "
             "from a pinned copy of the code (`git worktree add` at a commit, own venv); artifacts in "
             "`$AUTOVIT_BENCH_DIR/cifar10_result` (default `~/.cache/autovit-ray/bench`). This section, "
             "`bench/results/cifar10_result.json` and the plot are rewritten from them by "
             "`.venv/bin/python bench/cifar10_result.py --report-only`. CIFAR-10 at 32 px, 45k training / 5k "
             "validation images held out of the training set (split_seed 0; selection uses only these), "
             "the official 10k test set reported only; data path: timm's PIL pipeline per image "
             "(`data.augment: timm`, `num_workers: 0`), fp32, batch 128, 2 threads, seed 0 for both sides.",
             "", code_line(results), ""]
    lines += compute_plan(results, epochs)
    pilot = results.get("pilot")
    if pilot:
        lines += [f"**Pilot** (the peer, {pilot['epochs']} epochs each, cosine over those epochs with 1 warm-up "
                  "epoch, full 5k validation split; the best arm fixes the recipe and the peer):", "",
                  "| recipe | peer adaptation | val top-1 (%) | val curve per epoch (1,280 images) | img/s |",
                  "|---|---|---|---|---|"]
        for arm in pilot["arms"].values():
            curve = " / ".join(f"{v:.0f}" for v in arm["curve"])
            lines.append(f"| {arm['recipe']} | {arm['adaptation']} | {arm['val_top1']:.2f} | {curve} | "
                         f"{arm['train_images_per_s']:.0f} |")
        missing = len(pilot_arms()) - len(pilot["arms"])
        chosen = pilot.get("chosen")
        lines += ["", f"Chosen: recipe **{chosen['recipe']}**, peer **{chosen['adaptation']}**." if chosen and
                  not missing else f"Pilot in progress: {missing} arm(s) left.", ""]
        lines += ["Recipes: `deit` is configs/train/cifar10.yaml as is (RandAugment m9, random erasing 0.25, "
                  "Mixup 0.8 / CutMix 1.0, label smoothing 0.1); `light` turns RandAugment, erasing, Mixup and "
                  "CutMix off (random-resized crop with scale (0.35, 1), flip, label smoothing 0.1). Both use "
                  "AdamW lr 1e-3, wd 0.05, batch 128. Adaptations of timm `mobilevit_xxs` for 32 px: "
                  "`stem1` = stem stride 1 (like our `cifar10` profile); `stage1` = stem stride 2, the first "
                  "stride-2 stage (timm `stages[1]`) at stride 1. Both end on a 2x2 map.", ""]
    train = results.get("train")
    if train:
        sup = train.get("supernet", {})
        peer = train.get("peer", [])
        done_s = max((int(e) for e in sup), default=0)
        lines += [f"**Training** (recipe {train['recipe']}, peer {train['adaptation']}; {epochs} epochs each): "
                  f"XXS supernet {done_s}/{epochs} epochs, peer {len(peer)}/{epochs}"
                  + (" — in progress, numbers partial." if min(done_s, len(peer)) < epochs else "."), "",
                  "| epoch | supernet largest val (1,280 img) | supernet smallest val | peer val (1,280 img) | "
                  "supernet img/s | peer img/s |", "|---|---|---|---|---|---|"]
        for e in range(1, max(done_s, len(peer)) + 1):
            m = sup.get(str(e), {})
            p = peer[e - 1] if e <= len(peer) else {}
            lines.append(f"| {e} | {_f(m.get('val_top1_largest'))} | {_f(m.get('val_top1_smallest'))} | "
                         f"{_f(p.get('val_top1_curve'))} | {_f(m.get('train_images_per_s'), 0)} | "
                         f"{_f(p.get('train_images_per_s'), 0)} |")
        lines.append("")
    luts = results.get("luts", {})
    if luts:
        samples = next(iter(luts.values()))["validation"].get("samples")
        lines += ["**Latency tables** at 32 px (`python -m autovit_ray.profile build` / `validate`, 1 thread, "
                  f"thread clock; validation on {samples} fresh subnets, two passes):", "",
                  "| backend | MAPE (%) | within ±5 % | within ±10 % | Kendall τ | retest MAPE (%) |",
                  "|---|---|---|---|---|---|"]
        for backend, entry in luts.items():
            v = entry["validation"]
            p, r = v.get("predictor", {}), v.get("retest", {})
            lines.append(f"| {backend} | {_f(p.get('mape'), 2)} | {_f(p.get('within_5'), 2)} | "
                         f"{_f(p.get('within_10'), 2)} | {_f(p.get('kendall_tau'), 3)} | {_f(r.get('mape'), 2)} |")
        lines.append("")
    budgets = results.get("budgets")
    if budgets:
        lines += [f"**Budgets**: the peer has {budgets['peer_params']:,} parameters (budget ×{PARAMS_FACTOR}: "
                  f"{budgets['params_budget']:,.0f}) and measures {budgets['peer_measured_ms']['median_ms']:.3f} ms "
                  f"on torch-cpu (1 thread, thread clock), {budgets['peer_lut_ms']:.3f} ms in the table's units "
                  f"(level {budgets['level']:.3f} from 12 random subnets measured beside it)."]
        for factor, b in budgets["by_factor"].items():
            lines.append(f"- ×{factor}: latency ≤ {b['latency_budget_ms']:.3f} LUT ms; "
                         f"{100 * b['random_share_fitting']:.1f} % of 10,000 random archs fit both budgets.")
        lines.append("")
    selection = results.get("selection", {})
    for name, sel in selection.items():
        lines += [f"**Selection, {name}** (the {SELECTION_CANDIDATES} best by validation top-1 measured beside "
                  f"the peer, torch-cpu wall clock, 1 thread; peer {_lat(sel['peer_measured'])} ms, limit "
                  f"{sel['limit_ms']:.3f} ms):", "", "| val top-1 | LUT ms | measured ms (p10–p90) | meets | arch |",
                  "|---|---|---|---|---|"]
        for row in sel["candidates"]:
            lines.append(f"| {row['val_top1']:.2f} | {_f(row['lut_ms'], 3)} | {_lat(row['measured'])} | "
                         f"{'yes' if row['meets'] else 'no'} | `{row['name']}` |")
        lines.append("")
    headline = results.get("headline")
    if headline:
        lines += ["**Headline** (full 5k validation and 10k test sets; latency batch 1, 1 thread, wall clock, "
                  "40 interleaved rounds, median with p10–p90; Δ test = paired difference to the peer on the "
                  "same 10k images with a 95 % bootstrap interval):", "",
                  "| model | val top-1 | test top-1 | Δ test vs peer (pp) | params | MMACs | torch-cpu ms | "
                  "× peer | onnxruntime ms | × peer | LUT ms (torch-cpu) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in headline.values():
            d = row.get("test_vs_peer")
            delta = f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" if d else "–"
            lines.append(f"| {row['label']} | {row['val_top1']:.2f} | {row['test_top1']:.2f} | {delta} | "
                         f"{row['params'] / 1e6:.3f} M | {row['macs'] / 1e6:.1f} | "
                         f"{_lat(row.get('measured_torch-cpu'))} | {_f(row.get('ratio_torch-cpu'), 2)} | "
                         f"{_lat(row.get('measured_onnxruntime'))} | {_f(row.get('ratio_onnxruntime'), 2)} | "
                         f"{_f(row.get('lut_ms_torch-cpu'), 3)} |")
        lines += ["", "![test top-1 vs measured latency](bench/results/cifar10_result.png)", "",
                  reading(headline), ""]
    return lines


def verdict(d: dict[str, Any], better: str = "beats", worse: str = "loses to") -> str:
    """A paired difference's 95 % interval in words: above zero, below zero, or straddling it."""
    return better if d["low"] > 0 else worse if d["high"] < 0 else "is not distinguishable from"


def reading(headline: dict[str, Any]) -> str:
    """The outcome in words, from the headline's paired intervals (written from the numbers, so a
    rerun with other numbers reads them as they are)."""
    parts = []
    for factor in LATENCY_FACTORS:
        row = headline.get(f"chosen {factor:.1f}x")
        if not row or not row.get("test_vs_peer"):
            parts.append(f"at ≤ {factor:.1f}× the peer's latency no subnet was chosen")
            continue
        d = row["test_vs_peer"]
        parts.append(f"at ≤ {factor:.1f}× the peer's latency the chosen subnet {verdict(d)} the peer: "
                     f"{d['difference']:+.2f} pp test top-1 [{d['low']:+.2f}, {d['high']:+.2f}], at "
                     f"{row['ratio_torch-cpu']:.2f}× its measured torch-cpu latency"
                     + (" (it met the budget in the selection's interleaved measurement; the two measurements "
                        "differ by a few %, within the machine's noise)" if row["ratio_torch-cpu"] > factor else ""))
    return ("**Reading.** Without distillation, " + "; ".join(parts) + ". The intervals are paired bootstraps "
            "over the same 10k test images; each side is one training seed, so the seed-to-seed spread of a "
            "30-epoch training comes on top of them. The paper's own supernet without distillation also loses "
            "to MobileViT-XXS (its Table 4: 64.6 vs 69.0 % on ImageNet); distillation is measured in the section "
            "\"Distillation and stand-alone retraining on CIFAR-10\" below.")


def plot(results: dict[str, Any], out_dir: Path, path: Path) -> Path | None:
    """Left: every evaluated candidate (validation top-1 vs LUT latency), the searched Pareto fronts and
    the budgets. Right: the final models, test top-1 vs measured torch-cpu latency, the peer marked."""
    headline = results.get("headline")
    if not headline:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for factor in LATENCY_FACTORS:
        name = search_name(factor)
        found_path = out_dir / "search" / name / "results.json"
        if not found_path.is_file():
            continue
        found = json.loads(found_path.read_text())
        ok = [e for e in found.get("evaluated", []) if e["fitness"] is not None]
        left.scatter([e["latency"] for e in ok], [e["fitness"] for e in ok], s=6, alpha=0.25,
                     label=f"{name}: {len(ok)} candidates")
        front = sorted(found["pareto_front"], key=lambda e: e["latency"])
        left.plot([e["latency"] for e in front], [e["fitness"] for e in front], "-o", ms=3, label=f"{name} front")
        left.axvline(results["budgets"]["by_factor"][str(factor)]["latency_budget_ms"], ls="--", lw=0.8, color="0.4")
    left.set(xlabel="LUT-predicted latency, torch-cpu (ms)", ylabel="validation top-1 (%)",
             title="search: every evaluated candidate")
    left.legend(fontsize=7)
    # Right: latency as a multiple of the peer's, measured in the same interleaved run (the selection's
    # candidates and the headline's models were measured in different runs of a drifting machine).
    for name, sel in results.get("selection", {}).items():
        found = json.loads((out_dir / "search" / name / "results.json").read_text())
        test_of = {b["name"]: b["test_top1"] for b in found["best"]}
        peer_ms = sel["peer_measured"]["median_ms"]
        right.scatter([r["measured"]["median_ms"] / peer_ms for r in sel["candidates"]],
                      [test_of[r["name"]] for r in sel["candidates"]], s=10, alpha=0.35,
                      label=f"{name}: measured candidates")
    peer = headline["peer"]
    for key, row in headline.items():
        if key == "peer":
            continue
        x, y = row["ratio_torch-cpu"], row["test_top1"]
        right.scatter([x], [y], s=40, label=key)
        right.annotate(key, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    right.scatter([1.0], [peer["test_top1"]], marker="*", s=180, color="black", label=peer["label"])
    right.set(xlabel="measured latency / the peer's (torch-cpu, batch 1, 1 thread, same run)",
              ylabel="test top-1 (%)", title="final models vs MobileViT-XXS")
    right.legend(fontsize=7)
    return save_figure(fig, path)


def write_report(results: dict[str, Any], out_dir: Path, epochs: int, benchmarks: Path) -> None:
    record = {**results, "environment": environment(),
              "training_worker_code": worker_code(out_dir, [SUPERNET_RUN]).get(SUPERNET_RUN),
              "recipes": {k: list(v) for k, v in RECIPES.items()}, "precision": "fp32",
              "data_path": "timm PIL pipeline per image (data.augment timm, num_workers 0)",
              "updated": time.strftime("%Y-%m-%d %H:%M")}
    results_dir = benchmarks.parent / "bench" / "results"  # committed beside BENCHMARKS.md
    write_json(results_dir / "cifar10_result.json", record)
    plot(results, out_dir, results_dir / "cifar10_result.png")
    replace_markdown_section(benchmarks, SECTION, "\n".join(report_sections(results, epochs)))
    log(f"wrote {benchmarks}, {results_dir / 'cifar10_result.json'}")


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: $AUTOVIT_BENCH_DIR/cifar10_result")
    parser.add_argument("--data-dir", default=cifar10_dir())
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--pilot-epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=5, help="epochs each side trains before the other's turn")
    parser.add_argument("--max-steps", type=int, default=None, help="smoke runs: steps per epoch")
    parser.add_argument("--max-eval-batches", type=int, default=None, help="smoke runs: eval batches")
    parser.add_argument("--lut-references", type=int, default=24, help="profile build --references")
    parser.add_argument("--lut-samples", type=int, default=100, help="profile validate --samples")
    parser.add_argument("--lut-rounds", type=int, default=None, help="profile build/validate --rounds")
    parser.add_argument("--lut-quiet-cpus", type=float, default=0.3, help="profile --quiet-cpus (negative: off)")
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--stop-after", choices=("pilot", "train", "search-inputs"), default=None,
                        help="search-inputs: train the supernet alone (not the peer), build the search "
                             "backend's table and the budgets, and stop: what bench/search_strategies.py needs")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite BENCHMARKS.md's section, bench/results/cifar10_result.{json,png} and stop")
    parser.add_argument("--benchmarks-file", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    out = (args.out or bench_dir() / "cifar10_result").expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(out=out, data_dir=args.data_dir, epochs=args.epochs, pilot_epochs=args.pilot_epochs,
                        threads=args.threads, lut_references=args.lut_references, lut_samples=args.lut_samples,
                        lut_rounds=args.lut_rounds, lut_quiet_cpus=args.lut_quiet_cpus,
                        population=args.population, generations=args.generations, max_steps=args.max_steps,
                        max_eval_batches=args.max_eval_batches)
    torch.set_num_threads(args.threads)
    results, save = open_record(out / "results.json", args.report_only)
    if "pilot" not in results and not args.report_only:
        reuse_committed_pilot(results, args.pilot_epochs)

    if args.report_only and not results and COMMITTED_RESULTS.is_file():
        # a machine without the artifacts: the section again from the committed record (JSON and plot kept)
        log(f"no {out / 'results.json'}: the section from {public_path(COMMITTED_RESULTS)}")
        committed = json.loads(COMMITTED_RESULTS.read_text())
        replace_markdown_section(args.benchmarks_file, SECTION, "\n".join(report_sections(committed, args.epochs)))
        return 0
    if args.report_only:
        write_report(results, out, args.epochs, args.benchmarks_file)
        return 0
    log(f"cifar10_result: artifacts in {out}; code {autovit_ray.__file__}")
    recipe, adaptation = run_pilot(settings, results, save)
    log(f"pilot chose recipe {recipe!r} and peer adaptation {adaptation!r}: {results['pilot']['arms']}")
    if args.stop_after == "pilot":
        return 0
    if args.stop_after == "search-inputs":
        run_training(settings, recipe, adaptation, results, save, args.chunk, with_peer=False)
        final_supernet(settings, settings.config(recipe))
        run_luts(settings, results, save, backends=(SEARCH_BACKEND,), validate=False)
        run_budgets(settings, adaptation, results, save)
        log("search inputs done")
        return 0
    run_training(settings, recipe, adaptation, results, save, args.chunk)
    if args.stop_after == "train":
        return 0
    checkpoint = final_supernet(settings, settings.config(recipe))
    run_luts(settings, results, save)
    budgets = run_budgets(settings, adaptation, results, save)
    run_searches(settings, checkpoint, budgets, results, save)
    run_selection(settings, checkpoint, adaptation, results, save)
    run_headline(settings, checkpoint, adaptation, results, save)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
