"""Cut a static subnet into the torch modules the latency table times in isolation."""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn

from ..blocks import block_kind
from ..plan import ModulePath, plan
from ..space import Arch, SearchSpace


def _resolve(net: nn.Module, path: ModulePath) -> nn.Module:
    module = net
    for part in path:
        # an int indexes a ModuleList (a network's stages, a stage's blocks or layers)
        module = cast(nn.ModuleList, module)[part] if isinstance(part, int) else getattr(module, part)
    return module


def extract_modules(net: nn.Module, arch: Arch, space: SearchSpace,
                    num_classes: int) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """key -> (static module, its input shape at batch 1) for every module of `net` (= the static
    subnet of `arch`). Input shapes come from one forward pass with hooks, so they are exact; the pass
    runs on a copy on the meta device, which computes shapes only (no arithmetic at 256 px)."""
    modules = [(key, path, block_kind(block.kind)) for block in plan(arch, space, num_classes)
               for key, path in block_kind(block.kind).latency_modules(block)]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    shape_net = copy.deepcopy(net).to("meta")
    for key, path, _ in modules:
        if key in shapes:
            continue
        module = _resolve(shape_net, path)

        def record(_mod: nn.Module, args: tuple, key: str = key) -> None:
            shapes.setdefault(key, tuple(args[0].shape))

        hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            shape_net.eval()(torch.zeros(1, 3, arch.resolution, arch.resolution, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    out: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
    for key, path, kind in modules:
        if key not in out:  # the module its kind times for the key (MobileViT: the frame without its layers)
            out[key] = (kind.timed_module(key, _resolve(net, path)).eval(), shapes[key])
    return out
