"""Choosing a search's best models under a measured latency budget (`autovit_ray.search.measured`): the
selection rule, the device check and the error when nothing is within, on a real strategy's evaluations
timed by test_latency's deterministic "fake" backend. The search command end to end is in
tests/test_search_real.py."""

from __future__ import annotations

import dataclasses
import random

import pytest
from test_latency import FakeBackend, fake_latency

from autovit_ray.latency import BACKENDS, BuildConfig, build_table
from autovit_ray.models import create_subnet
from autovit_ray.search import Budget, CostModel, RandomSearch, run_search
from autovit_ray.search.config import SearchConfig
from autovit_ray.search.driver import measured_best
from autovit_ray.search.measured import (
    MeasuredBudgetUnmetError,
    MeasuredCandidate,
    Measuring,
    device_differences,
    make_measuring,
    measurement_backend,
    select_within,
)
from autovit_ray.space import load_space


@pytest.fixture(scope="module")
def space():
    return load_space("xxs", input_profile="digits")


@pytest.fixture(scope="module")
def fake_table(space):
    return build_table(space, FakeBackend(), [space.input_profile.resolutions[0]], num_classes=10,
                       config=BuildConfig(rounds=1, repeats=1, references=8, folds=3, quiet_cpus=None),
                       log=lambda _m: None)


@pytest.fixture(scope="module")
def searched(space, fake_table):
    """A random search of 12 archs whose 'accuracy' is a seeded draw (the selection reads only its order)."""
    costs = CostModel(space, Budget(None, None), fake_table.predict_latency, num_classes=10)
    strategy = RandomSearch(space, costs, seed=0, max_evaluations=12)
    rng = random.Random(1)
    run_search(strategy, lambda _arch: rng.uniform(50, 90))
    return strategy


def test_select_within_keeps_the_first_top_k_within_the_budget():
    def timed(*within):
        return [MeasuredCandidate(rank=i + 1, arch=f"a{i}", val_top1=90.0 - i, table_ms=1.0, measured_ms=1.0,
                                  p10_ms=1.0, p90_ms=1.0, within_budget=w) for i, w in enumerate(within)]

    assert select_within(timed(False, True, True, True), 2) == [1, 2]
    assert select_within(timed(True, False), 3) == [0]
    assert select_within(timed(False, False), 1) == []


def test_device_differences_name_each_key_that_decides_a_latency():
    table = {"backend": "torch-cpu", "cpu_model": "AMD EPYC", "logical_cpus": 2, "torch": "2.14"}
    here = {"backend": "torch-cpu", "cpu_model": "Intel Xeon", "logical_cpus": 2, "torch": "2.13"}
    assert device_differences(table, here) == {"cpu_model": ("AMD EPYC", "Intel Xeon")}  # torch: a note only


def test_the_tables_own_backend_times_on_its_own_device_only(fake_table):
    from autovit_ray.latency import LatencyTable

    with BACKENDS.registered("fake", FakeBackend):
        assert measurement_backend(fake_table).name == "fake"
        metadata = {**fake_table.metadata, "device_fingerprint": {**fake_table.device, "logical_cpus": 512}}
        elsewhere = LatencyTable(fake_table.space, fake_table.backend, fake_table.rows, metadata)
        with pytest.raises(ValueError, match="this machine is not it \\(logical_cpus: table 512"):
            measurement_backend(elsewhere)


def _config(**changes):
    return SearchConfig(name="m", checkpoint="ck", lut="t.parquet", top_k=2, measured_candidates=5, **changes)


def test_the_best_models_are_the_best_by_validation_within_the_measured_budget(space, searched):
    ranked = searched.ranked(5)
    price = [fake_latency(create_subnet(e.arch, 10, space), (1, 3, e.arch.resolution, e.arch.resolution))
             for e in ranked]
    budget = sorted(price)[2]  # three of the five are within
    best, selection = measured_best(searched, _config(measured_latency_budget_ms=budget),
                                    Measuring(FakeBackend(), budget_ms=budget), 10)
    within = [i for i, ms in enumerate(price) if ms <= budget]
    assert [e.arch for e in best] == [ranked[i].arch for i in within[:2]]
    assert selection["chosen_ranks"] == [i + 1 for i in within[:2]]
    rows = selection["candidates"]
    assert [r["measured_ms"] for r in rows] == pytest.approx(price)
    assert [r["val_top1"] for r in rows] == [e.fitness for e in ranked]
    assert [r["table_ms"] for r in rows] == [e.latency for e in ranked]
    assert [r["within_budget"] for r in rows] == [ms <= budget for ms in price]
    assert selection["budget_ms"] == budget and selection["backend"] == "fake" and "reference" not in selection


