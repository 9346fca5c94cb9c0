"""Shared plumbing of the thin tasks: the warehouse, output targets and progress reporting."""

from __future__ import annotations

import datetime as dt

import luigi

from pipeline.ingest.engine import Counts
from pipeline.storage import target_for
from pipeline.warehouse import Warehouse


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
