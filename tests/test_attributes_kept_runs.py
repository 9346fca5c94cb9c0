"""An ordinary day's bucket written in runs (kept_runs.py) is the bucket written record by record, byte for byte.

Both paths build the same later day of the three-week simulation from a copy of its warehouse, with
parts of a few records and windows of a few ids, so runs cross windows, part files and Avro blocks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest

from pipeline import layout
from pipeline.attributes import daily, kept_runs
from pipeline.attributes.snapshot import JobSettings, plan
from pipeline.layout import Layout
from pipeline.storage import LocalStorage, local_path
from pipeline.warehouse import Warehouse
from tests.simulation import SIM_DAYS, SIM_START

DATE = SIM_START + dt.timedelta(days=SIM_DAYS - 3)


def _build(tmp_path: Path, source_root: str, name: str, monkeypatch, in_runs: bool, records_per_part: int,
           window: int) -> tuple[dict[str, bytes], dict]:
    root = tmp_path / name
    shutil.copytree(local_path(source_root), root)
    wh = Warehouse(Layout(f"file://{root}"), LocalStorage())
    monkeypatch.setattr(kept_runs, "WINDOW", window)
    used = []
    real = daily._build_in_runs

    def spy(*args):
        used.append(True)
        if not in_runs:
            raise kept_runs.NotCopyable("the record-by-record path, for comparison")
        return real(*args)

    monkeypatch.setattr(daily, "_build_in_runs", spy)
    manifest = wh.manifest(layout.ATTRIBUTES, DATE)
    wh.remove_date(layout.ATTRIBUTES, DATE)
    mode, tasks = plan(wh, DATE, manifest.buckets, SIM_START, JobSettings())
    assert mode == "incremental"
    entries = {t.bucket: daily.build_bucket(wh, dataclasses.replace(t, records_per_part=records_per_part))
               for t in tasks}
    assert len(used) == len(tasks), "every bucket must have tried the path in runs"
    folder = Path(local_path(wh.layout.date_url(layout.ATTRIBUTES, DATE, staging=True)))
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.avro"))}
    # everything a bucket manifest says but its inputs (URLs under each copy's own root)
    return files, {b: {k: v for k, v in dataclasses.asdict(e).items() if k != "inputs"} for b, e in entries.items()}


@pytest.mark.parametrize("records_per_part, window", [(7, 5), (20000, 3), (3, 1000)])
def test_runs_and_record_by_record_write_the_same_bytes(three_weeks, tmp_path, monkeypatch, records_per_part, window):
    wh = three_weeks[0]
    runs, runs_entries = _build(tmp_path, wh.layout.root, "runs", monkeypatch, True, records_per_part, window)
    one, one_entries = _build(tmp_path, wh.layout.root, "one", monkeypatch, False, records_per_part, window)
    assert runs and runs.keys() == one.keys()
    assert [n for n in runs if runs[n] != one[n]] == []
    for bucket, entry in runs_entries.items():  # counts (kept, computed, dropped, without analysis), summary, quality
        assert {k: v for k, v in entry.items() if v != one_entries[bucket][k]} == {}, bucket
    counts = [e["counts"] for e in runs_entries.values()]
    assert sum(c["kept"] for c in counts) > 0 and sum(c["computed"] for c in counts) > 0
    assert sum(c["dropped"] for c in counts) > 0, "the simulation takes tracks down: some must be dropped"
