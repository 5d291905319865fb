"""Alert delivery without a network: the text and event of an alert, the queue, the retry
and backoff rules (httpx's MockTransport answers), and that the webhook URL stays secret."""

from __future__ import annotations

import asyncio
import logging

import httpx
import orjson
import pytest
from pydantic import SecretStr

from online_models.drift import Finding
from schemas.events import AlertEvent, validate_event
from schemas.settings import Settings
from streams.alerting import (
    MAX_TEXT,
    WebhookNotifier,
    alert_event,
    alert_text,
    backoff_s,
    model_health_from,
    notifier_from,
    retryable,
    webhook_body,
)

URL = "https://hooks.example.com/services/T0001/B0001/s3cr3t-t0ken"
SECRET = "s3cr3t-t0ken"


def alert(n: int = 1, severity: str = "warning", detail: str = "online error rose") -> AlertEvent:
    return AlertEvent(type="alert", event_id=f"a{n}", ts=1.0, kind="error_drift", subject="bids",
                      detail=detail, severity=severity)


# --- pure parts ------------------------------------------------------------------------------


def test_alert_text_is_one_readable_line() -> None:
    assert alert_text(alert()) == "[WARNING] error_drift on bids: online error rose"
    assert alert_text(alert(severity="critical", detail="")) == "[CRITICAL] error_drift on bids"
    assert alert_text(alert(detail=" CTR fell\n  to 1%\n")) == "[WARNING] error_drift on bids: CTR fell to 1%"
    long = alert_text(alert(detail="x" * 10_000))
    assert len(long) == MAX_TEXT and long.endswith("x…")


def test_webhook_body_is_slack_compatible() -> None:
    assert webhook_body(alert(severity="info")) == {"text": "[INFO] error_drift on bids: online error rose"}


def test_alert_event_of_a_finding() -> None:
    finding = Finding("bids", "feature_drift", 1.0, 2.0, 5104, 1_700_000_000.0, "price moved", "warning", True,
                      "price")
    event = alert_event(finding)
    assert event == AlertEvent(
        type="alert", event_id="feature_drift:5104:bids:price", ts=1_700_000_000.0, kind="feature_drift",
        subject="bids", detail="price moved", severity="warning",
    )
    assert validate_event(orjson.loads(orjson.dumps(event.model_dump()))) == event


def test_alert_event_ids_stay_valid_for_odd_and_long_names() -> None:
    finding = Finding("rec/hybrid v2" * 20, "error_drift", 0.2, 0.5, 7, 0.0, "d", "warning", True, "f " * 100)
    event = alert_event(finding)
    assert len(event.event_id) == 200
    assert validate_event(orjson.loads(orjson.dumps(event.model_dump()))).event_id == event.event_id
    assert alert_event(finding) == event


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, False), (400, False), (403, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_retryable(status: int, expected: bool) -> None:
    assert retryable(status) is expected


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 0.5, 3.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


# --- the notifier --------------------------------------------------------------------------


class Recorder:
    """A MockTransport handler answering with the given statuses in turn (then 200)."""

    def __init__(self, *answers: int | Exception, headers: dict[str, str] | None = None) -> None:
        self.answers = list(answers)
        self.headers = headers or {}
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(orjson.loads(request.content))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, headers=self.headers, text="ok" if answer == 200 else "no")


def notifier(handler: Recorder, **kw: object) -> tuple[WebhookNotifier, list[float]]:
    n = WebhookNotifier(URL, transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]
    pauses: list[float] = []

    async def sleep(s: float) -> None:
        pauses.append(s)

    n._sleep = sleep
    return n, pauses


async def test_alerts_are_posted_in_order() -> None:
    handler = Recorder()
    n, pauses = notifier(handler)
    for i in range(3):
        n.notify(alert(i, detail=f"#{i}"))
    await n.start()
    await n.stop()
    assert [b["text"] for b in handler.bodies] == [f"[WARNING] error_drift on bids: #{i}" for i in range(3)]
    assert (n.sent, n.failed, n.dropped, pauses) == (3, 0, 0, [])


async def test_server_errors_and_network_errors_are_retried_with_backoff() -> None:
    handler = Recorder(500, httpx.ConnectError("refused"), 503)
    n, pauses = notifier(handler, backoff_base_s=0.5, backoff_cap_s=1.5)
    n.notify(alert())
    await n.start()
    await n.stop()
    assert (len(handler.bodies), n.sent, n.failed) == (4, 1, 0)
    assert pauses == [0.5, 1.0, 1.5]


