"""The AutoViT hybrid search space: the architecture config (`Arch`) and the space it lives in.

A network is: conv stem -> 3 MBConv (MobileNetV2) stages -> 3 or 4 MobileViT (transformer) stages
-> MBPool head. Each supernet (XXS, XS, S; paper Table 1) is one YAML file in `configs/`.

This module is pure Python (no torch, no Ray): the search algorithms, the latency table and the
CLI (`python -m autovit_ray.space describe xxs --json`) use it without building a network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import yaml

from ..blocks import DEFAULT_STAGE_KINDS, conv_out, import_kind_modules, kind_modules, stage_kind
from ..config import packaged_configs, renamed_keys
from ..extensions import Registry
from ..plugins import load_plugins

# Bump when the meaning of a space field or the network built from it changes: old checkpoints
# and latency tables then stop matching the fingerprint and are refused.
SPACE_FORMAT_VERSION = 1
CONFIG_DIR = packaged_configs()
BUILTIN_SPACES = ("xxs", "xs", "s")
NUM_MBCONV_STAGES = 3
MAX_TRANSFORMER_STAGES = 4


# --------------------------------------------------------------------------------------------
# Arch: one subnet
# --------------------------------------------------------------------------------------------


# Arch fields whose key in the JSON (and so in every hash of it) is an older name.
ARCH_FILE_KEYS = {"input_profile": "profile"}


@dataclass(frozen=True)
class Arch:
    """One subnet of a supernet. Hashable; the key of LUTs, Tune configs, MLflow params, exports.

    Per-stage tuples: `mbconv_*` has 3 entries, `transformer_*` one entry per active transformer
    stage (3 or 4). `transformer_widths` is the stage's embedding (token) width d; the Q-K-V width
    is `heads * head_dim` of the space.
    """

    supernet: str
    resolution: int
    stem_width: int
    mbconv_widths: tuple[int, ...]
    mbconv_depths: tuple[int, ...]
    transformer_widths: tuple[int, ...]
    transformer_depths: tuple[int, ...]
    transformer_heads: tuple[int, ...]
    transformer_mlp_ratios: tuple[float, ...]
    # The input profile, named only where the resolution cannot tell it: a profile with per-stage patch
    # sizes (`InputProfile.patch_sizes`) shares its resolutions with one without. None: inferred
    # (`space_for_arch`); left out of the JSON then, so hashes stay what they were.
    input_profile: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.supernet, str) or not self.supernet:
            raise ValueError(f"Arch.supernet must be a non-empty string, got {self.supernet!r}")
        name = self.input_profile
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"Arch.input_profile must be None or an input profile's name, "
                             f"got {self.input_profile!r}")
        for name in ("resolution", "stem_width"):
            object.__setattr__(self, name, _as_int(name, getattr(self, name)))
        for name in ("mbconv_widths", "mbconv_depths", "transformer_widths", "transformer_depths",
                     "transformer_heads"):
            object.__setattr__(self, name, _as_int_tuple(name, getattr(self, name)))
        object.__setattr__(self, "transformer_mlp_ratios",
                           _as_float_tuple("transformer_mlp_ratios", self.transformer_mlp_ratios))
        if len(self.mbconv_widths) != NUM_MBCONV_STAGES or len(self.mbconv_depths) != NUM_MBCONV_STAGES:
            raise ValueError(f"Arch.mbconv_widths / mbconv_depths must have {NUM_MBCONV_STAGES} entries, "
                             f"got {self.mbconv_widths} / {self.mbconv_depths}")
        lengths = {len(self.transformer_widths), len(self.transformer_depths),
                   len(self.transformer_heads), len(self.transformer_mlp_ratios)}
        if len(lengths) != 1:
            raise ValueError("Arch.transformer_widths, _depths, _heads and _mlp_ratios must have the same "
                             f"length (one per transformer stage), got {self.transformer_widths}, "
                             f"{self.transformer_depths}, {self.transformer_heads}, "
                             f"{self.transformer_mlp_ratios}")

    @property
    def num_transformer_stages(self) -> int:
        return len(self.transformer_widths)

    # -- serialisation ---------------------------------------------------------------------
    # The file format keeps the old key "profile" for `input_profile` (in the JSON, the params and the
    # `@<profile>` suffix of the name): arch hashes, LUT keys and saved archs stay what they were.
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        d = {ARCH_FILE_KEYS.get(f.name, f.name): list(v) if isinstance(v := getattr(self, f.name), tuple) else v
             for f in dataclasses.fields(self)}
        if d["profile"] is None:
            del d["profile"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        if not isinstance(data, Mapping):
            raise ValueError(f"an Arch needs a JSON object, got {type(data).__name__}")
        keys = {ARCH_FILE_KEYS.get(f.name, f.name): f.name for f in dataclasses.fields(cls)}
        missing = [k for k in keys if k not in data and k != "profile"]
        unknown = [k for k in data if k not in keys]
        if missing or unknown:
            raise ValueError(f"malformed Arch: missing fields {missing}, unknown fields {unknown}; "
                             f"expected exactly {list(keys)} ('profile' optional)")
        return cls(**{name: data[key] for key, name in keys.items() if key in data})

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Arch:
        if isinstance(text, Mapping):
            return cls.from_dict(text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed Arch JSON: {exc}") from None
        return cls.from_dict(data)

    def to_params(self) -> dict[str, int | float | str]:
        """Flat scalar dict (MLflow params, Tune configs): `transformer2_heads`, `mbconv1_width`, ..."""
        params: dict[str, int | float | str] = {
            "supernet": self.supernet, "resolution": self.resolution, "stem_width": self.stem_width,
            "num_transformer_stages": self.num_transformer_stages}
        if self.input_profile is not None:
            params["profile"] = self.input_profile  # the old key: see to_dict
        for i, (w, d) in enumerate(zip(self.mbconv_widths, self.mbconv_depths), start=1):
            params[f"mbconv{i}_width"], params[f"mbconv{i}_depth"] = w, d
        for i in range(self.num_transformer_stages):
            params[f"transformer{i + 1}_width"] = self.transformer_widths[i]
            params[f"transformer{i + 1}_depth"] = self.transformer_depths[i]
            params[f"transformer{i + 1}_heads"] = self.transformer_heads[i]
            params[f"transformer{i + 1}_mlp_ratio"] = self.transformer_mlp_ratios[i]
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Arch:
        """Inverse of `to_params` (values may be strings, as MLflow returns them)."""
        try:
            n = int(params["num_transformer_stages"])
            return cls(
                supernet=str(params["supernet"]), resolution=int(params["resolution"]),
                stem_width=int(params["stem_width"]),
                mbconv_widths=tuple(int(params[f"mbconv{i}_width"]) for i in (1, 2, 3)),
                mbconv_depths=tuple(int(params[f"mbconv{i}_depth"]) for i in (1, 2, 3)),
                transformer_widths=tuple(int(params[f"transformer{i}_width"]) for i in range(1, n + 1)),
                transformer_depths=tuple(int(params[f"transformer{i}_depth"]) for i in range(1, n + 1)),
                transformer_heads=tuple(int(params[f"transformer{i}_heads"]) for i in range(1, n + 1)),
                transformer_mlp_ratios=tuple(float(params[f"transformer{i}_mlp_ratio"])
                                             for i in range(1, n + 1)),
                input_profile=str(params["profile"]) if params.get("profile") else None)
        except KeyError as exc:
            raise ValueError(f"Arch params are missing the field {exc.args[0]!r}") from None

    @cached_property
    def arch_hash(self) -> str:
        """Stable 12-hex-digit hash of the canonical JSON (same on every machine and Python run)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def __str__(self) -> str:
        mb = "-".join(f"{w}x{d}" for w, d in zip(self.mbconv_widths, self.mbconv_depths))
        tr = "-".join(f"{w}x{d}h{h}m{_fmt_ratio(r)}" for w, d, h, r in zip(
            self.transformer_widths, self.transformer_depths, self.transformer_heads,
            self.transformer_mlp_ratios))
        suffix = f"@{self.input_profile}" if self.input_profile is not None else ""
        return f"{self.supernet}_r{self.resolution}_c{self.stem_width}_mb{mb}_t{tr}{suffix}"


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:g}"


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"Arch.{name} must be an integer, got {value!r}")
    return int(value)


