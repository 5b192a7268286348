"""The training configuration: nested dataclasses loaded from YAML (`configs/train/*.yaml`), every field
overridable with `--set section.field=value` (the machinery: `autovit_ray.config`), validated once
with one clear error per bad field.

Pure Python + the data / KD config classes; no Ray, no MLflow.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autovit_ray.config import (
    bad_field,
    build_dataclass,
    coerce,
    flatten,
    packaged_configs,
    parse_override,
    plain,
    read_yaml_mapping,
    renamed_keys,
    resolve_config_path,
    set_path,
    type_hints,
    warn_renamed,
)
from autovit_ray.data import DataConfig
from autovit_ray.kd_config import KDConfig
from autovit_ray.space import BUILTIN_SPACES

CONFIG_DIR = packaged_configs("train")
SAMPLERS = ("uniform", "sandwich")
REGULARIZE = ("all", "largest")
SCHEDULE_KINDS = ("cosine", "onecycle")
ANNEALS = ("cos", "linear")
AUTO_BOOL = ("auto", True, False)
AMP_CHOICES = ("auto", "bf16", "fp16", "fp32", True, False)


def _doc(text: str, **kwargs: Any) -> Any:
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True)
class ModelSection:
    drop_rate: float = _doc("dropout before the classifier", default=0.0)
    regularize: str = _doc("which training subnets get the dropout: 'all', or 'largest' only (BigNAS: the "
                           "smaller subnets underfit and learn from the largest, in place)", default="all")


@dataclass(frozen=True)
class TrainSection:
    epochs: int = _doc("total epochs; fixes the cosine schedule", default=300)
    sampler: str = _doc("'uniform': one subnet per step (Algorithm 1); 'sandwich': largest + smallest "
                        "+ `sandwich_random` random subnets per step, gradients accumulated", default="uniform")
    sandwich_random: int = _doc("random subnets per step with sampler=sandwich", default=2)
    transformer_stages: int | None = _doc("a few-shot part (Few-shot NAS): draw only the subnets with this "
                                          "many transformer stages; the supernet keeps every weight "
                                          "(None: the whole space)", default=None)
    init_from: str | None = _doc("a checkpoint of the same supernet and input profile (or an experiment "
                                 "folder: its latest one) whose weights start this training (a few-shot part "
                                 "starts from its whole-space supernet); optimizer and schedule start fresh "
                                 "(None: random init)", default=None)
    max_steps_per_epoch: int | None = _doc("cap on optimizer steps per epoch (smoke runs, tests)", default=None)
    stop_after_epoch: int | None = _doc("stop after this epoch without changing the schedule; rerun "
                                        "the same command to continue", default=None)
    keep_checkpoints: int | None = _doc("epoch checkpoints kept per supernet (None: all)", default=3)
    grad_clip: float | None = _doc("max global gradient norm (None: no clipping)", default=5.0)
    amp: Any = _doc("precision of the forward passes (autocast): 'auto' (GPU: bf16 where supported, else "
                    "fp16; CPU: fp32), 'bf16', 'fp16' (GPU only), 'fp32', true (the device's mixed precision: "
                    "auto's GPU choice, bf16 on a CPU), false (= fp32); the resolved one is recorded in the "
                    "checkpoint and MLflow", default="auto")
    progress_bar: Any = _doc("'auto' (when the driver runs in a terminal), true, false", default="auto")
    arch_log: bool = _doc("every rank writes the arch hash of each step to "
                          "<experiment>/arch_log/<supernet>/rank<r>.txt", default=False)
    fail_after_epoch: int | None = _doc("testing: crash the worker once after this epoch's checkpoint "
                                        "(shows FailureConfig restarts)", default=None)


@dataclass(frozen=True)
class OptimizerSection:
    lr: float = _doc("peak learning rate (AdamW)", default=1e-3)
    weight_decay: float = _doc("decoupled weight decay (biases and norm weights get none, as timm)",
                               default=0.05)
    betas: tuple[float, float] = _doc("AdamW betas", default=(0.9, 0.999))
    eps: float = _doc("AdamW epsilon", default=1e-8)
    freeze_inactive: bool = _doc("true: weights outside the step's subnets do not move (no decay, no "
                                 "moment update; Algorithm 1); false: plain AdamW over the whole "
                                 "supernet (AutoFormer)", default=True)


@dataclass(frozen=True)
class ScheduleSection:
    kind: str = _doc("'cosine': linear warm-up over `warmup_epochs`, then cosine to `min_lr` (DeiT); "
                     "'onecycle': linear warm-up over `warmup_fraction` of all steps to the peak "
                     "(optimizer.lr), then `anneal` to `min_lr`", default="cosine")
    warmup_epochs: float = _doc("linear warm-up length in epochs (kind cosine)", default=5.0)
    warmup_fraction: float = _doc("linear warm-up length as a fraction of all steps (kind onecycle)",
                                  default=0.3)
    anneal: str = _doc("'cos' or 'linear' decay after the peak (kind onecycle)", default="cos")
    warmup_lr: float = _doc("learning rate at step 0", default=1e-6)
    min_lr: float = _doc("learning rate at the last step", default=1e-5)


@dataclass(frozen=True)
class EvalSection:
    num_random_subnets: int = _doc("random subnets evaluated each epoch besides the smallest and "
                                   "largest (a fixed set, drawn once with `subnet_seed`)", default=3)
    subnet_seed: int = _doc("seed of that fixed set", default=0)
    every_n_epochs: int = _doc("evaluate every n epochs (and always after the last)", default=1)
    max_batches: int | None = _doc("cap on validation batches per subnet (None: the whole split)",
                                   default=None)
    calib_batches: int | None = _doc("BN recalibration batches (None: the whole calib subset)",
                                     default=None)


TRAIN_INPUTS = ("local", "object-store", "ray-data")  # RaySection.train_input (autovit_ray.ray_inputs)


@dataclass(frozen=True)
class RaySection:
    address: str | None = _doc("Ray cluster address (also --address / RAY_ADDRESS); None: start a "
                               "local Ray", default=None)
    num_cpus: int | None = _doc("CPUs of the local Ray (None: Ray's detection, which honours a container's "
                                "CPU limit)", default=None)
    num_workers: int = _doc("data-parallel workers per supernet", default=1)
    cpus_per_worker: float | None = _doc("CPUs reserved per worker (None: share the CPUs among all "
                                         "workers of all supernets, fractional on small machines)",
                                         default=None)
    use_gpu: Any = _doc("'auto' (if a GPU node is up or the autoscaler can start one), true, false",
                        default="auto")
    gpus_per_worker: float = _doc("GPUs per worker when use_gpu", default=1.0)
    torch_backend: str = _doc("torch.distributed backend: auto (Ray's: NCCL on GPUs, else gloo), gloo, nccl",
                              default="auto")
    torch_threads: int | None = _doc("torch.set_num_threads in each worker (None: from cpus_per_worker)",
                                     default=None)
    train_input: str = _doc("where the workers' images come from: local (each worker reads data.data_dir "
                            "on its node), object-store (in-memory data: decoded once by the driver and "
                            "shared through Ray's object store, so no other node needs the files), "
                            "ray-data (an image folder's training split read and decoded by Ray Data tasks "
                            "on any CPU node and streamed to the workers)", default="local")
    max_failures: int = _doc("worker-group restarts from the last checkpoint (FailureConfig)", default=1)
    worker_start_timeout_s: float = _doc("how long Ray Train waits for a worker group to start "
                                         "(RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S; Ray's 60 s is short on "
                                         "busy small machines)", default=600.0)


@dataclass(frozen=True)
class MlflowSection:
    tracking_uri: str | None = _doc("also --mlflow-uri / MLFLOW_TRACKING_URI; None: "
                                    "sqlite:///<experiment dir>/mlflow.db", default=None)
    experiment: str | None = _doc("MLflow experiment name (None: the run name)", default=None)


@dataclass(frozen=True)
class TrainConfig:
    name: str = _doc("experiment name: outputs go to <output_dir>/<name>/; the same name resumes",
                     default="autovit")
    output_dir: str = _doc("root of all experiments", default="outputs")
    supernets: tuple[str, ...] = _doc("supernets to train concurrently (names or space YAML paths)",
                                      default=BUILTIN_SPACES)
    input_profile: str | None = _doc("input profile of the search space (resolutions, strides, patches; "
                                     "configs/profiles.yaml): imagenet, cifar10, cifar10-p1, digits, or a "
                                     "registered one; None: the dataset's default (its first)",
                                     default=None)
    seed: int = _doc("model init, subnet sampling, batch order and augmentation (data.seed follows it)",
                     default=0)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    kd: KDConfig = field(default_factory=KDConfig)
    eval: EvalSection = field(default_factory=EvalSection)
    ray: RaySection = field(default_factory=RaySection)
    mlflow: MlflowSection = field(default_factory=MlflowSection)

    def __post_init__(self) -> None:
        if self.input_profile is None:  # set here, so that to_dict (and every fingerprint) holds the name
            object.__setattr__(self, "input_profile", self.data.defaults.default_input_profile)
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON / YAML-safe nested dict (tuples become lists)."""
        return plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def experiment_dir(self) -> Path:
        return Path(self.output_dir).expanduser().resolve() / self.name


