"""The attributes job gives identical output on mrjob's inline and local runners and in a process pool."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import fastavro
from fastavro.schema import to_parsing_canonical_form

from pipeline import layout
from pipeline.attributes.snapshot import JobSettings, build_snapshot
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.formats.avro_io import read_records
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tasks import AnalysisSet
from tests.helpers import luigi_config, run_luigi

DATE = dt.date(2026, 11, 26)


def test_inline_and_local_runners_write_identical_snapshots(tmp_path):
    sim = CatalogSimulation(seed=4, start_date=DATE, initial_tracks=60, segments=30, never_ratio=0.05)
    seed_local_folder(str(tmp_path / "source"), sim, 0)
    overrides = {"warehouse": {"buckets": 3, "root": f"file://{tmp_path / 'inline'}"},
                 "source": {"url": f"file://{tmp_path}/source"}, "pipeline": {"start_date": layout.format_date(DATE)}}
    with luigi_config(overrides):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
        assert run_luigi([AnalysisSet(date=DATE)])
    other = Warehouse(Layout(f"file://{tmp_path / 'local'}"), LocalStorage())
    pooled = Warehouse(Layout(f"file://{tmp_path / 'pooled'}"), LocalStorage())
    shutil.copytree(tmp_path / "inline", tmp_path / "local")
    shutil.copytree(tmp_path / "inline", tmp_path / "pooled")
    inline = build_snapshot(wh, DATE, 3, DATE, JobSettings(runner="inline"))
    local = build_snapshot(other, DATE, 3, DATE, JobSettings(runner="local"))
    in_pool = build_snapshot(pooled, DATE, 3, DATE, JobSettings(runner="inline", processes=2))  # the default on 2 cores
    assert inline.records == local.records == in_pool.records > 50
    assert inline.counts == in_pool.counts
    for bucket in range(3):
        ours, theirs, pool_files = (w.bucket_files(layout.ATTRIBUTES, DATE, bucket) for w in (wh, other, pooled))
        for a, c in zip(ours, pool_files, strict=True):  # same code in another process: the same bytes
            assert open(a[len("file://"):], "rb").read() == open(c[len("file://"):], "rb").read()
        for a, b in zip(ours, theirs, strict=True):
            # same records and same schema; the header's JSON key order is fastavro's business (it
            # varies with the process's hash seed), so files are compared record by record
            assert list(read_records(wh.storage, a)) == list(read_records(other.storage, b)), f"bucket {bucket}"
            assert _canonical(wh.storage, a) == _canonical(other.storage, b)


def _canonical(storage, url: str) -> str:
    with storage.open_read(url) as f:
        return to_parsing_canonical_form(fastavro.reader(f).writer_schema)


def test_the_daily_attributes_command_honours_the_configured_codec_and_part_size(tmp_path):
    """``[ingest] codec`` and ``records_per_part`` hold for the attributes files as for every other."""
    import subprocess

    from tests.helpers import luigi_cli, subprocess_env, write_cfg

    sim = CatalogSimulation(seed=4, start_date=DATE, initial_tracks=60, segments=30, never_ratio=0.05)
    seed_local_folder(str(tmp_path / "source"), sim, 0)
    wh = Warehouse(Layout(f"file://{tmp_path / 'warehouse'}"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
    cfg = write_cfg(tmp_path / "codec.cfg", {
        "warehouse": {"root": wh.layout.root, "buckets": 2}, "source": {"url": f"file://{tmp_path}/source"},
        "ingest": {"codec": "deflate", "records_per_part": 7}, "pipeline": {"start_date": layout.format_date(DATE)}})
    run = subprocess.run(luigi_cli("DailyAttributes", "--date", layout.format_date(DATE), cfg=cfg),
                         env=subprocess_env(cfg), cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = wh.manifest(layout.ATTRIBUTES, DATE)
    files = [f for e in manifest.entries() for f in e.files]
    assert manifest.records > 50 and max(f.records for f in files) == 7 and len(files) >= manifest.records // 7
    for f in files:
        with wh.storage.open_read(wh.layout.file_url(layout.ATTRIBUTES, DATE, f.name)) as fh:
            assert fastavro.reader(fh).codec == "deflate", f.name
