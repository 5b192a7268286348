"""Pareto dominance over objective vectors in which every objective is minimised.

Pure Python. Callers turn "maximise accuracy" into "minimise -accuracy" before calling.
"""

from __future__ import annotations

from collections.abc import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """True when `a` is no worse than `b` in every objective and better in at least one."""
    pairs = list(zip(a, b, strict=True))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points, in input order. Equal points are all kept.

    Sorting lexicographically first means a point can only be dominated by a point before it,
    and (dominance being transitive) checking against the front kept so far is enough:
    O(n log n + n * front size) instead of O(n^2)."""
    order = sorted(range(len(points)), key=lambda i: (tuple(points[i]), i))
    front: list[int] = []
    for i in order:
        if not any(dominates(points[j], points[i]) for j in front):
            front.append(i)
    return sorted(front)


def non_dominated_sort(points: Sequence[Point], limit: int | None = None) -> list[list[int]]:
    """Successive Pareto fronts (NSGA-II ranks) as lists of indices. Stops once the fronts
    returned hold at least `limit` points (all fronts when `limit` is None)."""
    remaining = list(range(len(points)))
    fronts: list[list[int]] = []
    taken = 0
    while remaining and (limit is None or taken < limit):
        local = pareto_front([points[i] for i in remaining])
        front = [remaining[k] for k in local]
        fronts.append(front)
        taken += len(front)
        chosen = set(front)
        remaining = [i for i in remaining if i not in chosen]
    return fronts