# ---------------------------------------------------------------------------------------------------
# Validation of the fields the sections do not check themselves


def _validate(cfg: TrainConfig) -> None:
    if not cfg.name or not all(c.isalnum() or c in "-_." for c in cfg.name) or cfg.name.startswith("."):
        raise bad_field("name", cfg.name, "a non-empty run name of letters, digits, '-', '_', '.'")
    if not cfg.supernets or len(set(cfg.supernets)) != len(cfg.supernets):
        raise bad_field("supernets", list(cfg.supernets), "a non-empty list of distinct supernets (xxs, xs, s)")
    if cfg.data.seed != cfg.seed:
        raise bad_field("data.seed", cfg.data.seed, "to be left out: set the top-level `seed`")
    t = cfg.train
    positive = {"train.epochs": t.epochs, "train.sandwich_random": t.sandwich_random + 1,
                "eval.every_n_epochs": cfg.eval.every_n_epochs, "ray.num_workers": cfg.ray.num_workers}
    for name, value in positive.items():
        if value < 1:
            raise bad_field(name, value if name != "train.sandwich_random" else t.sandwich_random,
                       "a positive integer" if name != "train.sandwich_random" else "an integer >= 0")
    if not 0.0 <= cfg.model.drop_rate < 1.0:
        raise bad_field("model.drop_rate", cfg.model.drop_rate, "a probability in [0, 1)")
    if cfg.model.regularize not in REGULARIZE:
        raise bad_field("model.regularize", cfg.model.regularize, f"one of {REGULARIZE}")
    if t.sampler not in SAMPLERS:
        raise bad_field("train.sampler", t.sampler, f"one of {SAMPLERS}")
    for name in ("max_steps_per_epoch", "stop_after_epoch", "fail_after_epoch", "keep_checkpoints",
                 "transformer_stages"):
        value = getattr(t, name)
        if value is not None and value < 1:
            raise bad_field(f"train.{name}", value, "a positive integer or null")
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise bad_field("train.grad_clip", t.grad_clip, "a positive number or null")
    if t.amp not in AMP_CHOICES:
        raise bad_field("train.amp", t.amp, "'auto', 'bf16', 'fp16', 'fp32', true or false")
    for name, value in (("train.progress_bar", t.progress_bar), ("ray.use_gpu", cfg.ray.use_gpu)):
        if value not in AUTO_BOOL:
            raise bad_field(name, value, "'auto', true or false")
    o = cfg.optimizer
    if o.lr <= 0 or o.weight_decay < 0 or o.eps <= 0 or not all(0 <= b < 1 for b in o.betas):
        raise bad_field("optimizer", dataclasses.asdict(o), "lr > 0, weight_decay >= 0, eps > 0, betas in [0, 1)")
    s = cfg.schedule
    if s.kind not in SCHEDULE_KINDS:
        raise bad_field("schedule.kind", s.kind, f"one of {SCHEDULE_KINDS}")
    if s.anneal not in ANNEALS:
        raise bad_field("schedule.anneal", s.anneal, f"one of {ANNEALS}")
    if not 0 <= s.warmup_fraction < 1:
        raise bad_field("schedule.warmup_fraction", s.warmup_fraction, "a fraction of the steps in [0, 1)")
    if s.warmup_epochs < 0 or s.warmup_lr < 0 or s.min_lr < 0:
        raise bad_field("schedule", dataclasses.asdict(s), "warmup_epochs, warmup_lr and min_lr >= 0")
    e = cfg.eval
    if e.num_random_subnets < 0:
        raise bad_field("eval.num_random_subnets", e.num_random_subnets, "an integer >= 0")
    for name in ("max_batches", "calib_batches"):
        if getattr(e, name) is not None and getattr(e, name) < 1:
            raise bad_field(f"eval.{name}", getattr(e, name), "a positive integer or null")
    r = cfg.ray
    if r.num_cpus is not None and r.num_cpus < 1:
        raise bad_field("ray.num_cpus", r.num_cpus, "a positive integer or null")
    if r.train_input not in TRAIN_INPUTS:
        raise bad_field("ray.train_input", r.train_input, " or ".join(TRAIN_INPUTS))
    if r.torch_backend not in ("auto", "gloo", "nccl"):
        raise bad_field("ray.torch_backend", r.torch_backend, "auto, gloo or nccl")
    if r.cpus_per_worker is not None and r.cpus_per_worker <= 0:
        raise bad_field("ray.cpus_per_worker", r.cpus_per_worker, "a positive number or null")
    if r.torch_threads is not None and r.torch_threads < 1:
        raise bad_field("ray.torch_threads", r.torch_threads, "a positive integer or null")
    if r.gpus_per_worker <= 0 or r.max_failures < 0 or r.worker_start_timeout_s <= 0:
        raise bad_field("ray", dataclasses.asdict(r),
                   "gpus_per_worker > 0, max_failures >= 0 and worker_start_timeout_s > 0")
    kd = cfg.kd
    if kd.inplace and kd.kind == "none":
        raise bad_field("kd.inplace", True, "kd.kind 'soft' or 'hard' with in-place distillation")
    if kd.inplace and kd.teacher is not None:
        raise bad_field("kd.inplace", True, "either a teacher or in-place distillation, not both")


