"""Architecture search strategies: random search, plain evolution and coarse-to-fine (paper Alg. 2).

Pure Python (no Ray, MLflow or torch): what an architecture is worth is given from outside, as
a number per architecture. Every strategy is driven through ask / tell:

    arch = strategy.ask()            # next architecture to evaluate, or None (wait, or finished)
    strategy.tell(arch, fitness)     # higher is better; None when the evaluation failed

`run_search` is the synchronous loop; `AutoViTSearcher` (tune_searcher.py) drives the same
objects from Ray Tune with many evaluations in flight. The strategies share these rules:

- every architecture asked meets the hardware budget (parameters <= T_p, predicted latency <=
  T_l; `CostModel`); a budget no sampled architecture meets raises `BudgetUnreachableError`,
  naming the closest candidate;
- no architecture is asked twice (keyed by `Arch.arch_hash`), failed ones included;
- `max_evaluations` bounds the number of asks (failed evaluations count: they used a trial);
- `state_dict()` is JSON-safe (history, queue, in-flight archs, RNG state); `load_state_dict()`
  on a strategy built with the same settings continues exactly where the saved one stopped.

With `selection="dominance"` the evolutionary strategies rank parents by Pareto rank over
(accuracy max, latency min, parameters min) instead of by accuracy alone (the `coarse-to-fine-dominance`
strategy of the CLI); `pareto_front()` (the output) is available under both selections.

Strategies are built by name through the registry `STRATEGIES` (`make_strategy`): each name is a
factory `(space, costs, settings) -> SearchStrategy`; `register_strategy` adds one (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from autovit_ray.config import warn_renamed
from autovit_ray.extensions import Registry
from autovit_ray.plan import count_params
from autovit_ray.search.pareto import non_dominated_sort, pareto_front
from autovit_ray.space import Arch, SearchSpace

logger = logging.getLogger(__name__)

LatencyFn = Callable[[Arch], float]
FitnessFn = Callable[[Arch], "float | None"]
Selection = Literal["accuracy", "dominance"]
SELECTIONS = ("accuracy", "dominance")
# Selection names older versions took and wrote into saved search states: today's names.
RENAMED_SELECTIONS = {"pareto": "dominance"}
STATE_FORMAT_VERSION = 1


class BudgetUnreachableError(ValueError):
    """No architecture of the space that was tried meets the parameter / latency budget."""


# --------------------------------------------------------------------------------------------
# Budgets and costs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Hardware budget of the search (paper: T_p, T_l). None leaves that side unconstrained.
    `max_latency` is in the unit of the latency function (milliseconds for a LUT)."""

    max_params: float | None = None
    max_latency: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_params", "max_latency"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Budget.{name} must be positive or None, got {value!r}")


@dataclass(frozen=True)
class Cost:
    params: int
    latency: float | None  # None when the cost model has no latency function


