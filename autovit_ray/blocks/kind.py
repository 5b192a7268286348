"""What a block kind is, and the one registry the space, the plan, the networks and the latency
table ask about it.

A network is the stem, the stages and the head. Each stage of a space is of one *stage kind*
(`mbconv`, `mobilevit`, or one you register): the kind says which choices the stage takes, how it
walks shapes (its plan entry: `BlockSpec`s), what its blocks cost (params, MACs, attention tokens),
how its static and dynamic modules are built and activated, which latency-table modules it is cut
into, and what an exporter should know about it. The stem and the head are plain block kinds (counts
and latency keys only): every network has exactly one of each.

Kinds are objects registered by name (`register_block_kind`, into `BLOCK_KINDS`, an
`extensions.Registry`: an installed package may declare its kinds as entry points of group
`autovit_ray.block_kinds`); the built-in ones are registered when `autovit_ray.blocks` is imported.
Pure Python: a kind builds its torch modules in methods that import torch when called, so the space
and the plan stay free of torch.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from ..extensions import Registry

ModulePath = tuple[str | int, ...]  # attribute names / indices into a static AutoViTNet

# The stage slots of an arch. A stage kind fills one and takes its choices (the Arch's fields of it):
#   "conv": an entry of the space's `mbconv_stages` (Arch.mbconv_widths / mbconv_depths), always 3;
#   "transformer": an entry of `transformer_stages` (Arch.transformer_widths / _depths / _heads /
#   _mlp_ratios), 1..4 of them active.
SLOT_CHOICES: dict[str, tuple[str, ...]] = {
    "conv": ("widths", "depths"),
    "transformer": ("widths", "depths", "heads", "mlp_ratios"),
}
# The kind of a stage whose YAML entry names none (every space written before kinds were registered).
DEFAULT_STAGE_KINDS = {"conv": "mbconv", "transformer": "mobilevit"}


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output side of a "same"-padded conv of odd `kernel` over a `size` x `size` map."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class BlockSpec:
    """One block of a subnet. `path` is where it sits in `AutoViTNet` (e.g. ("stages", 1,
    "blocks", 0)); `stage` indexes `AutoViTNet.stages` (-1 for the stem and the head). `kind` names
    the block kind that counts it; `stage_kind` the stage kind that built it (a MobileViT stage's
    transition is an `mbconv` block of a `mobilevit` stage)."""

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
    stage_kind: str = ""  # "" for the stem and the head

    # What a block is, its kind answers (one lookup per question; the plan asks these per block)
    tokens_per_sequence = property(lambda self: block_kind(self.kind).tokens_per_sequence(self), doc=(
        "Tokens in each attention sequence (MobileViT: patches of the map); 0 for blocks without attention."))
    hidden_width = property(lambda self: block_kind(self.kind).hidden_width(self), doc=(
        "MBConv: the depthwise width; head: the pooled feature width; MobileViT: the MLP width."))
    params = property(lambda self: block_kind(self.kind).params(self), doc=(
        "Trainable parameters (BatchNorm affine included, running statistics not)."))
    macs = property(lambda self: block_kind(self.kind).macs(self), doc=(
        "Multiply-accumulates of one image: convs, linears and the attention matmuls."))


class StageInput(NamedTuple):  # a tuple: the plan builds one per stage, ~10^5 a second in a search
    """What the plan hands a stage kind for one stage of an arch: where the stage sits, what enters
    it, the arch's choices for it (`heads`, `mlp_ratio`: transformer slot only, else 0) and the
    space's fixed choices."""

    stage: int  # index into AutoViTNet.stages
    resolution: int
    size: int  # feature-map side entering the stage
    in_width: int
    stride: int  # of the stage's first block
    width: int
    depth: int
    heads: int
    mlp_ratio: float
    kernel_size: int
    expansion: int
    head_dim: int
    fuse_kernel: int
    patch_size: int


