"""Latency backends: one small interface over torch eager, ONNX Runtime, CoreML and remote devices.

A backend turns a static module (or an exported model file) and an input shape into a
`PreparedModel` whose `time(repeats)` returns per-call latencies in milliseconds. Preparing is
separate from timing so callers can interleave the repeats of many candidates (slow drifts and
bursts of load from other processes then hit every candidate alike, not one of them).

Every backend records a device fingerprint (CPU model, OS, library versions and its own
settings); a latency table stores it, and validating a table elsewhere warns about a mismatch.

Clocks. `wall` is the latency a user sees. `thread_cpu` is the CPU time of the calling thread:
with one compute thread it equals the wall latency on an idle core, but it does not count the
time the thread waits while another process holds the core. On a shared machine (these dev
boxes: 2 cores, other jobs running) wall-clock medians move by 40-100% between rounds, the thread
clock by a few percent, so `thread_cpu` at 1 thread is the default for in-process CPU backends.
Use `wall` on a dedicated device, and always with more than one thread.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import export
from ..extensions import Registry

CLOCKS = ("wall", "thread_cpu")
Model = nn.Module | str | Path


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo, macOS sysctl), or platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or "unknown"


def host_fingerprint() -> dict[str, Any]:
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "os": platform.platform(),
            "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__}


def _clock(name: str) -> Callable[[], float]:
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; allowed: {list(CLOCKS)}")
    return time.perf_counter if name == "wall" else time.thread_time


def _check_threads(threads: int, clock: str) -> None:
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if clock == "thread_cpu" and threads != 1:
        raise ValueError("clock 'thread_cpu' times only the calling thread, so it needs threads=1; "
                         f"got threads={threads} (use clock 'wall')")


class PreparedModel(ABC):
    """A model ready to run on a backend with a fixed input."""

    @abstractmethod
    def time(self, repeats: int, inner: int = 1) -> list[float]:
        """`repeats` samples in ms; each sample is the mean of `inner` back-to-back calls (several
        calls per sample keep clock overhead out of sub-millisecond modules)."""

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing to release
        """Release files and sessions."""


class LatencyBackend(ABC):
    """A place to time models. Subclasses set `name` and implement `prepare` and `settings`; the
    constructor's keyword parameters are the backend's options (`options`), and `settings()` returns
    them (plus anything worth recording) so that a table's backend can be rebuilt from its record."""

    name: str = ""

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """What a user may set: the constructor's named parameters (`get_backend(name, **options)`, the
        profile command's backend flags, a table's recorded settings)."""
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # less `self`
        return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What was chosen for this backend (threads, clock, compute units, command ...)."""

    @abstractmethod
    def prepare(self, model: Model, input_shape: tuple[int, ...]) -> PreparedModel:
        """Make `model` (an eval-mode static module, or an exported file) ready to time."""

    def check_available(self) -> None:  # noqa: B027 - optional hook; most backends run anywhere
        """Raise ValueError if this backend cannot time anything on this machine."""

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.name, "settings": self.settings(), **host_fingerprint()}

    def measure(self, model: Model, input_shape: tuple[int, ...], repeats: int = 20,
                inner: int = 1) -> list[float]:
        """Prepare, time `repeats` samples, release: one model alone (no interleaving)."""
        prepared = self.prepare(model, input_shape)
        try:
            return prepared.time(repeats, inner)
        finally:
            prepared.close()


def _as_module(model: Model, backend: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"the {backend} backend times a torch module, got {type(model).__name__} "
                         f"{model!s}")
    return model.eval()


# --------------------------------------------------------------------------------------------
# torch-cpu
# --------------------------------------------------------------------------------------------


class _TorchPrepared(PreparedModel):
    def __init__(self, module: nn.Module, example: torch.Tensor, clock: Callable[[], float], threads: int,
                 warmup: int):
        self.module, self.example, self.clock, self.threads = module, example, clock, threads
        self.time(warmup)

    def time(self, repeats: int, inner: int = 1) -> list[float]:
        out = []
        # The thread count is process-wide: set it for the timing only, so timing inside a test
        # or training process leaves that process's setting alone.
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for _ in range(repeats):
                    start = self.clock()
                    for _ in range(inner):
                        self.module(self.example)
                    out.append((self.clock() - start) * 1e3 / inner)
        finally:
            torch.set_num_threads(previous)
        return out


def steady_allocator() -> bool:
    """Make glibc's malloc keep freed memory for reuse (fixed mmap threshold of 32 MiB, no trimming).

    By default glibc serves large blocks (a 256 px feature map, an attention matrix) with mmap,
    raises that threshold as blocks are freed, and trims the heap: whether a forward pass
    page-faults on fresh memory then depends on what the process allocated before. Measured here:
    the largest XXS subnet at 256 px took ~2,800 page faults per pass in one process history and
    none in another, which made the same subnet's latency differ by up to ~10% between the table
    build and the validation run. Inference runtimes avoid this with arenas; this is eager torch's
    equivalent. Process-wide and permanent (memory is retained for reuse). Returns False where
    there is no glibc (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**30))


