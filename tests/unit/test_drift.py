"""Model health: false alarms on stationary streams, detection delays of injected shifts,
the CTR floor's hysteresis, the reaction policy, and River-style checks.

Calibration (defaults, ADWIN delta 0.002): no finding in 20 seeds x 20,000 Bernoulli(0.3)
errors nor in 20 seeds x 20,000 gaussian feature vectors; an error rate going from 0.2 to
0.5 after the 5,000th example is found once, within 250 examples, on every seed. With
``RARE_HITS``, a recommender's hit rate going from 5% to 2% is found within 2,600 examples on
18 of 20 seeds, and a stationary 5% gives no finding in 5 seeds x 30,000.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
import subprocess
import sys

import orjson
import pytest

from online_models.drift import RARE_HITS, REACTIONS, Finding, ModelHealth, reaction_for

SEEDS = range(20)
SHIFT_AT = 5_000  # the injected shift starts at this example's successor


def errors(seed: int, n: int, p: float = 0.3, p_after: float | None = None) -> list[float]:
    """0/1 errors with rate p, then p_after after the SHIFT_AT-th."""
    rng = random.Random(seed)
    after = p if p_after is None else p_after
    return [float(rng.random() < (p if i <= SHIFT_AT else after)) for i in range(1, n + 1)]


def feature_rows(seed: int, n: int, price_shift: float = 0.0) -> list[dict[str, float]]:
    """Gaussian and 0/1 features; after SHIFT_AT, price's mean moves by price_shift sds."""
    rng = random.Random(seed)
    return [
        {
            "price": rng.gauss(50.0 + (price_shift * 10.0 if i > SHIFT_AT else 0.0), 10.0),
            "score": rng.gauss(0.0, 1.0),
            "is_new": float(rng.random() < 0.1),
        }
        for i in range(1, n + 1)
    ]


def learn_errors(stream: list[float], health: ModelHealth | None = None) -> list[Finding]:
    health = health or ModelHealth("m")
    return [f for x in stream if (f := health.observe_error(x, ts=1.0)) is not None]


def learn_features(rows: list[dict[str, float]], health: ModelHealth | None = None) -> list[Finding]:
    health = health or ModelHealth("m")
    return [f for row in rows for f in health.observe_features(row, ts=1.0)]


# --- calibration ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_stationary_errors_give_no_finding_in_20000(seed: int) -> None:
    assert learn_errors(errors(seed, 20_000)) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_stationary_features_give_no_finding_in_20000(seed: int) -> None:
    assert learn_features(feature_rows(seed, 20_000)) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_error_rate_rising_from_20_to_50_percent_is_found_once_within_250(seed: int) -> None:
    found = learn_errors(errors(seed, SHIFT_AT + 5_000, p=0.2, p_after=0.5))
    assert [(f.kind, f.worse, f.severity) for f in found] == [("error_drift", True, "warning")]
    assert SHIFT_AT < found[0].index <= SHIFT_AT + 250
    assert abs(found[0].before - 0.2) < 0.03 and 0.35 < found[0].after < 0.7  # after: the newest stretch


def test_error_detection_on_seed_0_is_exactly_this() -> None:
    [finding] = learn_errors(errors(0, SHIFT_AT + 5_000, p=0.2, p_after=0.5))
    assert finding == Finding(
        model="m", kind="error_drift", before=finding.before, after=finding.after, index=5172, ts=1.0,
        detail="online error of m rose from 0.20 to 0.45 at observation 5172", severity="warning", worse=True,
    )


def test_an_improvement_is_found_as_info_and_only_alerts() -> None:
    [finding] = learn_errors(errors(0, SHIFT_AT + 5_000, p=0.5, p_after=0.2))
    assert (finding.kind, finding.worse, finding.severity) == ("error_drift", False, "info")
    assert finding.detail == "online error of m fell from 0.49 to 0.17 at observation 5114"
    assert {reaction_for(finding, r) for r in REACTIONS} == {"alert"}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_feature_mean_moving_by_one_sd_is_found_once_within_250(seed: int) -> None:
    found = learn_features(feature_rows(seed, SHIFT_AT + 5_000, price_shift=1.0))
    assert [(f.kind, f.feature, f.worse) for f in found] == [("feature_drift", "price", True)]
    assert SHIFT_AT < found[0].index <= SHIFT_AT + 250


def test_feature_detection_on_seed_0_is_exactly_this() -> None:
    [finding] = learn_features(feature_rows(0, SHIFT_AT + 5_000, price_shift=1.0))
    assert (finding.index, finding.detail) == (
        5104, "input feature 'price' of m shifted: its mean rose from 49.91 to 61.87 at observation 5104"
    )


