"""Export static subnets: TorchScript (trace), torch.export (.pt2), ONNX, CoreML (.mlpackage).

Every writer is atomic: it writes next to the target under a temporary name and renames, so a
crash never leaves a half-written model behind. CoreML converts from `torch.export` (the traced
path fails on MobileViT-style shape arithmetic with coremltools 9); predicting with the result
needs macOS, converting works on Linux.

`python -m autovit_ray.export --arch ... --checkpoint ... --format ...` exports a searched subnet
from a supernet checkpoint and checks the files against it (`autovit_ray.export_cli`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where a model is exported: the CLI's --help stays light
    import torch
    from torch import nn

FORMATS = ("torchscript", "torch_export", "onnx", "coreml")
SUFFIXES = {"torchscript": ".ts.pt", "torch_export": ".pt2", "onnx": ".onnx", "coreml": ".mlpackage"}
ONNX_OPSET = 17


def _atomic_write(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and move the result onto `target` (file or directory)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = tmp_dir / target.name
    try:
        write(tmp)
        if target.is_dir():
            # A directory cannot be replaced in one rename: move the old one aside first.
            old = tmp_dir / (target.name + ".old")
            os.replace(target, old)
            os.replace(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def example_input(resolution: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    import torch

    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def export_torchscript(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    import torch

    model = model.eval()

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes become constants: intended
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still supported
            traced = torch.jit.trace(model, (example,))
        traced.save(str(tmp))

    return _atomic_write(Path(path), write)


def export_torch_export(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    import torch

    program = torch.export.export(model.eval(), (example,))
    return _atomic_write(Path(path), lambda tmp: torch.export.save(program, str(tmp)))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """ONNX via torch's TorchScript-based exporter (dynamo=False; checked against onnxruntime)."""
    import torch

    if opset < 17:
        raise ValueError(f"ONNX opset must be >= 17 (LayerNormalization), got {opset}")
    model = model.eval()

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})

    return _atomic_write(Path(path), write)


def export_coreml(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """CoreML ML program (.mlpackage) converted from `torch.export`."""
    import coremltools as ct  # heavy import, only when needed
    import torch

    if Path(path).suffix != ".mlpackage":
        raise ValueError(f"a CoreML ML program is saved as a .mlpackage directory, got {path}")
    program = torch.export.export(model.eval(), (example,)).run_decompositions({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
    return _atomic_write(Path(path), lambda tmp: mlmodel.save(str(tmp)))


def check_onnx(path: str | Path, model: nn.Module, example: torch.Tensor) -> float:
    """Max relative error of onnxruntime's output against torch's (relative to max |logit|)."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": example.numpy()})
    with torch.no_grad():
        torch_out = model.eval()(example).numpy()
    return float(np.abs(onnx_out - torch_out).max() / max(np.abs(torch_out).max(), 1e-12))


def export_model(model: nn.Module, resolution: int, out_dir: str | Path, name: str,
                 formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """Write `model` in each of `formats` as `out_dir/name<suffix>`; return the paths."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; allowed: {list(FORMATS)}")
    example = example_input(resolution)
    writers = {"torchscript": export_torchscript, "torch_export": export_torch_export,
               "onnx": export_onnx, "coreml": export_coreml}
    return {fmt: writers[fmt](model, example, Path(out_dir) / f"{name}{SUFFIXES[fmt]}") for fmt in formats}
