"""The scraper side of self-healing scraping: follow strategy switches, report attempts.

A scraper asks :class:`ScraperClient` which strategy to use on a domain, scrapes, and
reports the attempt; the worker learns from every attempt and, when a domain's best
strategy changes, publishes one ``strategy_switch`` on ``strategy-switches`` (key = domain).
The client reads that topic from the beginning on the partitions its domains map to, so it
knows the latest decision per domain as soon as it has caught up, and ignores a decision it
has already applied (delivery is at-least-once). It explores on the worker's behalf: with
the decision's ``explore_rate`` an attempt uses one of the domain's other strategies, which
is how the worker notices that a broken strategy works again. Attempts are validated when
reported, so a bad one fails in the scraper and never reaches Kafka, and are sent in
batches as partition-aware envelopes, exactly as the API writes them.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Self

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from ulid_transform import ulid_now

from schemas.envelope import ENVELOPE_FIELD, decode_record, pack, partition_of
from schemas.events import (
    EventDecodeError,
    StrategySwitchEvent,
    encode_event,
    validate_event,
)
from schemas.settings import Settings
from schemas.topics import SCRAPE_ATTEMPTS, STRATEGY_SWITCHES

__all__ = [
    "DeliveryError",
    "InvalidAttempt",
    "ScraperClient",
    "StrategyChoice",
    "pick_strategy",
]

log = logging.getLogger(__name__)

_SCRAPE_ATTEMPT = frozenset({"scrape_attempt"})
#: Decision ids remembered per domain. A redelivered switch comes back within a few
#: records of the original, so a short memory is enough and it cannot grow without bound.
_SEEN_DECISIONS_PER_DOMAIN = 256


class InvalidAttempt(EventDecodeError):
    """A reported attempt is not a valid ``scrape_attempt``; ``errors`` lists each field."""


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge some reported attempts."""


