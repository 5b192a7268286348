"""Knowledge distillation (paper Section 5.1): soft and hard KD losses, and the teacher.

With student logits Z_s, teacher logits Z_t, labels y, ψ = softmax, α in [0, 1] and temperature τ:

- soft (Eq. 3): ``(1 - α)·CE(ψ(Z_s), y) + α·τ²·KL(ψ(Z_t/τ) || ψ(Z_s/τ))``
- hard (Eq. 4): ``(1 - α)·CE(ψ(Z_s), y) + α·CE(ψ(Z_s), argmax Z_t)``

KL direction: the paper writes KL(ψ(Z_s/τ), ψ(Z_t/τ)); we use Hinton's KL(teacher || student) =
Σ p_t (log p_t − log p_s), which is what DeiT implements (``F.kl_div(log p_s, log p_t, log_target=True)``).
Its gradient for the student equals that of the cross-entropy to the teacher's soft targets. It is
summed over classes and averaged over the batch ('batchmean', the true KL per sample); DeiT divides by
batch × classes instead, i.e. a KL term 1/classes as large for the same α.

The CE term takes integer labels (with optional label smoothing) or soft targets such as
`timm.data.Mixup` produces (already smoothed, so no further smoothing is applied to them). The teacher
term always uses the student's logits on the same (possibly mixed) batch the teacher saw.

Teachers (`load_teacher`), never downloaded:

- ``timm:<model_name>`` with `weights=<local file>` (a state dict, or a dict holding one under
  'model' / 'state_dict' / 'state_dict_ema', or .safetensors; loaded strictly with timm's
  `load_checkpoint`). Without a file this raises: weights must be supplied offline. For a
  randomly initialised teacher (tests, smoke runs) say so explicitly: ``timm:<model_name>?random=1``.
- ``checkpoint:<path>``: a `torch.save`d dict ``{"model": state_dict, "timm_name": str,
  "num_classes": int, "mean": [3 floats], "std": [3 floats], "timm_kwargs": {...}}`` ('mean', 'std',
  'timm_kwargs' optional), loaded with ``weights_only=True``; write it with `save_teacher_checkpoint`.
  TorchScript files are not accepted: a state dict + timm name loads safely without pickle code.

The `Teacher` wrapper takes the student's batch (normalised with the student's mean / std), converts it
to the teacher's own normalisation (from the checkpoint, the argument, or timm's pretrained_cfg) and
optionally resizes it to the teacher's resolution; it always runs in eval mode without gradients.

In-place distillation (BigNAS): call `soft_kd_loss` with the largest subnet's logits as `teacher_logits`
(they are detached here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autovit_ray.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, renormalize, resize_batch
from autovit_ray.kd_config import KD_KINDS, KDConfig, check_alpha_tau, parse_teacher_spec, rgb_triple


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """CE with integer labels [B] (label smoothing applied) or soft targets [B, C] (used as given)."""
    if target.is_floating_point():
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def soft_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                 alpha: float = 0.5, tau: float = 1.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Eq. 3: (1 - α)·CE(Z_s, y) + α·τ²·KL(ψ(Z_t/τ) || ψ(Z_s/τ)), KL summed over classes, batch mean."""
    check_alpha_tau(alpha, tau)
    log_p_s = F.log_softmax(student_logits / tau, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return (1.0 - alpha) * cross_entropy(student_logits, target, label_smoothing) + alpha * tau * tau * kl


def hard_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                 alpha: float = 0.5, label_smoothing: float = 0.0) -> torch.Tensor:
    """Eq. 4: (1 - α)·CE(Z_s, y) + α·CE(Z_s, argmax Z_t) (no smoothing on the teacher's labels, as DeiT)."""
    check_alpha_tau(alpha)
    teacher_labels = teacher_logits.detach().argmax(dim=-1)
    return ((1.0 - alpha) * cross_entropy(student_logits, target, label_smoothing)
            + alpha * F.cross_entropy(student_logits, teacher_labels))


