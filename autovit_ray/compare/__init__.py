"""Searched models against reference models, measured alike on one latency backend: the library of
`python -m autovit_ray.compare` (its manual is the docstring of autovit_ray/compare/cli.py).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..experiment import COMPARE_JSON, COMPARE_PNG, Experiment
from ..space import Arch, SearchSpace

if TYPE_CHECKING:  # torch only where a model runs: --help and bad flags answer without it
    from torch import nn

DEFAULT_REFERENCES = ("mobilevit_xxs",)
FALLBACK_RESOLUTIONS = (16, 32, 64, 128, 224, 256)
NOT_TRAINED = "not trained here"
COLUMNS = ("model", "kind", "resolution", "test_top1", "params", "macs", "lut_latency_ms", "latency_ms",
           "latency_p10_ms", "latency_p90_ms", "latency_ratio", "note")
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """One comparison: an experiment's searched models against reference models, measured alike on one
    latency backend (`compare_experiment`; `python -m autovit_ray.compare` builds it from its flags,
    the pipeline's compare stage from its settings)."""

    experiment: str  # an experiment directory (its mlflow.db), or an MLflow experiment name with mlflow_uri
    mlflow_uri: str | None = None
    references: tuple[str, ...] = DEFAULT_REFERENCES  # timm model names
    reference_checkpoints: tuple[tuple[str, str], ...] = ()  # (reference, weights path): gives it a test top-1
    backend: str = "torch-cpu"
    repeats: int = 100  # timed samples per model
    rounds: int = 10  # interleaved rounds the samples are split into
    seed: int = 0
    out: str | None = None  # default: <experiment dir>/compare
    searches: tuple[str, ...] | None = None  # default: every finished search
    data_dir: str | None = None  # overrides the data directory (reference test top-1)
    eval_batches: int | None = None  # test batches for a reference checkpoint
    models: tuple[str, ...] = ()  # registered models: models:/<name>@<alias> or models:/<name>/<version>
    train_references: bool = False  # train each reference without a checkpoint with the supernets' recipe
    standalone: tuple[str, ...] = ()  # checkpoints of `train --arch`, measured beside the searched models

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.rounds < 1:
            raise ValueError(f"--repeats and --rounds must be >= 1, got {self.repeats} and {self.rounds}")


# ---------------------------------------------------------------------------------------------------
# Reading the searches from MLflow


@dataclasses.dataclass
class ExperimentFacts:
    """What references and stand-alone models are built and tested with, taken from the first searched,
    registered or stand-alone model that names it: the class count, the space and its input profile (a
    reference's strides) and the supernet checkpoint whose training config holds the data and splits."""

    num_classes: int | None = None
    input_profile: str | None = None
    supernet: str | None = None
    checkpoint: str | None = None
    space: SearchSpace | None = None  # the space itself where known (else the built-in `supernet`)

    def fill(self, **values: Any) -> None:
        """Each field still unknown (None) takes its value here: the first model to name it decides."""
        for key, value in values.items():
            if getattr(self, key) is None and value is not None:
                setattr(self, key, value)


@dataclasses.dataclass
class Candidate:
    """One model to measure: a searched model or a reference."""

    name: str
    kind: str  # "searched" | "reference"
    model: nn.Module
    resolution: int
    test_top1: float | None = None
    lut_latency_ms: float | None = None
    note: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def resolve_experiment(experiment: str, mlflow_uri: str | None) -> tuple[str, str, Path | None]:
    """(tracking URI, MLflow experiment name, experiment directory or None)."""
    from ..adapters import default_tracking_uri
    from ..search.tracking import SEARCH_EXPERIMENT

    path = Path(experiment).expanduser()
    if path.is_dir():
        if not mlflow_uri and not os.environ.get("MLFLOW_TRACKING_URI") and not Experiment(path).tracking_db.is_file():
            raise ValueError(f"experiment directory {str(path)!r} has no mlflow.db (no search ran there?); "
                             "pass --mlflow-uri for another tracking store")
        return default_tracking_uri(path, mlflow_uri), SEARCH_EXPERIMENT, path
    uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError(f"--experiment {experiment!r} is not a directory; to name an MLflow experiment "
                         "also pass --mlflow-uri (or set MLFLOW_TRACKING_URI)")
    return uri, experiment, None


def _float(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def search_runs(client: Any, experiment_id: str, searches: Sequence[str] | None) -> list[Any]:
    runs = client.search_runs([experiment_id], "tags.role = 'search' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"])
    if searches:
        found = {r.data.tags.get("search_name") for r in runs}
        missing = [s for s in searches if s not in found]
        if missing:
            raise ValueError(f"no finished search named {missing} in this experiment; found {sorted(found)}")
        runs = [r for r in runs if r.data.tags.get("search_name") in searches]
    return runs


def searched_candidates(client: Any, runs: Sequence[Any], tmp: Path) -> tuple[list[Candidate], ExperimentFacts]:
    """The best models of each search (built from the logged arch + weights), and the experiment's
    `ExperimentFacts` every reference needs, from the first search that logged them."""
    import timm

    import autovit_ray.models  # noqa: F401 - registers "autovit" in timm

    candidates: list[Candidate] = []
    facts = ExperimentFacts()
    for run in runs:
        run_id, params = run.info.run_id, run.data.params
        search = run.data.tags.get("search_name", run_id)
        num_classes = _num_classes(params)
        space = search_space(params, search)  # its models are rebuilt in it, not in a namesake
        facts.fill(num_classes=num_classes, input_profile=params.get("profile"),  # the param keeps the old name
                   supernet=params.get("supernet"), checkpoint=params.get("checkpoint"), space=space)
        try:
            local = Path(client.download_artifacts(run_id, "best_archs.json", str(tmp / run_id)))
        except Exception as e:  # MlflowException: the artifact store moved or was deleted
            location = client.get_run(run_id).info.artifact_uri
            raise ValueError(f"search {search!r} (MLflow run {run_id}) has no readable best_archs.json at "
                             f"{location}: {type(e).__name__}; was its artifact directory removed?") from None
        for entry in json.loads(local.read_text()):
            arch = Arch.from_dict(entry["arch"])
            weights, note = _weights(client, run_id, entry, tmp / run_id), ""
            if weights is None:
                note = "weights artifact missing: fresh weights (latency only)"
            weights_kwargs: dict[str, Any] = {"checkpoint_path": str(weights)} if weights else {}
            model = timm.create_model("autovit", arch=arch, num_classes=num_classes, space=space,
                                      **weights_kwargs)
            candidates.append(Candidate(
                name=f"{search}-top{entry.get('rank', len(candidates) + 1)}", kind="searched", model=model.eval(),
                resolution=arch.resolution, test_top1=_float(entry.get("test_top1")),
                lut_latency_ms=_float(entry.get("latency_ms")), note=note,
                extra={"arch": str(arch), "arch_hash": arch.arch_hash, "search_run_id": run_id,
                       "val_top1": _float(entry.get("val_top1"))}))
    return candidates, facts


def registered_candidates(uris: Sequence[str], tracking_uri: str, tmp: Path, facts: ExperimentFacts) -> list[Candidate]:
    """Registered searched models (`autovit_ray.registry`), built from their logged arch and weights;
    they must share the experiment's class count (`facts`, filled from the first one if empty)."""
    from ..registry import resolve_model_uri

    out: list[Candidate] = []
    for uri in uris:
        registered = resolve_model_uri(uri, tracking_uri, tmp / f"registered{len(out)}")
        facts.fill(num_classes=registered.num_classes, supernet=registered.tags.get("supernet"),
                   input_profile=registered.tags.get("profile"),  # the tag keeps the old name
                   checkpoint=registered.tags.get("checkpoint"), space=registered.space)
        if registered.num_classes != facts.num_classes:
            raise ValueError(f"{uri} classifies {registered.num_classes} classes; the other models here "
                             f"{facts.num_classes}")
        out.append(Candidate(
            name=f"{registered.name} v{registered.version}", kind="searched", model=registered.build(),
            resolution=registered.arch.resolution, test_top1=_float(registered.tags.get("test_top1")),
            lut_latency_ms=_float(registered.tags.get("lut_latency_ms")),
            extra={"arch": str(registered.arch), "arch_hash": registered.arch.arch_hash, "model_uri": uri,
                   "val_top1": _float(registered.tags.get("val_top1"))}))
    return out


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow download progress bars on stderr (the CLI's stderr is for its one error line)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def search_space(params: dict[str, str], search: str) -> SearchSpace:
    """The space a search ran in (from its run's params): its checkpoint's, as the search loaded it;
    where the checkpoint is not on this machine, the built-in space of the run's supernet name if it is
    the one the run's `space_fingerprint` names. Otherwise one ValueError: a space of the user's own
    cannot be rebuilt from its name."""
    from ..checkpoint import read_record, space_of
    from ..space import BUILTIN_SPACES, load_space

    checkpoint, name = params.get("checkpoint", ""), params.get("supernet", "")
    fingerprint = params.get("space_fingerprint")
    if checkpoint and Path(checkpoint).exists():
        return space_of(read_record(checkpoint).meta)
    if name in BUILTIN_SPACES:
        space = load_space(name, input_profile=params.get("profile"))  # the param keeps the old name
        if fingerprint in (None, space.fingerprint()):
            return space
    raise ValueError(f"search {search!r} ran in space {name!r} (fingerprint {fingerprint}), which is not the built-in "
                     f"space of that name, and its checkpoint {checkpoint!r} is not on this machine: its models "
                     "cannot be rebuilt here; compare where the checkpoint (and its space YAML) is")


def _num_classes(params: dict[str, str]) -> int:
    if "num_classes" in params:
        return int(params["num_classes"])
    from ..checkpoint import read_record  # searches logged before num_classes was a param

    return read_record(params["checkpoint"]).num_classes


def _weights(client: Any, run_id: str, entry: dict[str, Any], tmp: Path) -> Path | None:
    """The exported .pth of a best model: the run's artifact, else the local file it was written to."""
    if not entry.get("weights"):
        return None
    name = Path(entry["weights"]).name
    try:
        return Path(client.download_artifacts(run_id, f"exports/{name}", str(tmp)))
    except Exception:  # artifact store unreachable or the artifact absent: fall back to the local file
        local = Path(entry["weights"])
        return local if local.is_file() else None


# ---------------------------------------------------------------------------------------------------
# References


def parse_reference_checkpoints(items: Sequence[str]) -> dict[str, str]:
    """["name=path", ...] -> {name: path}."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--reference-checkpoint expects NAME=PATH, got {item!r}")
        out[name] = path
    return out


def check_reference_checkpoints(checkpoints: dict[str, str | os.PathLike[str]],
                                references: Sequence[str]) -> dict[str, Path]:
    out = {}
    for name, path in checkpoints.items():
        if name not in references:
            raise ValueError(f"reference checkpoint {name!r}: not among the references {list(references)}")
        if not Path(path).expanduser().is_file():
            raise ValueError(f"reference checkpoint {name!r}: no file {str(path)!r}")
        out[name] = Path(path).expanduser()
    return out


def input_profile_strides(facts: ExperimentFacts) -> tuple[int, ...] | None:
    """The strides of the search space's input profile (the small-input adaptation)."""
    from ..space import load_space

    if facts.space is not None:
        return tuple(int(s) for s in facts.space.input_profile.strides)
    if not facts.supernet or not facts.input_profile:
        return None
    space = load_space(facts.supernet, input_profile=facts.input_profile)
    return tuple(int(s) for s in space.input_profile.strides)


def runnable_resolution(model: nn.Module, resolution: int) -> tuple[int, str]:
    """`resolution` if the model runs there, else the smallest larger one it runs at (with a note)."""
    import torch

    failure = ""
    for r in (resolution, *(r for r in FALLBACK_RESOLUTIONS if r > resolution)):
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, r, r))
        except Exception as exc:  # shape errors differ per model: any failure means "not at this size"
            failure = failure or f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            continue
        if r == resolution:
            return r, ""
        return r, f"measured at {r} px: does not run at {resolution} px ({failure})"
    raise ValueError(f"model does not run at {resolution} px nor at {list(FALLBACK_RESOLUTIONS)} ({failure})")


