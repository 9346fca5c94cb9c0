"""The typed manifest: the same JSON on disk, validation with a clear error, and no silent misread
of a dataset written with another bucket count than the configured one."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import layout
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.errors import BucketCountError, IncompleteDatasetError
from pipeline.formats import LEDGER
from pipeline.ingest.chunk import write_ledger_bucket
from pipeline.layout import Layout
from pipeline.manifest import BucketManifest, Manifest, MergeReport, QualityReport
from pipeline.source.catalog import build_catalog, read_catalog_bucket
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tests.helpers import write_cfg
from tests.support.fixtures_faults import PROJECT_ROOT

D = dt.date(2026, 11, 26)

# A compaction's dataset manifest as the warehouse has always written it, plus a key from a newer version.
ON_DISK = {
    "dataset": "analysis-full", "date": "2026-11-26", "schema": "analysis", "schema_fingerprint": "ab12",
    "code_version": "0.1.0", "buckets": 2, "records": 3, "bytes": 300, "kind": "compaction",
    "counts": {"ingested": 2, "missing": 1}, "from_a_newer_version": {"kept": True},
    "bucket_manifests": {
        "00000": {"bucket": 0, "records": 2, "bytes": 200, "index": "_index/ids-00000.avro",
                  "files": [{"name": "part-00000-0000.avro", "records": 2, "bytes": 200}],
                  "counts": {"ingested": 2}, "ledger_records": 0, "inputs": ["file:///w/a"], "seconds": 0.5,
                  "requests": {"gets": 2, "bytes": 9000}, "delta": {"new": 2, "retried": 0},
                  "merge": {"inputs": 5, "replaced": 2, "taken_down": 1, "verified": True},
                  "quality": {"checked": 2, "out_of_range": {}, "anomalies": 0, "examples": [], "z_threshold": 8.0}},
        "00001": {"bucket": 1, "records": 1, "bytes": 100, "files": [
            {"name": "part-00001-0000.avro", "records": 1, "bytes": 100}]},
    },
}


def test_a_manifest_reads_into_types_and_writes_back_the_same_json():
    manifest = Manifest.from_json(ON_DISK, "m.json")
    entry = manifest.bucket(0)
    assert (manifest.date, manifest.kind, manifest.records) == (D, "compaction", 3)
    assert entry.merge == MergeReport(5, 2, 1, verified=True) and entry.quality == QualityReport(2, {}, 0, [], 8.0)
    assert entry.files[0].name == "part-00000-0000.avro" and manifest.bucket(1).quality is None
    assert manifest.extra == {"from_a_newer_version": {"kept": True}}
    assert json.dumps(manifest.as_json(), sort_keys=True) == json.dumps(ON_DISK, sort_keys=True)


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.pop("records"), "lacks records"),
    (lambda m: m["bucket_manifests"]["00001"].pop("files"), "bucket 00001 is not a valid manifest: it lacks files"),
    (lambda m: m.update(date="26/11/2026"), "not a dataset date"),
])
def test_a_damaged_manifest_is_refused_naming_the_file(damage, message):
    broken = json.loads(json.dumps(ON_DISK))
    damage(broken)
    with pytest.raises(Exception, match=message) as err:
        Manifest.from_json(broken, "file:///w/analysis-full/2026-11-26/_manifest.json")
    assert "_manifest.json" in str(err.value) or "dataset date" in str(err.value)


def test_asking_for_a_bucket_the_dataset_does_not_have_names_its_count():
    with pytest.raises(IncompleteDatasetError, match="no bucket 7 .*written with 2 buckets"):
        Manifest.from_json(ON_DISK, "m.json").bucket(7)


def _ledger_row(track_id: str) -> dict:
    return {"track_id": track_id, "outcome": "missing", "reason": "404 from the source", "attempts": 1,
            "first_seen": "2026-11-26", "last_attempt": "2026-11-26", "source_key": f"{track_id}.json"}


@pytest.fixture
def four_buckets(tmp_path) -> Warehouse:
    """A catalog and a ledger of ``D`` written with 4 buckets (one ledger row in each)."""
    from pipeline.demo.seed import write_metadata_dump

    wh = Warehouse(Layout(f"file://{tmp_path}/warehouse"), LocalStorage(), buckets=4)
    rows = CatalogSimulation(seed=3, start_date=D, initial_tracks=40).day(0).rows
    write_metadata_dump(wh.layout, wh.storage, D, rows)
    build_catalog(wh, D, 4)
    for bucket in range(4):
        write_ledger_bucket(wh, D, bucket, [_ledger_row(f"{bucket}" * 22)], "null")
    wh.publish(layout.LEDGER, D, LEDGER, 4)
    return wh


def test_reading_a_bucket_of_a_dataset_written_with_another_bucket_count_fails_clearly(four_buckets):
    same = sum(1 for b in range(4) for _ in read_catalog_bucket(four_buckets, D, b))
    assert same == four_buckets.manifest(layout.CATALOG, D).records > 0
    other = Warehouse(four_buckets.layout, four_buckets.storage, buckets=2)
    with pytest.raises(BucketCountError, match="written with 4 buckets but .* = 2"):
        list(read_catalog_bucket(other, D, 0))
    assert other.manifest(layout.CATALOG, D, whole=True).buckets == 4  # read whole, any count is read right
    assert other.load_manifest(layout.CATALOG, D).buckets == 4  # sizes and views may still read it


def _run(cmd: list[str], root: str, buckets: int, tmp_path, old_key: bool = False) -> subprocess.CompletedProcess:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    count = {"ingest": {"chunks": buckets}} if old_key else {"warehouse": {"buckets": buckets}}
    cfg = write_cfg(tmp_path / f"buckets-{buckets}.cfg", {
        **count, "warehouse": {"root": root, **count.get("warehouse", {})}, "source": {"url": f"file://{source}"}})
    return subprocess.run(cmd, env={"LUIGI_CONFIG_PATH": str(cfg), "PATH": "/usr/bin:/bin"}, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("buckets", [4, 2])
def test_the_plan_command_refuses_a_catalog_of_another_bucket_count(four_buckets, tmp_path, buckets):
    """``echonest-plan`` reads the catalog bucket by bucket: with 2 configured it would price half of it."""
    run = _run([str(Path(sys.executable).with_name("echonest-plan")), "--date", layout.format_date(D)],
               four_buckets.layout.root, buckets, tmp_path)
    if buckets == 4:
        assert run.returncode == 0 and "no analysis body was downloaded" in run.stdout, run.stderr[-2000:]
    else:
        assert run.returncode == 2, run.stderr[-2000:]
        assert "written with 4 buckets but" in run.stderr and "docs/runbook.md" in run.stderr


@pytest.mark.parametrize("buckets", [4, 2])
def test_the_old_key_ingest_chunks_still_sets_the_bucket_count_with_a_deprecation_warning(four_buckets, tmp_path,
                                                                                         buckets):
    run = _run([str(Path(sys.executable).with_name("echonest-plan")), "--date", layout.format_date(D)],
               four_buckets.layout.root, buckets, tmp_path, old_key=True)
    assert run.returncode == (0 if buckets == 4 else 2), run.stderr[-2000:]
    assert "[ingest] chunks is deprecated. Please use [warehouse] buckets" in run.stderr


@pytest.mark.parametrize("buckets", [4, 2])
def test_the_ledger_command_reads_a_whole_ledger_of_any_bucket_count(four_buckets, tmp_path, buckets):
    run = _run([sys.executable, "-m", "pipeline.ops.ledger", "--date", layout.format_date(D)],
               four_buckets.layout.root, buckets, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(f"ledger {layout.format_date(D)}: 4 tracks (missing 4)")


def test_a_committed_bucket_reads_back_equal():
    entry = BucketManifest.from_json(ON_DISK["bucket_manifests"]["00000"], "b.json")
    assert BucketManifest.from_json(entry.as_json(), "b.json") == entry
