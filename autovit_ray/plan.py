"""The network plan: every block of one subnet, its widths, stride and feature-map size, in order.

`plan(arch, space, num_classes)` is the one place that walks an arch's strides and widths. The
rest is derived from it: the supernet's active path (`Supernet.set_active`), the static network
(`autovit_ray.nn.build_net`), the analytic `count_params` / `count_macs` (`BlockSpec.params` /
`.macs`) and the latency table's module keys (`latency.modules.block_modules`).

A network is: the stem, 3 conv stages, 1 to 4 transformer stages and the MBPool head. Each stage is
planned by its block kind (`autovit_ray.blocks`; the space's YAML names it, default `mbconv`: `depth`
MBConv blocks, and `mobilevit`: a transition MBConv, then a MobileViT block of `depth` transformer
layers). Pure Python: no torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .blocks import BlockSpec, ModulePath, StageInput, conv_out, stage_kind
from .space import NUM_MBCONV_STAGES, Arch, SearchSpace, space_for_arch

__all__ = ["BlockSpec", "ModulePath", "count_macs", "count_params", "describe_space", "front_plan", "head_plan",
           "largest_stage_plans", "plan", "stage_groups", "stage_plan", "transformer_stage_plan"]


def plan(arch: Arch, space: SearchSpace, num_classes: int) -> tuple[BlockSpec, ...]:
    """Every block of `arch` in forward order (ValueError if `arch` is not in `space`)."""
    space.validate(arch)
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    num_classes = int(num_classes)
    blocks = list(front_plan(space, arch.resolution, arch.stem_width, arch.mbconv_widths, arch.mbconv_depths))
    for i in range(arch.num_transformer_stages):
        blocks += transformer_stage_plan(space, arch.resolution, i, blocks[-1].size_out, blocks[-1].out_width,
                                         arch.transformer_widths[i], arch.transformer_depths[i],
                                         arch.transformer_heads[i], arch.transformer_mlp_ratios[i])
    blocks.append(head_plan(space, arch.resolution, blocks[-1].size_out, blocks[-1].out_width, num_classes))
    return tuple(blocks)


def front_plan(space: SearchSpace, resolution: int, stem_width: int, mbconv_widths: tuple[int, ...],
               mbconv_depths: tuple[int, ...]) -> tuple[BlockSpec, ...]:
    """The stem and the conv stages (not validated: `plan` validates the whole arch)."""
    f, r = space.fixed, resolution
    size = conv_out(r, f.kernel_size, space.strides[0])
    blocks = [BlockSpec("stem", ("stem",), -1, r, 3, stem_width, space.strides[0], r, size, f.kernel_size)]
    for i, (width, depth) in enumerate(zip(mbconv_widths, mbconv_depths)):
        blocks += stage_plan(space, i, r, blocks[-1].size_out, blocks[-1].out_width, width, depth)
    return tuple(blocks)


def transformer_stage_plan(space: SearchSpace, resolution: int, index: int, size: int, cin: int, width: int,
                           depth: int, heads: int, mlp_ratio: float) -> tuple[BlockSpec, ...]:
    """Transformer stage `index` (0-based) entered at `size` x `size` with `cin` channels (for the
    `mobilevit` kind: its transition MBConv and its MobileViT block)."""
    return stage_plan(space, NUM_MBCONV_STAGES + index, resolution, size, cin, width, depth, heads, mlp_ratio)


def stage_plan(space: SearchSpace, stage: int, resolution: int, size: int, cin: int, width: int, depth: int,
               heads: int = 0, mlp_ratio: float = 0.0) -> tuple[BlockSpec, ...]:
    """Stage `stage` (an index into `AutoViTNet.stages`), planned by the space's kind of it."""
    f = space.fixed
    transformer = stage - NUM_MBCONV_STAGES
    choices = space.mbconv_stages[stage] if transformer < 0 else space.transformer_stages[transformer]
    slot = "conv" if transformer < 0 else "transformer"
    return stage_kind(choices.kind, slot).plan_stage(StageInput(
        stage, resolution, size, cin, space.strides[stage + 1], width, depth, heads, mlp_ratio, f.kernel_size,
        f.mbconv_expansion, f.head_dim, f.fuse_kernel, space.patch_size(transformer) if transformer >= 0 else 0))


