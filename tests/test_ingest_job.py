"""The ingest of a chunk as the map-only mrjob job MRIngestChunk equals the in-process ingest.

One seeded ``file://`` source (missing, malformed and late analyses included) is ingested three
ways: in process (the default), as MRIngestChunk on mrjob's local runner (subprocesses), and one
chunk on the spark runner (a local Spark on loopback, one launch: Spark starts slowly). Records,
ledger, counts, quality statistics and id indexes must be equal; failures over the ratio commit
nothing; a committed chunk is never fetched again.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from pipeline import config, layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.errors import TooManyFailuresError
from pipeline.formats.avro_io import read_records
from pipeline.ingest.chunk import ChunkSettings
from pipeline.ingest.engine import Counts
from pipeline.ingest.slices import slice_bounds
from pipeline.layout import Layout
from pipeline.snapshots.chunk_job import ingest_chunk_job
from pipeline.source import source_settings
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tasks import AnalysisSet, IngestChunk, IngestFullSnapshot
from tests.helpers import luigi_config, run_luigi

DATE = dt.date(2026, 11, 26)
DAY1 = DATE + dt.timedelta(days=1)
CHUNKS = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The seeded source, its metadata dump, and the in-process reference ingest of it."""
    base = tmp_path_factory.mktemp("ingest-job")
    sim = CatalogSimulation(seed=21, start_date=DATE, initial_tracks=90, segments=20, never_ratio=0.05,
                            malformed_ratio=0.05, late_ratio=0.05)
    seed_local_folder(str(base / "source"), sim, 0)
    shutil.copytree(base / "source", base / "source-day1")
    seed_local_folder(str(base / "source-day1"), sim, 1, since_day=0)
    reference = _warehouse(base / "inprocess", sim)
    with luigi_config(_overrides(base, "inprocess", "inprocess")):
        assert run_luigi([IngestFullSnapshot(date=DATE)])
    write_metadata_dump(reference.layout, reference.storage, DAY1, sim.day(1).rows)
    with luigi_config(_day1(_overrides(base, "inprocess", "inprocess"), base)):
        assert run_luigi([AnalysisSet(date=DAY1)])
    assert reference.is_complete(layout.ANALYSIS_INCREMENTAL, DAY1)
    return base, sim, reference


def _day1(overrides: dict, base: Path) -> dict:
    """The next day: the source has the day's new and late analyses; an incremental is due."""
    return {**overrides, "source": {"url": f"file://{base / 'source-day1'}"},
            "pipeline": {"start_date": layout.format_date(DATE)}}


def _overrides(base: Path, name: str, runner: str, **ingest) -> dict:
    return {"warehouse": {"root": f"file://{base / name}", "buckets": CHUNKS},
            "source": {"url": f"file://{base / 'source'}"},
            "ingest": {"records_per_part": 7, "failure_ratio": 0.01, "runner": runner,
                       "slices": 3, **ingest}}


