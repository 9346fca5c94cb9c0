"""DailyAttributes: the daily full snapshot of per-track audio attributes (the dataset users consume)."""

from __future__ import annotations

import datetime as dt

import luigi

from pipeline import config, layout
from pipeline.attributes.snapshot import build_snapshot, continues_chain
from pipeline.ingest.convert import default_processes
from pipeline.ops.quality import QualitySettings
from pipeline.snapshots import schedule
from pipeline.warehouse import Warehouse
from tasks.base import success_target, warehouse
from tasks.ingest import CatalogSnapshot
from tasks.snapshots import AnalysisSet


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
        start = schedule.start_date(wh)
        deps = {"analysis": AnalysisSet(self.date), "catalog": CatalogSnapshot(self.date)}
        if continues_chain(wh, self.date, start):
            deps["yesterday"] = DailyAttributes(self.date - dt.timedelta(days=1))
        return deps

    def output(self):
        return success_target(layout.ATTRIBUTES, self.date)

    def run(self):
        wh = warehouse()
        cfg = config.attributes()
        self.set_status_message(f"building attributes of {self.date} on the {cfg.runner} runner")
        manifest = build_snapshot(wh, self.date, config.ingest().chunks, schedule.start_date(wh), cfg.runner,
                                  cfg.mrjob_conf, config.warehouse().s3_endpoint_url, QualitySettings.from_config(),
                                  default_processes(cfg.processes))
        self.set_status_message(f"{manifest['records']} tracks ({manifest['mode']}): {manifest['counts']}")

    @classmethod
    def bulk_complete(cls, parameter_tuples):
        """The complete dates among many, from one listing of the attributes folder (for RangeDaily)."""
        complete = set(Warehouse.from_config().complete_dates(layout.ATTRIBUTES))
        return [d for d in parameter_tuples if d in complete]
