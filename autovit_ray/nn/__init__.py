"""Dynamic (weight-entangled) ops, the AutoViT blocks and the supernet."""

from .fewshot import FewShotSupernet
from .ops import DynamicModule, DynamicOp
from .supernet import AutoViTNet, Supernet, build_net

__all__ = ["AutoViTNet", "DynamicModule", "DynamicOp", "FewShotSupernet", "Supernet", "build_net"]