def _as_int_tuple(name: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"Arch.{name} must be a list of integers, got {values!r}")
    return tuple(_as_int(f"{name}[{i}]", v) for i, v in enumerate(values))


def _as_float_tuple(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"Arch.{name} must be a list of numbers, got {values!r}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"Arch.{name}[{i}] must be a number, got {v!r}")
        out.append(float(v))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# The space
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MBConvStageChoices:
    """A conv stage (an entry of `mbconv_stages`); `kind`: its stage kind (`autovit_ray.blocks`)."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kind: str = DEFAULT_STAGE_KINDS["conv"]


@dataclass(frozen=True)
class TransformerStageChoices:
    """A transformer stage (an entry of `transformer_stages`); `kind`: its stage kind."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    kind: str = DEFAULT_STAGE_KINDS["transformer"]


_StageChoices = MBConvStageChoices | TransformerStageChoices


@dataclass(frozen=True)
class FixedChoices:
    """Choices the paper fixes: they are not searched but change the network."""

    kernel_size: int = 3
    patch_size: int = 2
    mbconv_expansion: int = 1
    head_dim: int = 16
    head_expansion: int = 6
    fuse_kernel: int = 3


@dataclass(frozen=True)
class InputProfile:
    """Resolutions for one kind of data, and the stride of each of the 8 stages
    (stem, 3 MBConv stages, 4 transformer stages)."""

    name: str
    resolutions: tuple[int, ...]
    strides: tuple[int, ...]
    # Patch side of each of the 4 transformer stages; None: `FixedChoices.patch_size` everywhere. Set,
    # it enters the space's dict (and fingerprint) and the profile's archs name it (`Arch.input_profile`).
    patch_sizes: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"resolutions": list(self.resolutions), "strides": list(self.strides)}
        if self.patch_sizes is not None:  # only when set: every earlier fingerprint stays as it was
            d["patch_sizes"] = list(self.patch_sizes)
        return d


