"""Build a latency table: time every module in isolation and in context, fit, cross-validate.

Per resolution:
1. Enumerate every module the space can produce (`modules.witness_archs`: ~85 per resolution for
   XXS) and cut each out of a real extracted subnet, with its real input shape.
2. Draw reference archs: the witnesses (so every module occurs at least once) plus `references`
   random archs from a build seed. They are the in-context data and fit the constant; validation
   never uses them (their hashes are stored in the table).
3. Time the modules and the whole reference models in ONE interleaved pass (same rounds, same
   machine load), then summarise with the round-load correction (`measure.summarize`).
4. Fit both methods and cross-validate each on the reference archs (k-fold); the table predicts
   with the method whose held-out error is lower.

In-context estimate. The paper defines a module's latency as "the whole model minus the model
with that module removed". For a transformer layer that is a depth difference (L vs L-1 layers
keep every shape); for a stage-entry or shape-changing module no single removal keeps the network
valid. Least squares over many whole models generalises the pairwise difference: with whole-model
latencies T_a = sum_k n_ak t_k + c (n_ak = how often module k occurs in arch a), the solution t_k
is the module's average removal effect over every pair of reference archs that differ in it, so
each estimate is in context and uses all measurements instead of two. Some directions are not
identifiable from whole models at all (e.g. moving time from a stem width to the MBConv layer it
always feeds); those directions never change a prediction, and a ridge prior towards the isolated
timings (scaled by their average in-context ratio) pins them. Weighting is relative (1/T), the
quantity the targets are stated in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..nn import Supernet
from ..progress import Eta
from ..space import Arch, SearchSpace
from .backends import LatencyBackend, PreparedModel
from .build_config import BuildConfig
from .extract import extract_modules
from .lut import LatencyTable, ModuleRow, choose_method
from .measure import QuietGate, calibrate_inner, describe_quiet, measure_samples, summarize
from .modules import arch_module_keys, constant_key, witness_archs

RIDGE_GRID = (0.01, 0.03, 0.1, 0.3)
Log = Callable[[str], None]


def reference_archs(space: SearchSpace, resolution: int, count: int, seed: int) -> list[Arch]:
    """The witness archs plus `count` distinct random archs at `resolution` (a fixed build seed)."""
    archs = {a.arch_hash: a for a in witness_archs(space, resolution, seed)}
    rng = random.Random(f"latency-references/{seed}/{resolution}")
    target = len(archs) + count
    for _ in range(100 * (count + 1)):
        if len(archs) >= target:
            break
        arch = dataclasses.replace(space.sample(rng), resolution=resolution)
        archs.setdefault(arch.arch_hash, arch)
    return list(archs.values())


def design_matrix(archs: Sequence[Arch], keys: Sequence[str], space: SearchSpace, num_classes: int) -> np.ndarray:
    """counts[a, k]: how many times module k occurs in arch a."""
    index = {k: i for i, k in enumerate(keys)}
    counts = np.zeros((len(archs), len(keys)))
    for a, arch in enumerate(archs):
        for key in arch_module_keys(arch, space, num_classes):
            counts[a, index[key]] += 1
    return counts


def fit_isolated(counts: np.ndarray, measured: np.ndarray, isolated: np.ndarray) -> tuple[np.ndarray, float]:
    """Module values = isolated timings; constant = median residual of the reference archs."""
    return isolated, float(np.median(measured - counts @ isolated))


def fit_in_context(counts: np.ndarray, measured: np.ndarray, isolated: np.ndarray,
                   ridge: float) -> tuple[np.ndarray, float]:
    """Relative-error least squares of whole-model latencies on module counts (plus a constant),
    with a ridge prior pulling each module towards its isolated timing times the average
    in-context/isolated ratio (see the module docstring)."""
    n, k = counts.shape
    weight = 1.0 / measured
    # The average in-context slow-down of isolated timings (scale + offset, relative least squares).
    basis = np.c_[counts @ isolated, np.ones(n)]
    scale, offset = np.linalg.lstsq(basis * weight[:, None], measured * weight, rcond=None)[0]
    prior = np.r_[isolated * max(scale, 0.1), offset]
    # Prior strength is per module, relative to the module's size: (t_k - prior_k) / prior_k.
    prior_weight = np.r_[1.0 / np.maximum(np.abs(prior[:k]), 1e-6), 0.0]
    design = np.c_[counts, np.ones(n)] * weight[:, None]
    lhs = np.r_[design, np.sqrt(ridge) * np.diag(prior_weight)]
    rhs = np.r_[measured * weight, np.sqrt(ridge) * prior_weight * prior]
    solution = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return solution[:k], float(solution[k])


def _mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - measured) / measured) * 100)


def cross_validate(fit: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]], counts: np.ndarray,
                   measured: np.ndarray, folds: int, seed: int) -> float:
    """Held-out MAPE (%) of a fitting rule over k folds of the reference archs."""
    order = np.random.default_rng(seed).permutation(len(measured))
    errors = np.zeros(len(measured))
    for fold in np.array_split(order, max(2, min(folds, len(measured)))):
        train = np.setdiff1d(order, fold)
        values, constant = fit(counts[train], measured[train])
        errors[fold] = np.abs(counts[fold] @ values + constant - measured[fold]) / measured[fold]
    return float(errors.mean() * 100)


@dataclass
class ResolutionResult:
    resolution: int
    rows: list[ModuleRow]
    references: list[dict[str, Any]]
    cv_mape: dict[str, float]
    ridge: float
    seconds: float
    quiet: dict[str, float] | None = None


def build_resolution(space: SearchSpace, backend: LatencyBackend, resolution: int, num_classes: int,
                     config: BuildConfig, log: Log = print) -> ResolutionResult:
    start = time.time()
    torch.manual_seed(config.seed)
    supernet = Supernet(space, num_classes).eval()
    archs = reference_archs(space, resolution, config.references, config.seed)
    modules: dict[str, tuple[torch.nn.Module, tuple[int, ...]]] = {}
    for arch in witness_archs(space, resolution, config.seed):
        for key, value in extract_modules(supernet.get_active_subnet(arch), arch, space, num_classes).items():
            modules.setdefault(key, value)
    keys = sorted(modules)
    log(f"  r{resolution}: {len(keys)} modules, {len(archs)} reference archs; preparing on {backend.name}")
    prepared: list[PreparedModel] = []
    try:
        for key in keys:
            prepared.append(backend.prepare(*modules[key]))
        inner = [calibrate_inner(p) for p in prepared]
        for arch in archs:
            prepared.append(backend.prepare(supernet.get_active_subnet(arch).eval(),
                                            (1, 3, resolution, resolution)))
        inner += [1] * len(archs)
        log(f"  r{resolution}: timing {config.rounds} interleaved rounds x {config.repeats} repeats")
        eta = Eta(total=config.rounds, unit="round")
        gate = QuietGate(config.quiet_cpus, config.quiet_wait_s) if config.quiet_cpus is not None else None
        samples = measure_samples(prepared, config.rounds, config.repeats, inner, seed=config.seed,
                                  progress=lambda r, n: log(f"    round {r}/{n} ({eta.phrase(r)})") if r % 4 == 0 else None,
                                  gate=gate)
    finally:
        for p in prepared:
            p.close()
    quiet = gate.report(config.rounds) if gate is not None else None
    if quiet is not None:
        log(f"  r{resolution}: {describe_quiet(quiet)}")
    stats = summarize(samples, config.drift_correction, gate.quiet_rounds(config.rounds) if gate else None)
    module_stats, arch_stats = stats[:len(keys)], stats[len(keys):]
    isolated = np.array([s.median_ms for s in module_stats])
    measured = np.array([s.median_ms for s in arch_stats])
    counts = design_matrix(archs, keys, space, num_classes)

    def isolated_rule(c: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, float]:
        return fit_isolated(c, m, isolated)

    def in_context_rule(lam: float) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]:
        return lambda c, m: fit_in_context(c, m, isolated, lam)

    cv = {"isolated": cross_validate(isolated_rule, counts, measured, config.folds, config.seed)}
    ridge_cv = {lam: cross_validate(in_context_rule(lam), counts, measured, config.folds, config.seed)
                for lam in RIDGE_GRID}
    ridge = min(ridge_cv, key=ridge_cv.__getitem__)
    cv["in_context"] = ridge_cv[ridge]
    fits = {"isolated": fit_isolated(counts, measured, isolated),
            "in_context": fit_in_context(counts, measured, isolated, ridge)}
    now = time.time()
    rows: list[ModuleRow] = []
    for method, (values, constant) in fits.items():
        for key, value, st in zip(keys, values, module_stats):
            rows.append(ModuleRow(method, key, float(value), modules[key][1],
                                  st.to_dict() if method == "isolated" else None, now))
        rows.append(ModuleRow(method, constant_key(resolution), constant, (), None, now))
    references = [{"arch": a.to_json(), "arch_hash": a.arch_hash, "measured_ms": float(m)}
                  for a, m in zip(archs, measured)]
    seconds = time.time() - start
    log(f"  r{resolution}: done in {seconds:.0f} s; held-out MAPE on reference archs: isolated "
        f"{cv['isolated']:.2f}%, in-context {cv['in_context']:.2f}% (ridge {ridge:g})")
    return ResolutionResult(resolution, rows, references, cv, ridge, seconds, quiet)


def build_table(space: SearchSpace, backend: LatencyBackend, resolutions: Sequence[int] | None = None,
                num_classes: int = 1000, config: BuildConfig | None = None, log: Log = print) -> LatencyTable:
    """Profile every module of `space` at each resolution on `backend` and return the table."""
    config = config or BuildConfig()
    resolutions = list(resolutions or space.resolutions)
    bad = [r for r in resolutions if r not in space.resolutions]
    if bad:
        raise ValueError(f"resolutions {bad} are not in space {space.name!r} (input profile "
                         f"{space.input_profile.name!r}: {list(space.resolutions)})")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    backend.check_available()
    results = [build_resolution(space, backend, r, num_classes, config, log) for r in resolutions]
    method, cv = choose_method({str(r.resolution): r.cv_mape for r in results})
    device = backend.fingerprint()
    metadata = {
        "backend_settings": backend.settings(), "device_fingerprint": device,
        "device_id": device_id(device), "num_classes": num_classes, "method": method,
        "cv_mape": {str(r.resolution): r.cv_mape for r in results}, "cv_mape_mean": cv,
        "ridge": {str(r.resolution): r.ridge for r in results},
        "build_seconds": {str(r.resolution): r.seconds for r in results},
        "quiet": {str(r.resolution): r.quiet for r in results},
        "config": dataclasses.asdict(config), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "references": [ref for r in results for ref in r.references]}
    log(f"method: {method} (held-out MAPE isolated {cv['isolated']:.2f}%, in-context {cv['in_context']:.2f}%)")
    return LatencyTable(space, backend.name, [row for r in results for row in r.rows], metadata, method=method)


def device_id(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:12]
