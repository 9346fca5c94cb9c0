"""Shared plumbing of the thin tasks: the warehouse, output targets, progress reporting, set publication."""

from __future__ import annotations

import datetime as dt

import luigi

from pipeline import config
from pipeline.ingest.chunk import publish_analysis
from pipeline.ingest.engine import Counts
from pipeline.snapshots import schedule
from pipeline.storage import target_for
from pipeline.warehouse import Warehouse
from tasks import settings


def warehouse() -> Warehouse:
    return Warehouse.from_config()


def success_target(dataset: str, date: dt.date) -> luigi.Target:
    """A dataset date is complete exactly when its ``_SUCCESS`` marker exists."""
    wh = warehouse()
    return target_for(wh.layout.success_url(dataset, date), wh.storage)


def chunk_progress(task: luigi.Task, total: int):
    """A progress callback that shows counts and throughput in the scheduler (bar + status message)."""

    def report(counts: Counts) -> None:
        done = counts.attempted
        rate = counts.bytes / 1e6 / counts.seconds if counts.seconds else 0.0
        task.set_progress_percentage(round(100.0 * done / total, 1) if total else 100.0)
        task.set_status_message(
            f"{done}/{total} tracks · ingested {counts.ingested} · missing {counts.missing} · "
            f"invalid {counts.invalid} · failed {counts.failed} · {rate:.1f} MB/s")

    return report


class PublishedSet(luigi.Task):
    """An analysis set of a date: every chunk of it, then publication (quality gate, ledger, the set).

    The first ingest, the incremental and the compaction differ only in their chunk task, their
    dataset and ``kind``; a date has exactly one analysis set, checked before publishing.
    """

    date = luigi.DateParameter(description="Date of the analysis set.")
    dataset: str = ""
    kind: str = ""

    def chunk(self, bucket: int) -> luigi.Task:
        raise NotImplementedError

    def details(self, wh: Warehouse) -> dict:
        """Extra fields of the dataset manifest."""
        return {}

    def requires(self):
        return [self.chunk(bucket) for bucket in range(config.warehouse().buckets)]

    def output(self):
        return success_target(self.dataset, self.date)

    def run(self):
        wh = warehouse()
        schedule.check_single_set(wh, self.dataset, self.date)
        publish_analysis(wh, self.dataset, self.date, config.warehouse().buckets, settings.quality(),
                         kind=self.kind, **self.details(wh))
