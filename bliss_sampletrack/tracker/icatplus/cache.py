"""The cache of a proposal's flattened parcels, shared through the beacon Redis.

The flattened samples are cached in the beacon Redis, one JSON value per beamline and proposal
(key ``sampletrack:registry:icatplus:<beamline>:<proposal>``, with the fetch time; kept 30 days),
so every BLISS process of the beamline shares them. When to use the cache and when to refresh it
is the registry's business (:mod:`bliss_sampletrack.tracker.icatplus.registry`); a cache that
cannot be read or written is logged and skipped (the cache then lives in that process only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bliss_sampletrack.tracker.icatplus.parcels import index as index_records

log = logging.getLogger(__name__)

#: how long Redis keeps a proposal's cache
CACHE_KEEP = 30 * 24 * 3600
CACHE_VERSION = 1
KEY_PREFIX = "sampletrack:registry:icatplus"


@dataclass
class ParcelCache:
    """The flattened samples of one proposal's parcels, as fetched at ``fetched_at`` (epoch s)."""

    proposal: str
    investigation_id: str
    fetched_at: float
    records: list[dict[str, Any]]
    parcels: int
    by_barcode: dict[str, set[int]] = field(default_factory=dict, repr=False)
    by_location: dict[tuple[str, str], set[int]] = field(default_factory=dict, repr=False)

    def index(self, barcode_fields: Iterable[str], no_read: Iterable[str]) -> ParcelCache:
        self.by_barcode, self.by_location = index_records(self.records, barcode_fields, no_read)
        return self

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": CACHE_VERSION,
                "proposal": self.proposal,
                "investigation_id": self.investigation_id,
                "fetched_at": self.fetched_at,
                "parcels": self.parcels,
                "records": self.records,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ParcelCache:
        data = json.loads(text)
        if data.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {data.get('version')!r}, expected {CACHE_VERSION}")
        return cls(
            proposal=str(data["proposal"]),
            investigation_id=str(data["investigation_id"]),
            fetched_at=float(data["fetched_at"]),
            records=list(data["records"]),
            parcels=int(data["parcels"]),
        )

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.fetched_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cache_key(beamline: str, proposal: str) -> str:
    """The Redis key of ``proposal``'s cache on ``beamline``."""
    return f"{KEY_PREFIX}:{beamline}:{proposal}"


def load(
    redis: Any, key: str, barcode_fields: Iterable[str], no_read: Iterable[str], *, name: str
) -> ParcelCache | None:
    """The cache at ``key``, indexed; None when there is none or it cannot be read (logged)."""
    from redis.exceptions import RedisError

    try:
        raw = redis.get(key)
    except RedisError as exc:
        log.warning("registry %r: cannot read the cache from Redis: %s", name, exc)
        return None
    if raw is None:
        return None
    try:
        return ParcelCache.from_json(raw).index(barcode_fields, no_read)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("registry %r: ignoring the unreadable cache %s: %s", name, key, exc)
        return None


def store(redis: Any, key: str, cache: ParcelCache, *, name: str) -> None:
    """Write ``cache`` at ``key`` for :data:`CACHE_KEEP` seconds; a Redis failure is logged."""
    from redis.exceptions import RedisError

    try:
        redis.set(key, cache.to_json(), ex=CACHE_KEEP)
    except RedisError as exc:  # the cache then lives in this process only
        log.warning("registry %r: cannot write the cache to Redis: %s", name, exc)
