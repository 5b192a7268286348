"""Static subnets export to TorchScript, torch.export, ONNX (checked with onnxruntime), CoreML."""

from __future__ import annotations

import random

import numpy as np
import onnxruntime as ort
import pytest
import torch

from autovit_ray.export import (
    check_onnx,
    example_input,
    export_coreml,
    export_model,
    export_onnx,
    export_torch_export,
    export_torchscript,
)
from autovit_ray.nn import Supernet
from autovit_ray.space import load_space

SPACES = ("xxs", "xs", "s")


@pytest.fixture(scope="module", params=SPACES)
def supernet(request) -> Supernet:
    torch.manual_seed(0)
    return Supernet(load_space(request.param, input_profile="cifar10"), num_classes=10).eval()


def test_torchscript_torch_export_and_onnx_match_torch(supernet, tmp_path):
    arch = supernet.space.sample(random.Random(42))
    subnet = supernet.get_active_subnet(arch).eval()
    x = example_input(arch.resolution, batch=2)
    with torch.no_grad():
        expected = subnet(x)
        scripted = torch.jit.load(str(export_torchscript(subnet, x, tmp_path / "m.ts.pt")))
        assert torch.allclose(scripted(x), expected, atol=1e-6)
        exported = torch.export.load(str(export_torch_export(subnet, x, tmp_path / "m.pt2"))).module()
        assert torch.allclose(exported(x), expected, atol=1e-6)
    onnx_path = export_onnx(subnet, x, tmp_path / "m.onnx")
    assert check_onnx(onnx_path, subnet, x) <= 1e-4
    # The batch axis is dynamic.
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x5 = example_input(arch.resolution, batch=5, seed=1)
    (out5,) = session.run(None, {"image": x5.numpy()})
    with torch.no_grad():
        assert np.allclose(out5, subnet(x5).numpy(), rtol=1e-4, atol=1e-4)


def test_export_model_rejects_bad_input_and_writes_nothing(tmp_path):
    net = Supernet(load_space("xxs", input_profile="digits"), num_classes=10)
    subnet = net.get_active_subnet(net.space.smallest())
    with pytest.raises(ValueError, match="unknown export formats \\['tflite'\\]"):
        export_model(subnet, 8, tmp_path, "m", formats=("onnx", "tflite"))
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(subnet, example_input(8), tmp_path / "m.onnx", opset=13)
    with pytest.raises(ValueError, match=".mlpackage"):
        export_coreml(subnet, example_input(8), tmp_path / "m.mlmodel")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_previous_file_intact(tmp_path):
    net = Supernet(load_space("xxs", input_profile="digits"), num_classes=10)
    subnet = net.get_active_subnet(net.space.smallest())
    target = export_torchscript(subnet, example_input(8), tmp_path / "m.ts.pt")
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        export_torchscript(subnet, torch.randn(1, 5, 8, 8), target)  # wrong channel count
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.ts.pt"]  # no temporary left behind
