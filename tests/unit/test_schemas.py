"""Event contracts: what is accepted, what is refused and with which words."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import EventDecodeError, decode_event, encode_event, validate_event
from schemas.jsonschema import SCHEMA_FILE, render_json_schema
from schemas.settings import Settings
from schemas.topics import CATALOGUE, key_of, route

VALID = [
    {"type": "item", "item_id": "i1", "title": "Call", "tags": ["a"], "deadline": "2026-12-01T00:00:00Z"},
    {"type": "interaction", "user_id": 42, "item_id": "i1", "action": "rate", "value": 4.5, "position": 0},
    {"type": "preference", "user_id": "u1", "interests": {"painting": 1.0, "jobs": -0.5}},
    {"type": "user_deleted", "user_id": "u1"},
    {"type": "scrape_attempt", "domain": "a.org", "strategy": "rss", "success": False, "latency_ms": 3.0, "http_status": 503},
    {"type": "bid", "bid_id": "b1", "profile_id": "p1", "amount": 10, "profile": {"skills": ["py"], "experience": 2}},
    {"type": "bid_outcome", "bid_id": "b1", "won": True},
    {"type": "strategy_switch", "domain": "a.org", "to_strategy": "api", "reason": "5 failures", "decision_id": "d1"},
    {"type": "strategy_pin", "domain": "a.org", "strategy": "api", "by": "ops"},
    {"type": "alert", "kind": "no_strategy", "subject": "a.org", "severity": "critical"},
    {"type": "rescrape_request", "source": "a.org", "reason": "titles missing"},
]


@pytest.mark.parametrize("doc", VALID, ids=[d["type"] for d in VALID])
def test_every_event_type_round_trips(doc: dict) -> None:
    if doc["type"] == "scrape_attempt":
        event = decode_event(orjson.dumps(doc))
        assert decode_event(encode_event(event)) == event
        return
    event = decode_event(orjson.dumps({**doc, "unknown_field": [1, 2]}))
    again = decode_event(encode_event(event))
    assert again == event
    assert again.unknown_field == [1, 2]  # unknown fields are kept


def test_scrape_attempts_refuse_unknown_fields() -> None:
    # A misspelt field would otherwise silently turn a success into a failure.
    with pytest.raises(EventDecodeError) as err:
        validate_event({"type": "scrape_attempt", "domain": "a", "strategy": "s", "success": True, "sucess": 1})
    assert err.value.errors == [{"field": "sucess", "reason": "Extra inputs are not permitted"}]


def test_ids_and_times_are_normalised() -> None:
    event = validate_event({"type": "interaction", "user_id": 42, "item_id": 7, "action": "click", "ts": "2024-01-01T00:00:00Z"})
    assert (event.user_id, event.item_id, event.ts) == ("42", "7", 1704067200.0)


@pytest.mark.parametrize(
    ("doc", "field", "reason"),
    [
        ({"type": "interaction", "user_id": "u", "item_id": "i", "action": "click", "value": "5"}, "value", "Input should be a valid number"),
        ({"type": "interaction", "user_id": True, "item_id": "i", "action": "click"}, "user_id", "Input should be a valid string"),
        ({"type": "interaction", "user_id": "u", "item_id": "i", "action": "rate"}, "value", "a 'rate' interaction needs a numeric value"),
        ({"type": "interaction", "user_id": "u", "item_id": "i", "action": "rate", "value": 11}, "value", "a rating must be between 0 and 10"),
        ({"type": "interaction", "user_id": "a b", "item_id": "i", "action": "click"}, "user_id", "String should match pattern '^[A-Za-z0-9_.:@+\\-=~#$!*]+$'"),
        ({"type": "interaction", "user_id": "u", "item_id": "i", "action": "click", "ts": "yesterday"}, "ts", "must be seconds since the epoch or an ISO-8601 time"),
        ({"type": "scrape_attempt", "domain": "d", "strategy": "s", "success": 1}, "success", "Input should be a valid boolean"),
        ({"type": "scrape_attempt", "domain": "d", "strategy": "s", "success": True, "latency_ms": -1}, "latency_ms", "Input should be greater than or equal to 0"),
        ({"type": "bid_outcome", "bid_id": "b"}, "won", "Field required"),
        ({"type": "preference", "user_id": "u", "interests": {"x": 3}}, "interests.x", "Input should be less than or equal to 1"),
        ({"user_id": "u"}, "type", "Field required"),
    ],
)
def test_wrong_events_name_the_field_and_the_reason(doc: dict, field: str, reason: str) -> None:
    with pytest.raises(EventDecodeError) as exc:
        validate_event(doc)
    assert exc.value.errors == [{"field": field, "reason": reason}]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty record (no value)"),
        (b"[1, 2]", "an event must be a JSON object, got list"),
        (b'{"type": 3}', "unknown event type 3; expected one of alert, bid, bid_outcome, interaction, item, preference, rescrape_request, scrape_attempt, strategy_pin, strategy_switch, user_deleted"),
        (b"x" * 2000, "event is 2000 bytes, over the limit of 1024"),
    ],
)
def test_undecodable_records(raw: bytes | None, reason: str) -> None:
    with pytest.raises(EventDecodeError) as exc:
        decode_event(raw, max_bytes=1024)
    assert exc.value.reason == reason


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_never_raises_anything_else(raw: bytes) -> None:
    try:
        decode_event(raw, max_bytes=200)
    except EventDecodeError as exc:
        assert exc.reason


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                    max_leaves=20))
def test_validating_arbitrary_json_values_never_raises_anything_else(value: object) -> None:
    for doc in (value, {"type": "interaction", "user_id": value, "item_id": "i", "action": "click"}):
        try:
            validate_event(doc)
        except EventDecodeError as exc:
            assert exc.errors


def test_routing_and_keys() -> None:
    assert {t for spec in CATALOGUE for t in spec.types} == {d["type"] for d in VALID}
    assert [(route(d["type"]).name, key_of(validate_event(d))) for d in VALID] == [
        ("items", b"i1"), ("interactions", b"42"), ("interactions", b"u1"), ("interactions", b"u1"),
        ("scrape-attempts", b"a.org"), ("bids", b"b1"), ("bids", b"b1"), ("strategy-switches", b"a.org"),
        ("scrape-attempts", b"a.org"), ("alerts", b"a.org"), ("rescrape-requests", b"a.org"),
    ]


def test_committed_json_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text() == render_json_schema(), "run `make schemas`"


def test_settings_bind_to_eddy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_KAFKA_BOOTSTRAP", "k1:9092, k2:9093")
    monkeypatch.setenv("EDDY_REDIS_URL", "redis://r:6380/2")
    monkeypatch.setenv("EDDY_PARTITIONS", "12")
    monkeypatch.setenv("EDDY_PRODUCER_API_KEY", "k")
    monkeypatch.setenv("EDDY_CORS_ORIGINS", "https://eddy.example, https://b.example")
    monkeypatch.setenv("EDDY_ADMIN_API_KEY", "")
    s = Settings()
    assert s.bootstrap_servers == ["k1:9092", "k2:9093"]
    assert s.faust_broker == "kafka://k1:9092;kafka://k2:9093"
    assert (s.redis_url, s.partitions, s.cors_origins) == ("redis://r:6380/2", 12, ["https://eddy.example", "https://b.example"])
    assert s.admin_api_key is None
    assert s.producer_api_key.get_secret_value() == "k" and "k" not in repr(s.producer_api_key)
    monkeypatch.setenv("EDDY_PARTITIONS", "0")
    with pytest.raises(ValueError):
        Settings()


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`EDDY_{name.upper()}`" not in readme]
    assert missing == []


def test_a_bad_secret_setting_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as err:
        Settings(user_token_secret="short-and-secret")
    assert "at least 32 characters" in str(err.value) and "short-and-secret" not in str(err.value)


def test_list_settings_read_a_json_list_or_commas() -> None:
    """PRODUCTION.md and compose write EDDY_CORS_ORIGINS as a JSON list; it used to be read
    as one origin named '["https://..."]', so every preflight got 400."""
    for raw in ('["https://a.example", "https://b.example"]', "https://a.example, https://b.example"):
        assert Settings(cors_origins=raw).cors_origins == ["https://a.example", "https://b.example"]
    assert Settings(cors_origins="[]").cors_origins == []
    with pytest.raises(ValueError, match="not a JSON list"):
        Settings(cors_origins='["https://a.example"')


def test_every_setting_can_reach_every_eddy_service_in_compose() -> None:
    """Compose passed about ten settings; the token secret, the rate limit, the alert webhook
    and the scraping settings could not reach the containers. Every Eddy service reads .env,
    and what compose sets itself is a known setting."""
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    eddy = {name: svc for name, svc in compose["services"].items() if svc.get("image", "").startswith("${EDDY_IMAGE")}
    assert set(eddy) >= {"topics", "worker", "api", "simulator"}
    known = {f"EDDY_{name.upper()}" for name in Settings.model_fields}
    for name, svc in eddy.items():
        assert {"path": ".env", "required": False} in svc["env_file"], name
        assert set(svc.get("environment") or {}) <= known, (name, set(svc["environment"]) - known)
