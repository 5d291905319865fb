"""Versioned model snapshots on disk, each tied to the Kafka offsets it has learned up to.

A snapshot file is one JSON header line (model, version, offsets, metrics, config hash,
library versions, and the length and SHA-256 of the body) followed by the pickled body.
It is written to a temporary file in the same folder, flushed and fsynced, then renamed
over its final name, and the folder is fsynced: a write killed at any point leaves either
the previous snapshots or the new one complete, never a torn file that loads. Loading
checks the length and the hash and falls back to the previous snapshot when they do not
match (a disk that lied), so the latest good snapshot always loads.

Layout: ``{root}/{model}/{seq:010d}-{version}.snap``; the newest ``keep`` are kept.
``root`` is ``EDDY_SNAPSHOT_DIR`` and the consumer group; several workers (or hosts sharing a volume) write into
one folder: each snapshot names the partitions it covers, and a worker resumes from the
newest one that covers most of its own partitions (see :func:`pick`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{10})-([A-Za-z0-9_.-]+)\.snap$")


def library_versions() -> dict[str, str]:
    """The versions a snapshot was written with (a pickle may not load across them)."""
    out = {"python": platform.python_version()}
    for dist in ("eddy", "river", "faust-streaming"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def config_hash(params: Mapping[str, Any]) -> str:
    """A short stable hash of a model's parameters."""
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass
class SnapshotMeta:
    """What a snapshot says about itself (the header line of its file)."""

    model: str
    version: str
    seq: int
    created_at: float
    offsets: dict[str, dict[str, int]]  # topic -> partition -> first offset not learned
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    libraries: dict[str, str] = field(default_factory=dict)
    writer: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    sha256: str = ""
    path: str = ""

    def partitions(self, topic: str) -> set[int]:
        return {int(p) for p in self.offsets.get(topic, {})}

    def public(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("path")
        return doc


class SnapshotStore:
    """Snapshots of every model in one folder."""

    def __init__(self, root: str | Path, keep: int = 5) -> None:
        self.root = Path(root)
        self.keep = keep

    def _folder(self, model: str) -> Path:
        return self.root / model

    def save(self, meta: SnapshotMeta, body: bytes) -> SnapshotMeta:
        """Write one snapshot atomically and prune old ones; returns its header."""
        folder = self._folder(meta.model)
        folder.mkdir(parents=True, exist_ok=True)
        meta.seq = max((s for s, _ in self._names(meta.model)), default=0) + 1
        meta.size = len(body)
        meta.sha256 = hashlib.sha256(body).hexdigest()
        meta.created_at = meta.created_at or time.time()
        meta.libraries = meta.libraries or library_versions()
        final = folder / f"{meta.seq:010d}-{meta.version}.snap"
        tmp = folder / f".{final.name}.{os.getpid()}.tmp"
        header = orjson.dumps({k: v for k, v in asdict(meta).items() if k != "path"})
        with open(tmp, "wb") as fh:
            fh.write(header + b"\n")
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(folder)
        meta.path = str(final)
        self._prune(meta.model)
        return meta

    def _names(self, model: str) -> list[tuple[int, Path]]:
        folder = self._folder(model)
        if not folder.is_dir():
            return []
        out = []
        for path in folder.iterdir():
            m = _NAME.match(path.name)
            if m:
                out.append((int(m.group(1)), path))
        return sorted(out, reverse=True)

    def _prune(self, model: str) -> None:
        for _, path in self._names(model)[self.keep :]:
            path.unlink(missing_ok=True)
        for path in self._folder(model).glob(".*.tmp"):  # left by writers killed mid-write
            if time.time() - path.stat().st_mtime > 60:
                path.unlink(missing_ok=True)

    def headers(self, model: str) -> list[SnapshotMeta]:
        """Every readable header of ``model``, newest first (bodies are not checked)."""
        out = []
        for _, path in self._names(model):
            meta = _read_header(path)
            if meta is not None:
                out.append(meta)
        return out

    def load(self, meta: SnapshotMeta) -> bytes | None:
        """The body of a snapshot, or None when it does not match its header."""
        try:
            with open(meta.path, "rb") as fh:
                fh.readline()
                body = fh.read()
        except OSError as exc:
            log.error("snapshot %s unreadable: %s", meta.path, exc)
            return None
        if len(body) != meta.size or hashlib.sha256(body).hexdigest() != meta.sha256:
            log.error("snapshot %s is damaged (size or hash differ); using an older one", meta.path)
            return None
        return body

    def latest(
        self, model: str, *, topic: str | None = None, partitions: Iterable[int] = (), version: str | None = None
    ) -> tuple[SnapshotMeta, bytes] | None:
        """The newest good snapshot of ``model`` (of ``version`` if given) that covers most
        of ``partitions`` of ``topic``."""
        candidates = [m for m in self.headers(model) if version is None or m.version == version]
        for meta in pick(candidates, topic, set(partitions)):
            body = self.load(meta)
            if body is not None:
                return meta, body
        return None


async def write(store: SnapshotStore, meta: SnapshotMeta, body: bytes) -> SnapshotMeta:
    """Save off the event loop (a large model takes a while to write), timed and counted."""
    import asyncio

    from streams import metrics

    with metrics.SNAPSHOT_SECONDS.labels(meta.model).time():
        saved = await asyncio.to_thread(store.save, meta, body)
    metrics.SNAPSHOTS.labels(meta.model).inc()
    return saved


def pick(candidates: list[SnapshotMeta], topic: str | None, partitions: set[int]) -> list[SnapshotMeta]:
    """Candidates in the order to try: most partitions in common first, then newest.

    >>> a = SnapshotMeta("m", "v1", 1, 1.0, {"t": {"0": 5, "1": 5}})
    >>> b = SnapshotMeta("m", "v1", 2, 2.0, {"t": {"2": 9}})
    >>> [m.seq for m in pick([b, a], "t", {0, 1})]
    [1, 2]
    """
    if topic is None:
        return sorted(candidates, key=lambda m: -m.seq)
    ours = [m for m in candidates if topic in m.offsets]  # another topic: another deployment's
    return sorted(ours, key=lambda m: (-len(m.partitions(topic) & partitions), -m.seq))


def _read_header(path: Path) -> SnapshotMeta | None:
    try:
        with open(path, "rb") as fh:
            line = fh.readline(1 << 20)
        doc = orjson.loads(line)
        doc["path"] = str(path)
        return SnapshotMeta(**doc)
    except (OSError, orjson.JSONDecodeError, TypeError) as exc:
        log.error("snapshot %s has no readable header: %s", path, exc)
        return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
