"""`eddy export bids` on the real broker and Redis: bids placed through the API, scored
and joined with their outcomes by a real worker, exported and read back with pyarrow."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deploy.export import BIDS_SCHEMA, export_bids
from online_models.bids import BidFeaturizer
from schemas.envelope import partition_of
from tests.conftest import Stack

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
H = 3600.0
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
JOBS = {
    "j1": ("Python scraper", "Scrape listings with python and sql.", 400.0),
    "j2": ("Logo design", "A logo in figma for a bakery.", 150.0),
}
PROFILES = {"p1": {"skills": ["python", "sql"], "experience": 4.0}, "p2": {"skills": ["figma"], "experience": 1.0}}


def bid(bid_id: str, profile_id: str, job_id: str, amount: float, ts: float) -> dict:
    title, text, budget = JOBS[job_id]
    return {"type": "bid", "bid_id": bid_id, "profile_id": profile_id, "job_id": job_id, "job_title": title,
            "job_text": text, "job_budget": budget, "amount": amount, "bid_text": f"{profile_id} can do {title}.",
            "profile": PROFILES[profile_id], "ts": ts}


def outcome(bid_id: str, won: bool, ts: float) -> dict:
    return {"type": "bid_outcome", "bid_id": bid_id, "won": won, "ts": ts}


# In event-time order. b5 never gets an outcome; "ghost" was never placed.
EVENTS = [
    bid("b1", "p1", "j1", 350.0, T0),
    bid("b2", "p2", "j1", 300.0, T0 + 1 * H),
    outcome("b1", True, T0 + 2 * H),
    bid("b3", "p1", "j2", 120.0, T0 + 3 * H),
    outcome("b2", False, T0 + 4 * H),
    bid("b4", "p2", "j2", 90.0, T0 + 5 * H),
    bid("b5", "p1", "j1", 380.0, T0 + 6 * H),
    outcome("b3", False, T0 + 7 * H),
    outcome("b4", True, T0 + 8 * H),
    outcome("ghost", True, T0 + 9 * H),
]
JUNK = [b"{not json", b"[1, 2]", b'{"type": "bid", "profile_id": "p1"}']
ROWS = [("b1", "p1", "j1", True), ("b2", "p2", "j1", False), ("b3", "p1", "j2", False), ("b4", "p2", "j2", True)]
PARTITIONS = range(4)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def place_everything(stack: Stack) -> None:
    """POST the events one at a time, each applied before the next, so the one worker sees
    them in event-time order; then three invalid records straight into Kafka."""
    stack.start_worker()
    api = stack.start_api()
    applied = 0
    for event in EVENTS:
        assert httpx.post(api + "/api/events", json=event).status_code == 202
        if event["bid_id"] != "ghost":  # an outcome for an unknown bid is dead-lettered, not applied
            applied += 1
            stack.wait_applied("bids", applied)
    stack.produce("bids", JUNK, [b"junk"] * len(JUNK))
    assert len(stack.consume_all("dead-letters", expect=4)) == 4  # the ghost outcome and the junk


def expected_offsets() -> dict[str, dict[str, int]]:
    """One record per POST on its bid's partition, then the junk records."""
    ends = Counter(partition_of(e["bid_id"].encode(), PARTITIONS) for e in EVENTS)
    ends[partition_of(b"junk", PARTITIONS)] += len(JUNK)
    return {str(p): {"start": 0, "end": ends[p]} for p in PARTITIONS}


def record_offsets() -> dict[str, tuple[int, int]]:
    """bid or outcome -> (partition, offset) of the record holding it."""
    seen: Counter[int] = Counter()
    out = {}
    for event in EVENTS:
        p = partition_of(event["bid_id"].encode(), PARTITIONS)
        out[f"{event['type']}:{event['bid_id']}"] = (p, seen[p])
        seen[p] += 1
    return out


def replayed() -> dict[str, tuple[dict[str, float], float]]:
    """What one BidFeaturizer fed the events in event-time order gives each bid."""
    f = BidFeaturizer()
    profile_of = {e["bid_id"]: e["profile_id"] for e in EVENTS if e["type"] == "bid"}
    out = {}
    for event in sorted(EVENTS, key=lambda e: e["ts"]):
        if event["type"] == "bid":
            out[event["bid_id"]] = (f.learn_bid(event, event["ts"]), f.baseline(event["profile_id"], event["ts"]))
        elif event["bid_id"] in profile_of:
            f.learn_outcome(profile_of[event["bid_id"]], event["won"], event["ts"])
    return out


def stored(stack: Stack, bid_id: str) -> dict:
    raw = stack.redis.hgetall(stack.keys.bid(bid_id))
    return {"features": orjson.loads(raw[b"features"]), "score": float(raw[b"score"]),
            "baseline": float(raw[b"baseline"]), "model_version": raw[b"model_version"].decode()}


def common_manifest(features_from: dict[str, int]) -> dict:
    return {
        "rows": 4,
        "placed_at": {"min": iso(T0), "max": iso(T0 + 5 * H)},
        "outcome_at": {"min": iso(T0 + 2 * H), "max": iso(T0 + 8 * H)},
        "source_offsets": expected_offsets(),
        "bids_without_outcome": 1,
        "outcomes_without_bid": 1,
        "invalid_records": 3,
        "duplicates": 0,
        "features_from": features_from,
    }


