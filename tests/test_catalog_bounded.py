"""The catalog build is an external sort: bounded open files whatever the bucket count, bounded memory
whatever the dump's size (sorted runs spilled and merged), same catalog as an in-memory sort."""

from __future__ import annotations

import datetime as dt
import resource
import subprocess

from pipeline import layout
from pipeline.bucketing import bucket_of
from pipeline.demo.seed import write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.layout import Layout
from pipeline.source.catalog import SortSettings, build_catalog
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tests.helpers import luigi_cli, subprocess_env, write_cfg

DATE = dt.date(2026, 11, 26)


def _dump(root, rows) -> Warehouse:
    wh = Warehouse(Layout(f"file://{root}"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, DATE, rows, rows_per_part=700)
    return wh


def _rows(n: int) -> list[dict]:
    rows = CatalogSimulation(seed=9, start_date=DATE, initial_tracks=n).day(0).rows
    # duplicates far apart in the dump (so in different sorted runs): the newest analysis must win
    dupes = [{**r, "analysis_updated_at": (r["analysis_updated_at"] or 0) + 5, "analysis_key": "newer.json"}
             for r in rows[::50]]
    stale = [{**r, "analysis_updated_at": 1, "analysis_key": "stale.json"} for r in rows[1::50]]
    return dupes + rows[: n // 2] + stale + rows[n // 2:]


def _catalog(wh: Warehouse, buckets: int) -> dict[int, list[tuple]]:
    return {b: [(r["track_id"], r["analysis_key"], r["analysis_updated_at"])
                for r in wh.read_bucket(layout.CATALOG, DATE, b)] for b in range(buckets)}


def _set_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_2000_buckets_under_ulimit_256(tmp_path):
    rows = _rows(3000)
    wh = _dump(tmp_path / "warehouse", rows)
    cfg = write_cfg(tmp_path / "luigi.cfg", {"warehouse": {"root": wh.layout.root, "buckets": 2000},
                                             "catalog": {"sort_memory_mb": 0.1, "max_open_runs": 4}})
    done = subprocess.run(luigi_cli("CatalogSnapshot", "--date", "2026-11-26", cfg=cfg), env=subprocess_env(cfg),
                          preexec_fn=_set_nofile, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert wh.is_complete(layout.CATALOG, DATE)
    catalog = _catalog(wh, 2000)
    ids = [row[0] for b in range(2000) for row in catalog[b]]
    assert len(ids) == len(set(ids)) == len({r["track_id"] for r in rows})
    for b, bucket_rows in catalog.items():
        assert [r[0] for r in bucket_rows] == sorted(r[0] for r in bucket_rows)
        assert all(bucket_of(r[0], 2000) == b for r in bucket_rows)
    assert wh.manifest(layout.CATALOG, DATE).rejected["duplicate_id"] == 120


def test_spilled_runs_give_the_catalog_of_an_in_memory_sort(tmp_path):
    rows = _rows(2000)
    spilled, in_memory = _dump(tmp_path / "a", rows), _dump(tmp_path / "b", rows)
    build_catalog(spilled, DATE, 7, SortSettings(memory_mb=0.05, max_open_runs=2))  # ~10 runs, several merge passes
    build_catalog(in_memory, DATE, 7)
    assert _catalog(spilled, 7) == _catalog(in_memory, 7)
    newest = {}
    for r in rows:
        if r["track_id"] not in newest or (r["analysis_updated_at"] or -1) > (newest[r["track_id"]][1] or -1):
            newest[r["track_id"]] = (r["analysis_key"], r["analysis_updated_at"])
    got = {t: (k, u) for b in range(7) for t, k, u in _catalog(spilled, 7)[b]}
    assert got == newest
    for b in range(7):  # byte for byte: the spill changes nothing in the files
        a, c = (wh.bucket_files(layout.CATALOG, DATE, b) for wh in (spilled, in_memory))
        assert [open(u[7:], "rb").read() for u in a] == [open(u[7:], "rb").read() for u in c]