class TorchCPUBackend(LatencyBackend):
    """Eager PyTorch on the CPU, batch as in the shape, `torch.inference_mode`, a fixed thread count,
    and (by default) a steady allocator (`steady_allocator`)."""

    name = "torch-cpu"

    def __init__(self, threads: int = 1, clock: str = "thread_cpu", warmup: int = 3,
                 steady_malloc: bool = True) -> None:
        _check_threads(threads, clock)
        _clock(clock)
        self.threads, self.clock, self.warmup = threads, clock, warmup
        self.steady_malloc = steady_malloc and steady_allocator()

    def settings(self) -> dict[str, Any]:
        return {"threads": self.threads, "clock": self.clock, "warmup": self.warmup,
                "steady_malloc": self.steady_malloc, "mkldnn": bool(torch.backends.mkldnn.is_available())}

    def prepare(self, model: Model, input_shape: tuple[int, ...]) -> PreparedModel:
        example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        return _TorchPrepared(_as_module(model, self.name), example, _clock(self.clock), self.threads, self.warmup)


# --------------------------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------------------------


class _OnnxPrepared(PreparedModel):
    def __init__(self, session: Any, example: np.ndarray, clock: Callable[[], float], warmup: int,
                 tmp: tempfile.TemporaryDirectory | None):
        self.session, self.clock, self._tmp = session, clock, tmp
        self.feed = {session.get_inputs()[0].name: example}
        self.time(warmup)

    def time(self, repeats: int, inner: int = 1) -> list[float]:
        out = []
        for _ in range(repeats):
            start = self.clock()
            for _ in range(inner):
                self.session.run(None, self.feed)
            out.append((self.clock() - start) * 1e3 / inner)
        return out

    def close(self) -> None:
        self.session = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class OnnxRuntimeBackend(LatencyBackend):
    """ONNX Runtime's CPU execution provider on the ONNX export (opset 17, full graph optimisation,
    sequential execution, a fixed intra-op thread count)."""

    name = "onnxruntime"

    def __init__(self, threads: int = 1, clock: str = "thread_cpu", warmup: int = 3) -> None:
        _check_threads(threads, clock)
        _clock(clock)
        self.threads, self.clock, self.warmup = threads, clock, warmup

    def settings(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"threads": self.threads, "clock": self.clock, "warmup": self.warmup,
                "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__,
                "opset": export.ONNX_OPSET}

    def prepare(self, model: Model, input_shape: tuple[int, ...]) -> PreparedModel:
        import onnxruntime as ort

        tmp = None
        if isinstance(model, nn.Module):
            tmp = tempfile.TemporaryDirectory(prefix="autovit-onnx-")
            path = export.export_onnx(_as_module(model, self.name), torch.zeros(*input_shape),
                                      Path(tmp.name) / "model.onnx")
        else:
            path = Path(model)
            if path.suffix != ".onnx" or not path.is_file():
                raise ValueError(f"the onnxruntime backend needs a torch module or an existing .onnx file, "
                                 f"got {model}")
        options = ort.SessionOptions()
        # intra_op_num_threads=1 runs every kernel on the calling thread (so the thread clock is exact)
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        example = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        return _OnnxPrepared(session, example, _clock(self.clock), self.warmup, tmp)


# --------------------------------------------------------------------------------------------
# coreml
# --------------------------------------------------------------------------------------------

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