def conv_bn_params(cin: int, cout: int, kernel: int, groups: int = 1, bn: bool = True) -> int:
    """Parameters of a bias-free conv and its BatchNorm's affine pair."""
    return kernel * kernel * (cin // groups) * cout + (2 * cout if bn else 0)


class BlockKind(ABC):
    """The blocks of one kind inside a plan: what they cost and how the latency table keys them."""

    name: ClassVar[str] = ""

    @abstractmethod
    def params(self, block: BlockSpec) -> int:
        """Trainable parameters of the block (BatchNorm affine included, running statistics not)."""

    @abstractmethod
    def macs(self, block: BlockSpec) -> int:
        """Multiply-accumulates of one image: convs, linears and attention matmuls; norms,
        activations and pooling are not counted (torch's flop counter counts the same ops)."""

    def hidden_width(self, block: BlockSpec) -> int:
        return block.in_width * block.expansion

    def tokens_per_sequence(self, block: BlockSpec) -> int:
        return 0

    @abstractmethod
    def latency_modules(self, block: BlockSpec) -> list[tuple[str, ModulePath]]:
        """The latency-table modules of the block: (key, path in the static subnet), their latencies
        adding up to the block's. A key is `<kind>/r<resolution>/...`: the module kind, the network's
        input resolution, then every dimension that changes the module's cost (equal keys, equal cost)."""

    def timed_module(self, key: str, module: Any) -> Any:
        """The module the latency table times for `key`, given the static module at its path
        (default: that module; MobileViT times its block without its layers as the `frame`)."""
        return module


class StageKind(BlockKind):
    """A kind a stage of a space can be: its YAML entry says `kind: <name>` (default: the slot's
    `DEFAULT_STAGE_KINDS`). Subclass, set `name` and `slot`, implement the methods, and register an
    instance with `register_block_kind`."""

    slot: ClassVar[str] = ""
    # Shown by `python -m autovit_ray.export` and docs: what an exporter should know (ops that do not
    # convert everywhere, reshape ranks, ...). Empty: nothing special.
    export_notes: ClassVar[str] = ""

    def check_choices(self, choices: Any, where: str) -> None:
        """Raise ValueError (starting with `where`) for a stage's choice lists this kind cannot build."""

    @abstractmethod
    def plan_stage(self, stage: StageInput) -> tuple[BlockSpec, ...]:
        """The stage's blocks in forward order, each with `stage_kind` = this kind's name and a
        `path` under ("stages", stage.stage)."""

    @abstractmethod
    def static_stage(self, blocks: tuple[BlockSpec, ...]) -> Any:
        """A freshly initialised static module (an nn.Module) of the planned stage: the same
        submodules, state-dict keys and shapes as the dynamic stage's `get_active_subnet()`."""

    @abstractmethod
    def dynamic_stage(self, largest: tuple[BlockSpec, ...]) -> Any:
        """The stage's weight-entangled module (a `DynamicModule`) owning the weights of `largest`,
        the plan of the stage's largest choices; smaller choices compute with slices of them, and
        its `get_active_subnet()` returns the static module with copies of those slices."""

    @abstractmethod
    def set_active(self, module: Any, blocks: tuple[BlockSpec, ...]) -> None:
        """Make `module` (from `dynamic_stage`) compute the planned stage `blocks`."""


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


def _check_kind(name: str, kind: BlockKind) -> None:
    if "/" in name:  # a latency-table key starts with `<kind>/`
        raise ValueError(f"a block kind's name has no '/', got {name!r} ({type(kind).__name__})")
    if isinstance(kind, StageKind) and kind.slot not in SLOT_CHOICES:
        raise ValueError(f"stage kind {name!r} has slot {kind.slot!r}; expected one of {list(SLOT_CHOICES)}")


BLOCK_KINDS: Registry[BlockKind] = Registry(
    "block kind", entry_point_group="autovit_ray.block_kinds", check=_check_kind, instance_of=BlockKind,
    hint="import the module that registers it, name it in the space's block_kind_modules or in "
         "AUTOVIT_RAY_PLUGINS, or install a package declaring it as an entry point of group autovit_ray.block_kinds")


def register_block_kind(kind: BlockKind) -> BlockKind:
    """Register `kind` under `kind.name` and return it. Registering an instance of the same class
    again replaces it (a module imported twice); another class under a taken name is an error."""
    if not isinstance(kind, BlockKind):
        raise ValueError(f"register_block_kind needs a BlockKind instance, got {type(kind).__name__}")
    taken = BLOCK_KINDS.entries().get(kind.name)
    return BLOCK_KINDS.register(kind.name, kind, replace=taken is not None and _class_name(taken) == _class_name(kind))


def _class_name(kind: BlockKind) -> str:
    return f"{type(kind).__module__}.{type(kind).__qualname__}"


def block_kind(name: str) -> BlockKind:
    return BLOCK_KINDS.get(name)


def _stage_kinds(slot: str | None = None) -> list[str]:
    """The names of the registered stage kinds (of `slot` when given), for messages."""
    return sorted(n for n, k in BLOCK_KINDS.entries().items() if isinstance(k, StageKind)
                  and (slot is None or k.slot == slot))


def stage_kind(name: str, slot: str | None = None) -> StageKind:
    """The stage kind `name`, checked to fill `slot` when given."""
    kind = block_kind(name)
    if not isinstance(kind, StageKind):
        raise ValueError(f"block kind {name!r} cannot be a stage; stage kinds: {_stage_kinds()}")
    if slot is not None and kind.slot != slot:
        raise ValueError(f"stage kind {name!r} fills a {kind.slot} stage, not a {slot} stage; "
                         f"{slot} stage kinds: {_stage_kinds(slot)}")
    return kind


def kind_modules(names: Iterable[str]) -> list[str]:
    """The modules that register the kinds `names` (sorted; built-in and `__main__` ones left out): what
    another process imports to know them (a space's `block_kind_modules`)."""
    modules = {type(block_kind(name)).__module__ for name in names}
    return sorted(m for m in modules if m != "__main__" and not m.startswith(f"{__package__}."))


def import_kind_modules(modules: object, where: str) -> None:
    """Import each module of `modules` (a list of dotted names): importing registers its kinds."""
    if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
        raise ValueError(f"{where}: block_kind_modules must be a list of module names (my_package.my_kind), "
                         f"got {modules!r}")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"{where}: block_kind_modules names {module!r}, which does not import ({exc}); "
                             "put it on the Python path (PYTHONPATH) of every process that loads the space") from None
