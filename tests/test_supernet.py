"""The supernet: exact static extraction (mmrazor's invariant), counts, masks, bad inputs."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from conftest import randomised_supernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from autovit_ray.compare import measure_macs
from autovit_ray.nn import DynamicModule, Supernet
from autovit_ray.plan import count_macs, count_params
from autovit_ray.space import load_space

SPACES = ("xxs", "xs", "s")
NUM_CLASSES = 10


SUPERNETS = {(name, profile): randomised_supernet(name, profile)
             for name in SPACES for profile in ("cifar10", "cifar10-p1", "digits")}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SPACES), profile=st.sampled_from(("cifar10", "cifar10-p1", "digits")),
       seed=st.integers(0, 2**31 - 1))
def test_static_subnet_equals_active_path(name, profile, seed):
    net = SUPERNETS[(name, profile)]
    arch = net.space.sample(random.Random(seed))
    net.set_active(arch)
    subnet = net.get_active_subnet()
    x = torch.randn(2, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected, got = net(x), subnet(x)
    assert got.shape == (2, NUM_CLASSES)
    assert (expected - got).abs().max().item() <= 1e-5
    assert not any(isinstance(m, DynamicModule) for m in subnet.modules())
    assert sum(p.numel() for p in subnet.parameters()) == count_params(arch, NUM_CLASSES, net.space)
    assert_layer_shapes_match(subnet, arch, net.space.fixed.head_dim)


def assert_layer_shapes_match(subnet, arch, head_dim):
    assert subnet.stem.conv.out_channels == arch.stem_width
    for stage, width, depth in zip(subnet.stages[:3], arch.mbconv_widths, arch.mbconv_depths):
        assert len(stage.blocks) == depth
        assert all(block.project.conv.out_channels == width for block in stage.blocks)
    transformer_stages = subnet.stages[3:]
    assert len(transformer_stages) == arch.num_transformer_stages
    for i, stage in enumerate(transformer_stages):
        block = stage.block
        assert len(block.layers) == arch.transformer_depths[i]
        for layer in block.layers:
            assert layer.attn.num_heads == arch.transformer_heads[i]
            assert layer.attn.qkv.out_features == 3 * arch.transformer_heads[i] * head_dim
            assert layer.mlp.fc1.in_features == arch.transformer_widths[i]
            assert layer.mlp.fc1.out_features == round(arch.transformer_widths[i] *
                                                       arch.transformer_mlp_ratios[i])


@pytest.mark.parametrize("name", SPACES)
def test_imagenet_resolution_extremes_and_macs(name):
    """At the ImageNet-style profile: smallest and largest subnets match, and the analytic MACs
    equal torch's flop counter (2 FLOPs per MAC)."""
    net = randomised_supernet(name, "imagenet")
    random_at_128 = dataclasses.replace(net.space.sample(random.Random(3)), resolution=128)
    for arch in (net.space.smallest(), random_at_128):
        subnet = net.get_active_subnet(arch)
        x = torch.randn(1, 3, arch.resolution, arch.resolution)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            got = subnet(x)
        assert (net(x) - got).abs().max().item() <= 1e-5
        assert counter.get_total_flops() == 2 * count_macs(arch, NUM_CLASSES, net.space)
    largest = net.space.largest()
    assert count_params(largest, NUM_CLASSES, net.space) == sum(
        p.numel() for p in net.get_active_subnet(largest).parameters())


@pytest.mark.parametrize("profile", ["cifar10", "cifar10-p1", "digits"])
def test_measured_macs_equal_the_analytic_count_on_random_subnets(profile):
    """compare's `measure_macs` (torch's flop counter on a built model: also counts reference models
    outside every space) and plan's `count_macs` (analytic, from the plan) agree on subnets."""
    net = SUPERNETS[("xxs", profile)]
    rng = random.Random(7)
    for _ in range(5):
        arch = net.space.sample(rng)
        assert measure_macs(net.get_active_subnet(arch), arch.resolution) == count_macs(arch, NUM_CLASSES, net.space)


def test_active_masks_cover_exactly_the_subnet_parameters():
    net = SUPERNETS[("xs", "cifar10")]
    rng = random.Random(11)
    for arch in (net.space.smallest(), net.space.largest(), net.space.sample(rng), net.space.sample(rng)):
        net.set_active(arch)
        masks = net.active_masks()
        assert sum(int(m.sum()) for m in masks.values()) == count_params(arch, NUM_CLASSES, net.space)


def test_training_step_touches_only_active_entries():
    """The gradient of an active-path loss is zero outside the active masks, and train-mode BN
    updates only the running statistics of the active channels."""
    net = randomised_supernet("xxs", "digits", seed=1)
    arch = net.space.sample(random.Random(5))
    net.set_active(arch)
    masks = net.active_masks()
    before = {k: v.clone() for k, v in net.named_buffers() if k.endswith("running_mean")}
    net.train()
    net(torch.randn(4, 3, arch.resolution, arch.resolution)).logsumexp(dim=1).sum().backward()
    for name, param in net.named_parameters():
        if param.grad is not None:
            assert not param.grad[~masks[name]].any(), name
    for name, buffer in net.named_buffers():
        if name.endswith("running_mean"):
            weight_mask = masks[name.replace("running_mean", "weight")]
            assert torch.equal(buffer[~weight_mask], before[name][~weight_mask]), name
            if weight_mask.any():  # a BN of the active path saw data
                assert not torch.equal(buffer[weight_mask], before[name][weight_mask]), name


def test_bad_inputs():
    net = SUPERNETS[("xxs", "cifar10")]
    with pytest.raises(ValueError, match="'xs' but this is the 'xxs' supernet"):
        net.set_active(load_space("xs", input_profile="cifar10").smallest())
    net.set_active(net.space.smallest())
    with pytest.raises(ValueError, match="not divisible by its 2x2 patch"):
        net(torch.randn(1, 3, 36, 36))  # 36 -> 9x9 maps at the transformer stages
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        Supernet(net.space, 0)


def test_a_norm_wider_than_the_supernets_is_refused_and_the_active_features_are_the_leading_ones():
    from autovit_ray.nn.ops import DynamicBatchNorm2d, DynamicLayerNorm

    for norm, kind in ((DynamicBatchNorm2d(8), "BatchNorm"), (DynamicLayerNorm(8), "LayerNorm")):
        norm.set_active(3)
        masks = norm.active_masks()
        assert [m.tolist() for m in masks.values()] == [[True] * 3 + [False] * 5] * 2 and set(masks) == {"weight", "bias"}
        with pytest.raises(ValueError, match=f"{kind} width 9 exceeds the supernet's 8"):
            norm.set_active(9)