class _CoreMLPrepared(PreparedModel):
    def __init__(self, mlmodel: Any, example: np.ndarray, warmup: int,
                 tmp: tempfile.TemporaryDirectory | None):
        self.mlmodel, self._tmp = mlmodel, tmp
        self.feed = {mlmodel.get_spec().description.input[0].name: example}
        self.time(warmup)

    def time(self, repeats: int, inner: int = 1) -> list[float]:
        out = []
        for _ in range(repeats):
            start = time.perf_counter()  # the work may run on the GPU / Neural Engine: wall only
            for _ in range(inner):
                self.mlmodel.predict(self.feed)
            out.append((time.perf_counter() - start) * 1e3 / inner)
        return out

    def close(self) -> None:
        self.mlmodel = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class CoreMLBackend(LatencyBackend):
    """CoreML `MLModel.predict` on macOS (an ML program converted from `torch.export`). On Linux
    converting works (`convert`) but timing raises: `MLModel.predict` exists only on macOS."""

    name = "coreml"

    def __init__(self, compute_units: str = "ALL", warmup: int = 5) -> None:
        if compute_units not in COMPUTE_UNITS:
            raise ValueError(f"unknown CoreML compute units {compute_units!r}; allowed: {list(COMPUTE_UNITS)}")
        self.compute_units, self.warmup = compute_units, warmup

    def settings(self) -> dict[str, Any]:
        import coremltools as ct

        return {"compute_units": self.compute_units, "warmup": self.warmup, "clock": "wall",
                "coremltools": ct.__version__, "format": "mlprogram"}

    def check_available(self) -> None:
        if sys.platform != "darwin":
            raise ValueError(f"CoreML timing needs macOS (MLModel.predict runs only there); this is "
                             f"{platform.system()}. Converting works here: CoreMLBackend().convert(...) "
                             "or autovit_ray.export.export_coreml; to time on an iPhone use the 'remote' "
                             "backend (docs/latency.md)")

    def convert(self, model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
        """Convert to a .mlpackage (works on Linux too)."""
        return export.export_coreml(_as_module(model, self.name), torch.zeros(*input_shape), path)

    def prepare(self, model: Model, input_shape: tuple[int, ...]) -> PreparedModel:
        self.check_available()
        import coremltools as ct

        tmp = None
        if isinstance(model, nn.Module):
            tmp = tempfile.TemporaryDirectory(prefix="autovit-coreml-")
            path = self.convert(model, input_shape, Path(tmp.name) / "model.mlpackage")
        else:
            path = Path(model)
            if path.suffix != ".mlpackage" or not path.exists():
                raise ValueError(f"the coreml backend needs a torch module or an existing .mlpackage, got {model}")
        mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[self.compute_units])
        example = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        return _CoreMLPrepared(mlmodel, example, self.warmup, tmp)


# --------------------------------------------------------------------------------------------
# remote
# --------------------------------------------------------------------------------------------

REMOTE_FORMATS = ("onnx", "coreml", "torchscript")


class _RemotePrepared(PreparedModel):
    def __init__(self, backend: RemoteBackend, path: Path, input_shape: tuple[int, ...],
                 tmp: tempfile.TemporaryDirectory | None):
        self.backend, self.path, self.input_shape, self._tmp = backend, path, input_shape, tmp

    def time(self, repeats: int, inner: int = 1) -> list[float]:
        return self.backend.run_command(self.path, self.input_shape, repeats * inner, repeats)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class RemoteBackend(LatencyBackend):
    """Times on a device the host cannot run: exports the model file and runs a user command.

    `command` is a template split like a shell command line (no shell is started; wrap in
    `bash -c '...'` for pipes). Placeholders: {model} (the exported file), {shape} (e.g.
    1,3,256,256), {repeats}, {warmup}. The command must print one JSON object on stdout:
    `{"latencies_ms": [..], "device": {...optional...}}`. See docs/latency.md and
    `python -m autovit_ray.latency.remote_example`.
    """

    name = "remote"

    def __init__(self, command: str, export_format: str = "onnx", warmup: int = 5,
                 timeout_s: float = 600.0) -> None:
        if not command or not command.strip():
            raise ValueError("the remote backend needs a command, e.g. "
                             "'python -m autovit_ray.latency.remote_example {model} --shape {shape} "
                             "--repeats {repeats}'")
        if export_format not in REMOTE_FORMATS:
            raise ValueError(f"unknown export format {export_format!r}; allowed: {list(REMOTE_FORMATS)}")
        try:
            shlex.split(command)
            command.format(model="m", shape="s", repeats=1, warmup=0)
        except (ValueError, KeyError, IndexError) as exc:
            raise ValueError(f"malformed remote command template {command!r}: {exc}; placeholders are "
                             "{model}, {shape}, {repeats}, {warmup}") from None
        self.command, self.export_format = command, export_format
        self.warmup, self.timeout_s = warmup, timeout_s
        self.remote_device: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        return {"command": self.command, "export_format": self.export_format, "warmup": self.warmup}

    def fingerprint(self) -> dict[str, Any]:
        # The timing happens elsewhere: the host's CPU is irrelevant, the remote's report is not.
        return {"backend": self.name, "settings": self.settings(), "remote_device": self.remote_device,
                "host": host_fingerprint()}

    def export(self, model: nn.Module, input_shape: tuple[int, ...], directory: Path) -> Path:
        model = _as_module(model, self.name)
        example = torch.zeros(*input_shape)
        if self.export_format == "onnx":
            return export.export_onnx(model, example, directory / "model.onnx")
        if self.export_format == "coreml":
            return export.export_coreml(model, example, directory / "model.mlpackage")
        return export.export_torchscript(model, example, directory / "model.ts.pt")

    def prepare(self, model: Model, input_shape: tuple[int, ...]) -> PreparedModel:
        tmp = None
        if isinstance(model, nn.Module):
            tmp = tempfile.TemporaryDirectory(prefix="autovit-remote-")
            path = self.export(model, input_shape, Path(tmp.name))
        else:
            path = Path(model)
            if not path.exists():
                raise ValueError(f"model file {path} does not exist")
        return _RemotePrepared(self, path, tuple(input_shape), tmp)

    def run_command(self, path: Path, input_shape: tuple[int, ...], repeats: int,
                    samples: int | None = None) -> list[float]:
        """Run the command once; return its latencies (grouped into `samples` means if given)."""
        argv = [part.format(model=str(path), shape=",".join(map(str, input_shape)), repeats=repeats,
                            warmup=self.warmup) for part in shlex.split(self.command)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError:
            raise ValueError(f"remote command not found: {argv[0]!r}") from None
        except subprocess.TimeoutExpired:
            raise ValueError(f"remote command timed out after {self.timeout_s:g} s: {shlex.join(argv)}") from None
        if done.returncode != 0:
            raise ValueError(f"remote command failed (exit {done.returncode}): {shlex.join(argv)}\n"
                             f"{done.stderr.strip()[-2000:]}")
        latencies, device = parse_remote_output(done.stdout)
        if len(latencies) != repeats:
            raise ValueError(f"remote command printed {len(latencies)} latencies, asked for {repeats}")
        if device:
            self.remote_device = device
        if samples and samples < repeats:
            group = repeats // samples
            latencies = [float(np.mean(latencies[i * group:(i + 1) * group])) for i in range(samples)]
        return latencies


def parse_remote_output(stdout: str) -> tuple[list[float], dict[str, Any]]:
    """The `latencies_ms` list and the optional `device` report from the last line of stdout."""
    lines = stdout.strip().splitlines()
    if not lines:
        raise ValueError("remote command printed nothing; it must print "
                         '{"latencies_ms": [...]} as the last line of stdout')
    try:
        data = json.loads(lines[-1])
        values = [float(v) for v in data["latencies_ms"]]
        device = data.get("device") or {}
    except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"remote command output is not {{\"latencies_ms\": [numbers]}} JSON "
                         f"({type(exc).__name__}: {exc}); last line: {lines[-1][:200]!r}") from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"remote latencies must be positive finite numbers, got {values[:10]}")
    return values, device if isinstance(device, dict) else {"report": str(device)}


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------


