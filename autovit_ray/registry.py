"""Searched models as MLflow Models, registered in the MLflow Model Registry under a `champion` alias.

Each exported model of a search is logged in its candidate's (child) run as two MLflow Models, both
with a signature inferred from a real input batch and that batch as input example:

- ``model``: a pyfunc model from code (`autovit_ray.serving_model`): the arch JSON, the state dict and
  the search space the model came from (``space.yaml``, as `SearchSpace.to_yaml_dict` writes it) are
  artifacts, nothing is pickled; ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` use it in an
  environment where autovit-ray is installed (``--env-manager local``), with the modules that register
  the block kinds the space names (its ``block_kind_modules``, or ``AUTOVIT_RAY_PLUGINS``) importable;
- ``onnx_model``: the ONNX flavour, from the search's checked ONNX export (when ONNX was exported).

The best model of a search becomes a new version of the registered model
``autovit-<training name>-<supernet>`` (or a name of your choice), tagged with its facts (arch, params,
MACs, latencies, fingerprints, checkpoint, top-1, budgets). The alias ``champion`` marks the best
version under one set of budgets, data split and class count: it is set on the first version, and
moved only when a later search with the same budgets, split and class count beats it on validation
top-1; a search under other budgets registers its version (tagged with its budgets) without taking
the alias. `resolve_model_uri` turns ``models:/<name>@<alias>`` and ``models:/<name>/<version>`` back
into an arch, weights and a space for ``python -m autovit_ray.export`` and ``python -m autovit_ray.compare``:
`RegisteredSubnet.build` rebuilds the model in the space stored with it, checked against its
``space_fingerprint`` tag; a version logged before the space went with the model (no ``space.yaml``)
is rebuilt in the built-in space of its supernet's name, as it always was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from .adapters import mlflow_client
from .space import Arch, SearchSpace

CHAMPION = "champion"
PYFUNC_MODEL = "model"
ONNX_MODEL = "onnx_model"
SPACE_ARTIFACT = "space.yaml"  # the pyfunc model's copy of the search space it was searched in
SERVING_CODE = Path(__file__).with_name("serving_model.py")
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))$")


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What a registered model version records (as tags) about the searched model it holds."""

    arch: Arch
    input_profile: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    params: int
    macs: int
    val_top1: float
    test_top1: float
    checkpoint: str
    space_fingerprint: str
    data_split: str  # dataset, split seed and validation size: what "the same data split" compares
    # e.g. "params<=1.6e+06,latency_ms<=5,measured_latency_ms<=5.2" or "none"; a measured budget set by a
    # reference model reads "measured_latency<=0.8*mobilevit_xxs"
    budgets: str
    lut_latency_ms: float | None = None
    lut_fingerprint: str | None = None
    measured_latency_ms: float | None = None
    latency_backend: str = "torch-cpu, 1 thread, wall clock, batch 1"

    @property
    def champion_group(self) -> str:
        """Versions compete for `champion` only inside one group: same budgets, split and classes."""
        return f"{self.budgets}|{self.data_split}|classes={self.num_classes}"

    def tags(self) -> dict[str, str]:
        # the tag "profile" keeps its old name for input_profile: registered versions stay comparable
        values = {"arch": self.arch.to_json(), "arch_hash": self.arch.arch_hash, "supernet": self.arch.supernet,
                  "profile": self.input_profile, "num_classes": self.num_classes, "params": self.params, "macs": self.macs,
                  "val_top1": f"{self.val_top1:.4f}", "test_top1": f"{self.test_top1:.4f}",
                  "checkpoint": self.checkpoint, "space_fingerprint": self.space_fingerprint,
                  "data_split": self.data_split, "budgets": self.budgets, "champion_group": self.champion_group,
                  "lut_latency_ms": self.lut_latency_ms, "lut_fingerprint": self.lut_fingerprint,
                  "measured_latency_ms": self.measured_latency_ms, "latency_backend": self.latency_backend,
                  "input": f"float32 [B, 3, {self.arch.resolution}, {self.arch.resolution}], normalised with "
                           f"mean {list(self.mean)} and std {list(self.std)}"}
        return {k: str(v) for k, v in values.items() if v is not None}


