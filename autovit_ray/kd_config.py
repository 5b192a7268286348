"""The distillation settings (`KDConfig`) and the checks they share with the losses and the teacher
loader (`autovit_ray.distill`). Pure Python: a CLI can build and print a training config without
importing torch or timm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from autovit_ray.config import dataclass_from_flat_dict

KD_KINDS = ("none", "soft", "hard")


def check_alpha_tau(alpha: float, tau: float = 1.0) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"KD alpha = {alpha!r} is invalid: expected a weight in [0, 1]")
    if not tau > 0.0:
        raise ValueError(f"KD tau = {tau!r} is invalid: expected a temperature > 0")


def rgb_triple(what: str, values: Sequence[float] | None, positive: bool) -> tuple[float, ...]:
    """3 finite per-channel RGB values (positive for a std); anything else is refused: a batch converted
    with a wrong normalisation would give the student a silently wrong teacher."""
    try:
        triple = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or not all(math.isfinite(v) for v in triple) or (positive and min(triple) <= 0):
        raise ValueError(f"{what} = {values!r} is invalid: expected 3 finite per-channel RGB values"
                         + (", all positive" if positive else ""))
    return triple


def parse_teacher_spec(spec: str) -> tuple[str, str, dict[str, list[str]]]:
    """'timm:name?random=1' -> ('timm', 'name', {'random': ['1']})."""
    kind, sep, rest = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or kind not in ("timm", "checkpoint") or not rest:
        raise ValueError(f"teacher spec {spec!r} is invalid: expected 'timm:<model_name>' "
                         "(optionally '?random=1') or 'checkpoint:<path>'")
    if kind == "checkpoint":
        return kind, rest, {}
    name, _, query = rest.partition("?")
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"random"})
    if unknown:
        raise ValueError(f"teacher spec {spec!r}: unknown option(s) {unknown}; expected only 'random=1'")
    return kind, name, options


@dataclass(frozen=True)
class KDConfig:
    """Distillation settings. `teacher` is a spec for `load_teacher`; `inplace` distils the sampled
    subnets from the largest subnet instead (then no teacher is needed)."""

    kind: str = "none"
    alpha: float = 0.5
    tau: float = 1.0
    teacher: str | None = None
    teacher_weights: str | None = None  # local weights file for a 'timm:' teacher
    teacher_mean: tuple[float, ...] | None = None  # None: from the checkpoint or timm's pretrained_cfg
    teacher_std: tuple[float, ...] | None = None
    teacher_resolution: int | None = None  # None: the student's input size
    inplace: bool = False

    def __post_init__(self) -> None:
        for name in ("teacher_mean", "teacher_std"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.kind not in KD_KINDS:
            raise ValueError(f"KDConfig.kind = {self.kind!r} is invalid: expected one of {KD_KINDS}")
        check_alpha_tau(self.alpha, self.tau)
        if self.kind != "none" and self.teacher is None and not self.inplace:
            raise ValueError(f"KDConfig.kind = {self.kind!r} needs a teacher ('timm:<name>' or "
                             "'checkpoint:<path>') or inplace=True")
        if self.teacher is not None:
            parse_teacher_spec(self.teacher)
        if self.teacher_mean is not None:
            rgb_triple("KDConfig.teacher_mean", self.teacher_mean, positive=False)
        if self.teacher_std is not None:
            rgb_triple("KDConfig.teacher_std", self.teacher_std, positive=True)
        r = self.teacher_resolution
        if r is not None and not (isinstance(r, int) and r > 0):
            raise ValueError(f"KDConfig.teacher_resolution = {r!r} is invalid: expected a positive integer")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> KDConfig:
        return dataclass_from_flat_dict(cls, values)


__all__ = ["KD_KINDS", "KDConfig", "check_alpha_tau", "parse_teacher_spec", "rgb_triple"]
