"""The Cassandra store for production scale: one row per track with its packed cells, token-aware writes.

Schema (keyspace from ``[serving] cassandra_keyspace``)::

    attribute_rows   (track_id text PRIMARY KEY, cells blob)   packed cells (``pipeline.serving.cells``)
    serving_registry (version text PRIMARY KEY, base text, records bigint)   records null = unverified
    serving_pointer  (name text PRIMARY KEY, version text)    the row 'active'

Same design as the other stores: a daily publish rewrites only the changed tracks' rows, a
version reads the newest cell between its base and its own day, the flip is one write of the
pointer row. Writes are idempotent: a row's new value is a function of its old value, the
registry and the change, so replaying a killed publish writes the same bytes again (a single
publisher per store, as everywhere). Each row is one partition, so its write is atomic for
readers. Writes use one prepared INSERT sent with ``execute_concurrent_with_args``, no
multi-partition BATCH; the token-aware policy sends each request straight to a replica. Reads
and writes use LOCAL_QUORUM, so a reader after the pointer write sees it. Rows are replaced
whole (no tombstones from cell updates); a row is deleted only by ``collect_garbage`` for a
track gone from every kept version. Leveled compaction: the table is read far more than written.

``cassandra-driver`` is imported lazily: the other stores and the tests run without it, and a
missing driver fails fast here with an install hint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

from pipeline.serving.errors import ConfigError, StoreUnavailableError
from pipeline.serving.stores.base import AttributeStore, Row, batched

_KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_COUNT_SPLITS = 64  # token sub-ranges counted in parallel: no single COUNT(*) scans the whole table
_MIN_TOKEN, _MAX_TOKEN = -(2**63), 2**63 - 1  # Murmur3Partitioner; no key hashes to the minimum


def token_ranges(splits: int) -> list[tuple[int, int]]:
    """``splits`` contiguous (lo, hi] ranges covering the whole Murmur3 token ring."""
    step = (_MAX_TOKEN - _MIN_TOKEN) // splits
    bounds = [_MIN_TOKEN + i * step for i in range(splits)] + [_MAX_TOKEN]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _driver():
    try:
        import cassandra.cluster  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the [serving] extra installs it
        raise ConfigError("[serving] store = cassandra needs cassandra-driver: pip install -e '.[serving]'") from exc
    import cassandra

    return cassandra


class CassandraStore(AttributeStore):
    """Attribute rows in a Cassandra keyspace."""

    kind = "cassandra"

    def __init__(self, hosts: Sequence[str], keyspace: str, port: int = 9042, local_dc: str | None = None,
                 replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"):
        if not _KEYSPACE_RE.match(keyspace):
            raise ConfigError(f"[serving] cassandra_keyspace {keyspace!r} is not a valid CQL identifier")
        super().__init__()
        self.hosts, self.keyspace = list(hosts), keyspace
        self.cluster = self._cluster(port, local_dc)
        self.session = self._connect()
        self._prepared: dict[str, object] = {}
        self.session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}")
        self.session.set_keyspace(keyspace)
        self.session.execute("CREATE TABLE IF NOT EXISTS attribute_rows (track_id text PRIMARY KEY, cells blob) "
                             "WITH compaction = {'class': 'LeveledCompactionStrategy'}")
        self.session.execute("CREATE TABLE IF NOT EXISTS serving_registry "
                             "(version text PRIMARY KEY, base text, records bigint)")
        self.session.execute("CREATE TABLE IF NOT EXISTS serving_pointer (name text PRIMARY KEY, version text)")

    def _cluster(self, port: int, local_dc: str | None):
        cassandra = _driver()
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc)),
            consistency_level=cassandra.ConsistencyLevel.LOCAL_QUORUM, request_timeout=60)
        user = os.environ.get("ECHONEST_CASSANDRA_USERNAME")  # secrets from the environment, never luigi.cfg
        auth = PlainTextAuthProvider(user, os.environ.get("ECHONEST_CASSANDRA_PASSWORD", "")) if user else None
        return Cluster(self.hosts, port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                       auth_provider=auth, connect_timeout=10)

    def _connect(self):
        from cassandra.cluster import NoHostAvailable

        try:
            return self.cluster.connect()
        except NoHostAvailable as exc:
            self.cluster.shutdown()
            raise StoreUnavailableError(f"cannot reach the cassandra store at {self.hosts}: {exc}") from exc

    def _prepare(self, cql: str):
        if cql not in self._prepared:
            self._prepared[cql] = self.session.prepare(cql)
        return self._prepared[cql]

    def _concurrent(self, cql: str, args: list[tuple], concurrency: int = 64) -> list:
        from cassandra.concurrent import execute_concurrent_with_args

        results = execute_concurrent_with_args(self.session, self._prepare(cql), args,
                                               concurrency=concurrency, raise_on_first_error=True)
        return [result for _, result in results]

    def close(self) -> None:
        self.cluster.shutdown()

    # -- registry and pointer ---------------------------------------------------------------------
    def active_version(self) -> str | None:
        row = self.session.execute(self._prepare("SELECT version FROM serving_pointer WHERE name = 'active'")).one()
        return row.version if row else None

    def _registry(self) -> dict[str, str]:
        return {row.version: row.base for row in self.session.execute("SELECT version, base FROM serving_registry")}

    def _info(self, version: str) -> dict | None:
        row = self.session.execute(self._prepare("SELECT base, records FROM serving_registry WHERE version = ?"),
                                   (version,)).one()
        return None if row is None else {"base": row.base, "records": row.records}

    def _register(self, version: str, base: str) -> None:
        self.session.execute(self._prepare("INSERT INTO serving_registry (version, base, records) VALUES (?, ?, null)"),
                             (version, base))

    def _mark_verified(self, version: str, count: int | None) -> None:
        self.session.execute(self._prepare("UPDATE serving_registry SET records = ? WHERE version = ?"),
                             (count, version))

    def _unregister(self, version: str) -> None:
        self.session.execute(self._prepare("DELETE FROM serving_registry WHERE version = ?"), (version,))

    def _set_pointer(self, version: str) -> None:
        self.session.execute(self._prepare("INSERT INTO serving_pointer (name, version) VALUES ('active', ?)"),
                             (version,))

    # -- rows -------------------------------------------------------------------------------------
    def _read_rows(self, track_ids: list[str]) -> dict[str, bytes]:
        # One single-partition SELECT per id, in parallel: token-aware routing sends each to a replica,
        # which beats an IN (...) query funnelled through one coordinator.
        results = self._concurrent("SELECT track_id, cells FROM attribute_rows WHERE track_id = ?",
                                   [(tid,) for tid in track_ids], concurrency=32)
        return {row.track_id: row.cells for result in results for row in result}

    def _write_rows(self, rows: list[Row]) -> None:
        self._concurrent("INSERT INTO attribute_rows (track_id, cells) VALUES (?, ?)",
                         [r for r in rows if r[1] is not None])
        gone = [(t,) for t, v in rows if v is None]
        if gone:
            self._concurrent("DELETE FROM attribute_rows WHERE track_id = ?", gone)

    def _scan_rows(self, batch_size: int = 5000) -> Iterator[list[tuple[str, bytes]]]:
        """Token sub-range by sub-range, so no single query scans the whole table."""
        cql = self._prepare("SELECT track_id, cells FROM attribute_rows WHERE token(track_id) > ? "
                            "AND token(track_id) <= ?")
        for lo, hi in token_ranges(_COUNT_SPLITS):
            rows = ((row.track_id, row.cells) for row in self.session.execute(cql, (lo, hi)))
            yield from batched(rows, batch_size)