def registered_model_name(training_name: str, supernet: str) -> str:
    """autovit-<training name>-<supernet>, with characters a registry name may not hold replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"autovit-{training_name}-{supernet}")


def log_searched_model(tracking_uri: str, run_id: str, model: nn.Module, facts: ModelFacts, space: SearchSpace,
                       arch_path: Path, weights_path: Path, onnx_path: Path | None,
                       batch: torch.Tensor) -> dict[str, str]:
    """Log `model` into run `run_id` as the pyfunc model (and the ONNX model when `onnx_path` is given);
    `space`: the space it was searched in (stored with it: the pyfunc rebuilds the network in it);
    `batch` is a real input batch (signature and input example). Returns {flavour: model URI}."""
    import mlflow
    from mlflow.models import infer_signature

    if space.fingerprint() != facts.space_fingerprint:
        raise ValueError(f"space {space.name!r} (fingerprint {space.fingerprint()}) is not the space of the model's "
                         f"facts (fingerprint {facts.space_fingerprint}): expected the space it was searched in")
    example = batch[:2].detach().cpu().numpy().astype(np.float32)
    with torch.inference_mode():
        logits = model.eval()(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, logits)
    uris: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        info_path = Path(tmp) / "info.json"
        info_path.write_text(json.dumps({"num_classes": facts.num_classes, "mean": list(facts.mean),
                                         "std": list(facts.std), "arch": facts.arch.to_dict(),
                                         "space_fingerprint": facts.space_fingerprint}))
        space_path = Path(tmp) / SPACE_ARTIFACT
        space_path.write_text(f"# the search space of this model (autovit-ray), fingerprint {space.fingerprint()}\n"
                              + yaml.safe_dump(space.to_yaml_dict(), sort_keys=False))
        logged = mlflow.pyfunc.log_model(
            name=PYFUNC_MODEL, python_model=str(SERVING_CODE),
            artifacts={"arch": str(arch_path), "weights": str(weights_path), "info": str(info_path),
                       "space": str(space_path)},
            signature=signature, input_example=example,
            pip_requirements=_requirements(), tags=facts.tags())
        uris["pyfunc"] = logged.model_uri
        if onnx_path is not None:
            import onnx

            logged = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name=ONNX_MODEL, signature=signature,
                                           input_example=example, pip_requirements=_requirements("onnxruntime"),
                                           onnx_execution_providers=["CPUExecutionProvider"],
                                           tags=facts.tags())
            uris["onnx"] = logged.model_uri
    return uris


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model) on `uri`, then the caller's setting back: `mlflow.set_tracking_uri`
    also sets $MLFLOW_TRACKING_URI, which would leak into everything this process does next."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # None unsets both (MLflow takes None; its hint leaves it out)
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]


def _requirements(*extra: str) -> list[str]:
    from importlib.metadata import version

    names = ("torch", "timm", "numpy", *extra)
    return [f"{name}=={version(name)}" for name in names]


def register(tracking_uri: str, name: str, model_uri: str, run_id: str, facts: ModelFacts) -> dict[str, Any]:
    """A version of registered model `name` for `model_uri` (the same run's version of the same group when
    it already exists: a resumed or rerun search adds nothing, but one rerun under another measured budget
    registers the model again in that budget's group), and the `champion` alias moved to it when it wins
    its group. Returns {"name", "version", "champion": whether the alias points at it}."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri, registry=True)
    try:
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name, description="AutoViT searched models (autovit-ray)")
    except MlflowException as e:
        raise ValueError(f"the tracking store {tracking_uri} has no usable model registry ({e.message}); "
                         "use a database-backed tracking URI (sqlite:///... or a tracking server with one)") from None
    existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id
                and v.tags.get("arch_hash") == facts.arch.arch_hash
                and v.tags.get("champion_group") == facts.champion_group]
    if existing:
        version = existing[0]
    else:
        with using_tracking_uri(tracking_uri):  # the registry resolves the logged model's models:/m-... URI
            version = client.create_model_version(name, model_uri, run_id=run_id, tags=facts.tags())
    champion = _champion(client, name)
    if champion is None or (champion.tags.get("champion_group") == facts.champion_group
                            and float(champion.tags.get("val_top1", "-inf")) < facts.val_top1):
        client.set_registered_model_alias(name, CHAMPION, version.version)
        champion = version
    return {"name": name, "version": int(version.version), "champion": champion.version == version.version}


