"""Optimizer, learning-rate schedule and the exact freezing of inactive weights (Algorithm 1).

Algorithm 1 updates "the corresponding part of w in W_A while freezing the rest". With weight
entanglement a subnet reads leading slices of shared tensors, and autograd gives the unread entries a
zero gradient; plain AdamW would still decay them and move them with their old momentum. So:

- `ActiveWeightTracker` records, through forward hooks on the dynamic ops, which entries of every
  parameter the step's subnets read, as an `ActiveRegion` per parameter: the leading box that holds
  them and, only where the box is not wholly read (MobileViT's fusion conv reads two blocks of its
  input axis, Q-K-V three), a mask inside it. Regions are cached per op and active shape, so a step
  pays a dict lookup per op instead of a probe forward.
- `MaskedAdamW` is AdamW applied entry-wise to the active entries only: inactive entries get no weight
  decay, their moments stay as they are, and each entry has its own bias correction (an entry that was
  active on k steps has seen exactly k AdamW updates). It works on views of the active boxes, so a
  small subnet's step touches only its own weights: the cost of exact freezing is about that of plain
  AdamW over the subnet's parameters.

`optimizer.freeze_inactive: false` gives plain `torch.optim.AdamW` over the whole supernet instead
(AutoFormer's behaviour: every tensor decays and drifts with its momentum on every step).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

from autovit_ray.nn import DynamicOp
from autovit_ray.training.config import ANNEALS, SCHEDULE_KINDS, OptimizerSection, ScheduleSection


@dataclass(frozen=True)
class ActiveRegion:
    """The entries of one parameter a step read: the leading box `box` (extent per dimension) and,
    when only part of the box was read, `mask`: 1.0 / 0.0 float entries shaped like the box."""

    box: tuple[int, ...]
    mask: torch.Tensor | None = None

    @property
    def index(self) -> tuple[slice, ...]:
        return tuple(slice(0, extent) for extent in self.box)

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> ActiveRegion | None:
        """The region of a full-size boolean or 0/1 mask; None when nothing is active."""
        active = mask != 0
        where = active.nonzero()
        if len(where) == 0:
            return None
        box = tuple(int(extent) + 1 for extent in where.max(dim=0).values.tolist())
        inside = active[tuple(slice(0, e) for e in box)]
        return cls(box, None if bool(inside.all()) else inside.to(torch.float32))

    def union(self, other: ActiveRegion) -> ActiveRegion:
        if other.box == self.box and self.mask is None and other.mask is None:
            return self
        box = tuple(max(a, b) for a, b in zip(self.box, other.box))
        inside = torch.zeros(box)
        for region in (self, other):
            part = inside[region.index]
            part.copy_(torch.maximum(part, region.mask if region.mask is not None else torch.ones(region.box)))
        return ActiveRegion(box, None if bool(inside.all()) else inside)

    def full_mask(self, like: torch.Tensor) -> torch.Tensor:
        """The region as a boolean mask shaped like the parameter `like`."""
        out = torch.zeros_like(like, dtype=torch.bool)
        out[self.index] = True if self.mask is None else self.mask != 0
        return out


def _active_state(module: nn.Module) -> tuple[tuple[str, Any], ...]:
    # The dynamic ops keep their active shape in attributes named active* (active_in, active_heads, ...).
    return tuple(sorted((k, v) for k, v in vars(module).items() if k.startswith("active")))


class ActiveWeightTracker:
    """Union of the active regions of every forward pass (with autograd on) since `reset()`."""

    def __init__(self, model: nn.Module) -> None:
        self._cache: dict[tuple[int, tuple[tuple[str, Any], ...]], dict[str, ActiveRegion]] = {}
        self.regions: dict[nn.Parameter, ActiveRegion] = {}
        self._handles = [m.register_forward_hook(self._record) for m in model.modules()
                         if isinstance(m, DynamicOp)]

    def _record(self, module: DynamicOp, _inputs: Any, _output: Any) -> None:
        if not torch.is_grad_enabled():  # a no-grad pass (teacher logits, evaluation) trains nothing
            return
        key = (id(module), _active_state(module))
        op_regions = self._cache.get(key)
        if op_regions is None:
            found = {name: ActiveRegion.from_mask(mask) for name, mask in module.active_masks().items()}
            op_regions = self._cache[key] = {name: r for name, r in found.items() if r is not None}
        for name, region in op_regions.items():
            param = getattr(module, name)
            seen = self.regions.get(param)
            self.regions[param] = region if seen is None else seen.union(region)

    def reset(self) -> None:
        self.regions = {}

    def named_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Boolean masks by parameter name, all-False for parameters no pass read (checks, tests)."""
        return {name: self.regions[p].full_mask(p) if p in self.regions else torch.zeros_like(p, dtype=torch.bool)
                for name, p in model.named_parameters()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW (decoupled decay, as torch.optim.AdamW) that updates only the active entries.

    `set_regions({param: ActiveRegion})` before `step()` (`ActiveWeightTracker.regions`); parameters
    left out are wholly inactive (`set_regions(None)`: every parameter with a gradient is fully active).
    An inactive entry is not touched at all: no weight decay, its moments keep their values, and its
    bias correction does not advance. Each entry keeps its own bias corrections (states ``bias1`` =
    1 - beta1^k and ``bias2`` = 1 - beta2^k for an entry active on k steps), so an entry active on k
    steps has had exactly k AdamW updates. With every entry active this is AdamW.

    The update runs on views of the active boxes with multi-tensor (foreach) kernels: wholly read boxes
    with scalar factors, partly read ones with their masks.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._regions: Mapping[nn.Parameter, ActiveRegion] | None = None

    def set_regions(self, regions: Mapping[nn.Parameter, ActiveRegion] | None) -> None:
        self._regions = regions

    def set_masks(self, masks: Mapping[nn.Parameter, torch.Tensor] | None) -> None:
        """Full-size masks instead of regions (slower to convert each step; tests and one-off use)."""
        if masks is None:
            self._regions = None
            return
        regions = {p: ActiveRegion.from_mask(m) for p, m in masks.items()}
        self._regions = {p: r for p, r in regions.items() if r is not None}

    def _state(self, p: torch.Tensor, betas: tuple[float, float]) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if "bias1" in state:
            return state
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        steps = state.pop("active_steps", None)  # a checkpoint of the per-entry step counts kept before
        steps = torch.zeros_like(p) if steps is None else steps
        state["bias1"] = 1.0 - torch.pow(betas[0], steps)  # 1 - beta1^k for an entry active on k steps
        state["bias2"] = 1.0 - torch.pow(betas[1], steps)
        return state

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            whole: list[tuple[torch.Tensor, tuple[slice, ...]]] = []  # boxes read wholly
            part: list[tuple[torch.Tensor, tuple[slice, ...], torch.Tensor]] = []  # boxes read in part
            for p in group["params"]:
                if p.grad is None:
                    continue
                if self._regions is None:
                    whole.append((p, (slice(None),)))
                    continue
                region = self._regions.get(p)
                if region is None:
                    continue  # wholly inactive: nothing moves
                if region.mask is None:
                    whole.append((p, region.index))
                else:
                    part.append((p, region.index, region.mask.to(p.dtype)))
            if whole:
                self._update(group, [p for p, _ in whole], [index for _, index in whole], None)
            if part:
                self._update(group, [p for p, _, _ in part], [index for _, index, _ in part],
                             [mask for _, _, mask in part])
        return loss

    def _update(self, group: Mapping[str, Any], params: list[torch.Tensor], index: list[tuple[slice, ...]],
                masks: list[torch.Tensor] | None) -> None:
        """AdamW on the boxes `index` of `params`; `masks` (shaped like the boxes): only where 1."""
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        states = [self._state(p, (beta1, beta2)) for p in params]

        def boxes(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
            return [t[i] for t, i in zip(tensors, index)]

        # step() passes only parameters that have a gradient
        view, grad = boxes(p.data for p in params), boxes(cast(torch.Tensor, p.grad) for p in params)
        exp_avg, exp_avg_sq = boxes(s["exp_avg"] for s in states), boxes(s["exp_avg_sq"] for s in states)
        bias1, bias2 = boxes(s["bias1"] for s in states), boxes(s["bias2"] for s in states)
        if masks is None:  # every entry of the boxes is active: scalar factors
            if wd:
                torch._foreach_mul_(view, 1.0 - lr * wd)  # decoupled weight decay
            torch._foreach_lerp_(exp_avg, grad, 1.0 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grad, grad, 1.0 - beta2)
            for bias, beta in ((bias1, beta1), (bias2, beta2)):  # 1 - beta^(k+1) = beta (1 - beta^k) + 1 - beta
                torch._foreach_mul_(bias, beta)
                torch._foreach_add_(bias, 1.0 - beta)
            update = torch._foreach_div(exp_avg, bias1)
        else:  # a partly read box: each factor only where the mask is 1, exactly 1.0 elsewhere
            if wd:
                decay = torch._foreach_mul(masks, -lr * wd)
                torch._foreach_add_(decay, 1.0)
                torch._foreach_mul_(view, decay)
            torch._foreach_lerp_(exp_avg, grad, torch._foreach_mul(masks, 1.0 - beta1))
            torch._foreach_lerp_(exp_avg_sq, torch._foreach_mul(grad, grad), torch._foreach_mul(masks, 1.0 - beta2))
            for bias, beta in ((bias1, beta1), (bias2, beta2)):  # towards 1 by (1 - beta) where active
                torch._foreach_lerp_(bias, masks, torch._foreach_mul(masks, 1.0 - beta))
            # never-active entries have bias 0 (k = 0) and zero moments: the clamp keeps 0 / 0 out
            torch._foreach_clamp_min_(bias1, 1e-30)
            torch._foreach_clamp_min_(bias2, 1e-30)
            update = torch._foreach_mul(exp_avg, masks)
            torch._foreach_div_(update, bias1)
        # step = lr * (exp_avg / bias1) / (sqrt(exp_avg_sq / bias2) + eps)
        denom = torch._foreach_div(exp_avg_sq, bias2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(view, update, denom, -lr)


def build_optimizer(model: nn.Module, cfg: OptimizerSection) -> torch.optim.Optimizer:
    """AdamW with timm's parameter groups (no weight decay on biases and norm weights, as DeiT)."""
    groups = param_groups_weight_decay(model, cfg.weight_decay)
    betas = cast(tuple[float, float], tuple(cfg.betas))  # a plain tuple, whatever sequence the config holds
    if cfg.freeze_inactive:
        return MaskedAdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)


def fill_missing_grads(model: nn.Module) -> None:
    """Zero gradients for parameters no pass used, so plain AdamW decays and moves them too (AutoFormer,
    whose zero_grad kept zero tensors); also gives every rank the same set of tensors to all-reduce."""
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


class OneCycleSchedule:
    """One-cycle learning rate (Smith & Topin), counted in optimizer updates: linear from `start_lr` to
    each group's peak (the optimizer's lr) over the first `warmup_steps`, then cosine or linear
    annealing to `end_lr` at `total_steps`. A function of the step, as `CosineLRScheduler` with
    `t_in_epochs=False`: call `step_update(global_step)` after every update; a resume is exact."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 start_lr: float, end_lr: float, anneal: str = "cos") -> None:
        if anneal not in ANNEALS:
            raise ValueError(f"unknown anneal {anneal!r}: expected one of {ANNEALS}")
        self.optimizer, self.total_steps, self.warmup_steps = optimizer, max(total_steps, 1), warmup_steps
        self.start_lr, self.end_lr, self.anneal = start_lr, end_lr, anneal
        self.peaks = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.step_update(0)

    def lr_at(self, step: int, peak: float) -> float:
        if step < self.warmup_steps:
            return self.start_lr + (peak - self.start_lr) * step / self.warmup_steps
        t = min(1.0, (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1))
        shape = 0.5 * (1 + math.cos(math.pi * t)) if self.anneal == "cos" else 1 - t
        return self.end_lr + (peak - self.end_lr) * shape

    def step_update(self, num_updates: int) -> None:
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            group["lr"] = self.lr_at(num_updates, peak)

    def state_dict(self) -> dict[str, Any]:
        return {}  # stateless: the lr is a function of the step

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                    cfg: ScheduleSection) -> CosineLRScheduler | OneCycleSchedule:
    """`cfg.kind` 'cosine': timm's cosine schedule with linear warm-up (DeiT); 'onecycle': linear
    warm-up over `warmup_fraction` of all steps to the peak, then `anneal` to `min_lr`. Both count
    optimizer updates: call `step_update(global_step)` after every update; stateless given the step."""
    total = epochs * steps_per_epoch
    if cfg.kind == "onecycle":
        return OneCycleSchedule(optimizer, total, int(math.ceil(cfg.warmup_fraction * total)),
                                start_lr=cfg.warmup_lr, end_lr=cfg.min_lr, anneal=cfg.anneal)
    if cfg.kind != "cosine":
        raise ValueError(f"unknown schedule kind {cfg.kind!r}: expected one of {SCHEDULE_KINDS}")
    return CosineLRScheduler(
        optimizer, t_initial=total, lr_min=cfg.min_lr,
        warmup_t=int(math.ceil(cfg.warmup_epochs * steps_per_epoch)), warmup_lr_init=cfg.warmup_lr,
        t_in_epochs=False,
    )


__all__ = ["ActiveRegion", "ActiveWeightTracker", "MaskedAdamW", "OneCycleSchedule", "build_optimizer", "build_scheduler",
           "fill_missing_grads"]
