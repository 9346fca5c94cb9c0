"""DailyAttributes over three simulated weeks (a compaction every 5 days): one record per catalog track
with an analysis, yesterday's records kept byte for byte, new ones equal to the maths; rebuilds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import shutil
from pathlib import Path

import fastavro
import luigi
import numpy as np
from luigi.tools.range import RangeDaily

from pipeline import layout
from pipeline.attributes.daily import _previous
from pipeline.attributes.maths import compute, null_reasons
from pipeline.formats import raw_schema, schema, schema_fingerprint
from pipeline.formats.arrays import arrays
from pipeline.layout import Layout
from pipeline.storage import LocalStorage, local_path
from pipeline.warehouse import Warehouse
from tasks import DailyAttributes
from tests.helpers import StartedTasks, run_luigi
from tests.simulation import SIM_DAYS, SIM_START, attribute_records, newest_wins


def _bytes(record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema("attributes"), record, strict=True)
    return out.getvalue()


def test_one_record_per_catalog_track_with_an_analysis(three_weeks):
    _, sim, _, history, _ = three_weeks
    for h in history:
        catalog = {r["track_id"] for r in sim.day(h["day"]).rows}
        with_analysis = set(newest_wins(h["records"])) & catalog
        assert set(h["attributes"]) == with_analysis, f"day {h['day']}"
        assert h["attributes_manifest"].records == len(with_analysis)


def test_known_tracks_are_kept_byte_for_byte_and_new_ones_computed(three_weeks):
    _, _, _, history, _ = three_weeks
    recomputed = kept = 0
    for before, h in zip(history, history[1:], strict=False):
        analyses = newest_wins(h["records"])
        for track_id, record in h["attributes"].items():
            old = before["attributes"].get(track_id)
            if old is not None and old["source_updated_at"] == analyses[track_id]["source_updated_at"]:
                assert _bytes(record) == _bytes(old), f"day {h['day']}: {track_id} was recomputed"
                kept += 1
            else:
                # equal once encoded: the vectors are stored as Avro float (float32)
                assert _bytes(record) == _bytes(compute(arrays(analyses[track_id]))), f"day {h['day']}: {track_id}"
                recomputed += 1
        counts = h["attributes_manifest"].counts
        assert counts["computed"] + counts["kept"] == len(h["attributes"])
    assert kept > 10 * recomputed > 0, "most tracks should be kept, some computed"


def test_first_day_is_full_and_later_days_incremental(three_weeks):
    _, _, _, history, _ = three_weeks
    modes = [h["attributes_manifest"].mode for h in history]
    assert modes == ["full"] + ["incremental"] * (SIM_DAYS - 1)
    summary = history[-1]["attributes_manifest"].summary
    assert sum(summary["key_histogram"]) == sum(summary["mode_counts"]) == len(history[-1]["attributes"])


def test_a_deleted_day_is_rebuilt_identically_by_a_range_backfill(three_weeks):
    wh, _, _, history, _ = three_weeks
    middle = SIM_DAYS - 4
    date = SIM_START + dt.timedelta(days=middle)
    last = SIM_START + dt.timedelta(days=SIM_DAYS - 1)
    before = {t: _bytes(r) for t, r in attribute_records(wh, date).items()}
    wh.remove_date(layout.ATTRIBUTES, date)
    backfill = RangeDaily(of=DailyAttributes, start=date - dt.timedelta(days=2), stop=last + dt.timedelta(days=1),
                          reverse=True)
    with StartedTasks() as started:
        assert run_luigi([backfill])
    assert {t: _bytes(r) for t, r in attribute_records(wh, date).items()} == before
    assert [n for n in started.names if n.startswith("DailyAttributes")] == [DailyAttributes(date=date).task_id]
    with StartedTasks() as started:
        assert run_luigi([DailyAttributes(date=last)])
    assert started.names == []


def test_bulk_complete_uses_one_listing(three_weeks, monkeypatch):
    wh, _, _, _, _ = three_weeks
    from pipeline.storage import LocalStorage

    expected = set(wh.complete_dates(layout.ATTRIBUTES))
    calls = []
    original = LocalStorage.list_names
    monkeypatch.setattr(LocalStorage, "list_names", lambda self, url: calls.append(url) or original(self, url))
    monkeypatch.setattr(LocalStorage, "exists", lambda self, url: calls.append(url) or False)
    dates = [SIM_START + dt.timedelta(days=d) for d in range(-100, 265)]
    floor = min(wh.complete_dates(layout.ANALYSIS_FULL) + wh.complete_dates(layout.ANALYSIS_INCREMENTAL))
    calls.clear()
    complete = DailyAttributes.bulk_complete.__func__(DailyAttributes, iter(dates))  # RangeDaily passes a map
    # before the start date, and before the oldest analysis set retention kept, there is nothing to build
    assert set(complete) == expected | {d for d in dates if d < floor}
    assert floor > SIM_START  # retention ran in the simulation
    assert len(calls) == 3, calls  # attributes, analysis-full, analysis-incremental: one listing each
    assert luigi.task.Task.bulk_complete is not DailyAttributes.bulk_complete


def test_yesterday_read_through_its_record_index_equals_yesterday_decoded(three_weeks, monkeypatch):
    """The index path (no decoding) and the decoding path (dates written before record indexes) agree."""
    wh, _, _, history, _ = three_weeks
    date = SIM_START + dt.timedelta(days=SIM_DAYS - 2)
    manifest = wh.manifest(layout.ATTRIBUTES, date)
    buckets = manifest.buckets
    indexed = [list(_previous(wh, date, b)) for b in range(buckets)]
    assert all(e.record_index for e in manifest.entries())
    assert all(p.record is None for ps in indexed for p in ps), "the index path must not decode"
    legacy = dataclasses.replace(manifest, bucket_manifests={
        b: dataclasses.replace(e, record_index=None) for b, e in manifest.bucket_manifests.items()})
    monkeypatch.setattr(type(wh), "manifest", lambda self, dataset, d: legacy)
    decoded = [list(_previous(wh, date, b)) for b in range(buckets)]
    assert sum(map(len, decoded)) == manifest.records > 0
    def strip(parts):  # rows compared as bytes: NaN (a null) equals NaN, and the index yields array views
        return [[(p.track_id, p.source_updated_at, p.raw, np.asarray(p.row, np.float64).tobytes()) for p in ps]
                for ps in parts]

    assert strip(decoded) == strip(indexed)


def _attributes_format_1_schema() -> dict:
    """attributes.avsc of format 1: ``null_reasons`` was a map (polars cannot read maps)."""
    raw = raw_schema("attributes")
    for f in raw["fields"]:
        if f["name"] == "null_reasons":
            f["type"] = {"type": "map", "values": "string"}
    return fastavro.parse_schema(raw)


def test_a_day_of_attributes_format_1_is_upgraded_by_the_next_day_to_the_same_bytes(three_weeks, tmp_path):
    """Yesterday written in format 1 (map): its records are decoded, upgraded and re-encoded, giving exactly
    the bytes the current format writes; the record index of such a part is not used to copy bytes."""
    wh, _, _, _, _ = three_weeks
    date = SIM_START + dt.timedelta(days=SIM_DAYS - 2)
    manifest = wh.manifest(layout.ATTRIBUTES, date)
    src = Path(local_path(wh.layout.date_url(layout.ATTRIBUTES, date)))
    old = Warehouse(Layout(f"file://{tmp_path}"), LocalStorage())
    dst = Path(local_path(old.layout.date_url(layout.ATTRIBUTES, date)))
    shutil.copytree(src, dst)
    old_schema = _attributes_format_1_schema()
    for part in dst.glob("part-*.avro"):
        with open(part, "rb") as f:
            records = [{**r, "null_reasons": null_reasons(r)} for r in fastavro.reader(f)]
        with open(part, "wb") as f:
            fastavro.writer(f, old_schema, records, codec="snappy")
    for index in dst.glob("_index/records-*.avro"):
        with open(index, "rb") as f:
            entries = [{**e, "schema_fingerprint": schema_fingerprint(old_schema)} for e in fastavro.reader(f)]
        with open(index, "wb") as f:
            fastavro.writer(f, schema("record_index"), entries)
    kept = upgraded = 0
    for bucket in range(manifest.buckets):
        current = list(_previous(wh, date, bucket))
        legacy = list(_previous(old, date, bucket))
        assert [e.track_id for e in legacy] == [e.track_id for e in current]
        for now, then in zip(current, legacy, strict=True):
            assert then.raw is None and isinstance(then.record["null_reasons"], list)
            assert _bytes(then.record) == now.raw and np.array_equal(then.row, now.row, equal_nan=True)
            upgraded += 1
        kept += len(current)
    assert upgraded == kept == manifest.records > 0


def test_manifest_counts_equal_the_reference_model(three_weeks):
    """kept / computed / dropped / without_analysis of every day, from the reference model (takedowns included)."""
    _, sim, _, history, _ = three_weeks
    dropped_total = 0
    for before, h in zip(history, history[1:], strict=False):
        state = h["expected"].state  # track id -> source_updated_at of the newest analysis the model holds
        catalog = [r["track_id"] for r in sim.day(h["day"]).rows]
        prior = {t: r["source_updated_at"] for t, r in before["attributes"].items()}
        want = {"kept": 0, "computed": 0, "without_analysis": 0,
                "dropped": len(set(prior) - set(catalog))}
        for track_id in catalog:
            if track_id not in state:
                want["without_analysis"] += 1
            elif track_id in prior and prior[track_id] == state[track_id]:
                want["kept"] += 1
            else:
                want["computed"] += 1
        assert h["attributes_manifest"].counts == want, f"day {h['day']}"
        dropped_total += want["dropped"]
    assert dropped_total > 0, "the simulation should take tracks down"