async def test_an_alert_is_given_up_after_max_attempts() -> None:
    handler = Recorder(500, 500, 500)
    n, pauses = notifier(handler, max_attempts=3, backoff_base_s=1.0)
    n.notify(alert(1))
    n.notify(alert(2))
    await n.start()
    await n.stop()
    assert (len(handler.bodies), n.sent, n.failed) == (4, 1, 1)  # 3 tries of #1, then #2
    assert pauses == [1.0, 2.0]


async def test_client_errors_are_not_retried() -> None:
    handler = Recorder(404)
    n, pauses = notifier(handler)
    n.notify(alert())
    await n.start()
    await n.stop()
    assert (len(handler.bodies), n.sent, n.failed, pauses) == (1, 0, 1, [])


async def test_retry_after_is_honoured_up_to_the_cap() -> None:
    handler = Recorder(429, 429, headers={"Retry-After": "7"})
    n, pauses = notifier(handler, backoff_base_s=0.5, backoff_cap_s=5.0)
    n.notify(alert())
    await n.start()
    await n.stop()
    assert (n.sent, pauses) == (1, [5.0, 5.0])


async def test_an_unexpected_error_costs_one_alert_not_the_deliveries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if b"#1" in request.content:
            raise RuntimeError("bug")
        return httpx.Response(200)

    n = WebhookNotifier(URL, transport=httpx.MockTransport(handler))
    for i in range(3):
        n.notify(alert(i, detail=f"#{i}"))
    await n.start()
    await n.stop()
    assert (n.sent, n.failed) == (2, 1)


async def test_a_notifier_can_start_again_after_stopping() -> None:
    handler = Recorder()
    n, _ = notifier(handler)
    for _ in range(2):
        await n.start()
        n.notify(alert())
        await n.stop()
    assert n.sent == 2


def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    n, _ = notifier(Recorder(), max_queue=3)
    for i in range(5):
        n.notify(alert(i))
    assert (n.pending, n.dropped) == (3, 2)
    assert [a.event_id for a in n._queue] == ["a2", "a3", "a4"]


async def test_stop_gives_up_what_it_cannot_post_by_the_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return httpx.Response(200)

    n = WebhookNotifier(URL, transport=httpx.MockTransport(slow))
    for i in range(10):
        n.notify(alert(i))
    await n.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await n.stop(deadline_s=0.5)
    assert loop.time() - began < 0.8
    assert n.sent in (2, 3) and n.sent + n.dropped == 10 and n.pending == 0


async def test_the_webhook_url_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    n, _ = notifier(Recorder(500, httpx.ConnectError(f"cannot reach {URL}"), 404))
    n.notify(alert())
    await n.start()
    await n.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("hooks.example.com" in m for m in messages)
    assert not any(SECRET in m for m in messages)
    assert SECRET not in repr(n)


def test_a_webhook_url_without_http_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as err:
        WebhookNotifier("ftp://hooks.example.com/s3cr3t-t0ken")
    assert SECRET not in str(err.value)
    with pytest.raises(ValueError) as err:
        Settings(alert_webhook_url="hooks.example.com/s3cr3t-t0ken")
    assert "http:// or https://" in str(err.value) and SECRET not in str(err.value)


# --- from the settings ---------------------------------------------------------------------


def test_notifier_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert notifier_from(Settings()) is None
    monkeypatch.setenv("EDDY_ALERT_WEBHOOK_URL", URL)
    settings = Settings()
    assert isinstance(settings.alert_webhook_url, SecretStr) and SECRET not in repr(settings)
    made = notifier_from(settings)
    assert made is not None and made.host == "hooks.example.com"


def test_model_health_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_DRIFT_DELTA", "0.001")
    monkeypatch.setenv("EDDY_CTR_FLOOR", "0.03")
    monkeypatch.setenv("EDDY_CTR_WINDOW", "500")
    monkeypatch.setenv("EDDY_DRIFT_REACTION", "challenger")
    settings = Settings()
    health = model_health_from(settings, "hybrid", features=["score"])
    assert (health.model, health.delta, health.ctr_floor, health.ctr_window, health.features) == (
        "hybrid", 0.001, 0.03, 500, ("score",)
    )
    assert settings.drift_reaction == "challenger"
    monkeypatch.setenv("EDDY_DRIFT_REACTION", "retrain")
    with pytest.raises(ValueError):
        Settings()
