"""The item table's array computations against the same sums over plain dicts."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from online_models.base import ItemInfo
from online_models.hybrid import HybridRecommender
from online_models.item_table import ItemTable

FEATURES = [f"tag:{c}" for c in "abcdefgh"] + ["cat:x", "cat:y", "w:z"]
feature_maps = st.dictionaries(st.sampled_from(FEATURES), st.floats(-2, 2, allow_nan=False), max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.tuples(st.sampled_from("pqrstu"), feature_maps), min_size=1, max_size=25),
    taste=feature_maps,
)
def test_content_and_best_features_equal_dict_sums(items: list, taste: dict) -> None:
    table = ItemTable()
    current: dict[str, dict[str, float]] = {}
    for item_id, feats in items:  # repeats are updates: a new row when the features change
        table.put(item_id, feats, born=0.0, deadline=None)
        current[item_id] = feats
    rows = np.array(sorted(table.row[i] for i in current))
    dense = table.dense(taste)
    got = table.content(rows, dense)
    best = table.best_features(rows, dense)
    for r, value, feature in zip(rows.tolist(), got.tolist(), best, strict=True):
        feats = current[table.ids[r]]
        want = sum(taste.get(f, 0.0) * x for f, x in feats.items())
        assert math.isclose(value, want, rel_tol=1e-12, abs_tol=1e-12)
        if feats:
            assert feature == max(feats, key=lambda f: taste.get(f, 0.0) * feats[f])
    assert table.live[: table.n].sum() == len(current)  # every update retired its old row


def test_serving_state_follows_updates_deadlines_and_retractions() -> None:
    model = HybridRecommender()
    model.learn_item(ItemInfo("a", category="x", ts=10.0, deadline=100.0))
    model.learn_item(ItemInfo("b", category="x", ts=10.0))
    model.learn_interaction("u", "b", 1.0, ts=20.0)  # an unknown user is served what trends
    model.learn_interaction("w", "a", 1.0, ts=20.0)
    assert [s.item_id for s in model.rank("v", 5, now=5.0)] == []  # nothing exists before its time
    assert {s.item_id for s in model.rank("v", 5, now=50.0)} == {"a", "b"}
    assert [s.item_id for s in model.rank("v", 5, now=150.0)] == ["b"]  # a is past its deadline
    model.learn_item(ItemInfo("b", category="y", tags=("new",), ts=99.0))  # an update: new features
    assert model.rank("v", 5, now=150.0)[0].item_id == "b"
    model.retract_item("b")
    assert model.rank("v", 5, now=150.0) == []
    model.learn_item(ItemInfo("b", category="y", tags=("new",), ts=99.0))  # back, its counts gone
    assert [(s.item_id, s.reason) for s in model.rank("v", 5, now=150.0)] == [("b", "new")]
    model.learn_interaction("w", "b", 1.0, ts=120.0)
    assert [s.item_id for s in model.rank("v", 5, now=150.0)] == ["b"]


def test_an_item_updated_every_day_does_not_grow_the_table() -> None:
    table = ItemTable()
    table.put("stable", {"cat:x": 1.0}, born=0.0, deadline=None)
    for day in range(5_000):  # the scraped text changes every time
        table.put("daily", {"cat:x": 0.6, f"w:day{day}": 0.8}, born=float(day), deadline=None)
    assert table.n <= 1_100 and table.live[: table.n].sum() == 2
    rows = np.array([table.row["stable"], table.row["daily"]])
    assert table.content(rows, table.dense({"cat:x": 1.0, "w:day4999": 1.0})).tolist() == [1.0, 1.4]
    assert table.born[table.row["daily"]] == 0.0  # born with its first version
