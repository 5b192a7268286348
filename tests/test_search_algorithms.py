"""Search strategies on synthetic objectives with a known optimum (no Ray, no supernet)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from autovit_ray.search import (
    Budget,
    BudgetUnreachableError,
    CoarseConfig,
    CoarseToFineSearch,
    CostModel,
    EvolutionConfig,
    EvolutionSearch,
    RandomSearch,
    arch_distance,
    dominates,
    non_dominated_sort,
    pareto_front,
    run_search,
    select_skeletons,
)
from autovit_ray.search.synthetic import make_synthetic_problem

SMALL = EvolutionConfig(population_size=10, generations=6, num_parents=4)
SMALL_PLAIN = EvolutionConfig(population_size=10, generations=6, num_parents=4, p_depth=0.1, p_block=0.1)
SMALL_COARSE = CoarseConfig(num_samples=300, num_skeletons=4)


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem("xxs", seed=0)


def small_strategy(kind, problem, seed=0, **kwargs):
    costs = problem.cost_model()
    if kind == "random":
        return RandomSearch(problem.space, costs, max_evaluations=kwargs.pop("max_evaluations", 60),
                            seed=seed, **kwargs)
    if kind == "evolution":
        return EvolutionSearch(problem.space, costs, config=SMALL_PLAIN, seed=seed, **kwargs)
    return CoarseToFineSearch(problem.space, costs, config=SMALL, coarse=SMALL_COARSE, seed=seed, **kwargs)


KINDS = ["random", "evolution", "coarse_to_fine"]
CLASSES = {"random": RandomSearch, "evolution": EvolutionSearch, "coarse_to_fine": CoarseToFineSearch}


# -- Pareto ----------------------------------------------------------------------------------


def test_pareto_front_is_non_dominated_and_covers_the_rest():
    rng = random.Random(0)
    points = [(rng.random(), rng.random(), rng.randint(0, 5)) for _ in range(300)]
    points += [points[0], points[0]]  # equal points: neither dominates the other
    front = pareto_front(points)
    assert all(not dominates(points[i], points[j]) for i in front for j in front)
    outside = set(range(len(points))) - set(front)
    assert outside and all(any(dominates(points[i], points[j]) for i in front) for j in outside)
    brute = [j for j in range(len(points)) if not any(dominates(p, points[j]) for p in points)]
    assert front == brute


def test_non_dominated_sort_ranks():
    points = [(1, 1), (2, 2), (0, 3), (3, 3), (1, 1)]
    assert non_dominated_sort(points) == [[0, 2, 4], [1], [3]]
    assert non_dominated_sort(points, limit=2) == [[0, 2, 4]]


# -- rules every strategy follows ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_budget_respected_no_duplicates_and_budget_of_evaluations(problem, kind):
    strategy = small_strategy(kind, problem)
    result = run_search(strategy, problem.accuracy)
    costs = problem.cost_model()
    assert len(result.history) == 60 == strategy.max_evaluations
    assert strategy.finished and strategy.ask() is None
    assert all(costs.fits(e.arch) for e in result.history)
    b = problem.budget
    assert all(e.params <= b.max_params and e.latency <= b.max_latency for e in result.history)
    assert len({e.arch.arch_hash for e in result.history}) == len(result.history)
    # every accepted proposal was evaluated; the others repeated one or broke the budget
    p = strategy.proposals
    assert p["proposed"] == len(result.history) + p["duplicate"] + p["over_budget"] and p["over_budget"] > 0
    assert p["coarse_screened"] == (SMALL_COARSE.num_samples if kind == "coarse_to_fine" else 0)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_under_a_seed(problem, kind):
    runs = [run_search(small_strategy(kind, problem, seed=s), problem.accuracy).history for s in (3, 3, 4)]
    hashes = [[e.arch.arch_hash for e in h] for h in runs]
    assert hashes[0] == hashes[1]
    assert hashes[0] != hashes[2]


def test_evolution_and_coarse_to_fine_beat_random_at_equal_budget():
    wins = {"evolution": 0, "coarse_to_fine": 0}
    for seed in range(4):
        p = make_synthetic_problem("xxs", seed=seed)
        config = EvolutionConfig(population_size=20, generations=8, num_parents=5)
        budget = config.total_evaluations
        random_best = run_search(RandomSearch(p.space, p.cost_model(), budget, seed=seed), p.accuracy).best
        plain = EvolutionSearch(p.space, p.cost_model(), EvolutionConfig(20, 8, 5, p_depth=0.1, p_block=0.1),
                                seed=seed)
        c2f = CoarseToFineSearch(p.space, p.cost_model(), config, CoarseConfig(500, 5), seed=seed)
        for name, strategy in (("evolution", plain), ("coarse_to_fine", c2f)):
            result = run_search(strategy, p.accuracy)
            assert len(result.history) == budget
            wins[name] += result.best.fitness > random_best.fitness
    assert wins == {"evolution": 4, "coarse_to_fine": 4}


@pytest.mark.parametrize("kind", KINDS)
def test_unreachable_budget_raises_naming_the_closest_arch(problem, kind):
    costs = CostModel(problem.space, Budget(max_params=10_000), problem.latency)
    with pytest.raises(BudgetUnreachableError, match="closest was xxs_r") as info:
        CLASSES[kind](problem.space, costs, max_sample_tries=50)
    assert isinstance(info.value, ValueError)
    assert str(problem.space.smallest()) in str(info.value)  # the smallest arch is the closest here


def test_latency_budget_needs_a_latency_function(problem):
    with pytest.raises(ValueError, match="latency function"):
        CostModel(problem.space, Budget(max_latency=5.0))


def test_tell_rejects_an_arch_that_was_not_asked(problem):
    strategy = small_strategy("random", problem)
    arch = strategy.ask()
    strategy.tell(arch, 0.5)
    with pytest.raises(ValueError, match="not asked, or was already told"):
        strategy.tell(arch, 0.5)


# -- generations, failures, concurrency ------------------------------------------------------


def test_generation_waits_for_all_members_and_failures_do_not_shrink_it(problem):
    strategy = small_strategy("coarse_to_fine", problem)
    first = [strategy.ask() for _ in range(10)]
    assert all(first) and strategy.ask() is None and not strategy.exhausted  # waits for gen 0
    for i, arch in enumerate(first[:-1]):
        strategy.tell(arch, None if i % 3 == 0 else problem.accuracy(arch))
    assert strategy.ask() is None  # one member still out
    strategy.tell(first[-1], float("nan"))  # NaN counts as a failure
    second = []
    while (arch := strategy.ask()) is not None:
        second.append(arch)
    assert len(second) == 10 and strategy.generation == 1
    assert not {a.arch_hash for a in second} & {a.arch_hash for a in first}  # failed archs not retried
    failed = [e for e in strategy.history if not e.ok]
    assert len(failed) == 4 and all(e.fitness is None for e in failed)  # members 0, 3, 6 and the NaN


def test_all_failed_generation_restarts_from_random_archs(problem):
    strategy = small_strategy("evolution", problem)
    for _ in range(10):
        strategy.tell(strategy.ask(), None)
    nxt = [strategy.ask() for _ in range(10)]
    assert all(nxt) and strategy.best() is None
    assert all(problem.cost_model().fits(a) for a in nxt)


def test_out_of_order_results_give_the_same_search_as_in_order(problem):
    """A generation's results may arrive in any order (concurrent trials): the search is the same."""
    def drive(shuffle: bool):
        strategy = small_strategy("coarse_to_fine", problem, seed=1)
        rng = random.Random(7)
        while not strategy.finished:
            batch = []
            while (arch := strategy.ask()) is not None:
                batch.append(arch)
            if shuffle:
                rng.shuffle(batch)
            for arch in batch:
                strategy.tell(arch, problem.accuracy(arch))
        return sorted((e.generation, e.arch.arch_hash) for e in strategy.history)

    assert drive(shuffle=False) == drive(shuffle=True)