@dataclass(frozen=True)
class StrategyChoice:
    """The decision in force for one domain: the last ``strategy_switch`` applied.

    ``params`` is the switch's parameter object as sent (read-only); the typed fields below
    are read from it, with safe defaults when the worker left one out or sent a wrong type.
    """

    domain: str
    strategy: str
    from_strategy: str | None
    reason: str
    decision_id: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    ts: float | None = None
    timeout_ms: float | None = None
    retries: int | None = None
    explore_rate: float = 0.0
    strategies: tuple[str, ...] = ()

    @classmethod
    def from_event(cls, event: StrategySwitchEvent) -> StrategyChoice:
        """Read a validated switch; bad parameters fall back rather than fail the scraper."""
        params = dict(event.params)
        timeout_ms = params.get("timeout_ms")
        retries = params.get("retries")
        rate = params.get("explore_rate", 0.0)
        strategies = params.get("strategies", ())
        if not _is_number(timeout_ms) or timeout_ms <= 0:
            timeout_ms = None
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            retries = None
        if not _is_number(rate) or not 0.0 <= rate <= 1.0:
            log.warning("switch %s for %s: explore_rate %r is not in [0, 1]; not exploring",
                        event.decision_id, event.domain, rate)
            rate = 0.0
        if not isinstance(strategies, (list, tuple)) or not all(isinstance(s, str) and s for s in strategies):
            log.warning("switch %s for %s: strategies %r is not a list of names; not exploring",
                        event.decision_id, event.domain, strategies)
            strategies = ()
        return cls(
            domain=event.domain,
            strategy=event.to_strategy,
            from_strategy=event.from_strategy,
            reason=event.reason,
            decision_id=event.decision_id,
            params=MappingProxyType(params),
            ts=event.ts,
            timeout_ms=None if timeout_ms is None else float(timeout_ms),
            retries=retries,
            explore_rate=float(rate),
            strategies=tuple(dict.fromkeys(strategies)),
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pick_strategy(current: str, strategies: Sequence[str], explore_rate: float, rng: random.Random) -> str:
    """The strategy for one attempt: ``current``, or with ``explore_rate`` another one.

    The other strategy is drawn uniformly among ``strategies`` without ``current``; with
    none to explore, the answer is always ``current``.

    >>> rng = random.Random(0)
    >>> [pick_strategy("api", ["api", "rss"], 0.5, rng) for _ in range(6)]
    ['api', 'api', 'rss', 'api', 'rss', 'api']
    >>> pick_strategy("api", ["api"], 1.0, rng)
    'api'
    """
    others = [s for s in strategies if s != current]
    if not others or explore_rate <= 0.0 or rng.random() >= explore_rate:
        return current
    return rng.choice(others)


class ScraperClient:
    """Follows strategy switches for some domains and reports scrape attempts in batches.

    Parameters
    ----------
    settings
        Kafka address and topic prefix (``kafka_bootstrap``, ``topic_prefix``), and the
        largest event the worker accepts (``max_event_bytes``).
    domains
        The domains this scraper handles; their switches are followed and the others
        skipped. ``None`` follows every domain.
    default_strategy
        What :meth:`strategy_for` and :meth:`choose` answer for a domain without a decision.
    seed
        Seed of the exploration draws, so a run can be repeated.
    batch_size, linger_s
        Attempts are sent when ``batch_size`` are buffered, when the oldest has waited
        ``linger_s`` (checked on :meth:`report` and :meth:`poll`, and continuously once
        :meth:`start` was called), on :meth:`flush` and on :meth:`close`.
    on_switch
        Called with the new :class:`StrategyChoice` each time a decision is applied, in the
        thread that polled. An exception it raises is logged, not propagated, so one bad
        callback cannot stop the scraper from following later decisions.
    scraper_id
        Filled into reported attempts that carry none.

    Attempt reporting and the choice methods may be called from any number of threads.
    """

    def __init__(
        self,
        settings: Settings,
        domains: Iterable[str] | None = None,
        *,
        default_strategy: str,
        seed: int = 0,
        batch_size: int = 200,
        linger_s: float = 0.2,
        on_switch: Callable[[StrategyChoice], None] | None = None,
        scraper_id: str | None = None,
        strategies: Sequence[str] = (),
        explore_rate: float = 0.0,
    ) -> None:
        if not default_strategy:
            raise ValueError("default_strategy must be a strategy name")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if linger_s < 0:
            raise ValueError("linger_s must not be negative")
        self.settings = settings
        self.domains: frozenset[str] | None = None if domains is None else frozenset(domains)
        self.default_strategy = default_strategy
        # Until Eddy has decided for a domain, the scraper explores its own list: without
        # that, a domain whose default works passably would never learn of a better one.
        if not 0.0 <= explore_rate <= 1.0:
            raise ValueError("explore_rate must be in [0, 1]")
        self.strategies = tuple(dict.fromkeys([default_strategy, *strategies]))
        self.explore_rate = explore_rate
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.on_switch = on_switch
        self.scraper_id = scraper_id
        self.switch_topic = STRATEGY_SWITCHES.full_name(settings)
        self.attempt_topic = SCRAPE_ATTEMPTS.full_name(settings)

        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # choices, seen decisions, rng, counters
        self._choices: dict[str, StrategyChoice] = {}
        self._seen: dict[str, OrderedDict[str, None]] = {}
        self._counts = {
            "switches_applied": 0,
            "switches_repeated": 0,
            "switches_other_domains": 0,
            "records_invalid": 0,
            "attempts_reported": 0,
            "attempts_sent": 0,
            "attempts_failed": 0,
        }
        self._buffer_lock = threading.Lock()  # buffer, pending futures; keeps sends in order
        self._buffer: list[tuple[bytes, bytes]] = []
        self._oldest: float | None = None
        self._pending: list[tuple[Any, int]] = []
        self._consumer_lock = threading.Lock()  # a KafkaConsumer is not thread-safe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

        client_id = f"eddy-scraper-{scraper_id}" if scraper_id else "eddy-scraper"
        # No consumer group: every scraper must see every switch of its domains, and a
        # plain assignment starts at once (kafka-python joins groups slowly on Tansu).
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,  # switches are rare and small: answer fetches quickly
            allow_auto_create_topics=False,
        )
        try:
            self.switch_partitions = self._partitions(self.switch_topic)
            self.attempt_partitions = self._partitions(self.attempt_topic)
            if self.domains is None:
                followed = set(self.switch_partitions)
            else:
                followed = {partition_of(d.encode(), self.switch_partitions) for d in self.domains}
            self.assignment = [TopicPartition(self.switch_topic, p) for p in sorted(followed)]
            self._consumer.assign(self.assignment)
            # Start from the beginning: the latest decision of each domain is in the log.
            self._consumer.seek_to_beginning(*self.assignment)
            self._producer = KafkaProducer(
                bootstrap_servers=settings.bootstrap_servers,
                client_id=client_id,
                acks="all",
                linger_ms=5,  # batching is done here; the producer only coalesces envelopes
                max_block_ms=10_000,
                allow_auto_create_topics=False,
            )
        except BaseException:
            self._consumer.close()
            raise

    def _partitions(self, topic: str) -> list[int]:
        # The broker's partition count, not settings.partitions: the worker and the API key
        # by the topic as it exists, and a mismatch must not send attempts to the wrong place.
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            raise RuntimeError(f"topic {topic!r} does not exist on {self.settings.kafka_bootstrap}; run `eddy topics`")
        if len(partitions) != self.settings.partitions:
            log.warning("topic %s has %d partitions, settings say %d; using the broker's",
                        topic, len(partitions), self.settings.partitions)
        return sorted(partitions)

    # -- decisions -----------------------------------------------------------------------

    def _check_domain(self, domain: str) -> None:
        if self.domains is not None and domain not in self.domains:
            raise ValueError(f"this client does not follow switches for domain {domain!r}")

    def current(self, domain: str) -> StrategyChoice | None:
        """The decision in force for ``domain``, or None while there is none."""
        self._check_domain(domain)
        with self._lock:
            return self._choices.get(domain)

    def strategy_for(self, domain: str) -> str:
        """The decided strategy for ``domain``, else ``default_strategy``; never explores."""
        choice = self.current(domain)
        return self.default_strategy if choice is None else choice.strategy

    def choose(self, domain: str) -> str:
        """The strategy for the next attempt on ``domain``, exploring at the decided rate."""
        self._check_domain(domain)
        with self._lock:
            choice = self._choices.get(domain)
            if choice is None:
                return pick_strategy(self.default_strategy, self.strategies, self.explore_rate, self._rng)
            return pick_strategy(choice.strategy, choice.strategies, choice.explore_rate, self._rng)

    def poll(self, timeout_ms: int = 0) -> int:
        """Read switches for up to ``timeout_ms`` and apply them; returns how many applied.

        Also sends buffered attempts whose linger time is up.
        """
        with self._consumer_lock:
            if self._closed:
                return 0
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        applied = []
        for records in batches.values():
            for record in records:
                applied.extend(self._read_record(record))
        for choice in applied:
            self._notify(choice)
        self._flush_if_due()
        return len(applied)

    def catch_up(self, timeout_s: float = 10.0) -> bool:
        """Poll until every switch already in the log is applied; False on timeout.

        Call it at start-up so the first attempts already use the latest decisions.
        """
        deadline = time.monotonic() + timeout_s
        with self._consumer_lock:
            ends = self._consumer.end_offsets(self.assignment)
        while True:
            with self._consumer_lock:
                behind = [tp for tp in self.assignment if self._consumer.position(tp) < ends[tp]]
            if not behind:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(timeout_ms=int(min(remaining, 0.2) * 1000))

    def _read_record(self, record: Any) -> list[StrategyChoice]:
        events, _ = decode_record(record.value, max_bytes=self.settings.max_event_bytes)
        applied = []
        for event in events:
            if isinstance(event, EventDecodeError) or not isinstance(event, StrategySwitchEvent):
                reason = event.reason if isinstance(event, EventDecodeError) else f"a {event.type} event"
                log.warning("skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
                with self._lock:
                    self._counts["records_invalid"] += 1
                continue
            choice = self._apply(event)
            if choice is not None:
                applied.append(choice)
        return applied

    def _apply(self, event: StrategySwitchEvent) -> StrategyChoice | None:
        with self._lock:
            if self.domains is not None and event.domain not in self.domains:
                # Other domains hash to the same partitions; they are someone else's.
                self._counts["switches_other_domains"] += 1
                return None
            seen = self._seen.setdefault(event.domain, OrderedDict())
            if event.decision_id in seen:
                self._counts["switches_repeated"] += 1
                return None
            seen[event.decision_id] = None
            if len(seen) > _SEEN_DECISIONS_PER_DOMAIN:
                seen.popitem(last=False)
            choice = StrategyChoice.from_event(event)
            self._choices[event.domain] = choice
            self._counts["switches_applied"] += 1
        log.info("%s: %s -> %s (%s) [%s]", choice.domain, choice.from_strategy, choice.strategy,
                 choice.reason, choice.decision_id)
        return choice

    def _notify(self, choice: StrategyChoice) -> None:
        if self.on_switch is None:
            return
        try:
            self.on_switch(choice)
        except Exception:
            log.exception("on_switch callback failed for decision %s", choice.decision_id)

    # -- attempts ------------------------------------------------------------------------

    def report(self, event: Mapping[str, Any] | None = None, /, **fields: Any) -> str:
        """Buffer one scrape attempt, given as a dict, keywords or both; returns its event_id.

        ``type`` defaults to ``scrape_attempt``, ``event_id`` to a new ULID, ``ts`` to now
        and ``scraper_id`` to the client's. Raises :class:`InvalidAttempt` (nothing is
        buffered) when the attempt does not match the contract.
        """
        doc: dict[str, Any] = {"type": "scrape_attempt", **(event or {}), **fields}
        if doc.get("event_id") is None:
            doc["event_id"] = ulid_now()
        if doc.get("ts") is None:
            doc["ts"] = time.time()
        if self.scraper_id is not None and doc.get("scraper_id") is None:
            doc["scraper_id"] = self.scraper_id
        try:
            attempt = validate_event(doc, allowed=_SCRAPE_ATTEMPT)
        except EventDecodeError as exc:
            raise InvalidAttempt(f"invalid scrape attempt: {exc.reason}", exc.errors) from None
        encoded = encode_event(attempt)
        if len(encoded) > self.settings.max_event_bytes:
            reason = f"event is {len(encoded)} bytes, over the limit of {self.settings.max_event_bytes}"
            raise InvalidAttempt(f"invalid scrape attempt: {reason}")
        with self._buffer_lock:
            if self._closed:
                raise RuntimeError("the scraper client is closed")
            self._buffer.append((attempt.domain.encode(), encoded))
            if self._oldest is None:
                self._oldest = time.monotonic()
            full = len(self._buffer) >= self.batch_size
            if full or time.monotonic() - self._oldest >= self.linger_s:
                self._send_buffer()
        with self._lock:
            self._counts["attempts_reported"] += 1
        return attempt.event_id

    def flush(self, timeout_s: float = 10.0) -> int:
        """Send every buffered attempt and wait for Kafka's acks; returns how many were sent.

        Raises :class:`DeliveryError` if any attempt sent since the last flush was refused.
        """
        with self._buffer_lock:
            if self._closed:
                return 0
            self._send_buffer()
            pending, self._pending = self._pending, []
        self._producer.flush(timeout=timeout_s)
        sent, failed, first_error = 0, 0, None
        for future, n in pending:
            if future.is_done and future.succeeded():
                sent += n
            else:
                failed += n
                first_error = first_error or (future.exception if future.is_done else "no ack in time")
        if failed:
            raise DeliveryError(f"{failed} scrape attempts were not acknowledged by Kafka: {first_error!r}")
        return sent

    def _flush_if_due(self) -> None:
        with self._buffer_lock:
            if self._oldest is not None and time.monotonic() - self._oldest >= self.linger_s:
                self._send_buffer()

    def _send_buffer(self) -> None:
        # Called with _buffer_lock held, so two threads' batches reach Kafka in order. If a
        # send raises, the whole buffer stays and goes again later: repeats are harmless,
        # the worker drops an event_id it has already counted.
        if not self._buffer:
            return
        for partition, value in pack(self._buffer, self.attempt_partitions):
            n = len(orjson.loads(value)[ENVELOPE_FIELD])
            future = self._producer.send(self.attempt_topic, value=value, partition=partition)
            future.add_callback(self._count, "attempts_sent", n)
            future.add_errback(self._delivery_failed, n)
            self._pending.append((future, n))
        self._buffer.clear()
        self._oldest = None
        # Acked futures are only kept for flush() to inspect; drop the settled successes.
        if len(self._pending) > 1_000:
            self._pending = [(f, n) for f, n in self._pending if not (f.is_done and f.succeeded())]

    def _count(self, name: str, n: int, _result: Any = None) -> None:
        with self._lock:
            self._counts[name] += n

    def _delivery_failed(self, n: int, exc: BaseException) -> None:
        log.error("Kafka refused %d scrape attempts: %r", n, exc)
        self._count("attempts_failed", n)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: switches applied / repeated / for other domains, attempts sent / failed."""
        with self._lock:
            return dict(self._counts)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Poll switches (and send lingering attempts) in a daemon thread until close()."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="eddy-scraper-client", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll(timeout_ms=100)
            except KafkaError:
                # The broker may come back; keep following switches once it does.
                log.exception("polling strategy switches failed; retrying")
                self._stop.wait(1.0)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop polling, send what is buffered, wait for the acks and disconnect."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        try:
            self.flush(timeout_s)
        finally:
            with self._buffer_lock, self._consumer_lock:
                self._closed = True
            self._producer.close(timeout=timeout_s)
            self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
