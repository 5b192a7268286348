"""Building blocks, each written once.

A block class (e.g. `MBConv`) holds submodules and owns the forward logic. Its static form is
built from plain torch layers; its `Dynamic...` subclass builds the same block from dynamic ops
(`ops.py`), adds `set_active(...)`, and returns the static form from `get_active_subnet()`. Since
both run the same `forward`, a static subnet computes exactly what the supernet's active path does.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLayerNorm,
    DynamicLinear,
    DynamicModule,
    DynamicQKVLinear,
    attention_scale,
)

# --------------------------------------------------------------------------------------------
# Conv + BN + SiLU
# --------------------------------------------------------------------------------------------


class ConvBNAct(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module, act: bool = True) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DynamicConvBNAct(ConvBNAct, DynamicModule):
    conv: DynamicConv2d
    bn: DynamicBatchNorm2d

    def __init__(self, max_in: int, max_out: int, kernel_size: int, stride: int = 1,
                 depthwise: bool = False, act: bool = True, concat_parts: int = 1) -> None:
        super().__init__(DynamicConv2d(max_in, max_out, kernel_size, stride, depthwise, concat_parts),
                         DynamicBatchNorm2d(max_out), act)
        self.has_act = act

    def set_active(self, in_channels: int, out_channels: int) -> None:
        self.conv.set_active(in_channels, out_channels)
        self.bn.set_active(out_channels)

    def get_active_subnet(self) -> ConvBNAct:
        return ConvBNAct(self.conv.get_active_subnet(), self.bn.get_active_subnet(), self.has_act)


def static_conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A freshly initialised bias-free "same" conv, initialised as `DynamicConv2d` is."""
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def static_conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                       act: bool = True) -> ConvBNAct:
    return ConvBNAct(static_conv(cin, cout, kernel, stride, groups), nn.BatchNorm2d(cout), act)


def static_linear(cin: int, cout: int) -> nn.Linear:
    """A freshly initialised linear layer, initialised as `DynamicLinear` is."""
    linear = nn.Linear(cin, cout)
    nn.init.trunc_normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return linear


# --------------------------------------------------------------------------------------------
# MBConv: MobileNetV2 inverted residual
# --------------------------------------------------------------------------------------------


class MBConv(nn.Module):
    """[1x1 expand] -> 3x3 depthwise (stride) -> 1x1 project; residual when shapes allow.
    With expansion 1 (paper Table 1) there is no expand conv, as in MobileNetV2."""

    def __init__(self, expand: nn.Module | None, depthwise: nn.Module, project: nn.Module,
                 use_residual: bool) -> None:
        super().__init__()
        self.expand = expand if expand is not None else nn.Identity()
        self.depthwise, self.project = depthwise, project
        self.use_residual = use_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.use_residual else y


class DynamicMBConv(MBConv, DynamicModule):
    expand: DynamicConvBNAct | nn.Identity
    depthwise: DynamicConvBNAct
    project: DynamicConvBNAct

    def __init__(self, max_in: int, max_out: int, stride: int, expansion: int, kernel_size: int) -> None:
        hidden = max_in * expansion
        expand = DynamicConvBNAct(max_in, hidden, 1) if expansion != 1 else None
        super().__init__(expand, DynamicConvBNAct(hidden, hidden, kernel_size, stride, depthwise=True),
                         DynamicConvBNAct(hidden, max_out, 1, act=False), use_residual=False)
        self.stride, self.expansion = stride, expansion

    def set_active(self, in_channels: int, out_channels: int) -> None:
        hidden = in_channels * self.expansion
        if isinstance(self.expand, DynamicConvBNAct):
            self.expand.set_active(in_channels, hidden)
        self.depthwise.set_active(hidden, hidden)
        self.project.set_active(hidden, out_channels)
        self.use_residual = self.stride == 1 and in_channels == out_channels

    def get_active_subnet(self) -> MBConv:
        expand = self.expand.get_active_subnet() if isinstance(self.expand, DynamicConvBNAct) else None
        return MBConv(expand, self.depthwise.get_active_subnet(), self.project.get_active_subnet(),
                      self.use_residual)


