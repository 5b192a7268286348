"""timm registry: one parametrised test over every registered AutoViT model (forward, backward,
export), and the round trip of a searched model through `timm.create_model`."""

from __future__ import annotations

import random

import pytest
import timm
import torch

import autovit_ray.models as models
from autovit_ray.export import check_onnx, example_input, export_coreml, export_onnx
from autovit_ray.nn import DynamicModule
from autovit_ray.plan import count_params
from autovit_ray.space import load_space

REGISTERED = sorted(set(timm.list_models("autovit_*")))


def test_every_supernet_corner_is_registered():
    assert REGISTERED == [f"autovit_{n}_{c}" for n in ("s", "xs", "xxs") for c in ("largest", "smallest")]


@pytest.mark.parametrize("name", REGISTERED)
def test_registered_model_forward_backward_export(name, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    arch = models.read_arch(model.pretrained_cfg["arch"])
    assert not any(isinstance(m, DynamicModule) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == count_params(arch, 10)
    x = example_input(128, batch=2)  # every model runs at any profile resolution; 128 keeps this fast
    model.train()
    model(x).logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    assert check_onnx(export_onnx(model, x[:1], tmp_path / "m.onnx"), model, x[:1]) <= 1e-4
    # CoreML: conversion only (prediction needs macOS); timm's own mobilevit_xxs fails here. The smallest
    # corner of each supernet has every op kind of its largest (they differ in depth, width and heads
    # only), and converting the largest took ~15 s each: three conversions cover the ops.
    if name.endswith("_smallest"):
        package = export_coreml(model, x[:1], tmp_path / "m.mlpackage")
        assert (package / "Manifest.json").is_file()


def test_searched_model_round_trip_through_timm(tmp_path):
    space = load_space("xxs", input_profile="cifar10")
    arch = space.sample(random.Random(3))
    torch.manual_seed(1)
    trained = models.create_subnet(arch, num_classes=10, space=space).eval()
    arch_path, weights = models.save_subnet(trained, arch, tmp_path)
    rebuilt = timm.create_model("autovit", arch=str(arch_path), num_classes=10,
                                checkpoint_path=str(weights)).eval()
    x = example_input(arch.resolution, batch=3)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), trained(x))
    assert models.read_arch(arch.to_json()) == models.read_arch(arch_path) == arch


def test_bad_model_arguments(tmp_path):
    with pytest.raises(ValueError, match="needs arch="):
        timm.create_model("autovit")
    with pytest.raises(ValueError, match="no downloadable weights"):
        timm.create_model("autovit_xxs_smallest", pretrained=True)
    with pytest.raises(ValueError, match="existing .json file"):
        models.read_arch(tmp_path / "missing.arch.json")
    with pytest.raises(ValueError, match="malformed Arch JSON"):
        models.read_arch("{oops")
