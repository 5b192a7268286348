"""Dynamic ops with weight entanglement (OFA / AutoFormer style).

Each op owns the weights of its largest choice; a smaller choice uses the leading slice.
`set_active(...)` picks the slice; `get_active_subnet()` returns a plain torch module holding a
copy of that slice, so the static module computes exactly what the dynamic one computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn


class DynamicModule(nn.Module):
    """Marker base class: a module whose active shape is chosen by `set_active`. A static subnet
    (from `get_active_subnet`) contains none of these."""

    def get_active_subnet(self) -> nn.Module:
        raise NotImplementedError


class DynamicOp(DynamicModule):
    """A dynamic op owning parameters. `_active_slices()` maps each parameter name to the function
    that cuts the active part out of a tensor of that parameter's shape; forward, extraction and
    the freezing masks all go through it, so they cannot disagree."""

    def _active_slices(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        raise NotImplementedError

    def active_masks(self) -> dict[str, torch.Tensor]:
        """Boolean mask per parameter: True where the active slice reads it."""
        masks = {}
        for name, cut in self._active_slices().items():
            probe = torch.zeros_like(getattr(self, name), requires_grad=True)
            (grad,) = torch.autograd.grad(cut(probe).sum(), probe)
            masks[name] = grad != 0
        return masks


class DynamicConv2d(DynamicOp):
    """Conv2d over the leading `active_in` input and `active_out` output channels.

    `concat_parts=2` is for a conv whose input is a channel concat of two tensors of the same
    active width (MobileViT's fusion conv): the weight's input axis is laid out as
    [part 0 (max_in), part 1 (max_in)] and each part is sliced separately.
    """

    def __init__(self, max_in: int, max_out: int, kernel_size: int, stride: int = 1,
                 depthwise: bool = False, concat_parts: int = 1) -> None:
        super().__init__()
        if depthwise and (max_in != max_out or concat_parts != 1):
            raise ValueError("a depthwise conv has equal input and output channels and no concat parts")
        self.max_in, self.max_out = max_in, max_out
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2
        self.depthwise, self.concat_parts = depthwise, concat_parts
        in_per_group = 1 if depthwise else max_in * concat_parts
        self.weight = nn.Parameter(torch.empty(max_out, in_per_group, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.active_in, self.active_out = max_in, max_out

    def set_active(self, in_channels: int, out_channels: int) -> None:
        if in_channels > self.max_in or out_channels > self.max_out:
            raise ValueError(f"conv channels {in_channels}->{out_channels} exceed the supernet's "
                             f"{self.max_in}->{self.max_out}")
        if self.depthwise and in_channels != out_channels:
            raise ValueError("a depthwise conv needs equal input and output channels")
        self.active_in, self.active_out = in_channels, out_channels

    def _cut_weight(self, weight: torch.Tensor) -> torch.Tensor:
        out, cin = self.active_out, self.active_in
        if self.depthwise:
            return weight[:out]
        if self.concat_parts == 1:
            return weight[:out, :cin]
        k = self.kernel_size
        # [out, parts * max_in, k, k] -> [out, parts, max_in, k, k] -> slice each part
        parts = weight.view(self.max_out, self.concat_parts, self.max_in, k, k)[:out, :, :cin]
        return parts.reshape(out, self.concat_parts * cin, k, k)

    def _active_slices(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        return {"weight": self._cut_weight}

    def active_weight(self) -> torch.Tensor:
        return self._cut_weight(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.active_out if self.depthwise else 1
        return F.conv2d(x, self.active_weight(), None, self.stride, self.padding, 1, groups)

    def get_active_subnet(self) -> nn.Conv2d:
        in_channels = self.active_in * self.concat_parts
        conv = nn.Conv2d(in_channels, self.active_out, self.kernel_size, self.stride, self.padding,
                         groups=self.active_out if self.depthwise else 1, bias=False)
        conv.weight.data.copy_(self.active_weight())
        return conv


class DynamicNorm(DynamicOp):
    """A norm over the leading `active` of its `max_features` features: weight and bias are cut alike."""

    kind = "norm"  # what a width error calls it
    active: int

    if TYPE_CHECKING:  # read-only: a property on BatchNorm (its num_features), an attribute on LayerNorm
        @property
        def max_features(self) -> int: ...

    def set_active(self, num_features: int) -> None:
        if num_features > self.max_features:
            raise ValueError(f"{self.kind} width {num_features} exceeds the supernet's {self.max_features}")
        self.active = num_features

    def _active_slices(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        return {"weight": lambda t: t[:self.active], "bias": lambda t: t[:self.active]}


class DynamicBatchNorm2d(nn.BatchNorm2d, DynamicNorm):
    """BatchNorm over the leading `active` channels. In training mode it updates only the running
    statistics of the active channels (the slices are views of the full buffers)."""

    kind = "BatchNorm"

    def __init__(self, max_features: int) -> None:
        super().__init__(max_features)
        self.active = max_features

    @property
    def max_features(self) -> int:
        return self.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.active
        # Same momentum logic as nn.BatchNorm2d (momentum=None means a cumulative average).
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None  # BatchNorm registers it when tracking stats
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x, self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c], self.bias[:c], use_batch_stats, factor, self.eps)

    def get_active_subnet(self) -> nn.BatchNorm2d:
        c = self.active
        bn = nn.BatchNorm2d(c, eps=self.eps, momentum=self.momentum)
        # Both track running statistics (BatchNorm2d's default), so their buffers exist.
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        assert bn.running_mean is not None and bn.running_var is not None
        assert bn.num_batches_tracked is not None
        bn.weight.data.copy_(self.weight[:c])
        bn.bias.data.copy_(self.bias[:c])
        bn.running_mean.copy_(self.running_mean[:c])
        bn.running_var.copy_(self.running_var[:c])
        bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn


class DynamicLinear(DynamicOp):
    """Linear over the leading `active_in` inputs and `active_out` outputs."""

    def __init__(self, max_in: int, max_out: int, bias: bool = True) -> None:
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.active_in, self.active_out = max_in, max_out

    def set_active(self, in_features: int, out_features: int) -> None:
        if in_features > self.max_in or out_features > self.max_out:
            raise ValueError(f"linear features {in_features}->{out_features} exceed the supernet's "
                             f"{self.max_in}->{self.max_out}")
        self.active_in, self.active_out = in_features, out_features

    def _cut_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight[:self.active_out, :self.active_in]

    def _cut_bias(self, bias: torch.Tensor) -> torch.Tensor:
        return bias[:self.active_out]

    def _active_slices(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        slices: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"weight": self._cut_weight}
        if self.bias is not None:
            slices["bias"] = self._cut_bias
        return slices

    def active_weight(self) -> torch.Tensor:
        return self._cut_weight(self.weight)

    def active_bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self._cut_bias(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.active_weight(), self.active_bias())

    def get_active_subnet(self) -> nn.Linear:
        linear = nn.Linear(self.active_in, self.active_out, bias=self.bias is not None)
        linear.weight.data.copy_(self.active_weight())
        if self.bias is not None:
            linear.bias.data.copy_(self._cut_bias(self.bias))  # = self.active_bias(), not None here
        return linear


class DynamicQKVLinear(DynamicLinear):
    """The fused Q-K-V projection: d -> 3 x heads x head_dim, with a fixed head dimension.

    The output axis is laid out [q | k | v], each [max_heads * head_dim]; fewer heads take the
    leading heads of each of q, k and v (not the leading rows of the fused matrix).
    """

    def __init__(self, max_in: int, max_heads: int, head_dim: int) -> None:
        super().__init__(max_in, 3 * max_heads * head_dim, bias=True)
        self.max_heads, self.head_dim = max_heads, head_dim
        self.active_heads = max_heads

    def set_active_heads(self, in_features: int, heads: int) -> None:
        if heads > self.max_heads:
            raise ValueError(f"{heads} heads exceed the supernet's {self.max_heads}")
        self.active_heads = heads
        self.set_active(in_features, 3 * heads * self.head_dim)

    def _cut_weight(self, weight: torch.Tensor) -> torch.Tensor:
        qkv = self.active_heads * self.head_dim
        # [3 * max_qkv, max_in] -> [3, max_qkv, max_in] -> [3, qkv, in] -> [3 * qkv, in]
        w = weight.view(3, self.max_heads * self.head_dim, self.max_in)[:, :qkv, :self.active_in]
        return w.reshape(3 * qkv, self.active_in)

    def _cut_bias(self, bias: torch.Tensor) -> torch.Tensor:
        qkv = self.active_heads * self.head_dim
        return bias.view(3, self.max_heads * self.head_dim)[:, :qkv].reshape(3 * qkv)


class DynamicLayerNorm(DynamicNorm):
    """LayerNorm over the leading `active` features."""

    kind = "LayerNorm"
    max_features: int

    def __init__(self, max_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.max_features, self.eps = max_features, eps
        self.weight = nn.Parameter(torch.ones(max_features))
        self.bias = nn.Parameter(torch.zeros(max_features))
        self.active = max_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.active
        return F.layer_norm(x, (c,), self.weight[:c], self.bias[:c], self.eps)

    def get_active_subnet(self) -> nn.LayerNorm:
        norm = nn.LayerNorm(self.active, eps=self.eps)
        norm.weight.data.copy_(self.weight[:self.active])
        norm.bias.data.copy_(self.bias[:self.active])
        return norm


def attention_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
