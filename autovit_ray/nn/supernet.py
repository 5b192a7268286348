"""The weight-entangled supernet and the static network its subnets are extracted into.

Both follow the network plan (`autovit_ray.plan`): `build_net(plan(...))` builds a static
`AutoViTNet` directly from it, and `Supernet.set_active` sets its active path from it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from ..blocks import stage_kind
from ..plan import BlockSpec, largest_stage_plans, plan, stage_groups
from ..space import Arch, SearchSpace
from .blocks import DynamicConvBNAct, DynamicMBPoolHead, MBPoolHead, static_conv_bn_act, static_linear
from .ops import DynamicModule


class AutoViTNet(nn.Module):
    """Stem -> stages -> head. The static form holds exactly the active stages; the supernet
    (a subclass) holds all of them and runs the first `num_active_stages`.

    timm's model contract: `forward_features` (the last feature map), `forward_head(x,
    pre_logits=True)` (the pooled `[B, num_features]` vector), `reset_classifier`, `num_features`."""

    arch: Arch  # set on an extracted or created subnet (`get_active_subnet`, `models.create_subnet`)
    pretrained_cfg: dict[str, Any]  # timm's, set by `models.autovit`

    def __init__(self, stem: nn.Module, stages: list[nn.Module], head: MBPoolHead) -> None:
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
        self.head.classifier = static_linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


def build_net(blocks: Sequence[BlockSpec], drop_rate: float = 0.0) -> AutoViTNet:
    """A freshly initialised static network from a plan (`autovit_ray.plan.plan`), with the same
    modules, state-dict keys and shapes as the subnet a supernet extracts for the same arch."""
    stem, *body, head = blocks
    if stem.kind != "stem" or head.kind != "head":
        raise ValueError("a network plan starts with the stem and ends with the head")
    stages = [stage_kind(group[0].stage_kind).static_stage(group) for group in stage_groups(body)]
    classifier_in = head.hidden_width
    net = AutoViTNet(static_conv_bn_act(stem.in_width, stem.out_width, stem.kernel_size, stem.stride), stages,
                     MBPoolHead(static_conv_bn_act(head.in_width, classifier_in, 1),
                                static_linear(classifier_in, head.num_classes), drop_rate))
    net.num_classes = head.num_classes
    return net


class Supernet(AutoViTNet, DynamicModule):
    """All subnets of one search space in one module (weight entanglement).

    `set_active(arch)` selects a subnet; `forward` runs it; `get_active_subnet()` returns it as a
    plain `AutoViTNet` with copied weights (no dynamic module inside).
    """

    stem: DynamicConvBNAct
    head: DynamicMBPoolHead

    def __init__(self, space: SearchSpace, num_classes: int, drop_rate: float = 0.0) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        f = space.fixed
        stem = DynamicConvBNAct(3, max(space.stem_widths), f.kernel_size, stride=space.strides[0])
        stages = [stage_kind(largest[0].stage_kind).dynamic_stage(largest) for largest in largest_stage_plans(space)]
        head_in = max(w for choices in space.transformer_stages for w in choices.widths)
        head = DynamicMBPoolHead(head_in, f.head_expansion, num_classes, drop_rate)
        super().__init__(stem, stages, head)
        self.space, self.num_classes = space, num_classes
        self.active_arch: Arch = space.largest()
        self.set_active(self.active_arch)

    def set_active(self, arch: Arch) -> None:
        stem, *body, head = plan(arch, self.space, self.num_classes)
        self.stem.set_active(stem.in_width, stem.out_width)
        groups = stage_groups(body)
        for group in groups:
            stage_kind(group[0].stage_kind).set_active(self.stages[group[0].stage], group)
        self.head.set_active(head.in_width)
        self.num_active_stages = groups[-1][0].stage + 1
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
        stages = [cast(DynamicModule, stage).get_active_subnet()
                  for stage in self.stages[:self.num_active_stages]]
        net = AutoViTNet(self.stem.get_active_subnet(), stages, self.head.get_active_subnet())
        net.num_classes = self.num_classes
        net.arch = self.active_arch
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
