"""Three weeks of catalogue growth against the loopback S3 server (through a fault-injecting proxy):
after every day the analysis state equals the ground truth; reruns are no-ops; removed days rebuild."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from pipeline import layout
from tasks import AnalysisSet
from tests.helpers import StartedTasks, run_luigi
from tests.simulation import SIM_DAYS, SIM_EVERY, SIM_START, newest_wins, state_records

START, DAYS, EVERY = SIM_START, SIM_DAYS, SIM_EVERY


def test_exactly_one_analysis_set_per_day_on_schedule(three_weeks):
    _, _, _, history, _ = three_weeks
    for h in history:
        assert h["full"] != h["incremental"], f"day {h['day']}: full={h['full']} incremental={h['incremental']}"
        assert h["full"] == (h["day"] % EVERY == 0), f"day {h['day']} should be {'full' if h['full'] else 'incr'}"


def test_state_equals_ground_truth_every_day(three_weeks):
    _, _, _, history, _ = three_weeks
    for h in history:
        view = newest_wins(h["records"])
        got = {t: r["source_updated_at"] for t, r in view.items()}
        want = h["expected"].state
        assert set(got) == set(want), f"day {h['day']}: lost {sorted(set(want) - set(got))[:5]}, " \
                                      f"extra {sorted(set(got) - set(want))[:5]}"
        assert got == want, f"day {h['day']}: an older analysis won over a newer one"


def test_duplicates_are_only_superseded_versions(three_weeks):
    _, _, _, history, _ = three_weeks
    for h in history:
        versions: dict[str, list] = {}
        for _dataset, _day, record in h["records"]:
            versions.setdefault(record["track_id"], []).append(record["source_updated_at"])
        for track_id, seen in versions.items():
            assert seen == sorted(set(seen)), f"day {h['day']}: {track_id} stored twice in one version: {seen}"
        if h["full"]:
            assert all(len(v) == 1 for v in versions.values()), "a compacted full holds each track once"


def test_ledger_holds_exactly_the_tracks_not_in_yet(three_weeks):
    _, _, _, history, _ = three_weeks
    for h in history:
        assert h["ledger"] == h["expected"].ledger, f"day {h['day']}"


def test_incremental_days_fetch_only_new_and_due_tracks(three_weeks):
    _, sim, _, history, proxy_stats = three_weeks
    for h in history[1:]:
        if h["incremental"]:
            delta = Counter()
            for b in h["manifest"].entries():
                delta.update(b.delta)
            attempted = sum(sum(b.counts.values()) - b.counts["retried"]
                            for b in h["manifest"].entries())
            assert attempted == delta["new"] + delta["reanalysed"] + delta["retried"]
            assert attempted < 0.25 * len(sim.day(h["day"]).rows), "an incremental must not re-fetch the catalog"
    assert sum(proxy_stats.faults.values()) > 0, "the proxy should have injected transient faults"


def test_compaction_is_verified_and_drops_takedowns(three_weeks):
    _, sim, _, history, _ = three_weeks
    for h in history[1:]:
        if h["full"]:
            merges = [b.merge for b in h["manifest"].entries()]
            assert all(m.verified for m in merges)
            assert sum(m.taken_down for m in merges) == sum(
                1 for t in sim.day(h["day"]).truth.values() if t.removed_day is not None
                and t.removed_day <= h["day"] and any(r["track_id"] == t.track_id
                                                      for _, d, r in history[h["day"] - 1]["records"]))


def test_retention_keeps_two_fulls_and_the_newest_state(three_weeks):
    wh, _, _, _, _ = three_weeks
    fulls = wh.complete_dates(layout.ANALYSIS_FULL)
    assert fulls == [START + dt.timedelta(days=15), START + dt.timedelta(days=20)]
    assert wh.complete_dates(layout.ANALYSIS_INCREMENTAL)[0] > fulls[0]
    log = wh.read_json(wh.layout.retention_log_url(START + dt.timedelta(days=15)))
    assert log["deleted"] and log["bytes_freed"] > 0


def test_rerun_is_a_no_op_and_removed_days_rebuild(three_weeks):
    wh, sim, _, history, _ = three_weeks
    last = START + dt.timedelta(days=DAYS - 1)
    with StartedTasks() as started:
        assert run_luigi([AnalysisSet(date=last)])
    assert started.names == []
    # the last day is a compaction: remove it, leave half-written garbage in staging, rebuild
    before = state_records(wh, last)
    wh.remove_date(layout.ANALYSIS_FULL, last)
    wh.remove_date(layout.LEDGER, last)
    wh.storage.write_bytes(wh.layout.part_url(layout.ANALYSIS_FULL, last, 0, 0), b"half-written garbage")
    assert run_luigi([AnalysisSet(date=last)])
    assert state_records(wh, last) == before
    # a day in the middle (an incremental after the oldest kept full): delete it and rerun the range
    middle = 17
    date = START + dt.timedelta(days=middle)
    wh.remove_date(layout.ANALYSIS_INCREMENTAL, date)
    wh.remove_date(layout.LEDGER, date)
    assert run_luigi([AnalysisSet(date=START + dt.timedelta(days=d)) for d in range(15, DAYS)])
    assert wh.is_complete(layout.ANALYSIS_INCREMENTAL, date)
    rebuilt = set(newest_wins(state_records(wh, date)))
    want = set(history[middle]["expected"].state)
    assert want <= rebuilt, "a rebuilt day must not lose a track"
    # the source has moved on since that day: only analyses that arrived later may be extra
    truth = sim.day(DAYS - 1).truth
    assert all(middle < truth[t].available_day <= DAYS - 1 for t in rebuilt - want)
