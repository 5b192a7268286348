"""The statistics the platform reports, one implementation each, used by the product and the benchmarks.

- `kendall_tau` (tau-b: ties counted as scipy counts them) and `spearman_rho` (Pearson correlation of
  average ranks): do two scores order the same items alike? NaN when one side is constant (no order).
- `rank_correlation`: both, each with a percentile bootstrap interval that resamples the pairs.
- `paired_tau_difference`: two predictors of the same truth: the difference of their Kendall taus,
  with a bootstrap interval that resamples the items once for both (the truth's noise is shared, so
  the difference can be surer than the two taus' separate intervals suggest).
- `paired_difference`: two classifiers on the same images: the difference of their top-1 (points),
  a percentile bootstrap interval over images, and McNemar's exact test on the discordant images.
- `welch_interval`: two independent groups of runs (seeds): the difference of their means with
  Welch's t interval (unequal variances, Welch-Satterthwaite degrees of freedom).
- `noise_ceiling_tau`: the Kendall tau a perfect predictor reaches against a truth measured with
  run-to-run noise: the ceiling of any predictor's tau against that truth.

tests/test_stats.py checks each against scipy or a closed form. numpy and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _pair(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, what: str,
          minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size < minimum:
        raise ValueError(f"{what} needs two equal-length sequences of >= {minimum} values, got "
                         f"{a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{what}: the values must be finite numbers")
    return a, b


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-b over all pairs, O(n^2) (fine for a few thousand points); NaN if a side is constant."""
    a, b = _pair(x, y, "kendall_tau")
    upper = np.triu_indices(a.size, 1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    denominator = math.sqrt(float(np.count_nonzero(da)) * float(np.count_nonzero(db)))
    return float(np.sum(da * db) / denominator) if denominator else math.nan


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(v.size)
    ranks[order] = np.arange(1, v.size + 1)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman_rho(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho (Pearson correlation of average ranks); NaN if a side is constant."""
    a, b = _pair(x, y, "spearman_rho")
    ra, rb = _average_ranks(a) - (a.size + 1) / 2, _average_ranks(b) - (b.size + 1) / 2
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / denominator) if denominator else math.nan


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The central `level` percentile interval of bootstrap replicates (None without any)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    return float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))


def _bounding(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    """`interval`, or None where it has no width: every replicate gave the same value, as every resample
    of a perfectly ordered sample does (tau 1 [1, 1] at any n), which bounds nothing."""
    return interval if interval is not None and interval[0] < interval[1] else None


def rank_correlation(x: Sequence[float], y: Sequence[float], resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """Kendall tau-b and Spearman rho of paired scores, each with a percentile bootstrap interval over
    resampled pairs (replicates in which a side is constant have no order and are left out). A
    statistic is None where a whole side is constant; an interval is None where the replicates leave
    none, or all agree (a perfectly ordered sample)."""
    a, b = _pair(x, y, "rank_correlation", minimum=3)
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for idx in rng.integers(0, a.size, size=(resamples, a.size)):
        xa, yb = a[idx], b[idx]
        if np.ptp(xa) > 0 and np.ptp(yb) > 0:
            taus.append(kendall_tau(xa, yb))
            rhos.append(spearman_rho(xa, yb))

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {"kendall_tau": finite(kendall_tau(a, b)), "kendall_tau_ci": _bounding(percentile_interval(taus, level)),
            "spearman_rho": finite(spearman_rho(a, b)), "spearman_rho_ci": _bounding(percentile_interval(rhos, level)),
            "n": int(a.size), "resamples": len(taus)}


def paired_tau_difference(a: Sequence[float], b: Sequence[float], truth: Sequence[float], resamples: int = 10_000,
                          seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """tau(a, truth) - tau(b, truth) for two predictors scored on the same items, with a percentile
    bootstrap interval over items resampled once for both (replicates in which any side is constant
    are left out; no interval where all replicates agree on a nonzero value: the taus at their bounds, as
    three items ordered opposite ways give, 2 [2, 2]; two predictors that rank alike give 0 [0, 0]).
    `significant`: the interval excludes 0. `difference` is None where a tau is."""
    x, t = _pair(a, truth, "paired_tau_difference", minimum=3)
    y, _ = _pair(b, truth, "paired_tau_difference", minimum=3)
    rng = np.random.default_rng(seed)
    diffs = []
    for idx in rng.integers(0, t.size, size=(resamples, t.size)):
        xa, yb, tt = x[idx], y[idx], t[idx]
        if np.ptp(xa) > 0 and np.ptp(yb) > 0 and np.ptp(tt) > 0:
            diffs.append(kendall_tau(xa, tt) - kendall_tau(yb, tt))
    difference = kendall_tau(x, t) - kendall_tau(y, t)
    interval = percentile_interval(diffs, level)
    if interval is not None and interval[0] == interval[1] != 0.0:
        interval = None
    low, high = interval if interval else (None, None)
    return {"difference": difference if math.isfinite(difference) else None, "low": low, "high": high,
            "n": int(t.size), "resamples": len(diffs),
            "significant": interval is not None and not interval[0] <= 0.0 <= interval[1]}


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: under 'equally accurate', each of the n = a_only + b_only
    discordant images favours either classifier with probability 1/2 (a binomial test)."""
    if a_only < 0 or b_only < 0 or int(a_only) != a_only or int(b_only) != b_only:
        raise ValueError(f"discordant counts must be integers >= 0, got {a_only} and {b_only}")
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(a_correct: Sequence[bool], b_correct: Sequence[bool], resamples: int = 10_000,
                      seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Top-1 of a minus top-1 of b on the same images, in points: the estimate, a percentile bootstrap
    interval over images, the discordant counts and McNemar's exact p-value. `significant`: the
    interval excludes 0 and McNemar's p is under 1 - `level`: both tests agree (on few discordant
    images the bootstrap interval can exclude 0 where McNemar does not: 3 of 5 images, p = 0.25)."""
    x, y = _pair(a_correct, b_correct, "paired_difference", minimum=1)
    if not (np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all()):
        raise ValueError("paired_difference takes per-image correctness (booleans or 0/1)")
    diffs = x - y
    rng = np.random.default_rng(seed)
    boot = diffs[rng.integers(0, diffs.size, size=(resamples, diffs.size))].mean(axis=1) * 100
    low, high = percentile_interval(boot, level)  # type: ignore[misc]
    a_only, b_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    p_value = mcnemar_exact_p(a_only, b_only)
    return {"difference": float(diffs.mean() * 100), "low": low, "high": high, "a_only": a_only,
            "b_only": b_only, "images": int(diffs.size), "mcnemar_p": p_value,
            "significant": not low <= 0.0 <= high and p_value < 1 - level}


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """mean(a) - mean(b) with Welch's t interval (two independent samples, unequal variances), e.g.
    the test top-1 of several training seeds of two models. Needs >= 2 values on each side, not
    both constant."""
    from scipy.stats import t as student_t

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or x.size < 2 or y.size < 2:
        raise ValueError(f"welch_interval needs >= 2 values per group (seeds), got {x.size} and {y.size}")
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if va + vb == 0:
        raise ValueError("welch_interval: both groups are constant; the interval is undefined")
    df = (va + vb) ** 2 / ((va**2 / (x.size - 1) if va else 0.0) + (vb**2 / (y.size - 1) if vb else 0.0))
    diff, half = float(x.mean() - y.mean()), float(student_t.ppf((1 + level) / 2, df) * math.sqrt(va + vb))
    return {"difference": diff, "low": diff - half, "high": diff + half, "df": float(df),
            "n_a": int(x.size), "n_b": int(y.size), "significant": not diff - half <= 0.0 <= diff + half}


def noise_ceiling_tau(values: Sequence[float], sd: float, draws: int = 2000, seed: int = 0) -> float:
    """The mean Kendall tau between the noise-free scores behind `values` and `values` measured again
    with independent noise of standard deviation `sd` (e.g. stand-alone accuracies and their seed
    noise): what a perfect predictor of the noise-free scores would reach against such a truth. The
    noise-free scores are `values` shrunk toward their mean until their variance is the observed
    variance minus sd^2 (observed = noise-free + noise); when the noise explains all of it, no order is
    left to find and the ceiling is 0."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size < 2 or not np.isfinite(v).all():
        raise ValueError(f"noise_ceiling_tau needs >= 2 finite values, got {v.size}")
    if not (math.isfinite(sd) and sd >= 0) or draws < 1:
        raise ValueError(f"noise_ceiling_tau needs sd >= 0 and draws >= 1, got sd {sd} and draws {draws}")
    observed = float(v.var(ddof=1))
    if observed == 0 or observed <= sd**2:
        return 0.0
    clean = v.mean() + (v - v.mean()) * math.sqrt((observed - sd**2) / observed)
    rng = np.random.default_rng(seed)
    return float(np.mean([kendall_tau(clean, clean + rng.normal(0.0, sd, v.size)) for _ in range(draws)]))


__all__ = ["kendall_tau", "mcnemar_exact_p", "noise_ceiling_tau", "paired_difference", "percentile_interval",
           "rank_correlation", "spearman_rho", "welch_interval"]
