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
        for bucket in range(manifest.buckets):
            out.extend((dataset, day, r) for r in wh.read_bucket(dataset, day, bucket, manifest))
    return out


def newest_wins(records: list[tuple[str, dt.date, dict]]) -> dict[str, dict]:
    view: dict[str, dict] = {}
    for _dataset, _day, record in records:  # oldest set first: later sets overwrite
        view[record["track_id"]] = record
    return view


def ledger_outcomes(wh: Warehouse, date: dt.date) -> dict[str, str]:
    manifest = wh.manifest(layout.LEDGER, date)
    return {r["track_id"]: r["outcome"] for b in range(manifest.buckets)
            for r in wh.read_bucket(layout.LEDGER, date, b, manifest)}


SIM_START = dt.date(2026, 11, 1)
SIM_DAYS = 21  # compactions on days 5, 10, 15, 20 (every 5 days)
SIM_EVERY = 5
SIM_FAULTS = {"http_500": 0.01, "slowdown_503": 0.01, "reset": 0.005, "truncate": 0.005, "corrupt": 0.005}


def run_three_weeks(tmp, s3_endpoint: str):
    """Seed and run 21 days (analysis set, retention, attributes), snapshotting what each day produced.

    A generator: yields ``(warehouse, simulation, policy, history, proxy stats)`` with the config
    and the fault proxy still active, for a session fixture to hand out.
    """
    from pipeline.demo.s3server import s3_client
    from pipeline.demo.seed import seed_bucket, write_metadata_dump
    from tasks import ApplyRetention, DailyAttributes
    from tests.helpers import luigi_config, run_luigi
    from tests.support.faultproxy import FaultPlan, FaultProxy

    bucket = "weeks"
    client = s3_client(s3_endpoint)
    sim = CatalogSimulation(seed=23, start_date=SIM_START, initial_tracks=120, segments=24, daily_new_ratio=0.04,
                            takedown_ratio=0.01, late_ratio=0.12, never_ratio=0.03, malformed_ratio=0.02,
                            reanalysed_ratio=0.01, gzip_ratio=0.2)
    policy = RetryPolicy(1, 8)
    overrides = {
        "warehouse": {"buckets": 3, "root": f"file://{tmp / 'warehouse'}"},
        "source": {"url": f"s3://{bucket}/analysis/", "concurrency": 4, "max_attempts": 5, "read_timeout": 5},
        "ingest": {"failure_ratio": 0.05},
        "compaction": {"every_days": SIM_EVERY, "max_incremental_ratio": 10.0},
        "retention": {"keep_full": 2},
        "retry": {"missing_first_days": policy.first_days, "missing_max_days": policy.max_days},
        "pipeline": {"start_date": layout.format_date(SIM_START)},
    }
    history = []
    model = ReferenceModel(sim, policy)
    with FaultProxy(s3_endpoint, FaultPlan(SIM_FAULTS, seed=5)) as proxy:
        overrides["source"]["endpoint_url"] = proxy.url
        with luigi_config(overrides):
            wh = Warehouse.from_config()
            for day in range(SIM_DAYS):
                date = SIM_START + dt.timedelta(days=day)
                seed_bucket(client, bucket, "analysis", sim, day, since_day=day - 1 if day else None)
                write_metadata_dump(wh.layout, wh.storage, date, sim.day(day).rows)
                ok = run_luigi([ApplyRetention(date=date), DailyAttributes(date=date)], workers=2)
                assert ok, f"day {day} failed"
                history.append(day_snapshot(wh, day, date, model.step(day, compaction=day % SIM_EVERY == 0)))
            yield wh, sim, policy, history, proxy.stats


def day_snapshot(wh: Warehouse, day: int, date: dt.date, want: Expected) -> dict:
    """What to check about one day, taken right after it ran (retention deletes old days later)."""
    full = wh.is_complete(layout.ANALYSIS_FULL, date)
    incremental = wh.is_complete(layout.ANALYSIS_INCREMENTAL, date)
    return {"day": day, "date": date, "full": full, "incremental": incremental, "records": state_records(wh, date),
            "expected": want, "ledger": ledger_outcomes(wh, date),
            "manifest": wh.manifest(layout.ANALYSIS_FULL if full else layout.ANALYSIS_INCREMENTAL, date),
            "attributes": attribute_records(wh, date),
            "attributes_manifest": wh.manifest(layout.ATTRIBUTES, date)}


def attribute_records(wh: Warehouse, date: dt.date) -> dict[str, dict]:
    manifest = wh.manifest(layout.ATTRIBUTES, date)
    return {r["track_id"]: r for b in range(manifest.buckets)
            for r in wh.read_bucket(layout.ATTRIBUTES, date, b, manifest)}
