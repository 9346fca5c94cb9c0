"""The full ingest over the real S3 protocol (moto server on loopback), checked against ground truth."""

from __future__ import annotations

import orjson
import pytest

from pipeline import layout
from pipeline.formats.analysis import to_document
from pipeline.ingest.plan import Prices, plan
from pipeline.source import source_from_config
from tasks import IngestChunk, IngestFullSnapshot
from tests.conftest import WORLD_DATE
from tests.helpers import StartedTasks, assert_close, luigi_config, run_luigi


def _records(wh, dataset=layout.ANALYSIS_FULL, date=WORLD_DATE):
    manifest = wh.manifest(dataset, date)
    return [r for b in range(manifest.buckets) for r in wh.read_bucket(dataset, date, b, manifest)]


def test_full_ingest_matches_ground_truth_and_never_touches_decoys(s3_world):
    wh, sim, _ = s3_world
    assert run_luigi([IngestFullSnapshot(date=WORLD_DATE)], workers=2)
    truth = sim.day(0).truth
    expected_ok = {t for t, v in truth.items() if v.in_dump and v.available_day == 0 and not v.malformed}
    expected_missing = {t for t, v in truth.items() if v.in_dump and v.available_day is None or
                        (v.available_day or 0) > 0}
    expected_invalid = {t for t, v in truth.items() if v.in_dump and v.available_day == 0 and v.malformed}
    assert expected_missing and expected_invalid, "the simulation should exercise every outcome"
    records = {r["track_id"]: r for r in _records(wh)}
    assert set(records) == expected_ok
    ledger = {r["track_id"]: r for r in _records(wh, layout.LEDGER)}
    assert {t for t, e in ledger.items() if e["outcome"] == "missing"} == expected_missing
    assert {t for t, e in ledger.items() if e["outcome"] == "invalid"} == expected_invalid
    objects = sim.objects_available(0)
    for spec in list(objects.values())[:10]:
        if spec.track_id in records:
            assert_close(orjson.loads(spec.document()), to_document(records[spec.track_id]))
    manifest = wh.manifest(layout.ANALYSIS_FULL, WORLD_DATE)
    requests = [b.requests for b in manifest.entries()]
    # one GET per catalog track (retries aside), never a LIST: decoys are never listed nor fetched
    assert sum(r["lists"] for r in requests) == 0
    assert sum(r["gets"] for r in requests) == len(sim.day(0).rows)


def test_rerun_of_a_complete_date_is_a_no_op(s3_world):
    wh, _, _ = s3_world
    assert run_luigi([IngestFullSnapshot(date=WORLD_DATE)])
    success = wh.layout.success_url(layout.ANALYSIS_FULL, WORLD_DATE)
    before = wh.storage.read_bytes(wh.layout.manifest_url(layout.ANALYSIS_FULL, WORLD_DATE))
    with StartedTasks() as started:
        assert run_luigi([IngestFullSnapshot(date=WORLD_DATE), IngestChunk(date=WORLD_DATE, chunk=1)])
    assert started.names == []
    assert wh.storage.exists(success)
    assert wh.storage.read_bytes(wh.layout.manifest_url(layout.ANALYSIS_FULL, WORLD_DATE)) == before


def test_a_rebuilt_date_has_identical_records(s3_world):
    wh, _, _ = s3_world
    assert run_luigi([IngestFullSnapshot(date=WORLD_DATE)])
    first = _records(wh)
    wh.remove_date(layout.ANALYSIS_FULL, WORLD_DATE)
    wh.remove_date(layout.LEDGER, WORLD_DATE)
    assert run_luigi([IngestFullSnapshot(date=WORLD_DATE)])
    assert _records(wh) == first


def test_too_many_failures_publish_nothing(s3_world, s3_endpoint):
    wh, _, overrides = s3_world
    # every GET is answered 403 by a bucket that does not exist: errors, not "missing"
    with luigi_config({"source": {"url": "s3://no-such-bucket-here/analysis/", "max_attempts": 1}}):
        assert not run_luigi([IngestChunk(date=WORLD_DATE, chunk=0)])
    assert not wh.bucket_committed(layout.ANALYSIS_FULL, WORLD_DATE, 0)
    assert not wh.bucket_committed(layout.LEDGER, WORLD_DATE, 0)
    assert wh.complete_dates(layout.ANALYSIS_FULL) == []


def test_unreachable_endpoint_fails_fast_naming_it(s3_world):
    from pipeline.demo.s3server import free_port
    from pipeline.errors import SourceUnavailableError
    from pipeline.ingest.chunk import ChunkSettings, ingest_bucket
    from pipeline.ingest.work import full_items
    from pipeline.source.catalog import CatalogRow

    wh, _, _ = s3_world
    dead = f"http://127.0.0.1:{free_port()}"
    rows = [CatalogRow(f"{n:022d}", None, None) for n in range(300)]
    with luigi_config({"source": {"endpoint_url": dead, "max_attempts": 1}}):
        source = source_from_config()
        with pytest.raises(SourceUnavailableError, match=dead.replace(".", r"\.")):
            ingest_bucket(wh, source, layout.ANALYSIS_FULL, WORLD_DATE, 1, full_items(rows, "{track_id}.json"),
                          ChunkSettings(concurrency=4, unreachable_after=5))
    # gave up after the threshold plus what was in flight, not after trying all 300 tracks
    assert source.stats.gets < 2 * (5 + 2 * 4 + 4)
    assert not wh.bucket_committed(layout.LEDGER, WORLD_DATE, 1)  # no flood of "failed" ledger entries
    assert not wh.bucket_committed(layout.ANALYSIS_FULL, WORLD_DATE, 1)


def test_plan_counts_found_tracks_and_bytes_without_downloading(s3_world):
    wh, sim, _ = s3_world
    assert run_luigi([IngestChunk(date=WORLD_DATE, chunk=0).requires()])
    source = source_from_config()
    chunks = plan(wh, source, WORLD_DATE, 4, "{track_id}.json", Prices())
    per_chunk = [c for c in chunks if c.chunk >= 0]
    objects = sim.objects_available(0)
    in_dump = {r["track_id"] for r in sim.day(0).rows}
    assert sum(c.tracks for c in per_chunk) == len(in_dump)
    assert sum(c.found for c in per_chunk) == sum(1 for s in objects.values() if s.track_id in in_dump)
    assert sum(c.bytes for c in per_chunk) == sum(len(s.body()) for s in objects.values() if s.track_id in in_dump)
    assert source.stats.gets == 0 and source.stats.lists >= 1
    assert all(c.cost_usd > 0 for c in per_chunk if c.tracks)