def head_plan(space: SearchSpace, resolution: int, size: int, cin: int, num_classes: int) -> BlockSpec:
    return BlockSpec("head", ("head",), -1, resolution, cin, num_classes, 1, size, size, 1,
                     space.fixed.head_expansion, num_classes=num_classes)


def stage_groups(blocks: Sequence[BlockSpec]) -> list[tuple[BlockSpec, ...]]:
    """The blocks of each stage, in order (the stem and the head left out)."""
    groups: dict[int, list[BlockSpec]] = {}
    for block in blocks:
        if block.stage >= 0:
            groups.setdefault(block.stage, []).append(block)
    return [tuple(group) for group in groups.values()]


def largest_stage_plans(space: SearchSpace) -> list[tuple[BlockSpec, ...]]:
    """Every stage of the space (each transformer stage, active in some subnet or not) planned at its
    largest choices and entered by the largest width of the stage before: the weights a supernet
    owns. Feature-map sizes are those of the largest resolution (weights do not depend on them)."""
    r = space.default_resolution
    conv, transformer = space.mbconv_stages, space.transformer_stages
    blocks = list(front_plan(space, r, max(space.stem_widths), tuple(max(s.widths) for s in conv),
                             tuple(max(s.depths) for s in conv)))
    for i, s in enumerate(transformer):
        blocks += transformer_stage_plan(space, r, i, blocks[-1].size_out, blocks[-1].out_width, max(s.widths),
                                         max(s.depths), max(s.heads), max(s.mlp_ratios))
    return stage_groups(blocks)


# --------------------------------------------------------------------------------------------
# Analytic parameter and MAC counts: sums over the plan
# --------------------------------------------------------------------------------------------


def count_params(arch: Arch, num_classes: int, space: SearchSpace | None = None) -> int:
    """Trainable parameters of the subnet, computed from the arch alone (no model is built)."""
    return sum(block.params for block in plan(arch, space or space_for_arch(arch), num_classes))


def count_macs(arch: Arch, num_classes: int, space: SearchSpace | None = None) -> int:
    """Multiply-accumulates of one image (the paper's and MobileViT's "FLOPs"). Counts convs,
    linears and the two attention matmuls; norms, activations and pooling are not counted
    (torch's flop counter, at 2 FLOPs per MAC, counts the same ops)."""
    return sum(block.macs for block in plan(arch, space or space_for_arch(arch), num_classes))


def describe_space(space: SearchSpace, num_classes: int = 1000) -> dict[str, Any]:
    """A space's sizes, parameter / MAC ranges, tokens per attention sequence and choices
    (`python -m autovit_ray.space describe`)."""
    small, large = space.smallest(), space.largest()
    return {
        "name": space.name,
        "input_profile": space.input_profile.name,
        "fingerprint": space.fingerprint(),
        "size_constrained": space.size(constrained=True),
        "size_unconstrained": space.size(constrained=False),
        "size_constrained_per_resolution": space.size(constrained=True, per_resolution=True),
        "size_unconstrained_per_resolution": space.size(constrained=False, per_resolution=True),
        "num_classes": num_classes,
        "params_min": count_params(small, num_classes, space),
        "params_max": count_params(large, num_classes, space),
        "macs_min": count_macs(small, num_classes, space),
        "macs_max": count_macs(large, num_classes, space),
        "smallest": small.to_dict(),
        "largest": large.to_dict(),
        "tokens_per_sequence": {r: space.attention_tokens(r) for r in space.resolutions},
        "choices": space.to_dict(),
    }
