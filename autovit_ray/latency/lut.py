"""The latency lookup table (LUT): per-module latencies in Parquet, and the predictor.

One row per (method, module key). Two methods are stored side by side:
- `isolated`: each module timed alone with its real input shape;
- `in_context`: each module's share of whole-model latency, estimated from whole reference models
  (see `build.py`).
Plus one `constant/r<res>` row per method and resolution (fitted on the reference archs). The
table's `method` is the one that predicted held-out reference archs better at build time; it is
what `predict_latency` uses unless told otherwise.

The Parquet schema metadata (key `autovit_latency`) records the supernet, the space fingerprint,
the backend and its settings, the device fingerprint, the resolutions, the repeat counts, the
reference archs with their measured latencies, and the cross-validated error of each method.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..plan import BlockSpec, front_plan, transformer_stage_plan
from ..space import Arch, SearchSpace, space_from_dict, yaml_dict_from_record
from ._files import atomic_path
from .modules import arch_module_keys, blocks_modules, constant_key, head_key, key_kind, key_resolution

FORMAT_VERSION = 1
METADATA_KEY = b"autovit_latency"
METHODS = ("isolated", "in_context")

SCHEMA = pa.schema([
    ("supernet", pa.string()),
    ("space_fingerprint", pa.string()),
    ("backend", pa.string()),
    ("device_id", pa.string()),
    ("method", pa.string()),
    ("module_key", pa.string()),
    ("kind", pa.string()),
    ("resolution", pa.int32()),
    ("input_shape", pa.list_(pa.int32())),
    ("latency_ms", pa.float64()),  # the value the predictor adds up
    ("median_ms", pa.float64()),  # timing statistics of the isolated measurement (null if fitted)
    ("mean_ms", pa.float64()),
    ("std_ms", pa.float64()),
    ("p10_ms", pa.float64()),
    ("p90_ms", pa.float64()),
    ("samples", pa.int32()),
    ("timestamp", pa.timestamp("s", tz="UTC")),
])


@dataclass
class ModuleRow:
    method: str
    module_key: str
    latency_ms: float
    input_shape: tuple[int, ...] = ()
    stats: Mapping[str, float | int] | None = None  # LatencyStats.to_dict() of a timed module
    timestamp: float = field(default_factory=time.time)


class LatencyTable:
    """Module latencies of one supernet on one backend and device, at one or more resolutions."""

    def __init__(self, space: SearchSpace, backend: str, rows: Sequence[ModuleRow], metadata: Mapping[str, Any],
                 method: str | None = None) -> None:
        self.space = space
        self.backend = backend
        self.metadata = dict(metadata)
        self.num_classes = int(self.metadata.get("num_classes", 1000))
        self.rows = list(rows)
        self.values: dict[str, dict[str, float]] = {}
        for row in self.rows:
            self.values.setdefault(row.method, {})[row.module_key] = float(row.latency_ms)
        if not self.values:
            raise ValueError("a latency table needs at least one module row")
        self.resolutions = tuple(sorted({key_resolution(k) for v in self.values.values() for k in v}))
        self._part_sums: dict[str, dict[tuple, Any]] = {}
        chosen = method or self.metadata.get("method") or next(iter(self.values))
        self.method = self._check_method(chosen)

    # -- identity --------------------------------------------------------------------------------
    @property
    def supernet(self) -> str:
        return self.space.name

    @property
    def space_fingerprint(self) -> str:
        return self.space.fingerprint()

    @property
    def device_id(self) -> str:
        return str(self.metadata.get("device_id", ""))

    @property
    def device(self) -> dict[str, Any]:
        return dict(self.metadata.get("device_fingerprint", {}))

    @property
    def backend_settings(self) -> dict[str, Any]:
        return dict(self.metadata.get("backend_settings", {}))

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.values)

    def __repr__(self) -> str:
        return (f"LatencyTable({self.supernet!r}, backend={self.backend!r}, resolutions={list(self.resolutions)}, "
                f"method={self.method!r}, modules={len(self.values[self.method])})")

    def _check_method(self, method: str) -> str:
        if method not in self.values:
            raise ValueError(f"latency table has no method {method!r}; it has {list(self.values)}")
        return method

    # -- prediction ------------------------------------------------------------------------------
    def latency(self, key: str, method: str | None = None) -> float:
        values = self.values[self._check_method(method) if method else self.method]
        try:
            return values[key]
        except KeyError:
            raise self._missing(key) from None

    def _missing(self, key: str) -> ValueError:
        resolution = key_resolution(key)
        if resolution not in self.resolutions:
            return ValueError(f"resolution {resolution} is not in this latency table (built for "
                              f"{list(self.resolutions)} on {self.backend}); build it with --resolution {resolution}")
        return ValueError(f"module {key!r} is missing from the latency table of supernet {self.supernet!r} "
                          f"({self.backend}); the arch does not belong to the space the table was built for, "
                          "or the table is incomplete")

    def predict_latency(self, arch: Arch, method: str | None = None) -> float:
        """Predicted latency of `arch` in ms: the sum of its modules plus the resolution's constant.
        Raises ValueError for an arch of another supernet, resolution or a module not in the table.

        Sums are cached per part (the stem + MBConv stages; each transformer stage with its input),
        of which a space has only a few hundred, so a call is a handful of dict lookups."""
        if arch.supernet != self.space.name:
            raise ValueError(f"arch is from supernet {arch.supernet!r}, this latency table is for "
                             f"{self.space.name!r}")
        method = self._check_method(method) if method else self.method
        cache = self._part_sums.setdefault(method, {})
        r = arch.resolution
        front = (r, arch.stem_width, arch.mbconv_widths, arch.mbconv_depths)
        hit = cache.get(front)
        if hit is None:
            blocks = front_plan(self.space, r, arch.stem_width, arch.mbconv_widths, arch.mbconv_depths)
            hit = cache[front] = (self._sum(blocks, method), blocks[-1].size_out, blocks[-1].out_width)
        total, size, cin = hit
        for i in range(len(arch.transformer_widths)):
            width = arch.transformer_widths[i]
            part = (r, i, size, cin, width, arch.transformer_depths[i], arch.transformer_heads[i],
                    arch.transformer_mlp_ratios[i])
            stage = cache.get(part)
            if stage is None:
                blocks = transformer_stage_plan(self.space, *part)
                stage = cache[part] = (self._sum(blocks, method), blocks[-1].size_out)
            total += stage[0]
            size, cin = stage[1], width
        return total + self.latency(head_key(r, size, cin, self.num_classes), method) + \
            self.latency(constant_key(r), method)

    def _sum(self, blocks: Sequence[BlockSpec], method: str) -> float:
        return sum(self.latency(key, method) for key, _ in blocks_modules(blocks))

    def predict_breakdown(self, arch: Arch, method: str | None = None) -> dict[str, float]:
        """Predicted ms per module kind (stem, mbconv, frame, layer, head, constant)."""
        out: dict[str, float] = {}
        for key in [*arch_module_keys(arch, self.space, self.num_classes), constant_key(arch.resolution)]:
            out[key_kind(key)] = out.get(key_kind(key), 0.0) + self.latency(key, method)
        return out

    # -- compatibility ----------------------------------------------------------------------------
    def check(self, space: SearchSpace | str | None = None, backend: str | None = None,
              resolutions: Sequence[int] | None = None) -> None:
        """Raise ValueError unless the table was built for this space, backend and resolutions."""
        if space is not None:
            _check_space(self.space, space)
        if backend is not None and backend != self.backend:
            raise ValueError(f"latency table was measured on backend {self.backend!r}, not {backend!r}")
        missing = [r for r in (resolutions or ()) if r not in self.resolutions]
        if missing:
            raise ValueError(f"latency table has resolutions {list(self.resolutions)}, not {missing}; "
                             "build it at those resolutions")

    # -- files ------------------------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        device_id, fingerprint = self.device_id, self.space_fingerprint
        columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        for row in self.rows:
            stats = row.stats or {}
            values = {
                "supernet": self.supernet, "space_fingerprint": fingerprint, "backend": self.backend,
                "device_id": device_id, "method": row.method, "module_key": row.module_key,
                "kind": key_kind(row.module_key), "resolution": key_resolution(row.module_key),
                "input_shape": list(row.input_shape), "latency_ms": float(row.latency_ms),
                "median_ms": stats.get("median_ms"), "mean_ms": stats.get("mean_ms"),
                "std_ms": stats.get("std_ms"), "p10_ms": stats.get("p10_ms"), "p90_ms": stats.get("p90_ms"),
                "samples": stats.get("samples"), "timestamp": int(row.timestamp)}
            for name, value in values.items():
                columns[name].append(value)
        # "profile": the input profile's name under the key the file format has always had
        metadata = {**self.metadata, "format_version": FORMAT_VERSION, "supernet": self.supernet,
                    "space_fingerprint": fingerprint, "profile": self.space.input_profile.name,
                    "space": self.space.to_dict(), "backend": self.backend, "method": self.method,
                    "resolutions": list(self.resolutions), "num_classes": self.num_classes}
        table = pa.table({name: pa.array(columns[name], type=SCHEMA.field(name).type) for name in SCHEMA.names},
                         schema=SCHEMA)
        return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})

    def save(self, path: str | Path) -> Path:
        """Write Parquet atomically (a temporary file in the same folder, then os.replace)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            pq.write_table(self.to_arrow(), tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace | str | None = None, backend: str | None = None,
             resolutions: Sequence[int] | None = None, method: str | None = None) -> LatencyTable:
        """Read a table and check it against what the caller expects. `space` may be a SearchSpace
        (its fingerprint must match) or a supernet name; without one, the table's own space record is
        used. Raises ValueError for a corrupt file or any mismatch."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"latency table {path} does not exist")
        try:
            arrow = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{path} is not a readable Parquet latency table: {exc}") from None
        raw = (arrow.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError(f"{path} is a Parquet file but not an autovit latency table (no "
                             f"{METADATA_KEY.decode()!r} metadata)")
        try:
            metadata = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: corrupt latency-table metadata ({exc})") from None
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: latency-table format {metadata.get('format_version')!r}, this code reads "
                             f"{FORMAT_VERSION}; rebuild the table")
        missing = [name for name in SCHEMA.names if name not in arrow.column_names]
        if missing:
            raise ValueError(f"{path}: latency table lacks the columns {missing}")
        table_space = _space_from_metadata(metadata, path)
        if space is not None:
            _check_space(table_space, space)
            if isinstance(space, SearchSpace):
                table_space = space
        data = arrow.to_pydict()
        rows = []
        for i in range(arrow.num_rows):
            latency = data["latency_ms"][i]
            if latency is None or latency != latency:  # null or NaN
                raise ValueError(f"{path}: module {data['module_key'][i]!r} has no latency value")
            stats = None if data["median_ms"][i] is None else {
                name: data[name][i] for name in ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "samples")}
            rows.append(ModuleRow(data["method"][i], data["module_key"][i], latency,
                                  tuple(data["input_shape"][i] or ()), stats,
                                  data["timestamp"][i].timestamp() if data["timestamp"][i] else 0.0))
        if any(s != metadata["supernet"] for s in set(data["supernet"])) or \
                any(b != metadata["backend"] for b in set(data["backend"])):
            raise ValueError(f"{path}: rows disagree with the table metadata (supernet/backend)")
        table = cls(table_space, metadata["backend"], rows, metadata, method=method)
        table.check(space=space, backend=backend, resolutions=resolutions)
        return table


def _space_from_metadata(metadata: Mapping[str, Any], path: Path) -> SearchSpace:
    """Rebuild the space from the table's own record, so a table is usable without its YAML."""
    try:
        space = space_from_dict(yaml_dict_from_record(metadata["space"]), source=str(path))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: corrupt space record in the latency-table metadata ({exc!r})") from None
    if space.fingerprint() != metadata.get("space_fingerprint"):
        raise ValueError(f"{path}: the space record does not match its fingerprint "
                         f"{metadata.get('space_fingerprint')!r}; the file is corrupt")
    return space


