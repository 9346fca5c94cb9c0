"""SIGKILL in the middle of an ingest leaves nothing visible; the rerun equals an uninterrupted run."""

from __future__ import annotations

import subprocess

from pipeline import layout
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tests.conftest import WORLD_DATE
from tests.helpers import luigi_cli, run_and_kill, subprocess_env, write_cfg


def _all_records(wh: Warehouse, dataset: str) -> list[dict]:
    manifest = wh.manifest(dataset, WORLD_DATE)
    return [r for b in range(manifest.buckets) for r in wh.read_bucket(dataset, WORLD_DATE, b, manifest)]


def _visible(wh: Warehouse) -> list[str]:
    """What a reader can see: dataset folders other than hidden staging."""
    return [n for d in (layout.ANALYSIS_FULL, layout.LEDGER)
            for n in wh.storage.list_names(wh.layout.dataset_url(d)) if not n.startswith("_")]


def test_sigkill_mid_ingest_then_rerun_equals_uninterrupted_run(s3_world, tmp_path):
    wh, _, overrides = s3_world
    date = layout.format_date(WORLD_DATE)
    slow = {**overrides, "source": {**overrides["source"], "concurrency": 1}}
    cfg = write_cfg(tmp_path / "kill.cfg", slow)
    env = subprocess_env(cfg)
    cmd = luigi_cli("IngestFullSnapshot", "--date", date, cfg=cfg)
    staging = wh.layout.date_url(layout.ANALYSIS_FULL, WORLD_DATE, staging=True)

    def one_bucket_committed_more_to_go() -> bool:
        return len(wh.storage.list_names(f"{staging}/_buckets")) >= 1

    assert run_and_kill(cmd, env, one_bucket_committed_more_to_go), "the ingest finished before the kill"
    assert _visible(wh) == [], "a killed ingest must not publish anything"
    assert not wh.is_complete(layout.ANALYSIS_FULL, WORLD_DATE)

    subprocess.run(cmd, env=env, check=True, timeout=300)
    assert wh.complete_dates(layout.ANALYSIS_FULL) == [WORLD_DATE]

    other_root = f"file://{tmp_path / 'uninterrupted'}"
    other = Warehouse(Layout(other_root), LocalStorage())
    dump = layout.TRACKS
    wh.storage.move_tree(wh.layout.date_url(dump, WORLD_DATE), other.layout.date_url(dump, WORLD_DATE))
    cfg2 = write_cfg(tmp_path / "clean.cfg", {**overrides, "warehouse": {**overrides["warehouse"], "root": other_root}})
    subprocess.run(luigi_cli("IngestFullSnapshot", "--date", date, cfg=cfg2), env=subprocess_env(cfg2),
                   check=True, timeout=300)
    assert _all_records(wh, layout.ANALYSIS_FULL) == _all_records(other, layout.ANALYSIS_FULL)
    assert _all_records(wh, layout.LEDGER) == _all_records(other, layout.LEDGER)
