"""Scrape-shape monitor: drift calibration on seeded synthetic streams, and River-style checks.

Calibration from the issue: on stable streams, no shift in 10,000 items; after an injected
shift, one alarm within 200 items, and no second one in the next 1,000.
"""

from __future__ import annotations

import copy
import math
import pickle
import random

import orjson
import pytest

from online_models.scrape_shape import (
    ShapeMonitor,
    Shift,
    SourceShapeMonitor,
    item_features,
)

WORDS = [
    *("open", "call", "residency", "grant", "artist", "painting", "music", "film"),
    *("festival", "prize", "award", "studio", "exhibition", "photography", "young"),
    *("emerging", "international", "program", "fellowship"),
]
VOCABULARY = [f"tag{i}" for i in range(40)]
OTHER_VOCABULARY = [f"other{i}" for i in range(40)]
ZIPF = [1 / rank for rank in range(1, 41)]
SEEDS = [0, 1, 2, 3, 4]
SHIFT_AT = 1_000  # the injected shift starts at this item's successor


def make_item(
    rng: random.Random,
    source: str = "artconnect",
    p_title: float = 0.02,
    p_url: float = 0.01,
    p_deadline: float = 0.3,
    p_untagged: float = 0.0,
    vocabulary: list[str] = VOCABULARY,
    short_titles: bool = False,
) -> dict:
    """A scraped item: titles of 2-14 words (or 3-8 letters), 1-5 Zipf-drawn tags."""
    if rng.random() < p_title:
        title = None
    elif short_titles:
        title = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 8)))
    else:
        title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14)))
    tags = list(dict.fromkeys(rng.choices(vocabulary, weights=ZIPF, k=rng.randint(1, 5))))
    return {
        "item_id": f"i{rng.random()}",
        "source": source,
        "title": title,
        "url": None if rng.random() < p_url else "https://example.org/call",
        "deadline": None if rng.random() < p_deadline else 1.7e9,
        "tags": [] if rng.random() < p_untagged else tags,
    }


def items(seed: int, n: int, start: int = SHIFT_AT, **shift: object) -> list[dict]:
    """n stable items, changed by ``shift`` (make_item's arguments) after the start-th."""
    rng = random.Random(seed)
    return [make_item(rng, **(shift if i > start else {})) for i in range(1, n + 1)]


def learn_items(stream: list[dict], monitor: SourceShapeMonitor | None = None) -> list[Shift]:
    monitor = monitor or SourceShapeMonitor()
    return [s for item in stream for s in monitor.learn_item(item)]


def runs(seed: int, n: int, empty: float = 0.0, start: int = SHIFT_AT) -> list[float]:
    """Items found per scrape run: lognormal, median 12, sigma 0.6; after start, a share
    ``empty`` of the runs find nothing."""
    rng = random.Random(seed)
    found = [float(round(12 * math.exp(0.6 * rng.gauss(0, 1)))) for _ in range(n)]
    return [0.0 if i > start and rng.random() < empty else x for i, x in enumerate(found, 1)]


def learn_runs(stream: list[float], monitor: ShapeMonitor | None = None) -> list[Shift]:
    monitor = monitor or ShapeMonitor()
    return [s for n in stream for s in monitor.learn_one({"items_found": n})]


# --- calibration ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_stable_items_give_no_shift_in_10000(seed: int) -> None:
    assert learn_items(items(seed, 10_000)) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_stable_items_found_give_no_shift_in_10000(seed: int) -> None:
    assert learn_runs(runs(seed, 10_000)) == []


def test_messy_but_stable_source_gives_no_shift() -> None:
    # Deadlines never given, titles always, a third of the items untagged: constants and
    # gaps are this source's normal shape.
    rng = random.Random(7)
    stream = [make_item(rng, p_title=0.0, p_url=0.0, p_deadline=1.0, p_untagged=0.3) for _ in range(10_000)]
    assert learn_items(stream) == []


def test_deadlines_going_from_90_to_100_percent_missing_is_no_crisis() -> None:
    rng = random.Random(1)
    stream = [make_item(rng, p_deadline=0.9) for _ in range(3_000)]
    stream += [make_item(rng, p_deadline=1.0) for _ in range(7_000)]
    assert learn_items(stream) == []


