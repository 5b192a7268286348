"""Choosing a search's best models under a measured latency budget (`--measured-latency-budget-ms`).

A latency table predicts a subnet as a sum of its blocks, and a search keeps the archs the table
predicts fastest for their accuracy: its best archs are the ones the table underestimates most, so
they can miss a budget they meet on the table (in the CIFAR-10 claim's first search, under a table
budget of the peer's latency, all 10 best archs measured 1.00-1.05x the peer). With a measured budget, the
`measured_candidates` best archs by validation top-1 are timed as whole models on the table's own
backend and device (batch 1, interleaved), and the search's best models are the best by validation
of those within it. The budget is a number of ms, or a factor times a reference model's latency
(`--measured-budget-reference`): the reference is then timed in the same interleaved run as the
candidates, so the comparison holds however fast the machine runs that minute. Pure of Ray and MLflow;
torch is imported where models are built.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..space import Arch, SearchSpace
from .algorithms import Evaluation

# A table's device fingerprint (`LatencyBackend.fingerprint()`, recorded when the table was built)
# keys that decide a latency. The rest (OS build, Python, torch) are reported when they differ.
DEVICE_KEYS = ("backend", "settings", "cpu_model", "logical_cpus", "machine", "remote_device")
# Interleaved rounds x samples per round, as the reference latency budget is measured (compare.reference_latency_budget).
ROUNDS, REPEATS = 10, 5


@dataclass(frozen=True)
class MeasuredCandidate:
    """One of the best archs by validation, timed for the measured budget."""

    rank: int  # in the strategy's ranking (validation top-1; Pareto rank first under dominance), 1: best
    arch: str
    val_top1: float
    table_ms: float | None
    measured_ms: float  # median of the interleaved samples
    p10_ms: float
    p90_ms: float
    within_budget: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BudgetReference:
    """A model whose latency, timed beside the candidates, sets the measured budget (x `factor`)."""

    name: str
    factor: float
    model: Any  # an nn.Module, built as `compare.budget_reference` builds it
    resolution: int


@dataclass(frozen=True)
class ReferenceTiming:
    """The budget's reference model as timed in the candidates' run."""

    name: str
    factor: float
    measured_ms: float
    p10_ms: float
    p90_ms: float

    @property
    def budget_ms(self) -> float:
        return self.factor * self.measured_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Measuring:
    """How a search's best archs are timed for its measured budget: on the table's `backend`, against
    `budget_ms`, or against the `reference`'s latency in the same run."""

    backend: Any
    budget_ms: float | None = None
    reference: BudgetReference | None = None

    def __post_init__(self) -> None:
        if (self.budget_ms is None) == (self.reference is None):
            raise ValueError("a measured budget is either in ms or a reference model's latency: expected one")

    def describe(self) -> str:
        """The budget as the user set it: '4.5 ms' or '0.8x mobilevit_xxs'."""
        if self.reference is not None:
            return f"{self.reference.factor:g}x {self.reference.name}"
        return f"{self.budget_ms:g} ms"


class MeasuredBudgetUnmetError(ValueError):
    """None of the candidates measured within the measured latency budget."""


def device_differences(table_device: Mapping[str, Any], here: Mapping[str, Any],
                       keys: Sequence[str] = DEVICE_KEYS) -> dict[str, tuple[Any, Any]]:
    """{key: (the table's value, this machine's)} for the fingerprint `keys` that differ."""
    return {k: (table_device.get(k), here.get(k)) for k in keys if table_device.get(k) != here.get(k)}


def make_measuring(budget_ms: float | None, reference: str | None, factor: float, table: Any, space: SearchSpace,
                   num_classes: int) -> Measuring:
    """The `Measuring` of a search's measured budget (`budget_ms`, or `factor` x the timm model
    `reference`), on `table`'s backend and device. Another device or an unknown reference is one
    ValueError, raised before the search starts."""
    backend = measurement_backend(table)
    if reference is None:
        return Measuring(backend, budget_ms=budget_ms)
    from ..compare import budget_reference

    model, resolution = budget_reference(reference, space, num_classes)
    return Measuring(backend, reference=BudgetReference(reference, factor, model, resolution))


