"""The embedded default store: one SQLite file, one row per track, a registry and a one-row pointer.

Why SQLite: it needs no server, so the demo and a single-host deployment serve lookups with
nothing to operate. WAL mode lets the API read while a publish writes; each batch is one
transaction (a commit per record would cost a disk sync each). There is a single writer, so
``concurrency`` is ignored. The pointer flip is one UPDATE of one row, atomic like every SQLite
transaction, and a row replaced in a transaction is seen whole or not at all.

Tables: ``attribute_rows (track_id TEXT PRIMARY KEY, cells BLOB) WITHOUT ROWID`` (packed cells,
``pipeline.serving.cells``), ``serving_registry (version, base, records)`` (records NULL while
unverified) and ``serving_pointer``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from pipeline.serving.errors import StoreUnavailableError
from pipeline.serving.stores.base import AttributeStore, Row

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS attribute_rows (track_id TEXT PRIMARY KEY, cells BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS serving_registry (version TEXT PRIMARY KEY, base TEXT NOT NULL, records INTEGER)",
    "CREATE TABLE IF NOT EXISTS serving_pointer (name TEXT PRIMARY KEY, version TEXT NOT NULL)",
)
_IN_CHUNK = 500  # ids per SELECT ... IN (...), well under SQLite's variable limit
_CACHE_KIB = 2048  # page cache per connection (one per API worker thread): 2 MB each, 80 MB at 40 threads


class SqliteStore(AttributeStore):
    """Attribute rows in one SQLite database file; one connection per thread."""

    kind = "sqlite"
    parallel_writes = False

    def __init__(self, path: str | Path):
        super().__init__()
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
                conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
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

    # -- registry and pointer ---------------------------------------------------------------------
    def active_version(self) -> str | None:
        row = self._conn().execute("SELECT version FROM serving_pointer WHERE name = 'active'").fetchone()
        return row[0] if row else None

    def _registry(self) -> dict[str, str]:
        return dict(self._conn().execute("SELECT version, base FROM serving_registry"))

    def _info(self, version: str) -> dict | None:
        row = self._conn().execute("SELECT base, records FROM serving_registry WHERE version = ?",
                                   (version,)).fetchone()
        return None if row is None else {"base": row[0], "records": row[1]}

    def _register(self, version: str, base: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO serving_registry (version, base, records) VALUES (?, ?, NULL) "
                         "ON CONFLICT(version) DO UPDATE SET base = excluded.base, records = NULL", (version, base))

    def _mark_verified(self, version: str, count: int | None) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE serving_registry SET records = ? WHERE version = ?", (count, version))

    def _unregister(self, version: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM serving_registry WHERE version = ?", (version,))

    def _set_pointer(self, version: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO serving_pointer (name, version) VALUES ('active', ?) "
                         "ON CONFLICT(name) DO UPDATE SET version = excluded.version", (version,))

    # -- rows -------------------------------------------------------------------------------------
    def _read_rows(self, track_ids: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        conn = self._conn()
        for start in range(0, len(track_ids), _IN_CHUNK):
            chunk = track_ids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT track_id, cells FROM attribute_rows WHERE track_id IN ({marks})",
                                      chunk))
        return found

    def _write_rows(self, rows: list[Row]) -> None:
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO attribute_rows (track_id, cells) VALUES (?, ?)",
                             [r for r in rows if r[1] is not None])
            conn.executemany("DELETE FROM attribute_rows WHERE track_id = ?", [(t,) for t, v in rows if v is None])

    def _scan_rows(self, batch_size: int = 5000) -> Iterator[list[tuple[str, bytes]]]:
        """Keyset pagination: no long read transaction, and writes between batches are fine."""
        after = ""
        while True:
            rows = self._conn().execute("SELECT track_id, cells FROM attribute_rows WHERE track_id > ? "
                                        "ORDER BY track_id LIMIT ?", (after, batch_size)).fetchall()
            if not rows:
                return
            yield rows
            after = rows[-1][0]
