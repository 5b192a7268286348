"""The whole pipeline (train -> profile -> search -> [retrain] -> compare) over one experiment folder, each
stage reused while its fingerprint holds: the library of `python -m autovit_ray.pipeline` (its manual is
the docstring of autovit_ray/pipeline/cli.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..adapters import connect_ray, default_tracking_uri
from ..config import packaged_configs
from ..experiment import Experiment
from ..io import atomic_write_text
from ..progress import duration
from ..search.config import SearchConfig, count, identity_settings

CONFIG_DIR = packaged_configs("pipeline")
STAGES = ("train", "profile", "search", "retrain", "compare")
DEFAULT_STAGES = ("train", "profile", "search", "compare")  # retrain is opt-in: a second training


class PipelineError(RuntimeError):
    """A stage failed; the message names the stage and what to look at."""


# ---------------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class TrainStage:
    config: str = "digits"  # a configs/train name or a YAML path
    set: tuple[str, ...] = ()  # `--set section.field=value` overrides of that config
    budget_s: float = 600.0  # expected wall time; the summary flags a stage that ran over


@dataclass(frozen=True)
class ProfileStage:
    backend: str = "torch-cpu"
    resolutions: tuple[int, ...] = ()  # empty: every resolution of the input profile
    rounds: int = 10
    repeats: int = 1
    references: int = 100
    threads: int = 1  # torch-cpu / onnxruntime
    compute_units: str | None = None  # coreml (macOS): ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE
    remote_command: str | None = None  # remote: a command template, see docs/latency.md
    export_format: str | None = None  # remote: onnx (default), coreml, torchscript
    # any other option of the backend (its constructor's parameters) as NAME=VALUE, e.g. warmup=10: the
    # pipeline's `profile --backend-option`; it overrides the fields above
    backend_options: tuple[str, ...] = ()
    quiet_cpus: float = 0.3  # negative: time rounds regardless of other processes' load
    quiet_wait_s: float = 60.0
    budget_s: float = 3600.0


# The search stage's settings are SearchConfig's (one definition: names, types, defaults), less the ones
# the pipeline sets per search, plus the pipeline's own: budgets left unset are the `auto_quantile` of
# 1,000 random archs, or multiples of a reference model's latency and parameters, and `budget_s` is the
# stage's expected wall time.
PER_SEARCH_FIELDS = ("name", "checkpoint", "supernet", "lut", "output_dir", "mlflow_uri", "address", "num_cpus",
                     "data_dir")
# Rules that only set the budgets: a search's fingerprint holds the budgets they give, not the rules (so
# the fingerprints of searches made before these fields existed hold).
BUDGET_FACTORS = ("latency_budget_factor", "params_budget_factor")
if TYPE_CHECKING:
    class SearchStage:
        """The class `make_dataclass` builds below, as mypy sees it (it cannot see fields made at run
        time): the fields the pipeline reads by name, typed as in SearchConfig and the list below (a test in
        tests/test_pipeline.py holds the two to the same names and types)."""

        seed: int
        strategy: str
        evaluators: int
        cpus_per_evaluator: float | None
        gpus_per_evaluator: float
        concurrent_trials: int | None
        params_budget: str | float | None
        latency_budget_ms: float | None
        auto_quantile: float
        latency_budget_reference: str | None
        latency_budget_factor: float
        params_budget_factor: float | None
        budget_s: float

        def __init__(self, **fields: Any) -> None: ...
else:
    SearchStage = dataclasses.make_dataclass(
        "SearchStage",
        [*((f.name, "str | float | None" if f.name == "params_budget" else f.type, field(default=f.default))
           for f in dataclasses.fields(SearchConfig) if f.name not in PER_SEARCH_FIELDS),
         ("auto_quantile", "float", field(default=0.5)),
         ("latency_budget_reference", "str | None", field(default=None)),
         ("latency_budget_factor", "float", field(default=1.0)),
         ("params_budget_factor", "float | None", field(default=None)),
         ("budget_s", "float", field(default=3600.0))],
        frozen=True, namespace={"__doc__": (
            "The pipeline's search settings: SearchConfig's shared fields, auto_quantile, "
            "latency_budget_reference (a timm model whose measured latency, times latency_budget_factor, is "
            "the latency budget), params_budget_factor (the params budget as a multiple of that reference's "
            "parameters) and budget_s (params_budget may be a count like '1.8M').")})
    SearchStage.__module__ = __name__


@dataclass(frozen=True)
class RetrainStage:
    """Each search's best arch trained stand-alone from scratch (`python -m autovit_ray.train --arch`):
    the train stage's config and overrides, then these (e.g. train.epochs=300)."""

    set: tuple[str, ...] = ()
    budget_s: float = 1800.0