def load_reference_weights(model: nn.Module, path: Path) -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"reference checkpoint {str(path)!r} does not fit the model: "
                         f"{str(exc).splitlines()[0]}") from None


def reference_candidates(references: Sequence[str], checkpoints: dict[str, Path], facts: ExperimentFacts,
                         resolution: int, data_dir: str | None, eval_batches: int | None,
                         train_dir: Path | None = None, log: Log = print) -> list[Candidate]:
    """The references, built by timm name; with `train_dir`, each one without a checkpoint is first
    trained there with the supernets' recipe (`autovit_ray.training.reference`, resumable)."""
    import torch

    from ..evaluation import evaluate
    from ..training.reference import ReferenceSpec, build_reference, train_reference

    strides = input_profile_strides(facts)
    out = []
    for name in references:
        if facts.num_classes is None:
            raise ValueError(f"cannot build reference {name}: no searched, registered or stand-alone model "
                             "gave the number of classes")
        model, note = build_reference(name, facts.num_classes, strides)
        r, size_note = runnable_resolution(model, resolution)
        trained_note = ""
        if name not in checkpoints and train_dir is not None:
            cfg = _training_config(facts, data_dir)
            limit = cfg.train.max_steps_per_epoch
            log(f"training {name} with the supernets' recipe ({cfg.train.epochs} epochs"
                f"{f' of at most {limit} steps' if limit else ''}) in {train_dir / name}")
            checkpoints = {**checkpoints, name: train_reference(
                cfg, ReferenceSpec(name, r, strides), train_dir / name, log=log)}
            trained_note = f"trained here with the supernets' recipe ({cfg.train.epochs} epochs)"
        top1: float | None = None
        if name in checkpoints:
            load_reference_weights(model, checkpoints[name])
            top1 = evaluate(model, _test_loader(facts, data_dir), resolution=r, device=torch.device("cpu"),
                            max_batches=eval_batches).top1
        adapted = (f" ({facts.input_profile} strides)" if note.startswith("strides")
                   else f" (stem stride {strides[0]})" if note.startswith("stem stride") and strides else "")
        label = name + adapted + (f" @{r}px" if r != resolution else "")
        out.append(Candidate(name=label, kind="reference", model=model.eval(), resolution=r, test_top1=top1,
                             note="; ".join(n for n in (note, size_note, trained_note) if n),
                             extra={"timm_name": name, "checkpoint": str(checkpoints.get(name, ""))}))
    return out