def _warehouse(root: Path, sim: CatalogSimulation) -> Warehouse:
    wh = Warehouse(Layout(f"file://{root}"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
    return wh


def _bucket(wh: Warehouse, dataset: str, bucket: int) -> list[dict]:
    return list(wh.read_bucket(dataset, DATE, bucket))


def _same_bucket_manifest(ours: dict, theirs: dict) -> None:
    for key in ("records", "counts", "ledger_records", "index"):  # an empty bucket has no index file
        assert ours.get(key, "absent") == theirs.get(key, "absent"), key
    for key in ("checked", "out_of_range", "anomalies"):
        assert ours["quality"][key] == theirs["quality"][key], key


def test_slices_split_the_id_range_in_order():
    ids = [f"id{i:03d}" for i in range(10)]
    assert slice_bounds(ids, 10, 3) == [(None, "id003"), ("id003", "id006"), ("id006", None)]
    assert slice_bounds(ids[:2], 2, 4) == [(None, "id001"), ("id001", None)]  # never an empty slice
    assert slice_bounds([], 0, 4) == [(None, None)]


def test_local_runner_full_and_incremental_ingest_equal_the_in_process_ones(world):
    base, sim, reference = world
    wh = _warehouse(base / "local", sim)
    with luigi_config(_overrides(base, "local", "local")):
        assert run_luigi([IngestFullSnapshot(date=DATE)])
        manifest, expected = (w.manifest(layout.ANALYSIS_FULL, DATE).as_json() for w in (wh, reference))
        assert manifest["records"] == expected["records"] > 60
        assert manifest["counts"] == expected["counts"] and expected["counts"]["missing"] > 0
        for bucket in range(CHUNKS):
            assert _bucket(wh, layout.ANALYSIS_FULL, bucket) == _bucket(reference, layout.ANALYSIS_FULL, bucket)
            assert _bucket(wh, layout.LEDGER, bucket) == _bucket(reference, layout.LEDGER, bucket)
            assert (list(wh.read_index(layout.ANALYSIS_FULL, DATE, bucket))
                    == list(reference.read_index(layout.ANALYSIS_FULL, DATE, bucket)))
            ours = manifest["bucket_manifests"][layout.bucket_name(bucket)]
            _same_bucket_manifest(ours, expected["bucket_manifests"][layout.bucket_name(bucket)])
            assert ours["slices"] == 3 and len(ours["files"]) > 3  # several parts per slice, in slice order
            assert [f["name"] for f in ours["files"]] == sorted(f["name"] for f in ours["files"])
        # the slices' working files went once their chunk committed
        assert layout.SLICES not in wh.storage.list_names(wh.layout.date_url(layout.ANALYSIS_FULL, DATE))
        # idempotent: the published chunks are complete and a rerun fetches nothing
        stamp = os.path.getmtime(wh.layout.success_url(layout.ANALYSIS_FULL, DATE)[len("file://"):])
        assert all(IngestChunk(date=DATE, chunk=c).complete() for c in range(CHUNKS))
        assert run_luigi([IngestFullSnapshot(date=DATE)])
        assert os.path.getmtime(wh.layout.success_url(layout.ANALYSIS_FULL, DATE)[len("file://"):]) == stamp
    # the next day's incremental (the delta: new, re-analysed, due retries), also as the job
    write_metadata_dump(wh.layout, wh.storage, DAY1, sim.day(1).rows)
    with luigi_config(_day1(_overrides(base, "local", "local"), base)):
        assert run_luigi([AnalysisSet(date=DAY1)])
    manifest, expected = (w.manifest(layout.ANALYSIS_INCREMENTAL, DAY1).as_json() for w in (wh, reference))
    assert manifest["records"] == expected["records"] > 0 and manifest["counts"] == expected["counts"]
    for bucket in range(CHUNKS):
        ours, theirs = (m["bucket_manifests"][layout.bucket_name(bucket)] for m in (manifest, expected))
        _same_bucket_manifest(ours, theirs)
        assert ours["delta"] == theirs["delta"] and ours["slices"] == 3
        assert (list(wh.read_bucket(layout.ANALYSIS_INCREMENTAL, DAY1, bucket))
                == list(reference.read_bucket(layout.ANALYSIS_INCREMENTAL, DAY1, bucket)))
        assert list(wh.read_bucket(layout.LEDGER, DAY1, bucket)) == list(reference.read_bucket(layout.LEDGER, DAY1,
                                                                                                bucket))
    assert sum(m["delta"]["new"] for m in expected["bucket_manifests"].values()) > 0
    assert sum(m["delta"]["retried"] for m in expected["bucket_manifests"].values()) > 0


def test_progress_and_failure_ratio(world, tmp_path):
    base, sim, reference = world
    source = tmp_path / "source"
    shutil.copytree(base / "source", source)
    wh = _warehouse(tmp_path / "wh", sim)
    with luigi_config({**_overrides(tmp_path, "wh", "local"), "source": {"url": f"file://{source}"}}):
        assert run_luigi([IngestChunk(date=DATE, chunk=1).requires()])  # the catalog
        # a few documents that cannot be read (a folder where the file should be): failures, not facts
        keys = [r.analysis_key for r in _catalog(wh, 1) if r.analysis_key and (source / r.analysis_key).is_file()][:3]
        for key in keys:
            (source / key).unlink()
            (source / key).mkdir()
        settings = ChunkSettings(failure_ratio=0.01, records_per_part=7)
        template = config.source().key_template
        seen: list[Counts] = []
        with pytest.raises(TooManyFailuresError, match="failure_ratio"):
            ingest_chunk_job(wh, source_settings(), template, layout.ANALYSIS_FULL, DATE, 1, settings,
                             "local", 3, progress=seen.append, poll_seconds=0.05)
        staging = wh.layout.date_url(layout.ANALYSIS_FULL, DATE, staging=True)
        assert not [n for n in wh.storage.list_names(staging) if n.startswith("part-00001")]  # nothing kept
        assert not wh.bucket_committed(layout.ANALYSIS_FULL, DATE, 1)
        assert not wh.bucket_committed(layout.LEDGER, DATE, 1)
        # the source healthy again: the rerun commits what the in-process ingest has, with progress shown
        for key in keys:
            (source / key).rmdir()
            shutil.copy(base / "source" / key, source / key)
        info = ingest_chunk_job(wh, source_settings(), template, layout.ANALYSIS_FULL, DATE, 1, settings,
                                "local", 3, progress=seen.append, poll_seconds=0.05)
        expected = reference.manifest(layout.ANALYSIS_FULL, DATE).as_json()["bucket_manifests"][layout.bucket_name(1)]
        _same_bucket_manifest(info.as_json(), expected)
        assert seen and seen[-1].as_dict() == expected["counts"]
        assert seen[-1].attempted == _catalog_size(wh, 1)


def test_spark_runner_chunk_equals_the_in_process_one(world):
    base, sim, reference = world
    wh = _warehouse(base / "spark", sim)
    with luigi_config(_overrides(base, "spark", "spark", slices=2)):
        assert run_luigi([IngestChunk(date=DATE, chunk=0)])
    entry = wh.read_json(wh.layout.bucket_manifest_url(layout.ANALYSIS_FULL, DATE, 0))
    expected = reference.manifest(layout.ANALYSIS_FULL, DATE).as_json()["bucket_manifests"][layout.bucket_name(0)]
    _same_bucket_manifest(entry, expected)
    staged = [r for f in entry["files"]
              for r in read_records(wh.storage, wh.layout.file_url(layout.ANALYSIS_FULL, DATE, f["name"], True))]
    assert staged == _bucket(reference, layout.ANALYSIS_FULL, 0)
    ledger = list(read_records(wh.storage, wh.layout.part_url(layout.LEDGER, DATE, 0, 0)))
    assert ledger == _bucket(reference, layout.LEDGER, 0)
    assert wh.storage.list_names(wh.layout.slices_url(layout.ANALYSIS_FULL, DATE)) == []


def _catalog(wh: Warehouse, bucket: int):
    from pipeline.source.catalog import read_catalog_bucket

    return list(read_catalog_bucket(wh, DATE, bucket))


def _catalog_size(wh: Warehouse, bucket: int) -> int:
    return len(_catalog(wh, bucket))


def test_spark_without_java_fails_naming_the_fix(monkeypatch, tmp_path):
    from pipeline.errors import ConfigError
    from pipeline.jobs import runner_args

    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ConfigError, match="Java 17.*openjdk-17-jre-headless"):
        runner_args("spark", None, str(tmp_path), 2)
    with pytest.raises(ConfigError, match="unknown mrjob runner 'yarn'"):
        runner_args("yarn", None, str(tmp_path), 2)
    # with an mrjob.conf the conf decides where Spark runs: nothing is checked or added here
    assert runner_args("spark", "mrjob.conf", str(tmp_path), 2)[-2:] == ["--conf-path", "mrjob.conf"]