class CostModel:
    """Parameter count (analytic, `SearchSpace.count_params`) and predicted latency of an arch,
    cached by arch hash, and the budget test. The latency function is any `Arch -> float`
    (a LUT predictor, or an analytic stand-in in tests)."""

    def __init__(self, space: SearchSpace, budget: Budget | None = None,
                 latency_fn: LatencyFn | None = None, num_classes: int = 1000) -> None:
        self.space = space
        self.budget = budget or Budget()
        self.latency_fn = latency_fn
        self.num_classes = num_classes
        if self.budget.max_latency is not None and latency_fn is None:
            raise ValueError("Budget.max_latency is set but no latency function was given")
        self._cache: dict[str, Cost] = {}
        self._largest_params = count_params(space.largest(), num_classes, space)

    def cost(self, arch: Arch) -> Cost:
        key = arch.arch_hash
        if key not in self._cache:
            latency = float(self.latency_fn(arch)) if self.latency_fn is not None else None
            self._cache[key] = Cost(count_params(arch, self.num_classes, self.space), latency)
        return self._cache[key]

    def fits(self, arch: Arch) -> bool:
        cost, b = self.cost(arch), self.budget
        return ((b.max_params is None or cost.params <= b.max_params)
                and (b.max_latency is None or cost.latency is None or cost.latency <= b.max_latency))

    def utilisation(self, arch: Arch) -> float:
        """Share of the binding budget the arch uses: max(params / T_p, latency / T_l).
        <= 1 exactly when the arch fits. Without any budget: params / params of the largest arch."""
        cost, b = self.cost(arch), self.budget
        shares = []
        if b.max_params is not None:
            shares.append(cost.params / b.max_params)
        if b.max_latency is not None and cost.latency is not None:
            shares.append(cost.latency / b.max_latency)
        return max(shares) if shares else cost.params / self._largest_params

    def settings(self) -> dict[str, Any]:
        """What a saved search state must agree on (the latency function itself cannot be compared)."""
        return {"space": self.space.fingerprint(), "num_classes": self.num_classes,
                "max_params": self.budget.max_params, "max_latency": self.budget.max_latency,
                "has_latency_fn": self.latency_fn is not None}

    def unreachable(self, candidates: Sequence[Arch], tries: int) -> BudgetUnreachableError:
        """The error for a budget no candidate met, naming the candidate closest to it."""
        closest = min(candidates, key=self.utilisation)
        cost, b = self.cost(closest), self.budget
        latency = "n/a" if cost.latency is None else f"{cost.latency:.4g}"
        return BudgetUnreachableError(
            f"no architecture of the {self.space.name!r} space meets the budget (max_params="
            f"{b.max_params}, max_latency={b.max_latency}) after {tries} random draws and the smallest "
            f"arch; the closest was {closest} with {cost.params} parameters and latency {latency} "
            f"({self.utilisation(closest):.2f}x the binding budget); raise the budget or shrink the space")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One told architecture. `fitness` is None when its evaluation failed."""

    arch: Arch
    fitness: float | None
    params: int
    latency: float | None
    generation: int

    @property
    def ok(self) -> bool:
        return self.fitness is not None

    def objectives(self) -> tuple[float, ...]:
        """Objective vector to minimise: (-fitness, latency, params); latency left out when unknown."""
        assert self.fitness is not None
        if self.latency is None:
            return (-self.fitness, float(self.params))
        return (-self.fitness, self.latency, float(self.params))

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "fitness": self.fitness, "params": self.params,
                "latency": self.latency, "generation": self.generation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return cls(Arch.from_dict(data["arch"]), data["fitness"], int(data["params"]), data["latency"],
                   int(data["generation"]))


def _score(evaluation: Evaluation) -> float:
    return evaluation.fitness if evaluation.fitness is not None else -math.inf


@dataclass
class SearchResult:
    best: Evaluation | None
    history: list[Evaluation]
    pareto_front: list[Evaluation]


# --------------------------------------------------------------------------------------------
# Genes: the unit of diversity between skeletons
# --------------------------------------------------------------------------------------------


def arch_genes(arch: Arch, max_transformer_stages: int = 4) -> tuple[Any, ...]:
    """The arch as a flat tuple of choices; absent transformer stages are None."""
    genes: list[Any] = [arch.resolution, arch.stem_width, *arch.mbconv_widths, *arch.mbconv_depths,
                        arch.num_transformer_stages]
    for i in range(max_transformer_stages):
        if i < arch.num_transformer_stages:
            genes += [arch.transformer_widths[i], arch.transformer_depths[i], arch.transformer_heads[i],
                      arch.transformer_mlp_ratios[i]]
        else:
            genes += [None] * 4
    return tuple(genes)


def arch_distance(a: Arch, b: Arch) -> int:
    """Number of choices in which two archs differ (Hamming distance over `arch_genes`)."""
    return sum(x != y for x, y in zip(arch_genes(a), arch_genes(b), strict=True))


# --------------------------------------------------------------------------------------------
# Strategy base: ask / tell bookkeeping, selection, state
# --------------------------------------------------------------------------------------------


class SearchStrategy:
    """Shared ask/tell machinery. Subclasses fill the queue in `_refill`."""

    kind: ClassVar[str] = "base"

    def __init__(self, space: SearchSpace, costs: CostModel, max_evaluations: int, seed: int,
                 selection: Selection, max_sample_tries: int) -> None:
        if costs.space.fingerprint() != space.fingerprint():
            raise ValueError("the cost model was built for another search space")
        if max_evaluations < 1:
            raise ValueError(f"max_evaluations must be >= 1, got {max_evaluations}")
        if selection in RENAMED_SELECTIONS:
            warn_renamed(f"selection={selection!r}", f"selection={RENAMED_SELECTIONS[selection]!r}")
            selection = RENAMED_SELECTIONS[selection]  # type: ignore[assignment]
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be 'accuracy' or 'dominance', got {selection!r}")
        self.space = space
        self.costs = costs
        self.max_evaluations = max_evaluations
        self.seed = seed
        self.selection: Selection = selection
        self.max_sample_tries = max_sample_tries
        self.rng = random.Random(seed)
        self.history: list[Evaluation] = []
        self.generation = 0
        self._queue: list[Arch] = []  # generated, not asked yet
        self._in_flight: dict[str, tuple[Arch, int]] = {}  # hash -> (arch, generation asked in)
        self._reserved: set[str] = set()  # asked or queued: never produced again
        self._stopped = False  # no new architecture can be produced
        # Archs produced by sampling / crossover / mutation and tested for acceptance (Table 6's
        # "candidates proposed"): accepted ones are evaluated; the others repeated an earlier one or
        # broke the budget. The coarse stage's screening draws are counted apart.
        self.proposals = {"proposed": 0, "duplicate": 0, "over_budget": 0, "coarse_screened": 0}

    # -- ask / tell ---------------------------------------------------------------------------
    def ask(self) -> Arch | None:
        """The next architecture to evaluate; None when the strategy waits for results still in
        flight (see `exhausted` to tell the two apart) or has finished."""
        if self.num_asked >= self.max_evaluations or self._stopped:
            return None
        if not self._queue:
            self._refill()
        if not self._queue:
            return None
        arch = self._queue.pop(0)
        self._in_flight[arch.arch_hash] = (arch, self.generation)
        return arch

    def tell(self, arch: Arch, fitness: float | None) -> Evaluation:
        """Report the fitness (higher is better) of an asked arch; None or NaN marks a failure."""
        entry = self._in_flight.pop(arch.arch_hash, None)
        if entry is None:
            raise ValueError(f"{arch} ({arch.arch_hash}) was not asked, or was already told")
        value = float(fitness) if fitness is not None and math.isfinite(fitness) else None  # None: failed
        cost = self.costs.cost(arch)
        record = Evaluation(arch, value, cost.params, cost.latency, entry[1])
        self.history.append(record)
        return record

    @property
    def num_asked(self) -> int:
        return len(self.history) + len(self._in_flight)

    def in_flight(self) -> list[Arch]:
        """Archs asked and not told yet (after a restore: the ones whose results were lost)."""
        return [arch for arch, _ in self._in_flight.values()]

    @property
    def exhausted(self) -> bool:
        """True when no later `ask()` will return an arch, whatever is still in flight."""
        return self.num_asked >= self.max_evaluations or self._stopped or (
            not self._queue and self._no_more_batches())

    @property
    def finished(self) -> bool:
        return self.exhausted and not self._in_flight

    def _refill(self) -> None:
        raise NotImplementedError

    def _no_more_batches(self) -> bool:
        return False

    # -- results ------------------------------------------------------------------------------
    def successful(self) -> list[Evaluation]:
        return [e for e in self.history if e.ok]

    def best(self) -> Evaluation | None:
        """Highest fitness told so far (the earliest on ties)."""
        ok = self.successful()
        return max(ok, key=_score) if ok else None

    def pareto_front(self) -> list[Evaluation]:
        """Non-dominated evaluations over (fitness max, latency min, parameters min)."""
        ok = self.successful()
        return [ok[i] for i in pareto_front([e.objectives() for e in ok])]

    def result(self) -> SearchResult:
        return SearchResult(self.best(), list(self.history), self.pareto_front())

    def ranked(self, count: int) -> list[Evaluation]:
        """The `count` best successful evaluations under this strategy's selection rule: by fitness,
        or by Pareto rank (ties inside a front broken by fitness)."""
        ok = self.successful()
        if self.selection == "accuracy":
            order = sorted(range(len(ok)), key=lambda i: (-_score(ok[i]), i))
        else:
            fronts = non_dominated_sort([e.objectives() for e in ok], limit=count)
            order = [i for front in fronts for i in sorted(front, key=lambda i: (-_score(ok[i]), i))]
        return [ok[i] for i in order[:count]]

    # -- producing new architectures -----------------------------------------------------------
    def _accept(self, arch: Arch) -> bool:
        """Reserve `arch` if it is new and meets the budget."""
        self.proposals["proposed"] += 1
        if arch.arch_hash in self._reserved:
            self.proposals["duplicate"] += 1
            return False
        if not self.costs.fits(arch):
            self.proposals["over_budget"] += 1
            return False
        self._reserved.add(arch.arch_hash)
        return True

    def _first_accepted(self, make: Callable[[], Arch], tries: int) -> Arch | None:
        for _ in range(tries):
            arch = make()
            if self._accept(arch):
                return arch
        return None

    def _sample_new(self, tries: int | None = None) -> Arch | None:
        return self._first_accepted(lambda: self.space.sample(self.rng), tries or self.max_sample_tries)

    def _check_reachable(self) -> None:
        """Raise `BudgetUnreachableError` unless some arch meets the budget (the smallest arch
        first, then random draws; consumes RNG state only when the smallest arch does not fit)."""
        smallest = self.space.smallest()
        if self.costs.fits(smallest):
            return
        draws = [self.space.sample(self.rng) for _ in range(self.max_sample_tries)]
        if not any(self.costs.fits(a) for a in draws):
            raise self.costs.unreachable([smallest, *draws], self.max_sample_tries)

    # -- state --------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Everything that must match for a saved state to be loaded (JSON-safe)."""
        return {"kind": self.kind, "seed": self.seed, "max_evaluations": self.max_evaluations,
                "selection": self.selection, "max_sample_tries": self.max_sample_tries,
                "costs": self.costs.settings()}

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "format": STATE_FORMAT_VERSION,
            "settings": self.settings(),
            "rng": [version, list(internal), gauss],
            "generation": self.generation,
            "stopped": self._stopped,
            "queue": [a.to_dict() for a in self._queue],
            "in_flight": [{"arch": a.to_dict(), "generation": g} for a, g in self._in_flight.values()],
            "history": [e.to_dict() for e in self.history],
            "extra": self._extra_state(),
            "proposals": dict(self.proposals),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT_VERSION:
            raise ValueError(f"search state format {state.get('format')!r} is not "
                             f"{STATE_FORMAT_VERSION}; it was written by another version")
        mine = json.loads(json.dumps(self.settings()))
        theirs = dict(state["settings"])
        theirs["kind"] = _renamed(LEGACY_KINDS, theirs.get("kind"))
        theirs["selection"] = _renamed(RENAMED_SELECTIONS, theirs.get("selection"))
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"search state was saved with other settings: {diff} differ "
                             f"(saved {[theirs.get(k) for k in diff]}, here {[mine.get(k) for k in diff]})")
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.generation = int(state["generation"])
        self._stopped = bool(state["stopped"])
        self._queue = [Arch.from_dict(a) for a in state["queue"]]
        self._in_flight = {}
        for item in state["in_flight"]:
            arch = Arch.from_dict(item["arch"])
            self._in_flight[arch.arch_hash] = (arch, int(item["generation"]))
        self.history = [Evaluation.from_dict(e) for e in state["history"]]
        self._reserved = ({e.arch.arch_hash for e in self.history} | set(self._in_flight)
                          | {a.arch_hash for a in self._queue})
        self._load_extra_state(state["extra"])
        self.proposals.update(state.get("proposals", {}))  # absent from states saved before it was counted

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Random search (Table 6 baseline)
# --------------------------------------------------------------------------------------------


