"""Alert delivery: turn model-health findings into ``alert`` events and post alerts to a
Slack-compatible webhook without ever making an agent wait.

:func:`alert_event` and :func:`alert_text` are pure. :class:`WebhookNotifier` owns a bounded
in-memory queue and one background task: :meth:`WebhookNotifier.notify` only appends (the
oldest alert is dropped, and counted, when the queue is full), the task posts
``{"text": ...}`` with a short timeout and retries network errors, 429 and 5xx with capped
exponential backoff; other answers (a revoked token gives 403/404) are not retried. The
webhook URL embeds a secret token (Slack's does), so only its host is ever logged, and
httpx's own request log line is redacted while the notifier runs. Alerts still go to the
alerts topic first: the webhook is a convenience, and a lost post loses no record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from typing import Any

import httpx
from pydantic import SecretStr

from online_models.drift import Finding, ModelHealth
from online_models.strategy import event_slug
from schemas.events import MAX_ID_LENGTH, AlertEvent
from schemas.settings import Settings

log = logging.getLogger(__name__)

#: Longest text posted; Slack truncates or refuses longer messages.
MAX_TEXT = 3_000


def alert_event(finding: Finding) -> AlertEvent:
    """The ``alert`` event of a finding, keyed by the model (its subject).

    The id is stable (kind, the observation count that found it, model, feature): a worker
    that restarts from a snapshot and finds it again emits the same id, which dedupes.
    """
    event_id = f"{finding.kind}:{finding.index}:{event_slug(finding.model)}"
    if finding.feature is not None:
        event_id += f":{event_slug(finding.feature)}"
    if len(event_id) > MAX_ID_LENGTH:
        event_id = event_id[: MAX_ID_LENGTH - 9] + "-" + hashlib.sha1(event_id.encode()).hexdigest()[:8]
    return AlertEvent(
        type="alert", event_id=event_id, ts=finding.ts, kind=finding.kind, subject=finding.model[:200],
        detail=finding.detail, severity=finding.severity,
    )


def alert_text(alert: AlertEvent) -> str:
    """One readable line: ``[WARNING] error_drift on bids: online error of bids rose ...``."""
    head = f"[{alert.severity.upper()}] {alert.kind} on {alert.subject}"
    detail = " ".join(alert.detail.split())
    text = f"{head}: {detail}" if detail else head
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def webhook_body(alert: AlertEvent) -> dict[str, Any]:
    """The JSON posted for an alert; ``text`` is what Slack, Mattermost and Rocket.Chat show."""
    return {"text": alert_text(alert)}


def retryable(status: int) -> bool:
    """Whether an HTTP answer is worth another try: rate limited, timed out or a server error."""
    return status in (408, 429) or status >= 500


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Pause after the ``attempt``-th failed try (1, 2, ...): ``base_s`` doubling, at most ``cap_s``."""
    return min(cap_s, base_s * 2 ** (attempt - 1))


class _RedactUrl(logging.Filter):
    """Replaces the webhook URL with its host in log records (httpx logs every request's URL)."""

    def __init__(self, url: str, shown: str) -> None:
        super().__init__()
        self.url, self.shown = url, shown

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(self.url in str(a) for a in record.args):
            record.args = tuple(self.shown if self.url in str(a) else a for a in record.args)
        if isinstance(record.msg, str) and self.url in record.msg:
            record.msg = record.msg.replace(self.url, self.shown)
        return True