def kd_loss(kind: str, student_logits: torch.Tensor, target: torch.Tensor,
            teacher_logits: torch.Tensor | None = None, alpha: float = 0.5, tau: float = 1.0,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """Dispatch on `kind` ('none': plain CE, 'soft', 'hard')."""
    if kind not in KD_KINDS:
        raise ValueError(f"unknown KD kind {kind!r}: expected one of {KD_KINDS}")
    if kind == "none":
        return cross_entropy(student_logits, target, label_smoothing)
    if teacher_logits is None:
        raise ValueError(f"KD kind {kind!r} needs teacher_logits")
    if kind == "soft":
        return soft_kd_loss(student_logits, teacher_logits, target, alpha, tau, label_smoothing)
    return hard_kd_loss(student_logits, teacher_logits, target, alpha, label_smoothing)


class Teacher(nn.Module):
    """A frozen teacher that takes the student's batches: re-normalises, resizes, runs in eval mode."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                 input_std: Sequence[float] = IMAGENET_DEFAULT_STD, resolution: int | None = None) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.mean, self.std = _normalisation("teacher", mean, std)
        self.input_mean, self.input_std = _normalisation("student input", input_mean, input_std)
        self.resolution = resolution

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # always eval: fixed BN statistics, no dropout

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = renormalize(x, self.input_mean, self.input_std, self.mean, self.std)
        if self.resolution is not None:
            x = resize_batch(x, self.resolution)
        return self.model(x)


def _normalisation(whose: str, mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], ...]:
    return rgb_triple(f"the {whose} mean", mean, positive=False), rgb_triple(f"the {whose} std", std, positive=True)


def _create_timm(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    import timm  # here, not at the top: a training worker without a teacher need not import timm (~2 s)

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        raise ValueError(f"unknown timm model {name!r}" + (f"; similar names: {close}" if close else ""))
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)  # never downloads


def _pretrained_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", IMAGENET_DEFAULT_MEAN)), tuple(cfg.get("std", IMAGENET_DEFAULT_STD))


def load_teacher(spec: str, num_classes: int, weights: str | Path | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 input_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                 input_std: Sequence[float] = IMAGENET_DEFAULT_STD, resolution: int | None = None,
                 device: torch.device | str = "cpu") -> Teacher:
    """Load a teacher offline (module doc). `mean` / `std`: the teacher's input normalisation (default:
    the checkpoint's, else timm's pretrained_cfg); `input_mean` / `input_std`: the student's."""
    kind, target, options = parse_teacher_spec(spec)
    if kind == "timm":
        model = _create_timm(target, num_classes)
        default_mean, default_std = _pretrained_norm(model)
        if weights is not None:
            _load_weights(model, Path(weights), spec)
        elif options.get("random", ["0"])[-1] not in ("1", "true", "yes"):
            raise ValueError(
                f"teacher {spec!r} has no weights: nothing is downloaded, so pass a local weights file "
                f"(load_teacher(..., weights=<file>) / KDConfig.teacher_weights), use "
                f"'checkpoint:<path>', or ask for a randomly initialised teacher with 'timm:{target}?random=1'"
            )
    else:
        if weights is not None:
            raise ValueError(f"teacher {spec!r}: a checkpoint carries its own weights; do not pass weights=")
        model, default_mean, default_std = _load_checkpoint_teacher(Path(target), num_classes)
    return Teacher(model, mean or default_mean, std or default_std, input_mean, input_std,
                   resolution).to(device)


def _load_weights(model: nn.Module, path: Path, spec: str) -> None:
    if not path.is_file():
        raise ValueError(f"teacher {spec!r}: weights file {str(path)!r} does not exist")
    import timm.models

    try:
        timm.models.load_checkpoint(model, str(path), strict=True)
    except Exception as e:
        raise ValueError(f"teacher {spec!r}: cannot load weights from {str(path)!r} into the model "
                         f"(expected a state dict of exactly this architecture and class count): {e}") from e


def _load_checkpoint_teacher(path: Path, num_classes: int) -> tuple[nn.Module, tuple, tuple]:
    expected = "a torch.save'd dict with 'model' (state dict) and 'timm_name' (see save_teacher_checkpoint)"
    if not path.is_file():
        raise ValueError(f"teacher checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a teacher checkpoint: expected {expected} ({e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "timm_name" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a teacher checkpoint: expected {expected}")
    ckpt_classes = ckpt.get("num_classes", num_classes)
    if ckpt_classes != num_classes:
        raise ValueError(f"teacher checkpoint {str(path)!r} has {ckpt_classes} classes, the data has "
                         f"{num_classes}: expected a teacher trained on the same classes")
    model = _create_timm(ckpt["timm_name"], num_classes, **ckpt.get("timm_kwargs", {}))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"teacher checkpoint {str(path)!r}: its weights do not fit "
                         f"{ckpt['timm_name']!r} with {num_classes} classes: {e}") from e
    default_mean, default_std = _pretrained_norm(model)
    return model, tuple(ckpt.get("mean", default_mean)), tuple(ckpt.get("std", default_std))


def save_teacher_checkpoint(path: str | Path, model: nn.Module, timm_name: str, num_classes: int,
                            mean: Sequence[float], std: Sequence[float],
                            timm_kwargs: Mapping[str, Any] | None = None) -> None:
    """Write the 'checkpoint:<path>' teacher format (loadable with weights_only=True)."""
    torch.save({"model": model.state_dict(), "timm_name": timm_name, "num_classes": int(num_classes),
                "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                "timm_kwargs": dict(timm_kwargs or {})}, path)


def build_teacher(cfg: KDConfig, num_classes: int, input_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                  input_std: Sequence[float] = IMAGENET_DEFAULT_STD,
                  device: torch.device | str = "cpu") -> Teacher | None:
    """The teacher a KDConfig asks for, or None (no KD, or in-place distillation)."""
    if cfg.kind == "none" or cfg.teacher is None:
        return None
    return load_teacher(cfg.teacher, num_classes, cfg.teacher_weights, cfg.teacher_mean, cfg.teacher_std,
                        input_mean, input_std, cfg.teacher_resolution, device)


__all__ = [
    "KDConfig", "KD_KINDS", "Teacher", "build_teacher", "cross_entropy", "hard_kd_loss", "kd_loss",
    "load_teacher", "save_teacher_checkpoint", "soft_kd_loss",
]
