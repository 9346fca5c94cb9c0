"""Driving MRIngestChunk: plan the slices of a chunk, run the job on the configured runner, commit.

Same contract as ``chunk.ingest_bucket`` (the in-process ingest, the default on one host):
a committed chunk is never rebuilt, an attempt starts from a cleared bucket, the ledger
bucket and the bucket manifest are written only when every slice has committed and the
chunk's failures are within ``[ingest] failure_ratio``. Progress is read from the slices'
progress files while the job runs, so the scheduler shows the chunk moving on any runner.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict

from pipeline import layout
from pipeline.ingest.chunk import ChunkSettings
from pipeline.ingest.engine import Counts
from pipeline.ingest.slices import commit_slices, slice_progress, slice_tasks
from pipeline.jobs import run_map_only
from pipeline.manifest import BucketManifest
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)


def ingest_chunk_job(wh: Warehouse, source: dict, key_template: str, dataset: str, date: dt.date, bucket: int,
                     settings: ChunkSettings, runner: str, slices: int, conf_path: str | None = None,
                     s3_endpoint_url: str | None = None, progress: Callable[[Counts], None] | None = None,
                     inputs: list[str] | None = None, poll_seconds: float = 2.0, kind: str = "full",
                     retry: dict | None = None) -> BucketManifest:
    """Ingest ``bucket`` through MRIngestChunk; returns the bucket manifest.

    ``kind`` "full" fetches every catalog track of the bucket (the first ingest), "incremental"
    the day's delta (``retry``: the RetryPolicy fields), as ``incremental_bucket`` does in process.
    """
    from pipeline.snapshots.mr_ingest_chunk import MRIngestChunk

    done = wh.committed_bucket(dataset, date, bucket)
    if done is not None:
        return done
    wh.clear_bucket(dataset, date, bucket)
    wh.clear_bucket(layout.LEDGER, date, bucket)
    tasks = slice_tasks(wh, dataset, date, bucket, slices, source, key_template, settings, kind, retry)
    log.info("%s %s bucket %d: %d slices on the %s runner", dataset, date, bucket, len(tasks), runner)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(poll_seconds):
            progress(slice_progress(wh, dataset, date, bucket, len(tasks)))  # type: ignore[misc]

    watcher = threading.Thread(target=poll, name="chunk-progress", daemon=True) if progress else None
    if watcher:
        watcher.start()
    try:
        extra = ["--s3-endpoint-url", s3_endpoint_url] if s3_endpoint_url else []
        run_map_only(MRIngestChunk, [asdict(t) for t in tasks], runner, conf_path, extra, prefix="ingest-job-")
    finally:
        stop.set()
        if watcher:
            watcher.join()
    info = commit_slices(wh, dataset, date, bucket, len(tasks), settings, inputs=inputs)
    if progress:
        final = Counts(**info.counts, seconds=info.seconds or 0.0, bytes=(info.requests or {}).get("bytes", 0))
        progress(final)
    return info
