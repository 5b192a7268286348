"""Latency profiling: backends, the per-module lookup table (Parquet) and its predictor.

    from autovit_ray.latency import LatencyTable
    table = LatencyTable.load("lut.parquet", space=space, backend="torch-cpu")
    ms = table.predict_latency(arch)

The core imports nothing from Ray or MLflow. See docs/latency.md.
"""

from .backends import (
    BACKENDS,
    CoreMLBackend,
    LatencyBackend,
    OnnxRuntimeBackend,
    PreparedModel,
    RemoteBackend,
    TorchCPUBackend,
    backend_from_settings,
    get_backend,
)
from .build import BuildConfig, build_table
from .lut import LatencyTable, merge_tables
from .measure import LatencyStats, measure_interleaved
from .modules import arch_module_keys, enumerate_module_keys
from .validate import ValidationReport, error_metrics, kendall_tau, validate_table, write_report

__all__ = [
    "BACKENDS", "BuildConfig", "CoreMLBackend", "LatencyBackend", "LatencyStats", "LatencyTable",
    "OnnxRuntimeBackend", "PreparedModel", "RemoteBackend", "TorchCPUBackend", "ValidationReport",
    "arch_module_keys", "backend_from_settings", "build_table", "enumerate_module_keys", "error_metrics",
    "get_backend", "kendall_tau", "measure_interleaved", "merge_tables", "validate_table", "write_report",
]
