"""Test support for the serving layer: attributes snapshots in a temp warehouse, stores, servers.

Also a pytest plugin (test modules name it in ``pytest_plugins``): a session Redis server on
loopback, one fresh store per test for each store type, and a killable publisher run as
``python -m tests.serving_support`` by the SIGKILL test.

PYTEST_DONT_REWRITE: test modules import helpers from here before pytest registers the plugin,
so assertion rewriting could not apply anyway (and would warn).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from pipeline import layout
from pipeline.demo import synthetic_features as synthetic
from pipeline.layout import Layout
from pipeline.serving.redis_server import running_redis_server
from pipeline.serving.stores import open_store
from pipeline.serving.stores.base import AttributeStore
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[1]
DAY1, DAY2, DAY3 = dt.date(2026, 11, 26), dt.date(2026, 11, 27), dt.date(2026, 11, 28)
BUCKETS = 4
CASSANDRA_ENV = "ECHONEST_CASSANDRA_HOSTS"


# ----------------------------------------------------------------------- snapshots in a warehouse
@functools.cache
def attribute_records(n: int, seed: int) -> tuple[dict, ...]:
    """Cached: the same few hundred computed records serve many tests."""
    return tuple(synthetic.attribute_records(n, seed))


def as_stored(record: dict) -> dict:
    """A record as the store and the warehouse give it back (Avro binary: float arrays are float32)."""
    from pipeline.serving import cells

    return cells.decode(cells.encode(record))


def make_warehouse(root: Path) -> Warehouse:
    return Warehouse(Layout(f"file://{root}"), LocalStorage())


def write_snapshot(wh: Warehouse, date: dt.date, records: Iterable[dict], buckets: int = BUCKETS) -> dict:
    """A small snapshot in several parts per bucket (64 records each), so part boundaries are exercised."""
    return synthetic.write_snapshot(wh, date, records, buckets, records_per_part=64)


def stored_records(wh: Warehouse, date: dt.date) -> dict[str, dict]:
    """The snapshot as the warehouse holds it (vectors read back as float32), by track id."""
    from pipeline.serving.publish import snapshot_records

    return {r["track_id"]: r for r in snapshot_records(wh, date, wh.manifest(layout.ATTRIBUTES, date))}


# ----------------------------------------------------------------------- stores
def store_settings(kind: str, tmp: Path, redis_url: str | None = None) -> dict:
    """Settings of a fresh, isolated store of ``kind`` (own file, key prefix or keyspace)."""
    tag = uuid.uuid4().hex[:10]
    if kind == "sqlite":
        return {"sqlite_path": str(tmp / f"serving-{tag}.sqlite")}
    if kind == "redis":
        return {"redis_url": redis_url, "redis_prefix": f"t{tag}"}
    return {"cassandra_hosts": os.environ[CASSANDRA_ENV], "cassandra_keyspace": f"echonest_test_{tag}",
            "cassandra_port": int(os.environ.get("ECHONEST_CASSANDRA_PORT", "9042"))}


def cassandra_or_skip() -> None:
    if not os.environ.get(CASSANDRA_ENV):
        pytest.skip(f"no Cassandra configured: set {CASSANDRA_ENV}=host[,host] (and ECHONEST_CASSANDRA_PORT) "
                    "to run the store contract against a real cluster")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server on a free loopback port for the whole session (no persistence)."""
    with running_redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis", "cassandra"])
def store_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "cassandra":
        cassandra_or_skip()
    return request.param


@pytest.fixture
def new_store(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], tuple]]:
    """A factory of ``(store, settings)``: each call opens the same isolated store again (a new client)."""
    url = request.getfixturevalue("redis_url") if store_kind == "redis" else None
    settings = store_settings(store_kind, tmp_path, url)
    opened: list[AttributeStore] = []

    def factory() -> tuple[AttributeStore, dict]:
        opened.append(open_store(store_kind, settings))
        return opened[-1], settings

    yield factory
    for store in opened:
        if store_kind == "cassandra":
            store.session.execute(f"DROP KEYSPACE IF EXISTS {settings['cassandra_keyspace']}")
        store.close()


# ----------------------------------------------------------------------- processes
def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def running_api(kind: str, settings: dict, index_dir: Path, log: Path) -> Iterator[str]:
    """A real ``python -m pipeline.serving.api`` process on a free loopback port; yields its base URL."""
    from pipeline.serving.api import running_service

    with running_service({"store": kind, **settings}, index_dir, log) as base:
        yield base


class SlowStore:
    """Wraps a store so its load crawls: the SIGKILL test needs a publish that is visibly midway."""

    def __init__(self, store: AttributeStore, delay: float):
        self._store, self._delay = store, delay

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def apply(self, version: str, changes: Iterable, batch_size: int = 1000, concurrency: int = 1) -> int:
        def crawl() -> Iterator:
            for change in changes:
                time.sleep(self._delay)
                yield change

        return self._store.apply(version, crawl(), batch_size, concurrency)


def main(argv: list[str] | None = None) -> None:
    """Publish one date slowly (``--delay`` seconds per record) so that a test can SIGKILL it midway."""
    from pipeline.serving.publish import publish_snapshot

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--date", type=layout.parse_date, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--settings", required=True, help="JSON of store_settings()")
    parser.add_argument("--index-dir", required=True)
    parser.add_argument("--delay", type=float, default=0.01)
    args = parser.parse_args(argv)
    store = SlowStore(open_store(args.store, json.loads(args.settings)), args.delay)
    publish_snapshot(make_warehouse(Path(args.root)), args.date, store, args.index_dir, batch_size=5)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
