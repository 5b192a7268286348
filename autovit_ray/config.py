"""Typed configs from YAML and `--set section.field=value` overrides: nested frozen dataclasses built
from nested dicts, with type coercion (YAML and --set give strings, ints for floats, ...) and one clear
error per bad or unknown field. The training config (`training/config.py`) and the pipeline config
(`pipeline.py`) are loaded with it. Pure Python.

A renamed config key, flag or value keeps working under its old name, with one deprecation message
(`warn_renamed`; a `FutureWarning`, which Python shows to users, unlike a `DeprecationWarning`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.resources
import os
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def warn_renamed(old: str, new: str, where: str = "") -> None:
    """The deprecation message of a renamed name, shown once per name and place (the warnings filter)."""
    context = f" in {where}" if where else ""
    warnings.warn(f"{old}{context} is deprecated: it was renamed {new} (the old name still works for now)",
                  FutureWarning, stacklevel=3)


def renamed_keys(values: Mapping[str, Any], renamed: Mapping[str, str], where: str,
                 warn: bool = True) -> dict[str, Any]:
    """`values` with each old key of `renamed` ({old: new}) under its new name, warning once per key
    unless `warn` is False (files the code wrote itself under the old name); both names: ValueError."""
    out = dict(values)
    for old, new in renamed.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{where} sets both {old} and {new}: {old} is the old name of {new}; keep {new}")
        if warn:
            warn_renamed(old, new, where)
        out[new] = out.pop(old)
    return out


def add_renamed_flag(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """`old` as a hidden alias of the flag `new` (added to `parser` before), with a deprecation message."""

    class RenamedFlag(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            warn_renamed(old, new)
            setattr(namespace, self.dest, values)

    parser.add_argument(old, dest=new.lstrip("-").replace("-", "_"), action=RenamedFlag, help=argparse.SUPPRESS)


def packaged_configs(*parts: str) -> Path:
    """A folder of the configs shipped in the package (`autovit_ray/configs`: spaces, training and
    pipeline configs), found the same way in a checkout and in an installed wheel."""
    return Path(str(importlib.resources.files("autovit_ray"))).joinpath("configs", *parts)


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def bad_field(name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"config field {name} = {value!r} is invalid: expected {expected}")


def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, name: str) -> Any:
    """`value` as type `tp` (int / float / str / bool / None / tuples / unions), or a clear ValueError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in sorted((o for o in options if o is not type(None)), key=lambda o: o is str):
            try:
                return coerce(value, option, name)
            except ValueError as e:
                errors.append(e)
        raise bad_field(name, value, " or ".join(_type_name(o) for o in options))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad_field(name, value, f"a list ({_type_name(tp)})")
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise bad_field(name, value, f"{len(args)} values")
        item = args[0] if args else Any
        return tuple(coerce(v, item if (not args or args[-1] is Ellipsis) else args[i], f"{name}[{i}]")
                     for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad_field(name, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise bad_field(name, value, "an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads '1e-3' as a string
            except ValueError:
                pass
        raise bad_field(name, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad_field(name, value, "a string")
    if tp is type(None):
        if value is None:
            return None
        raise bad_field(name, value, "null")
    raise bad_field(name, value, _type_name(tp))


def build_dataclass(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(values, Mapping):
        raise bad_field(prefix.rstrip(".") or "<top level>", values, "a mapping of fields")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known: {sorted(fields)}"
        raise ValueError(f"unknown config field {prefix}{key}{hint}")
    kwargs = {}
    for key, value in values.items():
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # a hint is a class, never an instance
            kwargs[key] = build_dataclass(tp, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(value, tp, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if not prefix:  # TrainConfig's own checks already name the field
            raise ValueError(str(e)) from None
        raise ValueError(f"config section {prefix.rstrip('.')}: {e}") from None  # DataConfig / KDConfig


def dataclass_from_flat_dict(cls: type[T], values: Mapping[str, Any]) -> T:
    """`cls(**values)`, or one ValueError naming the unknown fields."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(known)}")
    return cls(**values)


def set_path(values: dict[str, Any], dotted: str, value: Any) -> None:
    """values['a']['b'] = value for 'a.b' (creating sections as needed)."""
    keys = dotted.split(".")
    node = values
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {dotted}: {key} is not a config section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'optimizer.lr=1e-3' -> ('optimizer.lr', '1e-3' parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is invalid: expected section.field=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def resolve_config_path(config: str | os.PathLike[str], directory: Path, kind: str) -> Path:
    """A config file path, or a name in `directory` ('digits' -> <directory>/digits.yaml)."""
    path = Path(config)
    if not path.suffix and (directory / f"{path}.yaml").is_file():
        path = directory / f"{path}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ValueError(f"{kind} config {str(config)!r} does not exist: expected a YAML file or one "
                         f"of {names}")
    return path


def read_yaml_mapping(path: Path, kind: str) -> dict[str, Any]:
    """The top-level mapping of a YAML config file, or one clear ValueError."""
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"malformed {kind} config {path}: {e}") from None
    if not isinstance(values, dict):
        raise ValueError(f"malformed {kind} config {path}: expected a mapping at the top level")
    return values


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


__all__ = ["add_renamed_flag", "bad_field", "build_dataclass", "coerce", "dataclass_from_flat_dict", "flatten",
           "parse_override", "read_yaml_mapping", "renamed_keys", "resolve_config_path", "plain", "set_path",
           "type_hints", "warn_renamed"]