def _price(model, resolution: int) -> float:
    return fake_latency(model, (1, 3, resolution, resolution))


def test_a_reference_timed_beside_the_candidates_sets_the_measured_budget(space, searched, fake_table):
    """--measured-budget-reference: the reference (a timm model adapted to the space's input profile) is timed
    in the candidates' run, and the budget is the factor times its latency there."""
    ranked = searched.ranked(5)
    price = [_price(create_subnet(e.arch, 10, space), e.arch.resolution) for e in ranked]
    with BACKENDS.registered("fake", FakeBackend):
        how = make_measuring(None, "mobilevit_xxs", 1.0, fake_table, space, 10)
    assert how.describe() == "1x mobilevit_xxs" and how.reference.resolution == max(space.resolutions)
    reference_ms = _price(how.reference.model, how.reference.resolution)
    factor = sorted(price)[2] / reference_ms  # three of the five within, as a factor of the reference
    how = Measuring(how.backend, reference=dataclasses.replace(how.reference, factor=factor))
    best, selection = measured_best(searched, _config(), how, 10)
    assert selection["reference"] == {"name": "mobilevit_xxs", "factor": factor, "measured_ms": pytest.approx(reference_ms),
                                      "p10_ms": pytest.approx(reference_ms), "p90_ms": pytest.approx(reference_ms)}
    assert selection["budget_ms"] == pytest.approx(sorted(price)[2])
    assert [r["within_budget"] for r in selection["candidates"]] == [ms <= sorted(price)[2] for ms in price]
    assert len(selection["candidates"]) == 5  # the reference is not a candidate
    with pytest.raises(MeasuredBudgetUnmetError, match="--measured-budget-factor 1e-06 x --measured-budget-reference "
                                                       "mobilevit_xxs, which measured"):
        measured_best(searched, _config(), Measuring(how.backend, reference=dataclasses.replace(how.reference,
                                                                                                  factor=1e-6)), 10)


def test_an_unknown_reference_or_an_unset_budget_is_one_error(space, fake_table):
    with BACKENDS.registered("fake", FakeBackend):
        with pytest.raises(ValueError, match="unknown timm model 'mobilevit_xxxl' as a reference"):
            make_measuring(None, "mobilevit_xxxl", 1.0, fake_table, space, 10)
    with pytest.raises(ValueError, match="either in ms or a reference model's latency: expected one"):
        Measuring(FakeBackend())


def test_no_candidate_within_the_measured_budget_is_one_error_with_the_table_budget_to_aim_at(space, searched):
    ranked = searched.ranked(5)
    fastest = min(ranked, key=lambda e: fake_latency(create_subnet(e.arch, 10, space),
                                                     (1, 3, e.arch.resolution, e.arch.resolution)))
    with pytest.raises(MeasuredBudgetUnmetError) as caught:
        measured_best(searched, _config(latency_budget_ms=9.0), Measuring(FakeBackend(), budget_ms=1e-6), 10)
    text = str(caught.value)
    assert "none of the 5 best candidates measured within --measured-latency-budget-ms 1e-06" in text
    assert str(fastest.arch) in text
    assert "lower --latency-budget-ms from 9 to about" in text and "under a new --name" in text


def test_candidates_are_timed_for_real_on_torch_cpu(space, searched):
    """The measurement itself on the built-in torch-cpu backend (1 thread): whole models, one row each."""
    from autovit_ray.latency import get_backend
    from autovit_ray.search.measured import measure_candidates

    ranked = searched.ranked(2)
    backend = get_backend("torch-cpu", threads=1)
    timed, budget, reference = measure_candidates(ranked, space, 10, Measuring(backend, budget_ms=1e3))
    assert budget == 1e3 and reference is None
    assert [t.rank for t in timed] == [1, 2] and [t.arch for t in timed] == [str(e.arch) for e in ranked]
    for t in timed:
        assert 0 < t.p10_ms <= t.measured_ms <= t.p90_ms < 1e3 and t.within_budget
    tight, _, _ = measure_candidates(ranked, space, 10, Measuring(backend, budget_ms=1e-6))
    assert not any(t.within_budget for t in tight)
