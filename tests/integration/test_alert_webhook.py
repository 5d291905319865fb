"""The webhook notifier against a real HTTP server on a loopback port (``http.server`` in a
thread): alerts arrive in order, a 500 is retried, and a dead URL never blocks the caller."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from deploy.processes import free_port
from schemas.events import AlertEvent
from streams.alerting import WebhookNotifier

pytestmark = pytest.mark.integration

TOKEN = "T0001/B0001/s3cr3t-t0ken"


class Webhook(ThreadingHTTPServer):
    """A Slack-like incoming webhook: records every POST; answers 500 to the first ``fail``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[str, dict]] = []
        self.fail = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/{TOKEN}"

    def texts(self) -> list[str]:
        with self.lock:
            return [body["text"] for _, body in self.posts]


class _Handler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.posts.append((self.path, body))
            failing = self.server.fail > 0
            self.server.fail -= failing
        status, answer = (500, b"boom") if failing else (200, b"ok")
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def alert(n: int) -> AlertEvent:
    return AlertEvent(type="alert", event_id=f"a{n}", ts=1.0, kind="error_drift", subject="bids",
                      detail=f"alert #{n}", severity="warning")


async def test_alerts_arrive_in_order(webhook: Webhook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = WebhookNotifier(webhook.url)
    await notifier.start()
    for i in range(20):
        notifier.notify(alert(i))
    await notifier.stop(deadline_s=10)
    assert webhook.texts() == [f"[WARNING] error_drift on bids: alert #{i}" for i in range(20)]
    assert {path for path, _ in webhook.posts} == {f"/services/{TOKEN}"}
    assert (notifier.sent, notifier.failed, notifier.dropped) == (20, 0, 0)
    assert not any("s3cr3t" in r.getMessage() for r in caplog.records)


async def test_a_500_is_retried_then_succeeds(webhook: Webhook) -> None:
    webhook.fail = 2
    notifier = WebhookNotifier(webhook.url, backoff_base_s=0.05)
    await notifier.start()
    notifier.notify(alert(1))
    notifier.notify(alert(2))
    began = time.monotonic()
    await notifier.stop(deadline_s=10)
    assert webhook.texts() == ["[WARNING] error_drift on bids: alert #1"] * 3 + ["[WARNING] error_drift on bids: alert #2"]
    assert (notifier.sent, notifier.failed) == (2, 0)
    assert time.monotonic() - began >= 0.05 + 0.1  # the two pauses of the backoff


async def test_a_dead_url_never_blocks_and_is_given_up() -> None:
    dead = f"http://127.0.0.1:{free_port()}/services/{TOKEN}"
    notifier = WebhookNotifier(dead, timeout_s=0.5, max_attempts=2, backoff_base_s=0.05, max_queue=50)
    await notifier.start()
    began = time.perf_counter()
    for i in range(100):
        notifier.notify(alert(i))
    enqueue_s = time.perf_counter() - began
    assert enqueue_s < 0.01  # 100 alerts queued in under 10 ms: no network on the caller's path
    began = time.monotonic()
    await notifier.stop(deadline_s=1.0)
    assert time.monotonic() - began < 1.5
    assert notifier.sent == 0 and notifier.failed + notifier.dropped == 100 and notifier.failed >= 1
