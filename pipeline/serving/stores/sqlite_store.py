"""The embedded default store: one SQLite file, one table per version, a one-row pointer table.

Why SQLite: it needs no server, so the demo and a single-host deployment serve lookups with
nothing to operate. WAL mode lets the API read while a publish writes; each batch is one
``executemany`` in one transaction (a commit per record would cost a disk sync each). There is
a single writer, so ``concurrency`` is ignored. The pointer flip is one UPDATE of one row,
atomic like every SQLite transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.serving.errors import StoreUnavailableError
from pipeline.serving.stores.base import AttributeStore, Row

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS serving_versions "
    "(version TEXT PRIMARY KEY, records INTEGER, verified INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS serving_pointer (name TEXT PRIMARY KEY, version TEXT NOT NULL)",
)
_IN_CHUNK = 500  # ids per SELECT ... IN (...), well under SQLite's variable limit


def table_name(version: str) -> str:
    """``attributes_2026_11_26`` for ``2026-11-26`` (the version is validated before it gets here)."""
    return "attributes_" + version.replace("-", "_")


class SqliteStore(AttributeStore):
    """Attribute versions in one SQLite database file; one connection per thread."""

    kind = "sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared between threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, no sync per commit
            except (OSError, sqlite3.Error) as exc:
                raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- primitives -------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        return [v for (v,) in self._conn().execute("SELECT version FROM serving_versions ORDER BY version")]

    def active_version(self) -> str | None:
        row = self._conn().execute("SELECT version FROM serving_pointer WHERE name = 'active'").fetchone()
        return row[0] if row else None

    def _begin(self, version: str) -> None:
        with self._transaction() as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table_name(version)} "
                         "(track_id TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID")
            conn.execute("INSERT INTO serving_versions (version, records, verified) VALUES (?, NULL, 0) "
                         "ON CONFLICT(version) DO UPDATE SET records = NULL, verified = 0", (version,))

    def _write_batches(self, version: str, batches: Iterable[list[Row]], concurrency: int) -> int:
        sql = f"INSERT OR REPLACE INTO {table_name(version)} (track_id, doc) VALUES (?, ?)"
        written = 0
        for batch in batches:
            with self._transaction() as conn:
                conn.executemany(sql, batch)
            written += len(batch)
        return written

    def _count(self, version: str) -> int:
        try:
            return self._conn().execute(f"SELECT COUNT(*) FROM {table_name(version)}").fetchone()[0]
        except sqlite3.OperationalError:  # no such table: nothing was loaded
            return 0

    def _mark_verified(self, version: str, count: int | None) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE serving_versions SET records = ?, verified = ? WHERE version = ?",
                         (count, count is not None, version))

    def _verified_count(self, version: str) -> int | None:
        row = self._conn().execute(
            "SELECT records FROM serving_versions WHERE version = ? AND verified", (version,)).fetchone()
        return row[0] if row else None

    def _set_pointer(self, version: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO serving_pointer (name, version) VALUES ('active', ?) "
                         "ON CONFLICT(name) DO UPDATE SET version = excluded.version", (version,))

    def _fetch(self, version: str, track_ids: list[str]) -> Iterable[tuple[str, bytes | None]]:
        table = table_name(version)
        for start in range(0, len(track_ids), _IN_CHUNK):
            chunk = track_ids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            try:
                yield from self._conn().execute(f"SELECT track_id, doc FROM {table} WHERE track_id IN ({marks})", chunk)
            except sqlite3.OperationalError:  # the version was dropped under a slow reader
                return

    def _drop(self, version: str) -> None:
        with self._transaction() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table_name(version)}")
            conn.execute("DELETE FROM serving_versions WHERE version = ?", (version,))
