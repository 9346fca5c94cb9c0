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

import bisect
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pipeline import layout
from pipeline.attributes.maths import ALGORITHM_VERSION, compute
from pipeline.formats import ATTRIBUTES, fingerprint
from pipeline.formats.arrays import arrays
from pipeline.formats.avro_raw import RawRollingWriter, read_raw
from pipeline.ingest.chunk import committed_bucket
from pipeline.ops.quality import ATTRIBUTE_RANGES, QualityStats, attribute_values
from pipeline.snapshots.merge import merge_newest
from pipeline.source.catalog import read_catalog_bucket
from pipeline.warehouse import Warehouse

TEMPO_EDGES = list(range(40, 230, 10))  # BPM histogram bins of the manifest summary


@dataclass
class BucketStats:
    kept: int = 0
    computed: int = 0
    dropped: int = 0  # previous attributes of tracks no longer in the catalog
    without_analysis: int = 0  # catalog tracks with no analysis (yet)
    tempo: list[int] = field(default_factory=lambda: [0] * (len(TEMPO_EDGES) - 1))
    keys: list[int] = field(default_factory=lambda: [0] * 12)
    modes: list[int] = field(default_factory=lambda: [0, 0])

    def observe(self, record: dict) -> None:
        tempo = record.get("beat_tempo") or record.get("tempo")
        if tempo is not None:
            i = bisect.bisect_right(TEMPO_EDGES, tempo) - 1
            self.tempo[min(max(i, 0), len(self.tempo) - 1)] += 1
        if record.get("key") is not None:
            self.keys[record["key"]] += 1
        if record.get("mode") is not None:
            self.modes[record["mode"]] += 1

    def as_dict(self) -> dict:
        return {"counts": {"kept": self.kept, "computed": self.computed, "dropped": self.dropped,
                           "without_analysis": self.without_analysis},
                "summary": {"tempo_histogram": {"edges": TEMPO_EDGES, "counts": self.tempo},
                            "key_histogram": self.keys, "mode_counts": self.modes}}


def join_bucket(catalog_ids: Iterable[str], previous: Iterable[tuple[dict, bytes | None]],
                analyses: Iterable[dict], stats: BucketStats) -> Iterator[tuple[dict, bytes | None]]:
    """(attributes, encoded bytes if kept as they were) of every catalog track with an analysis, in id order.

    ``previous`` yields yesterday's records with their encoded bytes (None when they cannot be
    copied as is, e.g. written with another schema).
    """
    prev_it, ana_it = iter(previous), iter(analyses)
    prev, ana = next(prev_it, None), next(ana_it, None)
    for track_id in catalog_ids:
        while prev is not None and prev[0]["track_id"] < track_id:
            stats.dropped += 1
            prev = next(prev_it, None)
        while ana is not None and ana["track_id"] < track_id:
            ana = next(ana_it, None)
        have = prev if prev is not None and prev[0]["track_id"] == track_id else None
        new = ana if ana is not None and ana["track_id"] == track_id else None
        if new is not None and (have is None or have[0]["source_updated_at"] != new["source_updated_at"]):
            stats.computed += 1
            record, raw = compute(arrays(new)), None
        elif have is not None:
            stats.kept += 1
            record, raw = have
        else:
            stats.without_analysis += 1
            continue
        stats.observe(record)
        yield record, raw
    stats.dropped += sum(1 for _ in prev_it) + (prev is not None)


def _previous(wh: Warehouse, date: dt.date, bucket: int) -> Iterator[tuple[dict, bytes | None]]:
    """Yesterday's records with their bytes, copyable when written with today's exact schema."""
    current = fingerprint(ATTRIBUTES)
    for url in wh.bucket_files(layout.ATTRIBUTES, date, bucket):
        for record, raw, fp in read_raw(wh.storage, url):
            yield record, (raw if fp == current else None)


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
    records_per_part: int = 50000
    z_threshold: float = 8.0


def build_bucket(wh: Warehouse, task: BucketTask) -> dict:
    """Write and commit one bucket of ``attributes/<date>`` in staging; returns its bucket manifest."""
    date, bucket = layout.parse_date(task.date), task.bucket
    done = committed_bucket(wh, layout.ATTRIBUTES, date, bucket)  # by another worker: never clear it
    if done is not None:
        return done
    previous = _previous(wh, layout.parse_date(task.previous), bucket) if task.previous else ()
    analyses = merge_newest([wh.read_bucket(ds, layout.parse_date(d), bucket) for ds, d in task.analysis_sets])
    catalog_ids = (row.track_id for row in read_catalog_bucket(wh, date, bucket))
    stats, quality = BucketStats(), QualityStats(ATTRIBUTE_RANGES)
    wh.clear_bucket(layout.ATTRIBUTES, date, bucket)
    parts = RawRollingWriter(wh.storage, lambda p: wh.layout.part_url(layout.ATTRIBUTES, date, bucket, p), ATTRIBUTES,
                             task.codec, task.records_per_part, f"{layout.ATTRIBUTES}/{task.date}")
    try:
        for record, raw in join_bucket(catalog_ids, previous, analyses, stats):
            if raw is None:
                parts.write(record)
            else:
                parts.write_raw(raw)  # kept: yesterday's bytes, byte for byte
            quality.observe(record["track_id"], *attribute_values(record))
    except BaseException:
        parts.abort()
        raise
    files = parts.close()
    info = {"records": sum(f.records for f in files), "bytes": sum(f.bytes for f in files),
            "files": [{"name": f.name, "records": f.records, "bytes": f.bytes} for f in files],
            "algorithm_version": ALGORITHM_VERSION, **stats.as_dict(), "quality": quality.as_dict(task.z_threshold),
            "inputs": ([wh.layout.date_url(layout.ATTRIBUTES, layout.parse_date(task.previous))] if task.previous
                       else []) + [wh.layout.date_url(ds, layout.parse_date(d)) for ds, d in task.analysis_sets]}
    wh.commit_bucket(layout.ATTRIBUTES, date, bucket, info)
    return info


def combine_summaries(entries: list[dict]) -> dict:
    """Sum the per-bucket histograms into the dataset manifest's summary (read by the status view)."""
    total = {"tempo_histogram": {"edges": TEMPO_EDGES, "counts": [0] * (len(TEMPO_EDGES) - 1)},
             "key_histogram": [0] * 12, "mode_counts": [0, 0]}
    for entry in entries:
        s = entry["summary"]
        total["tempo_histogram"]["counts"] = [a + b for a, b in zip(total["tempo_histogram"]["counts"],
                                                                    s["tempo_histogram"]["counts"], strict=True)]
        total["key_histogram"] = [a + b for a, b in zip(total["key_histogram"], s["key_histogram"], strict=True)]
        total["mode_counts"] = [a + b for a, b in zip(total["mode_counts"], s["mode_counts"], strict=True)]
    return total


def yesterday(date: dt.date) -> dt.date:
    return date - dt.timedelta(days=1)