class RandomSearch(SearchStrategy):
    """Uniform per-choice sampling (`SearchSpace.sample`), keeping archs that meet the budget."""

    kind = "random"

    def __init__(self, space: SearchSpace, costs: CostModel, max_evaluations: int = 1000, seed: int = 0,
                 selection: Selection = "accuracy", max_sample_tries: int = 5000) -> None:
        super().__init__(space, costs, max_evaluations, seed, selection, max_sample_tries)
        self._check_reachable()

    def _refill(self) -> None:
        arch = self._sample_new()
        if arch is None:  # nearly every arch under the budget was already asked
            self._stopped = True
        else:
            self._queue.append(arch)


# --------------------------------------------------------------------------------------------
# Evolution: plain (Table 6 baseline) and the fine stage of coarse-to-fine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvolutionConfig:
    """Generational evolution (paper Section 4.1). Each new generation: `crossover_fraction` of
    the population by crossover of two random parents, the rest by mutating a random parent
    (depth choices with `p_depth`, then every other choice with `p_block`). Parents are the
    `num_parents` best archs evaluated so far (elitist, as SPOS keeps its top-k)."""

    population_size: int = 50
    generations: int = 20
    num_parents: int = 10
    crossover_fraction: float = 0.5
    p_depth: float = 0.2
    p_block: float = 0.4
    max_tries_per_child: int = 50  # invalid (over-budget or already seen) children are redrawn

    def __post_init__(self) -> None:
        if self.population_size < 1 or self.generations < 1:
            raise ValueError("population_size and generations must be >= 1")
        if not 1 <= self.num_parents:
            raise ValueError(f"num_parents must be >= 1, got {self.num_parents}")
        for name in ("crossover_fraction", "p_depth", "p_block"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")

    @property
    def total_evaluations(self) -> int:
        return self.population_size * self.generations


FINE_STAGE = EvolutionConfig()  # the paper's fine stage: P_d = 0.2, P_m = 0.4
PLAIN_EVOLUTION = EvolutionConfig(p_depth=0.1, p_block=0.1)  # Section 5.4: 0.1 per choice


class EvolutionSearch(SearchStrategy):
    """Plain evolution (paper Table 6 baseline, SPOS-style): a random initial population that
    meets the budget, then generations of crossover + mutation (0.1 per choice by default).

    A generation is complete only when every member was told (failed ones included); only then
    is the next one bred. Failed archs never become parents, but the next generation is always
    bred to full size from the best archs so far, so failures never shrink the population."""

    kind = "evolution"

    def __init__(self, space: SearchSpace, costs: CostModel, config: EvolutionConfig = PLAIN_EVOLUTION,
                 max_evaluations: int | None = None, seed: int = 0, selection: Selection = "accuracy",
                 max_sample_tries: int = 5000) -> None:
        super().__init__(space, costs, max_evaluations or config.total_evaluations, seed, selection,
                         max_sample_tries)
        self.config = config
        self._check_reachable()
        self._queue = self._initial_population()

    def _initial_population(self) -> list[Arch]:
        population: list[Arch] = []
        while len(population) < self.config.population_size:
            arch = self._sample_new()
            if arch is None:
                break
            population.append(arch)
        return population

    def _refill(self) -> None:
        if self._in_flight or self._no_more_batches():
            return  # the generation is still being evaluated, or the last one is done
        self.generation += 1
        self._queue = self._breed(self.config.population_size)
        if not self._queue:
            self._stopped = True

    def _no_more_batches(self) -> bool:
        return self.generation + 1 >= self.config.generations

    def _breed(self, size: int) -> list[Arch]:
        cfg = self.config
        parents = [e.arch for e in self.ranked(cfg.num_parents)]
        num_crossover = round(size * cfg.crossover_fraction) if len(parents) >= 2 else 0
        children: list[Arch] = []
        for i in range(size):
            if not parents:  # every evaluation so far failed: start again from random archs
                child = self._sample_new()
            else:
                # Late in a search the parents are near-copies and their crossovers mostly give archs
                # already seen: fall back to a mutation, then to a random arch.
                makers = [self._mutation_child] if i >= num_crossover else [self._crossover_child,
                                                                           self._mutation_child]
                child = None
                for make in makers:
                    child = child or self._first_accepted(functools.partial(make, parents),
                                                          cfg.max_tries_per_child)
                child = child or self._sample_new(cfg.max_tries_per_child)
            if child is None:
                break  # (almost) every arch under the budget near these parents was seen
            children.append(child)
        return children

    def _crossover_child(self, parents: list[Arch]) -> Arch:
        a, b = self.rng.sample(parents, 2)
        return self.space.crossover(a, b, self.rng)

    def _mutation_child(self, parents: list[Arch]) -> Arch:
        return self.space.mutate(self.rng.choice(parents), self.rng, self.config.p_depth, self.config.p_block)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "evolution": dataclasses.asdict(self.config)}


