"""Supernet checkpoints: writing them atomically, finding them, loading them back safely.

A checkpoint is a directory (Ray Train copies it into its storage as ``epoch_NNNN/``) holding

- ``state.pt``: a `torch.save`d dict loadable with ``torch.load(weights_only=True)`` (tensors, lists,
  numbers, strings only; RNG states are stored as tensors / lists): ``model`` (supernet state dict),
  ``optimizer``, ``scheduler``, ``scaler``, ``epoch`` (completed epochs), ``global_step``, ``rng_states``,
  ``config`` (the full training config as a dict, incl. ``data.split_seed`` / ``data.val_size``, so the
  search reuses the same held-out validation split), ``space`` (name, profile: the input profile's name under
  its old key, source, fingerprint),
  ``num_classes``, ``metrics`` (of that epoch) and ``format`` / ``format_version``;
- ``meta.json``: the same minus the tensors, written last, so a directory with a readable meta.json and
  state.pt is complete. Both files are written to a temporary name and renamed (atomic on POSIX).

No Ray and no MLflow here: the search and the export load checkpoints with this module alone.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from autovit_ray.experiment import FEW_SHOT_FILE, Experiment
from autovit_ray.io import atomic_path, atomic_write_text
from autovit_ray.nn import FewShotSupernet, Supernet
from autovit_ray.space import SearchSpace, load_space

FORMAT = "autovit-ray-supernet-checkpoint"
FORMAT_VERSION = 1
STATE_FILE = "state.pt"
META_FILE = "meta.json"
EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


def epoch_dir_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


# ---------------------------------------------------------------------------------------------------
# RNG states as tensors / lists (torch.load(weights_only=True) refuses numpy arrays and tuples of them)


def rng_states() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    # numpy's stub also allows the dict of get_state(legacy=False); the default is this legacy tuple
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, cached = legacy
    states: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------------------------------------
# Writing


def _atomic_write(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def save_checkpoint(directory: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write state.pt, then meta.json (its non-tensor part), each atomically. Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    _atomic_write(directory / STATE_FILE, lambda tmp: torch.save(dict(state), tmp))
    meta_keys = ("format", "format_version", "epoch", "global_step", "config", "space", "num_classes",
                 "metrics", "precision", "data_path")
    meta = _json_safe({k: state[k] for k in meta_keys if k in state})
    _atomic_write(directory / META_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    return directory


# ---------------------------------------------------------------------------------------------------
# Reading


def _not_a_checkpoint(path: Path, why: str) -> ValueError:
    return ValueError(f"{str(path)!r} is not an autovit-ray supernet checkpoint ({why}): expected a "
                      f"directory with {STATE_FILE} and {META_FILE} written by `python -m autovit_ray.train` "
                      f"(e.g. <output_dir>/<name>/checkpoints/<supernet>/epoch_NNNN)")


def _state_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / STATE_FILE
        if not path.is_file():
            raise _not_a_checkpoint(path.parent, f"no {STATE_FILE}")
    elif not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    return path


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The meta.json of a checkpoint directory (cheap: no tensors)."""
    directory = Path(path).expanduser()
    if directory.is_file():
        directory = directory.parent
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise _not_a_checkpoint(directory, f"unreadable {META_FILE}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _not_a_checkpoint(directory, f"{META_FILE} has no format {FORMAT!r}")
    return meta


@dataclass(frozen=True)
class TrainingRecord:
    """What a checkpoint's meta.json says about the training that wrote it, read once (`read_record`)."""

    directory: Path  # the checkpoint directory (epoch_NNNN)
    epoch: int  # completed epochs
    num_classes: int
    config: dict[str, Any]  # the run's TrainConfig.to_dict() (`training.config.config_from_dict` types it)
    meta: dict[str, Any]  # the whole meta.json: `space_of` reads its space record

    @property
    def experiment_name(self) -> str:
        return str(self.config["name"])

    @property
    def planned_epochs(self) -> int:
        return int(self.config["train"]["epochs"])

    @property
    def finished(self) -> bool:
        return self.epoch >= self.planned_epochs


def read_record(path: str | os.PathLike[str]) -> TrainingRecord:
    """The `TrainingRecord` of a checkpoint directory (or its state.pt): no tensors are loaded. Of a
    few-shot supernet: its first part's, with the fewest epochs of any part and `meta["few_shot"]`."""
    if is_few_shot(path):
        parts = read_few_shot(path)
        records = {count: read_record(part) for count, part in parts.items()}
        first = records[min(records)]
        meta = {**first.meta, "few_shot": {str(c): str(p) for c, p in parts.items()}}
        return TrainingRecord(Path(path).expanduser(), min(r.epoch for r in records.values()), first.num_classes,
                              first.config, meta)
    meta = read_meta(path)
    directory = Path(path).expanduser()
    return TrainingRecord(directory.parent if directory.is_file() else directory, int(meta["epoch"]),
                          int(meta["num_classes"]), meta["config"], meta)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state dict of a checkpoint (directory or state.pt), loaded with weights_only=True."""
    state_path = _state_path(path)
    try:
        state = torch.load(state_path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle / zip errors of a foreign or truncated file
        raise _not_a_checkpoint(state_path, f"torch.load(weights_only=True) failed: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise _not_a_checkpoint(state_path, f"no format {FORMAT!r} in the file")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {str(state_path)!r} has format version {state.get('format_version')}; "
                         f"this code reads version {FORMAT_VERSION}")
    return state


def space_of(state_or_meta: Mapping[str, Any], space: SearchSpace | str | None = None) -> SearchSpace:
    """The search space a checkpoint was trained on, checked against its fingerprint. `space`: a
    SearchSpace or name/YAML path to check against instead of the one recorded in the checkpoint."""
    info = state_or_meta["space"]
    if space is None:
        space = info["source"]
    if isinstance(space, str):
        space = load_space(space, input_profile=info["profile"])
    if space.fingerprint() != info["fingerprint"]:
        raise ValueError(
            f"checkpoint of supernet {info['name']!r} (input profile {info['profile']!r}, space fingerprint "
            f"{info['fingerprint']}) does not match search space {space.name!r} (input profile "
            f"{space.input_profile.name!r}, fingerprint {space.fingerprint()}): it was trained on another "
            "supernet, or the space's YAML changed since; load it with its own space")
    return space


def load_supernet(path: str | os.PathLike[str], space: SearchSpace | str | None = None,
                  device: str | torch.device = "cpu") -> tuple[Supernet | FewShotSupernet, SearchSpace, Any]:
    """(Supernet with the trained weights in eval mode, its SearchSpace, its TrainConfig).

    `path`: a checkpoint directory or its state.pt (see `find_checkpoint`). Refuses a file that is not
    a checkpoint, and a checkpoint whose space fingerprint differs from `space` (default: the space it
    names) with a ValueError. The config's `data` section holds split_seed / val_size: build the
    validation split from it to select on the same held-out images. A few-shot supernet's folder
    (`write_few_shot`) loads as a `FewShotSupernet`, with its first part's config."""
    from autovit_ray.training.config import config_from_dict  # training config: no Ray inside

    if is_few_shot(path):
        return _load_few_shot(path, space, device)
    state = load_checkpoint(path, map_location=device)
    space = space_of(state, space)
    model = Supernet(space, int(state["num_classes"]), float(state["config"]["model"]["drop_rate"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), space, config_from_dict(state["config"])


# ---------------------------------------------------------------------------------------------------
# Few-shot supernets: a folder with fewshot.json naming one finished checkpoint per part

FEW_SHOT_FORMAT = "autovit-ray-few-shot-supernet"


def is_few_shot(path: str | os.PathLike[str]) -> bool:
    return (Path(path).expanduser() / FEW_SHOT_FILE).is_file()


def read_few_shot(path: str | os.PathLike[str]) -> dict[int, Path]:
    """The part checkpoints of a few-shot supernet folder, keyed by transformer stage count."""
    directory = Path(path).expanduser()
    try:
        manifest = json.loads((directory / FEW_SHOT_FILE).read_text())
        if manifest.get("format") != FEW_SHOT_FORMAT:
            raise ValueError(f"no format {FEW_SHOT_FORMAT!r}")
        # a relative part path is relative to the folder, so the folder can move with its parts
        return {int(count): directory / part for count, part in manifest["parts"].items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise ValueError(f"{str(directory / FEW_SHOT_FILE)!r} is not a few-shot supernet manifest ({e}): "
                         "expected one written by `python -m autovit_ray.fewshot`") from None


def check_few_shot_parts(parts: Mapping[int, str | os.PathLike[str]]) -> SearchSpace:
    """Refuse parts that do not make one few-shot supernet: each a finished checkpoint of one space and
    dataset, trained on its own transformer stage count (`train.transformer_stages`), one part per count
    of the space. Returns the space."""
    nested = [count for count, part in parts.items() if is_few_shot(part)]
    if nested:
        raise ValueError(f"few-shot part {nested[0]} ({str(parts[nested[0]])!r}) is itself a few-shot folder: "
                         "give the checkpoint of each part")
    records = {count: read_record(part) for count, part in parts.items()}
    spaces = {count: space_of(r.meta) for count, r in records.items()}
    space = spaces[min(spaces)]
    for count, record in records.items():
        where = f"few-shot part {count} ({str(record.directory)!r})"
        if spaces[count].fingerprint() != space.fingerprint():
            raise ValueError(f"{where} is supernet {spaces[count].name!r} under input profile "
                             f"{spaces[count].input_profile.name!r}, not {space.name!r} under "
                             f"{space.input_profile.name!r}: every part is a supernet of one space")
        trained_on = record.config["train"].get("transformer_stages")
        if trained_on != count:
            raise ValueError(f"{where} was trained with train.transformer_stages = {trained_on}, not {count}")
        if record.num_classes != records[min(records)].num_classes:
            raise ValueError(f"{where} has {record.num_classes} classes, part {min(records)} has "
                             f"{records[min(records)].num_classes}")
        if not record.finished:
            raise ValueError(f"{where} is at epoch {record.epoch} of {record.planned_epochs}: rerun its "
                             "training command to finish it")
    if sorted(records) != sorted(space.num_transformer_stages):
        raise ValueError(f"space {space.name!r} has subnets with {sorted(space.num_transformer_stages)} "
                         f"transformer stages; the parts cover {sorted(records)}: give one part per count")
    return space


def write_few_shot(directory: str | os.PathLike[str], parts: Mapping[int, str | os.PathLike[str]]) -> Path:
    """Check the parts (`check_few_shot_parts`) and write `<directory>/fewshot.json` naming them;
    `load_supernet(directory)` then loads the few-shot supernet."""
    directory = Path(directory).expanduser()
    # a part given as its state.pt is named by its checkpoint folder
    folders = {count: Path(p).expanduser().parent if Path(p).expanduser().is_file() else Path(p).expanduser()
               for count, p in parts.items()}
    space = check_few_shot_parts(folders)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"format": FEW_SHOT_FORMAT, "space": space.name, "profile": space.input_profile.name,
              "space_fingerprint": space.fingerprint(), "split": "transformer_stages",
              "parts": {str(count): os.path.relpath(part.resolve(), directory.resolve())
                        for count, part in sorted(folders.items())}}
    path = directory / FEW_SHOT_FILE
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def _load_few_shot(path: str | os.PathLike[str], space: SearchSpace | str | None,
                   device: str | torch.device) -> tuple[FewShotSupernet, SearchSpace, Any]:
    parts = read_few_shot(path)
    check_few_shot_parts(parts)
    loaded = {count: load_supernet(part, space, device) for count, part in parts.items()}
    first = loaded[min(loaded)]
    # parts are plain checkpoints (check_few_shot_parts refuses a nested folder): each loads as a Supernet
    supernets = {count: model for count, (model, _, _) in loaded.items() if isinstance(model, Supernet)}
    model = FewShotSupernet(first[1], supernets)
    return model.to(device).eval(), first[1], first[2]


# ---------------------------------------------------------------------------------------------------
# Finding the checkpoints of an experiment


def checkpoint_root(experiment_dir: str | os.PathLike[str], supernet: str) -> Path:
    """Ray Train's storage for one supernet: <experiment_dir>/checkpoints/<supernet>."""
    return Experiment(Path(experiment_dir)).supernet_checkpoints(supernet)


def list_checkpoints(experiment_dir: str | os.PathLike[str], supernet: str) -> list[Path]:
    """Complete checkpoint directories of a supernet, oldest epoch first."""
    root = checkpoint_root(experiment_dir, supernet)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        match = EPOCH_DIR.match(d.name)
        if match and (d / STATE_FILE).is_file() and (d / META_FILE).is_file():
            found.append((int(match.group(1)), d))
    return [d for _, d in sorted(found)]


def find_checkpoint(experiment_dir: str | os.PathLike[str], supernet: str, final: bool = False) -> Path:
    """The latest checkpoint of `supernet` in an experiment (`final=True`: only if training finished)."""
    found = list_checkpoints(experiment_dir, supernet)
    if not found:
        raise ValueError(f"no checkpoint of supernet {supernet!r} under "
                         f"{str(checkpoint_root(experiment_dir, supernet))!r}: expected "
                         f"epoch_NNNN/{STATE_FILE} written by `python -m autovit_ray.train`")
    latest = found[-1]
    if final:
        record = read_record(latest)
        if not record.finished:
            raise ValueError(f"supernet {supernet!r} in {str(experiment_dir)!r} is not fully trained: epoch "
                             f"{record.epoch} of {record.planned_epochs}; rerun the training command to finish it")
    return latest


def resolve_checkpoint(checkpoint: str | os.PathLike[str], supernet: str | None = None) -> Path:
    """A checkpoint directory (or state.pt) as given, or an experiment directory's latest complete
    checkpoint of `supernet` (`find_checkpoint`)."""
    path = Path(checkpoint).expanduser()
    if (path / STATE_FILE).is_file() or path.is_file() or is_few_shot(path):
        return path
    if supernet is None:
        raise ValueError(f"--checkpoint {path} is not a checkpoint directory (no {STATE_FILE}); for an "
                         "experiment directory also pass --supernet xxs|xs|s")
    return find_checkpoint(path, supernet)


__all__ = [
    "FEW_SHOT_FILE", "FEW_SHOT_FORMAT", "FORMAT", "FORMAT_VERSION", "META_FILE", "STATE_FILE", "TrainingRecord",
    "check_few_shot_parts", "checkpoint_root", "epoch_dir_name", "find_checkpoint", "is_few_shot", "list_checkpoints",
    "load_checkpoint", "load_supernet", "read_few_shot", "read_meta", "read_record", "resolve_checkpoint", "rng_states",
    "save_checkpoint", "set_rng_states", "space_of", "write_few_shot",
]
