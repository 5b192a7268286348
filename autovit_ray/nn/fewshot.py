"""A few-shot supernet (Few-shot NAS, Zhao et al., ICML 2021): one supernet per region of the space,
here one per number of transformer stages, each fine-tuned from the whole-space supernet on its own
subnets only, so that subnets of one region no longer share weights with those of another.

It answers as one supernet: `set_active` / `get_active_subnet` / `forward` go to the part that holds
the arch, so the search, the export and the fidelity check use it unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import torch
from torch import nn

from ..space import Arch, SearchSpace
from .supernet import AutoViTNet, Supernet


class FewShotSupernet(nn.Module):
    """Parts keyed by transformer stage count; every part is a supernet of the same `space`."""

    def __init__(self, space: SearchSpace, parts: Mapping[int, Supernet]) -> None:
        super().__init__()
        if sorted(parts) != sorted(space.num_transformer_stages):
            raise ValueError(f"a few-shot supernet of space {space.name!r} needs one part per transformer stage "
                             f"count {sorted(space.num_transformer_stages)}, got parts {sorted(parts)}")
        classes = {part.num_classes for part in parts.values()}
        if len(classes) != 1:
            raise ValueError(f"the parts of a few-shot supernet disagree on the number of classes: {sorted(classes)}")
        for count, part in parts.items():
            if part.space.fingerprint() != space.fingerprint():
                raise ValueError(f"few-shot part {count} is a supernet of another space (fingerprint "
                                 f"{part.space.fingerprint()}, not {space.fingerprint()})")
        self.space, self.num_classes = space, classes.pop()
        # ModuleDict keys are strings: the transformer stage count
        self.parts = nn.ModuleDict({str(count): parts[count] for count in sorted(parts)})
        self.active_arch: Arch = space.largest()
        self.set_active(self.active_arch)

    def part_of(self, arch: Arch) -> Supernet:
        """The part that holds `arch` (refuses an arch of another space)."""
        self.space.validate(arch)
        part = self.parts[str(arch.num_transformer_stages)]
        assert isinstance(part, Supernet)
        return part

    @property
    def active_part(self) -> Supernet:
        """The part of the active arch (a key, not a second registration of the module)."""
        part = self.parts[self._active_key]
        assert isinstance(part, Supernet)
        return part

    def set_active(self, arch: Arch) -> None:
        self.part_of(arch).set_active(arch)  # validates once here, not in every forward
        self._active_key = str(arch.num_transformer_stages)
        self.active_arch = arch

    def sample_active(self, rng: random.Random) -> Arch:
        arch = self.space.sample(rng)
        self.set_active(arch)
        return arch

    def get_active_subnet(self, arch: Arch | None = None) -> AutoViTNet:
        """A plain module with a copy of the active (or given) subnet's weights, from its part."""
        if arch is not None:
            self.set_active(arch)
        return self.active_part.get_active_subnet(self.active_arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.active_part(x)


__all__ = ["FewShotSupernet"]
