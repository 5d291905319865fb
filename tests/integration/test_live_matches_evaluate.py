"""One scoring path: a real stream POSTed to the API and learned by a live worker scores what
``eddy evaluate``'s replay of the same events scores (issue 17, item 5).

The first 6,000 events of the committed MovieTweetings slice go through POST /api/events in
event-time order; the worker scores every positive test-then-train (``EDDY_LIVE_EVAL_SHARE=1``).
Items and interactions travel on two topics, consumed by two agents: an interaction may
overtake its item, and its target is then an item the worker does not know yet. A producer
that publishes an item before users act on it (the way items reach Eddy in production) waits
for the item's 202; here each run of item events is posted, and applied, before the
interactions that follow it (not waiting for interactions: an item applied early is not
served before its own time).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import orjson
import pytest
from rich.console import Console

from deploy.evaluate import default_models, load_events
from online_models.evaluation import Prequential
from tests.conftest import Stack, until

pytestmark = pytest.mark.integration

SLICE = Path(__file__).parents[1] / "data" / "movietweetings-30k.jsonl.gz"
EVENTS = 6_000


def test_live_hr_at_10_is_within_five_percent_of_eddy_evaluate_on_a_real_stream(stack: Stack) -> None:
    stack.extra_env = {"live_eval_share": 1.0}
    events, _ = load_events(SLICE, Console(stderr=True))
    events = events[:EVENTS]
    report = Prequential(default_models(), k=10).run(events)
    offline = report["models"]["eddy"]

    stack.start_worker()
    api = stack.start_api()
    items = 0
    with httpx.Client(base_url=api, timeout=30) as client:
        for kind, run in itertools.groupby(events, key=lambda e: e.type):
            docs = [orjson.loads(e.model_dump_json(exclude_none=True)) for e in run]
            for start in range(0, len(docs), 1000):
                resp = client.post("/api/events", json=docs[start : start + 1000])
                assert resp.status_code == 202, resp.text
            if kind == "item":  # in the catalogue before anyone acts on them
                items += len(docs)
                until(lambda n=items: stack.applied("items") >= n, timeout_s=30, every_s=0.002)

    def live() -> dict | None:
        online = httpx.get(api + "/api/models/recommender").json()["online"]
        return online if online.get("eddy", {}).get("targets") == report["targets"] else None

    online = until(live, timeout_s=60)
    hr, want = online["eddy"]["hr_at_10"], offline["hr"]
    print(f"live HR@10 {hr:.4f} / NDCG@10 {online['eddy']['ndcg_at_10']:.4f} over {report['targets']} targets; "
          f"eddy evaluate {want:.4f} / {offline['ndcg']:.4f}")
    assert abs(hr - want) <= 0.05 * want, (hr, want)
    assert abs(online["eddy"]["ndcg_at_10"] - offline["ndcg"]) <= 0.05 * offline["ndcg"]