def _check_space(table_space: SearchSpace, expected: SearchSpace | str) -> None:
    name = expected if isinstance(expected, str) else expected.name
    if name != table_space.name:
        raise ValueError(f"latency table is for supernet {table_space.name!r}, not {name!r}")
    if isinstance(expected, SearchSpace) and expected.fingerprint() != table_space.fingerprint():
        raise ValueError(f"latency table was built for space {table_space.name!r} (input profile "
                         f"{table_space.input_profile.name!r}, fingerprint {table_space.fingerprint()}), but the given "
                         f"space has fingerprint {expected.fingerprint()} (input profile {expected.input_profile.name!r}): "
                         "the space or its input profile differs; rebuild the table")


def choose_method(cv_mape: Mapping[str, Mapping[str, float]]) -> tuple[str, dict[str, float]]:
    """The method with the lower held-out MAPE averaged over resolutions, and those averages."""
    methods = sorted({m for per_res in cv_mape.values() for m in per_res})
    mean = {m: sum(per_res[m] for per_res in cv_mape.values()) / len(cv_mape) for m in methods}
    return min(mean, key=mean.__getitem__), mean


def merge_tables(tables: Sequence[LatencyTable]) -> LatencyTable:
    """One table from tables built separately (e.g. one resolution at a time) for the same space,
    backend and device. The method is re-chosen on the pooled cross-validation errors."""
    if not tables:
        raise ValueError("merge_tables needs at least one table")
    first = tables[0]
    seen: set[int] = set()
    for t in tables:
        if t.space_fingerprint != first.space_fingerprint or t.backend != first.backend:
            raise ValueError(f"cannot merge latency tables of different spaces or backends: {t!r} vs {first!r}")
        if t.device_id != first.device_id:
            raise ValueError(f"cannot merge latency tables from different devices ({t.device_id} vs "
                             f"{first.device_id}): {t.device.get('cpu_model')!r} vs {first.device.get('cpu_model')!r}")
        if seen & set(t.resolutions):
            raise ValueError(f"latency tables overlap at resolutions {sorted(seen & set(t.resolutions))}")
        seen |= set(t.resolutions)
    metadata = dict(first.metadata)
    for name in ("cv_mape", "ridge", "build_seconds", "quiet"):
        metadata[name] = {k: v for t in tables for k, v in t.metadata.get(name, {}).items()}
    metadata["references"] = [ref for t in tables for ref in t.metadata.get("references", [])]
    metadata["created"] = max(str(t.metadata.get("created", "")) for t in tables)
    method, mean = choose_method(metadata["cv_mape"])
    metadata["cv_mape_mean"], metadata["method"] = mean, method
    return LatencyTable(first.space, first.backend, [row for t in tables for row in t.rows], metadata, method=method)
