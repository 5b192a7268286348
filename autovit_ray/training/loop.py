"""Supernet training (paper Algorithm 1), plain torch: no Ray, no MLflow.

Per step: draw the step's subnets (`sampler: uniform`: one, per-choice uniform, resolution included;
`sampler: sandwich`: largest + smallest + N random, gradients accumulated), run each on the batch resized
to its resolution, back-propagate, all-reduce the gradients over data-parallel ranks, clip, and update
only the entries those subnets read (`MaskedAdamW`, unless `optimizer.freeze_inactive: false`).

Every rank draws the same subnets: the sampler of step s of epoch e is seeded by (seed, e, s) only.
Gradients are all-reduced by hand rather than by DDP: the set of used parameters changes every step
(DDP would need find_unused_parameters=True), and a sandwich step accumulates several backward passes
before one reduction.

Determinism: at the start of every epoch the global RNGs (`random`, `numpy.random`, `torch`; used by the
timm augmentation with num_workers=0 and by timm's Mixup) are seeded from (seed, epoch, rank), and
`Loaders.set_epoch` reseeds the batch order and the loader workers. So an epoch depends only on the
weights and optimizer state it starts from: resuming from an epoch checkpoint replays the uninterrupted
run exactly, whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from autovit_ray.checkpoint import rng_states, set_rng_states
from autovit_ray.data import Loaders, build_loaders, resize_batch
from autovit_ray.distill import build_teacher, kd_loss
from autovit_ray.evaluation import calibrated_subnet, evaluate
from autovit_ray.nn import Supernet
from autovit_ray.progress import Eta
from autovit_ray.space import Arch, SearchSpace
from autovit_ray.training.config import TrainConfig
from autovit_ray.training.optim import (
    ActiveWeightTracker,
    MaskedAdamW,
    build_optimizer,
    build_scheduler,
    fill_missing_grads,
)

ProgressFactory = Callable[[int, str], Any]  # (total, description) -> tqdm-like (update, set_postfix, close)


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): otherwise bf16 autocast is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(amp: Any, device: torch.device) -> str:
    """`train.amp` on `device` -> 'fp32', 'bf16' or 'fp16'. 'auto' keeps fp32 on a CPU: bf16 there is
    opt-in ('bf16' or true) until shown to train as well on the task at hand."""
    gpu = device.type == "cuda"
    gpu_mixed = "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp16"
    if amp in (False, "fp32"):
        return "fp32"
    if amp == "auto":
        return gpu_mixed if gpu else "fp32"
    if amp is True:
        if gpu:
            return gpu_mixed
        if not cpu_has_bf16():
            raise ValueError("config field train.amp = true on this CPU: it has no bf16 unit (AVX512-BF16 or "
                             "AMX), so mixed precision would be emulated; use train.amp: fp32, or 'bf16' to insist")
        return "bf16"
    if amp == "fp16" and not gpu:
        raise ValueError("config field train.amp = 'fp16' needs a GPU: CPU autocast runs bf16; use 'bf16' or 'fp32'")
    if amp == "bf16" and gpu and not torch.cuda.is_bf16_supported():
        raise ValueError("config field train.amp = 'bf16': this GPU has no bf16; use 'fp16' or 'fp32'")
    if amp not in AMP_DTYPES:
        raise ValueError(f"config field train.amp = {amp!r}: expected 'auto', 'bf16', 'fp16', 'fp32', true or false")
    return str(amp)


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sample_step_archs(space: SearchSpace, sampler: str, seed: int, epoch: int, step: int,
                      sandwich_random: int = 2) -> list[Arch]:
    """The subnets of one step; the same on every rank (seeded by (seed, epoch, step) only)."""
    rng = random.Random(derive_seed(seed, epoch, step))
    if sampler == "uniform":
        return [space.sample(rng)]
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(sandwich_random)]


def eval_archs(space: SearchSpace, num_random: int, seed: int) -> dict[str, Arch]:
    """The fixed evaluation set: smallest, largest, and `num_random` random subnets."""
    rng = random.Random(seed)
    archs = {"smallest": space.smallest(), "largest": space.largest()}
    randoms = [space.sample(rng) for _ in range(num_random)]
    # a random subnet equal to smallest or largest adds nothing (a one-arch space of `train --arch`)
    archs.update({f"random{i}": a for i, a in enumerate(randoms) if a not in (archs["smallest"], archs["largest"])})
    return archs


def _all_reduce_sum(values: list[float], world: World) -> list[float]:
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_gradients(model: nn.Module, world: World) -> None:
    """Average the gradients over the ranks in one flat all-reduce (every rank trained the same
    subnets, so the same parameters have gradients; missing ones are zero-filled to be safe)."""
    if world.size == 1:
        return
    fill_missing_grads(model)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class SupernetTrainer:
    """One supernet's training state and loop on one data-parallel rank."""

    def __init__(self, cfg: TrainConfig, space: SearchSpace, world: World = World(),
                 log: Callable[[str], None] = print, arch_log: Path | None = None,
                 space_source: str | None = None, loaders: Loaders | None = None) -> None:
        self.cfg, self.space, self.world, self.log = cfg, space, world, log
        self.arch_log = arch_log
        self.space_source = space_source or space.name  # name or YAML path: load_space(source, input_profile)
        # The subnets this training draws: the whole space, or one part of a few-shot split (the
        # supernet still owns every weight, so its checkpoint loads as the whole space's).
        count = cfg.train.transformer_stages
        self.sampled_space = space if count is None else space.with_transformer_stage_count(count)
        # Same seed on every rank: the replicas start identical without a broadcast.
        seed_everything(cfg.seed)
        # `loaders`: built by the caller (Ray's object store or Ray Data as the input, autovit_ray.ray_inputs)
        self.loaders = loaders if loaders is not None else build_loaders(
            cfg.data, resolution=max(space.resolutions), world_rank=world.rank, world_size=world.size,
            device=world.device)
        self.model = Supernet(space, self.loaders.num_classes, cfg.model.drop_rate).to(world.device)
        self.teacher = build_teacher(cfg.kd, self.loaders.num_classes, self.loaders.mean, self.loaders.std,
                                     world.device)
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        self.tracker = ActiveWeightTracker(self.model) if isinstance(self.optimizer, MaskedAdamW) else None
        limit = cfg.train.max_steps_per_epoch
        self.steps_per_epoch = min(len(self.loaders.train), limit) if limit else len(self.loaders.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train.epochs, self.steps_per_epoch, cfg.schedule)
        self.precision = resolve_precision(cfg.train.amp, world.device)
        self.amp_dtype = AMP_DTYPES[self.precision]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.eval_archs = eval_archs(self.sampled_space, cfg.eval.num_random_subnets, cfg.eval.subnet_seed)
        self.epoch = 0  # completed epochs
        self.global_step = 0

    # -- checkpoint state ------------------------------------------------------------------------
    def state_dict(self, metrics: Mapping[str, float] | None = None) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "global_step": self.global_step, "rng_states": rng_states(),
            "config": self.cfg.to_dict(), "num_classes": self.loaders.num_classes,
            "space": space_info(self.space, self.space_source), "metrics": dict(metrics or {}),
            "precision": self.precision, "data_path": self.loaders.data_path,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        set_rng_states(state["rng_states"])

    # -- one step ---------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.world.device.type, dtype=self.amp_dtype)

    def dropout_of(self, arch: Arch) -> float:
        """The classifier dropout `arch` trains with (`model.regularize`)."""
        m = self.cfg.model
        return m.drop_rate if m.regularize == "all" or arch == self.sampled_space.largest() else 0.0

    def _loss(self, arch: Arch, x: torch.Tensor, target: torch.Tensor,
              teacher_logits: torch.Tensor | None, distill: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.set_active(arch)
        self.model.head.dropout.p = self.dropout_of(arch)
        with self._autocast():
            logits = self.model(resize_batch(x, arch.resolution))
            kd = self.cfg.kd
            kind = kd.kind if distill else "none"
            loss = kd_loss(kind, logits.float(), target,
                           None if teacher_logits is None else teacher_logits.float(),
                           kd.alpha, kd.tau, self.loaders.label_smoothing if target.dtype == torch.long else 0.0)
        return loss, logits

    def train_step(self, x: torch.Tensor, target: torch.Tensor, archs: list[Arch]) -> float:
        kd = self.cfg.kd
        teacher_logits = None
        if self.teacher is not None:
            with self._autocast():
                teacher_logits = self.teacher(x)
        elif kd.inplace and archs[0] != self.sampled_space.largest():
            with torch.no_grad(), self._autocast():  # in-place distillation: largest subnet as teacher
                self.model.set_active(self.sampled_space.largest())
                self.model.head.dropout.p = self.dropout_of(self.sampled_space.largest())
                teacher_logits = self.model(resize_batch(x, self.sampled_space.largest().resolution))
        total = 0.0
        for arch in archs:
            is_inplace_teacher = kd.inplace and arch == self.sampled_space.largest()
            loss, logits = self._loss(arch, x, target, teacher_logits, distill=not is_inplace_teacher)
            if is_inplace_teacher:
                teacher_logits = logits.detach()
            loss = loss / len(archs)  # accumulated gradient = mean over the step's subnets
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            raise FloatingPointError(f"loss is {total} at epoch {self.epoch + 1}, step {self.global_step}: "
                                     "lower optimizer.lr or enable train.grad_clip")
        all_reduce_gradients(self.model, self.world)
        if not isinstance(self.optimizer, MaskedAdamW):
            fill_missing_grads(self.model)  # plain AdamW: every tensor decays and moves (AutoFormer)
        self.scaler.unscale_(self.optimizer)
        if self.cfg.train.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        if self.tracker is not None:
            assert isinstance(self.optimizer, MaskedAdamW)  # the tracker exists only for it (__init__)
            self.optimizer.set_regions(self.tracker.regions)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.tracker is not None:
            self.tracker.reset()
        self.global_step += 1
        self.scheduler.step_update(self.global_step)
        return total

    # -- epochs -------------------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, (x, y) in enumerate(self.loaders.train):
            if i >= self.steps_per_epoch:
                return
            x, y = x.to(self.world.device, non_blocking=True), y.to(self.world.device, non_blocking=True)
            if self.loaders.mixup_fn is not None:
                x, y = self.loaders.mixup_fn(x, y)
            yield x, y

    def train_epoch(self, progress: ProgressFactory | None = None) -> dict[str, float]:
        """Train epoch `self.epoch + 1`; returns its training metrics (reduced over ranks)."""
        cfg, epoch = self.cfg, self.epoch + 1
        seed_everything(derive_seed(cfg.seed, epoch, self.world.rank))
        self.loaders.set_epoch(epoch)
        self.model.train()
        bar = progress(self.steps_per_epoch, f"{self.space.name} epoch {epoch}/{cfg.train.epochs}") \
            if progress else None
        loss_sum, images, start = 0.0, 0, time.perf_counter()
        log_file = None
        if self.arch_log is not None:
            self.arch_log.parent.mkdir(parents=True, exist_ok=True)
            log_file = self.arch_log.open("a")
        try:
            for step, (x, y) in enumerate(self._batches()):
                archs = sample_step_archs(self.sampled_space, cfg.train.sampler, cfg.seed, epoch, step,
                                          cfg.train.sandwich_random)
                if log_file is not None:
                    log_file.write(f"{epoch} {step} {' '.join(a.arch_hash for a in archs)}\n")
                    log_file.flush()  # readable while the epoch runs (progress, fault tests)
                loss = self.train_step(x, y, archs)
                loss_sum += loss
                images += len(x)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                elif self.world.rank == 0 and (step + 1) % max(1, self.steps_per_epoch // 10) == 0:
                    rate = images / (time.perf_counter() - start)  # no bar (not a terminal): 10 lines/epoch
                    self.log(f"[{self.space.name}] epoch {epoch} step {step + 1}/{self.steps_per_epoch} "
                             f"loss {loss:.3f} {rate:.0f} img/s")
        finally:
            if bar is not None:
                bar.close()
            if log_file is not None:
                log_file.close()
        elapsed = time.perf_counter() - start
        loss_sum, total_images, steps, elapsed = _all_reduce_sum(
            [loss_sum, images, self.steps_per_epoch, elapsed], self.world)
        self.epoch = epoch
        return {
            "train_loss": loss_sum / max(steps, 1),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "train_images_per_s": total_images / max(elapsed / self.world.size, 1e-9),
            "train_time_s": elapsed / self.world.size,
            "global_step": float(self.global_step),
        }

    def evaluate(self) -> dict[str, float]:
        """Validation top-1 (%) of the fixed evaluation subnets, after BN recalibration."""
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        scored: dict[Arch, float] = {}  # smallest == largest in a one-arch space: scored once
        for label, arch in self.eval_archs.items():
            if arch not in scored:
                with self._autocast():  # evaluated in the precision it trains in
                    # a calibrated copy: the supernet's statistics of inactive channels stay intact
                    subnet = calibrated_subnet(self.model, arch, self.loaders.calib, device=self.world.device,
                                               num_batches=self.cfg.eval.calib_batches)
                    result = evaluate(subnet, self.loaders.val, resolution=arch.resolution,
                                      device=self.world.device, max_batches=self.cfg.eval.max_batches)
                # this rank's share of the validation split: summed over the ranks
                correct, seen = _all_reduce_sum([result.correct1, result.seen], self.world)
                scored[arch] = 100.0 * correct / max(seen, 1)
            metrics[f"val_top1_{label}"] = scored[arch]
        randoms = [v for k, v in metrics.items() if k.startswith("val_top1_random")]
        if randoms:
            metrics["val_top1_random_mean"] = sum(randoms) / len(randoms)
        metrics["eval_time_s"] = time.perf_counter() - start
        return metrics

    def last_epoch(self) -> int:
        stop = self.cfg.train.stop_after_epoch
        return min(self.cfg.train.epochs, stop) if stop else self.cfg.train.epochs

    def fit(self, on_epoch_end: Callable[[int, dict[str, float]], None],
            progress: ProgressFactory | None = None) -> None:
        """Train from `self.epoch + 1` to the last epoch; `on_epoch_end(epoch, metrics)` after each
        (it saves the checkpoint and reports)."""
        eta = Eta(total=self.cfg.train.epochs, done=self.epoch, unit="epoch")
        while self.epoch < self.last_epoch():
            metrics = self.train_epoch(progress)
            e = self.cfg.eval
            if self.epoch % e.every_n_epochs == 0 or self.epoch == self.cfg.train.epochs:
                metrics.update(self.evaluate())
            metrics["epoch"] = float(self.epoch)
            summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch")
            if self.world.rank == 0:
                self.log(f"[{self.space.name}] epoch {self.epoch}/{self.cfg.train.epochs}: {summary} "
                         f"({eta.phrase(self.epoch)})")
            on_epoch_end(self.epoch, metrics)


def space_info(space: SearchSpace, source: str | None = None) -> dict[str, str]:
    """What a checkpoint records about its space (load it again with load_space(source, input_profile)).
    The file format keeps the old key "profile" for the input profile's name."""
    return {"name": space.name, "profile": space.input_profile.name, "fingerprint": space.fingerprint(),
            "source": source or space.name}


__all__ = [
    "SupernetTrainer", "World", "all_reduce_gradients", "derive_seed", "eval_archs",
    "sample_step_archs", "seed_everything", "space_info",
]