@dataclass(frozen=True)
class CompareStage:
    references: tuple[str, ...] = ("mobilevit_xxs",)
    train_references: bool = False  # train each reference with the supernets' recipe (trained vs trained)
    backend: str = "torch-cpu"
    repeats: int = 100  # timed samples per model, split into `rounds` interleaved rounds
    rounds: int = 10
    budget_s: float = 600.0


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    output_dir: str = "outputs"
    supernets: tuple[str, ...] = ("xxs", "xs", "s")
    stages: tuple[str, ...] = DEFAULT_STAGES
    address: str | None = None  # Ray address; default $RAY_ADDRESS, else a local Ray
    num_cpus: int | None = None  # CPUs of a local Ray (default: all)
    mlflow_uri: str | None = None  # default $MLFLOW_TRACKING_URI, else sqlite in the experiment
    train: TrainStage = field(default_factory=TrainStage)
    profile: ProfileStage = field(default_factory=ProfileStage)
    search: SearchStage = field(default_factory=SearchStage)
    retrain: RetrainStage = field(default_factory=RetrainStage)
    compare: CompareStage = field(default_factory=CompareStage)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} is invalid: expected a non-empty name without '/'")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"stages {unknown} are unknown: expected some of {list(STAGES)}")
        if not self.supernets:
            raise ValueError("supernets is empty: expected e.g. [xxs, xs, s]")
        reference = self.search.latency_budget_reference
        for name in ("latency_budget_reference", "measured_budget_reference"):  # refused now, not after training
            model = getattr(self.search, name)
            if model is not None:
                import timm

                if not timm.is_model(model):
                    raise ValueError(f"search.{name} {model!r} is not a timm model: expected a name of "
                                     "timm.list_models(), e.g. mobilevit_xxs")
        factors = {name: getattr(self.search, name) for name in BUDGET_FACTORS}
        for name, value in factors.items():
            if value is not None and value <= 0:
                raise ValueError(f"search.{name} {value} is invalid: expected a positive multiple")
        if not reference and (factors != {"latency_budget_factor": 1.0, "params_budget_factor": None}):
            raise ValueError(f"search budget factors {factors} need search.latency_budget_reference: the model "
                             "whose latency and parameters they multiply")
        if self.search.params_budget_factor is not None and self.search.params_budget is not None:
            raise ValueError("search.params_budget and search.params_budget_factor are both set: expected one")
        if self.profile.backend_options:
            backend_options(self.profile)  # a misspelt option fails now, not after the training
        if not 0.0 < self.search.auto_quantile <= 1.0:
            raise ValueError(f"search.auto_quantile {self.search.auto_quantile} is invalid: expected 0 < q <= 1")
        # the search settings are checked now, by SearchConfig itself, not after the training stage
        shared = {f.name: getattr(self.search, f.name) for f in dataclasses.fields(SearchConfig)
                  if f.name not in PER_SEARCH_FIELDS}
        try:
            SearchConfig(name="check", checkpoint="check", lut="check", **shared)
        except ValueError as e:
            raise ValueError(f"search section: {e}") from None

    @property
    def experiment_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_pipeline_config(config: str, overrides: Sequence[str] = ()) -> PipelineConfig:
    """A validated PipelineConfig from a YAML file (or a configs/pipeline name) and `--set` overrides."""
    from ..config import build_dataclass, parse_override, read_yaml_mapping, resolve_config_path, set_path

    path = resolve_config_path(config, CONFIG_DIR, "pipeline")
    values = read_yaml_mapping(path, "pipeline")
    for text in overrides:
        set_path(values, *parse_override(text))
    if "name" not in values:
        raise ValueError(f"pipeline config {path} has no `name`: expected the experiment name")
    return build_dataclass(PipelineConfig, values, "")


# ---------------------------------------------------------------------------------------------------
# Fingerprints and stage records


def fingerprint(*parts: Any) -> str:
    """A stable 16-hex hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _settings(section: Any) -> dict[str, Any]:
    """A stage's settings that change its outputs (the time budget does not)."""
    return {k: v for k, v in dataclasses.asdict(section).items() if k != "budget_s"}


def profile_settings(section: ProfileStage) -> dict[str, Any]:
    """The profile settings a table's fingerprint holds; `backend_options` only when set, so that the
    tables of experiments made before the field existed stay up to date."""
    return {k: v for k, v in _settings(section).items() if k != "backend_options" or v}


def backend_options(section: ProfileStage) -> dict[str, Any]:
    """{option: value} of `section.backend_options`, each an option of its backend, or one ValueError."""
    from ..config import parse_override
    from ..latency import backend_class

    options = backend_class(section.backend).options()
    found = {}
    for text in section.backend_options:
        try:
            name, value = parse_override(text)
        except ValueError:
            raise ValueError(f"profile.backend_options entry {text!r} is invalid: expected NAME=VALUE, e.g. "
                             "warmup=10") from None
        if name not in options:
            raise ValueError(f"profile.backend_options entry {text!r}: {name!r} is not an option of backend "
                             f"{section.backend!r}; its options: {list(options)}")
        found[name] = value
    return found


