"""Outputs are exact: the same bytes under any hash seed, and nothing but the manifest's files after a kill.

- Avro files carry their schema in the header; fastavro writes the parsed schema, whose key order
  follows ``PYTHONHASHSEED``. The writers put a canonical (sorted) schema there instead, so two
  ingests of the same inputs in processes with different seeds give byte-identical files.
- Atomic writers keep their temporary file in a ``_temporary`` folder next to the target, the id
  index's in ``_index/_temporary``. After ``kill -9`` and a rerun, the published date holds exactly
  the files its manifest names (plus ``_SUCCESS``, the manifest and the bucket manifests).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess

import pytest

from pipeline import layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.layout import Layout
from pipeline.storage import LocalStorage, local_path
from pipeline.warehouse import Warehouse
from tests.helpers import luigi_cli, run_and_kill, subprocess_env, write_cfg
from tests.support.fixtures_faults import PROJECT_ROOT, assert_published_whole

DATE = dt.date(2026, 11, 26)
INGESTED = (layout.CATALOG, layout.ANALYSIS_FULL, layout.LEDGER)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A file:// source with every kind of object (gzip, malformed, missing) and its dump rows."""
    folder = tmp_path_factory.mktemp("exact") / "source"
    sim = CatalogSimulation(seed=31, start_date=DATE, initial_tracks=240, segments=24)
    seed_local_folder(str(folder), sim, 0)
    return folder, sim.day(0).rows


def _prepare(tmp_path, name: str, source, **source_extra) -> tuple[Warehouse, list[str], dict]:
    folder, rows = source
    root = tmp_path / name
    cfg = write_cfg(tmp_path / f"{name}.cfg", {
        "warehouse": {"root": f"file://{root}", "buckets": 3},
        "source": {"url": f"file://{folder}/", "concurrency": 4, **source_extra},
        "ingest": {"failure_ratio": 0.05, "records_per_part": 40}})
    wh = Warehouse(Layout(f"file://{root}"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, DATE, rows)
    return wh, luigi_cli("IngestFullSnapshot", "--date", layout.format_date(DATE), cfg=cfg), subprocess_env(cfg)


def _avro_hashes(wh: Warehouse) -> dict[str, str]:
    out = {}
    for dataset in INGESTED:
        base = wh.layout.date_url(dataset, DATE)
        for name in wh.storage.list_files(base):
            if name.endswith(".avro"):
                with open(local_path(f"{base}/{name}"), "rb") as f:
                    out[f"{dataset}/{name}"] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_two_runs_under_different_hash_seeds_write_byte_identical_avro_files(source, tmp_path):
    hashes = []
    for seed in ("1", "4242"):
        wh, cmd, env = _prepare(tmp_path, f"seed-{seed}", source)
        subprocess.run(cmd, env={**env, "PYTHONHASHSEED": seed}, cwd=PROJECT_ROOT, check=True, timeout=300)
        hashes.append(_avro_hashes(wh))
    assert len(hashes[0]) >= 3 * len(INGESTED), hashes[0]  # parts, indexes and ledgers of every bucket
    assert hashes[0] == hashes[1]


def unnamed_files(wh: Warehouse, dataset: str, date: dt.date) -> set[str]:
    """Files of a published date that its manifest does not account for, and named files that are absent."""
    manifest = wh.manifest(dataset, date)
    named = {layout.SUCCESS, layout.MANIFEST}
    for bucket, entry in manifest.bucket_manifests.items():
        named |= {f.name for f in entry.files} | {f"_buckets/{layout.bucket_name(bucket)}.json"}
        named |= {name for name in (entry.index, entry.record_index) if name}
    return set(wh.storage.list_files(wh.layout.date_url(dataset, date))) ^ named


def _under(wh: Warehouse, dataset: str, *parts: str) -> bool:
    folder = local_path(os.path.join(wh.layout.date_url(dataset, DATE, staging=True), *parts))
    return os.path.isdir(folder) and any(os.scandir(folder))


KILL_POINTS = {
    "an index being written": lambda wh: _under(wh, layout.ANALYSIS_FULL, "_index", layout.TEMPORARY),
    "a part being written": lambda wh: _under(wh, layout.ANALYSIS_FULL, layout.TEMPORARY),
    "a bucket committed, more to go": lambda wh: _under(wh, layout.ANALYSIS_FULL, "_buckets"),
    "the ledger being written": lambda wh: _under(wh, layout.LEDGER, layout.TEMPORARY),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_after_a_kill_and_a_rerun_the_published_date_holds_exactly_its_manifest_files(point, source, tmp_path):
    wh, cmd, env = _prepare(tmp_path, "killed", source, concurrency=1)
    # a small ledger is written in well under a millisecond: watch for it without pausing
    assert run_and_kill(cmd, env, lambda: KILL_POINTS[point](wh), poll=0.0), "the ingest finished before the kill"
    assert not wh.is_complete(layout.ANALYSIS_FULL, DATE)
    subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, check=True, timeout=300)
    assert assert_published_whole(wh) == len(INGESTED)
    for dataset in INGESTED:
        assert unnamed_files(wh, dataset, DATE) == set(), dataset
    leftovers = [path for path in wh.storage.list_files(wh.layout.root) if layout.TEMPORARY in path.split("/")]
    assert leftovers == [], "a killed writer's file survived the rerun"
