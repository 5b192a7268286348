"""The network plan: it matches the supernet's active path, the static net built from it, the
analytic counts and the latency table's module keys, for random archs of every supernet and
profile; and the static net offers timm's model contract."""

from __future__ import annotations

import random

import pytest
import timm
import torch
from torch import nn

import autovit_ray.models as models
from autovit_ray.data import DataConfig, build_transform, dataset_of_input_profile
from autovit_ray.latency.modules import arch_modules, block_modules
from autovit_ray.nn import Supernet, build_net
from autovit_ray.nn.blocks import ConvBNAct, MBConv, MBPoolHead, MobileViTBlock, TransformerStage
from autovit_ray.plan import count_macs, count_params, plan
from autovit_ray.space import BUILTIN_SPACES, load_space

NUM_CLASSES = 10
PROFILES = ("imagenet", "cifar10", "digits")
ARCHS_PER_CASE = 3
BLOCK_TYPES = {"stem": ConvBNAct, "mbconv": MBConv, "mobilevit": MobileViTBlock, "head": MBPoolHead}


def _resolve(net: nn.Module, path) -> nn.Module:
    for part in path:
        net = net[part] if isinstance(part, int) else getattr(net, part)
    return net


def _shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in net.state_dict().items()}


def _random_archs(space, seed: int):
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(ARCHS_PER_CASE)]
    if space.input_profile.name == "imagenet":  # keep the forward passes small: the lowest resolution
        archs = [a.__class__(**{**a.to_dict(), "resolution": min(space.resolutions)}) for a in archs]
    return [space.smallest(), space.largest(), *archs]


def _record_sizes(sizes: dict, path):
    def hook(_module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        sizes.setdefault(path, (*args[0].shape[1:3], *out.shape[1:3]))
    return hook


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", BUILTIN_SPACES)
def test_plan_matches_networks_counts_and_latency_keys(name, profile):
    space = load_space(name, input_profile=profile)
    supernet = Supernet(space, NUM_CLASSES).eval()
    for arch in _random_archs(space, seed=len(name) + len(profile)):
        blocks = plan(arch, space, NUM_CLASSES)
        extracted = supernet.get_active_subnet(arch).eval()
        built = build_net(blocks).eval()
        assert _shapes(built) == _shapes(extracted)
        assert [type(m) for m in built.modules()] == [type(m) for m in extracted.modules()]
        assert sum(b.params for b in blocks) == count_params(arch, NUM_CLASSES, space) == \
            sum(p.numel() for p in built.parameters())
        assert sum(b.macs for b in blocks) == count_macs(arch, NUM_CLASSES, space)
        assert [m for b in blocks for m in block_modules(b)] == arch_modules(arch, space, NUM_CLASSES)
        sizes: dict[tuple, tuple[int, int, int, int]] = {}
        hooks = [_resolve(built, b.path).register_forward_hook(_record_sizes(sizes, b.path))
                 for b in blocks if b.kind != "head"]
        with torch.no_grad():
            logits = built(torch.zeros(1, 3, arch.resolution, arch.resolution))
        for hook in hooks:
            hook.remove()
        assert logits.shape == (1, NUM_CLASSES)
        for b in blocks:
            module = _resolve(built, b.path)
            assert isinstance(module, BLOCK_TYPES[b.kind]), b.path
            if b.kind != "head":
                assert sizes[b.path] == (b.in_width, b.size_in, b.out_width, b.size_out), b.path
        assert supernet.num_active_stages == len({b.stage for b in blocks}) - 1  # stem and head: -1
        assert isinstance(extracted.stages[-1], TransformerStage)


def test_plan_rejects_bad_input():
    space = load_space("xxs", input_profile="cifar10")
    with pytest.raises(ValueError, match="num_classes"):
        plan(space.smallest(), space, 0)
    with pytest.raises(ValueError, match="not in the space"):
        plan(space.smallest().__class__(**{**space.smallest().to_dict(), "stem_width": 7}), space, 10)


REGISTERED = sorted(set(timm.list_models("autovit_*")))


@pytest.mark.parametrize("name", REGISTERED)
def test_registered_model_offers_timm_contract(name):
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    cfg = model.pretrained_cfg
    arch = models.read_arch(cfg["arch"])
    x = torch.randn(2, 3, 64, 64)  # any profile resolution: 64 keeps this fast
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.ndim == 4 and features.shape[:2] == (2, arch.transformer_widths[-1])
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        assert torch.equal(model.forward_head(features), model(x))
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)
        assert torch.equal(model(x), pooled)
    assert model.num_features == arch.transformer_widths[-1] * load_space(arch.supernet).fixed.head_expansion
    data = DataConfig(dataset=dataset_of_input_profile(load_space(arch.supernet).input_profile.name))
    assert cfg["input_size"] == (3, arch.resolution, arch.resolution)
    assert (cfg["mean"], cfg["std"], cfg["interpolation"], cfg["crop_pct"]) == \
        (tuple(data.mean), tuple(data.std), data.interpolation, data.eval_crop_pct)


@pytest.mark.parametrize("profile", PROFILES)
def test_pretrained_cfg_gives_the_training_eval_transform(profile):
    """timm's transform from the model's pretrained_cfg is the one evaluation used in training."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    space = load_space("xxs", input_profile=profile)
    model = timm.create_model("autovit", arch=space.smallest(), num_classes=NUM_CLASSES)
    data = DataConfig(dataset=dataset_of_input_profile(profile), resolution=space.smallest().resolution)
    image = Image.fromarray(torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8,
                                          generator=torch.Generator().manual_seed(0)).numpy())
    timm_transform = create_transform(**resolve_data_config({}, model=model))
    assert torch.equal(timm_transform(image), build_transform(data, train=False)(image))
