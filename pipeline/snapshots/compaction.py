"""Compaction: a new full snapshot from the previous full, the incrementals after it and today's delta.

Per bucket, one streaming k-way merge over sorted inputs — memory is one record per input,
whatever the size of the catalog. Records are copied by their bytes through the inputs' record
indexes (``entries.py``): a compaction costs decompressing and compressing, not decoding.
The newest version of a track wins; tracks that left the catalog (takedowns) are dropped here,
so they stay recoverable in the older sets until retention removes those. Today's delta (new
tracks and due retries) is fetched first into a local temporary file, so the compaction day
also holds the day's new analyses and no incremental is needed for it.
"""

from __future__ import annotations

import datetime as dt
import tempfile

from pipeline import layout
from pipeline.errors import QualityGateError
from pipeline.formats import ANALYSIS
from pipeline.formats.avro_io import RollingWriter
from pipeline.ingest.chunk import BucketWriter, ChunkSettings, fetch, write_ledger_bucket
from pipeline.manifest import BucketManifest, MergeReport
from pipeline.snapshots.entries import ENTRY_ID, bucket_entries, decoded_entries
from pipeline.snapshots.incremental import DeltaPlan, delta_inputs, plan_delta
from pipeline.snapshots.merge import MergeStats, keep_ids, merge_newest
from pipeline.snapshots.retry import RetryPolicy
from pipeline.snapshots.schedule import state_as_of
from pipeline.source.base import Source
from pipeline.source.catalog import read_catalog_bucket
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse


def _fetch_delta(wh: Warehouse, source: Source, date: dt.date, bucket: int, settings: ChunkSettings,
                 policy: RetryPolicy, key_template: str, scratch: str, progress) -> tuple[list[str], dict, list]:
    """Fetch today's delta into local scratch files; returns (their URLs, details, ledger rows)."""
    state_ids, ledger, _ = delta_inputs(wh, date, bucket)
    plan = DeltaPlan()
    items = plan_delta(read_catalog_bucket(wh, date, bucket), state_ids, ledger, date, policy, key_template, plan)
    local = LocalStorage()
    where = f"compaction {layout.format_date(date)} bucket {bucket}"
    with RollingWriter(local, lambda p: f"file://{scratch}/delta-{p:04d}.avro", ANALYSIS, "null", 1 << 30) as delta:
        counts, problems = fetch(source, items, settings, date, where, delta.write, progress)
        urls = [f"file://{scratch}/{f.name}" for f in delta.close()]
    ledger_rows = sorted(plan.carried + problems, key=lambda e: e["track_id"])
    details = {**plan.as_dict(), "counts": counts.as_dict(), "requests": source.stats.as_dict(),
               "seconds": round(counts.seconds, 3)}
    return urls, details, ledger_rows


def compact_bucket(wh: Warehouse, source: Source, date: dt.date, bucket: int, settings: ChunkSettings,
                   policy: RetryPolicy, key_template: str, progress=None) -> BucketManifest:
    """Build and commit one bucket of the full snapshot of ``date`` by compaction."""
    done = wh.committed_bucket(layout.ANALYSIS_FULL, date, bucket)  # by another worker: never redo it
    if done is not None:
        return done
    state = state_as_of(wh, date - dt.timedelta(days=1))
    with tempfile.TemporaryDirectory(prefix="compaction-") as scratch:
        delta_urls, details, ledger_rows = _fetch_delta(wh, source, date, bucket, settings, policy, key_template,
                                                        scratch, progress)
        local = LocalStorage()
        streams = [bucket_entries(wh, dataset, day, bucket) for dataset, day in state.sets()]
        streams.append(entry for url in delta_urls for entry in decoded_entries(local, url))
        stats = MergeStats()
        catalog_ids = (row.track_id for row in read_catalog_bucket(wh, date, bucket))
        merged = keep_ids(merge_newest(streams, stats, ENTRY_ID), catalog_ids, stats, ENTRY_ID)
        if (done := wh.committed_bucket(layout.ANALYSIS_FULL, date, bucket)) is not None:
            return done  # committed by another worker while this one fetched the delta
        with BucketWriter(wh, layout.ANALYSIS_FULL, date, bucket, settings) as writer:
            for entry in merged:  # copied by their bytes; sets of an older analysis format upgraded
                writer.write_entry(entry)
            written = writer.close()
    if written.records != stats.inputs - stats.replaced - stats.dropped:
        raise QualityGateError(f"compaction {date} bucket {bucket}: wrote {written.records} records from "
                               f"{stats.inputs} inputs - {stats.replaced} replaced - {stats.dropped} dropped")
    wh.clear_bucket(layout.LEDGER, date, bucket)
    ledger_records = write_ledger_bucket(wh, date, bucket, ledger_rows, settings.codec)
    inputs = [wh.layout.date_url(dataset, day) for dataset, day in state.sets()]
    info = written.with_details(**details, ledger_records=ledger_records, inputs=inputs,
                                merge=MergeReport(stats.inputs, stats.replaced, stats.dropped, verified=True))
    wh.commit_bucket(layout.ANALYSIS_FULL, date, info)
    return info
