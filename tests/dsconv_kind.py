"""A depthwise-separable conv stage: a block kind in one file (docs/extending.md, "A new block kind")."""

from __future__ import annotations

import torch
from torch import nn

from autovit_ray.blocks import (
    BlockSpec,
    ModulePath,
    StageInput,
    StageKind,
    conv_bn_params,
    conv_out,
    register_block_kind,
)
from autovit_ray.nn import DynamicModule
from autovit_ray.nn.blocks import BlockSequence, DynamicConvBNAct, static_conv_bn_act

KERNEL = 5  # the depthwise kernel: this kind's own, whatever the space's fixed kernel_size


class SeparableConv(nn.Module):
    """5x5 depthwise conv (the stage's stride on its first block) -> 1x1 pointwise conv, each with
    BatchNorm and SiLU; no residual."""

    def __init__(self, depthwise: nn.Module, pointwise: nn.Module) -> None:
        super().__init__()
        self.depthwise, self.pointwise = depthwise, pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class DynamicSeparableConv(SeparableConv, DynamicModule):
    """Owns the weights of its largest widths (dynamic ops); a smaller width computes with slices."""

    def __init__(self, max_in: int, max_out: int, stride: int) -> None:
        super().__init__(DynamicConvBNAct(max_in, max_in, KERNEL, stride, depthwise=True),
                         DynamicConvBNAct(max_in, max_out, 1))

    def set_active(self, in_channels: int, out_channels: int) -> None:
        self.depthwise.set_active(in_channels, in_channels)
        self.pointwise.set_active(in_channels, out_channels)

    def get_active_subnet(self) -> SeparableConv:
        return SeparableConv(self.depthwise.get_active_subnet(), self.pointwise.get_active_subnet())


class DynamicSeparableStage(BlockSequence, DynamicModule):
    """The stage's largest depth of blocks; the first `depth` run."""

    def get_active_subnet(self) -> BlockSequence:
        return BlockSequence([block.get_active_subnet() for block in self.blocks[:self.depth]])


class SeparableConvKind(StageKind):
    name = "dsconv"
    slot = "conv"  # fills an entry of the space's mbconv_stages: choices widths and depths

    def plan_stage(self, stage: StageInput) -> tuple[BlockSpec, ...]:
        blocks, size, cin = [], stage.size, stage.in_width
        for j in range(stage.depth):
            stride = stage.stride if j == 0 else 1
            out = conv_out(size, KERNEL, stride)
            blocks.append(BlockSpec(self.name, ("stages", stage.stage, "blocks", j), stage.stage,
                                    stage.resolution, cin, stage.width, stride, size, out, KERNEL,
                                    stage_kind=self.name))
            size, cin = out, stage.width
        return tuple(blocks)

    def params(self, block: BlockSpec) -> int:
        cin = block.in_width
        return conv_bn_params(cin, cin, KERNEL, groups=cin) + conv_bn_params(cin, block.out_width, 1)

    def macs(self, block: BlockSpec) -> int:
        pixels = block.size_out ** 2
        return KERNEL ** 2 * block.in_width * pixels + block.in_width * block.out_width * pixels

    def latency_modules(self, block: BlockSpec) -> list[tuple[str, ModulePath]]:
        b = block
        return [(f"dsconv/r{b.resolution}/s{b.size_in}/i{b.in_width}/o{b.out_width}/t{b.stride}", b.path)]

    def static_stage(self, blocks: tuple[BlockSpec, ...]) -> BlockSequence:
        return BlockSequence([
            SeparableConv(static_conv_bn_act(b.in_width, b.in_width, KERNEL, b.stride, groups=b.in_width),
                          static_conv_bn_act(b.in_width, b.out_width, 1)) for b in blocks])

    def dynamic_stage(self, largest: tuple[BlockSpec, ...]) -> DynamicSeparableStage:
        return DynamicSeparableStage([DynamicSeparableConv(b.in_width, b.out_width, b.stride) for b in largest])

    def set_active(self, module: DynamicSeparableStage, blocks: tuple[BlockSpec, ...]) -> None:
        for block, spec in zip(module.blocks, blocks):
            block.set_active(spec.in_width, spec.out_width)
        module.depth = len(blocks)


register_block_kind(SeparableConvKind())
