"""Ground truth of a simulated catalogue run day by day, and the replay of the pipeline's days.

The expected analysis state comes from a reference model of the documented semantics on plain
dicts (``ReferenceModel``), fed with the simulation's dumps and S3 objects day by day.
Transient faults are absorbed by retries within a day (the fault rates used make an exhausted
retry budget astronomically unlikely), so they do not move days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pipeline import layout
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.snapshots.retry import RetryPolicy
from pipeline.snapshots.schedule import state_as_of
from pipeline.warehouse import Warehouse


@dataclass
class Expected:
    state: dict[str, int | None]  # track id -> source_updated_at of the newest fetched version
    ledger: dict[str, str]  # track id -> outcome expected in the ledger of the day


@dataclass
class ReferenceModel:
    """The documented semantics on plain dicts, stepped one day at a time (the test's oracle).

    A catalog track is attempted when the state lacks it or has an older version than the dump
    announces — if the ledger knows it, only when due (failed: next day; missing/invalid: after
    1, 2, 4, ... days). An attempt succeeds when the object exists that day and is well-formed.
    The ledger forgets tracks that left the catalog; a compaction day drops them from the state.
    """

    sim: CatalogSimulation
    policy: RetryPolicy
    state: dict = field(default_factory=dict)
    ledger: dict = field(default_factory=dict)  # id -> {"attempts", "last_attempt", "outcome"}

    def step(self, day: int, compaction: bool) -> Expected:
        rows = {r["track_id"]: r for r in self.sim.day(day).rows}
        objects = {spec.track_id: spec for spec in self.sim.objects_available(day).values()}
        for track_id, row in rows.items():
            have, entry = self.state.get(track_id, _ABSENT), self.ledger.get(track_id)
            current = have is not _ABSENT and (row["analysis_updated_at"] is None or (
                have is not None and row["analysis_updated_at"] <= have))
            if current and entry is None:
                continue
            if entry is not None and not _due(entry, day, self.policy):
                continue
            spec = objects.get(track_id)
            if spec is not None and spec.malformed is None:
                self.state[track_id] = row["analysis_updated_at"]
                self.ledger.pop(track_id, None)
            else:
                attempts = entry["attempts"] + 1 if entry else 1
                outcome = "invalid" if spec is not None else "missing"
                self.ledger[track_id] = {"attempts": attempts, "last_attempt": day, "outcome": outcome}
        self.ledger = {t: e for t, e in self.ledger.items() if t in rows}
        if compaction:
            self.state = {t: v for t, v in self.state.items() if t in rows}
        return Expected(dict(self.state), {t: e["outcome"] for t, e in self.ledger.items()})


_ABSENT = object()


def _due(entry: dict, day: int, policy: RetryPolicy) -> bool:
    return entry["outcome"] == "failed" or day - entry["last_attempt"] >= policy.gap_days(entry["attempts"])


def state_records(wh: Warehouse, date: dt.date) -> list[tuple[str, dt.date, dict]]:
    """Every record of the state as of ``date``: (dataset, set date, record), oldest set first."""
    state = state_as_of(wh, date)
    out = []
    for dataset, day in state.sets():
        manifest = wh.manifest(dataset, day)
        for bucket in range(manifest["buckets"]):
            out.extend((dataset, day, r) for r in wh.read_bucket(dataset, day, bucket, manifest))
    return out


def newest_wins(records: list[tuple[str, dt.date, dict]]) -> dict[str, dict]:
    view: dict[str, dict] = {}
    for _dataset, _day, record in records:  # oldest set first: later sets overwrite
        view[record["track_id"]] = record
    return view


def ledger_outcomes(wh: Warehouse, date: dt.date) -> dict[str, str]:
    manifest = wh.manifest(layout.LEDGER, date)
    return {r["track_id"]: r["outcome"] for b in range(manifest["buckets"])
            for r in wh.read_bucket(layout.LEDGER, date, b, manifest)}
