"""Benchmark: the AutoViT result on CIFAR-10 (issue 13; DESIGN.md section 4).

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

Bad input: a supernet checkpoint of another supernet, profile, data split or recipe, and a peer state
of another recipe or adaptation, are refused with one clear error (``Mismatch``); a stage artifact that
cannot be read is redone, not used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import autovit_ray  # noqa: E402
from autovit_ray.checkpoint import list_checkpoints, read_meta  # noqa: E402
from autovit_ray.data import Loaders, build_loaders  # noqa: E402
from autovit_ray.distill import cross_entropy  # noqa: E402
from autovit_ray.training.config import TrainConfig, load_config  # noqa: E402
from autovit_ray.training.loop import derive_seed, seed_everything, top1  # noqa: E402
from autovit_ray.training.optim import build_optimizer, build_scheduler  # noqa: E402

TRAIN_IMAGES = 45_000  # CIFAR-10's 50k training images less the 5k held-out validation split
RESOLUTION = 32
SUPERNET = "xxs"
PROFILE = "cifar10"

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


class Mismatch(ValueError):
    """A stage artifact made with other settings than this run's (another recipe, split, supernet...)."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bench_dir() -> Path:
    return Path(os.environ.get("AUTOVIT_BENCH_DIR", "~/.cache/autovit-ray/bench")).expanduser()


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


@dataclass(frozen=True)
class Settings:
    """What this run is: every artifact records the part of it that made it."""

    out: Path
    data_dir: str
    epochs: int
    pilot_epochs: int
    threads: int
    max_steps: int | None = None  # smoke runs only
    max_eval_batches: int | None = None  # smoke runs only

    def config(self, recipe: str, extra: Sequence[str] = ()) -> TrainConfig:
        if recipe not in RECIPES:
            raise ValueError(f"recipe {recipe!r} is unknown: expected one of {sorted(RECIPES)}")
        return load_config("cifar10", [f"data.data_dir={self.data_dir}", f"train.epochs={self.epochs}",
                                       *RECIPES[recipe], *extra], {"output_dir": str(self.out)})


