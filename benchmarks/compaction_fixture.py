"""Build a warehouse for the compaction memory benchmark, or run the compaction and print peak RSS.

``python benchmarks/compaction_fixture.py SCRATCH TRACKS SEGMENTS [--compact]``. The full snapshot
and the incremental are written directly (one template analysis under many track ids), so the
sizes can grow without an S3 server; today's new tracks come from a local ``file://`` source.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import sys
from pathlib import Path

import luigi
import numpy as np
import orjson

from pipeline import layout
from pipeline.bucketing import bucket_of
from pipeline.demo.seed import write_metadata_dump
from pipeline.demo.synthetic import make_track_ids, synth_analysis
from pipeline.formats.analysis import to_record
from pipeline.ingest.chunk import BucketWriter, ChunkSettings, publish_analysis, write_ledger_bucket
from pipeline.warehouse import Warehouse
from tests.helpers import luigi_config

DATE = dt.date(2026, 11, 26)
BUCKETS = 4


def _write_set(wh: Warehouse, dataset: str, date: dt.date, ids: list[str], template: dict) -> None:
    settings = ChunkSettings(records_per_part=5000)
    for bucket in range(BUCKETS):
        writer = BucketWriter(wh, dataset, date, bucket, settings)
        for track_id in sorted(t for t in ids if bucket_of(t, BUCKETS) == bucket):
            writer.write({**template, "track_id": track_id, "source_key": f"{track_id}.json"})
        info = writer.close()
        write_ledger_bucket(wh, date, bucket, [], settings.codec)
        wh.commit_bucket(dataset, date, info)
    publish_analysis(wh, dataset, date, BUCKETS)


def setup(scratch: Path, tracks: int, segments: int) -> None:
    rng = np.random.default_rng(3)
    ids = make_track_ids(rng, int(tracks * 1.02))
    full, incr, new = ids[:tracks], ids[tracks:tracks + tracks // 100], ids[tracks + tracks // 100:]
    doc = synth_analysis(rng, "x" * 22, 120.0, 5, 1, 4, 200.0, segments)
    template = to_record(doc, track_id="x" * 22, source_key="x")
    wh = Warehouse.from_config()
    _write_set(wh, layout.ANALYSIS_FULL, DATE, full, template)
    _write_set(wh, layout.ANALYSIS_INCREMENTAL, DATE + dt.timedelta(days=1), incr, template)
    source = scratch / "source"
    source.mkdir(exist_ok=True)
    body = orjson.dumps(doc)
    for track_id in new:
        (source / f"{track_id}.json").write_bytes(body)
    rows = [{"track_id": t, "analysis_key": None, "analysis_updated_at": None, "title": None, "artist": None}
            for t in ids]
    write_metadata_dump(wh.layout, wh.storage, DATE + dt.timedelta(days=2), rows)
    from tasks import CatalogSnapshot  # built here, so the measured process does the compaction only

    assert luigi.build([CatalogSnapshot(date=DATE + dt.timedelta(days=2))], local_scheduler=True, log_level="WARNING")


def compact() -> None:
    from tasks import CompactFullSnapshot

    assert luigi.build([CompactFullSnapshot(date=DATE + dt.timedelta(days=2))], local_scheduler=True,
                       log_level="WARNING")
    print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    scratch, tracks, segments = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    overrides = {"warehouse": {"buckets": BUCKETS, "root": f"file://{scratch}/warehouse"},
                 "source": {"url": f"file://{scratch}/source"}, "pipeline": {"start_date": layout.format_date(DATE)}}
    with luigi_config(overrides):
        compact() if "--compact" in sys.argv else setup(scratch, tracks, segments)


if __name__ == "__main__":
    main()
