"""The ingest of one chunk as slices: what each map task of MRIngestChunk does, and the chunk's commit.

A chunk (one bucket) is split into slices of its id range, in order. A map task fetches the
catalog rows of its slice and writes them as the bucket's part files numbered from
``slice × PART_STRIDE``, so the bucket's files in name order are its records in id order.
Next to them, under ``_slices/<bucket>-<slice>/``, it writes the slice's id index, ledger
rows, quality features and — last, its commit — ``slice.json``.

The chunk commits (``commit_slices``) only when every slice has: it concatenates the id
indexes and ledgers, applies ``[ingest] failure_ratio`` to the whole chunk (as the
in-process ingest does), combines the quality statistics and writes the bucket manifest.
"""

from __future__ import annotations

import datetime as dt
import heapq
import io
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline import layout
from pipeline.errors import IncompleteDatasetError
from pipeline.formats import ANALYSIS, IDS, LEDGER, RECORD_INDEX
from pipeline.formats.avro_io import FileInfo, LazyWriter, open_writer, read_records, write_file, write_nonempty
from pipeline.formats.record_index import IndexedPartsWriter
from pipeline.ingest.chunk import ChunkSettings, check_failures, fetch, write_ledger_bucket
from pipeline.ingest.engine import Counts, WorkItem
from pipeline.ingest.work import full_items
from pipeline.manifest import BucketManifest, FileEntry
from pipeline.ops.quality import ANALYSIS_RANGES, ANALYSIS_VALUE_FIELDS, QualityStats, analysis_row, analysis_values
from pipeline.source import source_from_settings
from pipeline.source.catalog import CatalogRow, read_catalog_bucket
from pipeline.warehouse import Warehouse

PART_STRIDE = 1000  # part numbers per slice: slice s writes part-<bucket>-<s*1000 + p>
MAX_SLICES = 10  # 10 × 1000 parts: part numbers stay within the layout's four digits
PROGRESS_EVERY = 2.0  # seconds between a slice's progress files


@dataclass(frozen=True)
class SliceTask:
    """Everything a map task needs for one slice (one input line of the job); plain JSON values."""

    root: str
    project: str
    metadata_project: str
    dataset: str
    date: str
    bucket: int
    slice: int
    low: str | None  # first track id of the slice (None: from the start of the bucket)
    high: str | None  # first track id of the next slice (None: to the end of the bucket)
    source: dict  # pipeline.source.source_settings()
    key_template: str
    settings: dict = field(default_factory=dict)  # ChunkSettings fields, quality excluded
    kind: str = "full"  # "full": every catalog track of the slice; "incremental": the day's delta of it
    retry: dict = field(default_factory=dict)  # RetryPolicy fields (incremental)


