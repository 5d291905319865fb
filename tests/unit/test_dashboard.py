"""The Redis half of GET /api/dashboard, from the raw hashes the worker writes."""

from __future__ import annotations

import orjson

from api.routes.dashboard import summarize

NOW = 1_767_225_700.0


def test_summary_strips_the_topic_prefix_and_keeps_the_freshest_worker() -> None:
    stats = {b"applied:t1.interactions": b"40", b"applied:t1.items": b"12", b"duplicates:t1.items": b"3"}
    workers = {b"host:2": orjson.dumps({"partitions": 8, "assigned_at": NOW - 50}),
               b"host:1": orjson.dumps({"partitions": 9, "assigned_at": NOW - 60})}
    models = {b"recs:host:1": orjson.dumps({"updated_at": NOW - 4.0}),
              b"recs:host:2": orjson.dumps({"updated_at": NOW - 1.5}),
              b"bids:host:1": orjson.dumps({"updated_at": NOW - 30.0})}
    popular = orjson.dumps({"items": [], "updated_at": 1_000.0})  # event time: not what the age is read from
    assert summarize(stats, workers, models, popular, "t1.", NOW) == {
        "now": NOW,
        "applied": {"interactions": 40, "items": 12},
        "workers": [{"worker": "host:1", "partitions": 9, "assigned_at": NOW - 60},
                    {"worker": "host:2", "partitions": 8, "assigned_at": NOW - 50}],
        # The cold-start list is the recommender's: as fresh as its freshest worker.
        "freshness": {"recommender_s": 1.5, "bids_s": 30.0, "popular_s": 1.5},
    }


def test_an_empty_read_model_gives_empty_figures() -> None:
    assert summarize({}, {}, {}, None, "", NOW) == {
        "now": NOW, "applied": {}, "workers": [],
        "freshness": {"recommender_s": None, "bids_s": None, "popular_s": None},
    }
