"""Dynamic (weight-entangled) ops, the AutoViT blocks and the supernet."""

from .ops import DynamicModule, DynamicOp
from .supernet import AutoViTNet, Supernet

__all__ = ["AutoViTNet", "DynamicModule", "DynamicOp", "Supernet"]