@pytest.mark.parametrize("seed", range(5))
def test_rare_hits_stationary_give_no_finding_in_30000(seed: int) -> None:
    assert learn_errors(errors(seed, 30_000, p=0.95), ModelHealth("m", **RARE_HITS)) == []


def test_rare_hits_halving_is_found_within_2600_on_18_of_20_seeds() -> None:
    # A hit rate going from 5% to 2%: a small effect (0.16 sd), so two seeds of 20 miss it.
    found = [learn_errors(errors(seed, SHIFT_AT + 5_000, p=0.95, p_after=0.98), ModelHealth("m", **RARE_HITS))
             for seed in SEEDS]
    delays = [f[0].index - SHIFT_AT for f in found if f]
    assert all(len(f) <= 1 for f in found) and all(0 < d <= 2_600 for d in delays)
    assert len(delays) == 18 and [f[0].index for f in found[:4]] == [6440, 6272, 6576, 6768]


def test_log_loss_errors_beyond_1_are_watched_too() -> None:
    rng = random.Random(5)
    stream = [-math.log(rng.uniform(0.6, 0.95)) for _ in range(SHIFT_AT)]
    stream += [-math.log(rng.uniform(0.01, 0.3)) for _ in range(2_000)]
    [finding] = learn_errors(stream)
    assert finding.worse and finding.after > 1.0 > finding.before
    assert SHIFT_AT < finding.index <= SHIFT_AT + 100


# --- features: which are watched -------------------------------------------------------------


def test_only_the_first_max_features_numeric_features_are_watched() -> None:
    health = ModelHealth("m", max_features=2)
    health.observe_features({"c": 1.0, "b": 2, "a": "text", "d": True}, ts=0.0)
    health.observe_features({"e": 1.0, "a": 3.0}, ts=0.0)
    assert sorted(health.summary()["features"]["features"]) == ["b", "c"]


def test_an_allow_list_names_the_features_watched() -> None:
    health = ModelHealth("m", features=["price", "missing"])
    health.observe_features({"price": 1.0, "score": 2.0}, ts=0.0)
    assert sorted(health.summary()["features"]["features"]) == ["price"]


def test_non_finite_values_are_not_learnt() -> None:
    health = ModelHealth("m")
    assert health.observe_error(math.nan, ts=0.0) is None
    assert health.observe_error(math.inf, ts=0.0) is None
    assert health.observe_features({"a": math.nan, "b": 1.0}, ts=0.0) == []
    summary = health.summary()
    assert summary["errors"] == {"observations": 0}
    assert sorted(summary["features"]["features"]) == ["b"]


# --- CTR floor -------------------------------------------------------------------------------


def ctr_findings(health: ModelHealth, batches: list[tuple[int, int]]) -> list[tuple[str, int, float]]:
    return [(f.kind, f.index, f.after) for n, c in batches if (f := health.observe_ctr(n, c, ts=2.0))]


def test_ctr_falling_below_the_floor_gives_one_finding_then_one_recovery() -> None:
    health = ModelHealth("hybrid", ctr_floor=0.05, ctr_window=1_000, ctr_min_impressions=500)
    batches = [(100, 6)] * 20 + [(100, 3)] * 30 + [(100, 7)] * 20
    # Low once the CTR of the last 1,000 impressions is under 5%; back once 6% (5% + 20%) or more.
    assert ctr_findings(health, batches) == [("ctr_low", 2_400, 0.048), ("ctr_recovered", 5_800, 0.062)]


def test_ctr_wobbling_around_the_floor_does_not_repeat() -> None:
    health = ModelHealth("hybrid", ctr_floor=0.05, ctr_window=500, ctr_min_impressions=500)
    # 4.6% .. 5.8%: below the floor at times, never 20% above it.
    batches = [(50, 2), (50, 3), (50, 3), (50, 2), (50, 3), (50, 2)] * 200
    found = ctr_findings(health, batches)
    assert [kind for kind, _, _ in found] == ["ctr_low"]


def test_ctr_low_finding_reads_well_and_reacts() -> None:
    health = ModelHealth("hybrid", ctr_floor=0.05, ctr_window=1_000, ctr_min_impressions=1_000)
    [finding] = [f for _ in range(10) if (f := health.observe_ctr(100, 1, ts=3.0))]
    assert finding == Finding(
        model="hybrid", kind="ctr_low", before=0.05, after=0.01, index=1_000, ts=3.0,
        detail="CTR of hybrid's recommendations fell to 1.00% over the last 1000 impressions, below the floor of 5.00%",
        severity="critical", worse=True,
    )
    assert reaction_for(finding, "reset") == "reset"