SHIFTS = {
    "titles_60pc_missing": ("missing_title", {"p_title": 0.6}),
    "titles_all_missing": ("missing_title", {"p_title": 1.0}),
    "urls_half_missing": ("missing_url", {"p_url": 0.5}),
    "titles_collapse": ("title_length", {"short_titles": True}),
    "tags_from_a_new_vocabulary": ("new_tag_share", {"vocabulary": OTHER_VOCABULARY}),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_injected_shift_gives_one_alarm_within_200_items(shift: str, seed: int) -> None:
    feature, change = SHIFTS[shift]
    shifts = learn_items(items(seed, SHIFT_AT + 1_000, **change))
    assert [s.feature for s in shifts] == [feature]
    assert SHIFT_AT < shifts[0].index <= SHIFT_AT + 200


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("empty", [1.0, 0.8])
def test_items_found_dropping_to_zero_gives_one_alarm_within_200_runs(empty: float, seed: int) -> None:
    shifts = learn_runs(runs(seed, SHIFT_AT + 1_000, empty=empty))
    assert [s.feature for s in shifts] == ["items_found"]
    assert SHIFT_AT < shifts[0].index <= SHIFT_AT + 200
    assert shifts[0].after < shifts[0].before / 2


def test_detections_on_seed_0_are_exactly_these() -> None:
    found = {name: learn_items(items(0, SHIFT_AT + 1_000, **change)) for name, (_, change) in SHIFTS.items()}
    assert {name: (s[0].index, s[0].detail) for name, s in found.items()} == {
        "titles_60pc_missing": (1024, "share of items without a title rose from 0.02 to 0.67"),
        "titles_all_missing": (1024, "share of items without a title rose from 0.02 to 1.00"),
        "urls_half_missing": (1027, "share of items without a url rose from 0.01 to 0.48"),
        "titles_collapse": (1016, "mean title length fell from 64.77 to 5.33"),
        "tags_from_a_new_vocabulary": (1016, "share of tags unusual for the source rose from 0.02 to 1.00"),
    }
    [empty_pages] = learn_runs(runs(0, SHIFT_AT + 1_000, empty=1.0))
    assert (empty_pages.index, empty_pages.after) == (1017, 0.0)
    assert empty_pages.detail == "items found per run fell from 14.53 to 0.00"


def test_a_shift_inside_warmup_gives_no_alarm_and_becomes_the_baseline() -> None:
    stream = items(0, 3_000, start=300, p_title=1.0)
    assert [s.feature for s in learn_items(stream)] == ["missing_title"]
    late = learn_items(stream, SourceShapeMonitor(ShapeMonitor(warmup=500)))
    assert late == []


def test_sources_are_watched_apart() -> None:
    rng = random.Random(3)
    stream = [make_item(rng, source="a") if i % 2 else make_item(rng, source="b") for i in range(4_000)]
    stream += [make_item(rng, source="a") if i % 2 else make_item(rng, source="b", p_url=1.0) for i in range(1_000)]
    monitor = SourceShapeMonitor()
    alarms = [(item["source"], s.feature, s.index) for item in stream for s in monitor.learn_item(item)]
    assert [(source, feature) for source, feature, _ in alarms] == [("b", "missing_url")]
    assert 2_000 < alarms[0][2] <= 2_000 + 200  # the index counts b's items
    assert monitor.summary()["a"]["alarms"] == 0


# --- River-style checks --------------------------------------------------------------------


def test_item_features_of_items_with_missing_fields() -> None:
    assert item_features({"item_id": "x"}) == {
        "missing_title": 1.0,
        "missing_url": 1.0,
        "missing_deadline": 1.0,
        "title_length": 0.0,
        "n_tags": 0.0,
    }
    blank = {"title": "  ", "url": "", "deadline": 0.0, "tags": None}
    assert item_features(blank) == {
        "missing_title": 1.0,
        "missing_url": 1.0,
        "missing_deadline": 0.0,
        "title_length": 0.0,
        "n_tags": 0.0,
    }
    full = {"title": "Open call ", "url": "https://a.org", "deadline": 1.7e9, "tags": ["oil", "", "Ink"]}
    assert item_features(full) == {
        "missing_title": 0.0,
        "missing_url": 0.0,
        "missing_deadline": 0.0,
        "title_length": 9.0,
        "n_tags": 2.0,
    }


def test_title_length_is_learnt_only_from_items_with_a_title() -> None:
    stream = items(0, 500)
    monitor = SourceShapeMonitor()
    learn_items(stream, monitor)
    title_length = monitor.summary()["artconnect"]["features"]["title_length"]
    assert title_length["reference_n"] + title_length["recent_n"] == sum(1 for i in stream if i["title"])


def test_absent_and_non_finite_features_are_not_learnt() -> None:
    monitor = ShapeMonitor()
    assert monitor.learn_one({"a": 1.0, "b": math.nan}) == []
    assert monitor.learn_one({"b": math.inf}) == []
    assert monitor.n == 2
    assert monitor.summary()["features"] == {
        "a": {"reference_mean": None, "reference_n": 0, "recent_mean": 1.0, "recent_n": 1}
    }


def test_pickle_round_trip_gives_identical_future_shifts() -> None:
    stream = items(1, SHIFT_AT + 1_000, p_title=1.0)
    monitor = SourceShapeMonitor()
    learn_items(stream[: SHIFT_AT + 10], monitor)  # mid-shift, the detector may be on alert
    clone = pickle.loads(pickle.dumps(monitor))
    expected = learn_items(stream[SHIFT_AT + 10 :], monitor)
    assert expected and learn_items(stream[SHIFT_AT + 10 :], clone) == expected

    found = runs(1, SHIFT_AT + 1_000, empty=1.0)
    counter = ShapeMonitor()
    learn_runs(found[: SHIFT_AT + 5], counter)
    clone = pickle.loads(pickle.dumps(counter))
    expected = learn_runs(found[SHIFT_AT + 5 :], counter)
    assert expected and learn_runs(found[SHIFT_AT + 5 :], clone) == expected


def test_same_stream_gives_the_same_shifts() -> None:
    stream = items(2, SHIFT_AT + 1_000, vocabulary=OTHER_VOCABULARY)
    first = learn_items(stream)
    assert first and learn_items(stream) == first


def test_learning_does_not_mutate_the_item() -> None:
    stream = items(0, 300)
    before = copy.deepcopy(stream)
    learn_items(stream)
    assert stream == before


def test_summary_is_json_and_does_not_mutate() -> None:
    monitor = SourceShapeMonitor()
    shifts = learn_items(items(0, SHIFT_AT + 300, p_title=1.0), monitor)
    before = pickle.dumps(monitor)
    summary = monitor.summary()
    assert pickle.dumps(monitor) == before
    assert orjson.loads(orjson.dumps(summary)) == summary
    source = summary["artconnect"]
    assert source["observations"] == SHIFT_AT + 300
    assert source["alarms"] == 1
    assert source["last_alarm"] == {"index": shifts[0].index, "feature": "missing_title"}
    assert source["features"]["missing_title"]["recent_mean"] == 1.0
    assert sorted(source["features"]) == [
        "missing_deadline",
        "missing_title",
        "missing_url",
        "n_tags",
        "new_tag_share",
        "title_length",
    ]
