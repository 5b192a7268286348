"""AutoViT models in timm's registry.

    timm.create_model("autovit", arch="path/to/model.arch.json", num_classes=10,
                      checkpoint_path="path/to/model.pth")      # a searched model
    timm.create_model("autovit_xxs_largest", num_classes=1000)  # the extremes of each supernet

`save_subnet` writes the pair a searched model travels as: `<name>.arch.json` and `<name>.pth`
(a plain state dict, which timm's `checkpoint_path` loads). A searched model is extracted from a
trained supernet with its BatchNorm statistics re-estimated by `autovit_ray.evaluation.calibrated_subnet`
(what the search reports and `python -m autovit_ray.export` writes).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from timm.models import register_model

from .data import DataConfig, dataset_of_input_profile
from .io import atomic_write_bytes, atomic_write_text
from .nn import AutoViTNet, build_net
from .plan import plan
from .space import Arch, SearchSpace, load_space, space_for_arch


def create_subnet(arch: Arch, num_classes: int = 1000, space: SearchSpace | None = None,
                  drop_rate: float = 0.0) -> AutoViTNet:
    """A freshly initialised static network for `arch`, built from its plan (initialised as the
    supernet's ops are); `arch` is kept as `model.arch`."""
    net = build_net(plan(arch, space or space_for_arch(arch), num_classes), drop_rate)
    net.arch = arch  # as get_active_subnet sets it
    return net


def read_arch(arch: Arch | str | Path | dict[str, Any]) -> Arch:
    """An Arch from an Arch, a dict, a JSON string or the path of a `.json` file."""
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, dict):
        return Arch.from_dict(arch)
    text = str(arch)
    if text.lstrip().startswith("{"):
        return Arch.from_json(text)
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"arch must be an Arch, its JSON or an existing .json file; got {text!r}")
    return Arch.from_json(path.read_text())


def load_model_space(path: str | Path, fingerprint: str, model: str) -> SearchSpace:
    """The search space a model was searched in, from the space YAML stored with it
    (`SearchSpace.to_yaml_dict`; its `block_kind_modules` are imported), checked against the space
    fingerprint recorded with the model (`model` names it in the error)."""
    space = load_space(path)
    if space.fingerprint() != fingerprint:
        raise ValueError(f"{model}: its stored space {Path(path).name} (space {space.name!r}, fingerprint "
                         f"{space.fingerprint()}) does not match the space fingerprint {fingerprint} recorded "
                         "with the model: the space file was changed or replaced; the model cannot be rebuilt")
    return space


def save_subnet(model: AutoViTNet, arch: Arch, directory: str | Path, name: str | None = None) -> tuple[Path, Path]:
    """Write `<name>.arch.json` and `<name>.pth` (state dict) atomically; return both paths."""
    name = name or str(arch)
    directory = Path(directory)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = atomic_write_bytes(directory / f"{name}.pth", buffer.getvalue())
    arch_path = atomic_write_text(directory / f"{name}.arch.json", arch.to_json())
    return arch_path, weights


def pretrained_cfg(arch: Arch, num_classes: int, data: DataConfig | None = None,
                   space: SearchSpace | None = None) -> dict[str, Any]:
    """timm's `pretrained_cfg` of a model: input size, mean, std, crop and interpolation as its
    evaluation saw them (`data`: the training config; default: the defaults of the data set its
    input profile is trained on, which configs/train/*.yaml keep). `space`: the arch's space
    (default: its built-in supernet's)."""
    if data is None:
        input_profile = (space or space_for_arch(arch)).input_profile.name
        data = DataConfig(dataset=dataset_of_input_profile(input_profile) or "imagefolder")
    size = arch.resolution
    return {"input_size": (3, size, size), "num_classes": num_classes, "architecture": "autovit",
            "arch": arch.to_dict(), "classifier": "head.classifier", **data.eval_preprocessing()}


@register_model
def autovit(pretrained: bool = False, arch: Arch | str | Path | dict | None = None, num_classes: int = 1000,
            drop_rate: float = 0.0, space: SearchSpace | None = None, **kwargs: Any) -> AutoViTNet:
    """Any AutoViT subnet, from its arch (Arch, JSON, or `.arch.json` path). Weights: pass timm's
    `checkpoint_path=<name>.pth`; `pretrained=True` has no hub weights to fetch. `space`: the arch's
    `SearchSpace` when it is not one of the built-in supernets (a space YAML of your own, e.g. with a
    block kind of your own: `load_space(path, input_profile=...)`)."""
    if pretrained:
        raise ValueError("autovit models have no downloadable weights; pass checkpoint_path=<file>.pth")
    if arch is None:
        raise ValueError("timm.create_model('autovit', ...) needs arch=<Arch | JSON | path to .arch.json>")
    parsed = read_arch(arch)
    model = create_subnet(parsed, num_classes, space, drop_rate)
    model.pretrained_cfg = pretrained_cfg(parsed, num_classes, space=space)
    model.num_classes = num_classes
    return model


def _register_extremes() -> None:
    """autovit_{xxs,xs,s}_{smallest,largest}: the corners of each supernet (ImageNet input profile)."""
    for name in ("xxs", "xs", "s"):
        for corner in ("smallest", "largest"):
            def factory(pretrained: bool = False, num_classes: int = 1000, drop_rate: float = 0.0,
                        _name: str = name, _corner: str = corner, **kwargs: Any) -> AutoViTNet:
                space = load_space(_name)
                arch = getattr(space, _corner)()
                return autovit(pretrained, arch=arch, num_classes=num_classes, drop_rate=drop_rate)

            factory.__name__ = f"autovit_{name}_{corner}"
            factory.__module__ = __name__
            globals()[factory.__name__] = register_model(factory)


_register_extremes()