def test_run_search_counts_exceptions_as_failures(problem):
    def flaky(arch):
        if int(arch.arch_hash, 16) % 3 == 0:
            raise RuntimeError("evaluator crashed")
        return problem.accuracy(arch)

    result = run_search(small_strategy("evolution", problem), flaky)
    failed = [e for e in result.history if not e.ok]
    assert len(result.history) == 60 and failed
    assert all(int(e.arch.arch_hash, 16) % 3 == 0 for e in failed)
    with pytest.raises(RuntimeError, match="evaluator crashed"):
        run_search(small_strategy("evolution", problem), flaky, catch_errors=False)


# -- state -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trips_through_json_and_resumes_exactly(problem, kind):
    uninterrupted = small_strategy(kind, problem, seed=2)
    reference = run_search(uninterrupted, problem.accuracy).history

    first = small_strategy(kind, problem, seed=2)
    run_search(first, problem.accuracy, max_evaluations=23)  # mid-generation (population 10)
    lost = [first.ask() for _ in range(2)]  # in flight when the search is interrupted
    state = json.loads(json.dumps(first.state_dict()))

    resumed = small_strategy(kind, problem, seed=2)
    resumed.load_state_dict(state)
    assert [a.arch_hash for a in resumed.in_flight()] == [a.arch_hash for a in lost]
    result = run_search(resumed, problem.accuracy)  # evaluates the lost ones first, then goes on
    assert [e.arch.arch_hash for e in result.history] == [e.arch.arch_hash for e in reference]
    assert [e.fitness for e in result.history] == [e.fitness for e in reference]
    if kind == "coarse_to_fine":
        assert resumed.skeletons == first.skeletons
    assert resumed.proposals == uninterrupted.proposals  # the counts survive the resume


def test_state_saved_under_the_old_strategy_name_loads(problem):
    """States written before the names were unified say 'coarse_to_fine'; they still resume."""
    first = small_strategy("coarse_to_fine", problem, seed=0)
    run_search(first, problem.accuracy, max_evaluations=5)
    state = first.state_dict()
    assert state["settings"]["kind"] == "coarse-to-fine"
    state["settings"]["kind"] = "coarse_to_fine"
    resumed = small_strategy("coarse_to_fine", problem, seed=0)
    resumed.load_state_dict(state)
    assert [e.arch.arch_hash for e in resumed.history] == [e.arch.arch_hash for e in first.history]