# ---------------------------------------------------------------------------------------------------
# Loading (the YAML + --set machinery is autovit_ray.config)

# Top-level fields renamed since ({old: new}): a YAML file or --set with the old key loads with a
# deprecation message; the meta.json of older checkpoints loads as it is.
RENAMED_FIELDS = {"profile": "input_profile"}


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A validated TrainConfig from a nested dict (a YAML file's content, a checkpoint's stored config:
    the old names of `RENAMED_FIELDS` are read silently here, `load_config` warns about them)."""
    values = renamed_keys(values, RENAMED_FIELDS, "training config", warn=False)
    data = dict(values.get("data") or {})
    seed = coerce(values.get("seed", 0), int, "seed")
    if "seed" in data and data["seed"] != seed:  # to_dict() writes data.seed = seed; nothing else may
        raise bad_field("data.seed", data["seed"], "to be left out: set the top-level `seed`")
    data["seed"] = seed
    values["data"] = data
    return build_dataclass(TrainConfig, values, "")


def load_config(config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                extra: Mapping[str, Any] | None = None) -> TrainConfig:
    """YAML file (or a configs/train name), then `extra` (dotted keys), then `--set` overrides."""
    values: dict[str, Any] = {}
    if config is not None:
        path = resolve_config_path(config, CONFIG_DIR, "training")
        values = renamed_keys(read_yaml_mapping(path, "training"), RENAMED_FIELDS, f"training config {path}")
    for key, value in (extra or {}).items():
        set_path(values, key, value)
    for text in overrides:
        set_override(values, text)
    return config_from_dict(values)


def set_override(values: dict[str, Any], text: str) -> None:
    """Apply one `--set field=value` to a config dict (an old field name: renamed, with a message)."""
    key, value = parse_override(text)
    if key in RENAMED_FIELDS:
        warn_renamed(f"--set {key}", f"--set {RENAMED_FIELDS[key]}")
        key = RENAMED_FIELDS[key]
    set_path(values, key, value)


# Fields added since stages were first fingerprinted, hashed only when set (section, field): a stage
# fingerprinted before they existed is still up to date, a stage that sets one is not.
FINGERPRINTED_WHEN_SET = (("train", "transformer_stages"), ("train", "init_from"), ("data", "calib_seed"))


def fingerprint_dict(cfg: TrainConfig) -> dict[str, Any]:
    """`cfg.to_dict()` with the field names of before `RENAMED_FIELDS`, less the unset fields of
    `FINGERPRINTED_WHEN_SET`: what fingerprints hash, so that a stage fingerprinted by an older version
    is still up to date."""
    old_names = {new: old for old, new in RENAMED_FIELDS.items()}
    return {old_names.get(k, k): v for k, v in identity_dict(cfg).items()}


def identity_dict(cfg: TrainConfig) -> dict[str, Any]:
    """`cfg.to_dict()` less the unset fields of `FINGERPRINTED_WHEN_SET`."""
    values = cfg.to_dict()
    for section, name in FINGERPRINTED_WHEN_SET:
        if values[section][name] is None:
            del values[section][name]
    return values


def describe_fields() -> str:
    """Every config field with its default and meaning, for --help."""
    lines = []

    def walk(cls: type, prefix: str) -> None:
        hints = type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # a hint is a class, never an instance
                walk(tp, f"{prefix}{f.name}.")
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                assert f.default_factory is not dataclasses.MISSING  # every config field has a default
                default = f.default_factory()
            doc = f.metadata.get("doc", "")
            if cls is DataConfig:
                doc = doc or "see autovit_ray.data.DataConfig"
            elif cls is KDConfig:
                doc = doc or "see autovit_ray.distill.KDConfig"
            if prefix == "data." and f.name == "seed":
                continue
            lines.append(f"  {prefix}{f.name} = {plain(default)!r}" + (f"  # {doc}" if doc else ""))

    walk(TrainConfig, "")
    return "\n".join(lines)


__all__ = [
    "ANNEALS", "CONFIG_DIR", "EvalSection", "FINGERPRINTED_WHEN_SET", "REGULARIZE", "MlflowSection", "ModelSection", "OptimizerSection", "RaySection",
    "RENAMED_FIELDS", "SAMPLERS", "SCHEDULE_KINDS", "TRAIN_INPUTS", "ScheduleSection", "TrainConfig", "TrainSection",
    "config_from_dict", "describe_fields", "fingerprint_dict", "identity_dict", "set_override",
    "flatten", "load_config", "parse_override", "read_yaml_mapping", "resolve_config_path", "set_path",
]
