"""Block kinds, one file each, and their registry (`kind.py`).

Built in: `stem` and `head` (`ends.py`), the conv stage kind `mbconv` (`mbconv.py`) and the transformer
stage kind `mobilevit` (`mobilevit.py`), registered on import. A new kind is one file that subclasses
`StageKind` and calls `register_block_kind` (docs/extending.md, "A new block kind").
"""

from . import ends, mbconv, mobilevit  # noqa: F401 - importing registers the built-in kinds
from .kind import (
    BLOCK_KINDS,
    DEFAULT_STAGE_KINDS,
    SLOT_CHOICES,
    BlockKind,
    BlockSpec,
    ModulePath,
    StageInput,
    StageKind,
    block_kind,
    conv_bn_params,
    conv_out,
    import_kind_modules,
    kind_modules,
    register_block_kind,
    stage_kind,
)

__all__ = [
    "BLOCK_KINDS", "DEFAULT_STAGE_KINDS", "SLOT_CHOICES", "BlockKind", "BlockSpec", "ModulePath", "StageInput",
    "StageKind", "block_kind", "conv_bn_params", "conv_out", "import_kind_modules", "kind_modules",
    "register_block_kind", "stage_kind",
]
