"""Architecture search over a trained supernet: coarse-to-fine (paper Algorithm 2), plain
evolution and random search, driven by ask / tell (`run_search`) or by Ray Tune
(`AutoViTSearcher`). See docs/search.md.

Importing this package does not import Ray: `AutoViTSearcher` is loaded on first use.
"""

from __future__ import annotations

from typing import Any

from autovit_ray.search.algorithms import (
    FINE_STAGE,
    PLAIN_EVOLUTION,
    STRATEGIES,
    Budget,
    BudgetUnreachableError,
    CoarseConfig,
    CoarseToFineSearch,
    Cost,
    CostModel,
    Evaluation,
    EvolutionConfig,
    EvolutionSearch,
    RandomSearch,
    SearchResult,
    SearchStrategy,
    StrategySettings,
    arch_distance,
    make_strategy,
    register_strategy,
    run_search,
    select_skeletons,
)
from autovit_ray.search.pareto import dominates, non_dominated_sort, pareto_front

__all__ = [
    "FINE_STAGE", "PLAIN_EVOLUTION", "STRATEGIES", "AutoViTSearcher", "Budget", "BudgetUnreachableError",
    "CoarseConfig", "CoarseToFineSearch", "Cost", "CostModel", "Evaluation", "EvolutionConfig",
    "EvolutionSearch", "RandomSearch", "SearchResult", "SearchStrategy", "StrategySettings", "arch_distance",
    "dominates", "make_strategy", "non_dominated_sort", "pareto_front", "register_strategy", "run_search",
    "select_skeletons",
]


def __getattr__(name: str) -> Any:
    if name == "AutoViTSearcher":  # Ray is heavy: import it only when the searcher is wanted
        from autovit_ray.search.tune_searcher import AutoViTSearcher

        return AutoViTSearcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
