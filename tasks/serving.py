"""Serving task: put a day's attributes snapshot behind the lookup API (store load, index, pointer flip)."""

from __future__ import annotations

import luigi

from pipeline import layout
from pipeline.serving.config import serving
from pipeline.serving.publish import is_published, publish_snapshot
from pipeline.serving.stores import store_from_config
from tasks.base import warehouse


class PublishAttributes(luigi.Task):
    """Make the attributes snapshot of ``date`` the online store's active, verified version.

    Complete when the store's pointer names this date (activation implies a verified load) and
    its similarity index exists, or when a newer date is already active: re-running an old day
    must not roll readers back (a deliberate rollback is ``python -m pipeline.serving.publish
    --activate <date>``).
    """

    date = luigi.DateParameter(description="Date of the attributes snapshot to serve (YYYY-MM-DD).")

    def requires(self):
        from tasks.attributes import DailyAttributes  # lazy: serving hosts need not import the mrjob side

        return DailyAttributes(self.date)

    def complete(self) -> bool:
        version = layout.format_date(self.date)
        with store_from_config() as store:
            active = store.active_version()
            return (active is not None and active > version) or is_published(store, version, serving().index_dir)

    def run(self):
        cfg = serving()
        with store_from_config() as store:
            result = publish_snapshot(warehouse(), self.date, store, cfg.index_dir, cfg.batch_size, cfg.concurrency,
                                      full_threshold=cfg.full_threshold)
        self.set_status_message(f"{result.version}: {result.records} records active in the {store.kind} store "
                                f"({result.mode} publish, {result.loaded} rows written); previous {result.previous}; "
                                f"dropped {result.dropped or 'none'}")
