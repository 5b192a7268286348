"""Where an arch comes from, as users name it in `--arch` (`python -m autovit_ray.export`, `train --arch`):
inline JSON, an arch JSON file, a search folder or its results.json (the search's best model), or an
MLflow run id (a search's candidate run or its parent)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .experiment import SEARCH_RESULTS
from .search.results import read_search
from .space import Arch

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def arch_from_run(run_id: str, tracking_uri: str) -> Arch:
    """The arch of a search's candidate run (params) or parent run (`best_arch` tag)."""
    from mlflow.exceptions import MlflowException

    from .adapters import mlflow_client

    try:
        run = mlflow_client(tracking_uri).get_run(run_id)
    except MlflowException:
        raise ValueError(f"unknown MLflow run id {run_id!r} in {tracking_uri} "
                         "(pass --mlflow-uri for another tracking store)") from None
    if "num_transformer_stages" in run.data.params:
        try:
            return Arch.from_params(run.data.params)
        except ValueError as exc:
            raise ValueError(f"MLflow run {run_id}: {exc}") from None
    if "best_arch" in run.data.tags:
        return Arch.from_json(run.data.tags["best_arch"])
    raise ValueError(f"MLflow run {run_id} holds no arch: expected a search candidate run (arch fields "
                     "as params) or a search's parent run (best_arch tag)")


def arch_from_search_results(path: Path) -> Arch:
    """The rank-1 model of a search's `results.json` (what `python -m autovit_ray.search` writes)."""
    champion = read_search(path).champion
    if champion is None:
        raise ValueError(f"{path}: the search found no model within its budgets (its 'best' list is empty)")
    return champion.arch


def resolve_arch(spec: str, tracking_uri: Callable[[], str]) -> Arch:
    """An Arch from inline JSON, an arch JSON file, a search directory or its results.json (the rank-1
    model), or an MLflow run id (`tracking_uri()` is only asked then)."""
    text = spec.strip()
    if text.startswith("{"):
        return Arch.from_json(text)
    path = Path(text).expanduser()
    if path.is_dir() and (path / SEARCH_RESULTS).is_file():
        return arch_from_search_results(path / SEARCH_RESULTS)
    if path.is_file():
        if path.name == SEARCH_RESULTS:
            return arch_from_search_results(path)
        try:
            return Arch.from_json(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if RUN_ID.match(text):
        return arch_from_run(text, tracking_uri())
    raise ValueError(f"--arch {spec!r} is neither inline JSON, an existing arch JSON file, a search directory "
                     "(with results.json) nor an MLflow run id (32 hex digits)")


__all__ = ["RUN_ID", "arch_from_run", "arch_from_search_results", "resolve_arch"]