def _check_backend(name: str, entry: Any) -> None:
    if not (isinstance(entry, type) and issubclass(entry, LatencyBackend)):
        raise ValueError(f"latency backend {name!r} must be a LatencyBackend subclass, got {entry!r}")
    if entry.name != name:
        raise ValueError(f"latency backend class {entry.__qualname__} says name = {entry.name!r} but is registered "
                         f"as {name!r}: the table records the class's name, so the two must be one")


# Installed packages add theirs through entry points of group "autovit_ray.backends" (docs/extending.md).
BACKENDS: Registry[type[LatencyBackend]] = Registry("latency backend", "autovit_ray.backends", check=_check_backend)
for _builtin in (TorchCPUBackend, OnnxRuntimeBackend, CoreMLBackend, RemoteBackend):
    BACKENDS.register(_builtin.name, _builtin)


def register_backend(name: str, *, replace: bool = False) -> Callable[[type[LatencyBackend]], type[LatencyBackend]]:
    """Class decorator: `@register_backend("my-npu")` over a `LatencyBackend` subclass whose `name` is
    "my-npu" makes it a backend of `get_backend`, the profile command and the pipeline."""
    return BACKENDS.register(name, replace=replace)


def backend_class(name: str) -> type[LatencyBackend]:
    """The registered backend class of `name` (ValueError naming the registered ones otherwise)."""
    return BACKENDS.get(name)


def get_backend(name: str, **settings: Any) -> LatencyBackend:
    """A backend by name with its settings, e.g. `get_backend("torch-cpu", threads=1)`."""
    cls = backend_class(name)
    try:
        return cls(**settings)
    except TypeError as exc:
        raise ValueError(f"bad settings for backend {name!r}: {exc}; its options are {list(cls.options())}") from None


def backend_from_settings(name: str, settings: dict[str, Any], **overrides: Any) -> LatencyBackend:
    """Rebuild the backend a table was measured with: its recorded settings that are options of the
    backend (the rest are records: library versions, the provider, ...), then `overrides`."""
    options = backend_class(name).options()
    return get_backend(name, **{**{k: v for k, v in settings.items() if k in options}, **overrides})