def slice_bounds(track_ids: Iterable[str], total: int, slices: int) -> list[tuple[str | None, str | None]]:
    """``slices`` consecutive id ranges with about ``total / slices`` catalog rows each (fewer for a small bucket)."""
    slices = max(1, min(slices, total))
    starts = {i * total // slices: i for i in range(1, slices)}
    lows: list[str | None] = [None]
    for position, track_id in enumerate(track_ids):
        if position in starts:
            lows.append(track_id)
    return list(zip(lows, [*lows[1:], None], strict=True))


def in_range(rows: Iterable, low: str | None, high: str | None, key=lambda r: r.track_id) -> Iterator:
    """The rows (sorted by id) with ``low <= key(row) < high``."""
    rows = itertools.dropwhile(lambda r: low is not None and key(r) < low, rows)
    return itertools.takewhile(lambda r: high is None or key(r) < high, rows)


def slice_rows(wh: Warehouse, task: SliceTask) -> Iterator[CatalogRow]:
    """The catalog rows of the slice (one streaming pass over its bucket, stopping at the slice's end)."""
    return in_range(read_catalog_bucket(wh, layout.parse_date(task.date), task.bucket), task.low, task.high)


def _settings(task: SliceTask) -> ChunkSettings:
    # the chunk, not the slice, is held to [ingest] failure_ratio: a slice never fails on the ratio; a slice is
    # already the engine's unit of parallelism (one map task each), so it converts in its own threads
    return ChunkSettings(**{**task.settings, "failure_ratio": 1.0, "processes": 1})


def clear_slice(wh: Warehouse, task: SliceTask) -> None:
    """Remove what an earlier attempt of this slice left (a retried or speculative map task)."""
    date = layout.parse_date(task.date)
    staging = wh.layout.date_url(task.dataset, date, staging=True)
    first, last = task.slice * PART_STRIDE, (task.slice + 1) * PART_STRIDE
    for name in wh.storage.list_names(staging):
        match = layout.PART_RE.match(name)
        if match and int(match.group(1)) == task.bucket and first <= int(match.group(2)) < last:
            wh.storage.remove(wh.layout.file_url(task.dataset, date, name, staging=True))
    wh.storage.remove(wh.layout.slice_url(task.dataset, date, task.bucket, task.slice))


def ingest_slice(wh: Warehouse, task: SliceTask, items: Iterable[WorkItem] | None = None, source=None,
                 carried: list[dict] | None = None, details: Callable[[], dict] | None = None) -> dict:
    """Fetch and write one slice; returns (and commits as ``slice.json``) its manifest.

    ``items`` default to every catalog track of the slice; ``carried`` ledger rows (filled while
    the items are consumed) join the slice's ledger, and ``details`` its manifest.
    """
    date, settings = layout.parse_date(task.date), _settings(task)
    source = source or source_from_settings(task.source)
    clear_slice(wh, task)
    if items is None:
        items = full_items(slice_rows(wh, task), task.key_template)

    def part_url(p: int) -> str:
        if p >= PART_STRIDE:
            raise IncompleteDatasetError(f"slice {task.slice} of bucket {task.bucket} needs more than {PART_STRIDE} "
                                         "parts: raise [ingest] records_per_part or slices")
        return wh.layout.part_url(task.dataset, date, task.bucket, task.slice * PART_STRIDE + p)

    def url(name: str) -> str:
        return wh.layout.slice_url(task.dataset, date, task.bucket, task.slice, name)

    identity = f"{task.dataset}/{task.date}"
    parts = IndexedPartsWriter(wh.storage, part_url, url("record_index.avro"), ANALYSIS, settings.codec,
                               settings.records_per_part, identity, ANALYSIS_VALUE_FIELDS)
    quality = QualityStats(ANALYSIS_RANGES)
    last_progress = [0.0]

    def progress(counts: Counts) -> None:
        now = time.monotonic()
        if now - last_progress[0] >= PROGRESS_EVERY:
            last_progress[0] = now
            wh.write_json(url("progress.json"), counts.as_dict())

    where = f"{task.dataset} {task.date} bucket {task.bucket} slice {task.slice}"
    with open_writer(wh.storage, url("ids.avro"), IDS, settings.codec, f"{identity}/{task.bucket}/{task.slice}") as ids:
        def on_record(record: dict) -> None:
            parts.write(record, analysis_row(record))
            ids({"track_id": record["track_id"], "source_updated_at": record["source_updated_at"]})
            quality.observe(record["track_id"], *analysis_values(record))

        try:
            counts, problems = fetch(source, items, settings, date, where, on_record, progress)
        except BaseException:
            parts.abort()
            raise
        files = parts.close()
    ledger = heapq.merge(carried or [], problems, key=lambda e: e["track_id"])
    write_file(wh.storage, url("ledger.avro"), LEDGER, ledger, settings.codec,
               identity=f"{identity}/ledger/{task.bucket}/{task.slice}")
    buffer = io.BytesIO()
    np.save(buffer, quality.features())
    wh.storage.write_bytes(url("features.npy"), buffer.getvalue())
    info = {"slice": task.slice, "records": sum(f.records for f in files), "bytes": sum(f.bytes for f in files),
            "files": [{"name": f.name, "records": f.records, "bytes": f.bytes} for f in files],
            "counts": counts.as_dict(), "by_reason": dict(counts.by_reason),
            "ledger_records": len(problems) + len(carried or []),
            "seconds": round(counts.seconds, 3), "requests": source.stats.as_dict(),
            "quality": {"checked": quality.checked, "out_of_range": quality.out_of_range,
                        "examples": quality.examples}, **(details() if details else {})}
    wh.write_json(url("slice.json"), info)
    return info


def slice_progress(wh: Warehouse, dataset: str, date: dt.date, bucket: int, slices: int) -> Counts:
    """The chunk's counts so far, from its slices' progress (or final) files."""
    total = Counts()
    for s in range(slices):
        for name in ("slice.json", "progress.json"):
            target = wh.layout.slice_url(dataset, date, bucket, s, name)
            if wh.storage.exists(target):
                try:
                    payload = wh.read_json(target)
                except IncompleteDatasetError:  # replaced while being read: the next poll sees it
                    continue
                for key, value in payload.get("counts", payload).items():
                    setattr(total, key, getattr(total, key) + value)
                break
    return total


def commit_slices(wh: Warehouse, dataset: str, date: dt.date, bucket: int, slices: int, settings: ChunkSettings,
                  inputs: list[str] | None = None) -> BucketManifest:
    """Commit the chunk from its slices (all must have committed); returns the bucket manifest."""
    where = f"{dataset} {layout.format_date(date)} bucket {bucket}"
    done = []
    for s in range(slices):
        target = wh.layout.slice_url(dataset, date, bucket, s, "slice.json")
        if not wh.storage.exists(target):
            raise IncompleteDatasetError(f"{where}: slice {s} of {slices} did not commit; rerun the chunk")
        done.append(wh.read_json(target))
    counts = Counts()
    for info in done:
        for key, value in info["counts"].items():
            setattr(counts, key, getattr(counts, key) + value)
        counts.by_reason.update(info["by_reason"])
        counts.seconds = max(counts.seconds, info["seconds"])
        counts.bytes += info["requests"]["bytes"]
    try:
        check_failures(counts, settings.failure_ratio, where)
    except BaseException:
        wh.clear_bucket(dataset, date, bucket)  # like the in-process chunk: nothing of it stays
        raise

    def slice_records(name: str) -> Iterator[dict]:
        for s in range(slices):
            yield from read_records(wh.storage, wh.layout.slice_url(dataset, date, bucket, s, name))

    index_writer = LazyWriter(wh.storage, wh.layout.index_url(dataset, date, bucket), IDS, settings.codec,
                              identity=f"{dataset}/{layout.format_date(date)}/{wh.layout.index_name(bucket)}")
    try:  # like the in-process chunk: an empty bucket has no id index file
        for record in slice_records("ids.avro"):
            index_writer(record)
    except BaseException:
        index_writer.abort()
        raise
    index = index_writer.close()
    record_index = _concat_record_indexes(wh, dataset, date, bucket, slices, settings.codec)
    ledger_records = write_ledger_bucket(wh, date, bucket, slice_records("ledger.avro"), settings.codec)
    quality = QualityStats(ANALYSIS_RANGES, checked=sum(i["quality"]["checked"] for i in done),
                           examples=[e for i in done for e in i["quality"]["examples"]][:10])
    for info in done:
        for name, n in info["quality"]["out_of_range"].items():
            quality.out_of_range[name] = quality.out_of_range.get(name, 0) + n
        with wh.storage.open_read(wh.layout.slice_url(dataset, date, bucket, info["slice"], "features.npy")) as f:
            quality.add_features(np.load(io.BytesIO(f.read())))
    requests: dict = {}
    for info in done:
        for key, value in info["requests"].items():
            requests[key] = requests.get(key, 0) + value
    files = [FileEntry(f["name"], f["records"], f["bytes"]) for info in done for f in info["files"]]
    delta: dict = {}
    for info in done:
        for key, value in info.get("delta", {}).items():
            delta[key] = delta.get(key, 0) + value
    manifest = BucketManifest.of_files(
        bucket, files, index=wh.layout.index_name(bucket) if index else None,
        record_index=wh.layout.record_index_name(bucket) if record_index else None,
        quality=quality.report(settings.quality.z_threshold),
        counts=counts.as_dict(), ledger_records=ledger_records, requests=requests, seconds=round(counts.seconds, 3),
        inputs=inputs or [], delta=delta or None, extra={"slices": slices})
    if (index.records if index else 0) != manifest.records:
        raise IncompleteDatasetError(f"{where}: the id index has {index.records if index else 0} of "
                                     f"{manifest.records} ids")
    wh.commit_bucket(dataset, date, manifest)
    for s in range(slices):
        wh.storage.remove(wh.layout.slice_url(dataset, date, bucket, s))
    return manifest


def _concat_record_indexes(wh: Warehouse, dataset: str, date: dt.date, bucket: int, slices: int, codec: str
                           ) -> FileInfo | None:
    """The bucket's record index: its slices' indexes one after the other (one entry per part file)."""
    urls = [wh.layout.slice_url(dataset, date, bucket, s, "record_index.avro") for s in range(slices)]
    entries = (entry for url in urls if wh.storage.exists(url)  # a slice without records has none
               for entry in read_records(wh.storage, url))
    return write_nonempty(wh.storage, wh.layout.record_index_url(dataset, date, bucket), RECORD_INDEX, entries, codec,
                          identity=f"{dataset}/{layout.format_date(date)}/{wh.layout.record_index_name(bucket)}")


def slice_tasks(wh: Warehouse, dataset: str, date: dt.date, bucket: int, slices: int, source: dict,
                key_template: str, settings: ChunkSettings, kind: str = "full", retry: dict | None = None
                ) -> list[SliceTask]:
    """The slices of a chunk, from one pass over its catalog bucket's ids."""
    manifest = wh.manifest(layout.CATALOG, date)
    total = manifest.bucket(bucket).records
    ids = (row.track_id for row in read_catalog_bucket(wh, date, bucket, manifest))
    plain = {k: v for k, v in asdict(settings).items() if k != "quality"}
    lay = wh.layout
    return [SliceTask(lay.root, lay.project, lay.metadata_project, dataset, layout.format_date(date), bucket, s,
                      low, high, source, key_template, plain, kind, retry or {})
            for s, (low, high) in enumerate(slice_bounds(ids, total, min(slices, MAX_SLICES)))]