def standalone_candidates(checkpoints: Sequence[str | os.PathLike[str]], facts: ExperimentFacts,
                          searched: Sequence[Candidate], data_dir: str | None, eval_batches: int | None
                          ) -> list[Candidate]:
    """Subnets trained stand-alone from scratch (`train --arch`: a checkpoint whose space holds one
    arch), with their own BatchNorm statistics, tested on the experiment's test split. One that is a
    searched model's arch is named after it (`<search>-top1-standalone`) and takes its LUT latency."""
    import torch

    from ..checkpoint import load_supernet, read_record
    from ..data import dataset_record
    from ..evaluation import evaluate

    out: list[Candidate] = []
    experiment_data, test_loader = None, None  # once facts name the experiment's checkpoint
    for path in checkpoints:
        record = read_record(path)  # a clear error for what is not a checkpoint, before loading tensors
        supernet, space, cfg = load_supernet(path)
        if space.size() != 1:
            raise ValueError(f"--standalone {str(path)!r} is a checkpoint of supernet {space.name!r} with "
                             f"{space.size():,} subnets: expected one of `python -m autovit_ray.train --arch` "
                             "(one subnet trained alone)")
        arch = space.largest()
        num_classes, input_profile = record.num_classes, space.input_profile.name
        # no search or registered model: the first stand-alone one names the experiment
        facts.fill(num_classes=num_classes, input_profile=input_profile, checkpoint=str(path), space=space)
        if (num_classes, input_profile) != (facts.num_classes, facts.input_profile):
            raise ValueError(f"--standalone {str(path)!r} has {num_classes} classes under input profile "
                             f"{input_profile!r}; the searched models have {facts.num_classes} under "
                             f"{facts.input_profile!r}")
        if experiment_data is None:
            experiment_data = dataset_record(_training_config(facts, data_dir).data)
            test_loader = _test_loader(facts, data_dir)
        _check_same_data(cfg, experiment_data, data_dir, f"--standalone {str(path)!r}")
        assert test_loader is not None  # built with experiment_data, for the first checkpoint
        model = supernet.get_active_subnet(arch).eval()
        result = evaluate(model, test_loader, resolution=arch.resolution, device=torch.device("cpu"),
                          max_batches=eval_batches)
        twin = next((c for c in searched if c.extra.get("arch_hash") == arch.arch_hash), None)
        epochs = record.epoch
        out.append(Candidate(
            name=f"{twin.name}-standalone" if twin else f"{arch.supernet}-{arch.arch_hash[:8]}-standalone",
            kind="searched", model=model, resolution=arch.resolution, test_top1=result.top1,
            lut_latency_ms=twin.lut_latency_ms if twin else None,
            note=f"trained stand-alone from scratch ({epochs} of {cfg.train.epochs} epochs)",
            extra={"arch": str(arch), "arch_hash": arch.arch_hash, "checkpoint": str(path)}))
    return out


