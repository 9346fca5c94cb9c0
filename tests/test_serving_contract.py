"""One contract for every online store (sqlite, redis, cassandra when configured), and the publish protocol.

Redis runs as a real server on loopback; Cassandra runs only when ECHONEST_CASSANDRA_HOSTS is
set and is otherwise reported as skipped (not run), never as passed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from pipeline import layout
from pipeline.errors import IncompleteDatasetError, PipelineError
from pipeline.serving.errors import NoActiveVersionError, PublishError, ServingError, VersionNotVerifiedError
from pipeline.serving.publish import publish_snapshot
from pipeline.serving.similarity import index_path
from tests.serving_support import (
    DAY1,
    DAY2,
    DAY3,
    REPO,
    as_stored,
    attribute_records,
    make_warehouse,
    python_module,
    stored_records,
    write_snapshot,
)

pytest_plugins = ["tests.serving_support"]

V1, V2, V3 = (layout.format_date(d) for d in (DAY1, DAY2, DAY3))
RECORDS = tuple(as_stored(r) for r in attribute_records(120, 1))
IDS = [r["track_id"] for r in RECORDS]
ABSENT = "0" * 22


@pytest.fixture
def warehouse(tmp_path):
    """Three published attributes snapshots with different tracks (150 each)."""
    wh = make_warehouse(tmp_path / "warehouse")
    for seed, day in enumerate((DAY1, DAY2, DAY3), start=1):
        write_snapshot(wh, day, attribute_records(150, seed))
    return wh


def loaded(store, version=V1, records=RECORDS):
    store.load_version(version, records, batch_size=16, concurrency=4)
    assert store.verify_version(version, len(records))
    return store


# ----------------------------------------------------------------------- the store interface
def test_load_verify_activate_and_read(new_store):
    store, _ = new_store()
    assert store.active_version() is None and store.versions() == []
    assert store.load_version(V1, RECORDS, batch_size=16, concurrency=4) == len(RECORDS)
    assert store.versions() == [V1] and not store.is_verified(V1)
    with pytest.raises(NoActiveVersionError):
        store.get(IDS[0])
    assert store.verify_version(V1, len(RECORDS))
    assert store.records_of(V1) == len(RECORDS)
    store.activate(V1)
    assert store.active_version() == V1
    assert store.get(IDS[0]) == RECORDS[0]
    assert store.get(ABSENT) is None
    many = store.get_many([*IDS[:50], ABSENT, IDS[3]])
    assert many == {r["track_id"]: r for r in RECORDS[:50]}
    assert store.get_many([]) == {}


def test_wrong_count_is_not_verified_and_cannot_be_activated(new_store):
    store, _ = new_store()
    store.load_version(V1, RECORDS[:-1], batch_size=50)
    assert not store.verify_version(V1, len(RECORDS))
    assert not store.verify_version(V2, 0)  # a version never loaded
    with pytest.raises(VersionNotVerifiedError):
        store.activate(V1)
    assert store.active_version() is None


def test_reload_is_idempotent(new_store):
    store, _ = new_store()
    loaded(store)
    assert store.load_version(V1, RECORDS, batch_size=7) == len(RECORDS)
    assert not store.is_verified(V1)  # a reload must be verified again before it can be served
    assert store.verify_version(V1, len(RECORDS))
    store.activate(V1)
    store.activate(V1)
    assert store.get_many(IDS) == {r["track_id"]: r for r in RECORDS}


def test_flip_is_seen_by_another_client_and_versions_are_isolated(new_store):
    writer, _ = new_store()
    reader, _ = new_store()
    other = [as_stored(r) for r in attribute_records(40, 9)]
    loaded(writer, V1)
    writer.activate(V1)
    loaded(writer, V2, other)
    assert reader.active_version() == V1 and reader.get(other[0]["track_id"]) is None
    writer.activate(V2)
    assert reader.active_version() == V2
    assert reader.get(other[0]["track_id"]) == other[0]
    assert reader.get(IDS[0]) is None
    assert reader.get(IDS[0], V1) == RECORDS[0]


def test_drop_version(new_store):
    store, _ = new_store()
    loaded(store, V1)
    loaded(store, V2)
    store.activate(V2)
    with pytest.raises(ServingError):
        store.drop_version(V2)
    with pytest.raises(ServingError):
        store.load_version(V2, RECORDS)  # never rewrite what readers are reading
    store.drop_version(V1)
    store.drop_version(V1)  # idempotent
    assert store.versions() == [V2]
    assert store.get_many(IDS, V1) == {}
    assert not store.is_verified(V1)
    with pytest.raises(ServingError):
        store.drop_version("2026-13-01")  # not a date: never reaches a table or key name


# ----------------------------------------------------------------------- publish protocol
def test_publish_flips_keeps_one_previous_and_reruns_are_noops(new_store, warehouse, tmp_path):
    store, _ = new_store()
    index_dir = tmp_path / "index"
    first = publish_snapshot(warehouse, DAY1, store, index_dir, batch_size=32, concurrency=4)
    assert (first.loaded, first.previous, store.active_version()) == (150, None, V1)
    assert store.get_many(list(stored_records(warehouse, DAY1))) == stored_records(warehouse, DAY1)
    assert publish_snapshot(warehouse, DAY1, store, index_dir).noop
    second = publish_snapshot(warehouse, DAY2, store, index_dir)
    assert (second.previous, second.dropped, store.versions()) == (V1, [], [V1, V2])
    third = publish_snapshot(warehouse, DAY3, store, index_dir)
    assert (third.previous, third.dropped, store.versions()) == (V2, [V1], [V2, V3])
    # every track differs between the days: V2 is a daily version of them all, V3 a full load (drift)
    assert (first.mode, second.mode, second.parent, third.mode) == ("full", "daily", V1, "full")
    assert index_path(index_dir, V1).exists()  # V1's folder holds the base segment V2 still reads
    assert index_path(index_dir, V2).exists() and index_path(index_dir, V3).exists()
    store.activate(V2)  # rollback to the kept previous version is one flip
    assert store.active_version() == V2


def test_publish_of_an_incomplete_snapshot_changes_nothing(new_store, warehouse, tmp_path):
    store, _ = new_store()
    publish_snapshot(warehouse, DAY1, store, tmp_path)
    with pytest.raises(IncompleteDatasetError):
        publish_snapshot(warehouse, DAY3 + (DAY3 - DAY2), store, tmp_path)
    assert (store.active_version(), store.versions()) == (V1, [V1])


class LossyStore:
    """Injected fault: the store silently loses the last record of the load."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def apply(self, version, changes, batch_size=1000, concurrency=1):
        return self._store.apply(version, list(changes)[:-1], batch_size, concurrency)


