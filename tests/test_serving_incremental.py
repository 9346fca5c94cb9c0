"""Daily publishes write only what changed: apply, verify, flip, roll back, kill and resume, readers under load.

The warehouse holds three days of one catalogue (like the daily attributes job makes them):
each day drops some tracks, re-analyses some (new ``source_updated_at``, new values) and adds
some. SQLite and Redis run for real; Cassandra only with ECHONEST_CASSANDRA_HOSTS (else skipped).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import httpx
import pytest

from pipeline import layout
from pipeline.serving.publish import publish_snapshot
from pipeline.serving.similarity import SimilarityIndex, index_path
from tests.serving_support import (
    DAY1,
    DAY2,
    DAY3,
    REPO,
    attribute_records,
    make_warehouse,
    python_module,
    running_api,
    stored_records,
    write_snapshot,
)

pytest_plugins = ["tests.serving_support"]

V1, V2, V3 = (layout.format_date(d) for d in (DAY1, DAY2, DAY3))
DROP, CHANGE, ADD = 10, 15, 12


def next_day(records: list[dict], fresh: list[dict], spare: list[dict]) -> tuple[list[dict], dict]:
    """Drop the first DROP tracks, re-analyse the next CHANGE ones (another track's values), add ``fresh``."""
    kept = records[DROP:]
    changed = [dict(spare[i], track_id=r["track_id"], source_updated_at=(r["source_updated_at"] or 0) + 86400)
               for i, r in enumerate(kept[:CHANGE])]
    day = changed + kept[CHANGE:] + fresh
    return day, {"dropped": {r["track_id"] for r in records[:DROP]}, "changed": {r["track_id"] for r in changed},
                 "added": {r["track_id"] for r in fresh}}


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """(warehouse, {date: what changed that day}) of three days of one catalogue of ~200 tracks."""
    wh = make_warehouse(tmp_path_factory.mktemp("incremental") / "warehouse")
    pool = list(attribute_records(200 + 2 * ADD + 2 * CHANGE, 7))
    day1 = pool[:200]
    day2, diff2 = next_day(day1, pool[200:200 + ADD], pool[-CHANGE:])
    day3, diff3 = next_day(sorted(day2, key=lambda r: r["track_id"]), pool[200 + ADD:200 + 2 * ADD],
                           pool[-2 * CHANGE:-CHANGE])
    for day, records in ((DAY1, day1), (DAY2, day2), (DAY3, day3)):
        write_snapshot(wh, day, records)
    return wh, {DAY2: diff2, DAY3: diff3}


def test_a_daily_publish_writes_only_the_changes_and_rolls_back_in_one_step(new_store, days, tmp_path):
    wh, diffs = days
    store, _ = new_store()
    first = publish_snapshot(wh, DAY1, store, tmp_path)
    second = publish_snapshot(wh, DAY2, store, tmp_path)
    assert (first.mode, second.mode, second.parent) == ("full", "daily", V1)
    assert second.loaded == DROP + CHANGE + ADD  # rows written: the changes, not the catalogue
    day1, day2 = stored_records(wh, DAY1), stored_records(wh, DAY2)
    assert store.records_of(V2) == len(day2)
    everyone = list(day1.keys() | day2.keys())
    assert store.get_many(everyone) == day2
    assert store.get_many(everyone, V1) == day1  # the previous version is intact beside it
    store.activate(V1)  # rollback: one pointer write
    assert store.get_many(everyone) == day1
    store.activate(V2)
    third = publish_snapshot(wh, DAY3, store, tmp_path)
    assert (third.mode, third.parent, third.dropped, store.versions()) == ("daily", V2, [V1], [V2, V3])
    assert store.get_many(everyone + list(diffs[DAY3]["added"])) == stored_records(wh, DAY3)
    assert store.base_of(V3) == V1 and index_path(tmp_path, V1).exists()  # V3's index reads V1's base segment


def test_the_daily_index_serves_changed_added_and_dropped_tracks(new_store, days, tmp_path):
    wh, diffs = days
    store, _ = new_store()
    publish_snapshot(wh, DAY1, store, tmp_path)
    publish_snapshot(wh, DAY2, store, tmp_path)
    index = SimilarityIndex.open(index_path(tmp_path, V2))
    assert index.delta is not None and index.delta.n == CHANGE + ADD
    assert len(index.dead) == DROP + CHANGE
    day2 = stored_records(wh, DAY2)
    for track_id in day2:
        neighbours = index.similar(track_id, 10)
        assert len(neighbours) == 10 and all(n.track_id in day2 and n.track_id != track_id for n in neighbours)
    for track_id in diffs[DAY2]["changed"]:
        seg, row = index.locate(track_id)
        assert seg is index.delta and seg.tempo[row] == pytest.approx(day2[track_id]["tempo"])
    assert all(index.locate(t) is None for t in diffs[DAY2]["dropped"])


def test_a_full_load_on_demand_collects_what_no_kept_version_reads(new_store, days, tmp_path):
    wh, diffs = days
    store, _ = new_store()
    publish_snapshot(wh, DAY1, store, tmp_path)
    publish_snapshot(wh, DAY2, store, tmp_path)
    third = publish_snapshot(wh, DAY3, store, tmp_path, full=True)
    assert (third.mode, store.base_of(V3), third.loaded) == ("full", V3, len(stored_records(wh, DAY3)))
    assert store.get_many(list(diffs[DAY2]["dropped"]), V2) == {}
    assert store.get_many(list(stored_records(wh, DAY3))) == stored_records(wh, DAY3)
    assert store.get_many(list(stored_records(wh, DAY2)), V2) == stored_records(wh, DAY2)  # rollback still whole
    # tracks dropped on day 2 are in no kept version (V2, V3): their rows were collected
    assert store._read_rows(sorted(diffs[DAY2]["dropped"])) == {}


def test_drift_past_the_threshold_makes_a_full_load(new_store, days, tmp_path):
    wh, _ = days
    store, _ = new_store()
    publish_snapshot(wh, DAY1, store, tmp_path)
    assert publish_snapshot(wh, DAY2, store, tmp_path, full_threshold=0.5).mode == "daily"
    assert publish_snapshot(wh, DAY3, store, tmp_path, full_threshold=0.1).mode == "full"  # 37 differ: > 10%


def test_a_daily_publish_killed_midway_resumes(new_store, store_kind, days, tmp_path):
    wh, diffs = days
    store, settings = new_store()
    publish_snapshot(wh, DAY1, store, tmp_path)
    day1, day2 = stored_records(wh, DAY1), stored_records(wh, DAY2)
    watch = sorted(diffs[DAY2]["changed"] | diffs[DAY2]["added"])
    proc = subprocess.Popen(python_module("tests.serving_support", "--root", wh.layout.root.removeprefix("file://"),
                                          "--date", V2, "--store", store_kind, "--settings", json.dumps(settings),
                                          "--index-dir", str(tmp_path), "--delay", "0.05"),
                            cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(store.get_many(watch, V2) if V2 in store.versions() else {}) < 5:
        assert proc.poll() is None, f"the publisher ended before it was killed: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the publisher never started loading"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert 5 <= len(store.get_many(watch, V2)) < len(watch)  # killed midway through the changes
    assert store.active_version() == V1 and not store.is_verified(V2)
    assert store.get_many(list(day1 | day2)) == day1  # readers still get exactly the previous snapshot
    rerun = publish_snapshot(wh, DAY2, store, tmp_path)
    assert (rerun.mode, rerun.loaded, store.active_version()) == ("daily", DROP + CHANGE + ADD, V2)
    assert store.get_many(list(day1 | day2)) == day2


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_readers_under_load_during_daily_publishes_see_one_whole_snapshot(kind, days, tmp_path, request):
    """HTTP clients read batches of every id of all three days while two daily publishes flip under them."""
    from tests.serving_support import open_store, store_settings

    wh, _ = days
    expected = {layout.format_date(d): stored_records(wh, d) for d in (DAY1, DAY2, DAY3)}
    everyone = sorted(set().union(*expected.values()))
    url = request.getfixturevalue("redis_url") if kind == "redis" else None
    settings = store_settings(kind, tmp_path, url)
    problems: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def reader(base: str, offset: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            i = offset
            while not stop.is_set():
                ids = [everyone[(i + j * 7) % len(everyone)] for j in range(40)]
                i += 13
                body = client.get("/tracks", params={"ids": ",".join(ids)})
                if body.status_code != 200:
                    problems.append(f"batch: HTTP {body.status_code}")
                    continue
                answer = body.json()
                want = expected[answer["snapshot"]]
                seen.add(answer["snapshot"])
                if answer["tracks"] != {t: want[t] for t in ids if t in want} or \
                        set(answer["missing"]) != {t for t in ids if t not in want}:
                    problems.append(f"batch mixes snapshots or misses a record (answered {answer['snapshot']})")
                similar = client.get(f"/tracks/{ids[0]}/similar", params={"k": 5})
                if similar.status_code == 200:
                    got = similar.json()
                    if not all(n["track_id"] in expected[got["snapshot"]] for n in got["similar"]):
                        problems.append(f"similar answered a track not in {got['snapshot']}")
                elif similar.status_code != 404 or ids[0] in expected[similar.json().get("snapshot", V1)]:
                    if similar.status_code != 404:
                        problems.append(f"similar: HTTP {similar.status_code}")

    with open_store(kind, settings) as store:
        publish_snapshot(wh, DAY1, store, tmp_path / "index")
        with running_api(kind, settings, tmp_path / "index", tmp_path / "api.log") as base:
            threads = [threading.Thread(target=reader, args=(base, k * 31)) for k in range(3)]
            for t in threads:
                t.start()
            try:
                time.sleep(0.5)
                assert publish_snapshot(wh, DAY2, store, tmp_path / "index").mode == "daily"
                time.sleep(0.5)
                assert publish_snapshot(wh, DAY3, store, tmp_path / "index").mode == "daily"
                time.sleep(0.5)
            finally:
                stop.set()
                for t in threads:
                    t.join()
    assert not problems, problems[:5]
    assert {V1, V3} <= seen


def test_the_documented_publish_commands(days, tmp_path):
    """``python -m pipeline.serving.publish --date D [--full]`` and ``--activate V`` exactly as docs/serving.md."""
    from tests.helpers import subprocess_env, write_cfg
    from tests.serving_support import open_store

    wh, _ = days
    settings = {"sqlite_path": str(tmp_path / "serving.sqlite")}
    cfg = write_cfg(tmp_path / "luigi.cfg", {"warehouse": {"root": wh.layout.root},
                                              "serving": {"store": "sqlite", **settings,
                                                          "index_dir": str(tmp_path / "index")}})

    def run(*args: str) -> str:
        done = subprocess.run(python_module("pipeline.serving.publish", *args), cwd=REPO, env=subprocess_env(cfg),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "mode='full'" in run("--date", V1)
    out = run("--date", V2)
    assert "mode='daily'" in out and f"parent='{V1}'" in out and "loaded=37" in out
    assert "noop=True" in run("--date", V2)
    assert "mode='full'" in run("--date", V3, "--full")
    assert f"active version is now {V2}" in run("--activate", V2)
    with open_store("sqlite", settings) as store:
        assert store.active_version() == V2 and store.base_of(V3) == V3
        assert store.get_many(list(stored_records(wh, DAY2))) == stored_records(wh, DAY2)


def test_the_streamed_daily_index_does_not_depend_on_chunk_or_block_sizes(days, tmp_path, monkeypatch):
    """Day 3 builds on day 2's delta: merged in chunks of 3 changes and 5-row reads, the index is the same."""
    import numpy as np

    from pipeline.serving import changes, daily_delta
    from tests.serving_support import open_store, store_settings

    wh, _ = days
    built = {}
    for label, chunk, block in (("default", changes.CHUNK, daily_delta.BLOCK), ("tiny", 3, 5)):
        monkeypatch.setattr(changes, "CHUNK", chunk)
        monkeypatch.setattr(daily_delta, "BLOCK", block)
        (tmp_path / label).mkdir()
        with open_store("sqlite", store_settings("sqlite", tmp_path / label)) as store:
            for day in (DAY1, DAY2, DAY3):
                assert publish_snapshot(wh, day, store, tmp_path / label).mode == ("full" if day == DAY1 else "daily")
        index = SimilarityIndex.open(index_path(tmp_path / label, V3))
        assert index.delta is not None
        built[label] = (index.meta["drift"], index.dead.tolist(), index.delta.bucket_offsets.tolist(),
                        np.fromfile(index.directory / "delta.rows", "u1").tobytes())
    assert built["tiny"] == built["default"]
    drift, dead, _, _ = built["default"]
    assert DROP + CHANGE < len(dead) <= 2 * (DROP + CHANGE)  # the base rows both days dropped or changed
    assert drift >= len(dead)
