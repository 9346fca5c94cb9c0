"""The Redis store: one string key per record and version, a pointer key switched with a single SET.

Keys (``prefix`` defaults to ``attrs``)::

    attrs:<version>:<track_id>   orjson record
    attrs:versions               hash: version -> verified record count, or "" while unverified
    attrs:active                 the active version

Why one key per record: lookups are one GET (or one MGET for a batch) and a version is
dropped key by key with SCAN + UNLINK (UNLINK frees memory off the main thread), so no single
huge key ever blocks the server. Loads are pipelined (one round trip per batch, no MULTI) and
sent from ``concurrency`` threads. A SET of one key is atomic, so readers see either the old
or the new version, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from pipeline.serving.errors import StoreUnavailableError
from pipeline.serving.stores.base import AttributeStore, Row, run_bounded

_SCAN_COUNT = 5000
_UNVERIFIED = b""


class RedisStore(AttributeStore):
    """Attribute versions in one Redis database, reached through a thread-safe connection pool."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "attrs", client: redis.Redis | None = None):
        self.url, self.prefix = url, prefix
        self.client = client or redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=60,
                                                     health_check_interval=30)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"cannot reach the redis store at {url}: {exc}") from exc
        self._pointer = f"{prefix}:active"
        self._registry = f"{prefix}:versions"

    def _key_prefix(self, version: str) -> str:
        return f"{self.prefix}:{version}:"

    def close(self) -> None:
        self.client.close()

    # -- primitives -------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        return sorted(v.decode() for v in self.client.hkeys(self._registry))

    def active_version(self) -> str | None:
        value = self.client.get(self._pointer)
        return value.decode() if value else None

    def _begin(self, version: str) -> None:
        self.client.hset(self._registry, version, _UNVERIFIED)

    def _write_batches(self, version: str, batches: Iterable[list[Row]], concurrency: int) -> int:
        prefix = self._key_prefix(version)

        def send(batch: list[Row]) -> int:
            pipe = self.client.pipeline(transaction=False)  # plain pipelining: one round trip, no MULTI
            for track_id, data in batch:
                pipe.set(prefix + track_id, data)
            pipe.execute()
            return len(batch)

        return run_bounded(send, batches, concurrency)

    def _keys(self, version: str) -> Iterable[bytes]:
        return self.client.scan_iter(match=self._key_prefix(version) + "*", count=_SCAN_COUNT)

    def _count(self, version: str) -> int:
        return sum(1 for _ in self._keys(version))

    def _mark_verified(self, version: str, count: int | None) -> None:
        self.client.hset(self._registry, version, _UNVERIFIED if count is None else str(count))

    def _verified_count(self, version: str) -> int | None:
        value = self.client.hget(self._registry, version)
        return int(value) if value else None

    def _set_pointer(self, version: str) -> None:
        self.client.set(self._pointer, version)

    def _fetch(self, version: str, track_ids: list[str]) -> Iterable[tuple[str, bytes | None]]:
        if not track_ids:
            return []
        prefix = self._key_prefix(version)
        return zip(track_ids, self.client.mget([prefix + t for t in track_ids]), strict=True)

    def _drop(self, version: str) -> None:
        # Unverify first, unregister last: a drop killed midway leaves a listed, unverified version
        # that can never be activated and that the next retirement finishes deleting.
        self._mark_verified(version, None)
        batch: list[bytes] = []
        for key in self._keys(version):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)
        self.client.hdel(self._registry, version)
