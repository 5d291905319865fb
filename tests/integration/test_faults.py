"""The short versions of the fault-injection trials (tests/faults), so every CI run kills,
freezes and poisons a real stack at least once: each trial starts its own broker, Redis,
worker and API processes. The full versions run with ``make faults``."""

from __future__ import annotations

import pytest

from tests.faults import broker_outage, churn, ledger, poison, redis_outage, sustained
from tests.faults.harness import TrialResult

pytestmark = pytest.mark.integration


def assert_ledger_exact(result: TrialResult) -> None:
    """Nothing lost, nothing applied twice, every counter equal to the ground truth."""
    f = result.figures
    assert (f["missing"], f["missing_ids"], f["duplicate_effects"]) == (0, 0, 0), result.line()
    assert f["applied"] == f["events"] > 0, result.line()
    assert f["aggregates_equal"] is True, result.line()
    assert f["worker_exits"] == 0, result.line()


def test_ledger_under_kill_9() -> None:
    result = ledger.run("short")
    assert_ledger_exact(result)
    assert result.figures["kills"] == result.figures["kills_under_load"] == 2
    assert result.ok, result.line()


def test_rebalance_churn() -> None:
    result = churn.run("short")
    assert_ledger_exact(result)
    assert result.figures["scale_steps"] == 2 and result.figures["lag_to_zero_max_s"] is not None
    assert result.ok, result.line()


def test_redis_outage() -> None:
    result = redis_outage.run("short")
    assert_ledger_exact(result)
    f = result.figures
    assert f["read_5xx"] == 0 and f["reads_during_outage"] > 0 and f["stale_reads"] > 0, result.line()
    assert result.ok, result.line()


def test_broker_outage() -> None:
    result = broker_outage.run("short")
    assert_ledger_exact(result)
    f = result.figures
    assert f["posts_503"] > 0 and (f["posts_503_without_retry_after"], f["posts_other_errors"]) == (0, 0)
    assert result.ok, result.line()


def test_poison_and_abuse() -> None:
    result = poison.run("short")
    f = result.figures
    assert f["abuse_codes"] == {"deep_arrays": 422, "deep_objects": 422, "deep_event": 422, "deep_field_300": 422,
                                "deep_field_1000": 422, "ts_year_3000": 422, "ts_before_1970": 422,
                                "over_limit": 413, "in_limit_huge_string": 422, "over_limit_streamed": 413,
                                "unknown_types": 422}
    assert (f["post_5xx"], f["openapi_failures"], f["decoder_crashes"]) == (0, 0, 0), result.line()
    assert f["dead_letters"] == f["bad_records"] and f["valid_applied"] == f["valid_sent"], result.line()
    assert f["metric_series_from_input"] == 0
    assert f["scope_cases"] == 200 and (f["scope_5xx"], f["scope_leaks"]) == (0, 0), result.line()
    assert result.ok, result.line()


def test_sustained_load() -> None:
    result = sustained.run("short")
    assert result.figures["api_5xx"] == result.figures["worker_exits"] == 0
    assert result.ok, result.line()
