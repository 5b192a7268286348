"""Latency profiling: backends, the per-module lookup table (Parquet) and its predictor.

    from autovit_ray.latency import LatencyTable
    table = LatencyTable.load("lut.parquet", space=space, backend="torch-cpu")
    ms = table.predict_latency(arch)

The core imports nothing from Ray or MLflow. See docs/latency.md.
"""

import importlib
from typing import Any

# Submodule of each public name, imported on first use (PEP 562): `from autovit_ray.latency import
# BuildConfig` stays light, so CLIs answer --help without importing torch.
_SOURCES = {
    **dict.fromkeys(("BACKENDS", "CoreMLBackend", "LatencyBackend", "OnnxRuntimeBackend", "PreparedModel",
                     "RemoteBackend", "TorchCPUBackend", "backend_class", "backend_from_settings", "get_backend",
                     "register_backend"), "backends"),
    "BuildConfig": "build_config", "build_table": "build",
    "LatencyTable": "lut", "merge_tables": "lut",
    **dict.fromkeys(("LatencyStats", "measure_interleaved", "measure_models"), "measure"),
    "arch_module_keys": "modules", "enumerate_module_keys": "modules",
    **dict.fromkeys(("ValidationReport", "error_metrics", "kendall_tau", "validate_table", "write_report"),
                    "validate"),
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'autovit_ray.latency' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)


__all__ = [
    "BACKENDS", "BuildConfig", "CoreMLBackend", "LatencyBackend", "LatencyStats", "LatencyTable",
    "OnnxRuntimeBackend", "PreparedModel", "RemoteBackend", "TorchCPUBackend", "ValidationReport",
    "arch_module_keys", "backend_class", "backend_from_settings", "build_table", "enumerate_module_keys",
    "error_metrics", "get_backend", "kendall_tau", "measure_interleaved", "measure_models", "merge_tables",
    "register_backend", "validate_table", "write_report",
]
