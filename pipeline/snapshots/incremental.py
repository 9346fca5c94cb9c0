"""The daily delta: which catalog tracks of a bucket must be fetched today, from ids alone.

Three sorted streams are merged by track id — today's catalog bucket, the id index of the
analysis state as of yesterday (full + incrementals, newest wins) and yesterday's ledger —
so finding what is new reads a few bytes per track and never an analysis payload.

A catalog track is fetched when the state does not have it, or has an older analysis than
the catalog announces (``analysis_updated_at``); if the ledger already knows it as missing,
invalid or failed, only when the retry policy says it is due. Ledger entries not due are
carried over unchanged; entries of tracks that left the catalog are dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pipeline import layout
from pipeline.ingest.chunk import ChunkSettings, ingest_bucket
from pipeline.ingest.engine import Counts, WorkItem
from pipeline.ingest.slices import SliceTask, in_range, slice_rows
from pipeline.ingest.work import work_item
from pipeline.snapshots.merge import merge_newest
from pipeline.snapshots.retry import RetryPolicy
from pipeline.snapshots.schedule import state_as_of
from pipeline.source.base import Source
from pipeline.source.catalog import CatalogRow, read_catalog_bucket
from pipeline.warehouse import Warehouse


@dataclass
class DeltaPlan:
    """What the delta of one bucket found; ``carried`` is filled while the items are consumed."""

    new: int = 0
    reanalysed: int = 0
    retried: int = 0
    waiting: int = 0  # ledger entries not due yet (back-off)
    taken_down: int = 0  # ledger entries dropped because the track left the catalog
    carried: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"delta": {"new": self.new, "reanalysed": self.reanalysed, "retried": self.retried,
                          "waiting": self.waiting, "ledger_taken_down": self.taken_down}}


class _Cursor:
    """A sorted stream that can be advanced to a track id."""

    def __init__(self, stream: Iterable[dict]):
        self._it = iter(stream)
        self.head = next(self._it, None)

    def take(self, track_id: str, skipped: list[dict] | None = None) -> dict | None:
        """The entry with ``track_id`` (if any), after passing every smaller one (into ``skipped``)."""
        while self.head is not None and self.head["track_id"] < track_id:
            if skipped is not None:
                skipped.append(self.head)
            self.head = next(self._it, None)
        if self.head is not None and self.head["track_id"] == track_id:
            found, self.head = self.head, next(self._it, None)
            return found
        return None

    def rest(self) -> Iterator[dict]:
        while self.head is not None:
            yield self.head
            self.head = next(self._it, None)


def _has_current(row: CatalogRow, have: dict | None) -> bool:
    if have is None:
        return False
    if row.analysis_updated_at is None:
        return True
    return have["source_updated_at"] is not None and row.analysis_updated_at <= have["source_updated_at"]


def plan_delta(catalog: Iterable[CatalogRow], state_ids: Iterable[dict], ledger: Iterable[dict], today: dt.date,
               policy: RetryPolicy, key_template: str, plan: DeltaPlan) -> Iterator[WorkItem]:
    """The work items of today's delta, in track id order (see the module docstring)."""
    state, old = _Cursor(state_ids), _Cursor(ledger)
    for row in catalog:
        have = state.take(row.track_id)
        gone: list[dict] = []
        entry = old.take(row.track_id, gone)
        plan.taken_down += len(gone)
        if _has_current(row, have) and entry is None:
            continue
        if entry is None:
            plan.new += have is None
            plan.reanalysed += have is not None
            yield work_item(row, key_template)
        elif policy.is_due(entry, today):
            plan.retried += 1
            yield work_item(row, key_template, previous=entry)
        else:
            plan.waiting += 1
            plan.carried.append(entry)
    plan.taken_down += sum(1 for _ in old.rest())


def delta_inputs(wh: Warehouse, date: dt.date, bucket: int) -> tuple[Iterator[dict], Iterator[dict], list[str]]:
    """(state id stream as of yesterday, yesterday's ledger stream, input URLs) for one bucket."""
    yesterday = date - dt.timedelta(days=1)
    state = state_as_of(wh, yesterday)
    indexes = [wh.read_index(dataset, day, bucket) for dataset, day in state.sets()]
    ledger = wh.read_bucket(layout.LEDGER, yesterday, bucket) if wh.is_complete(layout.LEDGER, yesterday) else iter(())
    inputs = [wh.layout.date_url(dataset, day) for dataset, day in state.sets()]
    return merge_newest(indexes), ledger, inputs + [wh.layout.date_url(layout.LEDGER, yesterday)]


def incremental_bucket(wh: Warehouse, source: Source, date: dt.date, bucket: int, settings: ChunkSettings,
                       policy: RetryPolicy, key_template: str, progress=None) -> dict:
    """Fetch and commit one bucket of the incremental analysis set of ``date``."""
    state_ids, ledger, inputs = delta_inputs(wh, date, bucket)
    plan = DeltaPlan()
    items = plan_delta(read_catalog_bucket(wh, date, bucket), state_ids, ledger, date, policy, key_template, plan)
    return ingest_bucket(wh, source, layout.ANALYSIS_INCREMENTAL, date, bucket, items, settings,
                         carried_ledger=plan.carried, progress=progress,
                         inputs=[wh.layout.date_url(layout.CATALOG, date), *inputs, source.url],
                         details=plan.as_dict)


def delta_slice(wh: Warehouse, task: SliceTask) -> tuple[Iterator[WorkItem], DeltaPlan]:
    """The work items of one slice of today's delta (MRIngestChunk), and the plan they fill."""
    date = layout.parse_date(task.date)
    state_ids, ledger, _ = delta_inputs(wh, date, task.bucket)

    def track_id(entry: dict) -> str:
        return entry["track_id"]

    plan = DeltaPlan()
    items = plan_delta(slice_rows(wh, task), in_range(state_ids, task.low, task.high, track_id),
                       in_range(ledger, task.low, task.high, track_id), date, RetryPolicy(**task.retry),
                       task.key_template, plan)
    return items, plan


__all__ = ["DeltaPlan", "delta_slice", "plan_delta", "delta_inputs", "incremental_bucket", "Counts"]
