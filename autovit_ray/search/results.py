"""A finished search's `results.json`, read as typed records. `search.driver.run` writes the file and
returns what this reads; the pipeline, the report page and `--arch <search dir>` read it through
`read_search`. Pure Python.

The file (JSON): `best` (the top-k models, selected on validation, each tested and exported),
`pareto_front` and `evaluated` (every candidate, in evaluation order, as `Evaluation.to_dict()`),
`evaluations` / `failed` counts, and the run's bookkeeping (cache hits, evaluator stats, failed trials,
and with a measured latency budget `measured_selection`: the candidates timed for it), kept as `extra`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..space import Arch
from .algorithms import Evaluation


@dataclass(frozen=True)
class SearchedModel:
    """One of a search's best models: its validation top-1 chose it, its test top-1 is reported only."""

    rank: int
    arch: Arch
    name: str
    val_top1: float
    test_top1: float
    params: int
    macs: int
    latency_ms: float | None  # the latency table's prediction (None: the search had no table)
    exports: dict[str, str]  # {format: path}
    weights: str
    arch_json: str
    measured_latency_ms: float | None = None  # batch 1, 1 thread, interleaved with the other best models
    val_other_top1: float | None = None  # with search.val_half: the half that did not select
    model_uris: dict[str, str] = field(default_factory=dict)  # MLflow Models of the candidate run
    registered: dict[str, Any] | None = None  # rank 1: the Model Registry version

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchedModel:
        return cls(rank=int(data["rank"]), arch=Arch.from_dict(data["arch"]), name=str(data["name"]),
                   val_top1=float(data["val_top1"]), test_top1=float(data["test_top1"]),
                   params=int(data["params"]), macs=int(data["macs"]), latency_ms=data.get("latency_ms"),
                   exports=dict(data.get("exports") or {}), weights=str(data.get("weights", "")),
                   arch_json=str(data.get("arch_json", "")), measured_latency_ms=data.get("measured_latency_ms"),
                   val_other_top1=data.get("val_other_top1"), model_uris=dict(data.get("model_uris") or {}),
                   registered=data.get("registered"))


@dataclass(frozen=True)
class SearchReport:
    """A finished search: its best models (rank order), every evaluated candidate and the Pareto front."""

    path: Path
    best: tuple[SearchedModel, ...]
    evaluated: tuple[Evaluation, ...]
    pareto_front: tuple[Evaluation, ...]
    evaluations: int
    failed: int
    extra: dict[str, Any] = field(default_factory=dict)  # cache hits, evaluator stats, failed trials, ...

    @property
    def champion(self) -> SearchedModel | None:
        """The rank-1 model; None when no candidate met the budgets."""
        return self.best[0] if self.best else None

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> SearchReport:
        known = ("best", "evaluated", "pareto_front", "evaluations", "failed")
        return cls(path=path, best=tuple(SearchedModel.from_dict(b) for b in data["best"]),
                   evaluated=tuple(Evaluation.from_dict(e) for e in data["evaluated"]),
                   pareto_front=tuple(Evaluation.from_dict(e) for e in data["pareto_front"]),
                   evaluations=int(data["evaluations"]), failed=int(data["failed"]),
                   extra={k: v for k, v in data.items() if k not in known})


def read_search(path: str | Path) -> SearchReport:
    """The search whose results.json is `path`; one ValueError naming the file for anything else."""
    path = Path(path)
    try:
        return SearchReport.from_dict(json.loads(path.read_text()), path)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: expected the results.json of a finished search "
                         "(`python -m autovit_ray.search` writes it last)") from None
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a finished search's results.json (expected 'best', 'evaluated', "
                         f"'pareto_front', 'evaluations', 'failed'): {exc!r}") from None


__all__ = ["SearchReport", "SearchedModel", "read_search"]
