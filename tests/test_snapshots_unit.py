"""The snapshot building blocks on literal inputs: merges, the retry policy, the delta plan."""

from __future__ import annotations

import datetime as dt

from pipeline.snapshots.incremental import DeltaPlan, plan_delta
from pipeline.snapshots.merge import MergeStats, keep_ids, merge_newest
from pipeline.snapshots.retry import RetryPolicy
from pipeline.source.catalog import CatalogRow

D = dt.date(2026, 11, 26)


def _ids(n: str) -> str:
    return n.rjust(22, "0")


def test_merge_newest_takes_the_newest_stream_and_counts():
    full = [{"track_id": "a", "v": 0}, {"track_id": "b", "v": 0}, {"track_id": "d", "v": 0}]
    incr1 = [{"track_id": "b", "v": 1}, {"track_id": "c", "v": 1}]
    incr2 = [{"track_id": "b", "v": 2}]
    stats = MergeStats()
    merged = list(merge_newest([full, incr1, incr2], stats))
    assert [(r["track_id"], r["v"]) for r in merged] == [("a", 0), ("b", 2), ("c", 1), ("d", 0)]
    assert (stats.inputs, stats.replaced) == (6, 2)


def test_keep_ids_is_a_sorted_semi_join():
    stats = MergeStats()
    records = [{"track_id": t} for t in "abcde"]
    assert [r["track_id"] for r in keep_ids(records, ["a", "c", "d", "z"], stats)] == ["a", "c", "d"]
    assert (stats.written, stats.dropped) == (3, 2)


def test_retry_backoff_doubles_and_is_capped():
    policy = RetryPolicy(first_days=1, max_days=8)
    assert [policy.gap_days(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    entry = {"outcome": "missing", "attempts": 3, "last_attempt": "2026-11-22"}
    assert not policy.is_due(entry, dt.date(2026, 11, 25)) and policy.is_due(entry, D)
    assert policy.is_due({"outcome": "failed", "attempts": 9, "last_attempt": "2026-11-25"}, D)


def test_plan_delta_fetches_new_reanalysed_and_due_only():
    catalog = [CatalogRow(_ids("1"), None, 10),   # in state, same version: skip
               CatalogRow(_ids("2"), None, 20),   # in state, newer version announced: fetch
               CatalogRow(_ids("3"), None, None),  # new: fetch
               CatalogRow(_ids("4"), None, None),  # missing, not due: carried
               CatalogRow(_ids("5"), None, None)]  # failed yesterday: retried
    state = [{"track_id": _ids("1"), "source_updated_at": 10}, {"track_id": _ids("2"), "source_updated_at": 5},
             {"track_id": _ids("9"), "source_updated_at": 1}]
    ledger = [{"track_id": _ids("4"), "outcome": "missing", "attempts": 2, "last_attempt": "2026-11-25"},
              {"track_id": _ids("5"), "outcome": "failed", "attempts": 1, "last_attempt": "2026-11-25"},
              {"track_id": _ids("8"), "outcome": "missing", "attempts": 1, "last_attempt": "2026-11-01"}]
    plan = DeltaPlan()
    items = list(plan_delta(catalog, state, ledger, D, RetryPolicy(1, 32), "{track_id}.json", plan))
    assert [i.row.track_id for i in items] == [_ids("2"), _ids("3"), _ids("5")]
    assert items[2].previous["attempts"] == 1
    assert [e["track_id"] for e in plan.carried] == [_ids("4")]
    assert (plan.new, plan.reanalysed, plan.retried, plan.waiting, plan.taken_down) == (1, 1, 1, 1, 1)


def test_a_date_has_exactly_one_analysis_set(tmp_path):
    import pytest

    from pipeline import layout
    from pipeline.errors import ScheduleError
    from pipeline.layout import Layout
    from pipeline.manifest import BucketManifest
    from pipeline.snapshots.schedule import check_single_set
    from pipeline.storage import LocalStorage
    from pipeline.warehouse import Warehouse

    wh = Warehouse(Layout(f"file://{tmp_path}"), LocalStorage())
    check_single_set(wh, layout.ANALYSIS_INCREMENTAL, D)  # nothing yet: either may be built
    wh.commit_bucket(layout.ANALYSIS_FULL, D, BucketManifest(0, 0, 0, []))
    wh.publish(layout.ANALYSIS_FULL, D, "analysis", buckets=1)
    check_single_set(wh, layout.ANALYSIS_FULL, D)  # rebuilding (a no-op) the one that exists is fine
    with pytest.raises(ScheduleError, match="analysis-full of 2026-11-26 already exists.*no analysis-incremental"):
        check_single_set(wh, layout.ANALYSIS_INCREMENTAL, D)