# --------------------------------------------------------------------------------------------
# Coarse-to-fine (paper Algorithm 2)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoarseConfig:
    """Coarse stage of Algorithm 2: `num_samples` random draws (costs only: parameters and
    predicted latency, no accuracy), of which `num_skeletons` (K) are kept."""

    num_samples: int = 2000
    num_skeletons: int = 10
    min_distance: int = 3  # choices in which any two skeletons must differ, when possible

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.num_skeletons < 1 or self.min_distance < 0:
            raise ValueError("num_samples and num_skeletons must be >= 1, min_distance >= 0")


def select_skeletons(candidates: Sequence[Arch], costs: CostModel, count: int,
                     min_distance: int) -> list[Arch]:
    """Keep `count` skeletons out of budget-feasible `candidates` (the coarse stage's top K).

    Ranking rule: highest budget utilisation first, max(params / T_p, latency / T_l), with
    diversity. Why: the coarse stage has no accuracy to rank by, only costs; and the accuracy of
    weight-sharing subnets grows with capacity (paper Fig. 1 / Table 2, OFA, AutoFormer), so under
    a hard budget the best subnets lie near the budget's frontier; an arch well inside both
    budgets leaves capacity unused. Utilisation alone, though, favours near-copies of the same
    large arch, which would spend the fine stage on one region; so a candidate is skipped while
    it is within `min_distance` choices (`arch_distance`) of a skeleton already kept. If fewer
    than `count` candidates are that far apart, the rest are filled in utilisation order.
    Ties are broken by arch hash, so the result is deterministic."""
    unique = {a.arch_hash: a for a in candidates}
    ranked = sorted(unique.values(), key=lambda a: (-costs.utilisation(a), a.arch_hash))
    kept: list[Arch] = []
    for arch in ranked:
        if len(kept) == count:
            return kept
        if all(arch_distance(arch, k) >= min_distance for k in kept):
            kept.append(arch)
    chosen = {a.arch_hash for a in kept}
    kept += [a for a in ranked if a.arch_hash not in chosen][:count - len(kept)]
    return kept


