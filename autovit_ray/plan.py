"""The network plan: every block of one subnet, its widths, stride and feature-map size, in order.

`plan(arch, space, num_classes)` is the one place that walks an arch's strides and widths. The
rest is derived from it: the supernet's active path (`Supernet.set_active`), the static network
(`autovit_ray.nn.build_net`), the analytic `count_params` / `count_macs` (`BlockSpec.params` /
`.macs`) and the latency table's module keys (`latency.modules.block_modules`).

A network is: the stem, 3 MBConv stages of `depth` MBConv blocks each, 3 or 4 transformer
stages (a transition MBConv, then a MobileViT block of `depth` transformer layers) and the MBPool
head. Pure Python: no torch, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .space import NUM_MBCONV_STAGES, Arch, SearchSpace, conv_out, space_for_arch

BLOCK_KINDS = ("stem", "mbconv", "mobilevit", "head")
ModulePath = tuple[str | int, ...]  # attribute names / indices into a static AutoViTNet


@dataclass(frozen=True)
class BlockSpec:
    """One block of a subnet. `path` is where it sits in `AutoViTNet` (e.g. ("stages", 1,
    "blocks", 0)); `stage` indexes `AutoViTNet.stages` (-1 for the stem and the head)."""

    kind: str
    path: ModulePath
    stage: int
    resolution: int  # the network's input resolution
    in_width: int
    out_width: int
    stride: int
    size_in: int  # feature-map side entering the block
    size_out: int
    kernel_size: int
    expansion: int = 1  # MBConv: hidden = in_width x expansion; head: 1x1 conv to in_width x expansion
    depth: int = 0  # MobileViT: transformer layers
    heads: int = 0
    head_dim: int = 0
    mlp_ratio: float = 0.0
    patch_size: int = 0
    fuse_kernel: int = 0
    num_classes: int = 0  # head

    @property
    def tokens_per_sequence(self) -> int:
        """MobileViT: tokens in each attention sequence (patches of the map); 0 for other blocks."""
        return (self.size_out // self.patch_size) ** 2 if self.kind == "mobilevit" else 0

    @property
    def hidden_width(self) -> int:
        """MBConv: the depthwise width; head: the pooled feature width; MobileViT: the MLP width."""
        if self.kind == "mobilevit":
            return round(self.out_width * self.mlp_ratio)
        return self.in_width * self.expansion

    @property
    def params(self) -> int:
        """Trainable parameters (BatchNorm affine included, running statistics not)."""
        k = self.kernel_size
        if self.kind == "stem":
            return _conv_bn(self.in_width, self.out_width, k)
        if self.kind == "mbconv":
            hidden = self.hidden_width
            expand = _conv_bn(self.in_width, hidden, 1) if self.expansion != 1 else 0
            return expand + _conv_bn(hidden, hidden, k, groups=hidden) + _conv_bn(hidden, self.out_width, 1)
        if self.kind == "mobilevit":
            d = self.out_width
            qkv, hidden = self.heads * self.head_dim, self.hidden_width
            attention = d * 3 * qkv + 3 * qkv + qkv * d + d
            mlp = d * hidden + hidden + hidden * d + d
            layer = 2 * d + attention + 2 * d + mlp  # two LayerNorms
            frame = _conv_bn(d, d, k) + _conv_bn(d, d, 1, bn=False)  # local 3x3, 1x1 to tokens
            frame += 2 * d  # final LayerNorm
            frame += _conv_bn(d, d, 1) + _conv_bn(2 * d, d, self.fuse_kernel)  # 1x1 back, fusion
            return frame + self.depth * layer
        hidden = self.hidden_width
        return _conv_bn(self.in_width, hidden, 1) + hidden * self.num_classes + self.num_classes

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one image: convs, linears and the two attention matmuls."""
        k, pixels = self.kernel_size, self.size_out * self.size_out
        if self.kind == "stem":
            return k * k * self.in_width * self.out_width * pixels
        if self.kind == "mbconv":
            hidden = self.hidden_width
            expand = self.in_width * hidden * self.size_in * self.size_in if self.expansion != 1 else 0
            return expand + k * k * hidden * pixels + hidden * self.out_width * pixels
        if self.kind == "mobilevit":
            d = self.out_width
            qkv, hidden = self.heads * self.head_dim, self.hidden_width
            tokens_per_sequence = self.tokens_per_sequence
            per_layer = pixels * (d * 3 * qkv + qkv * d + 2 * d * hidden)  # linears over every pixel
            per_layer += 2 * pixels * tokens_per_sequence * qkv  # QK^T and AV
            frame = k * k * d * d * pixels + d * d * pixels  # local conv, 1x1 to tokens
            frame += d * d * pixels + self.fuse_kernel ** 2 * 2 * d * d * pixels  # 1x1 back, fusion
            return frame + self.depth * per_layer
        hidden = self.hidden_width
        return self.in_width * hidden * pixels + hidden * self.num_classes


def _conv_bn(cin: int, cout: int, kernel: int, groups: int = 1, bn: bool = True) -> int:
    return kernel * kernel * (cin // groups) * cout + (2 * cout if bn else 0)


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
    """The stem and the MBConv stages (not validated: `plan` validates the whole arch)."""
    f, strides, r = space.fixed, space.strides, resolution
    size = conv_out(r, f.kernel_size, strides[0])
    blocks = [BlockSpec("stem", ("stem",), -1, r, 3, stem_width, strides[0], r, size, f.kernel_size)]
    cin = stem_width
    for i, (width, depth) in enumerate(zip(mbconv_widths, mbconv_depths)):
        for j in range(depth):
            stride = strides[1 + i] if j == 0 else 1
            out = conv_out(size, f.kernel_size, stride)
            blocks.append(BlockSpec("mbconv", ("stages", i, "blocks", j), i, r, cin, width, stride, size, out,
                                    f.kernel_size, f.mbconv_expansion))
            size, cin = out, width
    return tuple(blocks)


def transformer_stage_plan(space: SearchSpace, resolution: int, index: int, size: int, cin: int, width: int,
                           depth: int, heads: int, mlp_ratio: float) -> tuple[BlockSpec, BlockSpec]:
    """Transformer stage `index` (0-based) entered at `size` x `size` with `cin` channels: its
    transition MBConv and its MobileViT block."""
    f, stage = space.fixed, NUM_MBCONV_STAGES + index
    stride = space.strides[stage + 1]
    out = conv_out(size, f.kernel_size, stride)
    transition = BlockSpec("mbconv", ("stages", stage, "transition"), stage, resolution, cin, width, stride,
                           size, out, f.kernel_size, f.mbconv_expansion)
    block = BlockSpec("mobilevit", ("stages", stage, "block"), stage, resolution, width, width, 1, out, out,
                      f.kernel_size, depth=depth, heads=heads, head_dim=f.head_dim, mlp_ratio=mlp_ratio,
                      patch_size=space.patch_size(index), fuse_kernel=f.fuse_kernel)
    return transition, block


def head_plan(space: SearchSpace, resolution: int, size: int, cin: int, num_classes: int) -> BlockSpec:
    return BlockSpec("head", ("head",), -1, resolution, cin, num_classes, 1, size, size, 1,
                     space.fixed.head_expansion, num_classes=num_classes)


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
