"""The Redis store: one string key per track holding its packed cells, a registry hash, a pointer key.

Keys (``prefix`` defaults to ``attrs``)::

    attrs:t:<track_id>   packed cells (``pipeline.serving.cells``): the track in every kept version
    attrs:registry       hash: version -> JSON {"base": ..., "records": count or null while unverified}
    attrs:active         the active version

Why one string per track: a lookup is one GET (a batch one MGET) whatever the version, a daily
publish rewrites only the changed tracks' keys, and a string of ~350 bytes costs far less than a
hash (whose values above ``hash-max-listpack-value`` leave the compact encoding). Writes are
pipelined (one round trip per batch, no MULTI) from ``concurrency`` threads; a SET replaces a
key atomically and the pointer is one SET, so readers see the old or the new version, never a mix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import redis

from pipeline.serving.errors import StoreUnavailableError
from pipeline.serving.stores.base import AttributeStore, Row

_SCAN_COUNT = 5000


class RedisStore(AttributeStore):
    """Attribute rows in one Redis database, reached through a thread-safe connection pool."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "attrs", client: redis.Redis | None = None):
        super().__init__()
        self.url, self.prefix = url, prefix
        self.client = client or redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=60,
                                                     health_check_interval=30)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"cannot reach the redis store at {url}: {exc}") from exc
        self._pointer = f"{prefix}:active"
        self._registry_key = f"{prefix}:registry"
        self._rows = f"{prefix}:t:"

    def close(self) -> None:
        self.client.close()

    # -- registry and pointer ---------------------------------------------------------------------
    def active_version(self) -> str | None:
        value = self.client.get(self._pointer)
        return value.decode() if value else None

    def _registry(self) -> dict[str, str]:
        return {v.decode(): json.loads(info)["base"] for v, info in self.client.hgetall(self._registry_key).items()}

    def _info(self, version: str) -> dict | None:
        value = self.client.hget(self._registry_key, version)
        return None if value is None else json.loads(value)

    def _register(self, version: str, base: str) -> None:
        self.client.hset(self._registry_key, version, json.dumps({"base": base, "records": None}))

    def _mark_verified(self, version: str, count: int | None) -> None:
        info = self._info(version)
        if info is not None:
            self.client.hset(self._registry_key, version, json.dumps({**info, "records": count}))

    def _unregister(self, version: str) -> None:
        self.client.hdel(self._registry_key, version)

    def _set_pointer(self, version: str) -> None:
        self.client.set(self._pointer, version)

    # -- rows -------------------------------------------------------------------------------------
    def _read_rows(self, track_ids: list[str]) -> dict[str, bytes]:
        if not track_ids:
            return {}
        values = self.client.mget([self._rows + t for t in track_ids])
        return {t: v for t, v in zip(track_ids, values, strict=True) if v is not None}

    def _write_rows(self, rows: list[Row]) -> None:
        pipe = self.client.pipeline(transaction=False)  # plain pipelining: one round trip, no MULTI
        for track_id, data in rows:
            if data is None:
                pipe.unlink(self._rows + track_id)
            else:
                pipe.set(self._rows + track_id, data)
        pipe.execute()

    def _scan_rows(self, batch_size: int = 5000) -> Iterator[list[tuple[str, bytes]]]:
        skip = len(self._rows)
        keys: list[bytes] = []
        for key in self.client.scan_iter(match=self._rows + "*", count=_SCAN_COUNT):
            keys.append(key)
            if len(keys) >= batch_size:
                yield self._values(keys, skip)
                keys = []
        if keys:
            yield self._values(keys, skip)

    def _values(self, keys: list[bytes], skip: int) -> list[tuple[str, bytes]]:
        return [(k[skip:].decode(), v) for k, v in zip(keys, self.client.mget(keys), strict=True) if v is not None]

    def used_memory(self) -> int:
        """The server's ``used_memory`` (for the benchmark's bytes per record)."""
        return int(self.client.info("memory")["used_memory"])
