"""`SearchConfig`: every setting of one search, typed and validated once. The CLI
(`python -m autovit_ray.search`) builds it from its flags (their defaults come from here), the
pipeline and the Python API build it directly; `autovit_ray.search.driver.run` takes it. Pure Python.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from ..config import build_dataclass, coerce, type_hints
from .algorithms import STRATEGIES


@dataclass(frozen=True)
class SearchConfig:
    """One search of one trained supernet (flags of the same names, with '-' for '_')."""

    name: str  # Tune experiment and MLflow parent run
    checkpoint: str  # a supernet checkpoint directory, or an experiment directory with `supernet`
    supernet: str | None = None
    lut: str | None = None  # latency table (.parquet)
    params_budget: float | None = None  # T_p
    latency_budget_ms: float | None = None  # T_l (needs `lut`)
    # the best models must also measure within this on the table's backend and device (search.measured)
    measured_latency_budget_ms: float | None = None
    measured_candidates: int = 10  # the best archs by validation timed for the measured budget
    # or a measured budget of measured_budget_factor x this timm model's latency, timed beside the candidates
    measured_budget_reference: str | None = None
    measured_budget_factor: float = 1.0
    strategy: str = "coarse-to-fine"  # a name of the registry algorithms.STRATEGIES
    population: int = 50
    generations: int = 20
    parents: int = 10
    coarse_samples: int = 2000  # random archs screened by the coarse stage
    skeletons: int = 10  # K skeletons kept by the coarse stage
    max_evaluations: int | None = None  # default: population x generations
    evaluators: int = 2  # evaluator actors (supernet replicas)
    cpus_per_evaluator: float | None = None  # default: the free CPUs shared by the evaluators (<= 1 each)
    threads_per_evaluator: int = 1
    gpus_per_evaluator: float = 0.0  # GPUs per evaluator actor (fractions share a GPU); 0: evaluate on CPU
    eval_timeout_s: float | None = None  # one evaluation longer: its actor is restarted, the request resent (None: derived)
    concurrent_trials: int | None = None  # default: 2 x evaluators
    eval_batches: int | None = None  # validation batches per candidate (default all; the test report reads all)
    calib_batches: int | None = None  # BN recalibration batches (default all)
    calib_size: int | None = None  # BN recalibration images, from the training split (default: the checkpoint's)
    val_half: int | None = None  # select on this fixed half (0 / 1) of the validation split, report the other
    data_dir: str | None = None  # override the checkpoint's data directory
    eval_cache: str | None = None  # evaluations store (default <output>/search/eval_cache.sqlite)
    no_eval_cache: bool = False  # evaluate every candidate, store nothing
    top_k: int = 3  # best models reported on the test split and exported
    export_formats: tuple[str, ...] = ("torchscript", "onnx", "coreml")
    registered_model_name: str | None = None  # default: autovit-<training name>-<supernet>
    no_register: bool = False  # log the MLflow Models but register nothing
    seed: int = 0
    output_dir: str | None = None  # default: the checkpoint's experiment directory
    mlflow_uri: str | None = None  # default: $MLFLOW_TRACKING_URI or sqlite in the output dir
    address: str | None = None  # Ray address (default: $RAY_ADDRESS or a local Ray)
    num_cpus: int | None = None  # CPUs for a local Ray
    new_run: bool = False  # when `name` exists with another identity: a fresh parent run, not an error

    def __post_init__(self) -> None:
        if isinstance(self.params_budget, str):  # the Python API may say "1.8M" too
            object.__setattr__(self, "params_budget", count(self.params_budget))
        hints = type_hints(SearchConfig)
        for f in dataclasses.fields(self):  # the Python API may pass ints for floats, lists for tuples
            object.__setattr__(self, f.name, coerce(getattr(self, f.name), hints[f.name], f.name))
        if self.strategy not in STRATEGIES and self.strategy not in STRATEGIES.renamed:
            raise ValueError(f"--strategy {self.strategy!r} is unknown: expected one of {list(STRATEGIES.names())}")
        object.__setattr__(self, "strategy", STRATEGIES.resolve(self.strategy, "--strategy"))
        if not self.name or "/" in self.name:
            raise ValueError(f"--name {self.name!r} is invalid: expected a non-empty search name without '/'")
        for name in ("population", "generations", "parents", "coarse_samples", "skeletons", "evaluators",
                     "threads_per_evaluator", "top_k", "max_evaluations", "concurrent_trials", "eval_batches",
                     "calib_batches", "calib_size", "num_cpus", "measured_candidates"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{flag(name)} must be >= 1, got {value}")
        for name in ("params_budget", "latency_budget_ms", "measured_latency_budget_ms", "measured_budget_factor",
                     "cpus_per_evaluator", "eval_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{flag(name)} must be positive, got {value}")
        if self.gpus_per_evaluator < 0:
            raise ValueError(f"--gpus-per-evaluator must be >= 0 (0: CPU evaluators), got {self.gpus_per_evaluator}")
        if self.val_half not in (None, 0, 1):
            raise ValueError(f"--val-half must be 0 or 1 (a fixed half of the validation split), got {self.val_half}")
        if self.latency_budget_ms is not None and not self.lut:
            raise ValueError("--latency-budget-ms needs --lut (the latency table that predicts it)")
        if self.measured_latency_budget_ms is not None and self.measured_budget_reference is not None:
            raise ValueError("--measured-latency-budget-ms and --measured-budget-reference are both set: expected "
                             "one (a budget in ms, or a model whose measured latency is the budget)")
        if self.measured_budget_factor != 1.0 and self.measured_budget_reference is None:
            raise ValueError(f"--measured-budget-factor {self.measured_budget_factor:g} needs "
                             "--measured-budget-reference (the model whose measured latency it multiplies)")
        for name in ("measured_latency_budget_ms", "measured_budget_reference"):
            if getattr(self, name) is not None and not self.lut:
                raise ValueError(f"{flag(name)} needs --lut (its backend and device time the candidates)")

    @property
    def measured_budget(self) -> bool:
        """Whether the best models must also meet a measured latency budget (`search.measured`)."""
        return self.measured_latency_budget_ms is not None or self.measured_budget_reference is not None

    def with_absolute_paths(self) -> SearchConfig:
        """The same search with its file paths absolute. Tune runs each trial in a folder of its own and
        actors may start elsewhere: a path relative to the caller's directory must not travel."""
        @overload
        def absolute(path: str) -> str: ...
        @overload
        def absolute(path: str | None) -> str | None: ...
        def absolute(path: str | None) -> str | None:
            return None if path is None else str(Path(path).expanduser().resolve())

        return dataclasses.replace(self, checkpoint=absolute(self.checkpoint), lut=absolute(self.lut),
                                   data_dir=absolute(self.data_dir), eval_cache=absolute(self.eval_cache),
                                   output_dir=absolute(self.output_dir))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchConfig:
        """From a nested dict (YAML, `--set` overrides): unknown fields and bad values get one clear error."""
        values = dict(values)
        if isinstance(values.get("params_budget"), str):  # YAML / --set may say 1.8M
            values["params_budget"] = count(values["params_budget"])
        return build_dataclass(cls, values, "")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SearchConfig:
        return cls.from_dict({f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def to_argv(self) -> list[str]:
        """The flags of `python -m autovit_ray.search` that give this config (defaults left out)."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default
            if value == default or value is None:
                continue
            if isinstance(value, bool):
                argv.append(flag(f.name))
            elif isinstance(value, tuple):
                argv += [flag(f.name), ",".join(value)]
            else:
                argv += [flag(f.name), repr(value) if isinstance(value, float) else str(value)]
        return argv


def count(text: str) -> float:
    """'1.8M' -> 1.8e6, '900k' -> 9e5, '1500000' -> 1.5e6; one ValueError otherwise."""
    units = {"k": 1e3, "m": 1e6, "g": 1e9}
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise ValueError(f"expected a count like 1.8M, 900k or 1500000, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"a budget must be positive, got {text!r}")
    return value


def flag(field_name: str) -> str:
    """The CLI flag of a SearchConfig field: max_evaluations -> --max-evaluations."""
    return "--" + field_name.replace("_", "-")


DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(SearchConfig)}

# Fields that change neither which candidates a search proposes nor what their evaluations give: left
# out of its identity (`autovit_ray.search.driver.search_identity`). Paths (`checkpoint`, `lut`,
# `data_dir`) are there by content instead: the checkpoint's digest, the LUT's, the split's.
NOT_IN_IDENTITY = frozenset({
    "name", "checkpoint", "lut", "data_dir", "evaluators", "cpus_per_evaluator", "threads_per_evaluator", "gpus_per_evaluator",
    "eval_timeout_s",
    "concurrent_trials", "eval_cache", "no_eval_cache", "top_k", "export_formats", "registered_model_name",
    # they choose among the evaluations, after the search
    "measured_latency_budget_ms", "measured_candidates", "measured_budget_reference", "measured_budget_factor",
    "no_register", "output_dir", "mlflow_uri", "address", "num_cpus", "new_run",
})

# Settings added after searches were made: an identity holds them only when set, so that a search begun
# before one existed resumes, and a pipeline's search stage stays up to date.
IN_IDENTITY_WHEN_SET = frozenset({"calib_size"})


def identity_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The search settings an identity holds: not `NOT_IN_IDENTITY`, nor `IN_IDENTITY_WHEN_SET` unset."""
    return {k: v for k, v in settings.items()
            if k not in NOT_IN_IDENTITY and not (k in IN_IDENTITY_WHEN_SET and v is None)}


__all__ = ["DEFAULTS", "IN_IDENTITY_WHEN_SET", "NOT_IN_IDENTITY", "SearchConfig", "count", "identity_settings"]
