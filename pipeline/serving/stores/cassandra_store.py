"""The Cassandra store for production scale: one table per version, token-aware concurrent loads.

Schema (keyspace from ``[serving] cassandra_keyspace``)::

    attributes_<yyyy_mm_dd> (track_id text PRIMARY KEY, doc blob)   one per version
    serving_versions        (version text PRIMARY KEY, records bigint, verified boolean)
    serving_pointer         (name text PRIMARY KEY, version text)    the row 'active'

Why a table per version: retiring a snapshot is one ``DROP TABLE``, which writes no tombstones
(deleting a million rows would leave a million of them to compact away). Loads use one prepared
INSERT sent with ``execute_concurrent_with_args``; there are no multi-partition BATCHes (they
overload a coordinator). The token-aware policy sends every request straight to a replica of
its partition. Reads and writes use LOCAL_QUORUM, so a reader after the pointer write sees it.

``cassandra-driver`` is imported lazily: the other stores and the tests run without it, and a
missing driver fails fast here with an install hint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

from pipeline.serving.errors import ConfigError, StoreUnavailableError
from pipeline.serving.stores.base import AttributeStore, Row

_KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_COUNT_SPLITS = 64  # token sub-ranges counted in parallel: no single COUNT(*) scans the whole table
_MIN_TOKEN, _MAX_TOKEN = -(2**63), 2**63 - 1  # Murmur3Partitioner; no key hashes to the minimum


def table_name(version: str) -> str:
    return "attributes_" + version.replace("-", "_")


def token_ranges(splits: int) -> list[tuple[int, int]]:
    """``splits`` contiguous (lo, hi] ranges covering the whole Murmur3 token ring."""
    step = (_MAX_TOKEN - _MIN_TOKEN) // splits
    bounds = [_MIN_TOKEN + i * step for i in range(splits)] + [_MAX_TOKEN]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _missing_table(exc: Exception) -> bool:
    """True for the driver's InvalidRequest about a table that does not exist."""
    from cassandra import InvalidRequest

    return isinstance(exc, InvalidRequest) and "unconfigured table" in str(exc).lower()


def _driver():
    try:
        import cassandra.cluster  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the [serving] extra installs it
        raise ConfigError("[serving] store = cassandra needs cassandra-driver: pip install -e '.[serving]'") from exc
    import cassandra

    return cassandra


class CassandraStore(AttributeStore):
    """Attribute versions in a Cassandra keyspace, one table each."""

    kind = "cassandra"

    def __init__(self, hosts: Sequence[str], keyspace: str, port: int = 9042, local_dc: str | None = None,
                 replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"):
        if not _KEYSPACE_RE.match(keyspace):
            raise ConfigError(f"[serving] cassandra_keyspace {keyspace!r} is not a valid CQL identifier")
        self.hosts, self.keyspace = list(hosts), keyspace
        self.cluster = self._cluster(port, local_dc)
        self.session = self._connect()
        self._prepared: dict[str, object] = {}
        self.session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}")
        self.session.set_keyspace(keyspace)
        self.session.execute("CREATE TABLE IF NOT EXISTS serving_versions "
                             "(version text PRIMARY KEY, records bigint, verified boolean)")
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

    # -- primitives -------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        return sorted(row.version for row in self.session.execute("SELECT version FROM serving_versions"))

    def active_version(self) -> str | None:
        row = self.session.execute(self._prepare("SELECT version FROM serving_pointer WHERE name = 'active'")).one()
        return row.version if row else None

    def _begin(self, version: str) -> None:
        # Leveled compaction: the tables are read far more than written, and LCS bounds a read to ~1 SSTable.
        self.session.execute(f"CREATE TABLE IF NOT EXISTS {table_name(version)} (track_id text PRIMARY KEY, "
                             "doc blob) WITH compaction = {'class': 'LeveledCompactionStrategy'}")
        self.session.execute(self._prepare(
            "INSERT INTO serving_versions (version, records, verified) VALUES (?, null, false)"), (version,))

    def _write_batches(self, version: str, batches: Iterable[list[Row]], concurrency: int) -> int:
        cql = f"INSERT INTO {table_name(version)} (track_id, doc) VALUES (?, ?)"
        written = 0
        for batch in batches:
            self._concurrent(cql, batch, concurrency)
            written += len(batch)
        return written

    def _count(self, version: str) -> int:
        cql = (f"SELECT COUNT(*) FROM {table_name(version)} "
               "WHERE token(track_id) > ? AND token(track_id) <= ?")
        try:
            results = self._concurrent(cql, token_ranges(_COUNT_SPLITS), concurrency=8)
        except Exception as exc:
            if _missing_table(exc):
                return 0
            raise
        return sum(result.one()[0] for result in results)

    def _mark_verified(self, version: str, count: int | None) -> None:
        self.session.execute(self._prepare("UPDATE serving_versions SET records = ?, verified = ? WHERE version = ?"),
                             (count, count is not None, version))

    def _verified_count(self, version: str) -> int | None:
        row = self.session.execute(
            self._prepare("SELECT records, verified FROM serving_versions WHERE version = ?"), (version,)).one()
        return row.records if row is not None and row.verified else None

    def _set_pointer(self, version: str) -> None:
        self.session.execute(self._prepare("INSERT INTO serving_pointer (name, version) VALUES ('active', ?)"),
                             (version,))

    def _fetch(self, version: str, track_ids: list[str]) -> Iterable[tuple[str, bytes | None]]:
        cql = f"SELECT track_id, doc FROM {table_name(version)} WHERE track_id = ?"
        # One single-partition SELECT per id, in parallel: token-aware routing sends each to a replica,
        # which beats an IN (...) query funnelled through one coordinator.
        try:
            results = self._concurrent(cql, [(tid,) for tid in track_ids], concurrency=32)
        except Exception as exc:
            if _missing_table(exc):  # the version was dropped (or never loaded): nothing to find
                return []
            raise
        return [(row.track_id, row.doc) for result in results for row in result]

    def _drop(self, version: str) -> None:
        self._mark_verified(version, None)
        self.session.execute(f"DROP TABLE IF EXISTS {table_name(version)}")
        self.session.execute(self._prepare("DELETE FROM serving_versions WHERE version = ?"), (version,))
        self._prepared = {cql: p for cql, p in self._prepared.items() if table_name(version) not in cql}
