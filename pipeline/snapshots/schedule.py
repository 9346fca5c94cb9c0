"""Which analysis sets exist on which day: the one place that answers "what is the set of date D".

For every date from the pipeline's start, exactly one analysis set exists: a **full** snapshot
(the first day, and every compaction day) or an **incremental** (every other day). The state of
the analysis "as of D" is the latest full on or before D plus every incremental after it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipeline import layout
from pipeline.errors import CatalogError, IncompleteDatasetError, ScheduleError
from pipeline.warehouse import Warehouse

FULL, INCREMENTAL = "full", "incremental"
DATASET = {FULL: layout.ANALYSIS_FULL, INCREMENTAL: layout.ANALYSIS_INCREMENTAL}


@dataclass(frozen=True)
class CompactionPolicy:
    every_days: int = 7
    max_incremental_ratio: float = 0.2


def start_date(wh: Warehouse, configured: str | None = None) -> dt.date:
    """The pipeline's first date: ``configured`` (``[pipeline] start_date``), else the earliest metadata dump."""
    if configured:
        return layout.parse_date(configured)
    dates = layout.dates_in(wh.storage.list_names(wh.layout.dataset_url(layout.TRACKS)))
    if not dates:
        raise CatalogError(f"no metadata dump under {wh.layout.dataset_url(layout.TRACKS)} and no "
                           "[pipeline] start_date: nothing to start from")
    return dates[0]


def check_single_set(wh: Warehouse, dataset: str, date: dt.date) -> None:
    """A date has exactly one analysis set: ``ScheduleError`` when the other kind already exists."""
    other = layout.ANALYSIS_INCREMENTAL if dataset == layout.ANALYSIS_FULL else layout.ANALYSIS_FULL
    if wh.is_complete(other, date):
        raise ScheduleError(f"{other} of {layout.format_date(date)} already exists: a date has exactly one "
                            f"analysis set, so no {dataset} may be built for it")


def analysis_set(wh: Warehouse, date: dt.date) -> tuple[str, dt.date]:
    """The (dataset, date) of the analysis set of ``date``; it must be complete."""
    for kind in (FULL, INCREMENTAL):
        if wh.is_complete(DATASET[kind], date):
            return DATASET[kind], date
    raise IncompleteDatasetError(f"no complete analysis set (full or incremental) for {layout.format_date(date)}")


@dataclass(frozen=True)
class State:
    """The sets that make up the analysis state as of a date, oldest first."""

    full: dt.date
    incrementals: tuple[dt.date, ...]

    def sets(self) -> list[tuple[str, dt.date]]:
        return [(layout.ANALYSIS_FULL, self.full)] + [(layout.ANALYSIS_INCREMENTAL, d) for d in self.incrementals]


def state_as_of(wh: Warehouse, date: dt.date) -> State:
    """Latest complete full on or before ``date`` and the complete incrementals after it (two listings)."""
    fulls = [d for d in wh.complete_dates(layout.ANALYSIS_FULL) if d <= date]
    if not fulls:
        raise IncompleteDatasetError(f"no complete full analysis snapshot on or before {layout.format_date(date)}")
    full = fulls[-1]
    incrementals = tuple(d for d in wh.complete_dates(layout.ANALYSIS_INCREMENTAL) if full < d <= date)
    expected = (date - full).days
    if len(incrementals) != expected:
        have = {d for d in incrementals}
        gaps = [layout.format_date(full + dt.timedelta(days=i)) for i in range(1, expected + 1)
                if full + dt.timedelta(days=i) not in have]
        raise IncompleteDatasetError(f"analysis state as of {layout.format_date(date)} has gaps: {', '.join(gaps)}")
    return State(full, incrementals)


def kind_for(wh: Warehouse, date: dt.date, start: dt.date, policy: CompactionPolicy) -> str:
    """Full or incremental for ``date``; the state as of the day before must be complete."""
    if date <= start:
        return FULL
    state = state_as_of(wh, date - dt.timedelta(days=1))
    if (date - state.full).days >= policy.every_days:
        return FULL
    full_records = wh.manifest(layout.ANALYSIS_FULL, state.full).records
    since = sum(wh.manifest(layout.ANALYSIS_INCREMENTAL, d).records for d in state.incrementals)
    return FULL if since > policy.max_incremental_ratio * max(full_records, 1) else INCREMENTAL