def test_ctr_is_not_judged_before_min_impressions_nor_when_off() -> None:
    health = ModelHealth("m", ctr_floor=0.05, ctr_window=1_000, ctr_min_impressions=800)
    assert ctr_findings(health, [(100, 0)] * 7) == []
    assert health.ctr is None
    assert ctr_findings(health, [(100, 0)]) == [("ctr_low", 800, 0.0)]
    off = ModelHealth("m")
    assert ctr_findings(off, [(100, 0)] * 100) == []
    assert off.summary()["ctr"] == {"impressions": 0, "window_ctr": None, "low": False}


def test_ctr_counts_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        ModelHealth("m", ctr_floor=0.1).observe_ctr(-1, 0, ts=0.0)


# --- reaction policy -------------------------------------------------------------------------


def finding(kind: str, worse: bool) -> Finding:
    return Finding("m", kind, 0.0, 1.0, 1, 0.0, "", "warning" if worse else "info", worse)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "worse", "expected"),
    [
        ("error_drift", True, {"alert": "alert", "reset": "reset", "challenger": "challenger"}),
        ("error_drift", False, {"alert": "alert", "reset": "alert", "challenger": "alert"}),
        ("feature_drift", True, {"alert": "alert", "reset": "alert", "challenger": "challenger"}),
        ("ctr_low", True, {"alert": "alert", "reset": "reset", "challenger": "challenger"}),
        ("ctr_recovered", False, {"alert": "alert", "reset": "alert", "challenger": "alert"}),
    ],
)
def test_reaction_for(kind: str, worse: bool, expected: dict[str, str]) -> None:
    assert {r: reaction_for(finding(kind, worse), r) for r in REACTIONS} == expected


def test_unknown_reaction_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown drift reaction 'retrain'"):
        reaction_for(finding("error_drift", True), "retrain")


# --- River-style checks --------------------------------------------------------------------


def test_pickle_round_trip_continues_identically() -> None:
    stream = errors(1, SHIFT_AT + 2_000, p=0.2, p_after=0.5)
    rows = feature_rows(1, SHIFT_AT + 2_000, price_shift=1.0)
    batches = [(100, 6)] * 20 + [(100, 2)] * 20 + [(100, 7)] * 20
    health = ModelHealth("m", ctr_floor=0.05, ctr_window=1_000)
    cut = SHIFT_AT + 20  # mid-shift: the detectors may be on alert
    learn_errors(stream[:cut], health)
    learn_features(rows[:cut], health)
    ctr_findings(health, batches[:30])
    clone = pickle.loads(pickle.dumps(health))

    def rest(h: ModelHealth) -> tuple:
        return learn_errors(stream[cut:], h), learn_features(rows[cut:], h), ctr_findings(h, batches[30:])

    expected = rest(health)
    assert all(expected) and rest(clone) == expected
    assert clone.summary() == health.summary()


def test_same_stream_gives_the_same_findings() -> None:
    stream = errors(2, SHIFT_AT + 2_000, p=0.2, p_after=0.5)
    first = learn_errors(stream)
    assert first and learn_errors(stream) == first


def test_learning_does_not_mutate_the_features() -> None:
    rows = feature_rows(0, 300)
    before = copy.deepcopy(rows)
    learn_features(rows)
    assert rows == before


def test_summary_is_json_and_does_not_mutate() -> None:
    health = ModelHealth("m", ctr_floor=0.05, ctr_window=1_000)
    found = learn_errors(errors(0, SHIFT_AT + 500, p=0.2, p_after=0.5), health)
    learn_features(feature_rows(0, 100), health)
    ctr_findings(health, [(100, 1)] * 10)
    before = pickle.dumps(health)
    summary = health.summary()
    assert pickle.dumps(health) == before
    assert orjson.loads(orjson.dumps(summary)) == summary
    assert summary["findings"] == len(found) + 1 == 2
    assert summary["errors"]["observations"] == SHIFT_AT + 500
    assert summary["ctr"] == {"impressions": 1_000, "window_ctr": 0.01, "low": True}
    assert sorted(summary["features"]["features"]) == ["is_new", "price", "score"]


def test_clone_is_a_fresh_monitor_with_the_same_parameters() -> None:
    health = ModelHealth("m", features=["a"], ctr_floor=0.1)
    learn_errors(errors(0, 100), health)
    fresh = health.clone()
    assert fresh.summary()["errors"] == {"observations": 0}
    assert (fresh.features, fresh.ctr_floor) == (("a",), 0.1)


def test_model_health_imports_no_io() -> None:
    code = (
        "import sys, online_models.drift; "
        "print(sorted(m for m in ('faust', 'redis', 'kafka', 'aiokafka', 'fastapi', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