class BlockSequence(nn.Module):
    """The first `depth` blocks of a list (a stage of searchable depth)."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.depth = len(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks[:self.depth]:
            x = block(x)
        return x


class DynamicMBConvStage(BlockSequence, DynamicModule):
    def __init__(self, max_in: int, max_width: int, max_depth: int, stride: int, expansion: int,
                 kernel_size: int) -> None:
        super().__init__([DynamicMBConv(max_in if j == 0 else max_width, max_width,
                                        stride if j == 0 else 1, expansion, kernel_size)
                          for j in range(max_depth)])

    def set_active(self, in_channels: int, width: int, depth: int) -> None:
        if depth > len(self.blocks):
            raise ValueError(f"stage depth {depth} exceeds the supernet's {len(self.blocks)}")
        for j, block in enumerate(self.blocks):
            cast(DynamicMBConv, block).set_active(in_channels if j == 0 else width, width)
        self.depth = depth

    def get_active_subnet(self) -> BlockSequence:
        return BlockSequence([cast(DynamicMBConv, block).get_active_subnet()
                              for block in self.blocks[:self.depth]])


# --------------------------------------------------------------------------------------------
# Transformer layer
# --------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention written out (Q-K-V linear, matmul, softmax) so it exports to
    TorchScript, ONNX and CoreML; nn.MultiheadAttention's fused path does not convert."""

    def __init__(self, qkv: nn.Module, proj: nn.Module, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.qkv, self.proj = qkv, proj
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scale = attention_scale(head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape  # x: [B, N, d]
        # [B, N, 3 * h * hd] -> [B, N, 3, h, hd] -> [3, B, h, N, hd]
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, h, N, N]
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return self.proj(out)


class MLP(nn.Module):
    def __init__(self, fc1: nn.Module, fc2: nn.Module) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = fc1, nn.SiLU(), fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: x + MHSA(LN(x)); x + MLP(LN(x))."""

    def __init__(self, norm1: nn.Module, attn: Attention, norm2: nn.Module, mlp: MLP) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DynamicTransformerLayer(TransformerLayer, DynamicModule):
    norm1: DynamicLayerNorm
    norm2: DynamicLayerNorm

    def __init__(self, max_width: int, max_heads: int, head_dim: int, max_mlp_ratio: float) -> None:
        max_hidden = round(max_width * max_mlp_ratio)
        attn = Attention(DynamicQKVLinear(max_width, max_heads, head_dim),
                         DynamicLinear(max_heads * head_dim, max_width), max_heads, head_dim)
        mlp = MLP(DynamicLinear(max_width, max_hidden), DynamicLinear(max_hidden, max_width))
        super().__init__(DynamicLayerNorm(max_width), attn, DynamicLayerNorm(max_width), mlp)

    def _linears(self) -> tuple[DynamicQKVLinear, DynamicLinear, DynamicLinear, DynamicLinear]:
        """qkv, proj, fc1, fc2: the dynamic ops `__init__` put in `attn` and `mlp` (typed there as
        plain modules, since the static layer holds nn.Linear)."""
        return (cast(DynamicQKVLinear, self.attn.qkv), cast(DynamicLinear, self.attn.proj),
                cast(DynamicLinear, self.mlp.fc1), cast(DynamicLinear, self.mlp.fc2))

    def set_active(self, width: int, heads: int, mlp_ratio: float) -> None:
        hidden = round(width * mlp_ratio)
        qkv_width = heads * self.attn.head_dim
        qkv, proj, fc1, fc2 = self._linears()
        self.norm1.set_active(width)
        qkv.set_active_heads(width, heads)
        proj.set_active(qkv_width, width)
        self.attn.num_heads = heads
        self.norm2.set_active(width)
        fc1.set_active(width, hidden)
        fc2.set_active(hidden, width)

    def get_active_subnet(self) -> TransformerLayer:
        qkv, proj, fc1, fc2 = self._linears()
        attn = Attention(qkv.get_active_subnet(), proj.get_active_subnet(),
                         self.attn.num_heads, self.attn.head_dim)
        mlp = MLP(fc1.get_active_subnet(), fc2.get_active_subnet())
        return TransformerLayer(self.norm1.get_active_subnet(), attn, self.norm2.get_active_subnet(), mlp)


# --------------------------------------------------------------------------------------------
# MobileViT block: local conv -> unfold -> transformer -> fold -> fuse
# --------------------------------------------------------------------------------------------


def unfold_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B * P, N, C]: one sequence per pixel position inside a patch (P = patch^2),
    over the N = (H / patch) * (W / patch) patches. Reshapes stay at rank <= 5 for CoreML."""
    batch, channels, height, width = x.shape
    nh, nw = height // patch, width // patch
    x = x.reshape(batch * channels * nh, patch, nw, patch)  # [B*C*nh, ph, nw, pw]
    x = x.permute(0, 1, 3, 2)  # [B*C*nh, ph, pw, nw]
    x = x.reshape(batch, channels, nh, patch * patch, nw)  # [B, C, nh, P, nw]
    x = x.permute(0, 3, 2, 4, 1)  # [B, P, nh, nw, C]
    return x.reshape(batch * patch * patch, nh * nw, channels)


def fold_patches(x: torch.Tensor, batch: int, channels: int, height: int, width: int,
                 patch: int) -> torch.Tensor:
    """Inverse of `unfold_patches`: [B * P, N, C] -> [B, C, H, W]."""
    nh, nw = height // patch, width // patch
    x = x.reshape(batch, patch * patch, nh, nw, channels)  # [B, P, nh, nw, C]
    x = x.permute(0, 4, 2, 1, 3)  # [B, C, nh, P, nw]
    x = x.reshape(batch * channels * nh, patch, patch, nw)  # [B*C*nh, ph, pw, nw]
    x = x.permute(0, 1, 3, 2)  # [B*C*nh, ph, nw, pw]
    return x.reshape(batch, channels, height, width)


class MobileViTBlock(nn.Module):
    """MobileViT (Mehta & Rastegari 2021) with conv-path width = transformer width d:
    3x3 conv, 1x1 conv to tokens, L transformer layers over unfolded 2x2 patches, LayerNorm,
    fold, 1x1 conv back, fusion conv over concat(input, result)."""

    def __init__(self, local: nn.Module, to_tokens: nn.Module, layers: list[nn.Module], norm: nn.Module,
                 from_tokens: nn.Module, fuse: nn.Module, patch_size: int) -> None:
        super().__init__()
        self.local, self.to_tokens = local, to_tokens
        self.layers = nn.ModuleList(layers)
        self.depth = len(layers)
        self.norm, self.from_tokens, self.fuse = norm, from_tokens, fuse
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.to_tokens(self.local(x))
        batch, channels, height, width = y.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"a MobileViT block got a {height}x{width} feature map, not divisible by "
                             f"its {self.patch_size}x{self.patch_size} patch; use an input resolution "
                             "of the space's input profile")
        tokens = unfold_patches(y, self.patch_size)
        for layer in self.layers[:self.depth]:
            tokens = layer(tokens)
        y = fold_patches(self.norm(tokens), batch, channels, height, width, self.patch_size)
        return self.fuse(torch.cat([x, self.from_tokens(y)], dim=1))


