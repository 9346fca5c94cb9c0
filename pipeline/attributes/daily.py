"""One bucket of the daily attributes snapshot: yesterday's attributes merge-joined with today's analyses.

All inputs share the bucketing and the track id order, so a bucket is one streaming pass:

- the catalog of the day decides which tracks exist (tracks that left it are dropped);
- a track with attributes from yesterday keeps its record byte for byte, unless the analysis
  set of today holds a newer analysis of it (``source_updated_at``), which is then computed;
- a track without attributes gets them computed from its analysis, if it has one.

On a full day (the first day, or after an algorithm version change) there is no previous
snapshot to keep from and every analysis in the state is computed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pipeline import layout
from pipeline.attributes.changed import changed_analyses, previous_versions
from pipeline.attributes.kept_runs import NotCopyable, Yesterday, write_day
from pipeline.attributes.maths import ALGORITHM_VERSION, compute, upgrade
from pipeline.attributes.summary import VALUE_FIELDS, BucketStats, row_of
from pipeline.formats import ATTRIBUTES
from pipeline.formats.arrays import arrays
from pipeline.formats.index_columns import read_columns
from pipeline.formats.record_index import Entry, IndexedPartsWriter
from pipeline.manifest import BucketManifest
from pipeline.snapshots.entries import RecordKind, bucket_entries
from pipeline.snapshots.merge import merge_newest
from pipeline.source.catalog import read_catalog_bucket, read_catalog_id_blocks
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)


def join_bucket(catalog_ids: Iterable[str], previous: Iterable[Entry], analyses: Iterable[dict],
                stats: BucketStats) -> Iterator[tuple[Entry | None, dict | None]]:
    """(kept prior, None) or (None, computed attributes) for every catalog track with an analysis, in id order."""
    prev_it, ana_it = iter(previous), iter(analyses)
    prev, ana = next(prev_it, None), next(ana_it, None)
    for track_id in catalog_ids:
        while prev is not None and prev.track_id < track_id:
            stats.dropped += 1
            prev = next(prev_it, None)
        while ana is not None and ana["track_id"] < track_id:
            ana = next(ana_it, None)
        have = prev if prev is not None and prev.track_id == track_id else None
        new = ana if ana is not None and ana["track_id"] == track_id else None
        if have is not None:  # consumed here: only records of tracks that left the catalog count as dropped
            prev = next(prev_it, None)
        if new is not None and (have is None or have.source_updated_at != new["source_updated_at"]):
            stats.computed += 1
            yield None, compute(arrays(new))
        elif have is not None:
            stats.kept += 1
            yield have, None
        else:
            stats.without_analysis += 1
    stats.dropped += sum(1 for _ in prev_it) + (prev is not None)


ATTRIBUTE_RECORDS = RecordKind(ATTRIBUTES, VALUE_FIELDS, row_of, upgrade)


def _previous(wh: Warehouse, date: dt.date, bucket: int) -> Iterator[Entry]:
    """Yesterday's records: through their record index (no decoding) when it can be copied, else decoded."""
    return bucket_entries(wh, layout.ATTRIBUTES, date, bucket, ATTRIBUTE_RECORDS)


@dataclass(frozen=True)
class BucketTask:
    """Everything a mapper needs to build one bucket (serialised as the job's input file)."""

    root: str
    project: str
    metadata_project: str
    date: str
    bucket: int
    previous: str | None  # date of yesterday's attributes, or None on a full day
    analysis_sets: list[list[str]]  # [[dataset, date], ...] oldest first; newest wins
    codec: str = "snappy"
    records_per_part: int = 20000
    z_threshold: float = 8.0


def build_bucket(wh: Warehouse, task: BucketTask) -> BucketManifest:
    """Write and commit one bucket of ``attributes/<date>`` in staging; returns its bucket manifest."""
    date, bucket = layout.parse_date(task.date), task.bucket
    done = wh.committed_bucket(layout.ATTRIBUTES, date, bucket)  # by another worker: never clear it
    if done is not None:
        return done
    inputs = ([wh.layout.date_url(layout.ATTRIBUTES, layout.parse_date(task.previous))] if task.previous
              else []) + [wh.layout.date_url(ds, layout.parse_date(d)) for ds, d in task.analysis_sets]
    if task.previous and wh.manifest(layout.ATTRIBUTES, layout.parse_date(task.previous)).bucket(bucket).record_index:
        try:
            return _build_in_runs(wh, task, inputs)
        except NotCopyable as why:
            log.info("attributes %s bucket %d: kept one by one (%s)", task.date, bucket, why)
    previous = _previous(wh, layout.parse_date(task.previous), bucket) if task.previous else ()
    analyses = _analyses(wh, task)
    catalog_ids = (row.track_id for row in read_catalog_bucket(wh, date, bucket))
    stats = BucketStats(z_threshold=task.z_threshold)
    return write_bucket(wh, date, bucket, join_bucket(catalog_ids, previous, analyses, stats), stats, task.codec,
                        task.records_per_part, inputs)