def test_state_from_other_settings_is_refused(problem):
    state = small_strategy("evolution", problem, seed=0).state_dict()
    with pytest.raises(ValueError, match="seed"):
        small_strategy("evolution", problem, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="kind"):
        small_strategy("coarse_to_fine", problem, seed=0).load_state_dict(state)


# -- coarse stage ----------------------------------------------------------------------------


def test_skeletons_are_the_highest_utilisation_archs_kept_apart(problem):
    costs = problem.cost_model()
    rng = random.Random(0)
    feasible = [a for a in (problem.space.sample(rng) for _ in range(400)) if costs.fits(a)]
    top = max(feasible, key=costs.utilisation)
    # near-copies of the top arch that still fit: pure utilisation ranking would keep them
    copies = [c for c in (problem.space.mutate(top, rng, 0.0, 0.05) for _ in range(200))
              if costs.fits(c) and 0 < arch_distance(c, top) < 3]
    candidates = feasible + copies
    rank = {a.arch_hash: (-costs.utilisation(a), a.arch_hash) for a in candidates}
    by_rank = sorted({a.arch_hash: a for a in candidates}.values(), key=lambda a: rank[a.arch_hash])
    leader = by_rank[0]
    near = [a for a in by_rank[1:] if arch_distance(a, leader) < 3]
    assert len(near) >= 2 and rank[near[0].arch_hash] < rank[by_rank[5].arch_hash]  # clusters at the top

    skeletons = select_skeletons(candidates, costs, count=5, min_distance=3)
    assert skeletons[0] == leader
    assert not {a.arch_hash for a in near} & {a.arch_hash for a in skeletons}
    assert all(arch_distance(a, b) >= 3 for i, a in enumerate(skeletons) for b in skeletons[i + 1:])
    far = [a for a in by_rank if arch_distance(a, leader) >= 3]
    assert skeletons[1] == far[0]  # the best-ranked arch far enough from the first
    # without diversity the ranking is by utilisation alone
    assert select_skeletons(candidates, costs, count=5, min_distance=0) == by_rank[:5]
    # too few distant candidates: the rest is filled in ranking order
    filled = select_skeletons([leader, *near], costs, count=3, min_distance=3)
    assert filled == [leader, *near[:2]]


def test_coarse_to_fine_starts_from_its_skeletons(problem):
    strategy = small_strategy("coarse_to_fine", problem)
    costs = problem.cost_model()
    assert len(strategy.skeletons) == 4
    assert all(costs.fits(s) for s in strategy.skeletons)
    assert [strategy.ask() for _ in range(4)] == strategy.skeletons
    utilisations = [costs.utilisation(s) for s in strategy.skeletons]
    assert utilisations[0] == max(utilisations) and min(utilisations) > 0.9


# -- multi-objective -------------------------------------------------------------------------


def test_dominance_selection_keeps_a_non_dominated_front(problem):
    strategy = small_strategy("coarse_to_fine", problem, selection="dominance")
    result = run_search(strategy, problem.accuracy)
    front, ok = result.pareto_front, [e for e in result.history if e.ok]
    assert front and len(front) < len(ok)
    assert all(not dominates(a.objectives(), b.objectives()) for a in front for b in front)
    front_ids = {id(e) for e in front}
    assert all(any(dominates(f.objectives(), e.objectives()) for f in front)
               for e in ok if id(e) not in front_ids)
    assert len(front[0].objectives()) == 3  # accuracy, latency, parameters
    # parents come from the first fronts
    parents = strategy.ranked(4)
    assert {id(e) for e in parents} <= front_ids or len(front) < 4


def test_the_old_selection_name_pareto_still_works_and_old_states_load(problem):
    """`selection="pareto"` was renamed "dominance" ("pareto" names only the Pareto front): the old
    name warns and means the same, and a state saved under it resumes."""
    with pytest.warns(FutureWarning, match="selection='pareto' is deprecated: it was renamed selection='dominance'"):
        old = small_strategy("coarse_to_fine", problem, selection="pareto")
    assert old.selection == "dominance"
    state = json.loads(json.dumps(old.state_dict()))
    state["settings"]["selection"] = "pareto"  # as older versions saved it
    resumed = small_strategy("coarse_to_fine", problem, selection="dominance")
    resumed.load_state_dict(state)
    assert resumed.settings() == old.settings()


# -- synthetic problem and purity ------------------------------------------------------------


def test_synthetic_optimum_is_the_target(problem):
    costs = problem.cost_model()
    assert problem.accuracy(problem.target) == pytest.approx(problem.optimum)
    assert costs.fits(problem.target) and costs.utilisation(problem.target) >= 0.95
    rng = random.Random(1)
    others = [problem.space.sample(rng) for _ in range(200)]
    assert all(problem.accuracy(a) < problem.optimum for a in others if a != problem.target)


def test_pure_modules_import_no_ray_or_mlflow():
    code = ("import sys, autovit_ray.search, autovit_ray.search.synthetic;"
            "bad = [m for m in ('ray', 'mlflow', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