class CoarseToFineSearch(EvolutionSearch):
    """The paper's coarse-to-fine search (Algorithm 2).

    Coarse: `coarse.num_samples` random archs are costed (parameters, predicted latency; no
    accuracy evaluation, so they do not count against `max_evaluations`); those within the
    budget are ranked by `select_skeletons` and the top K kept as skeletons.
    Fine: evolution whose first generation is the K skeletons plus variations of them
    (mutations with P_d, P_m, round robin over the skeletons: "fine-grained variations
    surrounding each skeleton", Fig. 5), then generations as in `EvolutionSearch` with the
    fine-stage mutation rates (P_d = 0.2, P_m = 0.4)."""

    kind = "coarse-to-fine"

    def __init__(self, space: SearchSpace, costs: CostModel, config: EvolutionConfig = FINE_STAGE,
                 coarse: CoarseConfig | None = None, max_evaluations: int | None = None, seed: int = 0,
                 selection: Selection = "accuracy", max_sample_tries: int = 5000) -> None:
        self.coarse = coarse or CoarseConfig()
        self.skeletons: list[Arch] = []
        super().__init__(space, costs, config, max_evaluations, seed, selection, max_sample_tries)

    def _initial_population(self) -> list[Arch]:
        draws = [self.space.sample(self.rng) for _ in range(self.coarse.num_samples)]
        self.proposals["coarse_screened"] += len(draws)
        feasible = [a for a in draws if self.costs.fits(a)]
        if not feasible:  # a tight budget: the smallest arch, or more draws (_check_reachable passed)
            more = (self.space.sample(self.rng) for _ in range(self.max_sample_tries))
            first = next((a for a in itertools.chain([self.space.smallest()], more) if self.costs.fits(a)), None)
            if first is None:
                raise self.costs.unreachable([self.space.smallest(), *draws], self.coarse.num_samples)
            feasible = [first]
        size = self.config.population_size
        self.skeletons = select_skeletons(feasible, self.costs, min(self.coarse.num_skeletons, size),
                                          self.coarse.min_distance)
        population = [a for a in self.skeletons if self._accept(a)]
        tries = self.config.max_tries_per_child
        for i in range(size - len(population)):
            skeleton = self.skeletons[i % len(self.skeletons)]
            child = self._first_accepted(functools.partial(
                self.space.mutate, skeleton, self.rng, self.config.p_depth, self.config.p_block),
                tries) or self._sample_new(tries)
            if child is None:
                break
            population.append(child)
        return population

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "coarse": dataclasses.asdict(self.coarse)}

    def _extra_state(self) -> dict[str, Any]:
        return {"skeletons": [a.to_dict() for a in self.skeletons]}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.skeletons = [Arch.from_dict(a) for a in extra.get("skeletons", [])]


