"""Run one ingest chunk in a process of its own and report its memory: ``python -m tests.support.memory_chunk``.

Reads a JSON job on stdin: ``{"endpoint", "source_url", "warehouse", "items": [[track_id, key], ...],
"warmup": [[track_id, key], ...], "concurrency", "max_document_bytes", "publish": bool}``. It first ingests the
small ``warmup`` items (imports, boto3 client, threads, Avro writers all loaded), takes its RSS
then as the baseline and resets the kernel's high-water mark (imports peak higher than they end),
ingests ``items`` into bucket 0 of a local warehouse (``<warehouse>/run``, published through the
quality gate with ``publish``), and prints ``{"baseline": bytes, "peak":
bytes, "counts": {...}}`` (peak from ``VmHWM``: the true high-water mark, not a sample).
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import psutil

from pipeline import layout
from pipeline.ingest.chunk import ChunkSettings, ingest_bucket, publish_analysis
from pipeline.ingest.engine import WorkItem
from pipeline.layout import Layout
from pipeline.source.catalog import CatalogRow
from pipeline.source.s3 import S3Source, make_client
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse

DATE = dt.date(2026, 11, 26)


def _items(pairs: list[list[str]]) -> list[WorkItem]:
    return [WorkItem(CatalogRow(track_id, key, None), key) for track_id, key in sorted(pairs)]


def _high_water_mark() -> int:
    """Peak RSS since the last reset (``VmHWM``): the kernel's own maximum, not a sample."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> int:
    job = json.load(sys.stdin)
    settings = ChunkSettings(concurrency=job["concurrency"], max_document_bytes=job["max_document_bytes"],
                             failure_ratio=0.0, records_per_part=1000)  # the shipped invalid_ratio
    client = make_client(job["endpoint"], "us-east-1", job["concurrency"] + 4, 3, "standard", 5, 30)
    source = S3Source(job["source_url"], client)
    warm = Warehouse(Layout(f"file://{job['warehouse']}/warmup"), LocalStorage())
    ingest_bucket(warm, source, layout.ANALYSIS_FULL, DATE, 0, _items(job["warmup"]), settings)
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark: imports and warm-up peak higher
        f.write("5")
    baseline = psutil.Process().memory_info().rss
    wh = Warehouse(Layout(f"file://{job['warehouse']}/run"), LocalStorage())
    info = ingest_bucket(wh, source, layout.ANALYSIS_FULL, DATE, 0, _items(job["items"]), settings)
    if job.get("publish"):  # the gate judges what was published: a hostile document must not block the day
        publish_analysis(wh, layout.ANALYSIS_FULL, DATE, 1)
    peak = _high_water_mark()
    print(json.dumps({"baseline": baseline, "peak": peak, "counts": info.counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
