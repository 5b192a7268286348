"""Synthetic search problems with a known optimum, for tests and benchmarks.

No supernet and no latency table: accuracy is a smooth function of the arch's choices with its
maximum (1.0) at a hidden target arch, and latency is analytic (MACs plus a per-block cost).
The budgets are quantiles of the space, and the target is placed either near the budget
frontier (as real accuracy, which grows with capacity, places the best subnet) or well inside it
(a control where that assumption does not hold). Pure Python.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from autovit_ray.plan import count_macs, count_params
from autovit_ray.search.algorithms import Budget, CostModel, arch_genes
from autovit_ray.space import Arch, SearchSpace, load_space, space_from_dict

PLACEMENTS = {"frontier": (0.95, 1.0), "interior": (0.6, 0.75)}  # target's budget utilisation


def tiny_space() -> SearchSpace:
    """A 8,192-arch space (8x8 digits input profile) for fast end-to-end tests of the searchers."""
    def transformer(width: int) -> dict:
        return {"widths": [width], "depths": [1, 2], "heads": [1, 2], "mlp_ratios": [1.0, 2.0]}

    return space_from_dict({
        "name": "tiny", "stem": {"widths": [8, 16]},
        "mbconv_stages": [{"widths": [8, 16], "depths": [1]}, {"widths": [16, 24], "depths": [1]},
                          {"widths": [24, 32], "depths": [1]}],
        "transformer_stages": [transformer(32), transformer(48), transformer(64)],
        "num_transformer_stages": [3],
        "input_profiles": {"digits": {"resolutions": [8], "strides": [1, 1, 1, 2, 1, 1, 1, 1]}},
    }, source="tiny_space()")


@dataclass(frozen=True)
class AnalyticLatency:
    """A stand-in latency predictor (ms): MACs at `ms_per_gmac`, plus `ms_per_block` for every
    MBConv block and transformer layer (per-operator overhead, which MACs do not see)."""

    space: SearchSpace
    num_classes: int = 1000
    ms_per_gmac: float = 20.0
    ms_per_block: float = 0.1

    def __call__(self, arch: Arch) -> float:
        blocks = sum(arch.mbconv_depths) + sum(arch.transformer_depths) + arch.num_transformer_stages
        macs = count_macs(arch, self.num_classes, self.space)
        return macs / 1e9 * self.ms_per_gmac + blocks * self.ms_per_block


def choice_positions(space: SearchSpace, arch: Arch) -> list[float | None]:
    """Each choice of `arch` as its position in the space's choice list, scaled to [0, 1]
    (order of `arch_genes`); None for the choices of absent transformer stages."""
    lists: list[tuple[float, ...]] = [space.resolutions, space.stem_widths]
    lists += [s.widths for s in space.mbconv_stages] + [s.depths for s in space.mbconv_stages]
    lists.append(space.num_transformer_stages)
    for stage in space.transformer_stages:
        lists += [stage.widths, stage.depths, stage.heads, stage.mlp_ratios]
    genes = arch_genes(arch, len(space.transformer_stages))
    return [None if g is None else (choices.index(g) / (len(choices) - 1) if len(choices) > 1 else 0.0)
            for g, choices in zip(genes, lists, strict=True)]


@dataclass(frozen=True)
class SyntheticAccuracy:
    """accuracy(arch) = 1 - (sum_g w_g (x_g - t_g)^2 + w_u (u - u_t)^2) / (sum_g w_g + w_u).

    x and t are the arch's and the target's `choice_positions` (a transformer stage present in
    only one of the two counts as distance 1 on each of its choices); u and u_t are their budget
    utilisations (`CostModel.utilisation`), the stand-in for "accuracy grows with capacity": with
    the target near the frontier, archs that use the budget score higher. Exactly 1.0 at the
    target and below it everywhere else."""

    space: SearchSpace
    target: Arch
    weights: tuple[float, ...]
    costs: CostModel
    utilisation_weight: float

    def __call__(self, arch: Arch) -> float:
        x = choice_positions(self.space, arch)
        t = choice_positions(self.space, self.target)
        loss = 0.0
        for w, xi, ti in zip(self.weights, x, t, strict=True):
            if xi is None and ti is None:
                continue
            loss += w * (1.0 if xi is None or ti is None else (xi - ti) ** 2)
        gap = self.costs.utilisation(arch) - self.costs.utilisation(self.target)
        loss += self.utilisation_weight * gap ** 2
        return 1.0 - loss / (sum(self.weights) + self.utilisation_weight)


@dataclass(frozen=True)
class SyntheticProblem:
    space: SearchSpace
    target: Arch
    accuracy: SyntheticAccuracy
    latency: AnalyticLatency
    budget: Budget
    num_classes: int
    optimum: float = 1.0

    def cost_model(self) -> CostModel:
        return CostModel(self.space, self.budget, self.latency, self.num_classes)


def make_synthetic_problem(space: str | SearchSpace = "xxs", seed: int = 0, placement: str = "frontier",
                           params_quantile: float = 0.5, latency_quantile: float = 0.5,
                           num_classes: int = 1000, num_draws: int = 3000,
                           utilisation_weight: float = 5.0) -> SyntheticProblem:
    """A problem whose budgets are the given quantiles of parameters and latency over `num_draws`
    random archs, and whose target (the optimum) is a random budget-feasible arch whose budget
    utilisation lies in the `placement` band ('frontier': 0.95-1.0, 'interior': 0.6-0.75)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {sorted(PLACEMENTS)}, got {placement!r}")
    space = load_space(space) if isinstance(space, str) else space
    rng = random.Random(f"synthetic problem {seed}")  # not the searchers' seed-`seed` stream
    latency = AnalyticLatency(space, num_classes)
    draws = [space.sample(rng) for _ in range(num_draws)]
    params = sorted(count_params(a, num_classes, space) for a in draws)
    latencies = sorted(latency(a) for a in draws)
    budget = Budget(max_params=float(params[int(params_quantile * (num_draws - 1))]),
                    max_latency=latencies[int(latency_quantile * (num_draws - 1))])
    costs = CostModel(space, budget, latency, num_classes)
    low, high = PLACEMENTS[placement]
    band = sorted({a.arch_hash: a for a in draws if costs.fits(a) and low <= costs.utilisation(a) <= high}
                  .values(), key=lambda a: a.arch_hash)
    if not band:
        raise ValueError(f"no arch among {num_draws} draws has utilisation in {low}-{high}; "
                         "use other quantiles or more draws")
    target = rng.choice(band)
    weights = tuple(rng.uniform(0.25, 1.0) for _ in arch_genes(target, len(space.transformer_stages)))
    accuracy = SyntheticAccuracy(space, target, weights, costs, utilisation_weight)
    return SyntheticProblem(space, target, accuracy, latency, budget, num_classes)
