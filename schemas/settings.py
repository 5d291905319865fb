"""One typed settings object for every part of Eddy.

Every value is read from the environment with the ``EDDY_`` prefix (``EDDY_KAFKA_BOOTSTRAP``,
``EDDY_REDIS_URL``, ...) or from a ``.env`` file; the defaults below are the only defaults.
Nothing else in the code base hard-codes a broker or Redis address.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Eddy's configuration; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="EDDY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # EDDY_ADMIN_API_KEY="" means no key, never an empty key
        hide_input_in_errors=True,  # a bad setting's error must not print a secret back
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated host:port."
    )
    topic_prefix: str = Field("", description="Prefix for every topic name (multi-tenant clusters).")
    partitions: int = Field(8, ge=1, le=1024, description="Partitions of every Eddy topic.")
    replication_factor: int = Field(1, ge=1, description="Replication factor used when Eddy creates topics.")
    consumer_group: str = Field("eddy-worker", description="Faust app id = Kafka consumer group of the workers.")
    session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer session timeout; a join waits about half of it on Tansu."
    )
    fetch_max_wait_ms: int = Field(
        25, ge=1, le=10_000, description="Longest a worker's fetch waits for data (lower = fresher, more fetches)."
    )
    rebalance_timeout_s: float = Field(10.0, gt=0, description="Consumer rebalance timeout.")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer heartbeat interval.")

    # --- Redis -------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL of the read model.")
    redis_prefix: str = Field("eddy:", description="Prefix of every Redis key Eddy writes.")
    dedupe_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long an event_id is remembered to drop repeats."
    )

    # --- Worker ------------------------------------------------------------------------
    batch_max: int = Field(500, ge=1, le=5_000, description="Most records a worker agent applies in one batch.")
    batch_max_bytes: int = Field(
        1_048_576,
        ge=1_024,
        description="Most bytes of records a worker agent applies in one batch (an envelope holds many events, "
        "so a record count alone let one batch hold 32,000 events and block Redis for 0.6 s).",
    )
    apply_max_events: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Most events one atomic Redis call of a batch applies: Redis runs one call at a time and "
        "every read waits behind it (a whole batch in one call held it 9 ms at 1,700 interactions/s).",
    )
    batch_linger_s: float = Field(
        0.002, ge=0, le=1, description="Pause before flushing a batch the input queue left short."
    )
    max_event_bytes: int = Field(
        65_536, ge=256, description="Largest accepted encoded event; larger ones are dead-lettered."
    )
    recs_k: int = Field(50, ge=1, le=500, description="Items kept in each user's ready-to-serve list.")
    diversity_max_share: float = Field(
        0.5, gt=0, le=1, description="Most a list's items that may share a category or a source (1 = off)."
    )
    refresh_interval_s: float = Field(
        2.0, gt=0, description="How often lists of active users are refreshed after catalogue changes."
    )
    refresh_active_users: int = Field(
        5_000, ge=0, description="How many recently active users get refreshed lists when items arrive."
    )
    live_eval_share: float = Field(
        0.02, gt=0, le=1,
        description="Share of positive interactions scored test-then-train for the live quality figures (a stable sample).",
    )
    popular_k: int = Field(100, ge=1, le=10_000, description="Length of the cold-start list.")
    popularity_half_life_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="Half-life of the recency-decayed popularity."
    )
    worker_web_port: int = Field(0, ge=0, le=65535, description="Faust's own web port (0 = off).")
    worker_metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of the worker's Prometheus /metrics (0 = off)."
    )
    worker_metrics_host: str = Field("127.0.0.1", description="Address the worker's metrics bind to.")
    log_level: str = Field("info", description="Log level of the worker and the API.")

    # --- Model lifecycle: snapshots, challengers, promotion -----------------------------
    snapshot_dir: str = Field(
        ".eddy/snapshots", description="Folder of the model snapshots (share it between workers on several hosts)."
    )
    snapshot_interval_s: float = Field(
        60.0, ge=0, description="Seconds between two snapshots of each model (0 = only on shutdown)."
    )
    snapshot_keep: int = Field(5, ge=1, description="Snapshots kept per model.")
    item_facts_retention_s: float = Field(
        600.0, gt=0, description="Seconds of item facts (what each recommender worker's users taught, for the "
        "other workers) kept in Redis: a worker restored from an older snapshot misses the others' facts of the gap.",
    )
    recs_challengers: Annotated[list[dict[str, float]], NoDecode] = Field(
        default_factory=list,
        description="Shadow challengers of the recommender: a JSON list of parameter overrides, "
        'e.g. [{"half_life_s": 86400}].',
    )
    auto_promote: bool = Field(True, description="Let the policy promote challengers and roll back champions.")
    promotion_margin: float = Field(
        0.05, ge=0, description="Relative hit-rate gain a challenger needs over the champion to be promoted."
    )
    promotion_window: int = Field(
        500, ge=10, description="Live test-then-train targets each promotion or rollback figure is taken over."
    )
    rollback_drop: float = Field(
        0.05, gt=0, lt=1, description="Relative fall of a promoted champion's hit rate that rolls it back."
    )

    # --- Scraping: strategy selection and anomaly detection (0 switches a rule off) ------
    scrape_automation: bool = Field(True, description="Switch scraping strategies automatically.")
    scrape_automation_off_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Domains never switched automatically, comma separated."
    )
    scrape_strategies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Strategies every domain may switch to, beyond those seen in attempts (comma separated).",
    )
    scrape_window: int = Field(50, ge=5, le=10_000, description="Recent attempts behind a strategy's rolling rate.")
    scrape_min_attempts: int = Field(10, ge=1, description="Attempts in the window before the rate rule fires.")
    scrape_rate_threshold: float = Field(
        0.10, ge=0, le=1, description="Switch away when the rolling success rate falls below this."
    )
    scrape_consecutive_failures: int = Field(5, ge=0, description="Switch away after this many failures in a row.")
    scrape_error_burst: int = Field(
        6, ge=0, description="Switch away when this many of the last attempts failed with one error type."
    )
    scrape_error_burst_window: int = Field(10, ge=1, description="Attempts the error-burst rule looks at.")
    scrape_reevaluate_every: int = Field(
        50, ge=0, description="Attempts on a domain between two re-evaluations of its strategy."
    )
    scrape_switch_confidence: float = Field(
        0.95, gt=0.5, lt=1, description="How sure a re-evaluation must be that another strategy is better."
    )
    scrape_min_gain: float = Field(0.05, ge=0, le=1, description="Smallest success-rate gain worth a switch.")
    scrape_recovery_successes: int = Field(
        3, ge=1, description="Successes in a row that bring a strategy that broke back into play."
    )
    scrape_discount: float = Field(
        0.99, gt=0, le=1, description="Weight past attempts keep at each new one (recent evidence counts more)."
    )
    scrape_explore_rate: float = Field(
        0.05, ge=0, le=0.5, description="Share of attempts scrapers spend trying other strategies."
    )
    scrape_drift_detection: bool = Field(
        True, description="Watch the shape of scraped items and emit rescrape requests on sudden shifts."
    )

    # --- Bids ---------------------------------------------------------------------------
    bid_expiry_s: float = Field(
        30 * 86400.0, gt=0, description="A bid whose outcome has not come this long after it was placed expires."
    )
    bid_retention_s: int = Field(
        90 * 86400, ge=60, description="How long a bid's record stays readable after its outcome or expiry."
    )
    bid_metrics_window: int = Field(1000, ge=10, description="Outcomes in the rolling window of the bid metrics.")

    # --- Model health: drift, CTR floor, alerts ----------------------------------------
    drift_reaction: Literal["alert", "reset", "challenger"] = Field(
        "alert",
        description="What a model's drift for the worse (error, inputs, CTR) triggers besides the alert: "
        "alert (nothing more), reset (the model) or challenger (retrained from replay).",
    )
    drift_delta: float = Field(
        0.002, gt=0, lt=1, description="ADWIN's significance on models' online error and inputs (smaller = fewer, later alarms)."
    )
    retrain_window_s: float = Field(
        7 * 86400.0, gt=0,
        description="How far back (record time) the log is re-read when drift retrains a challenger.",
    )
    ctr_floor: float = Field(
        0.0, ge=0, lt=1, description="Alert (and react) when the CTR of served recommendations falls below this (0 = off)."
    )
    ctr_window: int = Field(2000, ge=100, description="Latest impressions the CTR of served recommendations is measured over.")
    alert_webhook_url: SecretStr | None = Field(
        None, description="Slack-compatible webhook every alert is also posted to (unset = none; only its host is logged)."
    )

    # --- API ---------------------------------------------------------------------------
    max_clock_skew_s: float = Field(
        300.0, gt=0, description="Most seconds an event's ts may be ahead of the clock receiving it (the API's, or "
        "the Kafka record's time in the worker): later ones get a 422 or are dead-lettered.",
    )
    api_max_batch: int = Field(1000, ge=1, le=100_000, description="Most events one POST /api/events takes.")
    api_max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest accepted request body; larger gets 413."
    )
    producer_api_key: SecretStr | None = Field(
        None, description="When set, producing (POST /api/events) needs header X-API-Key with it."
    )
    admin_api_key: SecretStr | None = Field(None, description="When set, admin endpoints need it.")
    read_api_key: SecretStr | None = Field(None, description="When set, every read needs it; a user token does not stand in for it.")
    user_token_secret: SecretStr | None = Field(
        None, description="When set, a user's token (JWT, HS256) opens that user's own list, profile and counts, and nothing else."
    )
    rate_limit: str | None = Field(
        None, description="Requests per caller and API process, e.g. '100/second' (unset = no limit)."
    )
    produce_envelopes: bool = Field(
        True,
        description="Write each POSTed batch as one envelope record per partition (fast) "
        "instead of one record per event.",
    )
    produce_timeout_s: float = Field(10.0, gt=0, description="How long the API waits for Kafka acks.")
    api_cache_entries: int = Field(
        5_000, ge=0,
        description="Lists (and the popular list) each API process keeps, about 20 KB each: served without a Redis read while Redis "
        "tracks their keys for it, and marked stale while Redis is away (0 = read Redis every time, 503 while it is away).",
    )
    api_cache_tracking: bool = Field(
        True,
        description="Let Redis track the cached keys (CLIENT TRACKING, BCAST) so a copy is served until the key "
        "changes; false = read Redis on every request and keep the copies only for when it is away.",
    )
    api_realtime_priority: int = Field(
        0, ge=0, le=99,
        description="When above 0, each API process runs its event loop at this SCHED_RR priority (needs "
        "CAP_SYS_NICE), so a worker or broker busy on the same host does not hold up its requests by a scheduler "
        "slice; 0 = default scheduler.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma separated or a JSON list (none by default)."
    )

    # --- Discord bot (``eddy discord``) ------------------------------------------------------
    discord_bot_token: SecretStr | None = Field(
        None, description="The Discord bot's token; without it `eddy discord` does not start."
    )
    discord_api_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the Eddy API the Discord bot calls."
    )
    discord_guild_id: int | None = Field(
        None, description="Register the bot's commands on this server only (instant) instead of globally (up to an hour)."
    )

    @field_validator("cors_origins", "scrape_automation_off_domains", "scrape_strategies", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        """Comma separated, or a JSON list (as PRODUCTION.md and compose write them)."""
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc}") from None
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("recs_challengers", mode="before")
    @classmethod
    def _json_list(cls, value: object) -> object:
        if isinstance(value, str):
            import orjson

            try:
                return orjson.loads(value) if value.strip() else []
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not JSON: {exc}") from None
        return value

    @field_validator("recs_challengers")
    @classmethod
    def _known_params(cls, value: list[dict[str, float]]) -> list[dict[str, float]]:
        from online_models.hybrid import PARAMS

        for overrides in value:
            unknown = set(overrides) - set(PARAMS)
            if unknown:
                raise ValueError(f"unknown recommender parameters {sorted(unknown)}; known: {list(PARAMS)}")
        return value

    @field_validator("user_token_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (it signs HS256 tokens)")
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _http_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _valid_limit(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse  # the library the API enforces it with

            parse(value)  # ValueError with the reason for "100 per sec", "fast", ...
        return value

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    @property
    def faust_broker(self) -> str:
        return ";".join(f"kafka://{s}" for s in self.bootstrap_servers)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
