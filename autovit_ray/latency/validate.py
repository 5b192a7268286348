"""Prove a latency table against measurement: fresh random subnets, real extracted networks.

Every validation subnet is measured twice in two separate interleaved passes (A, then B in a new
order). The predictor is scored against A; B against A is the measurement's own test-retest
noise, the floor any predictor is judged against. MACs and parameter counts are ranked against A
too (the paper's argument that a LUT ranks better than FLOPs, measured).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..nn import Supernet
from ..plan import count_macs, count_params
from ..space import Arch, SearchSpace
from ..stats import kendall_tau
from ._files import atomic_path
from .backends import LatencyBackend, PreparedModel
from .lut import LatencyTable
from .measure import QuietGate, describe_quiet, measure_samples, summarize

Log = Callable[[str], None]


def error_metrics(predicted: Sequence[float] | np.ndarray,
                  measured: Sequence[float] | np.ndarray) -> dict[str, float]:
    """MAPE (%), % of points within +-5% and +-10% of the measurement, Kendall tau."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.ndim != 1 or p.size < 2:
        raise ValueError(f"error_metrics needs equal-length predictions and measurements (>= 2), got "
                         f"{p.size} and {m.size}")
    if not (m > 0).all():
        raise ValueError("error_metrics: every measured latency must be positive (errors are relative to it)")
    rel = np.abs(p - m) / m
    return {"mape": float(rel.mean() * 100), "within_5": float(np.mean(rel <= 0.05) * 100),
            "within_10": float(np.mean(rel <= 0.10) * 100), "kendall_tau": kendall_tau(p, m),
            "max_error": float(rel.max() * 100)}


def validation_archs(space: SearchSpace, resolutions: Sequence[int], count: int, seed: int,
                     exclude: AbstractSet[str] = frozenset(), spread: bool = False) -> list[Arch]:
    """`count` distinct random archs at the given resolutions, none of them in `exclude` (hashes
    of the table's reference archs). `spread`: instead of i.i.d. draws, take the smallest, the
    largest and archs evenly spaced in log-MACs in between (a ranking test over the whole range)."""
    rng = random.Random(f"latency-validation/{seed}")
    pool: dict[str, Arch] = {}
    wanted = count if not spread else max(20 * count, 200)
    if spread:
        for r in resolutions:
            for arch in (space.smallest(), space.largest()):
                arch = dataclasses.replace(arch, resolution=r)
                if arch.arch_hash not in exclude:
                    pool[arch.arch_hash] = arch
    for _ in range(100 * wanted):
        if len(pool) >= wanted:
            break
        arch = dataclasses.replace(space.sample(rng), resolution=rng.choice(list(resolutions)))
        if arch.arch_hash not in exclude:
            pool.setdefault(arch.arch_hash, arch)
    archs = list(pool.values())
    if not spread:
        return archs[:count]
    # Evenly spaced in log-MACs (not in rank: ranks crowd the picks into the dense middle).
    log_macs = np.log([count_macs(a, 1000, space) for a in archs])
    picks: list[int] = []
    for target in np.linspace(log_macs.min(), log_macs.max(), count):
        free = [i for i in np.argsort(np.abs(log_macs - target)) if i not in picks]
        picks.append(int(free[0]))
    return [archs[i] for i in sorted(picks, key=lambda i: log_macs[i])]


