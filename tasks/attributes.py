"""DailyAttributes: the daily full snapshot of per-track audio attributes (the dataset users consume)."""

from __future__ import annotations

import datetime as dt
import logging

import luigi

from pipeline import config, layout
from pipeline.attributes.snapshot import build_snapshot, chain_floor, continues_chain
from pipeline.warehouse import Warehouse
from tasks import settings
from tasks.base import success_target, warehouse
from tasks.ingest import CatalogSnapshot
from tasks.snapshots import AnalysisSet

log = logging.getLogger("luigi-interface")


class DailyAttributes(luigi.Task):
    """All track attributes of a day, computing only what is new since the day before.

    Requires the analysis set of the day and the attributes of the day before (so missing days
    are rebuilt in order); the first day, or the first after a new algorithm version, computes
    everything. ``luigi --module tasks RangeDaily --of DailyAttributes --start ...`` backfills,
    deciding completeness of the whole range from one listing (``bulk_complete``).
    """

    date = luigi.DateParameter(description="Date of the snapshot (YYYY-MM-DD).")

    def requires(self):
        wh = warehouse()
        start = settings.start_date(wh)
        deps = {"analysis": AnalysisSet(self.date), "catalog": CatalogSnapshot(self.date)}
        if continues_chain(wh, self.date, start):
            deps["yesterday"] = DailyAttributes(self.date - dt.timedelta(days=1))
        return deps

    def output(self):
        return success_target(layout.ATTRIBUTES, self.date)

    def run(self):
        wh, job = warehouse(), settings.attributes_job()
        self.set_status_message(f"building attributes of {self.date} on the {job.runner} runner")
        manifest = build_snapshot(wh, self.date, config.warehouse().buckets, settings.start_date(wh), job)
        self.set_status_message(f"{manifest.records} tracks ({manifest.mode}): {manifest.counts}")

    @classmethod
    def bulk_complete(cls, parameter_tuples):
        """The dates among many that a backfill must not schedule, from one listing per dataset (for RangeDaily).

        Complete dates, and two kinds of date with nothing to build from the warehouse: days before
        the pipeline's start date, and days older than the oldest analysis set retention kept
        (rebuilding those means re-ingesting the source for that day: ``DailyAttributes --date D``
        does it on purpose). So the cron sweep ``--days-back 14`` never re-ingests a retired day.
        """
        dates = list(parameter_tuples)  # RangeDaily passes a one-shot map
        wh = Warehouse.from_config()
        complete, start = set(wh.complete_dates(layout.ATTRIBUTES)), settings.start_date(wh)
        floor = chain_floor(wh, start)
        retired = sorted(d for d in dates if start <= d < floor and d not in complete)
        if retired:
            log.warning("attributes of %s are missing but their analysis sets were retired (oldest kept: %s): "
                        "not rebuilt by a range; run DailyAttributes --date D for each to re-ingest them",
                        ", ".join(map(layout.format_date, retired)), layout.format_date(floor))
        return [d for d in dates if d in complete or d < floor]
