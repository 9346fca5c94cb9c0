"""Retention: delete analysis sets no state can need any more, and say what was freed.

Kept: the newest ``keep_full`` complete full snapshots and every incremental after the
oldest of them (so the newest complete state is always kept whole). Deletable: older full
and incremental sets, with the ledger and catalog of their dates. Nothing is deleted

- unless every date from the oldest kept full up to the newest complete set is complete
  (a gap means a rebuild may still be pending, and it would read older sets), and
- for a date whose attributes snapshot is still missing while attributes are being built
  (``DailyAttributes`` of that date would read its analysis set).

A date is unpublished ``_SUCCESS`` first (see ``Warehouse.remove_date``), so a reader never
sees half of it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from pipeline import layout
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)
DELETED_WITH_A_SET = (layout.LEDGER, layout.CATALOG)


@dataclass
class RetentionPlan:
    keep_from: dt.date | None = None
    delete: list[tuple[str, dt.date]] = field(default_factory=list)
    bytes: int = 0
    blocked: str = ""

    def as_dict(self) -> dict:
        return {"keep_from": layout.format_date(self.keep_from) if self.keep_from else None, "blocked": self.blocked,
                "deleted": [f"{dataset}/{layout.format_date(d)}" for dataset, d in self.delete],
                "bytes_freed": self.bytes}


def plan_retention(wh: Warehouse, keep_full: int) -> RetentionPlan:
    """What retention would delete now (reads listings and manifests only)."""
    plan = RetentionPlan()
    fulls = wh.complete_dates(layout.ANALYSIS_FULL)
    if len(fulls) <= keep_full:
        plan.blocked = f"only {len(fulls)} complete full snapshot(s); keeping {keep_full}"
        return plan
    plan.keep_from = fulls[-keep_full]
    incrementals = wh.complete_dates(layout.ANALYSIS_INCREMENTAL)
    complete = set(fulls) | set(incrementals)
    newest = max(complete)
    day = plan.keep_from
    while day <= newest:
        if day not in complete:
            plan.blocked = f"{layout.format_date(day)} has no complete analysis set: a rebuild may need older sets"
            return plan
        day += dt.timedelta(days=1)
    attributes = wh.complete_dates(layout.ATTRIBUTES)
    old = sorted(d for d in complete if d < plan.keep_from)
    for date in old:
        if attributes and date > attributes[0] and date not in attributes:
            plan.blocked = f"attributes of {layout.format_date(date)} are not built yet; keeping its analysis set"
            break
        kind = layout.ANALYSIS_FULL if date in fulls else layout.ANALYSIS_INCREMENTAL
        for dataset in (kind, *DELETED_WITH_A_SET):
            if wh.is_complete(dataset, date):
                plan.delete.append((dataset, date))
                plan.bytes += _size(wh, dataset, date)
    return plan


def _size(wh: Warehouse, dataset: str, date: dt.date) -> int:
    """Bytes of the data files of a date, from its manifest (indexes and manifests are a rounding error)."""
    return wh.load_manifest(dataset, date).bytes  # sizes only: old bucket counts are fine here


def apply_retention(wh: Warehouse, keep_full: int, dry_run: bool = False) -> dict:
    """Delete what ``plan_retention`` finds (unless ``dry_run``); returns the log of it. Idempotent."""
    plan = plan_retention(wh, keep_full)
    for dataset, date in plan.delete:
        log.info("retention: %s %s/%s", "would delete" if dry_run else "deleting", dataset, layout.format_date(date))
        if not dry_run:
            wh.remove_date(dataset, date)
    result = {**plan.as_dict(), "dry_run": dry_run, "keep_full": keep_full}
    log.info("retention: %s %d date folders, %.1f MB%s", "would free" if dry_run else "freed", len(plan.delete),
             plan.bytes / 1e6, f" (stopped: {plan.blocked})" if plan.blocked else "")
    return result