@dataclass
class ValidationReport:
    supernet: str
    backend: str
    method: str
    samples: int
    seed: int
    predictor: dict[str, float]  # the table's method vs measurement A
    retest: dict[str, float]  # measurement B vs A
    other_methods: dict[str, dict[str, float]]
    tau_macs: float
    tau_params: float
    per_resolution: dict[str, dict[str, float]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    quiet: dict[str, float] | None = None  # the QuietGate's record over both passes

    @property
    def level(self) -> dict[str, float]:
        """Diagnostic: the overall predicted/measured ratio and the MAPE left after dividing it out.
        A machine whose background load changed between build and validation shifts every
        latency by a similar factor; this separates that shift from errors in shape and ranking."""
        predicted = np.array([r[f"predicted_{self.method}_ms"] for r in self.rows])
        measured = np.array([r["measured_ms"] for r in self.rows])
        retest = np.array([r["retest_ms"] for r in self.rows])
        ratio = float(np.median(predicted / measured))
        retest_ratio = float(np.median(retest / measured))
        return {"ratio": ratio, "mape_after": error_metrics(predicted / ratio, measured)["mape"],
                "retest_ratio": retest_ratio,
                "retest_mape_after": error_metrics(retest / retest_ratio, measured)["mape"]}

    @property
    def mape_over_retest(self) -> float:
        return self.predictor["mape"] / max(self.retest["mape"], 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mape_over_retest": self.mape_over_retest, "level": self.level}

    def summary(self) -> str:
        p, r = self.predictor, self.retest
        lines = [
            f"{self.supernet} on {self.backend}: {self.samples} fresh subnets (seed {self.seed}), method {self.method}",
            f"  predictor vs measured: MAPE {p['mape']:.2f}%  within 5% {p['within_5']:.0f}%  "
            f"within 10% {p['within_10']:.0f}%  Kendall tau {p['kendall_tau']:.3f}  max error {p['max_error']:.1f}%",
            f"  test-retest (noise):   MAPE {r['mape']:.2f}%  within 5% {r['within_5']:.0f}%  "
            f"within 10% {r['within_10']:.0f}%  Kendall tau {r['kendall_tau']:.3f}",
            f"  predictor MAPE / retest MAPE = {self.mape_over_retest:.2f}; tau of MACs {self.tau_macs:.3f}, "
            f"of params {self.tau_params:.3f}"]
        level = self.level
        lines.append(f"  overall level: predicted/measured x{level['ratio']:.3f} (retest x{level['retest_ratio']:.3f}); "
                     f"with it divided out: MAPE {level['mape_after']:.2f}% (retest {level['retest_mape_after']:.2f}%)")
        if self.quiet:
            lines.append(f"  quiet gate: {describe_quiet(self.quiet)}")
        for name, m in self.other_methods.items():
            lines.append(f"  method {name}: MAPE {m['mape']:.2f}%  within 5% {m['within_5']:.0f}%  "
                         f"within 10% {m['within_10']:.0f}%  tau {m['kendall_tau']:.3f}")
        return "\n".join(lines)


def measure_archs(archs: Sequence[Arch], space: SearchSpace, backend: LatencyBackend, num_classes: int,
                  rounds: int, repeats: int, passes: int, seed: int, drift_correction: bool = True,
                  gate: QuietGate | None = None, log: Log = print) -> list[np.ndarray]:
    """Median latency (ms) of each arch's real extracted subnet, once per pass; passes are
    separate interleaved runs in different orders (pass 2 is the retest of pass 1). With a
    gate, each pass keeps its quiet rounds (see `measure.QuietGate`)."""
    torch.manual_seed(seed)
    supernet = Supernet(space, num_classes).eval()
    prepared: list[PreparedModel] = []
    try:
        for arch in archs:
            net = supernet.get_active_subnet(arch).eval()
            prepared.append(backend.prepare(net, (1, 3, arch.resolution, arch.resolution)))
        out = []
        for p in range(passes):
            log(f"  pass {p + 1}/{passes}: {len(archs)} subnets x {rounds} interleaved rounds x {repeats} repeats")
            samples = measure_samples(prepared, rounds, repeats, seed=seed * 1000 + p, gate=gate)
            keep = gate.quiet_rounds(rounds) if gate is not None else None
            if keep is not None:  # = a gate
                log(f"    kept {int(keep.sum())}/{rounds} quiet rounds")
            out.append(np.array([s.median_ms for s in summarize(samples, drift_correction, keep)]))
        return out
    finally:
        for model in prepared:
            model.close()


def validate_table(table: LatencyTable, backend: LatencyBackend, samples: int = 100, seed: int = 0,
                   rounds: int = 8, repeats: int = 1, spread: bool = False, resolutions: Sequence[int] | None = None,
                   quiet_cpus: float | None = 0.3, quiet_wait_s: float = 60.0, log: Log = print) -> ValidationReport:
    """Draw `samples` fresh archs (never the table's reference archs), measure each real subnet in
    two interleaved passes, and score the table against the first pass (the second is the retest).
    `quiet_cpus` / `quiet_wait_s`: the QuietGate (None: off)."""
    start = time.time()
    if backend.name != table.backend:
        raise ValueError(f"latency table was measured on backend {table.backend!r}, validating on {backend.name!r}")
    backend.check_available()
    resolutions = list(resolutions or table.resolutions)
    table.check(resolutions=resolutions)
    if samples < 2:
        raise ValueError(f"validation needs at least 2 subnets, got {samples}")
    space = table.space
    exclude = {ref["arch_hash"] for ref in table.metadata.get("references", [])}
    archs = validation_archs(space, resolutions, samples, seed, exclude, spread)
    gate = QuietGate(quiet_cpus, quiet_wait_s) if quiet_cpus is not None else None
    measured, retest = measure_archs(archs, space, backend, table.num_classes, rounds, repeats, 2, seed,
                                     gate=gate, log=log)
    predicted = {m: np.array([table.predict_latency(a, m) for a in archs]) for m in table.methods}
    macs = np.array([count_macs(a, table.num_classes, space) for a in archs], dtype=float)
    params = np.array([count_params(a, table.num_classes, space) for a in archs], dtype=float)
    main = predicted[table.method]
    per_resolution = {}
    for r in resolutions:
        sel = np.array([a.resolution == r for a in archs])
        if sel.sum() >= 2:
            per_resolution[str(r)] = {**error_metrics(main[sel], measured[sel]),
                                      "retest_mape": error_metrics(retest[sel], measured[sel])["mape"],
                                      "n": int(sel.sum())}
    rows = [{"arch": a.to_json(), "resolution": a.resolution, "measured_ms": float(m), "retest_ms": float(b),
             "macs": int(mc), "params": int(pr), **{f"predicted_{k}_ms": float(v[i]) for k, v in predicted.items()}}
            for i, (a, m, b, mc, pr) in enumerate(zip(archs, measured, retest, macs, params))]
    return ValidationReport(
        supernet=space.name, backend=table.backend, method=table.method, samples=len(archs), seed=seed,
        predictor=error_metrics(main, measured), retest=error_metrics(retest, measured),
        other_methods={m: error_metrics(v, measured) for m, v in predicted.items() if m != table.method},
        tau_macs=kendall_tau(macs, measured), tau_params=kendall_tau(params, measured),
        per_resolution=per_resolution, rows=rows, seconds=time.time() - start,
        quiet=gate.report(2 * rounds) if gate is not None else None)


def write_report(report: ValidationReport, out_dir: str | Path, stem: str = "validation") -> dict[str, Path]:
    """`<stem>.json` (all numbers and per-arch rows) and `<stem>.png` (predicted vs measured)."""
    out = Path(out_dir)
    json_path, png_path = out / f"{stem}.json", out / f"{stem}.png"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2))
    scatter_plot(report, png_path)
    return {"json": json_path, "png": png_path}


def scatter_plot(report: ValidationReport, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = np.array([r["measured_ms"] for r in report.rows])
    predicted = np.array([r[f"predicted_{report.method}_ms"] for r in report.rows])
    resolution = np.array([r["resolution"] for r in report.rows])
    fig, ax = plt.subplots(figsize=(5.5, 5.2))
    lo, hi = min(measured.min(), predicted.min()) * 0.9, max(measured.max(), predicted.max()) * 1.1
    line = np.array([lo, hi])
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.92", label="±10%")
    ax.fill_between(line, line * 0.95, line * 1.05, color="0.82", label="±5%")
    ax.plot(line, line, "k-", lw=0.8)
    for r in sorted(set(resolution.tolist())):
        sel = resolution == r
        ax.scatter(measured[sel], predicted[sel], s=14, label=f"{r} px")
    p = report.predictor
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)", ylabel="LUT-predicted latency (ms)",
           title=f"{report.supernet} / {report.backend}: MAPE {p['mape']:.1f}%, "
                 f"τ {p['kendall_tau']:.3f}\n(test-retest MAPE {report.retest['mape']:.1f}%, "
                 f"τ {report.retest['kendall_tau']:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return Path(path)