def test_a_short_load_fails_verification_and_readers_stay(new_store, warehouse, tmp_path):
    store, _ = new_store()
    publish_snapshot(warehouse, DAY1, store, tmp_path)
    with pytest.raises(PublishError, match="different number of records"):
        publish_snapshot(warehouse, DAY2, LossyStore(store), tmp_path)
    assert store.active_version() == V1 and not store.is_verified(V2)
    rerun = publish_snapshot(warehouse, DAY2, store, tmp_path)
    assert (rerun.mode, rerun.loaded) == ("daily", 300)  # the rerun applies every change again: 150 out, 150 in
    assert store.active_version() == V2


def test_a_verified_but_unactivated_version_is_not_reloaded(new_store, warehouse, tmp_path):
    store, _ = new_store()
    records = list(stored_records(warehouse, DAY1).values())
    loaded(store, V1, records)  # as if killed after verify, before the index and the flip
    result = publish_snapshot(warehouse, DAY1, store, tmp_path)
    assert result.loaded == 0 and index_path(tmp_path, V1).exists()
    assert store.active_version() == V1


def test_a_publish_killed_midway_leaves_readers_on_the_previous_snapshot(new_store, store_kind, warehouse, tmp_path):
    store, settings = new_store()
    publish_snapshot(warehouse, DAY1, store, tmp_path)
    day1, day2 = stored_records(warehouse, DAY1), stored_records(warehouse, DAY2)
    proc = subprocess.Popen(python_module("tests.serving_support", "--root", str(tmp_path / "warehouse"),
                                          "--date", V2, "--store", store_kind, "--settings", json.dumps(settings),
                                          "--index-dir", str(tmp_path), "--delay", "0.01"),
                            cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(store.get_many(list(day2), V2) if V2 in store.versions() else {}) < 30:
        assert proc.poll() is None, f"the publisher ended before it was killed: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the publisher never started loading"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()

    partial = len(store.get_many(list(day2), V2))
    assert 30 <= partial < len(day2)
    assert store.active_version() == V1 and not store.is_verified(V2)
    assert store.get_many(list(day1)) == day1  # readers still get the complete previous snapshot
    assert store.get(next(iter(day2))) is None

    rerun = publish_snapshot(warehouse, DAY2, store, tmp_path)
    assert (rerun.mode, rerun.loaded, rerun.previous, store.active_version()) == ("daily", 300, V1, V2)
    assert store.get_many(list(day2)) == day2
    assert store.versions() == [V1, V2]


# ----------------------------------------------------------------------- setup errors (no server needed)
def test_token_ranges_cover_the_whole_ring():
    from pipeline.serving.stores.cassandra_store import token_ranges

    ranges = token_ranges(64)
    assert ranges[0][0] == -(2**63) and ranges[-1][1] == 2**63 - 1
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


@pytest.mark.parametrize("kind, settings, error", [
    ("cassandra", {"cassandra_hosts": " , ", "cassandra_keyspace": "k"}, "ConfigError"),
    ("cassandra", {"cassandra_hosts": "127.0.0.1", "cassandra_keyspace": "bad-name"}, "ConfigError"),
    ("cassandra", {"cassandra_hosts": "127.0.0.1", "cassandra_keyspace": "k", "cassandra_port": "{port}"},
     "StoreUnavailableError"),
    ("redis", {"redis_url": "redis://127.0.0.1:{port}/0"}, "StoreUnavailableError"),
    ("memcached", {}, "ConfigError"),
])
def test_bad_setup_fails_fast_with_a_specific_error(kind, settings, error):
    from pipeline.serving.redis_server import free_port
    from pipeline.serving.stores import open_store

    port = str(free_port())  # nothing listens there
    with pytest.raises(PipelineError) as info:
        open_store(kind, {k: v.replace("{port}", port) for k, v in settings.items()})
    assert type(info.value).__name__ == error