def check_files(out: Path, manifest: dict) -> list[dict]:
    """The three files are there, the hash is the file's; returns the rows read back."""
    stem = "bids-20250102T030405Z"
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.manifest.json", f"{stem}.parquet", f"{stem}.schema.json"]
    assert orjson.loads((out / f"{stem}.manifest.json").read_bytes()) == manifest
    assert manifest["sha256"] == hashlib.sha256((out / f"{stem}.parquet").read_bytes()).hexdigest()
    schema_doc = orjson.loads((out / f"{stem}.schema.json").read_bytes())
    assert [(f["name"], f["type"]) for f in schema_doc["fields"]] == [
        ("bid_id", "string"), ("profile_id", "string"), ("job_id", "string"),
        ("placed_at", "timestamp[us, tz=UTC]"), ("outcome_at", "timestamp[us, tz=UTC]"), ("won", "bool"),
        ("delay_s", "double"), ("amount", "double"), ("job_budget", "double"), ("score", "double"),
        ("baseline", "double"), ("model_version", "string"), ("features", "map<string, double>"),
        ("features_from", "string"), ("bid_partition", "int64"), ("bid_offset", "int64"),
        ("outcome_partition", "int64"), ("outcome_offset", "int64"),
    ]
    assert all(f["description"] for f in schema_doc["fields"])
    table = pq.read_table(out / f"{stem}.parquet")
    assert table.schema.equals(BIDS_SCHEMA)
    assert table.schema.field("placed_at").type == pa.timestamp("us", tz="UTC")
    return table.to_pylist()


def check_rows(rows: list[dict]) -> None:
    """Everything but features, score, baseline and model version."""
    by_id = {e["bid_id"]: e for e in EVENTS if e["type"] == "bid"}
    outcome_ts = {e["bid_id"]: e["ts"] for e in EVENTS if e["type"] == "bid_outcome"}
    where = record_offsets()
    assert [(r["bid_id"], r["profile_id"], r["job_id"], r["won"]) for r in rows] == ROWS
    for r in rows:
        b = by_id[r["bid_id"]]
        assert r["placed_at"] == datetime.fromtimestamp(b["ts"], UTC)
        assert r["outcome_at"] == datetime.fromtimestamp(outcome_ts[r["bid_id"]], UTC)
        assert r["delay_s"] == outcome_ts[r["bid_id"]] - b["ts"]
        assert (r["amount"], r["job_budget"]) == (b["amount"], b["job_budget"])
        assert (r["bid_partition"], r["bid_offset"]) == where[f"bid:{r['bid_id']}"]
        assert (r["outcome_partition"], r["outcome_offset"]) == where[f"bid_outcome:{r['bid_id']}"]


def test_export_joins_bids_with_outcomes_and_the_workers_features(stack: Stack, tmp_path: Path) -> None:
    place_everything(stack)
    manifest = export_bids(stack.settings, tmp_path / "out", redis_client=stack.redis, now=NOW)

    assert manifest == {
        "file": "bids-20250102T030405Z.parquet",
        "schema": "bids-20250102T030405Z.schema.json",
        "created_at": "2025-01-02T03:04:05Z",
        "topic": stack.topic("bids"),
        **common_manifest({"worker": 4, "replay": 0}),
        "sha256": manifest["sha256"],
    }
    rows = check_files(tmp_path / "out", manifest)
    check_rows(rows)
    for r in rows:
        worker = stored(stack, r["bid_id"])
        assert r["features_from"] == "worker"
        assert dict(r["features"]) == worker["features"]
        assert [k for k, _ in r["features"]] == sorted(worker["features"])
        assert (r["score"], r["baseline"], r["model_version"]) == (
            worker["score"], worker["baseline"], worker["model_version"]
        )
    # Scored before any outcome (b1, b2), after b1's (b3), after b1's and b2's (b4): the
    # version ends with how many outcomes the model had learned from.
    assert [r["model_version"].rsplit(".", 1)[1] for r in rows] == ["0", "0", "1", "2"]

    # The same export a second later is another version with the same data, byte for byte.
    with pytest.raises(FileExistsError):
        export_bids(stack.settings, tmp_path / "out", redis_client=stack.redis, now=NOW)
    cli = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "export", "bids", "--out", str(tmp_path / "cli")],
        env={**stack.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert cli.returncode == 0, cli.stderr
    (path,) = (tmp_path / "cli").glob("*.manifest.json")
    again = orjson.loads(path.read_bytes())
    assert {k: v for k, v in again.items() if k not in {"file", "schema", "created_at"}} == {
        k: v for k, v in manifest.items() if k not in {"file", "schema", "created_at"}
    }
    assert "4" in cli.stdout and manifest["sha256"] in cli.stdout


def test_export_replays_the_features_when_the_workers_records_are_gone(stack: Stack, tmp_path: Path) -> None:
    place_everything(stack)
    worker = {bid_id: stored(stack, bid_id) for bid_id, *_ in ROWS}
    stack.redis.delete(*(stack.keys.bid(e["bid_id"]) for e in EVENTS))

    manifest = export_bids(stack.settings, tmp_path / "out", redis_client=stack.redis, now=NOW)

    assert {k: v for k, v in manifest.items() if k not in {"file", "schema", "created_at", "topic", "sha256"}} == (
        common_manifest({"worker": 0, "replay": 4})
    )
    rows = check_files(tmp_path / "out", manifest)
    check_rows(rows)
    expected = replayed()
    for r in rows:
        features, baseline = expected[r["bid_id"]]
        assert r["features_from"] == "replay"
        assert dict(r["features"]) == features
        assert r["baseline"] == baseline
        assert (r["score"], r["model_version"]) == (None, None)
        # One worker saw the events in event-time order: the replay is what it scored with.
        assert (features, baseline) == (worker[r["bid_id"]]["features"], worker[r["bid_id"]]["baseline"])
    # The replay learned b1's win before b3 was placed.
    assert dict(rows[2]["features"])["profile_win_rate"] == (1 + 1) / (1 + 3)
