"""Incremental vs full re-ingest, and compaction memory at two catalogue sizes (issue 3).

1. An incremental day with 1% new tracks against a full re-ingest of the same catalogue, side
   by side on one loopback S3 server: time ratio (target ≤ 5%) and bytes read from the full
   snapshot's payload files (target 0: only id indexes are read).
2. Compaction peak RSS (a fresh process each) at a catalogue 10× larger (target: flat).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import luigi

from benchmarks.common import BUCKET, DATE, PREFIX, save, timer, world
from pipeline import layout
from pipeline.demo.s3server import s3_client
from pipeline.demo.seed import seed_bucket, write_metadata_dump
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse


class ReadCounter:
    """Counts bytes opened for reading per kind of warehouse file (payload parts vs indexes)."""

    def __init__(self) -> None:
        self.payload = 0
        self.index = 0
        self._orig = LocalStorage.open_read

    def __enter__(self):
        counter = self

        def open_read(storage, url):
            size = os.path.getsize(url[len("file://"):])
            if f"/{layout.ANALYSIS_FULL}/" in url and "/part-" in url:
                counter.payload += size
            elif "/_index/" in url:
                counter.index += size
            return counter._orig(storage, url)

        LocalStorage.open_read = open_read
        return self

    def __exit__(self, *exc) -> None:
        LocalStorage.open_read = self._orig


def incremental_vs_full(tracks: int, segments: int) -> dict:
    from tasks import AnalysisSet, CatalogSnapshot, IngestFullSnapshot
    from tests.helpers import luigi_config

    day1 = DATE + dt.timedelta(days=1)
    with world(tracks, segments, gzip_ratio=0.0, daily_new_ratio=0.01, takedown_ratio=0.0) as w:
        seed_bucket(s3_client(w.endpoint), BUCKET, PREFIX, w.sim, 1, since_day=0, decoys=0)
        write_metadata_dump(w.wh.layout, w.wh.storage, day1, w.sim.day(1).rows)
        settings = {"pipeline": {"start_date": layout.format_date(DATE)},
                    "source": {"concurrency": 8}}
        with luigi_config(w.overrides(warehouse={"buckets": 4}, **settings)):
            assert luigi.build([AnalysisSet(date=DATE), CatalogSnapshot(date=day1)], local_scheduler=True,
                               log_level="WARNING")
            with ReadCounter() as reads, timer() as incr:
                assert luigi.build([AnalysisSet(date=day1)], local_scheduler=True, log_level="WARNING")
            kind = "incremental" if w.wh.is_complete(layout.ANALYSIS_INCREMENTAL, day1) else "full"
            new = w.wh.manifest(layout.ANALYSIS_INCREMENTAL, day1).records
        other = Warehouse(Layout(f"file://{w.scratch}/reingest"), LocalStorage())
        w.wh.storage.move_tree(w.wh.layout.date_url(layout.CATALOG, day1), other.layout.date_url(layout.CATALOG, day1))
        reingest = {"root": other.layout.root, "buckets": 4}
        with luigi_config(w.overrides(warehouse=reingest, **settings)), timer() as full:
            assert luigi.build([IngestFullSnapshot(date=day1)], local_scheduler=True, log_level="WARNING")
    return {"tracks": tracks, "new_tracks": new, "kind": kind, "incremental_s": incr["seconds"],
            "full_reingest_s": full["seconds"], "time_ratio": incr["seconds"] / full["seconds"],
            "full_payload_bytes_read": reads.payload, "index_bytes_read": reads.index}


def compaction_rss(tracks: int, segments: int) -> dict:
    """Peak RSS of a compaction of a ``tracks``-record full + a 1% incremental + 1% new tracks."""
    script = Path(__file__).with_name("compaction_fixture.py")
    with tempfile.TemporaryDirectory(prefix="bench-compaction-") as scratch:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run([sys.executable, str(script), scratch, str(tracks), str(segments)], check=True, env=env)
        with timer() as t:
            out = subprocess.run([sys.executable, str(script), scratch, str(tracks), str(segments), "--compact"],
                                 check=True, env=env, capture_output=True, text=True).stdout
        peak_kb = json.loads(out.strip().splitlines()[-1])["peak_rss_kb"]
        wh = Warehouse(Layout(f"file://{scratch}/warehouse"), LocalStorage())
        manifest = wh.manifest(layout.ANALYSIS_FULL, DATE + dt.timedelta(days=2))
    return {"tracks": tracks, "records_out": manifest.records, "full_mb": manifest.bytes / 1e6,
            "peak_rss_mb": peak_kb / 1024, "seconds": t["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracks", type=int, default=3000)
    parser.add_argument("--segments", type=int, default=150)
    parser.add_argument("--rss-sizes", default="2000,20000")
    args = parser.parse_args()
    small, large = (int(n) for n in args.rss_sizes.split(","))
    rss = [compaction_rss(small, 100), compaction_rss(large, 100)]
    result = {"incremental": incremental_vs_full(args.tracks, args.segments), "compaction": rss,
              "rss_growth": rss[1]["peak_rss_mb"] / rss[0]["peak_rss_mb"], "catalog_growth": large / small}
    save("snapshots", result)


if __name__ == "__main__":
    main()
