"""Keeps a ranked list from being all one category or one source.

>>> from online_models.base import Scored
>>> ranked = [Scored(f"p{n}", 1.0 - n / 10) for n in range(6)] + [Scored("m0", 0.1)]
>>> kinds = {f"p{n}": "painting" for n in range(6)} | {"m0": "music"}
>>> [s.item_id for s in diversify(ranked, 4, 0.5, [lambda s: kinds.get(s.item_id)])]
['p0', 'p1', 'p2', 'm0']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def diversify(
    ranked: Sequence[T],
    k: int,
    max_share: float,
    facets: Sequence[Callable[[T], str | None]],
) -> list[T]:
    """The best k items such that no facet value (a category, a source) takes more than
    ``max_share`` of the list; when the candidates cannot satisfy it, the best of the
    rest fill the list in rank order, so the guard never returns fewer items."""
    if max_share >= 1.0:
        return list(ranked[:k])
    cap = max(1, math.ceil(max_share * k))
    counts: list[dict[str, int]] = [{} for _ in facets]  # plain dicts: a Counter's miss is a Python call
    chosen: list[int] = []
    skipped: list[int] = []
    for n, item in enumerate(ranked):
        if len(chosen) == k:
            break
        values = [(facet(item), c) for facet, c in zip(facets, counts)]
        if any(v is not None and c.get(v, 0) >= cap for v, c in values):
            skipped.append(n)
            continue
        for v, c in values:
            if v is not None:
                c[v] = c.get(v, 0) + 1
        chosen.append(n)
    if len(chosen) < k:
        chosen = sorted(chosen + skipped[: k - len(chosen)])
    return [ranked[n] for n in chosen]