def _check_same_data(cfg: Any, ours: dict[str, Any], data_dir: str | None, what: str) -> None:
    """`cfg` (a model's training config) used the experiment's data set and splits (`ours`, its
    `dataset_record`): otherwise its test top-1 is not comparable, or its training images may be the
    test images."""
    from ..data import dataset_record

    if data_dir:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=data_dir))
    theirs = dataset_record(cfg.data)
    if theirs["digest"] != ours["digest"]:
        raise ValueError(f"{what} was trained on {theirs['name']} with splits {theirs['sizes']} (digest "
                         f"{theirs['digest']}); the experiment's models on {ours['name']} with {ours['sizes']} "
                         f"(digest {ours['digest']}): expected the same data set and splits")


def _training_config(facts: ExperimentFacts, data_dir: str | None) -> Any:
    """The supernets' training config (from the searched checkpoint), with `data_dir` if given."""
    from ..checkpoint import read_record
    from ..training.config import config_from_dict

    if not facts.checkpoint:
        raise ValueError("cannot train or evaluate a reference: the searches logged no supernet checkpoint")
    cfg = config_from_dict(read_record(facts.checkpoint).config)
    if data_dir:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=data_dir))
    return cfg


def _test_images(facts: ExperimentFacts, data_dir: str | None) -> int | None:
    """The size of the experiment's test split (None when the searches logged no checkpoint)."""
    from ..data import make_splits

    if not facts.checkpoint:
        return None
    return len(make_splits(_training_config(facts, data_dir).data).test)


