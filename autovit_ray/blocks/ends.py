"""The stem and the head: the two ends every network has once (not stage kinds, so not a choice of
a space). Their modules are `AutoViTNet.stem` and `.head`, built by `autovit_ray.nn.supernet`."""

from __future__ import annotations

from .kind import BlockKind, BlockSpec, ModulePath, conv_bn_params, register_block_kind


def stem_key(resolution: int, width: int) -> str:
    return f"stem/r{resolution}/c{width}"


def head_key(resolution: int, size: int, width: int, num_classes: int) -> str:
    return f"head/r{resolution}/s{size}/c{width}/k{num_classes}"


class StemKind(BlockKind):
    """A strided k x k conv from the RGB image to the stem width."""

    name = "stem"

    def params(self, block: BlockSpec) -> int:
        return conv_bn_params(block.in_width, block.out_width, block.kernel_size)

    def macs(self, block: BlockSpec) -> int:
        pixels = block.size_out * block.size_out
        return block.kernel_size ** 2 * block.in_width * block.out_width * pixels

    def latency_modules(self, block: BlockSpec) -> list[tuple[str, ModulePath]]:
        return [(stem_key(block.resolution, block.out_width), block.path)]


class HeadKind(BlockKind):
    """MBPool: a 1x1 conv to `expansion` x the last width, global average pool, the classifier."""

    name = "head"

    def params(self, block: BlockSpec) -> int:
        hidden = block.hidden_width
        return conv_bn_params(block.in_width, hidden, 1) + hidden * block.num_classes + block.num_classes

    def macs(self, block: BlockSpec) -> int:
        hidden, pixels = block.hidden_width, block.size_out * block.size_out
        return block.in_width * hidden * pixels + hidden * block.num_classes

    def latency_modules(self, block: BlockSpec) -> list[tuple[str, ModulePath]]:
        return [(head_key(block.resolution, block.size_in, block.in_width, block.num_classes), block.path)]


register_block_kind(StemKind())
register_block_kind(HeadKind())