class WebhookNotifier:
    """Posts alerts to a Slack-compatible incoming webhook from a background task.

    Call :meth:`notify` from the event loop's thread; it never blocks and never raises.
    Between :meth:`start` and :meth:`stop`, queued alerts are posted in order, one at a time.

    Parameters
    ----------
    url
        The webhook URL (a secret: never logged, only its host).
    timeout_s
        Timeout of one post (connect, write and read).
    max_queue
        Alerts waiting at most; when full, the oldest is dropped and counted in ``dropped``.
    max_attempts
        Tries per alert before it is given up (counted in ``failed``).
    backoff_base_s, backoff_cap_s
        Pause after the n-th failed try: ``backoff_base_s * 2**(n-1)``, at most ``backoff_cap_s``
        (a 429's ``Retry-After`` is honoured up to the cap).
    transport
        An httpx transport for the client (tests; default: httpx's own).

    Counters (for metrics): ``sent``; ``failed``, given up after ``max_attempts`` tries or at
    an answer not worth retrying; ``dropped``, pushed out of a full queue or still unposted
    when :meth:`stop` gave up. ``pending`` is the queue's length.
    """

    def __init__(
        self,
        url: str | SecretStr,
        *,
        timeout_s: float = 5.0,
        max_queue: int = 1_000,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url.get_secret_value() if isinstance(url, SecretStr) else url
        parsed = httpx.URL(self._url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the alert webhook URL must be an http(s) URL with a host")
        self.host = parsed.host
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._transport = transport
        self._queue: deque[AlertEvent] = deque(maxlen=max_queue)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._posting: AlertEvent | None = None  # the alert being posted
        self._client: httpx.AsyncClient | None = None
        self._stopping = False
        self._sleep = asyncio.sleep  # the pause between tries (unit tests record it instead)
        self._redact = _RedactUrl(self._url, f"{parsed.scheme}://{self.host}/<redacted>")
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"WebhookNotifier(host={self.host!r}, pending={self.pending})"

    @property
    def pending(self) -> int:
        """Alerts queued and not yet being posted."""
        return len(self._queue)

    def notify(self, alert: AlertEvent) -> None:
        """Queue an alert for posting; drops the oldest queued one when the queue is full."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("alert webhook %s: queue full, %d alerts dropped so far", self.host, self.dropped)
        self._queue.append(alert)
        self._wakeup.set()

    async def start(self) -> None:
        """Start posting in the background (alerts queued before are posted first)."""
        if self._task is not None:
            return
        logging.getLogger("httpx").addFilter(self._redact)
        self._stopping = False
        self._wakeup = asyncio.Event()  # bound to this loop on first use
        if self._queue:
            self._wakeup.set()
        self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport)
        self._task = asyncio.create_task(self._run(), name=f"alert-webhook-{self.host}")

    async def stop(self, deadline_s: float = 5.0) -> None:
        """Post what is queued for at most ``deadline_s``, then give up the rest and close."""
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), deadline_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lost = len(self._queue) + (self._posting is not None)
        if lost:
            log.warning("alert webhook %s: %d alerts not posted at shutdown", self.host, lost)
            self.dropped += lost
            self._queue.clear()
            self._posting = None
        self._task = None
        assert self._client is not None
        await self._client.aclose()
        self._client = None
        logging.getLogger("httpx").removeFilter(self._redact)

    async def _run(self) -> None:
        while True:
            while not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            self._posting = self._queue.popleft()
            try:
                await self._post(self._posting)
            except Exception as exc:  # noqa: BLE001 - one bad alert must not end the deliveries
                self.failed += 1
                log.error("alert webhook %s: could not post alert %s: %s", self.host, self._posting.event_id,
                          type(exc).__name__)
            self._posting = None

    async def _post(self, alert: AlertEvent) -> None:
        assert self._client is not None
        body = webhook_body(alert)
        for attempt in range(1, self.max_attempts + 1):
            pause = backoff_s(attempt, self.backoff_base_s, self.backoff_cap_s)
            try:
                response = await self._client.post(self._url, json=body)
            except httpx.HTTPError as exc:
                # The exception's text may hold the URL: log its type only.
                reason = type(exc).__name__
            else:
                if response.is_success:
                    self.sent += 1
                    return
                reason = f"HTTP {response.status_code}"
                if not retryable(response.status_code):
                    break
                pause = max(pause, min(self.backoff_cap_s, _retry_after(response)))
            if attempt < self.max_attempts:
                log.info("alert webhook %s: %s, retrying in %.1fs", self.host, reason, pause)
                await self._sleep(pause)
        self.failed += 1
        log.warning("alert webhook %s: gave up on alert %s after %s", self.host, alert.event_id, reason)


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


def notifier_from(settings: Settings) -> WebhookNotifier | None:
    """The webhook notifier of the settings, or None when no webhook is configured."""
    if settings.alert_webhook_url is None:
        return None
    return WebhookNotifier(settings.alert_webhook_url)


def model_health_from(settings: Settings, model: str, **overrides: Any) -> ModelHealth:
    """A :class:`ModelHealth` for one model with the configured delta and CTR floor;
    ``overrides`` are other :class:`ModelHealth` parameters (e.g. ``features=[...]``)."""
    params: dict[str, Any] = {
        "delta": settings.drift_delta, "ctr_floor": settings.ctr_floor, "ctr_window": settings.ctr_window,
    }
    return ModelHealth(model, **(params | overrides))