def _test_loader(facts: ExperimentFacts, data_dir: str | None) -> Any:
    """The experiment's test split (at the data set's own resolution; resized per model)."""
    from ..data import build_loader

    return build_loader(_training_config(facts, data_dir).data, "test")


# ---------------------------------------------------------------------------------------------------
# Measuring


def measure_macs(model: nn.Module, resolution: int) -> int:
    """Multiply-accumulates of one image, measured on the built model (torch's flop counter / 2: the
    same counter for every model, references included; for a subnet of a space it equals the analytic
    `autovit_ray.plan.count_macs`, tests/test_supernet.py)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    return int(counter.get_total_flops() // 2)


def measure(candidates: Sequence[Candidate], backend_name: str, repeats: int, rounds: int, seed: int,
            log: Log, backend: Any = None) -> tuple[list[Any], dict[str, Any]]:
    """LatencyStats per candidate, all on one backend (`backend`, else `backend_name` with its
    default settings), rounds interleaved in random order."""
    from ..latency import get_backend, measure_models

    backend = backend or get_backend(backend_name)
    backend.check_available()
    per_round = max(1, math.ceil(repeats / rounds))
    log(f"measuring {len(candidates)} models on {backend_name}: {rounds} interleaved rounds x "
        f"{per_round} samples each")
    stats = measure_models(backend, [(c.model, (1, 3, c.resolution, c.resolution)) for c in candidates],
                           rounds, per_round, seed, calibrate=True)
    return stats, backend.fingerprint()


@dataclasses.dataclass(frozen=True)
class ReferenceBudget:
    """A reference model's measured latency in a latency table's ms (the search's latency budget)."""

    reference: str
    table_ms: float  # the budget: measured_ms x ratio
    measured_ms: float  # the reference, median on the table's backend
    ratio: float  # median (LUT prediction / measured) of the random subnets measured beside it
    subnets: int


def budget_reference(reference: str, space: Any, num_classes: int) -> tuple[nn.Module, int]:
    """(`reference` built as a latency budget times it, the resolution it runs at): a timm name with fresh
    weights, adapted to the space's input profile as in the comparison, at the space's largest resolution.
    One ValueError for an unknown name or a model that does not run there."""
    from ..training.reference import build_reference

    model, _ = build_reference(reference, num_classes, tuple(space.input_profile.strides))
    resolution = max(space.resolutions)
    r, _ = runnable_resolution(model, resolution)
    if r != resolution:
        raise ValueError(f"reference {reference!r} does not run at the searched models' {resolution} px: "
                         "it cannot set their latency budget")
    return model.eval(), resolution


def reference_latency_budget(reference: str, table: Any, space: Any, num_classes: int, subnets: int = 12,
                             rounds: int = 10, repeats: int = 5, seed: int = 0) -> ReferenceBudget:
    """`reference` (a timm name, adapted to the space's input profile as in the comparison) timed beside
    `subnets` random archs of `space` on the table's backend; the subnets' median LUT/measured ratio
    converts its time into table ms (a table predicts a sum of isolated blocks, not a whole model's clock)."""
    import random
    import statistics

    import timm

    import autovit_ray.models  # noqa: F401 - registers "autovit" in timm

    from ..latency import backend_from_settings

    model, resolution = budget_reference(reference, space, num_classes)
    rng = random.Random(f"reference-budget/{seed}")
    archs = [space.sample(rng) for _ in range(subnets)]
    models = [timm.create_model("autovit", arch=a, num_classes=num_classes, space=space).eval() for a in archs]
    backend = backend_from_settings(table.backend, table.backend_settings)
    stats, _ = measure([Candidate(str(a), "searched", m, a.resolution) for a, m in zip(archs, models)]
                       + [Candidate(reference, "reference", model, resolution)], table.backend, rounds * repeats,
                       rounds, seed, lambda _: None, backend)
    ratio = statistics.median(table.predict_latency(a) / st.median_ms for a, st in zip(archs, stats))
    measured = stats[-1].median_ms
    return ReferenceBudget(reference, measured * ratio, measured, ratio, subnets)


# ---------------------------------------------------------------------------------------------------
# The table, its files and the MLflow run


def make_rows(candidates: Sequence[Candidate], stats: Sequence[Any]) -> list[dict[str, Any]]:
    baseline = next((s.median_ms for c, s in zip(candidates, stats) if c.kind == "reference"), stats[0].median_ms)
    rows = []
    for c, s in zip(candidates, stats):
        rows.append({
            "model": c.name, "kind": c.kind, "resolution": c.resolution,
            "test_top1": c.test_top1 if c.test_top1 is not None else (NOT_TRAINED if c.kind == "reference" else None),
            "params": sum(p.numel() for p in c.model.parameters()), "macs": measure_macs(c.model, c.resolution),
            "lut_latency_ms": c.lut_latency_ms, "latency_ms": s.median_ms, "latency_p10_ms": s.p10_ms,
            "latency_p90_ms": s.p90_ms, "latency_ratio": s.median_ms / baseline, "samples": s.samples,
            "note": c.note, **c.extra})
    return rows


def verdict(rows: Sequence[dict[str, Any]], backend: str, test_images: int | None = None,
            paired: dict[str, dict[str, Any]] | None = None) -> str | None:
    """One sentence: do searched models beat the first trained reference (higher test top-1 at equal or
    lower measured latency)? None when there is no trained reference or no searched top-1.

    `paired`: {searched model: `stats.paired_difference` against the reference on the same test images}.
    With it, "beats" means the 95 % paired interval lies above zero and McNemar's p is under 0.05
    (`significant`), and a higher top-1 that is not significant is called no significant difference.
    Without it, the point estimates decide and, with `test_images`, the difference is also given in
    images (is it one image?)."""
    ref = next((r for r in rows if r["kind"] == "reference" and isinstance(r["test_top1"], (int, float))), None)
    searched = [r for r in rows if r["kind"] == "searched" and isinstance(r["test_top1"], (int, float))]
    if ref is None or not searched:
        return None
    fast = [r for r in searched if r["latency_ms"] <= ref["latency_ms"]]
    if paired is not None:
        winners = [r for r in fast if r["model"] in paired and paired[r["model"]]["significant"]
                   and paired[r["model"]]["difference"] > 0]
    else:
        winners = [r for r in fast if r["test_top1"] > ref["test_top1"]]
    # without a paired test the most accurate overall is named; with one, the most accurate in budget
    best = max(winners or (fast if paired is not None else []) or searched, key=lambda r: r["test_top1"])
    detail = ""
    if paired is not None and best["model"] in paired:
        d = paired[best["model"]]
        detail = (f", {d['difference']:+.2f} points [95% paired interval {d['low']:+.2f}, {d['high']:+.2f}; "
                  f"McNemar p = {d['mcnemar_p']:.2g}] on {d['images']} test images")
    elif test_images:
        detail = f", {round((best['test_top1'] - ref['test_top1']) * test_images / 100):+d} of {test_images} test images"
    numbers = (f"{best['model']} has {best['test_top1']:.2f}% test top-1 against {ref['test_top1']:.2f}%{detail}, at "
               f"{best['latency_ms'] / ref['latency_ms']:.2f}x its measured latency "
               f"({best['latency_ms']:.3f} vs {ref['latency_ms']:.3f} ms)")
    if winners:
        how = "a higher test top-1, its paired interval above zero," if paired is not None else "higher test top-1"
        return (f"On this machine ({backend}), {len(winners)} of {len(searched)} searched models beat "
                f"{ref['model']} ({how} at equal or lower latency): {numbers}.")
    if paired is not None and best in fast and best["test_top1"] > ref["test_top1"]:
        return (f"On this machine ({backend}), no searched model beats {ref['model']} significantly: the most "
                f"accurate at equal or lower latency, {numbers}: no significant difference.")
    return (f"On this machine ({backend}), no searched model beats {ref['model']} (higher test top-1 at equal "
            f"or lower latency): the most accurate{' at equal or lower latency' if paired is not None and best in fast else ''}, "
            f"{numbers}.")


def paired_tests(candidates: Sequence[Candidate], rows: Sequence[dict[str, Any]], facts: ExperimentFacts,
                 data_dir: str | None) -> dict[str, dict[str, Any]] | None:
    """Each searched model against the first trained reference on the same test images
    (`stats.paired_difference`); None when the experiment's test split cannot be read here."""
    from ..evaluation import evaluate
    from ..stats import paired_difference

    ref = next((c for c, r in zip(candidates, rows) if r["kind"] == "reference"
                and isinstance(r["test_top1"], (int, float))), None)
    searched = [c for c, r in zip(candidates, rows) if r["kind"] == "searched" and isinstance(r["test_top1"], (int, float))]
    if ref is None or not searched or not facts.checkpoint:
        return None
    loader = _test_loader(facts, data_dir)

    def correct_per_image(c: Candidate) -> tuple[bool, ...]:
        return evaluate(c.model, loader, resolution=c.resolution, per_image=True).correct_per_image

    reference = correct_per_image(ref)
    return {c.name: paired_difference(correct_per_image(c), reference) for c in searched}


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    return format(value, fmt) if isinstance(value, (int, float)) else str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    width = max(len("model"), *(len(r["model"]) for r in rows))
    lines = [f"{'model':<{width}}  {'test top1':>16}  {'params':>8}  {'MACs':>8}  {'LUT ms':>7}  "
             f"{'latency ms':>10}  {'ratio':>6}"]
    for r in rows:
        lines.append(f"{r['model']:<{width}}  {_cell(r['test_top1'], '.2f'):>16}  {r['params'] / 1e6:7.3f}M  "
                     f"{r['macs'] / 1e6:7.2f}M  {_cell(r['lut_latency_ms'], '.3f'):>7}  {r['latency_ms']:10.4f}  "
                     f"{r['latency_ratio']:6.2f}")
    notes = [f"  {r['model']}: {r['note']}" for r in rows if r["note"]]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def write_outputs(rows: Sequence[dict[str, Any]], out: Path, meta: dict[str, Any]) -> dict[str, Path]:
    from ..io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys([*COLUMNS, *(k for r in rows for k in r)]))
    with tempfile.NamedTemporaryFile("w", newline="", dir=out, suffix=".csv", delete=False) as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    paths = {"csv": out / "compare.csv", "json": out / COMPARE_JSON, "png": out / COMPARE_PNG}
    os.replace(f.name, paths["csv"])
    atomic_write_text(paths["json"], json.dumps({**meta, "rows": list(rows)}, indent=2, default=str))
    plot(rows, paths["png"], meta.get("backend", ""))
    return paths


