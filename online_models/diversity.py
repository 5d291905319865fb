"""Keeps a ranked list from being all one category or one source.

>>> from online_models.base import Scored
>>> ranked = [Scored(f"p{n}", 1.0 - n / 10) for n in range(6)] + [Scored("m0", 0.1)]
>>> kinds = {f"p{n}": "painting" for n in range(6)} | {"m0": "music"}
>>> [s.item_id for s in diversify(ranked, 4, 0.5, [kinds.get])]
['p0', 'p1', 'p2', 'm0']
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from online_models.base import Scored


def diversify(
    ranked: Sequence[Scored],
    k: int,
    max_share: float,
    facets: Sequence[Callable[[str], str | None]],
) -> list[Scored]:
    """The best k items such that no facet value (a category, a source) takes more than
    ``max_share`` of the list; when the candidates cannot satisfy it, the best of the
    rest fill the list in rank order, so the guard never returns fewer items."""
    if max_share >= 1.0:
        return list(ranked[:k])
    cap = max(1, math.ceil(max_share * k))
    counts = [Counter() for _ in facets]
    chosen: list[Scored] = []
    skipped: list[Scored] = []
    for scored in ranked:
        if len(chosen) == k:
            break
        values = [facet(scored.item_id) for facet in facets]
        if any(v is not None and c[v] >= cap for v, c in zip(values, counts)):
            skipped.append(scored)
            continue
        for v, c in zip(values, counts):
            if v is not None:
                c[v] += 1
        chosen.append(scored)
    if len(chosen) < k:
        chosen.extend(skipped[: k - len(chosen)])
        order = {s.item_id: n for n, s in enumerate(ranked)}
        chosen.sort(key=lambda s: order[s.item_id])
    return chosen
