"""Keeping the analysis current: the per-date analysis set, incrementals, compactions, retention."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import luigi

from pipeline import config, layout
from pipeline.errors import ScheduleError
from pipeline.snapshots import schedule
from pipeline.snapshots.chunk_job import ingest_chunk_job
from pipeline.snapshots.compaction import compact_bucket
from pipeline.snapshots.incremental import delta_inputs, incremental_bucket
from pipeline.snapshots.retention import apply_retention
from pipeline.source import source_from_config, source_settings
from pipeline.storage import target_for
from tasks import settings
from tasks.base import PublishedSet, chunk_progress, warehouse
from tasks.ingest import CatalogSnapshot, IngestFullSnapshot


def _yesterday(date: dt.date) -> dt.date:
    return date - dt.timedelta(days=1)


class AnalysisSet(luigi.Task):
    """The analysis set of a date — a full snapshot or an incremental, exactly one of them.

    Complete when either exists. Which one to build is decided when the day before is
    complete (the compaction schedule reads its manifests), then built as a dynamic dependency.
    """

    date = luigi.DateParameter(description="Date of the analysis set (YYYY-MM-DD).")

    def requires(self):
        return AnalysisSet(_yesterday(self.date)) if self.date > settings.start_date(warehouse()) else []

    def complete(self):
        wh = warehouse()
        return wh.is_complete(layout.ANALYSIS_FULL, self.date) or wh.is_complete(layout.ANALYSIS_INCREMENTAL, self.date)

    def run(self):
        wh = warehouse()
        start = settings.start_date(wh)
        if self.date < start:
            raise ScheduleError(f"{self.date} is before the pipeline's start date {start} ([pipeline] start_date)")
        if self.date == start:
            yield IngestFullSnapshot(self.date)
            return
        kind = schedule.kind_for(wh, self.date, start, settings.compaction())
        yield CompactFullSnapshot(self.date) if kind == schedule.FULL else IncrementalAnalysis(self.date)


class _DeltaChunk(luigi.Task):
    """One bucket of a day's delta (incremental or compaction); one implementation for both."""

    date = luigi.DateParameter(description="Date of the analysis set.")
    chunk = luigi.IntParameter(description="Bucket number, 0 <= chunk < [warehouse] buckets.")
    resources = {"s3_ingest": 1}
    dataset: str = ""

    def requires(self):
        return [CatalogSnapshot(self.date), AnalysisSet(_yesterday(self.date))]

    def output(self):
        wh = warehouse()
        return target_for(wh.layout.bucket_manifest_url(self.dataset, self.date, self.chunk), wh.storage)

    def complete(self):
        wh = warehouse()
        return wh.is_complete(self.dataset, self.date) or wh.bucket_committed(self.dataset, self.date, self.chunk)

    def build(self, wh, source, chunk_settings, policy, template, progress):
        raise NotImplementedError

    def run(self):
        wh = warehouse()
        schedule.check_single_set(wh, self.dataset, self.date)
        total = wh.manifest(layout.CATALOG, self.date).bucket(self.chunk).records
        self.build(wh, source_from_config(), settings.chunk(), settings.retry(),
                   config.source().key_template, chunk_progress(self, total))


class IncrementalChunk(_DeltaChunk):
    """One bucket of the incremental set: new, re-analysed and due-for-retry tracks only."""

    dataset = layout.ANALYSIS_INCREMENTAL

    def build(self, wh, source, chunk_settings, policy, template, progress):
        cfg = config.ingest()
        if cfg.runner == "inprocess":
            incremental_bucket(wh, source, self.date, self.chunk, chunk_settings, policy, template, progress)
            return
        inputs = [wh.layout.date_url(layout.CATALOG, self.date), *delta_inputs(wh, self.date, self.chunk)[2],
                  config.source().url]
        ingest_chunk_job(wh, source_settings(), template, self.dataset, self.date, self.chunk, chunk_settings,
                         cfg.runner, cfg.slices, cfg.mrjob_conf, config.warehouse().s3_endpoint_url, progress, inputs,
                         kind="incremental", retry=dataclasses.asdict(policy))


class CompactChunk(_DeltaChunk):
    """One bucket of a compacted full snapshot: previous full + incrementals + today's delta."""

    dataset = layout.ANALYSIS_FULL

    def build(self, wh, source, chunk_settings, policy, template, progress):
        compact_bucket(wh, source, self.date, self.chunk, chunk_settings, policy, template, progress)


class IncrementalAnalysis(PublishedSet):
    """The incremental analysis set of a date: every bucket, then publication (ledger first)."""

    date = luigi.DateParameter(description="Date of the incremental set.")
    dataset, kind = layout.ANALYSIS_INCREMENTAL, "incremental"

    def chunk(self, bucket: int) -> luigi.Task:
        return IncrementalChunk(self.date, bucket)


class CompactFullSnapshot(PublishedSet):
    """A new full snapshot by compaction (previous full + incrementals + today's new analyses)."""

    date = luigi.DateParameter(description="Date of the new full snapshot.")
    dataset, kind = layout.ANALYSIS_FULL, "compaction"

    def chunk(self, bucket: int) -> luigi.Task:
        return CompactChunk(self.date, bucket)


class ApplyRetention(luigi.Task):
    """Delete obsolete analysis sets after the set of ``date`` exists; logs what it freed."""

    date = luigi.DateParameter(description="Run after the analysis set of this date is complete.")
    dry_run = luigi.BoolParameter(default=False, significant=False, description="Only list what would be deleted.")

    def requires(self):
        return AnalysisSet(self.date)

    def output(self):
        wh = warehouse()
        return target_for(wh.layout.retention_log_url(self.date), wh.storage)

    def complete(self):
        return False if self.dry_run else super().complete()

    def run(self):
        wh = warehouse()
        dry_run = self.dry_run or config.retention().dry_run
        result = apply_retention(wh, config.retention().keep_full, dry_run=dry_run)
        message = (f"{'would free' if dry_run else 'freed'} {result['bytes_freed'] / 1e6:.1f} MB in "
                   f"{len(result['deleted'])} date folders")
        self.set_status_message(message)
        # on the console too (Luigi shows its own logger at INFO): --dry-run is how an operator sees the list
        logging.getLogger("luigi-interface").info("retention as of %s: %s: %s", self.date, message,
                                                  ", ".join(result["deleted"]) or "nothing")
        if not dry_run:
            wh.write_json(wh.layout.retention_log_url(self.date), result)