def plot(rows: Sequence[dict[str, Any]], path: Path, backend: str) -> None:
    """Test top-1 vs measured latency; a reference without a test top-1 is a dashed vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        top1 = r["test_top1"] if isinstance(r["test_top1"], (int, float)) else None
        marker = "o" if r["kind"] == "searched" else "s"
        if top1 is None:
            ax.axvline(r["latency_ms"], color="gray", linestyle="--", linewidth=1)
            ax.annotate(f"{r['model']} ({NOT_TRAINED})", (r["latency_ms"], 0.02), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, color="gray")
        else:
            ax.scatter([r["latency_ms"]], [top1], marker=marker, color="C0" if r["kind"] == "searched" else "C3")
            ax.annotate(r["model"], (r["latency_ms"], top1), fontsize=7)
    ax.set_xlabel(f"measured latency (ms, {backend}, median)")
    ax.set_ylabel("test top-1 (%)")
    fig.tight_layout()
    atomic = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(atomic, dpi=120)
    plt.close(fig)
    os.replace(atomic, path)


def log_run(client: Any, experiment_id: str, rows: Sequence[dict[str, Any]], paths: dict[str, Path],
            params: dict[str, Any], summary: str | None = None) -> str:
    import re

    tags = {"role": "compare", **({"summary": summary} if summary else {})}
    run = client.create_run(experiment_id, run_name="compare", tags=tags)
    run_id = run.info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, str(value)[:6000])
    for r in rows:
        key = re.sub(r"[^0-9A-Za-z_\-./ ]", "_", r["model"])
        client.log_metric(run_id, f"{key}/latency_ms", float(r["latency_ms"]))
        client.log_metric(run_id, f"{key}/latency_ratio", float(r["latency_ratio"]))
        if isinstance(r["test_top1"], (int, float)):
            client.log_metric(run_id, f"{key}/test_top1", float(r["test_top1"]))
    for path in paths.values():
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ---------------------------------------------------------------------------------------------------
# Entry points


def compare_argv(cfg: CompareConfig) -> list[str]:
    """The `python -m autovit_ray.compare` arguments of `cfg` (what the pipeline logs)."""
    argv = ["--experiment", cfg.experiment, "--references", ",".join(cfg.references), "--backend", cfg.backend,
            "--repeats", str(cfg.repeats), "--rounds", str(cfg.rounds), "--seed", str(cfg.seed)]
    optional = {"--mlflow-uri": cfg.mlflow_uri, "--out": cfg.out, "--data-dir": cfg.data_dir,
                "--eval-batches": cfg.eval_batches, "--searches": None if cfg.searches is None else ",".join(cfg.searches),
                "--models": ",".join(cfg.models) or None}
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    for name, path in cfg.reference_checkpoints:
        argv += ["--reference-checkpoint", f"{name}={path}"]
    for path in cfg.standalone:
        argv += ["--standalone", path]
    return argv + (["--train-references"] if cfg.train_references else [])


def compare_experiment(cfg: CompareConfig, log: Log = print) -> list[dict[str, Any]]:
    """Measure an experiment's searched models against `cfg.references` on one backend; print, write
    (compare.csv / .json / .png under `cfg.out`) and log to a new MLflow run "compare". Returns the rows.
    `train_references`: a reference without a checkpoint is first trained with the supernets' recipe
    in `<experiment dir>/references/<name>` (resumed when rerun). `standalone`: checkpoints of
    `train --arch` (subnets trained alone from scratch), measured and tested as searched models."""
    from ..adapters import mlflow_client

    experiment, backend, repeats, rounds, seed = cfg.experiment, cfg.backend, cfg.repeats, cfg.rounds, cfg.seed
    data_dir, eval_batches, models, standalone = cfg.data_dir, cfg.eval_batches, cfg.models, cfg.standalone
    references = [r for r in cfg.references if r]
    checkpoints = check_reference_checkpoints(dict(cfg.reference_checkpoints), references)
    uri, experiment_name, experiment_dir = resolve_experiment(str(experiment), cfg.mlflow_uri)
    if cfg.out is None and experiment_dir is None:
        raise ValueError("--out is required when --experiment is an MLflow experiment name")
    out_dir = Path(cfg.out) if cfg.out is not None else Experiment(experiment_dir).compare_dir  # type: ignore[arg-type]
    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment_name)
    if found is None:
        raise ValueError(f"no MLflow experiment {experiment_name!r} in {uri}")
    runs = search_runs(client, found.experiment_id, cfg.searches)
    if not runs and not models and not standalone:
        raise ValueError(f"no finished search in MLflow experiment {experiment_name!r} ({uri}); "
                         "run `python -m autovit_ray.search` first")
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        candidates, facts = searched_candidates(client, runs, Path(tmp))
        candidates += registered_candidates(models, uri, Path(tmp), facts)
    candidates += standalone_candidates(standalone, facts, candidates, data_dir, eval_batches)
    if not candidates:
        raise ValueError(f"the searches in {experiment_name!r} reported no best models")
    train_dir = Experiment(experiment_dir or out_dir).references_dir if cfg.train_references else None
    candidates += reference_candidates(references, checkpoints, facts, candidates[0].resolution, data_dir,
                                       eval_batches, train_dir, log)
    stats, fingerprint = measure(candidates, backend, repeats, rounds, seed, log)
    rows = make_rows(candidates, stats)
    log(format_table(rows))
    summary = verdict(rows, backend, _test_images(facts, data_dir), paired_tests(candidates, rows, facts, data_dir))
    if summary:
        log(summary)
    meta = {"experiment": str(experiment), "tracking_uri": uri, "backend": backend, "repeats": repeats,
            "rounds": rounds, "seed": seed, "device": fingerprint, "searches": [r.info.run_id for r in runs],
            "models": list(models), "standalone": [str(p) for p in standalone], "summary": summary}
    paths = write_outputs(rows, out_dir, meta)
    run_id = log_run(client, found.experiment_id, rows, paths, {
        "backend": backend, "repeats": repeats, "rounds": rounds, "seed": seed,
        "references": ",".join(references), "searches": ",".join(r.data.tags.get("search_name", "") for r in runs),
        "num_classes": facts.num_classes, "resolution": candidates[0].resolution}, summary)
    log(f"wrote {', '.join(str(p) for p in paths.values())}; MLflow run {run_id} (compare) in {experiment_name!r}")
    return rows


__all__ = [
    "CompareConfig", "DEFAULT_REFERENCES", "ExperimentFacts", "compare_argv", "ReferenceBudget", "budget_reference",
    "compare_experiment", "format_table", "reference_latency_budget", "search_space", "write_outputs",
]
