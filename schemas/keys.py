"""The Redis key layout of the read model. The worker writes these keys, the API reads them.

Every key starts with the configurable prefix (``eddy:`` by default). Values are JSON
(orjson) unless noted; one GET answers one API request on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Builds every Redis key from one prefix, so two deployments can share a Redis."""

    prefix: str = "eddy:"

    def item(self, item_id: str) -> str:
        """JSON: the latest version of an item, for rendering."""
        return f"{self.prefix}item:{item_id}"

    def item_stats(self, item_id: str) -> str:
        """Hash: interaction counts of an item by action."""
        return f"{self.prefix}itemstats:{item_id}"

    def recs(self, user_id: str) -> str:
        """JSON: the ready-to-serve top-K of a user."""
        return f"{self.prefix}recs:{user_id}"

    def profile(self, user_id: str) -> str:
        """JSON: what Eddy knows of a user's tastes, for the profile page."""
        return f"{self.prefix}profile:{user_id}"

    def user_counts(self, user_id: str) -> str:
        """Hash: a user's interaction counts by action (and declared interests as ``pref:*``)."""
        return f"{self.prefix}usercounts:{user_id}"

    @property
    def catalogue(self) -> str:
        """Stream: every item event in order, so each worker can hold the whole catalogue."""
        return f"{self.prefix}catalogue"

    @property
    def item_facts(self) -> str:
        """Stream: what each recommender worker's users taught about items, for the others."""
        return f"{self.prefix}itemfacts"

    @property
    def popular(self) -> str:
        """Sorted set: item -> count of positive interactions (cold-start fallback)."""
        return f"{self.prefix}popular"

    @property
    def popular_list(self) -> str:
        """JSON: the ready-to-serve popular top-K."""
        return f"{self.prefix}popular:list"

    def strategy(self, domain: str) -> str:
        """JSON: a domain's current strategy, why, and every strategy's statistics."""
        return f"{self.prefix}strategy:{domain}"

    @property
    def strategy_state(self) -> str:
        """Hash: domain -> JSON of its strategy selector's whole state (the worker resumes from it)."""
        return f"{self.prefix}strategystate"

    @property
    def scraping(self) -> str:
        """Hash: domain -> JSON summary of its scraping (for the analytics page)."""
        return f"{self.prefix}scraping"

    @property
    def sources(self) -> str:
        """Hash: source -> JSON of its reliability (success rate, anomaly history)."""
        return f"{self.prefix}sources"

    def bid(self, bid_id: str) -> str:
        """Hash: a bid, its score when placed, its features, and later its outcome."""
        return f"{self.prefix}bid:{bid_id}"

    @property
    def bids_pending(self) -> str:
        """Sorted set: bid -> placement time, for bids still waiting for their outcome."""
        return f"{self.prefix}bids:pending"

    def bid_profile(self, profile_id: str) -> str:
        """JSON: a freelancer's bid and outcome history (for scoring draft bids)."""
        return f"{self.prefix}bidprofile:{profile_id}"

    def bid_job(self, job_id: str) -> str:
        """JSON: the bids a job drew so far (for scoring draft bids)."""
        return f"{self.prefix}bidjob:{job_id}"

    @property
    def bid_models(self) -> str:
        """Hash: worker -> JSON snapshot of its bid model (weights), for scoring draft bids."""
        return f"{self.prefix}bidmodels"

    def seen_bucket(self, bucket: int) -> str:
        """Hash with a TTL: id -> where (``partition:offset:index``) of each event applied
        during one slice of the dedupe window."""
        return f"{self.prefix}seenat:{bucket}"

    @property
    def registry(self) -> str:
        """Hash: model name -> JSON of its versions, their metrics and which one serves."""
        return f"{self.prefix}registry"

    @property
    def serving(self) -> str:
        """Hash: model name -> JSON of the version an admin (or the policy) asked to serve."""
        return f"{self.prefix}serving"

    @property
    def models(self) -> str:
        """Hash: ``recs:{worker}`` / ``bids:{worker}`` -> JSON of that model's version and online
        metrics on the worker (mergeable counts)."""
        return f"{self.prefix}models"

    @property
    def stats(self) -> str:
        """Hash: worker counters (events processed, dead letters, duplicates) by topic."""
        return f"{self.prefix}stats"

    @property
    def workers(self) -> str:
        """Hash: worker (host:pid) -> JSON of its partition count and when it was assigned."""
        return f"{self.prefix}workers"

    def pattern(self) -> str:
        return f"{self.prefix}*"