class DynamicMobileViTBlock(MobileViTBlock, DynamicModule):
    local: DynamicConvBNAct
    to_tokens: DynamicConv2d
    norm: DynamicLayerNorm
    from_tokens: DynamicConvBNAct
    fuse: DynamicConvBNAct

    def __init__(self, max_width: int, max_depth: int, max_heads: int, head_dim: int, max_mlp_ratio: float,
                 kernel_size: int, fuse_kernel: int, patch_size: int) -> None:
        super().__init__(
            local=DynamicConvBNAct(max_width, max_width, kernel_size),
            to_tokens=DynamicConv2d(max_width, max_width, 1),
            layers=[DynamicTransformerLayer(max_width, max_heads, head_dim, max_mlp_ratio)
                    for _ in range(max_depth)],
            norm=DynamicLayerNorm(max_width),
            from_tokens=DynamicConvBNAct(max_width, max_width, 1),
            fuse=DynamicConvBNAct(max_width, max_width, fuse_kernel, concat_parts=2),
            patch_size=patch_size)

    def set_active(self, width: int, depth: int, heads: int, mlp_ratio: float) -> None:
        if depth > len(self.layers):
            raise ValueError(f"transformer depth {depth} exceeds the supernet's {len(self.layers)}")
        self.local.set_active(width, width)
        self.to_tokens.set_active(width, width)
        for layer in self.layers:
            cast(DynamicTransformerLayer, layer).set_active(width, heads, mlp_ratio)
        self.depth = depth
        self.norm.set_active(width)
        self.from_tokens.set_active(width, width)
        self.fuse.set_active(width, width)

    def get_active_subnet(self) -> MobileViTBlock:
        return MobileViTBlock(self.local.get_active_subnet(), self.to_tokens.get_active_subnet(),
                              [cast(DynamicTransformerLayer, layer).get_active_subnet()
                               for layer in self.layers[:self.depth]],
                              self.norm.get_active_subnet(), self.from_tokens.get_active_subnet(),
                              self.fuse.get_active_subnet(), self.patch_size)


