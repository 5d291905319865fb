"""Which agents may write a batch in several atomic calls."""

from __future__ import annotations

from unittest.mock import MagicMock

from schemas.keys import Keys
from schemas.settings import Settings
from streams import items, recommend, scraping


def registered(module) -> dict:  # noqa: ANN001
    ctx = MagicMock(settings=Settings(), keys=Keys("t:"))
    module.register(ctx)
    (only,) = ctx.consume.call_args_list
    return only.kwargs


def test_strategy_selectors_are_saved_in_the_same_call_as_their_whole_batch() -> None:
    # The selectors live in memory and are saved by finish: a slice applied without them
    # would be skipped, as a duplicate, when the batch comes again.
    assert registered(scraping)["whole_batches"] is True


def test_agents_whose_batch_state_survives_a_crash_may_use_slices() -> None:
    # Item effects are pure; the recommender's model is restored from its snapshot and
    # relearns a slice Redis already holds (same `where`), so slices are safe there.
    assert registered(items).get("whole_batches", False) is False
    assert registered(recommend).get("whole_batches", False) is False
