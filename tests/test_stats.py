"""The reported statistics against independent references: scipy on random inputs with ties, and
closed forms on cases with a known answer."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from autovit_ray.stats import (
    kendall_tau,
    mcnemar_exact_p,
    noise_ceiling_tau,
    paired_difference,
    paired_tau_difference,
    rank_correlation,
    spearman_rho,
    welch_interval,
)

# few distinct values, so that ties are common
pairs = st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 5), min_size=n, max_size=n), st.lists(st.integers(0, 5), min_size=n, max_size=n)))


def _scipy(fn, x, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant input and returns NaN
        return float(fn(x, y).statistic)


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_kendall_tau_b_and_spearman_equal_scipys_with_ties(xy):
    x, y = xy
    for ours, theirs in ((kendall_tau, scipy_stats.kendalltau), (spearman_rho, scipy_stats.spearmanr)):
        expected = _scipy(theirs, x, y)
        got = ours(x, y)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_constant_input_has_no_order_and_bad_input_is_refused():
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(spearman_rho([1, 2, 3], [4, 4, 4]))
    result = rank_correlation([1, 1, 1, 1], [1, 2, 3, 4], resamples=50)
    assert result["kendall_tau"] is None and result["kendall_tau_ci"] is None and result["resamples"] == 0
    with pytest.raises(ValueError, match="equal-length sequences of >= 2 values"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        spearman_rho([1, float("nan")], [1, 2])


def test_rank_correlation_interval_holds_the_estimate_and_perfect_order_gives_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=0.5, size=30)
    r = rank_correlation(x, y, resamples=2000)
    assert r["kendall_tau_ci"][0] <= r["kendall_tau"] <= r["kendall_tau_ci"][1]
    assert r["spearman_rho_ci"][0] <= r["spearman_rho"] <= r["spearman_rho_ci"][1]
    perfect = rank_correlation(x, 2 * x + 1, resamples=200)
    # every resample of a perfectly ordered sample is ordered too: a zero-width interval bounds nothing
    assert perfect["kendall_tau"] == 1.0 and perfect["kendall_tau_ci"] is None and perfect["spearman_rho_ci"] is None


def test_paired_tau_difference_is_the_difference_of_taus_and_shares_the_resamples():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=40)
    good, poor = truth + rng.normal(scale=0.3, size=40), truth + rng.normal(scale=3.0, size=40)
    r = paired_tau_difference(good, poor, truth, resamples=2000)
    assert r["difference"] == pytest.approx(kendall_tau(good, truth) - kendall_tau(poor, truth))
    assert r["low"] <= r["difference"] <= r["high"] and r["significant"] and r["n"] == 40
    # the same predictor against itself: every replicate differs by exactly 0
    same = paired_tau_difference(good, good, truth, resamples=200)
    assert (same["difference"], same["low"], same["high"], same["significant"]) == (0.0, 0.0, 0.0, False)
    # three items ranked opposite ways: every replicate is +2, at tau's bounds: no interval, not significant
    tiny = paired_tau_difference([1, 2, 3], [3, 2, 1], [1, 2, 3], resamples=200)
    assert tiny["difference"] == 2.0 and (tiny["low"], tiny["high"], tiny["significant"]) == (None, None, False)
    # two predictors sharing most of their noise: the paired interval is narrower than either tau's own
    shared = truth + rng.normal(scale=1.0, size=40)
    a, b = shared + rng.normal(scale=0.1, size=40), shared + rng.normal(scale=0.1, size=40)
    paired = paired_tau_difference(a, b, truth, resamples=2000)
    alone = rank_correlation(a, truth, resamples=2000)["kendall_tau_ci"]
    assert paired["high"] - paired["low"] < (alone[1] - alone[0]) / 2
    with pytest.raises(ValueError, match="paired_tau_difference needs two equal-length"):
        paired_tau_difference([1, 2, 3], [1, 2], [1, 2, 3])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_exact_equals_scipys_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-9)


def test_paired_difference_known_answers():
    # the same classifier: no difference, an interval of exactly zero, p = 1
    same = paired_difference([1, 0, 1, 1], [1, 0, 1, 1], resamples=500)
    assert same["difference"] == 0 and (same["low"], same["high"]) == (0.0, 0.0) and same["mcnemar_p"] == 1.0
    assert not same["significant"]
    # a right on 30 more of 100 images, b never right where a is wrong: +30 points, clearly significant
    a = [1] * 80 + [0] * 20
    b = [1] * 50 + [0] * 50
    r = paired_difference(a, b, resamples=2000)
    assert r["difference"] == pytest.approx(30.0) and (r["a_only"], r["b_only"]) == (30, 0)
    assert r["significant"] and r["low"] > 0 and r["mcnemar_p"] == pytest.approx(2 / 2**30)
    # two images of 359 (the demo's verdict): noise
    small = paired_difference([1] * 353 + [0] * 6, [1] * 351 + [0] * 8, resamples=2000)
    assert not small["significant"] and small["mcnemar_p"] == 0.5
    # 3 of 5 images right for a only: the bootstrap interval excludes 0, McNemar (p = 0.25) does not agree
    few = paired_difference([1, 1, 1, 0, 0], [0, 0, 0, 0, 0], resamples=2000)
    assert few["low"] > 0 and few["mcnemar_p"] == pytest.approx(0.25) and not few["significant"]
    with pytest.raises(ValueError, match="per-image correctness"):
        paired_difference([0.5, 1], [1, 1])


def test_welch_interval_equals_scipys():
    a, b = [84.1, 83.6, 84.4], [82.9, 83.3, 82.2, 83.0]
    ours = welch_interval(a, b)
    reference = scipy_stats.ttest_ind(a, b, equal_var=False)
    low, high = reference.confidence_interval(0.95)
    assert (ours["low"], ours["high"]) == (pytest.approx(low), pytest.approx(high))
    assert ours["df"] == pytest.approx(reference.df) and ours["significant"] == (low > 0 or high < 0)
    # a closed form: equal sizes and variances give df = 2n - 2 and half-width t * sqrt(2 s^2 / n)
    r = welch_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    half = scipy_stats.t.ppf(0.975, 4) * math.sqrt(2 * 1.0 / 3)
    assert r["df"] == pytest.approx(4) and r["high"] - r["difference"] == pytest.approx(half)
    with pytest.raises(ValueError, match=">= 2 values per group"):
        welch_interval([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="both groups are constant"):
        welch_interval([1.0, 1.0], [2.0, 2.0])


def test_noise_ceiling_tau_closed_form_and_limits():
    # two scores 0 and 2 (sample variance 2) with noise sd 1: the noise-free gap is sqrt(2), kept in
    # order with probability Phi(sqrt(2) / (1 * sqrt(2))) = Phi(1), so tau = 2 Phi(1) - 1
    expected = 2 * scipy_stats.norm.cdf(1.0) - 1
    assert noise_ceiling_tau([0.0, 2.0], 1.0, draws=20_000) == pytest.approx(expected, abs=0.015)
    values = [78.3, 78.8, 79.1, 79.7, 80.2, 80.6]
    assert noise_ceiling_tau(values, 0.0) == 1.0
    ceilings = [noise_ceiling_tau(values, sd, draws=4000) for sd in (0.15, 0.4, 0.8)]
    assert 1.0 > ceilings[0] > ceilings[1] > ceilings[2] > 0.0
    assert noise_ceiling_tau(values, 5.0) == 0.0  # the noise explains the whole spread
    with pytest.raises(ValueError, match="sd >= 0"):
        noise_ceiling_tau(values, -1.0)
    with pytest.raises(ValueError, match=">= 2 finite values"):
        noise_ceiling_tau([1.0], 0.1)