# Names older versions wrote into saved search states: read back as today's names.
LEGACY_KINDS = {"coarse_to_fine": CoarseToFineSearch.kind}


def _renamed(renames: dict[str, str], name: Any) -> Any:
    """Today's spelling of a setting read from a saved state (`name` as it is when not renamed;
    None for a setting the state lacks)."""
    return renames.get(name, name)


# --------------------------------------------------------------------------------------------
# The registry: a strategy by name
# --------------------------------------------------------------------------------------------


class StrategySettings(Protocol):
    """What a strategy factory reads of a search's settings; `SearchConfig` has these (and more)."""

    # read-only properties: a frozen dataclass (SearchConfig) has them too

    @property
    def population(self) -> int: ...
    @property
    def generations(self) -> int: ...
    @property
    def parents(self) -> int: ...
    @property
    def coarse_samples(self) -> int: ...
    @property
    def skeletons(self) -> int: ...
    @property
    def max_evaluations(self) -> int | None: ...  # None: population x generations
    @property
    def seed(self) -> int: ...


StrategyFactory = Callable[[SearchSpace, CostModel, StrategySettings], SearchStrategy]


def _check_factory(name: str, entry: Any) -> None:
    if not callable(entry):
        raise ValueError(f"search strategy {name!r} must be a factory (space, costs, settings) -> SearchStrategy, "
                         f"got {entry!r}")


