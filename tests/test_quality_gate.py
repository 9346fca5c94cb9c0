"""The quality gate blocks a dataset with out-of-range values or too many anomalies and passes a clean one."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from pipeline import layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.errors import QualityGateError
from pipeline.manifest import BucketManifest, QualityReport
from pipeline.ops.quality import ANALYSIS_RANGES, QualitySettings, QualityStats, check, enforce
from pipeline.warehouse import Warehouse
from tasks import IngestFullSnapshot
from tests.helpers import luigi_config, run_luigi

DATE = dt.date(2026, 11, 26)


def _entry(bucket=0, records=100, ingested=100, out_of_range=None, anomalies=0) -> BucketManifest:
    return BucketManifest(bucket, records, 0, [], counts={"ingested": ingested},
                          quality=QualityReport(records, out_of_range or {}, anomalies,
                                                ["t1: tempo = 900"] if out_of_range else []))


def test_checks_on_literal_manifests():
    settings = QualitySettings(max_anomaly_ratio=0.05)
    assert check([_entry(0), _entry(1)], settings, "x") == []
    [failure] = check([_entry(0), _entry(1, out_of_range={"tempo": 1})], settings, "x")
    assert "out of their documented ranges" in failure and "tempo = 900" in failure
    assert "anomalous" in check([_entry(0, anomalies=11)], settings, "x")[0]
    assert "ingested but" in check([_entry(0, ingested=99)], settings, "x")[0]
    with pytest.raises(QualityGateError, match="nothing was published"):
        enforce([_entry(0, anomalies=50)], settings, "analysis-full/2026-11-26")
    enforce([_entry(0, anomalies=50)], QualitySettings(enabled=False), "x")  # disabled: passes


def test_robust_z_flags_the_outlier_only():
    stats = QualityStats(ANALYSIS_RANGES)
    for n in range(50):
        stats.observe(f"t{n}", {"duration": 200.0 + n, "loudness": -8.0 - n % 5, "tempo": 120.0}, 3.0 + n % 7 / 10)
    stats.observe("long", {"duration": 36000.0, "loudness": -8.0, "tempo": 120.0}, 3.1)
    assert stats.anomalies(z_threshold=8.0) == 1
    stats.observe("bad", {"duration": 200.0, "loudness": 30.0, "tempo": -1.0, "key": 14}, 3.0)
    assert stats.report(8.0).out_of_range == {"key": 1, "loudness": 1, "tempo": 1}


@pytest.fixture
def local_world(tmp_path):
    sim = CatalogSimulation(seed=8, start_date=DATE, initial_tracks=40, segments=20, never_ratio=0.0,
                            late_ratio=0.0, malformed_ratio=0.0, gzip_ratio=0.0)
    source = tmp_path / "source"
    seed_local_folder(str(source), sim, 0)
    overrides = {"warehouse": {"buckets": 2, "root": f"file://{tmp_path / 'warehouse'}"}, "source": {"url": f"file://{source}"}}
    with luigi_config(overrides):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
        yield wh, source, sim


def test_an_impossible_tempo_is_ledgered_for_its_track_and_the_day_publishes(local_world):
    """Validation owns the ranges (issue 12): the gate's own ranges are asked per track before it is
    written, so one impossible value makes that track invalid instead of refusing the whole date
    for ever; the gate still refuses out-of-range values that reach it (test_checks_on_literal_manifests)."""
    wh, source, sim = local_world
    victim = sim.day(0).rows[3]["track_id"]
    doc = orjson.loads((source / f"{victim}.json").read_bytes())
    doc["track"]["tempo"] = 900.0
    (source / f"{victim}.json").write_bytes(orjson.dumps(doc))
    assert run_luigi([IngestFullSnapshot(date=DATE)])
    manifest = wh.manifest(layout.ANALYSIS_FULL, DATE)
    assert manifest.records == 39 and manifest.counts["invalid"] == 1
    assert all(not b.quality.out_of_range for b in manifest.bucket_manifests.values())
    ledger = [e for b in range(2) for e in wh.read_bucket(layout.LEDGER, DATE, b)]
    assert [(e["track_id"], e["outcome"]) for e in ledger] == [(victim, "invalid")]
    assert "track.tempo is 900.0, outside its documented range 0..500" in ledger[0]["reason"]


def test_a_clean_dataset_passes_the_gate(local_world):
    wh, _, _ = local_world
    assert run_luigi([IngestFullSnapshot(date=DATE)])
    manifest = wh.manifest(layout.ANALYSIS_FULL, DATE)
    assert sum(b.quality.checked for b in manifest.entries()) == manifest.records == 40