class TransformerStage(nn.Module):
    """A transition MBConv (downsampling and/or width change) followed by a MobileViT block."""

    def __init__(self, transition: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.transition, self.block = transition, block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.transition(x))


class DynamicTransformerStage(TransformerStage, DynamicModule):
    transition: DynamicMBConv
    block: DynamicMobileViTBlock

    def __init__(self, max_in: int, max_width: int, max_depth: int, max_heads: int, head_dim: int,
                 max_mlp_ratio: float, stride: int, expansion: int, kernel_size: int, fuse_kernel: int,
                 patch_size: int) -> None:
        super().__init__(
            DynamicMBConv(max_in, max_width, stride, expansion, kernel_size),
            DynamicMobileViTBlock(max_width, max_depth, max_heads, head_dim, max_mlp_ratio, kernel_size,
                                  fuse_kernel, patch_size))

    def set_active(self, in_channels: int, width: int, depth: int, heads: int, mlp_ratio: float) -> None:
        self.transition.set_active(in_channels, width)
        self.block.set_active(width, depth, heads, mlp_ratio)

    def get_active_subnet(self) -> TransformerStage:
        return TransformerStage(self.transition.get_active_subnet(), self.block.get_active_subnet())


# --------------------------------------------------------------------------------------------
# MBPool head
# --------------------------------------------------------------------------------------------


class MBPoolHead(nn.Module):
    """1x1 conv expanding the channels, global average pool, dropout, classifier."""

    def __init__(self, expand: nn.Module, classifier: nn.Module, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.expand, self.classifier = expand, classifier
        self.dropout = nn.Dropout(drop_rate)

    @property
    def num_features(self) -> int:
        """Width of the pooled features the classifier reads."""
        return cast(nn.Conv2d, self.expand.conv).out_channels  # the static head's ConvBNAct holds a Conv2d

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.expand(x).mean(dim=(2, 3)))  # [B, C, H, W] -> [B, C]
        return x if pre_logits else self.classifier(x)


class DynamicMBPoolHead(MBPoolHead, DynamicModule):
    expand: DynamicConvBNAct
    classifier: DynamicLinear

    def __init__(self, max_in: int, expansion: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__(DynamicConvBNAct(max_in, max_in * expansion, 1),
                         DynamicLinear(max_in * expansion, num_classes), drop_rate)
        self.expansion, self.num_classes = expansion, num_classes

    @property
    def num_features(self) -> int:
        return self.expand.conv.active_out

    def set_active(self, in_channels: int) -> None:
        hidden = in_channels * self.expansion
        self.expand.set_active(in_channels, hidden)
        self.classifier.set_active(hidden, self.num_classes)

    def get_active_subnet(self) -> MBPoolHead:
        return MBPoolHead(self.expand.get_active_subnet(), self.classifier.get_active_subnet(),
                          self.dropout.p)