# The CLI's `--strategy`, SearchConfig and the pipeline take these names; installed packages add theirs
# through entry points of group "autovit_ray.strategies". "pareto" was the name of coarse-to-fine with
# dominance selection: "pareto" now names only the Pareto front (an output).
STRATEGIES: Registry[StrategyFactory] = Registry(
    "search strategy", "autovit_ray.strategies", renamed={"pareto": "coarse-to-fine-dominance"}, check=_check_factory)


def register_strategy(name: str, *, replace: bool = False) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: `@register_strategy("hill-climb")` over a factory `(space, costs, settings) ->
    SearchStrategy` makes "hill-climb" a strategy of `--strategy`, SearchConfig and the pipeline."""
    return STRATEGIES.register(name, replace=replace)


def make_strategy(name: str, space: SearchSpace, costs: CostModel, settings: StrategySettings) -> SearchStrategy:
    """The strategy `name` (a registered one) of a search with these settings."""
    return STRATEGIES.get(name)(space, costs, settings)


def evaluation_count(settings: StrategySettings) -> int:
    """The evaluations a search may ask for: `max_evaluations`, else population x generations."""
    return settings.max_evaluations or settings.population * settings.generations


def _evolution_config(settings: StrategySettings, rates: EvolutionConfig) -> EvolutionConfig:
    return EvolutionConfig(population_size=settings.population, generations=settings.generations,
                           num_parents=settings.parents, p_depth=rates.p_depth, p_block=rates.p_block)


@register_strategy("random")
def random_search(space: SearchSpace, costs: CostModel, settings: StrategySettings) -> SearchStrategy:
    return RandomSearch(space, costs, max_evaluations=evaluation_count(settings), seed=settings.seed)


@register_strategy("evolution")
def plain_evolution(space: SearchSpace, costs: CostModel, settings: StrategySettings) -> SearchStrategy:
    return EvolutionSearch(space, costs, _evolution_config(settings, PLAIN_EVOLUTION),
                           max_evaluations=evaluation_count(settings), seed=settings.seed)


def _coarse_to_fine(space: SearchSpace, costs: CostModel, settings: StrategySettings,
                    selection: Selection) -> SearchStrategy:
    coarse = CoarseConfig(num_samples=settings.coarse_samples, num_skeletons=settings.skeletons)
    return CoarseToFineSearch(space, costs, _evolution_config(settings, FINE_STAGE), coarse,
                              max_evaluations=evaluation_count(settings), seed=settings.seed, selection=selection)


@register_strategy("coarse-to-fine")
def coarse_to_fine(space: SearchSpace, costs: CostModel, settings: StrategySettings) -> SearchStrategy:
    return _coarse_to_fine(space, costs, settings, "accuracy")


@register_strategy("coarse-to-fine-dominance")
def coarse_to_fine_dominance(space: SearchSpace, costs: CostModel, settings: StrategySettings) -> SearchStrategy:
    """Coarse-to-fine whose parents are ranked by Pareto dominance (accuracy, latency, parameters)."""
    return _coarse_to_fine(space, costs, settings, "dominance")


# --------------------------------------------------------------------------------------------
# The synchronous loop
# --------------------------------------------------------------------------------------------


def run_search(strategy: SearchStrategy, evaluate_fn: FitnessFn, max_evaluations: int | None = None,
               catch_errors: bool = True) -> SearchResult:
    """Evaluate one arch at a time until the strategy is exhausted or `max_evaluations` archs
    were evaluated by this call. An exception from `evaluate_fn` counts as a failed evaluation
    (as a failed Tune trial does) unless `catch_errors` is False. Archs left in flight by a
    restored state are evaluated first: nobody else will report them."""
    done = 0
    while max_evaluations is None or done < max_evaluations:
        pending = strategy.in_flight()
        arch = pending[0] if pending else strategy.ask()
        if arch is None:
            break
        try:
            fitness = evaluate_fn(arch)
        except Exception as exc:
            if not catch_errors:
                raise
            logger.warning("evaluation of %s failed: %r", arch, exc)
            fitness = None
        strategy.tell(arch, fitness)
        done += 1
    return strategy.result()