def measurement_backend(table: Any) -> Any:
    """The backend that built `table` (a `LatencyTable`), with its recorded settings, after checking that
    it times on the table's device: a budget measured on another device says nothing of the table's."""
    from ..latency import backend_from_settings

    backend = backend_from_settings(table.backend, table.backend_settings)
    here = backend.fingerprint()
    differ = device_differences(table.device, here)
    if differ:
        shown = "; ".join(f"{k}: table {a!r}, here {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"a measured latency budget times the candidates on the latency table's device, but "
                         f"this machine is not it ({shown}): run the search where the table was profiled, profile "
                         "a table here (`python -m autovit_ray.profile build`), or leave the measured budget out")
    software = device_differences(table.device, here, ("torch", "python", "os"))
    if software:
        print("note: the latency table was profiled under other software: " +
              "; ".join(f"{k} {a} then, {b} now" for k, (a, b) in software.items()), flush=True)
    return backend


def select_within(measured: Sequence[MeasuredCandidate], top_k: int) -> list[int]:
    """Indices into `measured` (best first) of the first `top_k` within the budget."""
    return [i for i, m in enumerate(measured) if m.within_budget][:top_k]


def measure_candidates(candidates: Sequence[Evaluation], space: SearchSpace, num_classes: int, how: Measuring,
                       seed: int = 0) -> tuple[list[MeasuredCandidate], float, ReferenceTiming | None]:
    """(each candidate timed, the budget in ms, the reference as timed or None). Each candidate's arch is
    built as a plain model (latency does not depend on its weights) and timed on `how.backend`, all
    interleaved (with the budget's reference model, if any): batch 1, `ROUNDS` x `REPEATS` samples each."""
    from ..latency import measure_models
    from ..models import create_subnet

    archs: list[Arch] = [e.arch for e in candidates]
    models: list[tuple[Any, tuple[int, ...]]] = [
        (create_subnet(arch, num_classes, space).eval(), (1, 3, arch.resolution, arch.resolution)) for arch in archs]
    reference = how.reference
    if reference is not None:  # timed last in the list, interleaved like the rest
        models.append((reference.model, (1, 3, reference.resolution, reference.resolution)))
    stats = measure_models(how.backend, models, rounds=ROUNDS, repeats=REPEATS, seed=seed)
    timing = None
    if reference is not None:
        ref = stats.pop()
        timing = ReferenceTiming(reference.name, reference.factor, ref.median_ms, ref.p10_ms, ref.p90_ms)
    budget_ms = timing.budget_ms if timing is not None else how.budget_ms
    assert budget_ms is not None  # Measuring holds a budget or a reference
    timed = [MeasuredCandidate(rank=i + 1, arch=str(e.arch), val_top1=float(e.fitness or 0.0), table_ms=e.latency,
                               measured_ms=s.median_ms, p10_ms=s.p10_ms, p90_ms=s.p90_ms,
                               within_budget=s.median_ms <= budget_ms)
             for i, (e, s) in enumerate(zip(candidates, stats, strict=True))]
    return timed, budget_ms, timing


def unmet_error(measured: Sequence[MeasuredCandidate], budget_ms: float, table_budget_ms: float | None,
                reference: ReferenceTiming | None = None) -> MeasuredBudgetUnmetError:
    """The error of a search none of whose `measured` candidates is within `budget_ms`: the fastest one,
    and the table budget that would aim at the measured one."""
    fastest = min(measured, key=lambda m: m.measured_ms)
    advice = "lower --latency-budget-ms (the table's budget)"
    if table_budget_ms is not None and fastest.table_ms:
        # table ms per measured ms of the candidates, applied to the measured budget
        aim = budget_ms * statistics.median(m.table_ms / m.measured_ms for m in measured if m.table_ms)
        advice = f"lower --latency-budget-ms from {table_budget_ms:g} to about {aim:.3g} (its table ms per measured ms)"
    budget = (f"the measured budget {budget_ms:.4g} ms (--measured-budget-factor {reference.factor:g} x "
              f"--measured-budget-reference {reference.name}, which measured {reference.measured_ms:.4g} ms beside them)"
              if reference is not None else f"--measured-latency-budget-ms {budget_ms:g}")
    return MeasuredBudgetUnmetError(
        f"none of the {len(measured)} best candidates measured within {budget}: "
        f"the fastest, {fastest.arch} (validation top-1 {fastest.val_top1:.2f}), measured {fastest.measured_ms:.3f} ms "
        f"(table {fastest.table_ms if fastest.table_ms is not None else float('nan'):.3f} ms); {advice} and search "
        "again under a new --name, or measure more with --measured-candidates")


__all__ = ["DEVICE_KEYS", "BudgetReference", "MeasuredBudgetUnmetError", "MeasuredCandidate", "Measuring",
           "ReferenceTiming", "device_differences", "measure_candidates", "make_measuring", "measurement_backend",
           "select_within", "unmet_error"]
