"""Search strategies on a synthetic objective with a known optimum (issue 5).

1. Evaluations each strategy needs to reach 99% of the optimum (random search, plain evolution,
   coarse-to-fine; paper settings: population 50, 20 generations, top 10 parents, so 1,000
   evaluations), median over seeds, with the best fitness found after 100 / 300 / 1,000
   evaluations. The objective (`autovit_ray.search.synthetic`) peaks at 1.0 on a hidden target
   arch of the XXS space; the target sits near the budget frontier ('frontier', the premise of
   the coarse stage) or well inside it ('interior', a control).
2. The searcher's own cost per suggestion inside Ray Tune (time in `suggest` + `on_trial_complete`),
   next to Tune's wall time per trial.

    .venv/bin/python bench/search_synthetic.py            # full run, prints Markdown tables
    .venv/bin/python bench/search_synthetic.py --seeds 2 --budget 300 --tune-trials 20   # smoke
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

from autovit_ray.search import SearchStrategy, make_strategy, run_search
from autovit_ray.search.config import SearchConfig
from autovit_ray.search.synthetic import SyntheticProblem, make_synthetic_problem

STRATEGY_NAMES = ("random", "evolution", "coarse-to-fine")
CHECKPOINTS = (100, 300, 1000)


def build(kind: str, problem: SyntheticProblem, budget: int, seed: int, generations: int | None = None) -> SearchStrategy:
    """The strategy `kind` as `python -m autovit_ray.search` builds it: population 50, `budget` evaluations."""
    settings = SearchConfig(name="synthetic", checkpoint="-", generations=generations or max(1, budget // 50),
                            max_evaluations=budget, seed=seed)
    return make_strategy(kind, problem.space, problem.cost_model(), settings)


def evaluations_to_reach(fitnesses: list[float | None], threshold: float) -> float:
    for i, f in enumerate(fitnesses, start=1):
        if f is not None and f >= threshold:
            return i
    return math.inf


def best_after(fitnesses: list[float | None], n: int) -> float:
    return max((f for f in fitnesses[:n] if f is not None), default=float("nan"))


def quality_table(placement: str, seeds: int, budget: int) -> str:
    rows = []
    for kind in STRATEGY_NAMES:
        reach, bests, seconds = [], {c: [] for c in CHECKPOINTS if c <= budget}, []
        for seed in range(seeds):
            problem = make_synthetic_problem("xxs", seed=seed, placement=placement)
            start = time.perf_counter()
            result = run_search(build(kind, problem, budget, seed), problem.accuracy)
            seconds.append(time.perf_counter() - start)
            fitnesses = [e.fitness for e in result.history]
            reach.append(evaluations_to_reach(fitnesses, 0.99 * problem.optimum))
            for c in bests:
                bests[c].append(best_after(fitnesses, c))
        median = statistics.median(reach)
        reached = sum(r != math.inf for r in reach)
        median_text = f"> {budget}" if median == math.inf else f"{median:.0f}"
        best_text = " / ".join(f"{statistics.median(v):.3f}" for v in bests.values())
        rows.append(f"| {kind} | {median_text} | {reached}/{seeds} | {best_text} | "
                    f"{statistics.median(seconds):.1f} |")
    head = (f"Target placement **{placement}**, {seeds} seeds, budget {budget} evaluations\n\n"
            "| strategy | evaluations to 99% of optimum (median) | seeds reaching 99% | median best after "
            f"{' / '.join(str(c) for c in CHECKPOINTS if c <= budget)} evals | search s (median) |\n"
            "|---|---|---|---|---|")
    return "\n".join([head, *rows])


def tune_overhead(trials: int, concurrency: int) -> str:
    import ray
    from ray import tune

    from autovit_ray.adapters import connect_ray
    from autovit_ray.search.tune_searcher import AutoViTSearcher, arch_from_config

    problem = make_synthetic_problem("xxs", seed=0)
    accuracy = problem.accuracy

    def trainable(config):
        tune.report({"top1": accuracy(arch_from_config(config))})

    connect_ray(num_cpus=2, log_to_driver=False)
    try:
        searcher = AutoViTSearcher(build("coarse-to-fine", problem, trials, seed=0, generations=math.ceil(trials / 50)))
        start = time.perf_counter()
        tune.run(tune.with_resources(trainable, {"cpu": 0.1}), search_alg=searcher, metric="top1", mode="max",
                 num_samples=-1, max_concurrent_trials=concurrency, reuse_actors=True,
                 storage_path=tempfile.mkdtemp(), verbose=0)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    n = searcher.num_suggested
    return ("| trials | concurrent | searcher ms / suggestion (suggest + on_trial_complete) | "
            "of which suggest | state saves, ms / trial | Tune wall s / trial |\n|---|---|---|---|---|---|\n"
            f"| {n} | {concurrency} | {1e3 * searcher.overhead_per_suggestion_s:.2f} | "
            f"{1e3 * searcher.suggest_seconds / max(n, 1):.2f} | {1e3 * searcher.save_seconds / max(n, 1):.2f} | "
            f"{wall / max(n, 1):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=1000, help="evaluations per search (50 x generations)")
    parser.add_argument("--placements", nargs="+", default=["frontier", "interior"])
    parser.add_argument("--tune-trials", type=int, default=100, help="0 skips the Tune measurement")
    parser.add_argument("--tune-concurrency", type=int, default=2)
    args = parser.parse_args()
    for placement in args.placements:
        print(quality_table(placement, args.seeds, args.budget), end="\n\n", flush=True)
    if args.tune_trials:
        print(tune_overhead(args.tune_trials, args.tune_concurrency), flush=True)


if __name__ == "__main__":
    main()
