"""The daily attributes snapshot: plan the bucket tasks, run the mrjob job, publish.

A day is **incremental** when yesterday's attributes exist and were computed by the same
algorithm version: then only today's analysis set (full or incremental, exactly one exists)
is joined with them. Otherwise — the first day, a day whose chain starts after retention
removed older sets, or the first day of a new ``ALGORITHM_VERSION`` — it is **full**: every
analysis of the state as of the day (latest full + its incrementals) is computed, and the
daily chain simply continues from there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from pipeline import layout
from pipeline.attributes.daily import BucketTask, yesterday
from pipeline.attributes.maths import ALGORITHM_VERSION
from pipeline.attributes.summary import combine_summaries
from pipeline.formats import ATTRIBUTES, fingerprint
from pipeline.ingest.convert import mark_pool_used, may_use_processes
from pipeline.jobs import run_map_only
from pipeline.manifest import BucketManifest, Manifest
from pipeline.ops.quality import QualitySettings, enforce
from pipeline.snapshots.schedule import analysis_set, state_as_of
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)


def chain_floor(wh: Warehouse, start: dt.date) -> dt.date:
    """The oldest date whose analysis set still exists (retention deletes older ones), or ``start``."""
    dates = wh.complete_dates(layout.ANALYSIS_FULL) + wh.complete_dates(layout.ANALYSIS_INCREMENTAL)
    return max(min(dates), start) if dates else start


def continues_chain(wh: Warehouse, date: dt.date, start: dt.date) -> bool:
    """Whether the attributes of ``date`` build on those of the day before."""
    return date > start and yesterday(date) >= chain_floor(wh, start)


@dataclass(frozen=True)
class JobSettings:
    """How the attributes job runs and writes its files; resolved once, by the task, from the configuration."""

    runner: str = "inline"  # [attributes] runner
    conf_path: str | None = None  # [attributes] mrjob_conf
    s3_endpoint_url: str | None = None  # [warehouse] s3_endpoint_url
    codec: str = "snappy"  # [ingest] codec: every data file of the warehouse
    records_per_part: int = 20000  # [ingest] records_per_part
    quality: QualitySettings = field(default_factory=QualitySettings)
    processes: int = 1  # [attributes] processes, resolved (0 → every core): inline runner's pool size


def plan(wh: Warehouse, date: dt.date, buckets: int, start: dt.date,
         settings: JobSettings | None = None) -> tuple[str, list[BucketTask]]:
    """("incremental" | "full", one task per bucket)."""
    previous = yesterday(date) if continues_chain(wh, date, start) else None
    if previous is not None and wh.is_complete(layout.ATTRIBUTES, previous):
        version = wh.manifest(layout.ATTRIBUTES, previous).algorithm_version
        if version != ALGORITHM_VERSION:
            log.warning("attributes of %s were made by algorithm %s, now %s: recomputing every track on %s",
                        previous, version, ALGORITHM_VERSION, date)
            previous = None
    elif previous is not None:
        previous = None
    if previous is not None:
        mode, sets = "incremental", [analysis_set(wh, date)]
    else:
        mode, sets = "full", state_as_of(wh, date).sets()
    lay, settings = wh.layout, settings or JobSettings()
    tasks = [BucketTask(lay.root, lay.project, lay.metadata_project, layout.format_date(date), bucket,
                        layout.format_date(previous) if previous else None,
                        [[dataset, layout.format_date(d)] for dataset, d in sets], settings.codec,
                        settings.records_per_part, settings.quality.z_threshold) for bucket in range(buckets)]
    return mode, tasks


def _build_one(task: BucketTask, s3_endpoint_url: str | None) -> tuple[int, dict]:
    """One bucket in a worker process: what MRDailyAttributes' mapper does, without mrjob's per-task start-up."""
    from pipeline.attributes.daily import build_bucket
    from pipeline.layout import Layout
    from pipeline.storage import storage_for

    wh = Warehouse(Layout(task.root, task.project, task.metadata_project), storage_for(task.root, s3_endpoint_url))
    info = build_bucket(wh, task)
    return task.bucket, {"records": info.records, "bytes": info.bytes, "counts": info.counts}


def run_job(tasks: list[BucketTask], runner: str, conf_path: str | None = None,
            s3_endpoint_url: str | None = None, processes: int = 1) -> dict[int, dict]:
    """Run MRDailyAttributes over the bucket tasks; returns each bucket's summary line.

    On the inline runner with ``processes`` > 1 the buckets (independent by construction) are
    built by a process pool instead — every core of the host, the same files: mrjob's local
    runner would start a fresh interpreter per bucket (~1 s of imports each, 5-10× a daily bucket).
    """
    from pipeline.attributes.mr_daily_attributes import MRDailyAttributes

    if not tasks:
        return {}
    if runner == "inline" and processes > 1 and len(tasks) > 1 and may_use_processes():
        mark_pool_used()
        ctx = multiprocessing.get_context("forkserver")  # the luigi worker has threads: never fork it
        with ProcessPoolExecutor(max_workers=min(processes, len(tasks)), mp_context=ctx) as pool:
            return dict(pool.map(_build_one, tasks, [s3_endpoint_url] * len(tasks)))
    extra = ["--s3-endpoint-url", s3_endpoint_url] if s3_endpoint_url else []
    return dict(run_map_only(MRDailyAttributes, [dataclasses.asdict(t) for t in tasks], runner, conf_path, extra,
                             prefix="attributes-job-"))


def build_snapshot(wh: Warehouse, date: dt.date, buckets: int, start: dt.date,
                   settings: JobSettings | None = None) -> Manifest:
    """Build the missing buckets of ``attributes/<date>``, pass the quality gate, publish (idempotent)."""
    if wh.is_complete(layout.ATTRIBUTES, date):
        return wh.manifest(layout.ATTRIBUTES, date)
    settings = settings or JobSettings()
    quality, runner = settings.quality, settings.runner
    mode, tasks = plan(wh, date, buckets, start, settings)
    todo = [t for t in tasks if not wh.bucket_committed(layout.ATTRIBUTES, date, t.bucket)]
    log.info("attributes %s (%s): %d of %d buckets to build on the %s runner", date, mode, len(todo), len(tasks),
             runner)
    run_job(todo, runner, settings.conf_path, settings.s3_endpoint_url, settings.processes)
    entries = wh.bucket_manifests(layout.ATTRIBUTES, date, buckets)

    def gate(staged: list[BucketManifest]) -> None:
        enforce(staged, quality, f"{layout.ATTRIBUTES}/{layout.format_date(date)}",
                expected_schema=fingerprint(ATTRIBUTES),
                schema_of=lambda e: wh.staged_schema_fingerprint(layout.ATTRIBUTES, date, e))

    return wh.publish(layout.ATTRIBUTES, date, ATTRIBUTES, buckets, gate=gate, mode=mode,
                      algorithm_version=ALGORITHM_VERSION,
                      summary=combine_summaries(entries), inputs=sorted({u for e in entries for u in e.inputs or ()}))
