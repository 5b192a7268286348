"""`python -m autovit_ray.export`: a searched subnet as standalone, checked models.

    python -m autovit_ray.export --arch outputs/digits-demo/search/xxs-c2f/exports/x.arch.json \\
        --checkpoint outputs/digits-demo --supernet xxs --format torchscript,onnx,coreml --out exports/

`--arch` is an arch JSON file, inline JSON, a search directory (`<experiment>/search/<name>`) or its
`results.json` (the search's best model), an MLflow run id: a search's candidate (child) run
(its params are the arch fields) or a search's parent run (its `best_arch` tag), or a registered
model, ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` (then `--checkpoint` defaults to
the supernet checkpoint that version names). The subnet is
extracted from the supernet checkpoint, its BatchNorm is recalibrated on the calibration split
(as the search does), and `<name>.arch.json`, `<name>.pth` and each requested format are written
to `--out`. Every written model is run on the same input as the supernet's active path (with the
same recalibrated statistics) and must match it: TorchScript, torch.export, ONNX (onnxruntime) and
the `.pth` loaded through `timm.create_model("autovit", ...)`. CoreML is converted only: predicting
needs macOS, so on Linux it is not checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch where a model runs: --help and bad flags answer without it
    import torch
    from torch import nn

from autovit_ray.cli_exits import cli_main

from .arch_source import resolve_arch
from .blocks import stage_kind
from .experiment import Experiment
from .export import FORMATS, example_input, export_model
from .space import Arch, SearchSpace

MAX_REL_ERROR = 1e-4  # max |exported - supernet| / max |supernet logit|


class ExportCheckError(RuntimeError):
    """An exported model's outputs differ from the supernet's active path."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autovit_ray.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True,
                   help="arch JSON file, inline JSON, a search directory or its results.json (its best "
                        "model), an MLflow run id, or a registered model: models:/<name>@<alias> or "
                        "models:/<name>/<version>")
    p.add_argument("--checkpoint", default=None,
                   help="a supernet checkpoint directory, or an experiment directory with --supernet "
                        "(default for a models:/ --arch: the checkpoint its registered version names)")
    p.add_argument("--supernet", default=None, help="xxs, xs or s (when --checkpoint is an experiment)")
    p.add_argument("--format", default="torchscript,onnx,coreml",
                   help=f"comma-separated, of {','.join(FORMATS)}; empty: only the .arch.json + .pth")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--name", default=None, help="file name stem (default: the arch's name)")
    p.add_argument("--mlflow-uri", default=None,
                   help="for a run id (default: $MLFLOW_TRACKING_URI or sqlite in the experiment dir)")
    p.add_argument("--data-dir", default=None, help="override the checkpoint's data directory")
    p.add_argument("--calib-batches", type=int, default=None, help="BN recalibration batches (default all)")
    p.add_argument("--calib-size", type=int, default=None,
                   help="BN recalibration images, drawn from the training split (default: the checkpoint's "
                        "data.calib_size; give the search's --calib-size to export what it scored)")
    return p


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; allowed: {', '.join(FORMATS)}")
    return formats


def resolve_registered(args: argparse.Namespace) -> Any:
    """The registered model of a models:/ --arch, from --mlflow-uri, $MLFLOW_TRACKING_URI or the
    database of --checkpoint's experiment."""
    import os
    import tempfile

    from .adapters import default_tracking_uri
    from .checkpoint import resolve_checkpoint
    from .registry import resolve_model_uri

    uri = args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        if args.checkpoint is None:
            raise ValueError(f"--arch {args.arch} needs the tracking store that holds the registry: pass "
                             "--mlflow-uri (or set MLFLOW_TRACKING_URI) or --checkpoint of the experiment")
        uri = default_tracking_uri(Experiment.of_checkpoint(resolve_checkpoint(args.checkpoint, args.supernet)).root)
    return resolve_model_uri(args.arch, uri, Path(tempfile.mkdtemp(prefix="autovit-registry-")))


def check_registered_matches(registered: Any, space: SearchSpace, num_classes: int, checkpoint: Path) -> None:
    """A registered model must come from the checkpoint's supernet, class count and space: the same name
    and arch can mean another network in an edited space. A version logged before it carried the
    `space_fingerprint` tag is checked on name and class count only."""
    theirs = (registered.tags.get("supernet"), registered.num_classes)
    if theirs != (space.name, num_classes):
        raise ValueError(f"{registered.uri} (version {registered.version}) is a model of supernet {theirs[0]!r} "
                         f"with {theirs[1]} classes; the checkpoint {checkpoint} is supernet {space.name!r} with "
                         f"{num_classes} classes")
    fingerprint = registered.tags.get("space_fingerprint")
    if fingerprint is not None and fingerprint != space.fingerprint():
        raise ValueError(f"{registered.uri} (version {registered.version}) was searched in a space with fingerprint "
                         f"{fingerprint}; the checkpoint {checkpoint} is of space {space.name!r} (input profile "
                         f"{space.input_profile.name!r}) with fingerprint {space.fingerprint()}: pass the "
                         f"checkpoint the version was searched on (its checkpoint tag: "
                         f"{registered.tags.get('checkpoint')})")


def check_in_space(arch: Arch, space: SearchSpace, checkpoint: Path) -> None:
    try:
        space.validate(arch)
    except ValueError as exc:
        raise ValueError(f"the arch does not belong to the checkpoint's space ({space.name!r}, input profile "
                         f"{space.input_profile.name!r}, {checkpoint}): {exc}") from None


def export_notes(space: SearchSpace) -> dict[str, str]:
    """What each block kind of the space says an exporter should know (`StageKind.export_notes`)."""
    kinds = dict.fromkeys([s.kind for s in space.mbconv_stages] + [s.kind for s in space.transformer_stages])
    return {kind: notes for kind in kinds if (notes := stage_kind(kind).export_notes)}


def errors(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |reference|)."""
    abs_err = float(np.abs(output - reference).max())
    return abs_err, abs_err / max(float(np.abs(reference).max()), 1e-12)


def run_exported(fmt: str, path: Path, x: torch.Tensor) -> np.ndarray | None:
    """The exported model's output on `x`; None where it cannot run here (CoreML off macOS)."""
    import torch

    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still supported
            return torch.jit.load(str(path)).eval()(x).numpy()
    if fmt == "torch_export":
        with torch.no_grad():
            return torch.export.load(str(path)).module()(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": x.numpy()})[0]
    return None  # coreml: conversion only on Linux; prediction needs macOS (FP16 there: not asserted)


def check_outputs(outputs: dict[str, Callable[[], np.ndarray | None]], reference: np.ndarray,
                  max_rel: float = MAX_REL_ERROR) -> dict[str, dict[str, Any]]:
    """Compare each output with the reference; print one line each; raise ExportCheckError on a miss."""
    checks: dict[str, dict[str, Any]] = {}
    failed = []
    for label, run in outputs.items():
        out = run()
        if out is None:
            checks[label] = {"checked": False}
            why = "CoreML prediction needs macOS" if sys.platform != "darwin" else "not compared here"
            print(f"  {label:<14} not checked (converted only: {why})")
            continue
        abs_err, rel_err = errors(out, reference)
        ok = rel_err <= max_rel
        checks[label] = {"checked": True, "max_abs_error": abs_err, "max_rel_error": rel_err, "ok": ok}
        print(f"  {label:<14} max abs error {abs_err:.2e}, relative {rel_err:.2e}  {'ok' if ok else 'MISMATCH'}")
        if not ok:
            failed.append(label)
    if failed:
        raise ExportCheckError(f"outputs of {', '.join(failed)} differ from the supernet's active path by "
                               f"more than {max_rel:g} relative")
    return checks


def run(args: argparse.Namespace) -> dict[str, Any]:
    import timm
    import torch

    from .adapters import default_tracking_uri
    from .checkpoint import load_supernet, resolve_checkpoint
    from .data import build_loader
    from .evaluation import calibrated_subnet
    from .models import save_subnet
    from .registry import is_model_uri

    formats = parse_formats(args.format)
    for name in ("calib_batches", "calib_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    registered = None
    if is_model_uri(args.arch):
        registered = resolve_registered(args)
        arch = registered.arch
        if args.checkpoint is None:
            args.checkpoint = registered.tags.get("checkpoint")
    if args.checkpoint is None:
        raise ValueError("--checkpoint is required (a supernet checkpoint, or an experiment directory with "
                         "--supernet)")
    checkpoint = resolve_checkpoint(args.checkpoint, args.supernet)
    if registered is None:
        arch = resolve_arch(args.arch, lambda: default_tracking_uri(Experiment.of_checkpoint(checkpoint).root, args.mlflow_uri))
    supernet, space, config = load_supernet(checkpoint)
    if registered is not None:
        check_registered_matches(registered, space, supernet.num_classes, checkpoint)
    check_in_space(arch, space, checkpoint)
    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("calib_size", args.calib_size)) if v}
    data = dataclasses.replace(config.data, **overrides)

    start = time.perf_counter()
    subnet, reference = calibrated_subnet(supernet, arch, build_loader(data, "calib", resolution=arch.resolution),
                                          num_batches=args.calib_batches, with_reference=True)
    out = Path(args.out)
    name = args.name or str(arch)
    arch_path, weights = save_subnet(subnet, arch, out, name)
    paths = export_model(subnet, arch.resolution, out, name, formats) if formats else {}

    x = example_input(arch.resolution, seed=1)  # not the tracing input (seed 0)
    with torch.no_grad():
        expected = reference(x).numpy()

    def torch_output(model: nn.Module) -> Callable[[], np.ndarray]:
        def run_model() -> np.ndarray:
            with torch.no_grad():
                return model.eval()(x).numpy()
        return run_model

    def timm_model() -> nn.Module:
        return timm.create_model("autovit", arch=str(arch_path), num_classes=supernet.num_classes,
                                 checkpoint_path=str(weights), space=space)

    print(f"{arch}  ({arch.arch_hash}, supernet {space.name}, input profile {space.input_profile.name}, "
          f"{arch.resolution} px, {supernet.num_classes} classes)")
    for kind, notes in export_notes(space).items():
        print(f"  {kind} blocks: {notes}")
    print(f"checking against the supernet's active path ({checkpoint}), BN recalibrated on the calib split:")
    outputs: dict[str, Callable[[], np.ndarray | None]] = {
        "subnet (torch)": torch_output(subnet),
        "timm .pth": lambda: torch_output(timm_model())(),
    }
    outputs.update({fmt: functools.partial(run_exported, fmt, path, x) for fmt, path in paths.items()})
    checks = check_outputs(outputs, expected)
    print(f"wrote ({time.perf_counter() - start:.1f} s):")
    for label, path in (("arch", arch_path), ("weights", weights), *paths.items()):
        print(f"  {label:<12} {path}")
    print(f'load with: import autovit_ray.models; timm.create_model("autovit", arch="{arch_path}", '
          f'num_classes={supernet.num_classes}, checkpoint_path="{weights}")')
    return {"arch": arch.to_dict(), "arch_json": str(arch_path), "weights": str(weights),
            "exports": {k: str(v) for k, v in paths.items()}, "checks": checks, "checkpoint": str(checkpoint)}


@cli_main(failed=(ExportCheckError,))
def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


__all__ = ["ExportCheckError", "build_parser", "main", "run"]
