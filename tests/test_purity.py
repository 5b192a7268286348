"""The core imports neither Ray nor MLflow: only the adapters (`autovit_ray.adapters`) and the
entry points and tracking modules built on them do."""

from __future__ import annotations

import subprocess
import sys

DATA_MODULES = tuple(f"autovit_ray.data.{name}" for name in (
    "config", "sources", "splits", "data_path", "transforms", "augment", "cache", "batches", "prepared", "loaders"))
CORE_MODULES = (
    "autovit_ray.space", "autovit_ray.plan", "autovit_ray.nn", "autovit_ray.evaluation",
    "autovit_ray.latency.modules", "autovit_ray.latency.lut", "autovit_ray.latency.extract",
    "autovit_ray.search.algorithms", "autovit_ray.search.pareto", "autovit_ray.search.synthetic",
    "autovit_ray.search.evaluate", "autovit_ray.training.loop", "autovit_ray.training.optim",
    "autovit_ray.training.config", "autovit_ray.data", *DATA_MODULES, "autovit_ray.distill",
    "autovit_ray.checkpoint", "autovit_ray.models", "autovit_ray.config", "autovit_ray.search.config",
    "autovit_ray.training.reference", "autovit_ray.placement", "autovit_ray.extensions",
)


def test_core_modules_import_no_ray_or_mlflow():
    code = (f"import importlib, sys\nfor name in {CORE_MODULES!r}:\n    importlib.import_module(name)\n"
            "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]\nassert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_adapters_import_ray_and_mlflow_only_when_called():
    code = ("import sys, autovit_ray.adapters, autovit_ray.tracking\n"
            "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]\nassert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