def _champion(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


@dataclasses.dataclass(frozen=True)
class RegisteredSubnet:
    """A registered searched model, read back: its arch, a local copy of its weights, its tags and the
    space it was searched in (None for a version logged without it: the built-in space of its supernet)."""

    uri: str
    name: str
    version: int
    arch: Arch
    num_classes: int
    weights: Path
    tags: dict[str, str]
    space: SearchSpace | None = None

    def build(self) -> nn.Module:
        from .models import create_subnet

        model = create_subnet(self.arch, self.num_classes, self.space)
        model.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
        return model.eval()


def is_model_uri(text: str) -> bool:
    return text.strip().startswith("models:/")


def resolve_model_uri(uri: str, tracking_uri: str, download_dir: Path) -> RegisteredSubnet:
    """`models:/<name>@<alias>` or `models:/<name>/<version>` -> the registered searched model, its
    pyfunc artifacts downloaded under `download_dir`. One clear ValueError for a malformed URI, an
    unknown name, alias or version, a version that is not an autovit-ray searched model, or a stored
    space whose fingerprint is not the version's `space_fingerprint` tag."""
    from mlflow.exceptions import MlflowException

    from .models import load_model_space

    match = MODEL_URI.match(uri.strip())
    if match is None:
        raise ValueError(f"{uri!r} is not a registered-model URI: expected models:/<name>@<alias> or "
                         "models:/<name>/<version>")
    name, alias, number = match["name"], match["alias"], match["version"]
    client = mlflow_client(tracking_uri, registry=True)
    try:
        version = (client.get_model_version_by_alias(name, alias) if alias
                   else client.get_model_version(name, number))
    except MlflowException as e:
        raise ValueError(f"{uri} does not exist in the registry of {tracking_uri} ({e.message})") from None
    if "arch" not in version.tags:
        raise ValueError(f"{uri} (version {version.version}) is not an autovit-ray searched model: no arch tag")
    arch = Arch.from_json(version.tags["arch"])
    try:
        local = Path(client.download_artifacts(version.run_id, f"{PYFUNC_MODEL}/artifacts", str(download_dir)))
    except MlflowException:
        import mlflow

        with using_tracking_uri(tracking_uri):
            local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}",
                                                             dst_path=str(download_dir))) / "artifacts"
    weights = next(local.glob("*.pth"), None)
    if weights is None:
        raise ValueError(f"{uri} (version {version.version}) has no .pth weights among its model artifacts")
    space_path = local / SPACE_ARTIFACT
    space = (load_model_space(space_path, version.tags.get("space_fingerprint", "(none)"),
                              f"{uri} (version {version.version})")
             if space_path.is_file() else None)  # logged before the space went with the model: the built-in one
    return RegisteredSubnet(uri.strip(), name, int(version.version), arch, int(version.tags["num_classes"]),
                            weights, dict(version.tags), space)


__all__ = ["CHAMPION", "SPACE_ARTIFACT", "ModelFacts", "RegisteredSubnet", "is_model_uri", "log_searched_model",
           "register", "registered_model_name", "resolve_model_uri", "using_tracking_uri"]