def _build_in_runs(wh: Warehouse, task: BucketTask, inputs: list[str]) -> BucketManifest:
    """``build_bucket`` of an ordinary day with yesterday's records copied in runs (kept_runs.py)."""
    date, previous = layout.parse_date(task.date), layout.parse_date(task.previous)
    entry = wh.manifest(layout.ATTRIBUTES, previous).bucket(task.bucket)
    parts = read_columns(wh.storage, wh.layout.file_url(layout.ATTRIBUTES, previous, entry.record_index),
                         with_values=True)
    yesterday_ = Yesterday(wh.storage, parts, lambda name: wh.layout.file_url(layout.ATTRIBUTES, previous, name))
    stats = BucketStats(z_threshold=task.z_threshold)
    catalog_ids = read_catalog_id_blocks(wh, date, task.bucket)
    try:
        return write_bucket(wh, date, task.bucket, None, stats, task.codec, task.records_per_part, inputs,
                            lambda out: write_day(yesterday_, catalog_ids, _analyses(wh, task), stats, out))
    finally:
        yesterday_.close()


def write_bucket(wh: Warehouse, date: dt.date, bucket: int, joined: Iterable[tuple[Entry | None, dict | None]] | None,
                 stats: BucketStats, codec: str, records_per_part: int, inputs: list[str],
                 fill: Callable[[IndexedPartsWriter], None] | None = None) -> BucketManifest:
    """Write kept and computed records (in id order) as one bucket of ``attributes/<date>``, commit it.

    The one way an attributes bucket is written, record index and statistics included, whoever
    computed the records (the daily job, or a generator of synthetic snapshots).
    """
    wh.clear_bucket(layout.ATTRIBUTES, date, bucket)
    with IndexedPartsWriter(wh.storage, lambda p: wh.layout.part_url(layout.ATTRIBUTES, date, bucket, p),
                            wh.layout.record_index_url(layout.ATTRIBUTES, date, bucket), ATTRIBUTES, codec,
                            records_per_part, f"{layout.ATTRIBUTES}/{layout.format_date(date)}", VALUE_FIELDS) as out:
        if fill is not None:
            fill(out)
        for prior, record in joined or ():
            if record is not None:
                row = row_of(record)
                out.write(record, row)
                stats.observe(record["track_id"], row)
            elif prior.raw is not None:  # kept: yesterday's bytes, byte for byte
                out.write_raw(prior.raw, prior.track_id, prior.source_updated_at, prior.row)
                stats.observe(prior.track_id, prior.row)
            else:
                out.write(prior.record, prior.row)
                stats.observe(prior.track_id, prior.row)
        files = out.close()
    info = BucketManifest.of_files(bucket, files, record_index=wh.layout.record_index_name(bucket) if files else None,
                                   algorithm_version=ALGORITHM_VERSION, inputs=inputs, **stats.manifest_fields())
    wh.commit_bucket(layout.ATTRIBUTES, date, info)
    return info


def _analyses(wh: Warehouse, task: BucketTask) -> Iterable[dict]:
    """The analyses to join: on a day that continues the chain, only those changed since yesterday.

    The day's one analysis set (an incremental, or on a compaction day the new full snapshot) is
    filtered through its id index, so unchanged analyses are never decoded; a full day merges
    every set of the state (newest wins).
    """
    if task.previous and len(task.analysis_sets) == 1:
        versions = previous_versions(wh, layout.parse_date(task.previous), task.bucket)
        dataset, date = task.analysis_sets[0]
        changed = changed_analyses(wh, dataset, layout.parse_date(date), task.bucket, versions) \
            if versions is not None else None
        if changed is not None:
            return changed
    return merge_newest([wh.read_bucket(ds, layout.parse_date(d), task.bucket) for ds, d in task.analysis_sets])


def yesterday(date: dt.date) -> dt.date:
    return date - dt.timedelta(days=1)
