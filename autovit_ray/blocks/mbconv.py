"""The `mbconv` kind: a stage of MobileNetV2 inverted-residual blocks (the default conv stage).

Each block: [1x1 expand] -> k x k depthwise (stride on the first block) -> 1x1 project, a residual
where shapes allow. Its modules are `MBConv`, `DynamicMBConv` and `DynamicMBConvStage` in
`autovit_ray.nn.blocks` (MobileViT stages open with an MBConv transition: `mbconv_block`).
"""

from __future__ import annotations

from typing import Any

from .kind import (
    BlockSpec,
    ModulePath,
    StageInput,
    StageKind,
    conv_bn_params,
    conv_out,
    register_block_kind,
)

NAME = "mbconv"


def mbconv_key(resolution: int, size_in: int, cin: int, cout: int, stride: int) -> str:
    return f"mbconv/r{resolution}/s{size_in}/i{cin}/o{cout}/t{stride}"


def mbconv_block(stage: StageInput, path: ModulePath, in_width: int, size: int, stride: int,
                 stage_kind: str) -> BlockSpec:
    """One MBConv block of `stage` to `stage.width` channels, entered at `size` with `in_width`."""
    return BlockSpec(NAME, path, stage.stage, stage.resolution, in_width, stage.width, stride, size,
                     conv_out(size, stage.kernel_size, stride), stage.kernel_size, stage.expansion,
                     stage_kind=stage_kind)


def static_mbconv(block: BlockSpec) -> Any:
    from ..nn.blocks import MBConv, static_conv_bn_act

    hidden = block.hidden_width
    expand = static_conv_bn_act(block.in_width, hidden, 1) if block.expansion != 1 else None
    return MBConv(expand, static_conv_bn_act(hidden, hidden, block.kernel_size, block.stride, groups=hidden),
                  static_conv_bn_act(hidden, block.out_width, 1, act=False),
                  use_residual=block.stride == 1 and block.in_width == block.out_width)


class MBConvKind(StageKind):
    name = NAME
    slot = "conv"

    def params(self, block: BlockSpec) -> int:
        hidden = block.hidden_width
        expand = conv_bn_params(block.in_width, hidden, 1) if block.expansion != 1 else 0
        depthwise = conv_bn_params(hidden, hidden, block.kernel_size, groups=hidden)
        return expand + depthwise + conv_bn_params(hidden, block.out_width, 1)

    def macs(self, block: BlockSpec) -> int:
        hidden, pixels = block.hidden_width, block.size_out * block.size_out
        expand = block.in_width * hidden * block.size_in * block.size_in if block.expansion != 1 else 0
        return expand + block.kernel_size ** 2 * hidden * pixels + hidden * block.out_width * pixels

    def latency_modules(self, block: BlockSpec) -> list[tuple[str, ModulePath]]:
        key = mbconv_key(block.resolution, block.size_in, block.in_width, block.out_width, block.stride)
        return [(key, block.path)]

    def plan_stage(self, stage: StageInput) -> tuple[BlockSpec, ...]:
        blocks: list[BlockSpec] = []
        size, cin = stage.size, stage.in_width
        for j in range(stage.depth):
            blocks.append(mbconv_block(stage, ("stages", stage.stage, "blocks", j), cin, size,
                                       stage.stride if j == 0 else 1, NAME))
            size, cin = blocks[-1].size_out, stage.width
        return tuple(blocks)

    def static_stage(self, blocks: tuple[BlockSpec, ...]) -> Any:
        from ..nn.blocks import BlockSequence

        return BlockSequence([static_mbconv(block) for block in blocks])

    def dynamic_stage(self, largest: tuple[BlockSpec, ...]) -> Any:
        from ..nn.blocks import DynamicMBConvStage

        first = largest[0]
        return DynamicMBConvStage(first.in_width, first.out_width, len(largest), first.stride, first.expansion,
                                  first.kernel_size)

    def set_active(self, module: Any, blocks: tuple[BlockSpec, ...]) -> None:
        module.set_active(blocks[0].in_width, blocks[0].out_width, len(blocks))


register_block_kind(MBConvKind())
