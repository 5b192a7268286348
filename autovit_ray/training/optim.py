"""Optimizer, learning-rate schedule and the exact freezing of inactive weights (Algorithm 1).

Algorithm 1 updates "the corresponding part of w in W_A while freezing the rest". With weight
entanglement a subnet reads leading slices of shared tensors, and autograd gives the unread entries a
zero gradient; plain AdamW would still decay them and move them with their old momentum. So:

- `ActiveWeightTracker` records, through forward hooks on the dynamic ops, which entries of every
  parameter the step's subnets read (the same masks as `Supernet.active_masks()`, cached per op and
  active shape, so a step pays a dict lookup per op instead of a probe forward).
- `MaskedAdamW` is AdamW applied entry-wise to the active entries only: inactive entries get no weight
  decay, their moments stay as they are, and each entry counts its own steps for the bias correction
  (an entry that was active on k steps has seen exactly k AdamW updates).

`optimizer.freeze_inactive: false` gives plain `torch.optim.AdamW` over the whole supernet instead
(AutoFormer's behaviour: every tensor decays and drifts with its momentum on every step).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

from autovit_ray.nn import DynamicOp
from autovit_ray.training.config import OptimizerSection, ScheduleSection


def _active_state(module: nn.Module) -> tuple[tuple[str, Any], ...]:
    # The dynamic ops keep their active shape in attributes named active* (active_in, active_heads, ...).
    return tuple(sorted((k, v) for k, v in vars(module).items() if k.startswith("active")))


class ActiveWeightTracker:
    """Union of the active-entry masks of every forward pass (with autograd on) since `reset()`.

    Masks are float tensors (1.0 active, 0.0 inactive) so `MaskedAdamW` can use them as weights in
    its multi-tensor (foreach) kernels; they are cached per (op, active shape) and never modified."""

    def __init__(self, model: nn.Module) -> None:
        self._cache: dict[tuple[int, tuple[tuple[str, Any], ...]], dict[str, torch.Tensor]] = {}
        self.masks: dict[nn.Parameter, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._record) for m in model.modules()
                         if isinstance(m, DynamicOp)]

    def _record(self, module: nn.Module, _inputs: Any, _output: Any) -> None:
        if not torch.is_grad_enabled():  # a no-grad pass (teacher logits, evaluation) trains nothing
            return
        key = (id(module), _active_state(module))
        op_masks = self._cache.get(key)
        if op_masks is None:
            op_masks = self._cache[key] = {name: mask.to(getattr(module, name).dtype)
                                           for name, mask in module.active_masks().items()}
        for name, mask in op_masks.items():
            param = getattr(module, name)
            seen = self.masks.get(param)
            self.masks[param] = mask if seen is None else torch.maximum(seen, mask)

    def reset(self) -> None:
        self.masks = {}

    def named_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Boolean masks by parameter name, all-False for parameters no pass read (checks, tests)."""
        return {name: (self.masks[p] > 0) if p in self.masks else torch.zeros_like(p, dtype=torch.bool)
                for name, p in model.named_parameters()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW (decoupled decay, as torch.optim.AdamW) that updates only the active entries.

    `set_masks({param: mask})` before `step()`, masks as 1.0 / 0.0 float tensors (`ActiveWeightTracker`);
    parameters left out of the masks are wholly inactive (`set_masks(None)`: every parameter with a
    gradient is fully active). An inactive entry is not touched at all: no weight decay, its moments
    keep their values, and its bias correction does not advance. Each entry counts its own steps
    (state ``active_steps``, a float tensor shaped like the parameter; not ``step``, which torch's
    load_state_dict treats specially), so an entry active on k steps has had exactly k AdamW updates.
    With all-ones masks this is AdamW. Multi-tensor (foreach) kernels keep the cost of a masked step
    close to plain AdamW's.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._masks: Mapping[nn.Parameter, torch.Tensor] | None = None

    def set_masks(self, masks: Mapping[nn.Parameter, torch.Tensor] | None) -> None:
        self._masks = masks

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, masks = [], [], []
            for p in group["params"]:
                if p.grad is None or (self._masks is not None and p not in self._masks):
                    continue  # wholly inactive: nothing moves
                params.append(p)
                grads.append(p.grad)
                masks.append(torch.ones_like(p) if self._masks is None else self._masks[p])
            if params:
                self._update(group, params, grads, masks)
        return loss

    def _update(self, group: Mapping[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
                masks: list[torch.Tensor]) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
                state["active_steps"] = torch.zeros_like(p)  # per entry: the steps it was active on
        exp_avg = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
        steps = [self.state[p]["active_steps"] for p in params]

        def keep_or(factor: float) -> list[torch.Tensor]:
            # 1 - factor * mask: exactly 1.0 on inactive entries, so multiplying leaves them bit-identical
            out = torch._foreach_mul(masks, -factor)
            torch._foreach_add_(out, 1.0)
            return out

        if wd:
            torch._foreach_mul_(params, keep_or(lr * wd))  # decoupled weight decay
        torch._foreach_lerp_(exp_avg, grads, torch._foreach_mul(masks, 1 - beta1))
        torch._foreach_lerp_(exp_avg_sq, torch._foreach_mul(grads, grads), torch._foreach_mul(masks, 1 - beta2))
        torch._foreach_add_(steps, masks)
        # step = lr * m * exp_avg / (1 - beta1^t) / (sqrt(exp_avg_sq / (1 - beta2^t)) + eps). The clamps
        # only matter for never-active entries (t = 0, masked out anyway): they keep 0 * inf out.
        bias1 = torch._foreach_pow(beta1, steps)
        torch._foreach_mul_(bias1, -1.0)
        torch._foreach_add_(bias1, 1.0)
        torch._foreach_clamp_min_(bias1, 1e-30)
        bias2 = torch._foreach_pow(beta2, steps)
        torch._foreach_mul_(bias2, -1.0)
        torch._foreach_add_(bias2, 1.0)
        torch._foreach_clamp_min_(bias2, 1e-30)
        denom = torch._foreach_div(exp_avg_sq, bias2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, eps)
        update = torch._foreach_mul(exp_avg, masks)
        torch._foreach_div_(update, bias1)
        torch._foreach_div_(update, denom)
        torch._foreach_mul_(update, lr)
        torch._foreach_sub_(params, update)


def build_optimizer(model: nn.Module, cfg: OptimizerSection) -> torch.optim.Optimizer:
    """AdamW with timm's parameter groups (no weight decay on biases and norm weights, as DeiT)."""
    groups = param_groups_weight_decay(model, cfg.weight_decay)
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.freeze_inactive:
        return MaskedAdamW(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def fill_missing_grads(model: nn.Module) -> None:
    """Zero gradients for parameters no pass used, so plain AdamW decays and moves them too (AutoFormer,
    whose zero_grad kept zero tensors); also gives every rank the same set of tensors to all-reduce."""
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                    cfg: ScheduleSection) -> CosineLRScheduler:
    """timm's cosine schedule with linear warm-up (DeiT), counted in optimizer updates: call
    `step_update(global_step)` after every update. Stateless given the step, so a resume is exact."""
    return CosineLRScheduler(
        optimizer, t_initial=epochs * steps_per_epoch, lr_min=cfg.min_lr,
        warmup_t=int(math.ceil(cfg.warmup_epochs * steps_per_epoch)), warmup_lr_init=cfg.warmup_lr,
        t_in_epochs=False,
    )


__all__ = ["ActiveWeightTracker", "MaskedAdamW", "build_optimizer", "build_scheduler", "fill_missing_grads"]
