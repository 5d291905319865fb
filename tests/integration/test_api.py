"""The API against the real broker and Redis: every status path of producing and reading."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from schemas.envelope import partition_of
from tests.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def api(stack: Stack) -> str:
    return stack.start_api()


def click(n: int, **extra: object) -> dict:
    return {"type": "interaction", "user_id": f"u{n % 3}", "item_id": f"i{n}", "action": "click", **extra}


def test_post_one_event_fills_id_and_ts_and_produces_it_keyed(stack: Stack, api: str) -> None:
    before = time.time()
    resp = httpx.post(api + "/api/events", json=click(1))
    assert resp.status_code == 202
    body = resp.json()
    assert body["accepted"] == 1 and len(body["event_ids"]) == 1 and len(body["event_ids"][0]) == 26
    (rec,) = stack.consume_all("interactions", expect=1)
    (doc,) = orjson.loads(rec.value)["envelope"]
    assert rec.partition == partition_of(b"u1", range(stack.settings.partitions))
    assert doc["event_id"] == body["event_ids"][0]
    assert before <= doc["ts"] <= time.time()


def test_post_batch_routes_each_type_to_its_topic(stack: Stack, api: str) -> None:
    batch = [
        click(1, event_id="mine-1"),
        {"type": "item", "item_id": "i1", "title": "Open call", "tags": ["oil"]},
        {"type": "scrape_attempt", "domain": "a.org", "strategy": "rss", "success": True},
        {"type": "bid", "bid_id": "b1", "profile_id": "p1"},
        {"type": "bid_outcome", "bid_id": "b1", "won": False},
    ]
    resp = httpx.post(api + "/api/events", json=batch)
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 5
    assert resp.json()["event_ids"][0] == "mine-1"
    def placed(topic: str, n: int) -> list[tuple[int, list[str]]]:
        return [(r.partition, [e["type"] for e in orjson.loads(r.value)["envelope"]]) for r in stack.consume_all(topic, expect=n)]

    parts = range(stack.settings.partitions)
    assert placed("items", 1) == [(partition_of(b"i1", parts), ["item"])]
    assert placed("scrape-attempts", 1) == [(partition_of(b"a.org", parts), ["scrape_attempt"])]
    # A bid and its outcome share a partition and one envelope, in order.
    assert placed("bids", 1) == [(partition_of(b"b1", parts), ["bid", "bid_outcome"])]


def test_envelopes_split_a_batch_by_partition_keeping_order(stack: Stack, api: str) -> None:
    batch = [click(n, user_id=f"user{n % 10}", event_id=f"ev{n}") for n in range(300)]
    assert httpx.post(api + "/api/events", json=batch).status_code == 202
    records = stack.consume_all("interactions", expect=stack.settings.partitions)
    parts = range(stack.settings.partitions)
    seen = []
    for rec in records:
        docs = orjson.loads(rec.value)["envelope"]
        assert {partition_of(d["user_id"].encode(), parts) for d in docs} == {rec.partition}
        assert [int(d["event_id"][2:]) for d in docs] == sorted(int(d["event_id"][2:]) for d in docs)
        seen += [d["event_id"] for d in docs]
    assert sorted(seen) == sorted(f"ev{n}" for n in range(300))


def test_one_record_per_event_when_envelopes_are_off(stack: Stack) -> None:
    api = stack.start_api(EDDY_PRODUCE_ENVELOPES="false")
    assert httpx.post(api + "/api/events", json=[click(1), click(4)]).status_code == 202
    records = stack.consume_all("interactions", expect=2)
    assert [(r.key, orjson.loads(r.value)["item_id"]) for r in records] == [(b"u1", "i1"), (b"u1", "i4")]


def test_a_batch_with_bad_events_is_refused_whole(stack: Stack, api: str) -> None:
    batch = [
        click(0),
        {"type": "interaction", "user_id": "u", "item_id": "i", "action": "stare"},
        click(2),
        {"type": "scrape_attempt", "domain": "a.org", "strategy": "rss", "success": True, "latency_ms": -1},
        {"type": "strategy_switch", "domain": "a.org", "to_strategy": "x", "reason": "r", "decision_id": "d"},
    ]
    resp = httpx.post(api + "/api/events", json=batch)
    assert resp.status_code == 422
    assert resp.json() == {
        "detail": [
            {"index": 1, "field": "action", "reason": "Input should be 'impression', 'click', 'view', 'like', 'dislike', 'rate', 'save' or 'hide'"},
            {"index": 3, "field": "latency_ms", "reason": "Input should be greater than or equal to 0"},
            {"index": 4, "field": "type", "reason": "unknown event type 'strategy_switch'; expected one of bid, bid_outcome, interaction, item, preference, scrape_attempt, user_deleted"},
        ]
    }
    assert stack.consume_all("interactions", idle_s=2) == []


def test_not_json_and_empty_batches_get_422(api: str) -> None:
    resp = httpx.post(api + "/api/events", content=b"{nope", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["field"] == "body"
    assert resp.json()["detail"][0]["reason"].startswith("not valid JSON")
    resp = httpx.post(api + "/api/events", json=[])
    assert resp.status_code == 422
    assert resp.json() == {"detail": [{"index": None, "field": "body", "reason": "empty batch"}]}



def with_nested(doc: dict, field: str, depth: int) -> bytes:
    """``doc`` as JSON with ``field`` holding arrays nested ``depth - 1`` deep around a 1, so
    that ``field``'s innermost array is at level ``depth`` (the document is level 1). Written
    by hand: orjson, like the API before, cannot write more than 254 levels."""
    head = orjson.dumps(doc)[:-1]
    return head + b',"' + field.encode() + b'":' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [63, 64, 253, 254, 500, 1023])
def test_deeply_nested_events_get_422_naming_the_field_never_500(api: str, depth: int) -> None:
    """orjson reads 1,024 levels but writes 254: a field 254 to 1,023 deep used to be a 500.
    An event may hold 64 levels (the event itself is level 1)."""
    body = b"[" + with_nested(click(1), "extra", depth) + b"]"
    resp = httpx.post(api + "/api/events", content=body, headers={"content-type": "application/json"})
    if depth <= 64:
        assert resp.status_code == 202, resp.text
    else:
        assert resp.status_code == 422, resp.text
        assert resp.json() == {"detail": [{"index": 0, "field": "extra", "reason": "nested deeper than 64 levels"}]}


def test_draft_bid_scoring_answers_bad_bodies_in_the_events_error_shape(api: str) -> None:
    url = api + "/api/bids/score"
    resp = httpx.post(url, content=b'{"profile_id": ', headers={"content-type": "application/json"})
    assert resp.status_code == 422
    (error,) = resp.json()["detail"]
    assert (error["index"], error["field"]) == (None, "body") and error["reason"].startswith("not valid JSON")
    resp = httpx.post(url, content=with_nested({"profile_id": "p1"}, "profile", 600),
                      headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json() == {"detail": [{"index": None, "field": "profile", "reason": "nested deeper than 64 levels"}]}
    resp = httpx.post(url, json=[1, 2])
    assert resp.status_code == 422 and resp.json()["detail"][0]["reason"] == "a draft bid must be a JSON object"

def test_oversized_bodies_and_batches_get_413(stack: Stack) -> None:
    api = stack.start_api(EDDY_API_MAX_BODY_BYTES="4096", EDDY_API_MAX_BATCH="3")
    resp = httpx.post(api + "/api/events", json=[click(n, pad="x" * 100) for n in range(100)])
    assert resp.status_code == 413
    assert resp.json() == {"detail": f"request body of {len(resp.request.content)} bytes exceeds the limit of 4096 bytes"}
    resp = httpx.post(api + "/api/events", json=[click(n) for n in range(4)])
    assert resp.status_code == 413
    assert resp.json() == {"detail": "batch of 4 events exceeds the limit of 3"}


def test_producing_needs_the_key_when_one_is_set(stack: Stack) -> None:
    api = stack.start_api(EDDY_PRODUCER_API_KEY="s3cret")
    resp = httpx.post(api + "/api/events", json=click(1))
    assert resp.status_code == 401
    assert resp.json() == {"detail": "missing X-API-Key header (producer key required)"}
    resp = httpx.post(api + "/api/events", json=click(1), headers={"X-API-Key": "guess"})
    assert resp.status_code == 401
    assert resp.json() == {"detail": "invalid X-API-Key (producer key required)"}
    assert "s3cret" not in resp.text
    resp = httpx.post(api + "/api/events", json=click(1), headers={"X-API-Key": "s3cret"})
    assert resp.status_code == 202
    assert httpx.get(api + "/api/popular").status_code == 200  # reads stay open


def test_health_readiness_metrics_and_docs(api: str) -> None:
    assert httpx.get(api + "/healthz").json() == {"status": "ok"}
    assert httpx.get(api + "/readyz").json() == {"ready": True, "checks": {"redis": "ok", "kafka": "ok"}}
    httpx.post(api + "/api/events", json=click(1))
    metrics = httpx.get(api + "/metrics").text
    assert 'eddy_api_events_accepted_total{type="interaction"} 1.0' in metrics
    docs = httpx.get(api + "/docs")
    assert docs.status_code == 200
    assert "/api/events" in httpx.get(api + "/openapi.json").json()["paths"]
    # Offline: Swagger UI's files come from this API (the installed swagger-ui-bundle), not a CDN.
    assert "http://" not in docs.text and "https://" not in docs.text
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in docs.text
        resp = httpx.get(api + asset)
        assert resp.status_code == 200 and len(resp.content) > 100_000, asset
    assert httpx.get(api + "/redoc").status_code == 404  # Redoc came from a CDN: off


def test_readyz_names_redis_when_it_is_unreachable(stack: Stack) -> None:
    api = stack.start_api(need_redis=False, EDDY_REDIS_URL="redis://127.0.0.1:1/0")
    resp = httpx.get(api + "/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["ready"] is False and body["checks"]["kafka"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable")


def test_events_flow_end_to_end_into_the_read_model(stack: Stack, api: str) -> None:
    stack.start_worker()
    batch = [{"type": "item", "item_id": f"i{n}", "title": f"Residency {n}", "category": "painting"} for n in range(5)]
    batch += [{"type": "interaction", "user_id": f"u{n}", "item_id": "i3", "action": "like"} for n in range(4)]
    batch += [{"type": "interaction", "user_id": "u0", "item_id": "i1", "action": "click"}]
    batch += [{"type": "preference", "user_id": "u0", "interests": {"painting": 1.0}}]
    batch += [{"type": "scrape_attempt", "domain": "a.org", "strategy": "rss", "success": s} for s in (True, False, False)]
    batch += [{"type": "bid", "bid_id": "b1", "profile_id": "p1", "amount": 50.0}, {"type": "bid_outcome", "bid_id": "b1", "won": True}]
    assert httpx.post(api + "/api/events", json=batch).status_code == 202

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        popular = httpx.get(api + "/api/popular?k=2").json()["items"]
        if len(popular) == 2:
            break
        time.sleep(0.1)
    # The cold-start list (the model's new-user blend) leads with what four users liked.
    assert popular[0]["item_id"] == "i3" and popular[0]["score"] > popular[1]["score"] > 0
    assert popular[0]["item"]["title"] == "Residency 3" and popular[0]["reason"] in {"trending", "popular", "new"}
    assert httpx.get(api + "/api/items/i2").json()["title"] == "Residency 2"
    counts = httpx.get(api + "/api/users/u0/counts").json()
    assert counts["counts"] == {"like": 1, "click": 1} and counts["interests"] == {"painting": 1.0}
    stats = httpx.get(api + "/api/strategies/a.org/stats").json()["strategies"]["rss"]
    assert (stats["attempts"], stats["successes"], stats["consecutive_failures"]) == (3, 1, 2)
    assert stats["success_rate"] == pytest.approx(1 / 3)
    bid = httpx.get(api + "/api/bids/b1").json()
    assert bid["bid"]["amount"] == 50.0 and bid["outcome"]["won"] is True


def test_reads_of_unknown_or_malformed_ids(api: str) -> None:
    resp = httpx.get(api + "/api/items/nope")
    assert resp.status_code == 404 and resp.json() == {"detail": "unknown item 'nope'"}
    resp = httpx.get(api + "/api/items/bad%20id")
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["field"] == "item_id"
    resp = httpx.get(api + "/api/popular?k=1000")
    assert resp.status_code == 422
    assert resp.json()["detail"] == [{"field": "k", "reason": "Input should be less than or equal to 100"}]


def test_the_api_log_holds_no_deprecation_warnings(stack: Stack) -> None:
    """FastAPI warned on every response of its deprecated ORJSONResponse and filled api.log."""
    api = stack.start_api()
    for path in ("/healthz", "/api/popular", "/api/models/recommender", "/api/scraping/analytics"):
        assert httpx.get(api + path).status_code == 200, path
    assert httpx.post(api + "/api/events", json=[]).status_code == 422
    log = (stack.children.log_dir / "api.log").read_text()
    assert "DeprecationWarning" not in log, log[-2000:]


def test_openapi_publishes_the_event_contract_as_a_union_on_type(api: str) -> None:
    schema = httpx.get(api + "/openapi.json").json()
    body = schema["paths"]["/api/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    one, many = body["anyOf"]
    assert one["discriminator"]["propertyName"] == "type"
    assert set(one["discriminator"]["mapping"]) == {"item", "interaction", "preference", "user_deleted",
                                                    "scrape_attempt", "bid", "bid_outcome"}
    assert many["type"] == "array" and many["items"] == one
    for ref in one["discriminator"]["mapping"].values():
        assert ref.removeprefix("#/components/schemas/") in schema["components"]["schemas"]
    assert "value" in schema["components"]["schemas"]["InteractionEvent"]["properties"]
