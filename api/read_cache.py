"""The read model's hot documents (users' lists, the popular list), kept in each API process.

Two jobs, one store:

* **Fresh copies.** While Redis tracks the cached key prefixes for this process (server-
  assisted client-side caching: ``CLIENT TRACKING ... BCAST`` on a connection of our own,
  invalidations read from ``__redis__:invalidate``), a copy is served without a Redis read;
  the moment the worker writes or deletes the key, Redis says so and the copy stops being
  trusted. A UI that polls a list, or many readers of the same popular list, costs Redis
  nothing until the document changes. When the tracking connection drops, nothing is
  trusted until it is back (invalidations sent meanwhile are lost), so a copy is never
  served as fresh past a change.
* **Stale copies.** When Redis does not answer, the last copy read is served marked
  ``"stale": true`` (a key never read here gives ``None``: the cold-start list) instead of
  a 503, so a UI keeps showing something sensible through a Redis restart.

A read racing an invalidation is not trusted: an invalidation that arrives for a key while
its read is in flight voids the read's claim to freshness (the value is still served once).
Routes may memoize what they derive from a document (parsed, rendered) on its entry: the
memo goes with the copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from redis.exceptions import RedisError

from api.metrics import READ_CACHE

log = logging.getLogger(__name__)
HIT, MISS, STALE = (READ_CACHE.labels(outcome) for outcome in ("hit", "miss", "stale"))

INVALIDATE_CHANNEL = "__redis__:invalidate"
PING_EVERY_S = 1.0  # heartbeat on the tracking connection; silence for 3 of them = dead
RETRY_MAX_S = 2.0


class Entry:
    """One cached document: its bytes (``None``: the key does not exist), whether it may be
    served without a read, and what routes derived from it."""

    __slots__ = ("value", "fresh", "memo")

    def __init__(self, value: bytes | None, fresh: bool) -> None:
        self.value = value
        self.fresh = fresh
        self.memo: dict[Any, Any] = {}


class ReadCache:
    """At most ``size`` documents, least recently read out; copies of keys under
    ``prefixes`` are served fresh while Redis tracks those prefixes for this process."""

    def __init__(self, size: int, prefixes: Iterable[str] = (), *, tracking: bool = True) -> None:
        self.size = size
        self.prefixes = tuple(prefixes)
        self.tracking = tracking and size > 0 and bool(self.prefixes)
        self.tracked = False  # invalidations are flowing now
        self.sessions = 0  # how many times tracking started (a new session after each loss)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._reads: dict[str, object] = {}  # key -> token of the read in flight
        self._epoch = 0  # moves whenever tracking starts or stops

    # --- reads --------------------------------------------------------------------------

    async def get(self, redis: Any, key: str) -> tuple[Entry | None, bool]:
        """``(entry, stale)``: a fresh copy, or Redis's value (cached), or, when Redis is
        away, the last copy marked stale (``None`` when there is none)."""
        entry = self._entries.get(key)
        if entry is not None and entry.fresh and self.tracked:
            self._entries.move_to_end(key)
            HIT.inc()
            return entry, False
        token, epoch = object(), self._epoch
        self._reads[key] = token
        try:
            value = await redis.get(key)
        except (TimeoutError, RedisError, OSError) as exc:
            if self._reads.get(key) is token:
                del self._reads[key]
            if self.size == 0:
                raise HTTPException(503, f"read model unavailable: {type(exc).__name__}") from exc
            STALE.inc()
            if entry is not None:
                self._entries.move_to_end(key)
            return entry, True
        trusted = (self._reads.get(key) is token and epoch == self._epoch and self.tracked
                   and key.startswith(self.prefixes))
        if self._reads.get(key) is token:
            del self._reads[key]
        MISS.inc()
        if self.size == 0:
            return Entry(value, False), False
        if entry is None or entry.value != value:
            entry = Entry(value, trusted)
        else:
            entry.fresh = trusted  # same bytes: what was derived from them still holds
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry, False

    # --- invalidation -------------------------------------------------------------------

    def invalidate(self, keys: Iterable[bytes | str] | None) -> None:
        """Redis says these keys changed (``None``: everything, after a flush)."""
        if keys is None:
            self._distrust_all()
            return
        for raw in keys:
            key = raw.decode() if isinstance(raw, bytes) else raw
            entry = self._entries.get(key)
            if entry is not None:
                entry.fresh = False
            self._reads.pop(key, None)

    def _distrust_all(self) -> None:
        for entry in self._entries.values():
            entry.fresh = False
        self._reads.clear()

    def tracking_started(self) -> None:
        """Redis tracks the cached keys for us from now on: copies read from here may be trusted."""
        self.sessions += 1
        self._tracking_changed(True)

    def tracking_stopped(self) -> None:
        """Invalidations may be lost from here on: no copy is trusted until tracking is back."""
        self._tracking_changed(False)

    def _tracking_changed(self, tracked: bool) -> None:
        # Either way, nothing read before this moment may be trusted: invalidations may
        # have been lost in between, and a read in flight may straddle the change.
        self._epoch += 1
        self.tracked = tracked
        self._distrust_all()

    async def follow(self, redis: Any) -> None:
        """Keep Redis tracking the prefixes for this process and apply its invalidations;
        reconnects with backoff. Runs until cancelled."""
        if not self.tracking:
            return
        pool = redis.connection_pool
        kwargs = {**pool.connection_kwargs, "protocol": 2, "socket_timeout": None}
        delay, warned = 0.1, False
        while True:
            conn = pool.connection_class(**kwargs)
            pinger: asyncio.Task | None = None
            try:
                await conn.connect()
                await conn.send_command("CLIENT", "ID")
                own_id = await conn.read_response()
                # Redirected to this very connection, which then subscribes: RESP2 pub/sub.
                args = ["CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST"]
                for prefix in self.prefixes:
                    args += ["PREFIX", prefix]
                await conn.send_command(*args)
                await conn.read_response()
                await conn.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
                await conn.read_response()
                self.tracking_started()
                warned = False
                log.info("read cache: Redis tracks %s for this process", ", ".join(self.prefixes))
                delay = 0.1
                pinger = asyncio.create_task(self._ping(conn))
                while True:
                    message = await conn.read_response(timeout=3 * PING_EVERY_S)
                    if isinstance(message, list) and message[:1] == [b"message"]:
                        self.invalidate(message[2])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if self.tracked or not warned:  # once per loss, not at every retry
                    log.warning("read cache: no tracking connection (%s: %s); reading Redis every time until there is",
                                type(exc).__name__, exc)
                    warned = True
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
            finally:
                if self.tracked:
                    self.tracking_stopped()
                if pinger is not None:
                    pinger.cancel()
                await conn.disconnect()

    @staticmethod
    async def _ping(conn: Any) -> None:
        # A subscribed RESP2 connection answers PING with ["pong", ""]: the reader above
        # hears something at least every PING_EVERY_S, or gives the connection up.
        try:
            while True:
                await asyncio.sleep(PING_EVERY_S)
                await conn.send_command("PING")
        except (RedisError, OSError):
            return  # the reader notices the silence and reconnects


async def get_read_cache(request: Request) -> ReadCache:
    return request.app.state.read_cache


ReadCacheDep = Annotated[ReadCache, Depends(get_read_cache)]