def recipe_fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The parts of a config that make two trainings comparable (data split, augmentation, optimiser,
    schedule, epochs, seed); a resumed or reused artifact must match it."""
    d = cfg.to_dict()
    data = {k: v for k, v in d["data"].items() if k not in ("data_dir", "num_workers")}
    return {"data": data, "optimizer": {k: v for k, v in d["optimizer"].items() if k != "freeze_inactive"},
            "schedule": d["schedule"], "epochs": d["train"]["epochs"], "seed": d["seed"],
            "grad_clip": d["train"]["grad_clip"]}


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
    global_step = state["epoch"] * steps
    scheduler.step_update(global_step)  # the schedule is a function of the step: resume it there
    device = torch.device("cpu")
    while state["epoch"] < until_epoch:
        epoch = state["epoch"] + 1
        seed_everything(derive_seed(cfg.seed, epoch, 0))
        loaders.set_epoch(epoch)
        model.train()
        start, images, loss_sum = time.perf_counter(), 0, 0.0
        for i, (x, y) in enumerate(loaders.train):
            if i >= steps:
                break
            x, y = loaders.mixup_fn(x, y) if loaders.mixup_fn else (x, y)
            loss = cross_entropy(model(x), y, loaders.label_smoothing)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            scheduler.step_update(global_step)
            images += len(x)
            loss_sum += float(loss.detach())
        record: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / steps,
                                  "train_images_per_s": images / (time.perf_counter() - start)}
        correct, seen = top1(model, loaders.val, RESOLUTION, device, cfg.eval.max_batches)
        record["val_top1_curve"] = 100.0 * correct / seen
        if epoch % eval_every == 0 or epoch == cfg.train.epochs:
            correct, seen = top1(model, loaders.val, RESOLUTION, device, settings.max_eval_batches)
            record["val_top1"] = 100.0 * correct / seen
        log(f"{run_dir.name}: {record}")
        state = {"epoch": epoch, "history": state["history"] + [record], "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "fingerprint": fingerprint}
        _save_atomic(state, state_path)
    return state


# ---------------------------------------------------------------------------------------------------
# Stage 1: the pilot


def pilot_arms() -> list[tuple[str, str]]:
    return [(recipe, adaptation) for adaptation in ADAPTATIONS for recipe in RECIPES]


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
    """Refuse a checkpoint of another supernet, profile, data split or recipe."""
    saved = meta["config"]
    wanted = cfg.to_dict()
    problems = []
    space = meta.get("space", {})
    if (space.get("name"), space.get("profile")) != (SUPERNET, PROFILE):
        problems.append(f"supernet {space.get('name')!r} / profile {space.get('profile')!r} "
                        f"(expected {SUPERNET!r} / {PROFILE!r})")
    if recipe_fingerprint(config_from_saved(saved)) != recipe_fingerprint(cfg):
        problems.append("another recipe or data split: "
                        f"{recipe_fingerprint(config_from_saved(saved))} vs {recipe_fingerprint(cfg)}")
    if saved["train"].get("sampler") != wanted["train"]["sampler"]:
        problems.append(f"sampler {saved['train'].get('sampler')!r}")
    if problems:
        raise Mismatch(f"checkpoint {path} does not belong to this run: {'; '.join(problems)}. "
                       "Move the experiment away or pass another --out")


def config_from_saved(saved: dict[str, Any]) -> TrainConfig:
    from autovit_ray.training.config import config_from_dict

    return config_from_dict(saved)


def advance_supernet(settings: Settings, recipe: str, epoch: int) -> None:
    cmd = [sys.executable, "-m", "autovit_ray.train", "--config", "cifar10", "--name", SUPERNET_RUN,
           "--supernets", SUPERNET, "--output-dir", str(settings.out),
           "--set", f"data.data_dir={settings.data_dir}", "--set", f"train.epochs={settings.epochs}",
           "--set", f"train.stop_after_epoch={epoch}", "--set", "train.progress_bar=false",
           "--set", f"ray.torch_threads={settings.threads}"]
    overrides = list(RECIPES[recipe])
    if settings.max_steps:
        overrides += [f"train.max_steps_per_epoch={settings.max_steps}", "eval.max_batches=1"]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{settings.out / 'mlflow.db'}"}
    with open(settings.out / f"{SUPERNET_RUN}.log", "a") as out:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise RuntimeError(f"{SUPERNET_RUN}: `{' '.join(cmd)}` failed (exit {rc}); see "
                           f"{settings.out / SUPERNET_RUN}.log")


def run_training(settings: Settings, recipe: str, adaptation: str, results: dict[str, Any],
                 save: Callable[[], None], chunk: int) -> None:
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
        peer_before = len(train.get("peer", []))
        state = train_peer(settings, settings.out / PEER_RUN, adaptation, cfg, until, loaders, eval_every=5)
        train["peer"] = state["history"]
        epochs_run += until - peer_before
        save()
        left = 2 * settings.epochs - until - len(train["peer"])
        eta = f"{left * (time.time() - start) / epochs_run / 3600:.1f} h" if epochs_run else "?"
        log(f"train: {until}/{settings.epochs} epochs on both sides; ETA of the training stage {eta}")


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: $AUTOVIT_BENCH_DIR/cifar10_result")
    parser.add_argument("--data-dir", default=str((ROOT.parent / "shared" / "data" / "cifar10").resolve()))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--pilot-epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=5, help="epochs each side trains before the other's turn")
    parser.add_argument("--max-steps", type=int, default=None, help="smoke runs: steps per epoch")
    parser.add_argument("--max-eval-batches", type=int, default=None, help="smoke runs: eval batches")
    parser.add_argument("--stop-after", choices=("pilot", "train"), default=None)
    args = parser.parse_args(argv)
    out = (args.out or bench_dir() / "cifar10_result").expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(out=out, data_dir=args.data_dir, epochs=args.epochs, pilot_epochs=args.pilot_epochs,
                        threads=args.threads, max_steps=args.max_steps, max_eval_batches=args.max_eval_batches)
    torch.set_num_threads(args.threads)
    results_path = out / "results.json"
    results: dict[str, Any] = {}
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text())
        except json.JSONDecodeError as e:
            log(f"{results_path} is unreadable ({e}); starting its bookkeeping again (trainings resume)")
    results["code"] = {"autovit_ray": autovit_ray.__file__, "root": str(ROOT)}

    def save() -> None:
        _write_json_atomic(results, results_path)

    log(f"cifar10_result: artifacts in {out}; code {autovit_ray.__file__}")
    recipe, adaptation = run_pilot(settings, results, save)
    log(f"pilot chose recipe {recipe!r} and peer adaptation {adaptation!r}: {results['pilot']['arms']}")
    if args.stop_after == "pilot":
        return 0
    run_training(settings, recipe, adaptation, results, save, args.chunk)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
