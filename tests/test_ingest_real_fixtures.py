"""Every real analysis document ingests through the Luigi tasks and reads back equal, with the
Apache ``avro`` library as well as fastavro; malformed documents land in the ledger with a reason."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import avro.datafile
import avro.io
import fastavro
import orjson
import pytest

from pipeline import layout
from pipeline.bucketing import bucket_of
from pipeline.demo.seed import write_metadata_dump
from pipeline.formats.analysis import extra_map, to_document
from pipeline.source.document import decode_body, unwrap
from pipeline.storage import local_path
from pipeline.warehouse import Warehouse
from tasks import IngestFullSnapshot
from tests.helpers import assert_close, luigi_config, real_analysis_files, run_luigi

DATE = dt.date(2026, 11, 26)
BUCKETS = 3
NAMES = {"title": None, "artist": None}
MALFORMED = {
    "not-json": b"<html>503 Service Unavailable</html>",
    "truncated": b'{"meta": {"analyzer_version": "4.0.0"}, "segments": [{"start": 0.0, ',
    "wrong-shape": b'[{"segments": []}]',
    "no-segments": b'{"meta": {}, "track": {"tempo": 120.0}}',
    "short-pitches": orjson.dumps({"segments": [{"start": 0.0, "duration": 1.0, "confidence": 0.5,
                                                  "loudness_start": -60.0, "loudness_max_time": 0.1,
                                                  "loudness_max": -20.0, "pitches": [0.5] * 11,
                                                  "timbre": [1.0] * 12}]}),
    "nan-literal": b'{"track": {"loudness": NaN}, "segments": []}',
    "empty": b"",
    "too-big": b'{"segments": [], "pad": "' + b"x" * 1_200_000 + b'"}',
}
EXPECTED_REASON = {"not-json": "not valid JSON", "truncated": "not valid JSON", "wrong-shape": "JSON list",
                   "no-segments": "no 'segments'", "short-pitches": "has 11 values", "nan-literal": "not valid JSON",
                   "empty": "empty document", "too-big": "over the"}


PRESIGNED = ("https://echonest-analysis.s3.amazonaws.com/TR/AB/full.json?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=ASIAEXAMPLEKEY%2F20261126%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261126T000000Z"
             "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLETOKEN"
             "&X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
# parameter assignments and the values themselves (the key id and signature of the real EN profile, ours)
CREDENTIAL_MATERIAL = ("AWSAccessKeyId=", "AKIAJRDFEY23UEVW42BQ", "obmpmwXmzIb04MR3AXOBY8", "Signature=",
                       "X-Amz-Credential=", "ASIAEXAMPLEKEY", "X-Amz-Security-Token=", "EXAMPLETOKEN",
                       "0123456789abcdef0123")


def _track_id(n: int) -> str:
    return f"{n:04d}".rjust(22, "A")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    src = tmp / "source"
    src.mkdir()
    rows, expected, malformed_ids = [], {}, {}
    for n, path in enumerate(real_analysis_files()):
        track_id = _track_id(n)
        shutil.copy(path, src / f"{track_id}.json")  # copied at test time only, never into the repo
        rows.append({"track_id": track_id, "analysis_key": None, "analysis_updated_at": 1_700_000_000 + n, **NAMES})
        expected[track_id] = unwrap(decode_body(path.read_bytes()))[0]
    for n, (kind, body) in enumerate(MALFORMED.items(), start=100):
        track_id = _track_id(n)
        (src / f"{kind}.json").write_bytes(body)
        rows.append({"track_id": track_id, "analysis_key": f"{kind}.json", "analysis_updated_at": None, **NAMES})
        malformed_ids[track_id] = kind
    # a track profile whose audio_summary carries a newer-style pre-signed URL (SigV4, session token)
    track_id, analysis = _track_id(500), unwrap(decode_body(real_analysis_files()[0].read_bytes()))[0]
    profile = {"response": {"status": {"code": 0}, "track": {"id": track_id, "analysis": analysis, "audio_summary": {
        "tempo": 120.0, "analysis_url": PRESIGNED}}}}
    (src / f"{track_id}.json").write_bytes(orjson.dumps(profile))
    rows.append({"track_id": track_id, "analysis_key": None, "analysis_updated_at": 1_700_000_500, **NAMES})
    expected[track_id] = analysis
    # one track the source does not have, one whose key tries to escape the source folder
    rows.append({"track_id": _track_id(999), "analysis_key": None, "analysis_updated_at": None, **NAMES})
    rows.append({"track_id": _track_id(998), "analysis_key": "../../etc/passwd", "analysis_updated_at": None, **NAMES})
    wh_root = f"file://{tmp / 'warehouse'}"
    overrides = {"warehouse": {"buckets": BUCKETS, "root": wh_root},
                 "source": {"url": f"file://{src}", "max_document_bytes": 1_000_000, "concurrency": 4},
                 "ingest": {"failure_ratio": 0.5, "records_per_part": 5}}
    with luigi_config(overrides):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, rows)
        assert run_luigi([IngestFullSnapshot(date=DATE)])
        yield wh, expected, malformed_ids


def _apache_avro_records(path: str) -> list[dict]:
    with open(path, "rb") as f, avro.datafile.DataFileReader(f, avro.io.DatumReader()) as reader:
        return list(reader)


def test_every_real_document_reads_back_equal_with_apache_avro(ingested):
    wh, expected, _ = ingested
    manifest = wh.manifest(layout.ANALYSIS_FULL, DATE)
    seen = {}
    for bucket in range(BUCKETS):
        ids = []
        for url in wh.bucket_files(layout.ANALYSIS_FULL, DATE, bucket, manifest):
            for record in _apache_avro_records(local_path(url)):
                assert bucket_of(record["track_id"], BUCKETS) == bucket
                ids.append(record["track_id"])
                seen[record["track_id"]] = record
        assert ids == sorted(ids), f"bucket {bucket} is not sorted by track id"
    assert set(seen) == set(expected)
    for track_id, doc in expected.items():
        assert_close(doc, to_document(seen[track_id]), path=track_id)


def test_manifest_counts_every_outcome(ingested):
    wh, expected, malformed = ingested
    manifest = wh.manifest(layout.ANALYSIS_FULL, DATE)
    assert manifest.counts == {"ingested": len(expected), "missing": 1,
                                  "invalid": len(malformed) + 1, "failed": 0, "retried": 0}
    assert manifest.records == len(expected)
    assert manifest.schema_fingerprint and manifest.code_version
    assert sum(len(b.files) for b in manifest.entries()) >= len(expected) // 5


def test_malformed_documents_land_in_the_ledger_with_a_reason(ingested):
    wh, _, malformed = ingested
    ledger = {r["track_id"]: r for b in range(BUCKETS) for r in wh.read_bucket(layout.LEDGER, DATE, b)}
    for track_id, kind in malformed.items():
        entry = ledger[track_id]
        assert entry["outcome"] == "invalid", kind
        assert EXPECTED_REASON[kind] in entry["reason"], (kind, entry["reason"])
        assert entry["attempts"] == 1 and entry["first_seen"] == "2026-11-26"
    assert ledger[_track_id(999)]["outcome"] == "missing"
    assert "escapes the source prefix" in ledger[_track_id(998)]["reason"]
    assert len(ledger) == len(malformed) + 2


def test_staging_is_gone_and_dates_are_listed_complete(ingested):
    wh, _, _ = ingested
    assert wh.complete_dates(layout.ANALYSIS_FULL) == [DATE]
    assert wh.complete_dates(layout.LEDGER) == [DATE]
    staging = wh.layout.date_url(layout.ANALYSIS_FULL, DATE, staging=True)
    assert not wh.storage.exists(staging)


def test_no_stored_record_holds_a_credential_bearing_url(ingested):
    """Pre-signed URLs in track profiles (old AWSAccessKeyId/Signature and SigV4 with a session token) are
    stored without their credential parameters, in every record of every file the ingest wrote."""
    wh, expected, _ = ingested
    files = sorted(Path(local_path(wh.layout.root)).rglob("*.avro"))
    assert files
    stored = 0
    for path in files:
        with open(path, "rb") as f:
            for record in fastavro.reader(f):
                text = orjson.dumps(record, default=repr).decode()
                assert not [m for m in CREDENTIAL_MATERIAL if m.lower() in text.lower()], (path, text[:300])
                stored += 1
    assert stored >= len(expected)
    records = {r["track_id"]: r for b in range(BUCKETS) for r in wh.read_bucket(layout.ANALYSIS_FULL, DATE, b)}
    sigv4 = extra_map(records[_track_id(500)])
    assert orjson.loads(sigv4["redacted.credentials"]) == {
        "wrapper": ["X-Amz-Credential", "X-Amz-Security-Token", "X-Amz-Signature"]}
    url = orjson.loads(sigv4["wrapper"])["response"]["track"]["audio_summary"]["analysis_url"]
    assert url == ("https://echonest-analysis.s3.amazonaws.com/TR/AB/full.json?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                   "&X-Amz-Date=20261126T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host")
    legacy = [e for e in map(extra_map, records.values()) if "AWSAccessKeyId" in e.get("redacted.credentials", "")]
    assert legacy, "the real EN track profile (plamere-ensync) carries an AWSAccessKeyId URL"
    assert "full.json?Expires=" in legacy[0]["wrapper"]
