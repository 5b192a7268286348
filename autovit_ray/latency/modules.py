"""The modules of a subnet, as the latency table sees them.

A subnet is cut into modules whose latencies add up; each block kind says how
(`BlockKind.latency_modules`): the stem, every MBConv layer (including the transition that opens each
MobileViT stage), the "frame" of each MobileViT block (local conv, 1x1 to tokens, unfold, final
LayerNorm, fold, 1x1 back, fusion: everything but its transformer layers), every transformer layer,
and the head. A module's key names its kind, the input resolution of the whole network and every
dimension that changes its cost, so two stages that produce the same shape share one key and depth
is additive (one key per layer, counted `depth` times).

Keys are plain strings (`layer/r256/s32/d64/h4/m2`): readable in the Parquet file and in errors,
and cheap enough to build for ~10^5 predictions per second. Pure Python: no torch here.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence

from ..blocks import block_kind
from ..blocks.ends import head_key, stem_key
from ..blocks.mbconv import mbconv_key
from ..blocks.mobilevit import frame_key, layer_key
from ..plan import BlockSpec, ModulePath, plan
from ..space import NUM_MBCONV_STAGES, Arch, SearchSpace

__all__ = ["arch_module_keys", "arch_modules", "block_modules", "blocks_modules", "constant_key",
           "enumerate_module_keys", "frame_key", "head_key", "key_kind", "key_resolution", "layer_key",
           "mbconv_key", "stem_key", "witness_archs"]


def constant_key(resolution: int) -> str:
    """The per-resolution offset (framework overhead, the network's own call) fitted at build."""
    return f"constant/r{resolution}"


def key_kind(key: str) -> str:
    return key.split("/", 1)[0]


def key_resolution(key: str) -> int:
    return int(key.split("/")[1][1:])


def block_modules(block: BlockSpec) -> list[tuple[str, ModulePath]]:
    """The latency-table modules of one planned block, as its kind cuts it: (key, path in the static
    subnet). A MobileViT block is its frame (path: the block, whose layers are separate modules) and
    one module per transformer layer."""
    return block_kind(block.kind).latency_modules(block)


def blocks_modules(blocks: Sequence[BlockSpec]) -> list[tuple[str, ModulePath]]:
    return [module for block in blocks for module in block_modules(block)]


def arch_modules(arch: Arch, space: SearchSpace, num_classes: int) -> list[tuple[str, ModulePath]]:
    """Every module of `arch` in forward order: (key, path of the module in the static subnet)."""
    return blocks_modules(plan(arch, space, num_classes))


def arch_module_keys(arch: Arch, space: SearchSpace, num_classes: int) -> list[str]:
    return [key for key, _ in arch_modules(arch, space, num_classes)]


def witness_archs(space: SearchSpace, resolution: int, seed: int = 0) -> list[Arch]:
    """A small set of valid archs at `resolution` that together contain every module the space can
    produce there. Each stage-local choice (and each pair of neighbouring widths, which fixes a
    stage-entry MBConv) is planted into a random arch and kept if the arch is valid."""
    if resolution not in space.resolutions:
        raise ValueError(f"resolution {resolution} is not in space {space.name!r} "
                         f"(input profile {space.input_profile.name!r}: {list(space.resolutions)})")
    rng = random.Random(seed)
    found: dict[str, Arch] = {}
    for arch in _planted_archs(space, resolution, rng):
        if not space.contains(arch):
            continue
        keys = arch_module_keys(arch, space, 1)
        if any(k not in found for k in keys):
            for k in keys:
                found.setdefault(k, arch)
    unique: dict[str, Arch] = {a.arch_hash: a for a in found.values()}
    return list(unique.values())


def _planted_archs(space: SearchSpace, resolution: int, rng: random.Random) -> Iterator[Arch]:
    def base(n_stages: int | None = None) -> Arch:
        for _ in range(1000):
            arch = dataclasses.replace(space.sample(rng), resolution=resolution)
            if n_stages is None or arch.num_transformer_stages == n_stages:
                return arch
        raise ValueError(f"space {space.name!r} cannot produce {n_stages} transformer stages")

    def put(values: tuple, index: int, value: object) -> tuple:
        return values[:index] + (value,) + values[index + 1:]

    for stem in space.stem_widths:  # stem and the first MBConv layer it feeds
        for width in space.mbconv_stages[0].widths:
            for depth in space.mbconv_stages[0].depths:
                a = base()
                yield dataclasses.replace(a, stem_width=stem, mbconv_widths=put(a.mbconv_widths, 0, width),
                                          mbconv_depths=put(a.mbconv_depths, 0, depth))
    for i in range(1, NUM_MBCONV_STAGES):  # each MBConv stage with each input width
        for cin in space.mbconv_stages[i - 1].widths:
            for width in space.mbconv_stages[i].widths:
                for depth in space.mbconv_stages[i].depths:
                    a = base()
                    widths = put(put(a.mbconv_widths, i - 1, cin), i, width)
                    yield dataclasses.replace(a, mbconv_widths=widths,
                                              mbconv_depths=put(a.mbconv_depths, i, depth))
    last_mb = space.mbconv_stages[-1].widths
    for n in space.num_transformer_stages:  # each transformer stage: input width x own choices
        for i in range(n):
            inputs = last_mb if i == 0 else space.transformer_stages[i - 1].widths
            stage = space.transformer_stages[i]
            for cin in inputs:
                for width in stage.widths:
                    for heads in stage.heads:
                        for ratio in stage.mlp_ratios:
                            a = base(n)
                            tw = put(a.transformer_widths, i, width)
                            mw = a.mbconv_widths
                            if i == 0:
                                mw = put(mw, NUM_MBCONV_STAGES - 1, cin)
                            else:
                                tw = put(tw, i - 1, cin)
                            tw = _repair_around(space, tw, i)
                            yield dataclasses.replace(
                                a, mbconv_widths=mw, transformer_widths=tw,
                                transformer_depths=put(a.transformer_depths, i, max(stage.depths)),
                                transformer_heads=put(a.transformer_heads, i, heads),
                                transformer_mlp_ratios=put(a.transformer_mlp_ratios, i, ratio))


def _repair_around(space: SearchSpace, widths: tuple[int, ...], fixed_index: int) -> tuple[int, ...]:
    """Make widths non-decreasing while keeping the planted pair (fixed_index - 1, fixed_index):
    lower the stages before it and raise the stages after it where their choices allow."""
    out = list(widths)
    for i in range(fixed_index - 2, -1, -1):
        if out[i] > out[i + 1]:
            below = [w for w in space.transformer_stages[i].widths if w <= out[i + 1]]
            out[i] = max(below) if below else out[i]
    for i in range(fixed_index + 1, len(out)):
        if out[i] < out[i - 1]:
            above = [w for w in space.transformer_stages[i].widths if w >= out[i - 1]]
            out[i] = min(above) if above else out[i]
    return tuple(out)


def enumerate_module_keys(space: SearchSpace, resolution: int, num_classes: int) -> list[str]:
    """Every module key the space can produce at `resolution`, sorted."""
    keys = {k for a in witness_archs(space, resolution) for k in arch_module_keys(a, space, num_classes)}
    return sorted(keys)
