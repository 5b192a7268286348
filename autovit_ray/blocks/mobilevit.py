"""The `mobilevit` kind: a transformer stage (the default one): a transition MBConv (downsampling
and/or width change), then a MobileViT block of `depth` transformer layers over unfolded patches.

The latency table cuts the MobileViT block into its "frame" (local conv, 1x1 to tokens, unfold,
final LayerNorm, fold, 1x1 back, fusion: everything but the layers) and one module per transformer
layer, so depth is additive. Modules: `MobileViTBlock`, `TransformerStage` and their dynamic forms
in `autovit_ray.nn.blocks`.
"""

from __future__ import annotations

from typing import Any

from .kind import BlockSpec, ModulePath, StageInput, StageKind, conv_bn_params, register_block_kind
from .mbconv import mbconv_block, static_mbconv

NAME = "mobilevit"


def frame_key(resolution: int, size: int, width: int) -> str:
    return f"frame/r{resolution}/s{size}/d{width}"


def layer_key(resolution: int, size: int, width: int, heads: int, mlp_ratio: float) -> str:
    return f"layer/r{resolution}/s{size}/d{width}/h{heads}/m{mlp_ratio:g}"


def frame_only(block: Any) -> Any:
    """The MobileViT block without its transformer layers (they are timed as separate modules)."""
    from ..nn.blocks import MobileViTBlock

    return MobileViTBlock(block.local, block.to_tokens, [], block.norm, block.from_tokens, block.fuse,
                          block.patch_size).eval()


class MobileViTKind(StageKind):
    name = NAME
    slot = "transformer"
    export_notes = ("attention is written out (Q-K-V linear, matmul, softmax), not nn.MultiheadAttention, so "
                    "TorchScript, ONNX and CoreML convert it; the patch unfold/fold reshapes stay at rank <= 5 "
                    "for CoreML; ONNX needs opset >= 17 (LayerNormalization)")

    def check_choices(self, choices: Any, where: str) -> None:
        for width in choices.widths:
            for ratio in choices.mlp_ratios:
                if abs(width * ratio - round(width * ratio)) > 1e-9:
                    raise ValueError(f"{where} width {width} x mlp_ratio {ratio} is not an integer MLP width")

    def hidden_width(self, block: BlockSpec) -> int:
        return round(block.out_width * block.mlp_ratio)

    def tokens_per_sequence(self, block: BlockSpec) -> int:
        return (block.size_out // block.patch_size) ** 2

    def params(self, block: BlockSpec) -> int:
        d = block.out_width
        qkv, hidden = block.heads * block.head_dim, block.hidden_width
        attention = d * 3 * qkv + 3 * qkv + qkv * d + d
        mlp = d * hidden + hidden + hidden * d + d
        layer = 2 * d + attention + 2 * d + mlp  # two LayerNorms
        frame = conv_bn_params(d, d, block.kernel_size) + conv_bn_params(d, d, 1, bn=False)  # local, to tokens
        frame += 2 * d  # final LayerNorm
        frame += conv_bn_params(d, d, 1) + conv_bn_params(2 * d, d, block.fuse_kernel)  # 1x1 back, fusion
        return frame + block.depth * layer

    def macs(self, block: BlockSpec) -> int:
        d, pixels = block.out_width, block.size_out * block.size_out
        qkv, hidden = block.heads * block.head_dim, block.hidden_width
        per_layer = pixels * (d * 3 * qkv + qkv * d + 2 * d * hidden)  # linears over every pixel
        per_layer += 2 * pixels * block.tokens_per_sequence * qkv  # QK^T and AV
        frame = block.kernel_size ** 2 * d * d * pixels + d * d * pixels  # local conv, 1x1 to tokens
        frame += d * d * pixels + block.fuse_kernel ** 2 * 2 * d * d * pixels  # 1x1 back, fusion
        return frame + block.depth * per_layer

    def latency_modules(self, block: BlockSpec) -> list[tuple[str, ModulePath]]:
        """The frame (path: the block, whose layers are separate modules) and one module per layer."""
        r = block.resolution
        # MobileViT's 2x2 patch is unmarked (the keys of every table before per-stage patch sizes)
        patch = "" if block.patch_size == 2 else f"/p{block.patch_size}"
        key = layer_key(r, block.size_out, block.out_width, block.heads, block.mlp_ratio) + patch
        return [(frame_key(r, block.size_out, block.out_width) + patch, block.path),
                *((key, (*block.path, "layers", j)) for j in range(block.depth))]

    def timed_module(self, key: str, module: Any) -> Any:
        return frame_only(module) if key.startswith("frame/") else module

    def plan_stage(self, stage: StageInput) -> tuple[BlockSpec, ...]:
        path = ("stages", stage.stage)
        transition = mbconv_block(stage, (*path, "transition"), stage.in_width, stage.size, stage.stride, NAME)
        size, d = transition.size_out, stage.width
        block = BlockSpec(NAME, (*path, "block"), stage.stage, stage.resolution, d, d, 1, size, size,
                          stage.kernel_size, depth=stage.depth, heads=stage.heads, head_dim=stage.head_dim,
                          mlp_ratio=stage.mlp_ratio, patch_size=stage.patch_size, fuse_kernel=stage.fuse_kernel,
                          stage_kind=NAME)
        return transition, block

    def static_stage(self, blocks: tuple[BlockSpec, ...]) -> Any:
        from torch import nn

        from ..nn.blocks import (
            MLP,
            Attention,
            MobileViTBlock,
            TransformerLayer,
            TransformerStage,
            static_conv,
            static_conv_bn_act,
            static_linear,
        )

        transition, block = blocks
        d, qkv, hidden = block.out_width, block.heads * block.head_dim, block.hidden_width

        def layer() -> TransformerLayer:
            attn = Attention(static_linear(d, 3 * qkv), static_linear(qkv, d), block.heads, block.head_dim)
            return TransformerLayer(nn.LayerNorm(d), attn, nn.LayerNorm(d),
                                    MLP(static_linear(d, hidden), static_linear(hidden, d)))

        vit = MobileViTBlock(static_conv_bn_act(d, d, block.kernel_size), static_conv(d, d, 1),
                             [layer() for _ in range(block.depth)], nn.LayerNorm(d), static_conv_bn_act(d, d, 1),
                             static_conv_bn_act(2 * d, d, block.fuse_kernel), block.patch_size)
        return TransformerStage(static_mbconv(transition), vit)

    def dynamic_stage(self, largest: tuple[BlockSpec, ...]) -> Any:
        from ..nn.blocks import DynamicTransformerStage

        transition, block = largest
        return DynamicTransformerStage(transition.in_width, block.out_width, block.depth, block.heads,
                                       block.head_dim, block.mlp_ratio, transition.stride, transition.expansion,
                                       transition.kernel_size, block.fuse_kernel, block.patch_size)

    def set_active(self, module: Any, blocks: tuple[BlockSpec, ...]) -> None:
        transition, block = blocks
        module.set_active(transition.in_width, block.out_width, block.depth, block.heads, block.mlp_ratio)


register_block_kind(MobileViTKind())
