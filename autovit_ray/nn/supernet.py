"""The weight-entangled supernet and the static network its subnets are extracted into."""

from __future__ import annotations

import random

import torch
from torch import nn

from ..space import NUM_MBCONV_STAGES, Arch, SearchSpace
from .blocks import (
    DynamicConvBNAct,
    DynamicMBConvStage,
    DynamicMBPoolHead,
    DynamicTransformerStage,
)
from .ops import DynamicModule


class AutoViTNet(nn.Module):
    """Stem -> stages -> head. The static form holds exactly the active stages; the supernet
    (a subclass) holds all of them and runs the first `num_active_stages`."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.num_active_stages = len(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages[:self.num_active_stages]:
            x = stage(x)
        return self.head(x)


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
                f.kernel_size, f.fuse_kernel, f.patch_size))
            max_in = max(choices.widths)
        head_in = max(w for choices in space.transformer_stages for w in choices.widths)
        head = DynamicMBPoolHead(head_in, f.head_expansion, num_classes, drop_rate)
        super().__init__(stem, stages, head)
        self.space, self.num_classes = space, num_classes
        self.active_arch: Arch = space.largest()
        self.set_active(self.active_arch)

    def set_active(self, arch: Arch) -> None:
        self.space.validate(arch)
        self.stem.set_active(3, arch.stem_width)
        channels = arch.stem_width
        for i, (width, depth) in enumerate(zip(arch.mbconv_widths, arch.mbconv_depths)):
            self.stages[i].set_active(channels, width, depth)
            channels = width
        for i in range(arch.num_transformer_stages):
            self.stages[NUM_MBCONV_STAGES + i].set_active(
                channels, arch.transformer_widths[i], arch.transformer_depths[i],
                arch.transformer_heads[i], arch.transformer_mlp_ratios[i])
            channels = arch.transformer_widths[i]
        self.head.set_active(channels)
        self.num_active_stages = NUM_MBCONV_STAGES + arch.num_transformer_stages
        self.active_arch = arch

    def sample_active(self, rng: random.Random) -> Arch:
        arch = self.space.sample(rng)
        self.set_active(arch)
        return arch

    def get_active_subnet(self, arch: Arch | None = None) -> AutoViTNet:
        """A plain module with a copy of the active (or given) subnet's weights; `arch` also
        becomes the active subnet. Keeps the supernet's train/eval mode."""
        if arch is not None:
            self.set_active(arch)
        stages = [stage.get_active_subnet() for stage in self.stages[:self.num_active_stages]]
        net = AutoViTNet(self.stem.get_active_subnet(), stages, self.head.get_active_subnet())
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