def search_settings(section: Any) -> dict[str, Any]:
    """The search settings a search's fingerprint holds: how it runs (evaluators, their CPUs / GPUs,
    timeouts) does not make it another search, and the budget factors enter as the budgets they give. A
    measured latency budget is not part of a search's identity (it chooses among the evaluations), but it
    changes the stage's best models: here when set (so fingerprints made before it existed hold)."""
    settings = _settings(section)
    measured = {}
    if settings.get("measured_latency_budget_ms") is not None:
        measured = {k: settings[k] for k in ("measured_latency_budget_ms", "measured_candidates")}
    elif settings.get("measured_budget_reference") is not None:
        measured = {k: settings[k] for k in ("measured_budget_reference", "measured_budget_factor", "measured_candidates")}
    return {**{k: v for k, v in identity_settings(settings).items() if k not in BUDGET_FACTORS}, **measured}


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class StageTiming:
    stage: str
    status: str  # "ran", "reused", "partly reused" or "not selected"
    seconds: float
    budget_s: float

    @property
    def over_budget(self) -> bool:
        return self.status != "not selected" and self.seconds > self.budget_s


class Pipeline:
    """Runs the selected stages of one PipelineConfig; see the module docstring."""

    def __init__(self, cfg: PipelineConfig, force: Sequence[str] = (), log: Callable[[str], None] = print) -> None:
        bad = [s for s in force if s not in STAGES]
        if bad:
            raise ValueError(f"--force {bad} is unknown: expected some of {list(STAGES)}")
        self.cfg = cfg
        self.force = set(force)
        self.log = log
        self.exp_dir = cfg.experiment_dir.resolve()
        self.experiment = Experiment(self.exp_dir)
        self.records_dir = self.experiment.records_dir
        self.outputs: dict[str, Any] = {}
        self._ray_started = False

    # -- records -----------------------------------------------------------------------------------
    def _record_path(self, stage: str, supernet: str | None = None) -> Path:
        return self.records_dir / (f"{stage}-{supernet}.json" if supernet else f"{stage}.json")

    def _reusable(self, stage: str, supernet: str | None, fp: str) -> dict[str, Any] | None:
        """The stage's record when it finished with this fingerprint and is not forced."""
        path = self._record_path(stage, supernet)
        if stage in self.force or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # written atomically, so only a hand edit gets here: rerun the stage
        return record if record.get("fingerprint") == fp else None

    def _save_record(self, stage: str, supernet: str | None, fp: str, outputs: dict[str, Any]) -> None:
        record = {"stage": stage, "supernet": supernet, "fingerprint": fp, "outputs": outputs,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_text(self._record_path(stage, supernet), json.dumps(record, indent=1, default=str))

    # -- Ray -------------------------------------------------------------------------------------------
    def _ensure_ray(self) -> None:
        """One Ray for every stage (a local one unless an address is given), shut down at the end."""
        if connect_ray(self.cfg.address, self.cfg.num_cpus):  # None: Ray's detection (container limits)
            self._ray_started = True

    def close(self) -> None:
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    def resource_plan(self) -> Any:
        """The `placement.ResourcePlan` of the train stage's workers and the search stage's evaluators on
        the pipeline's Ray (started here when local)."""
        from .. import placement
        from ..adapters import cluster_node_groups
        from ..ray_train import plan_training
        from ..search.driver import evaluator_cpus

        self._ensure_ray()
        cluster = cluster_node_groups()
        trainers = plan_training(self.train_config(), list(self.cfg.supernets), cluster).supernets
        s = self.cfg.search
        cpus = evaluator_cpus(s.cpus_per_evaluator, s.evaluators, s.concurrent_trials)
        evaluators = placement.plan_evaluators(s.evaluators, cpus, s.gpus_per_evaluator, cluster)
        return placement.make_plan(cluster, trainers, evaluators)

    # -- helpers -----------------------------------------------------------------------------------
    def _command(self, module: str, argv: Sequence[str]) -> None:
        self.log(f"  $ python -m autovit_ray.{module} {shlex.join(argv)}")

    def train_config(self) -> Any:
        """The train stage's TrainConfig: the named config, the pipeline's name, folder and supernets,
        then train.set (the precedence of `python -m autovit_ray.train`; `train_argv` prints it)."""
        from ..training.config import load_config

        return load_config(self.cfg.train.config, self.cfg.train.set, {
            "name": self.cfg.name, "output_dir": self.cfg.output_dir, "supernets": list(self.cfg.supernets)})

    def train_argv(self) -> list[str]:
        """The `python -m autovit_ray.train` arguments of `train_config`, for the log only."""
        argv = ["--config", self.cfg.train.config, "--name", self.cfg.name, "--output-dir", self.cfg.output_dir,
                "--supernets", ",".join(self.cfg.supernets)]
        for item in self.cfg.train.set:
            argv += ["--set", item]
        return argv

    def spaces(self) -> dict[str, Any]:
        """{space name: SearchSpace} of the trained supernets, in config order."""
        from ..space import load_space

        cfg = self.train_config()
        spaces = [load_space(source, input_profile=cfg.input_profile) for source in cfg.supernets]
        return {space.name: space for space in spaces}

    def checkpoint(self, supernet: str) -> Path:
        from ..checkpoint import find_checkpoint

        try:
            return find_checkpoint(self.exp_dir, supernet, final=True)
        except ValueError as e:
            raise PipelineError(f"no finished {supernet} supernet in {self.exp_dir}: {e}; run the train "
                                "stage first") from None

    # -- stages ------------------------------------------------------------------------------------
    def run_train(self) -> str:
        from ..checkpoint import find_checkpoint
        from ..ray_train import run_training
        from ..training.config import fingerprint_dict

        train_cfg = self.train_config()
        fp = fingerprint("train", fingerprint_dict(train_cfg))
        record = self._reusable("train", None, fp)
        if record is not None:
            try:
                self.outputs["checkpoints"] = {s: str(find_checkpoint(self.exp_dir, s, final=True))
                                               for s in self.spaces()}
                self.log(f"train: up to date (fingerprint {fp}), reusing {self.experiment.checkpoints_dir}")
                return "reused"
            except ValueError:
                pass  # a checkpoint was removed: train again (resumes from what is left)
        self._command("train", self.train_argv())
        self._ensure_ray()
        results = run_training(train_cfg, address=self.cfg.address, mlflow_uri=self.cfg.mlflow_uri)
        failed = [r for r in results.values() if not r.ok]
        if failed:
            raise PipelineError("train: " + "; ".join(f"{r.supernet} failed: {r.first_error_line()}" for r in failed))
        self.outputs["checkpoints"] = {s: r.checkpoint for s, r in results.items()}
        self._save_record("train", None, fp, self.outputs["checkpoints"])
        return "ran"

    def profile_build(self) -> tuple[dict[str, Any], Any]:
        """(backend settings, BuildConfig) of the profile stage; `profile_argv` prints the same."""
        from ..latency import backend_class
        from ..latency.build_config import BuildConfig

        p = self.cfg.profile
        # the stage's backend settings that are options of its backend (threads mean nothing to coreml)
        given = {"threads": p.threads, "compute_units": p.compute_units, "command": p.remote_command,
                 "export_format": p.export_format}
        options = backend_class(p.backend).options()
        settings = {key: value for key, value in given.items() if value is not None and key in options}
        settings |= backend_options(p)
        build = BuildConfig(rounds=p.rounds, repeats=p.repeats, references=p.references,
                            quiet_cpus=None if p.quiet_cpus < 0 else p.quiet_cpus, quiet_wait_s=p.quiet_wait_s)
        return settings, build

    def profile_argv(self, source: str, space: Any, num_classes: int, path: Path) -> list[str]:
        """The `python -m autovit_ray.profile build` arguments of one table of the stage, for the log only."""
        p = self.cfg.profile
        settings, build = self.profile_build()
        argv = ["build", "--supernet", source, "--input-profile", space.input_profile.name,
                "--backend", p.backend,
                "--num-classes", str(num_classes), "--rounds", str(build.rounds), "--repeats", str(build.repeats),
                "--references", str(build.references), "--quiet-cpus", str(p.quiet_cpus),
                "--quiet-wait", str(build.quiet_wait_s), "--out", str(path)]
        if p.resolutions:
            argv += ["--resolution", ",".join(map(str, p.resolutions))]
        flags = {"threads": "--threads", "compute_units": "--compute-units", "command": "--remote-command",
                 "export_format": "--export-format"}
        for key, value in settings.items():
            argv += [flags[key], str(value)] if key in flags else ["--backend-option", f"{key}={value}"]
        return argv

    def run_profile(self) -> str:
        from ..checkpoint import read_record
        from ..latency import LatencyTable, build_table, get_backend
        from ..latency.build import device_id

        p = self.cfg.profile
        settings, build = self.profile_build()
        backend = get_backend(p.backend, **settings)
        device = device_id(backend.fingerprint())
        source = dict(zip(self.spaces(), self.train_config().supernets))
        statuses, luts = [], {}
        for name, space in self.spaces().items():
            num_classes = read_record(self.checkpoint(name)).num_classes
            fp = fingerprint("profile", profile_settings(p), space.fingerprint(), num_classes, device)
            path = self.experiment.lut(name)
            luts[name] = str(path)
            if self._reusable("profile", name, fp) is not None and path.is_file():
                try:
                    LatencyTable.load(path, space=space, backend=p.backend)
                    self.log(f"profile {name}: up to date (fingerprint {fp}), reusing {path}")
                    statuses.append("reused")
                    continue
                except ValueError as e:
                    self.log(f"profile {name}: {path} is not usable ({e}); profiling again")
            self._command("profile", self.profile_argv(source[name], space, num_classes, path))
            self.log(f"building the {space.name} latency table on {backend.name} at "
                     f"{list(p.resolutions) or list(space.resolutions)} px")
            try:
                table = build_table(space, backend, list(p.resolutions) or None, num_classes, build, log=self.log)
                self.log(f"wrote {table.save(path)} ({table})")
            except ValueError as e:
                raise PipelineError(f"profile {name}: building {path} failed: {e}") from None
            self._save_record("profile", name, fp, {"lut": str(path), "device_id": device})
            statuses.append("ran")
        self.outputs["luts"] = luts
        return _combine(statuses)

    def auto_budgets(self, space: Any, lut: Path | None, num_classes: int) -> tuple[float, float | None]:
        """(params, latency ms) budgets: the configured ones; else the latency of
        `latency_budget_reference` in table ms; else the auto_quantile of random archs."""
        from ..latency import LatencyTable
        from ..plan import count_params

        s = self.cfg.search
        rng = random.Random(f"pipeline-budgets/{s.seed}")
        archs = [space.sample(rng) for _ in range(1000)]
        if s.params_budget_factor is not None:
            params = s.params_budget_factor * self.reference_params(num_classes, space)
        elif s.params_budget is None:
            params = quantile([count_params(a, num_classes, space) for a in archs], s.auto_quantile)
        else:
            params = count(s.params_budget) if isinstance(s.params_budget, str) else float(s.params_budget)
        latency = s.latency_budget_ms
        if latency is None and lut is not None:
            table = LatencyTable.load(lut, space=space)
            if s.latency_budget_reference:
                latency = s.latency_budget_factor * self.reference_budget(space, table, lut, num_classes)
            else:
                latency = quantile([table.predict_latency(a) for a in archs], s.auto_quantile)
        return params, latency

    def reference_params(self, num_classes: int, space: Any) -> int:
        """The parameters of `search.latency_budget_reference`, built as the comparison builds it."""
        from ..training.reference import build_reference

        assert self.cfg.search.latency_budget_reference is not None  # the factor needs it (PipelineConfig)
        model, _ = build_reference(self.cfg.search.latency_budget_reference, num_classes,
                                   tuple(space.input_profile.strides))
        return sum(p.numel() for p in model.parameters())

    def reference_budget(self, space: Any, table: Any, lut: Path, num_classes: int) -> float:
        """The latency of `search.latency_budget_reference` in table ms, measured once per table (kept
        in pipeline/budget-<supernet>.json: a rerun must not move the budget, or the search's fingerprint)."""
        from ..compare import reference_latency_budget

        reference = self.cfg.search.latency_budget_reference
        assert reference is not None  # called only when the search section names one
        fp = fingerprint("budget", reference, file_digest(lut), num_classes)
        record = self._reusable("budget", space.name, fp)
        if record is not None:
            return float(record["outputs"]["table_ms"])
        self.log(f"search {space.name}: timing {reference} beside 12 random subnets on {table.backend} for "
                 "the latency budget")
        budget = reference_latency_budget(reference, table, space, num_classes)
        self.log(f"search {space.name}: latency budget {budget.table_ms:.4f} ms = {reference} measured "
                 f"{budget.measured_ms:.4f} ms x {budget.ratio:.3f} (median LUT/measured of "
                 f"{budget.subnets} random subnets timed beside it)")
        self._save_record("budget", space.name, fp, dataclasses.asdict(budget))
        return budget.table_ms

    def _slower_than_reference(self, space: Any, lut: Path | None, latency: float | None) -> str | None:
        """Why no subnet of `space` can meet the reference's latency budget (its smallest is slower by the
        table), or None. Only for `search.latency_budget_reference`: a budget the user set stays an error."""
        s = self.cfg.search
        if not (s.latency_budget_reference and not s.latency_budget_ms and lut is not None and latency):
            return None
        from ..latency import LatencyTable

        smallest = LatencyTable.load(lut, space=space).predict_latency(space.smallest())
        if smallest <= latency:
            return None
        return (f"its smallest subnet takes {smallest:.4f} table ms, more than {reference_share(s)} "
                f"{latency:.4f} ms, so no {space.name} subnet can beat the reference at its latency")

    def run_search(self) -> str:
        from ..checkpoint import read_record
        from ..search.driver import run

        s = self.cfg.search
        statuses, results = [], {}
        for name, space in self.spaces().items():
            lut = self.search_table(name)
            checkpoint = self.checkpoint(name)
            record = read_record(checkpoint)
            params, latency = self.auto_budgets(space, lut, record.num_classes)
            unreachable = self._slower_than_reference(space, lut, latency)
            if unreachable:  # nothing of this supernet runs as fast as the reference: nothing to search
                self.log(f"search {name}: skipped: {unreachable}")
                self._record_path("search", name).unlink(missing_ok=True)
                statuses.append("skipped")
                continue
            fp = fingerprint("search", search_settings(s), str(checkpoint.resolve()), record.epoch,
                             space.fingerprint(), file_digest(lut) if lut else None, params, latency)
            search_name = f"{name}-{s.strategy}-{fp[:6]}"
            summary_path = self.experiment.search_results(search_name)
            results[name] = str(summary_path)
            if self._reusable("search", name, fp) is not None and summary_path.is_file():
                self.log(f"search {name}: up to date (fingerprint {fp}), reusing {summary_path}")
                statuses.append("reused")
                continue
            how = "set" if s.params_budget else f"auto: {s.auto_quantile:.0%} quantile of 1,000 random archs"
            latency_how = "set" if s.latency_budget_ms else (
                f"{reference_share(s)} latency" if s.latency_budget_reference else how)
            if s.params_budget_factor is not None:
                how = f"{s.params_budget_factor:g}x {s.latency_budget_reference}'s parameters"
            self.log(f"search {name}: params budget {params / 1e6:.3f} M ({how})" + (
                f", latency budget {latency:.4f} ms ({latency_how})" if latency else ""))
            shared = {f.name: getattr(s, f.name) for f in dataclasses.fields(SearchConfig)
                      if f.name not in (*PER_SEARCH_FIELDS, "params_budget", "latency_budget_ms")}
            search = SearchConfig(name=search_name, checkpoint=str(checkpoint), output_dir=str(self.exp_dir),
                                  lut=str(lut) if lut else None, params_budget=params, latency_budget_ms=latency,
                                  mlflow_uri=self.cfg.mlflow_uri, **shared)
            self._command("search", search.to_argv())
            self._ensure_ray()
            report = run(search)
            self._save_record("search", name, fp, {"results": str(summary_path), "name": search_name,
                                                   "best": report.champion.name if report.champion else None})
            statuses.append("ran")
        self.outputs["searches"] = results
        return _combine(statuses)

    def search_table(self, supernet: str) -> Path | None:
        """The latency table the search of `supernet` reads, or None: without one it searches with a
        parameter budget only, unless a measured budget is set, which needs the table's backend and device."""
        lut = self.experiment.lut(supernet)
        if lut.is_file():
            return lut
        s = self.cfg.search
        measured = next((key for key in ("measured_latency_budget_ms", "measured_budget_reference")
                         if getattr(s, key) is not None), None)  # at most one: the config refuses both
        if measured:
            raise PipelineError(f"search {supernet}: search.{measured} needs a latency table (its backend "
                                f"and device time the candidates), and there is none at {lut}: run the profile "
                                "stage first, or unset it")
        self.log(f"search {supernet}: no latency table at {lut}: searching with a parameter budget only")
        return None

    def search_names(self) -> dict[str, str]:
        """{supernet: search name} of the supernets whose search stage finished."""
        return {name: json.loads(self._record_path("search", name).read_text())["outputs"]["name"]
                for name in self.spaces() if self._record_path("search", name).is_file()}

    def searched_best(self) -> dict[str, tuple[str, Any]]:
        """{supernet: (search name, its best arch)} of the finished searches (a search that found
        nothing within the budgets has no entry)."""
        from ..search.results import read_search

        out = {}
        for name, search in self.search_names().items():
            results = self.experiment.search_results(search)
            champion = read_search(results).champion if results.is_file() else None
            if champion is not None:
                out[name] = (search, champion.arch)
        return out

    def retrain_argv(self, supernet: str, arch: Any) -> list[str]:
        """The `python -m autovit_ray.train --arch` arguments of `retrain_config`, for the log only."""
        argv = ["--config", self.cfg.train.config, "--name", f"{supernet}-{arch.arch_hash[:12]}",
                "--output-dir", str(self.experiment.retrain_dir), "--supernets", supernet, "--arch", arch.to_json(),
                "--mlflow-uri", default_tracking_uri(self.exp_dir, self.cfg.mlflow_uri)]
        for item in (*self.cfg.train.set, *self.cfg.retrain.set, f"mlflow.experiment={self.cfg.name}-retrain"):
            argv += ["--set", item]
        return argv

    def check_retrain_settings(self) -> None:
        from ..training.config import load_config

        try:
            load_config(self.cfg.train.config, [*self.cfg.train.set, *self.cfg.retrain.set])
        except ValueError as e:
            raise ValueError(f"retrain.set {list(self.cfg.retrain.set)}: {e}") from None

    def retrain_config(self, supernet: str, arch: Any) -> tuple[Any, Any]:
        """(TrainConfig, one-arch space) that train `arch` stand-alone in <experiment>/retrain/<supernet>-<arch
        hash>: the train stage's config and overrides, then retrain.set; MLflow experiment <name>-retrain
        in the experiment's store."""
        from ..ray_train import standalone_config
        from ..training.config import load_config

        cfg = load_config(self.cfg.train.config,
                          [*self.cfg.train.set, *self.cfg.retrain.set, f"mlflow.experiment={self.cfg.name}-retrain"],
                          {"name": f"{supernet}-{arch.arch_hash[:12]}", "output_dir": str(self.experiment.retrain_dir),
                           "supernets": [supernet]})
        return standalone_config(cfg, arch, named=True)

    def run_retrain(self) -> str:
        from ..checkpoint import find_checkpoint
        from ..ray_train import run_training
        from ..training.config import fingerprint_dict

        best = self.searched_best()
        if not best:
            raise PipelineError(f"retrain: no finished search with a best model in {self.exp_dir}; run the "
                                "search stage first")
        uri = default_tracking_uri(self.exp_dir, self.cfg.mlflow_uri)  # the store of the supernets' runs
        statuses, checkpoints = [], {}
        for name, (search, arch) in best.items():
            cfg, space = self.retrain_config(name, arch)
            fp = fingerprint("retrain", fingerprint_dict(cfg), arch.to_json())
            if self._reusable("retrain", name, fp) is not None:
                try:
                    checkpoints[name] = str(find_checkpoint(cfg.experiment_dir, space.name, final=True))
                    self.log(f"retrain {name}: up to date (fingerprint {fp}), reusing {checkpoints[name]}")
                    statuses.append("reused")
                    continue
                except ValueError:
                    pass  # a checkpoint was removed: train again (resumes from what is left)
            self.log(f"retrain {name}: {search}'s best {arch} stand-alone from scratch, "
                     f"{cfg.train.epochs} epochs, in {cfg.experiment_dir}")
            self._command("train", self.retrain_argv(name, arch))
            self._ensure_ray()
            result = run_training(cfg, address=self.cfg.address, mlflow_uri=uri, standalone=(arch, space))
            trained = result[space.name]
            if not trained.finished(cfg.train.epochs):
                raise PipelineError(f"retrain {name}: training {arch} stand-alone failed: "
                                    f"{trained.first_error_line()}")
            assert trained.checkpoint is not None  # finished: it has its last epoch's checkpoint
            checkpoints[name] = trained.checkpoint
            self._save_record("retrain", name, fp, {"search": search, "arch": arch.to_json(),
                                                    "checkpoint": trained.checkpoint})
            statuses.append("ran")
        self.outputs["retrained"] = checkpoints
        return _combine(statuses)

    def retrained_checkpoints(self) -> list[Path]:
        """The stand-alone checkpoints of the current searches' best archs (retrain records whose search
        is the current one); empty when the retrain stage never ran."""
        out = []
        for name, (search, arch) in self.searched_best().items():
            path = self._record_path("retrain", name)
            if not path.is_file():
                continue
            outputs = json.loads(path.read_text())["outputs"]
            checkpoint = Path(outputs["checkpoint"])
            if outputs["search"] == search and outputs["arch"] == arch.to_json() and checkpoint.is_dir():
                out.append(checkpoint)
        return out

    def run_compare(self) -> str:
        from ..checkpoint import META_FILE
        from ..compare import CompareConfig, compare_argv, compare_experiment

        c = self.cfg.compare
        names = list(self.search_names().values())
        results = [self.experiment.search_results(name) for name in names]
        if not names or not all(path.is_file() for path in results):
            raise PipelineError(f"compare: no finished search of {list(self.spaces())} in {self.exp_dir}; run "
                                "the search stage first")
        standalone = self.retrained_checkpoints()
        fp = fingerprint("compare", _settings(c), [file_digest(path) for path in results],
                         [file_digest(path / META_FILE) for path in standalone])  # their epoch and metrics
        out_dir = self.experiment.compare_dir
        self.outputs["compare"] = str(out_dir)
        if self._reusable("compare", None, fp) is not None and out_dir.is_dir():
            self.log(f"compare: up to date (fingerprint {fp}), reusing {out_dir}")
            return "reused"
        compare = CompareConfig(experiment=str(self.exp_dir), mlflow_uri=self.cfg.mlflow_uri,
                                references=tuple(c.references), backend=c.backend, repeats=c.repeats,
                                rounds=c.rounds, out=str(out_dir), searches=tuple(names),
                                train_references=c.train_references, standalone=tuple(map(str, standalone)))
        self._command("compare", compare_argv(compare))
        compare_experiment(compare)
        self._save_record("compare", None, fp, {"compare": str(out_dir)})
        return "ran"

    # -- all ---------------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] | None = None) -> list[StageTiming]:
        selected = tuple(stages or self.cfg.stages)
        unknown = [s for s in selected if s not in STAGES]
        if unknown:
            raise ValueError(f"stages {unknown} are unknown: expected some of {list(STAGES)}")
        if "retrain" in selected:
            self.check_retrain_settings()  # now, not after the training and the searches
        timings: list[StageTiming] = []
        finished = False
        started = time.perf_counter()
        try:
            for stage in STAGES:
                budget = getattr(self.cfg, stage).budget_s
                if stage not in selected:
                    timings.append(StageTiming(stage, "not selected", 0.0, budget))
                    continue
                to_run = [s for s in STAGES[STAGES.index(stage):] if s in selected]
                self.log(f"\n== {stage} (budget {budget:.0f} s) ==")
                self.log(pipeline_eta(time.perf_counter() - started, {s: getattr(self.cfg, s).budget_s
                                                                      for s in to_run}))
                start = time.perf_counter()
                status = getattr(self, f"run_{stage}")()
                timings.append(StageTiming(stage, status, time.perf_counter() - start, budget))
                self.log(f"== {stage}: {status} in {timings[-1].seconds:.1f} s ==")
                if status != "reused":  # what a later run that reuses the stage reports as its cost
                    atomic_write_text(self._timing_path(stage), json.dumps(
                        {"seconds": round(timings[-1].seconds, 1), "status": status,
                         "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
            finished = True
        finally:
            self.close()
            if not finished:  # a failed or interrupted run: the page shows what exists so far
                self.write_report()
        self._write_summary(timings)
        self.write_report()
        return timings

    def write_report(self) -> None:
        """`<experiment>/report.html` (autovit_ray.report); a failure here never hides the run's result."""
        from ..report import write_report

        try:
            self.outputs["report"] = str(write_report(self.exp_dir, log=lambda _: None))
            self.log(f"report: {self.outputs['report']}")
        except Exception as e:  # e.g. nothing written yet: the experiment directory does not exist
            self.log(f"report: not written ({type(e).__name__}: {e})")

    def _timing_path(self, stage: str) -> Path:
        return self.records_dir / f"timing-{stage}.json"

    def last_run(self, stage: str) -> dict[str, Any] | None:
        """{seconds, status, finished} of the last run that did the stage's work, if recorded."""
        path = self._timing_path(stage)
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except json.JSONDecodeError:
            return None  # written atomically: only a hand edit gets here

    def _write_summary(self, timings: list[StageTiming]) -> None:
        stages = []
        for t in timings:
            entry = {**dataclasses.asdict(t), "over_budget": t.over_budget}
            last = self.last_run(t.stage) if t.status == "reused" else None
            if last is not None:  # a reused stage: what it cost when it ran
                entry.update(last_ran_seconds=last["seconds"], last_ran=last["finished"])
            stages.append(entry)
        summary = {"name": self.cfg.name, "experiment_dir": str(self.exp_dir.resolve()),
                   "total_seconds": round(sum(t.seconds for t in timings), 1), "stages": stages,
                   "outputs": self.outputs}
        atomic_write_text(self.experiment.summary_json, json.dumps(summary, indent=1, default=str))


def pipeline_eta(elapsed_s: float, budgets: dict[str, float]) -> str:
    """The pipeline's progress line at a stage's start: time so far and, from the budgets of the stages
    still to run (`budgets`, this one first), about how long is left (a rough guide: a stage found up to
    date takes seconds, and one may run over its budget)."""
    left = sum(budgets.values())
    return (f"pipeline: elapsed {duration(elapsed_s)}; {len(budgets)} stage(s) to go ({', '.join(budgets)}), "
            f"about {duration(left)} left by their budgets")


def reference_share(search: Any) -> str:
    """How the search section names its latency budget's reference: "mobilevit_xxs's", "0.8x mobilevit_xxs's"."""
    factor = search.latency_budget_factor
    return f"{search.latency_budget_reference}'s" if factor == 1.0 else f"{factor:g}x {search.latency_budget_reference}'s"


def _combine(statuses: Sequence[str]) -> str:
    """One stage status from its supernets' ('skipped' ones, with nothing to do, do not count)."""
    done = [status for status in statuses if status != "skipped"]
    if statuses and not done:
        return "skipped"
    if done and all(status == "reused" for status in done):
        return "reused"
    return "partly reused" if "reused" in done else "ran"


__all__ = [
    "CompareStage", "DEFAULT_STAGES", "Pipeline", "PipelineConfig", "PipelineError", "ProfileStage",
    "RetrainStage", "STAGES", "SearchStage", "StageTiming", "TrainStage", "fingerprint",
    "load_pipeline_config",
]
