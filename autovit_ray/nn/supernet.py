"""The weight-entangled supernet and the static network its subnets are extracted into.

Both follow the network plan (`autovit_ray.plan`): `build_net(plan(...))` builds a static
`AutoViTNet` directly from it, and `Supernet.set_active` sets its active path from it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import torch
from torch import nn

from ..plan import BlockSpec, plan
from ..space import NUM_MBCONV_STAGES, Arch, SearchSpace
from .blocks import (
    MLP,
    Attention,
    BlockSequence,
    ConvBNAct,
    DynamicConvBNAct,
    DynamicMBConvStage,
    DynamicMBPoolHead,
    DynamicTransformerStage,
    MBConv,
    MBPoolHead,
    MobileViTBlock,
    TransformerLayer,
    TransformerStage,
)
from .ops import DynamicModule


class AutoViTNet(nn.Module):
    """Stem -> stages -> head. The static form holds exactly the active stages; the supernet
    (a subclass) holds all of them and runs the first `num_active_stages`.

    timm's model contract: `forward_features` (the last feature map), `forward_head(x,
    pre_logits=True)` (the pooled `[B, num_features]` vector), `reset_classifier`, `num_features`."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.num_active_stages = len(stages)

    @property
    def num_features(self) -> int:
        return self.head.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages[:self.num_active_stages]:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A freshly initialised classifier for `num_classes` (0: none, the head returns features)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.head.classifier = _linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as DynamicConv2d
    return conv


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> ConvBNAct:
    return ConvBNAct(_conv(cin, cout, kernel, stride, groups), nn.BatchNorm2d(cout), act)


def _linear(cin: int, cout: int) -> nn.Linear:
    linear = nn.Linear(cin, cout)
    nn.init.trunc_normal_(linear.weight, std=0.02)  # as DynamicLinear
    nn.init.zeros_(linear.bias)
    return linear


def _mbconv(block: BlockSpec) -> MBConv:
    hidden = block.hidden_width
    expand = _conv_bn_act(block.in_width, hidden, 1) if block.expansion != 1 else None
    return MBConv(expand, _conv_bn_act(hidden, hidden, block.kernel_size, block.stride, groups=hidden),
                  _conv_bn_act(hidden, block.out_width, 1, act=False),
                  use_residual=block.stride == 1 and block.in_width == block.out_width)


def _mobilevit(block: BlockSpec) -> MobileViTBlock:
    d, qkv = block.out_width, block.heads * block.head_dim

    def layer() -> TransformerLayer:
        attn = Attention(_linear(d, 3 * qkv), _linear(qkv, d), block.heads, block.head_dim)
        return TransformerLayer(nn.LayerNorm(d), attn, nn.LayerNorm(d),
                                MLP(_linear(d, block.hidden_width), _linear(block.hidden_width, d)))

    return MobileViTBlock(_conv_bn_act(d, d, block.kernel_size), _conv(d, d, 1),
                          [layer() for _ in range(block.depth)], nn.LayerNorm(d), _conv_bn_act(d, d, 1),
                          _conv_bn_act(2 * d, d, block.fuse_kernel), block.patch_size)


def build_net(blocks: Sequence[BlockSpec], drop_rate: float = 0.0) -> AutoViTNet:
    """A freshly initialised static network from a plan (`autovit_ray.plan.plan`), with the same
    modules, state-dict keys and shapes as the subnet a supernet extracts for the same arch."""
    stem, *body, head = blocks
    if stem.kind != "stem" or head.kind != "head":
        raise ValueError("a network plan starts with the stem and ends with the head")
    stages: list[nn.Module] = []
    for _, group in itertools.groupby(body, key=lambda block: block.stage):
        first, *rest = group
        if first.path[-1] == "transition":
            stages.append(TransformerStage(_mbconv(first), _mobilevit(rest[0])))
        else:
            stages.append(BlockSequence([_mbconv(block) for block in (first, *rest)]))
    classifier_in = head.hidden_width
    net = AutoViTNet(_conv_bn_act(stem.in_width, stem.out_width, stem.kernel_size, stem.stride), stages,
                     MBPoolHead(_conv_bn_act(head.in_width, classifier_in, 1),
                                _linear(classifier_in, head.num_classes), drop_rate))
    net.num_classes = head.num_classes
    return net


class Supernet(AutoViTNet, DynamicModule):
    """All subnets of one search space in one module (weight entanglement).

    `set_active(arch)` selects a subnet; `forward` runs it; `get_active_subnet()` returns it as a
    plain `AutoViTNet` with copied weights (no dynamic module inside).
    """

    def __init__(self, space: SearchSpace, num_classes: int, drop_rate: float = 0.0) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        f, strides = space.fixed, space.strides
        stem = DynamicConvBNAct(3, max(space.stem_widths), f.kernel_size, stride=strides[0])
        stages: list[nn.Module] = []
        max_in = max(space.stem_widths)
        for i, choices in enumerate(space.mbconv_stages):
            stages.append(DynamicMBConvStage(max_in, max(choices.widths), max(choices.depths),
                                             strides[1 + i], f.mbconv_expansion, f.kernel_size))
            max_in = max(choices.widths)
        for i, choices in enumerate(space.transformer_stages):
            stages.append(DynamicTransformerStage(
                max_in, max(choices.widths), max(choices.depths), max(choices.heads), f.head_dim,
                max(choices.mlp_ratios), strides[1 + NUM_MBCONV_STAGES + i], f.mbconv_expansion,
                f.kernel_size, f.fuse_kernel, space.patch_size(i)))
            max_in = max(choices.widths)
        head_in = max(w for choices in space.transformer_stages for w in choices.widths)
        head = DynamicMBPoolHead(head_in, f.head_expansion, num_classes, drop_rate)
        super().__init__(stem, stages, head)
        self.space, self.num_classes = space, num_classes
        self.active_arch: Arch = space.largest()
        self.set_active(self.active_arch)

    def set_active(self, arch: Arch) -> None:
        stem, *body, head = plan(arch, self.space, self.num_classes)
        self.stem.set_active(stem.in_width, stem.out_width)
        stage_index = -1
        for stage_index, group in itertools.groupby(body, key=lambda block: block.stage):
            first, *rest = group
            if first.path[-1] == "transition":
                vit = rest[0]
                self.stages[stage_index].set_active(first.in_width, vit.out_width, vit.depth, vit.heads,
                                                    vit.mlp_ratio)
            else:
                self.stages[stage_index].set_active(first.in_width, first.out_width, 1 + len(rest))
        self.head.set_active(head.in_width)
        self.num_active_stages = stage_index + 1
        self.active_arch = arch

    def sample_active(self, rng: random.Random) -> Arch:
        arch = self.space.sample(rng)
        self.set_active(arch)
        return arch

    def reset_classifier(self, num_classes: int) -> None:
        raise ValueError("a supernet's classifier is part of its trained weights; reset_classifier works "
                         "on an extracted subnet (get_active_subnet)")

    def get_active_subnet(self, arch: Arch | None = None) -> AutoViTNet:
        """A plain module with a copy of the active (or given) subnet's weights; `arch` also
        becomes the active subnet. Keeps the supernet's train/eval mode."""
        if arch is not None:
            self.set_active(arch)
        stages = [stage.get_active_subnet() for stage in self.stages[:self.num_active_stages]]
        net = AutoViTNet(self.stem.get_active_subnet(), stages, self.head.get_active_subnet())
        net.num_classes = self.num_classes
        net.arch = self.active_arch  # type: ignore[assignment]  # plain attribute for callers
        return net.train(self.training)

    def active_masks(self) -> dict[str, torch.Tensor]:
        """For every parameter, a boolean mask of the entries the active subnet uses.

        Exact, not gradient-based: a tiny eval-mode forward records which dynamic ops run (deeper
        layers and a 4th stage may be skipped), and each op that ran marks its own active slice.
        Training uses it to freeze inactive weights (Algorithm 1)."""
        called: set[int] = set()
        hooks = [m.register_forward_hook(lambda mod, _i, _o: called.add(id(mod)))
                 for m in self.modules() if hasattr(m, "active_masks") and m is not self]
        was_training = self.training
        try:
            self.eval()
            size = self.active_arch.resolution
            with torch.no_grad():
                self(torch.zeros(1, 3, size, size, device=next(self.parameters()).device))
        finally:
            for hook in hooks:
                hook.remove()
            self.train(was_training)
        masks = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in self.named_parameters()}
        for module_name, module in self.named_modules():
            if module is self or id(module) not in called or not hasattr(module, "active_masks"):
                continue
            for param_name, mask in module.active_masks().items():
                masks[f"{module_name}.{param_name}"] |= mask
        return masks