class SearchSpace:
    """One supernet's space under one input profile. Build with `load_space`."""

    def __init__(self, name: str, stem_widths: Sequence[int],
                 mbconv_stages: Sequence[MBConvStageChoices],
                 transformer_stages: Sequence[TransformerStageChoices],
                 num_transformer_stages: Sequence[int], fixed: FixedChoices,
                 input_profile: InputProfile,
                 input_profiles: Mapping[str, InputProfile] | None = None) -> None:
        self.name = name
        self.stem_widths = tuple(stem_widths)
        self.mbconv_stages = tuple(mbconv_stages)
        self.transformer_stages = tuple(transformer_stages)
        self.num_transformer_stages = tuple(num_transformer_stages)
        self.fixed = fixed
        self.input_profile = input_profile
        self.input_profiles = dict(input_profiles or {input_profile.name: input_profile})
        self._check()

    # -- construction checks ------------------------------------------------------------------
    def _check(self) -> None:
        where = f"space {self.name!r}"
        if len(self.mbconv_stages) != NUM_MBCONV_STAGES:
            raise ValueError(f"{where}: mbconv_stages must have {NUM_MBCONV_STAGES} entries, "
                             f"got {len(self.mbconv_stages)}")
        if not 1 <= len(self.transformer_stages) <= MAX_TRANSFORMER_STAGES:
            raise ValueError(f"{where}: transformer_stages must have 1..{MAX_TRANSFORMER_STAGES} entries, "
                             f"got {len(self.transformer_stages)}")
        bad = [n for n in self.num_transformer_stages if not 1 <= n <= len(self.transformer_stages)]
        if bad or not self.num_transformer_stages:
            raise ValueError(f"{where}: num_transformer_stages {list(self.num_transformer_stages)} must be "
                             f"non-empty and within 1..{len(self.transformer_stages)}")
        for label, values in self._all_choice_lists():
            if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{where}: {label} must be a non-empty list of distinct positive "
                                 f"numbers, got {list(values)}")
        slots: tuple[tuple[str, str, Sequence[_StageChoices]], ...] = (
            ("conv", "mbconv", self.mbconv_stages), ("transformer", "transformer", self.transformer_stages))
        for slot, label, stages in slots:
            for i, stage in enumerate(stages, start=1):
                try:
                    kind = stage_kind(stage.kind, slot)
                except ValueError as exc:
                    raise ValueError(f"{where}: {label} stage {i}: {exc}") from None
                kind.check_choices(stage, f"{where}: {label} stage {i}")
        f = self.fixed
        for field_name in ("kernel_size", "patch_size", "mbconv_expansion", "head_dim",
                           "head_expansion", "fuse_kernel"):
            if getattr(f, field_name) <= 0:
                raise ValueError(f"{where}: fixed.{field_name} must be positive, got {getattr(f, field_name)}")
        if f.kernel_size % 2 == 0 or f.fuse_kernel % 2 == 0:
            raise ValueError(f"{where}: kernel sizes must be odd, got kernel_size={f.kernel_size}, "
                             f"fuse_kernel={f.fuse_kernel}")
        if self._greedy_monotone_widths() is None:
            raise ValueError(f"{where}: no transformer width sequence is non-decreasing; stage widths "
                             f"{[list(s.widths) for s in self.transformer_stages]}")
        for input_profile in self.input_profiles.values():
            _check_input_profile(self, input_profile)

    def _all_choice_lists(self) -> list[tuple[str, tuple[float, ...]]]:
        out: list[tuple[str, tuple[float, ...]]] = [("stem widths", self.stem_widths)]
        for i, s in enumerate(self.mbconv_stages, start=1):
            out += [(f"mbconv stage {i} widths", s.widths), (f"mbconv stage {i} depths", s.depths)]
        for i, t in enumerate(self.transformer_stages, start=1):
            out += [(f"transformer stage {i} widths", t.widths), (f"transformer stage {i} depths", t.depths),
                    (f"transformer stage {i} heads", t.heads),
                    (f"transformer stage {i} mlp_ratios", t.mlp_ratios)]
        return out

    # -- basic views ---------------------------------------------------------------------------
    @property
    def resolutions(self) -> tuple[int, ...]:
        return self.input_profile.resolutions

    @property
    def arch_input_profile(self) -> str | None:
        """`Arch.input_profile` of this space's archs: the profile's name when its resolutions cannot tell it."""
        return self.input_profile.name if self.input_profile.patch_sizes is not None else None

    def patch_size(self, transformer_stage: int) -> int:
        """Patch side of transformer stage `transformer_stage` (0-based) under this input profile."""
        sizes = self.input_profile.patch_sizes
        return sizes[transformer_stage] if sizes is not None else self.fixed.patch_size

    @property
    def strides(self) -> tuple[int, ...]:
        return self.input_profile.strides

    @property
    def default_resolution(self) -> int:
        return max(self.input_profile.resolutions)

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, input_profile={self.input_profile.name!r})"

    def to_dict(self) -> dict[str, Any]:
        """Everything that defines the networks of this space (JSON-safe), and the modules that register
        its block kinds when they are not built in (`block_kind_modules`, only then)."""
        stages: tuple[_StageChoices, ...] = (*self.mbconv_stages, *self.transformer_stages)
        modules = kind_modules(s.kind for s in stages)
        return {
            "format_version": SPACE_FORMAT_VERSION,
            "name": self.name,
            "stem": {"widths": list(self.stem_widths)},
            "mbconv_stages": [{"widths": list(s.widths), "depths": list(s.depths), **_kind_entry(s, "conv")}
                              for s in self.mbconv_stages],
            "transformer_stages": [{"widths": list(t.widths), "depths": list(t.depths), "heads": list(t.heads),
                                    "mlp_ratios": list(t.mlp_ratios), **_kind_entry(t, "transformer")}
                                   for t in self.transformer_stages],
            "num_transformer_stages": list(self.num_transformer_stages),
            "fixed": dataclasses.asdict(self.fixed),
            # the record (and so the fingerprint) keeps the old key "profile" for the input profile
            "profile": {"name": self.input_profile.name, **self.input_profile.to_dict()},
            **({"block_kind_modules": modules} if modules else {}),
        }

    def fingerprint(self) -> str:
        """Hash of everything that changes weights or latency (the space, the fixed choices, the
        input profile and the format version). Checkpoints and LUTs carry it; loaders refuse a
        mismatch. Where a block kind's module lives changes no network: it is left out."""
        record = {k: v for k, v in self.to_dict().items() if k != "block_kind_modules"}
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def with_input_profile(self, input_profile: str) -> SearchSpace:
        if input_profile not in self.input_profiles:
            raise ValueError(f"space {self.name!r} has no input profile {input_profile!r}; "
                             f"allowed: {sorted(self.input_profiles)}")
        return SearchSpace(self.name, self.stem_widths, self.mbconv_stages, self.transformer_stages,
                           self.num_transformer_stages, self.fixed, self.input_profiles[input_profile],
                           self.input_profiles)

    # -- validation ----------------------------------------------------------------------------
    def restricted_to(self, arch: Arch) -> SearchSpace:
        """The space whose only subnet is `arch` (every choice list the arch's one value): its supernet
        owns exactly the arch's weights, so training it trains the arch stand-alone
        (`python -m autovit_ray.train --arch`)."""
        self.validate(arch)
        n = arch.num_transformer_stages
        input_profile = dataclasses.replace(self.input_profile, resolutions=(arch.resolution,))
        return SearchSpace(
            self.name, (arch.stem_width,),
            [MBConvStageChoices((w,), (d,), s.kind)
             for w, d, s in zip(arch.mbconv_widths, arch.mbconv_depths, self.mbconv_stages)],
            [TransformerStageChoices((w,), (d,), (h,), (r,), s.kind) for w, d, h, r, s in zip(
                arch.transformer_widths, arch.transformer_depths, arch.transformer_heads,
                arch.transformer_mlp_ratios, self.transformer_stages)],
            (n,), self.fixed, input_profile)

    def with_transformer_stage_count(self, count: int) -> SearchSpace:
        """The part of this space whose subnets have `count` transformer stages: one region of a
        few-shot split (Few-shot NAS, Zhao et al. 2021). Its supernet owns the same weights as this
        space's (every stage is built, active or not), so a part starts from the whole space's weights."""
        if count not in self.num_transformer_stages:
            raise ValueError(f"space {self.name!r} has no subnets with {count} transformer stages; "
                             f"allowed: {list(self.num_transformer_stages)}")
        return SearchSpace(self.name, self.stem_widths, self.mbconv_stages, self.transformer_stages, (count,),
                           self.fixed, self.input_profile, self.input_profiles)

    def to_yaml_dict(self) -> dict[str, Any]:
        """This space (under its current input profile only) in the YAML schema `load_space` reads."""
        return yaml_dict_from_record(self.to_dict())

    def validate(self, arch: Arch) -> Arch:
        """Raise ValueError naming the field, the value and the allowed values; return `arch`."""
        if not isinstance(arch, Arch):
            raise ValueError(f"expected an Arch, got {type(arch).__name__}")
        if arch.supernet != self.name:
            raise ValueError(f"Arch.supernet is {arch.supernet!r} but this is the {self.name!r} supernet")
        if arch.input_profile != self.arch_input_profile:
            raise ValueError(
                f"Arch.input_profile is {arch.input_profile!r} but this space is {self.name!r} under input "
                f"profile {self.input_profile.name!r}, whose archs carry input profile "
                f"{self.arch_input_profile!r}: an arch of another input profile (strides, patch sizes) is "
                "another network")
        _check_choice("resolution", arch.resolution, self.input_profile.resolutions,
                      f" (input profile {self.input_profile.name!r})")
        _check_choice("stem_width", arch.stem_width, self.stem_widths)
        for i, mb in enumerate(self.mbconv_stages):
            _check_choice(f"mbconv_widths[{i}]", arch.mbconv_widths[i], mb.widths)
            _check_choice(f"mbconv_depths[{i}]", arch.mbconv_depths[i], mb.depths)
        _check_choice("num_transformer_stages", arch.num_transformer_stages, self.num_transformer_stages)
        widths = arch.transformer_widths
        for i in range(1, len(widths)):
            if widths[i] < widths[i - 1]:
                raise ValueError(f"Arch.transformer_widths {list(widths)} decrease from stage {i} to "
                                 f"{i + 1} ({widths[i - 1]} -> {widths[i]}); transformer widths must "
                                 "never decrease")
        for i in range(arch.num_transformer_stages):
            stage = self.transformer_stages[i]
            _check_choice(f"transformer_widths[{i}]", widths[i], stage.widths)
            _check_choice(f"transformer_depths[{i}]", arch.transformer_depths[i], stage.depths)
            _check_choice(f"transformer_heads[{i}]", arch.transformer_heads[i], stage.heads)
            _check_choice(f"transformer_mlp_ratios[{i}]", arch.transformer_mlp_ratios[i], stage.mlp_ratios)
        return arch

    def contains(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    # -- canonical members ---------------------------------------------------------------------
    def largest(self) -> Arch:
        return self._extreme(max)

    def smallest(self) -> Arch:
        return self._extreme(min)

    def _extreme(self, pick: Any) -> Arch:
        n = pick(self.num_transformer_stages)
        stages = self.transformer_stages[:n]
        widths = self._repair_widths([pick(s.widths) for s in stages], random.Random(0))
        return Arch(
            supernet=self.name, resolution=pick(self.input_profile.resolutions), stem_width=pick(self.stem_widths),
            mbconv_widths=tuple(pick(s.widths) for s in self.mbconv_stages),
            mbconv_depths=tuple(pick(s.depths) for s in self.mbconv_stages),
            transformer_widths=tuple(widths), transformer_depths=tuple(pick(s.depths) for s in stages),
            transformer_heads=tuple(pick(s.heads) for s in stages),
            transformer_mlp_ratios=tuple(pick(s.mlp_ratios) for s in stages), input_profile=self.arch_input_profile)

    # -- sampling and variation ----------------------------------------------------------------
    def sample(self, rng: random.Random) -> Arch:
        """Draw each choice uniformly: the number of transformer stages first, then every stage's
        choices (AutoFormer / SPOS). Not uniform over whole subnets, which would give 4-stage
        subnets ~98% of the draws. Widths that would decrease are redrawn (never in Table 1)."""
        n = rng.choice(self.num_transformer_stages)
        stages = self.transformer_stages[:n]
        resolution = rng.choice(self.input_profile.resolutions)
        stem = rng.choice(self.stem_widths)
        mb_widths, mb_depths = [], []
        for mb in self.mbconv_stages:
            mb_widths.append(rng.choice(mb.widths))
            mb_depths.append(rng.choice(mb.depths))
        widths, depths, heads, ratios = [], [], [], []
        for s in stages:
            widths.append(rng.choice(s.widths))
            depths.append(rng.choice(s.depths))
            heads.append(rng.choice(s.heads))
            ratios.append(rng.choice(s.mlp_ratios))
        widths = self._redraw_until_monotone(widths, rng)
        return Arch(self.name, resolution, stem, tuple(mb_widths), tuple(mb_depths), tuple(widths),
                    tuple(depths), tuple(heads), tuple(ratios), self.arch_input_profile)

    def mutate(self, arch: Arch, rng: random.Random, p_depth: float = 0.2, p_block: float = 0.4) -> Arch:
        """Paper Algorithm 2: with probability `p_depth` redraw the number of transformer stages
        and each stage depth; then redraw every other choice (resolution, stem, each stage's
        width, heads, MLP ratio) with probability `p_block`. The result is always valid."""
        self.validate(arch)
        d = _mutable_fields(arch)
        if rng.random() < p_depth:
            d["n"] = rng.choice(self.num_transformer_stages)
        for i, mb in enumerate(self.mbconv_stages):
            if rng.random() < p_depth:
                d["mb_depths"][i] = rng.choice(mb.depths)
        for i, s in enumerate(self.transformer_stages[:d["n"]]):
            if i >= arch.num_transformer_stages:  # a new stage: draw all of its choices
                d["widths"].append(rng.choice(s.widths))
                d["depths"].append(rng.choice(s.depths))
                d["heads"].append(rng.choice(s.heads))
                d["ratios"].append(rng.choice(s.mlp_ratios))
            elif rng.random() < p_depth:
                d["depths"][i] = rng.choice(s.depths)
        if rng.random() < p_block:
            d["resolution"] = rng.choice(self.input_profile.resolutions)
        if rng.random() < p_block:
            d["stem"] = rng.choice(self.stem_widths)
        for i, mb in enumerate(self.mbconv_stages):
            if rng.random() < p_block:
                d["mb_widths"][i] = rng.choice(mb.widths)
        for i, s in enumerate(self.transformer_stages[:min(d["n"], arch.num_transformer_stages)]):
            if rng.random() < p_block:
                d["widths"][i] = rng.choice(s.widths)
            if rng.random() < p_block:
                d["heads"][i] = rng.choice(s.heads)
            if rng.random() < p_block:
                d["ratios"][i] = rng.choice(s.mlp_ratios)
        return self._build(d, rng)

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Uniform crossover by unit: resolution, stem, each MBConv stage (width and depth together),
        the stage count, and each transformer stage (all four choices together). Stages beyond the
        shorter parent come from the parent that has them. The result is always valid."""
        self.validate(a)
        self.validate(b)
        d = _mutable_fields(a)
        d["resolution"] = rng.choice((a.resolution, b.resolution))
        d["stem"] = rng.choice((a.stem_width, b.stem_width))
        for i in range(NUM_MBCONV_STAGES):
            src = rng.choice((a, b))
            d["mb_widths"][i], d["mb_depths"][i] = src.mbconv_widths[i], src.mbconv_depths[i]
        d["n"] = rng.choice((a.num_transformer_stages, b.num_transformer_stages))
        for key in ("widths", "depths", "heads", "ratios"):
            d[key] = []
        for i in range(d["n"]):
            parents = [p for p in (a, b) if p.num_transformer_stages > i]
            src = rng.choice(parents)
            d["widths"].append(src.transformer_widths[i])
            d["depths"].append(src.transformer_depths[i])
            d["heads"].append(src.transformer_heads[i])
            d["ratios"].append(src.transformer_mlp_ratios[i])
        return self._build(d, rng)

    def _build(self, d: dict[str, Any], rng: random.Random) -> Arch:
        n = d["n"]
        widths = self._repair_widths(d["widths"][:n], rng)
        arch = Arch(self.name, d["resolution"], d["stem"], tuple(d["mb_widths"]), tuple(d["mb_depths"]),
                    tuple(widths), tuple(d["depths"][:n]), tuple(d["heads"][:n]), tuple(d["ratios"][:n]),
                    self.arch_input_profile)
        return self.validate(arch)

    def _repair_widths(self, widths: list[int], rng: random.Random) -> list[int]:
        """Make transformer widths non-decreasing, keeping valid prefixes (a no-op for Table 1)."""
        widths = list(widths)
        for i in range(1, len(widths)):
            if widths[i] < widths[i - 1]:
                allowed = [w for w in self.transformer_stages[i].widths if w >= widths[i - 1]]
                if not allowed:
                    return self._redraw_until_monotone(widths, rng, force=True)
                widths[i] = rng.choice(allowed)
        return widths

    def _redraw_until_monotone(self, widths: list[int], rng: random.Random, force: bool = False) -> list[int]:
        n = len(widths)
        for _ in range(1000):
            if not force and all(widths[i] >= widths[i - 1] for i in range(1, n)):
                return widths
            force = False
            widths = [rng.choice(s.widths) for s in self.transformer_stages[:n]]
        greedy = self._greedy_monotone_widths()
        assert greedy is not None  # checked at construction
        return greedy[:n]

    def _greedy_monotone_widths(self) -> list[int] | None:
        out: list[int] = []
        for stage in self.transformer_stages:
            allowed = [w for w in stage.widths if not out or w >= out[-1]]
            if not allowed:
                return None
            out.append(min(allowed))
        return out

    # -- size ----------------------------------------------------------------------------------
    def size(self, constrained: bool = True, per_resolution: bool = False) -> int:
        """Exact number of subnets. `constrained=True` is the trained space (each transformer
        stage takes its own Table 1 widths, never decreasing); `constrained=False` lets every
        transformer stage take any width of the union of all stages' widths (the paper's 10^16
        reference point)."""
        front = len(self.stem_widths) * math.prod(len(s.widths) * len(s.depths) for s in self.mbconv_stages)
        union = sorted({w for s in self.transformer_stages for w in s.widths})
        total = 0
        for n in self.num_transformer_stages:
            stages = self.transformer_stages[:n]
            rest = math.prod(len(s.depths) * len(s.heads) * len(s.mlp_ratios) for s in stages)
            if constrained:
                width_sequences = _count_monotone([s.widths for s in stages])
            else:
                width_sequences = len(union) ** n
            total += width_sequences * rest
        resolutions = 1 if per_resolution else len(self.input_profile.resolutions)
        return front * total * resolutions

    def feature_sizes(self, resolution: int) -> list[int]:
        """Spatial size after each of the 8 stages (stem, 3 MBConv, 4 transformer)."""
        sizes, size = [], resolution
        for stride in self.input_profile.strides:
            size = conv_out(size, self.fixed.kernel_size, stride)
            sizes.append(size)
        return sizes

    def attention_tokens(self, resolution: int) -> list[int]:
        """Tokens per attention sequence in each of the 4 transformer stages at `resolution`: the
        patches of its map (MobileViT runs one sequence per pixel position inside a patch). 1 means
        attention sees one token: the stage is an MLP."""
        sizes = self.feature_sizes(resolution)[1 + NUM_MBCONV_STAGES:]
        return [(size // self.patch_size(i)) ** 2 for i, size in enumerate(sizes)]


def _kind_entry(stage: MBConvStageChoices | TransformerStageChoices, slot: str) -> dict[str, str]:
    """A stage's `kind` for its dict, only when not its slot's default: the records (and fingerprints)
    of spaces without kinds stay as they were."""
    return {} if stage.kind == DEFAULT_STAGE_KINDS[slot] else {"kind": stage.kind}


def _check_choice(field: str, value: Any, allowed: Sequence[Any], suffix: str = "") -> None:
    if value not in allowed:
        raise ValueError(f"Arch.{field} = {value!r} is not in the space; allowed: {list(allowed)}{suffix}")


def _mutable_fields(arch: Arch) -> dict[str, Any]:
    return {"n": arch.num_transformer_stages, "resolution": arch.resolution, "stem": arch.stem_width,
            "mb_widths": list(arch.mbconv_widths), "mb_depths": list(arch.mbconv_depths),
            "widths": list(arch.transformer_widths), "depths": list(arch.transformer_depths),
            "heads": list(arch.transformer_heads), "ratios": list(arch.transformer_mlp_ratios)}


def _count_monotone(width_sets: Sequence[Sequence[int]]) -> int:
    """Number of non-decreasing sequences choosing one width per stage (dynamic programming)."""
    counts = {w: 1 for w in width_sets[0]}
    for widths in width_sets[1:]:
        counts = {w: sum(c for prev, c in counts.items() if prev <= w) for w in widths}
    return sum(counts.values())


def _check_input_profile(space: SearchSpace, input_profile: InputProfile) -> None:
    where = f"space {space.name!r}, input profile {input_profile.name!r}"
    if len(input_profile.strides) != NUM_MBCONV_STAGES + 1 + MAX_TRANSFORMER_STAGES:
        raise ValueError(f"{where}: strides must have 8 entries (stem, 3 MBConv, 4 transformer), "
                         f"got {list(input_profile.strides)}")
    if any(s not in (1, 2) for s in input_profile.strides) or input_profile.strides[1] != 1:
        raise ValueError(f"{where}: strides must be 1 or 2, and MBConv stage 1 has stride 1; "
                         f"got {list(input_profile.strides)}")
    if not input_profile.resolutions:
        raise ValueError(f"{where}: resolutions must not be empty")
    sizes = input_profile.patch_sizes
    if sizes is not None and (len(sizes) != MAX_TRANSFORMER_STAGES or any(p < 1 for p in sizes)):
        raise ValueError(f"{where}: patch_sizes must be {MAX_TRANSFORMER_STAGES} positive integers (one per "
                         f"transformer stage), got {list(sizes)}")
    patches = sizes or (space.fixed.patch_size,) * MAX_TRANSFORMER_STAGES
    patch = max(patches)
    for resolution in input_profile.resolutions:
        if not isinstance(resolution, int) or resolution <= 0:
            raise ValueError(f"{where}: resolution {resolution!r} must be a positive integer")
        size = resolution
        for stage, stride in enumerate(input_profile.strides):
            if stride == 2 and size % 2:
                raise ValueError(f"{where}: resolution {resolution} gives an odd {size}x{size} map before "
                                 f"the stride-2 stage {stage}; use a multiple of "
                                 f"{2 ** sum(1 for s in input_profile.strides if s == 2) * patch}")
            size = conv_out(size, space.fixed.kernel_size, stride)
            p = patches[stage - 1 - NUM_MBCONV_STAGES] if stage >= 1 + NUM_MBCONV_STAGES else 1
            if size % p:
                raise ValueError(f"{where}: resolution {resolution} gives a {size}x{size} map at transformer "
                                 f"stage {stage - NUM_MBCONV_STAGES}, not divisible by the {p}x{p} patch; "
                                 "the network cannot handle it")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_space(name_or_path: str | Path, input_profile: str | None = None) -> SearchSpace:
    """A built-in supernet space by name ('xxs', 'xs', 's') or a YAML file, under an input
    profile ('imagenet', 'cifar10', 'digits', ...: configs/profiles.yaml and the registered ones, unless
    the file lists its own; default: the file's `default_input_profile`, else configs/profiles.yaml's)."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.lower() in BUILTIN_SPACES:
        path = CONFIG_DIR / f"{text_name.lower()}.yaml"
    elif not (path.suffix in (".yaml", ".yml") and path.is_file()):
        raise ValueError(f"unknown search space {text_name!r}: expected one of {list(BUILTIN_SPACES)} "
                         "or the path of an existing .yaml file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"malformed search-space YAML {path}: {exc}") from None
    return space_from_dict(raw, input_profile=input_profile, source=str(path))


def yaml_dict_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A space record (`SearchSpace.to_dict`, as checkpoints and LUTs carry it) in the YAML schema
    `space_from_dict` reads, with the record's one input profile. KeyError/TypeError for a malformed
    record."""
    input_profile = dict(record["profile"])  # the record's key for it (`SearchSpace.to_dict`)
    name = input_profile.pop("name")
    return {"name": record["name"], "stem": record["stem"], "mbconv_stages": record["mbconv_stages"],
            "transformer_stages": record["transformer_stages"],
            "num_transformer_stages": record["num_transformer_stages"], "fixed": record["fixed"],
            "input_profiles": {name: input_profile}, "default_input_profile": name,
            **({"block_kind_modules": record["block_kind_modules"]} if "block_kind_modules" in record else {})}


# Keys of the space YAML that were renamed: the old ones still load, with a deprecation message.
RENAMED_YAML_KEYS = {"profiles": "input_profiles", "default_profile": "default_input_profile"}


def space_from_dict(raw: Any, input_profile: str | None = None, source: str = "<dict>") -> SearchSpace:
    def need(mapping: Any, key: str, where: str) -> Any:
        if not isinstance(mapping, Mapping) or key not in mapping:
            raise ValueError(f"malformed search-space YAML {source}: missing '{key}' in {where}")
        return mapping[key]

    def numbers(value: Any, where: str, kind: type = int) -> tuple[Any, ...]:
        if not isinstance(value, list) or not value:
            raise ValueError(f"malformed search-space YAML {source}: {where} must be a non-empty list, "
                             f"got {value!r}")
        for v in value:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not ok or (kind is int and int(v) != v):
                raise ValueError(f"malformed search-space YAML {source}: {where} must hold "
                                 f"{kind.__name__}s, got {v!r}")
        return tuple(kind(v) for v in value)

    if not isinstance(raw, Mapping):
        raise ValueError(f"malformed search-space YAML {source}: expected a mapping at the top level")
    raw = renamed_keys(raw, RENAMED_YAML_KEYS, f"search-space YAML {source}")
    name = need(raw, "name", "the top level")
    # modules registering the stages' block kinds: imported first, so any process loading the YAML knows them
    import_kind_modules(raw.get("block_kind_modules", []), f"search-space YAML {source}")

    def kind(stage: Mapping[str, Any], slot: str, where: str) -> str:
        kind_name = stage.get("kind", DEFAULT_STAGE_KINDS[slot])
        if not isinstance(kind_name, str) or not kind_name:
            raise ValueError(f"malformed search-space YAML {source}: {where} kind must be a block kind's name, "
                             f"got {kind_name!r}")
        return kind_name

    mb = [MBConvStageChoices(numbers(need(s, "widths", f"mbconv stage {i}"), f"mbconv stage {i} widths"),
                             numbers(need(s, "depths", f"mbconv stage {i}"), f"mbconv stage {i} depths"),
                             kind(s, "conv", f"mbconv stage {i}"))
          for i, s in enumerate(need(raw, "mbconv_stages", "the top level") or [], start=1)]
    tr = []
    for i, s in enumerate(need(raw, "transformer_stages", "the top level") or [], start=1):
        w = f"transformer stage {i}"
        tr.append(TransformerStageChoices(
            numbers(need(s, "widths", w), f"{w} widths"), numbers(need(s, "depths", w), f"{w} depths"),
            numbers(need(s, "heads", w), f"{w} heads"),
            numbers(need(s, "mlp_ratios", w), f"{w} mlp_ratios", float), kind(s, "transformer", w)))
    fixed_raw = raw.get("fixed") or {}
    known = {f.name for f in dataclasses.fields(FixedChoices)}
    unknown = set(fixed_raw) - known
    if unknown:
        raise ValueError(f"malformed search-space YAML {source}: unknown fixed choices {sorted(unknown)}; "
                         f"allowed: {sorted(known)}")
    fixed = FixedChoices(**{k: int(numbers([v], f"fixed.{k}")[0]) for k, v in fixed_raw.items()})
    # a space YAML without its own input profiles offers the shared ones (configs/profiles.yaml, registered)
    input_profiles_raw = raw["input_profiles"] if "input_profiles" in raw else shared_input_profiles()
    if not isinstance(input_profiles_raw, Mapping) or not input_profiles_raw:
        raise ValueError(f"malformed search-space YAML {source}: 'input_profiles' must be a non-empty mapping")
    input_profiles = {
        pname: InputProfile(pname, numbers(need(p, "resolutions", f"input profile {pname}"),
                                           f"input profile {pname} resolutions"),
                            numbers(need(p, "strides", f"input profile {pname}"), f"input profile {pname} strides"),
                            numbers(p["patch_sizes"], f"input profile {pname} patch_sizes")
                            if p.get("patch_sizes") is not None else None)
        for pname, p in input_profiles_raw.items()}
    default = raw.get("default_input_profile")
    if default is None and "input_profiles" not in raw:
        default = _profiles_file()["default"]
    chosen = input_profile or default or next(iter(input_profiles))
    if chosen not in input_profiles:
        raise ValueError(f"search space {name!r} has no input profile {chosen!r}; allowed: {sorted(input_profiles)}")
    return SearchSpace(
        name=str(name), stem_widths=numbers(need(need(raw, "stem", "the top level"), "widths", "stem"),
                                            "stem widths"),
        mbconv_stages=mb, transformer_stages=tr,
        num_transformer_stages=numbers(need(raw, "num_transformer_stages", "the top level"),
                                       "num_transformer_stages"),
        fixed=fixed, input_profile=input_profiles[chosen], input_profiles=input_profiles)


def space_for_arch(arch: Arch) -> SearchSpace:
    """The built-in space of `arch.supernet` under `arch.input_profile`, else under the first profile without
    per-stage patch sizes whose resolutions contain `arch.resolution` (such input profiles are never
    inferred: their archs name them)."""
    space = load_space(arch.supernet)
    if arch.input_profile is not None:
        return space.with_input_profile(arch.input_profile)
    for pname, prof in space.input_profiles.items():
        if arch.resolution in prof.resolutions and prof.patch_sizes is None:
            return space.with_input_profile(pname)
    allowed = {p: list(v.resolutions) for p, v in space.input_profiles.items()}
    raise ValueError(f"Arch.resolution = {arch.resolution} is in no input profile of {arch.supernet!r}; "
                     f"allowed: {allowed}")


# --------------------------------------------------------------------------------------------
# The shared input profiles: configs/profiles.yaml, then those registered in code
# --------------------------------------------------------------------------------------------


PROFILES_FILE = CONFIG_DIR / "profiles.yaml"


@cache
def _profiles_file() -> dict[str, Any]:
    """{"input_profiles": {name: raw profile}, "default": name} of `PROFILES_FILE`, read once."""
    where = f"input-profiles file {PROFILES_FILE}"
    try:
        raw = yaml.safe_load(PROFILES_FILE.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"malformed {where}: {exc}") from None
    profiles = raw.get("input_profiles") if isinstance(raw, Mapping) else None
    if not isinstance(profiles, Mapping) or not profiles or raw.get("default_input_profile") not in profiles:
        raise ValueError(f"malformed {where}: expected a non-empty mapping 'input_profiles' and a "
                         "'default_input_profile' that names one of them")
    return {"input_profiles": dict(profiles), "default": raw["default_input_profile"]}


def _check_new_input_profile(name: str, profile: InputProfile) -> None:
    """A new input profile must be new, valid in every built-in space (the errors a space YAML gets), and,
    without per-stage patch sizes, share no resolution with another such profile."""
    in_file = _profiles_file()["input_profiles"]
    if name in in_file:
        raise ValueError(f"input profile {name!r} already exists (configs/profiles.yaml); choose another name")
    raw = profile.to_dict()
    for space in BUILTIN_SPACES:
        yaml_dict = yaml.safe_load((CONFIG_DIR / f"{space}.yaml").read_text())
        space_from_dict({**yaml_dict, "input_profiles": {name: raw}}, source=f"input profile {name!r}")
    if profile.patch_sizes is None:  # its archs will not name it: their resolution must tell it (space_for_arch)
        # the registered ones only: loading the entry points here would load this one again
        others = {**in_file, **{n: p.to_dict() for n, p in INPUT_PROFILES.entries().items() if n != name}}
        for other, prof in others.items():
            shared = sorted(set(raw["resolutions"]) & set(prof["resolutions"]))
            if shared and prof.get("patch_sizes") is None:
                raise ValueError(f"input profile {name!r} shares resolutions {shared} with {other!r}: an arch "
                                 "names no input profile, its resolution tells it; choose other resolutions "
                                 "or give per-stage patch_sizes (then its archs name it)")


# The input profiles added in code (`register_input_profile`, in a module of AUTOVIT_RAY_PLUGINS) or by
# installed packages (entry points of group autovit_ray.input_profiles: an `InputProfile` each).
INPUT_PROFILES: Registry[InputProfile] = Registry(
    "input profile", entry_point_group="autovit_ray.input_profiles", check=_check_new_input_profile,
    instance_of=InputProfile, hint="add one to configs/profiles.yaml or register it with "
                                   "autovit_ray.space.register_input_profile (docs/extending.md)")


def shared_input_profiles() -> dict[str, dict[str, Any]]:
    """{name: {"resolutions", "strides"[, "patch_sizes"]}} of every space whose YAML lists none of its
    own (the built-in ones): configs/profiles.yaml's, then the registered ones and those of installed
    packages, in that order."""
    load_plugins()  # the modules of AUTOVIT_RAY_PLUGINS register theirs
    return {**_profiles_file()["input_profiles"],
            **{name: INPUT_PROFILES.get(name).to_dict() for name in INPUT_PROFILES.names()}}


def register_input_profile(name: str, resolutions: Sequence[int], strides: Sequence[int],
                           patch_sizes: Sequence[int] | None = None) -> InputProfile:
    """Offer one more input profile in every built-in space (resolutions, and the stride of each of the
    8 stages; `patch_sizes`: one per transformer stage); returns it. Checked against each built-in space
    here, with the errors a space YAML gets. Register in a module of AUTOVIT_RAY_PLUGINS
    (autovit_ray.plugins), so that every process of a run has it; an installed package may declare the
    `InputProfile` as an entry point of group autovit_ray.input_profiles instead."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an input profile's name must be a non-empty string, got {name!r}")
    if name in INPUT_PROFILES.entries():
        raise ValueError(f"input profile {name!r} already exists (registered); choose another name")
    profile = InputProfile(name, tuple(resolutions), tuple(strides),
                           tuple(patch_sizes) if patch_sizes is not None else None)
    return INPUT_PROFILES.register(name, profile)


def unregister_input_profile(name: str) -> None:
    """Undo `register_input_profile` (the profiles of configs/profiles.yaml stay)."""
    if name not in INPUT_PROFILES.entries():
        raise ValueError(f"input profile {name!r} was not registered in code; registered: "
                         f"{sorted(INPUT_PROFILES.entries())}")
    INPUT_PROFILES.unregister(name)
