"""Bad inputs and a failing warehouse disk: clear errors or ledger reasons, nothing good lost, nothing half-published.

Bad *records* (a broken analysis document, a malformed or duplicate id in the dump) are facts about
the source: they are counted and kept with a reason, and never stop the good records of the same
chunk. Bad *setup* (no dump, an empty one, a warehouse that cannot be written) fails the task with an
error that names the thing at fault, and nothing is published.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest

from pipeline import layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation, make_track_ids
from pipeline.errors import CatalogError, CorruptFileError, StorageError
from pipeline.formats.avro_io import read_records
from pipeline.layout import Layout
from pipeline.storage import LocalStorage, local_path
from pipeline.warehouse import Warehouse
from tasks import DailyAttributes, IngestFullSnapshot
from tests.helpers import luigi_cli, luigi_config, run_luigi, subprocess_env, write_cfg
from tests.support.fixtures_faults import (
    PROJECT_ROOT,
    assert_published_whole,
    dataset_records,
    luigi_failures,
    visible,
)

DATE = dt.date(2026, 11, 26)
MAX_BYTES = 1_000_000


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A file:// source of 40 good analyses (no missing, no malformed) and their dump rows."""
    folder = tmp_path_factory.mktemp("bad-input") / "source"
    sim = CatalogSimulation(seed=5, start_date=DATE, initial_tracks=40, segments=16, late_ratio=0.0,
                            never_ratio=0.0, malformed_ratio=0.0)
    seed_local_folder(str(folder), sim, 0)
    return folder, sim


def setup(root, source_folder, chunks: int = 1) -> dict:
    return {"warehouse": {"buckets": chunks, "root": f"file://{root}"},
            "source": {"url": f"file://{source_folder}/", "max_document_bytes": MAX_BYTES, "concurrency": 4},
            "ingest": {"records_per_part": 16}}  # the shipped failure_ratio (0.1 %)


def _good(sim: CatalogSimulation) -> dict:
    row = sim.day(0).rows[0]
    return orjson.loads(sim.document_bytes(row["track_id"], 0))


def _with(doc: dict, change) -> bytes:
    doc = orjson.loads(orjson.dumps(doc))
    change(doc)
    return orjson.dumps(doc)


def bad_documents(good: dict) -> dict[str, tuple[bytes, str]]:
    """kind -> (body, a phrase the ledger reason must contain)."""
    return {
        "empty": (b"", "empty document"),
        "whitespace": (b" \n\t ", "not valid JSON"),
        "not_json": (b"<html><body>503 Service Unavailable</body></html>", "not valid JSON"),
        "binary": (bytes(range(256)), "not valid JSON"),
        "json_list": (orjson.dumps([good]), "JSON list, expected an object"),
        "json_null": (b"null", "expected an object"),
        "wrong_shape": (b'{"meta": {}, "track": {"tempo": 120.0}}', "no 'segments'"),
        "segments_object": (b'{"segments": {"0": {}}}', "segments is dict, expected a list"),
        "too_big": (b'{"segments": [], "pad": "' + b"x" * (MAX_BYTES + 10) + b'"}', "over the 1000000-byte cap"),
        "gzip_bomb.json.gz": (gzip.compress(b'{"pad": "' + b" " * (20 * MAX_BYTES) + b'"}'), "inflates to more than"),
        "truncated_gzip.json.gz": (gzip.compress(orjson.dumps(good))[:300], "truncated gzip body"),
        "nan": (b'{"segments": [], "track": {"loudness": NaN}}', "not valid JSON"),
        "infinity": (b'{"segments": [], "track": {"tempo": Infinity}}', "not valid JSON"),
        "minus_infinity": (b'{"segments": [], "track": {"tempo": -Infinity}}', "not valid JSON"),
        "overflow": (b'{"segments": [], "track": {"tempo": 1e999}}', "infinity"),
        "too_deep": (b'{"segments": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "depth limit"),
        "pitches_11": (_with(good, lambda d: d["segments"][2]["pitches"].pop()),
                       "segments[2].pitches has 11 values, expected 12"),
        "timbre_13": (_with(good, lambda d: d["segments"][3]["timbre"].append(1.0)),
                      "segments[3].timbre has 13 values, expected 12"),
        "pitch_not_a_number": (_with(good, lambda d: d["segments"][1]["pitches"].__setitem__(4, "loud")),
                               "segments[1].pitches holds 'loud'"),
        "beat_missing_field": (_with(good, lambda d: d["beats"][4].pop("confidence")), "beats[4] has no 'confidence'"),
        "beat_not_an_object": (_with(good, lambda d: d["beats"].__setitem__(1, [0.5, 0.5])), "beats[1] is list"),
        "section_missing_start": (_with(good, lambda d: d["sections"][0].pop("start")), "sections[0] has no 'start'"),
        "tempo_as_text": (_with(good, lambda d: d["track"].__setitem__("tempo", "fast")), "track.tempo is 'fast'"),
        "beyond_float32": (_with(good, lambda d: d["segments"][0].__setitem__("loudness_max", 1e300)),
                           "exceed the float32 range"),
    }


def test_bad_documents_are_ledgered_with_a_reason_and_good_ones_in_the_same_chunk_kept(catalogue, tmp_path):
    folder, sim = catalogue
    source = tmp_path / "source"
    shutil.copytree(folder, source)
    (source / "bad").mkdir()
    cases = bad_documents(_good(sim))
    ids = make_track_ids(np.random.default_rng(99), len(cases), exclude={r["track_id"] for r in sim.day(0).rows})
    rows, expect = list(sim.day(0).rows), {}
    for track_id, (kind, (body, phrase)) in zip(ids, cases.items(), strict=True):
        key = f"bad/{kind}" if kind.endswith(".gz") else f"bad/{kind}.json"
        (source / key).write_bytes(body)
        rows.append({"track_id": track_id, "analysis_key": key, "analysis_updated_at": None,
                     "title": None, "artist": None})
        expect[track_id] = (kind, phrase)
    with luigi_config(setup(tmp_path / "warehouse", source)):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, rows)
        with luigi_failures() as failures:
            assert run_luigi([IngestFullSnapshot(date=DATE)]), failures  # one chunk holds good and bad alike
    good_ids = {r["track_id"] for r in sim.day(0).rows}
    assert {r["track_id"] for r in dataset_records(wh, layout.ANALYSIS_FULL, DATE)} == good_ids
    ledger = {e["track_id"]: e for e in dataset_records(wh, layout.LEDGER, DATE)}
    assert set(ledger) == set(expect)
    for track_id, (kind, phrase) in expect.items():
        assert ledger[track_id]["outcome"] == "invalid", kind
        assert phrase in ledger[track_id]["reason"], (kind, ledger[track_id]["reason"])
    counts = wh.manifest(layout.ANALYSIS_FULL, DATE).counts
    assert counts == {"ingested": len(good_ids), "missing": 0, "invalid": len(expect), "failed": 0, "retried": 0}


def test_duplicate_and_malformed_ids_in_the_dump_are_counted_and_the_newest_row_wins(catalogue, tmp_path):
    folder, sim = catalogue
    rows = [dict(r, analysis_updated_at=1_700_000_000) for r in sim.day(0).rows]
    first = rows[0]["track_id"]
    # an older duplicate pointing nowhere, and a newer one: only the newest row may be kept
    rows += [dict(rows[0], analysis_key="nowhere.json", analysis_updated_at=1_600_000_000),
             dict(rows[1]), dict(rows[2], analysis_updated_at=1_800_000_000)]
    malformed = ["", "short", "x" * 23, first[:21] + "/", "../../../etc/passwd00", "Ä" + first[1:], " " + first[1:],
                 first + "\n", first[1:] + "\t"]
    rows += [{"track_id": m, "analysis_key": None, "analysis_updated_at": None, "title": None, "artist": None}
             for m in malformed]
    with luigi_config(setup(tmp_path / "warehouse", folder, chunks=2)):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, rows)
        assert run_luigi([IngestFullSnapshot(date=DATE)])
    catalog = wh.manifest(layout.CATALOG, DATE)
    assert catalog.rejected == {"malformed_id": len(malformed), "duplicate_id": 3}
    assert len(catalog.rejected_examples) == len(malformed) + 3
    catalog_rows = dataset_records(wh, layout.CATALOG, DATE)
    assert sorted(r["track_id"] for r in catalog_rows) == sorted({r["track_id"] for r in sim.day(0).rows})
    assert {r["track_id"]: r["analysis_updated_at"] for r in catalog_rows}[rows[2]["track_id"]] == 1_800_000_000
    records = dataset_records(wh, layout.ANALYSIS_FULL, DATE)
    assert sorted(r["track_id"] for r in records) == sorted({r["track_id"] for r in sim.day(0).rows})
    assert wh.complete_dates(layout.LEDGER) == [DATE] and dataset_records(wh, layout.LEDGER, DATE) == []


def _no_success(wh: Warehouse) -> None:
    wh.storage.remove(wh.layout.success_url(layout.TRACKS, DATE))


@pytest.mark.parametrize(("case", "rows", "damage", "message"), [
    ("empty", [], None, "has no valid track: refusing to publish an empty catalog"),
    ("only malformed ids", [{"track_id": "nope", "analysis_key": None, "analysis_updated_at": None,
                             "title": None, "artist": None}], None, "(1 malformed ids)"),
    ("no dump for the date", None, None, "no metadata dump for 2026-11-26 at file://"),
    ("no _SUCCESS", "good", _no_success, "is incomplete (no _SUCCESS); wait for the exporter"),
])
def test_an_unusable_dump_fails_the_day_naming_it_and_publishes_nothing(case, rows, damage, message, catalogue,
                                                                         tmp_path):
    folder, sim = catalogue
    with luigi_config(setup(tmp_path / "warehouse", folder)):
        wh = Warehouse.from_config()
        if rows is not None:
            write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows if rows == "good" else rows)
        if damage:
            damage(wh)
        with luigi_failures() as failures:
            assert not run_luigi([IngestFullSnapshot(date=DATE)])
    assert [type(exc) for _, exc in failures] == [CatalogError], failures
    assert message in str(failures[0][1]), str(failures[0][1])
    assert visible(wh) == {}, "nothing may be published for the day"


# -- a corrupt file in the warehouse ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published(catalogue, tmp_path_factory):
    """A published full snapshot (snappy, the default codec) of the clean catalogue."""
    folder, sim = catalogue
    root = tmp_path_factory.mktemp("published") / "warehouse"
    with luigi_config(setup(root, folder, chunks=2)):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
        assert run_luigi([IngestFullSnapshot(date=DATE)])
    return root, folder


@pytest.mark.parametrize("damage", [
    "truncated to half",
    "last byte cut",
    "header only",
    "empty",
    "zeroed",
])
def test_a_damaged_part_file_raises_corrupt_file_error_naming_it(damage, published, tmp_path):
    root, _ = published
    copy = tmp_path / "warehouse"
    shutil.copytree(root, copy)
    wh = Warehouse(Layout(f"file://{copy}"), LocalStorage())
    url = wh.bucket_files(layout.ANALYSIS_FULL, DATE, 1)[0]
    path = local_path(url)
    data = open(path, "rb").read()
    damaged = {"truncated to half": data[: len(data) // 2], "last byte cut": data[:-1], "header only": data[:10],
               "empty": b"", "zeroed": bytes(len(data))}[damage]
    with open(path, "wb") as f:
        f.write(damaged)
    with pytest.raises(CorruptFileError, match=f"cannot decode Avro file {url}"):
        list(read_records(wh.storage, url))


def test_a_downstream_job_over_a_damaged_file_fails_naming_it_and_publishes_nothing(published, tmp_path):
    root, folder = published
    copy = tmp_path / "warehouse"
    shutil.copytree(root, copy)
    with luigi_config({**setup(copy, folder, chunks=2), "pipeline": {"start_date": layout.format_date(DATE)}}):
        wh = Warehouse.from_config()
        url = wh.bucket_files(layout.ANALYSIS_FULL, DATE, 0)[0]
        with open(local_path(url), "r+b") as f:
            f.truncate(10)  # a part file cut short (a bad copy, a bad disk)
        with luigi_failures() as failures:
            assert not run_luigi([DailyAttributes(date=DATE)])
    assert [type(exc) for _, exc in failures] == [CorruptFileError]
    assert url in str(failures[0][1])
    assert layout.ATTRIBUTES not in visible(wh)


# -- a warehouse that cannot be written ----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (a real filesystem that can fill up or go read-only); needs CAP_SYS_ADMIN."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}); the EFBIG and EACCES tests still run")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder, leave: int) -> str:
    """Fill the filesystem of ``folder`` until only ``leave`` bytes are free; returns the filler's path."""
    stat = os.statvfs(folder)
    filler = os.path.join(folder, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave, 0))
    return filler


def ingest_onto_a_full_disk(catalogue, disk) -> tuple[Warehouse, list, str]:
    """Build the catalog, fill the disk to 16 KiB of free space, run the ingest; returns what failed."""
    folder, sim = catalogue
    with luigi_config(setup(disk / "warehouse", folder)):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
        assert run_luigi([IngestFullSnapshot(date=DATE).requires()[0].requires()])  # the catalog still fits
        filler = fill(disk, leave=16 * 1024)
        with luigi_failures() as failures:
            assert not run_luigi([IngestFullSnapshot(date=DATE)])
    return wh, failures, filler


def test_disk_full_fails_the_chunk_publishes_nothing_and_the_rerun_needs_no_cleanup(catalogue, small_disk):
    folder, sim = catalogue
    wh, failures, filler = ingest_onto_a_full_disk(catalogue, small_disk)
    assert [task for task, _ in failures] == [IngestFullSnapshot(date=DATE).requires()[0].task_id]
    assert isinstance(failures[0][1], OSError | StorageError), failures
    assert visible(wh) == {layout.CATALOG: [layout.format_date(DATE)]}, "nothing but the catalog published"
    os.remove(filler)  # space is back
    with luigi_config(setup(small_disk / "warehouse", folder)):
        assert run_luigi([IngestFullSnapshot(date=DATE)])
    assert assert_published_whole(wh) == 3
    assert len(dataset_records(wh, layout.ANALYSIS_FULL, DATE)) == len(sim.day(0).rows)


def test_disk_full_says_so_and_names_the_file(catalogue, small_disk):
    _, failures, _ = ingest_onto_a_full_disk(catalogue, small_disk)
    assert isinstance(failures[0][1], StorageError), failures
    message = str(failures[0][1])
    assert "disk full" in message and f"file://{small_disk}/warehouse/echonest/analysis-full/" in message, message


def test_a_read_only_warehouse_fails_naming_it_and_publishes_nothing(catalogue, small_disk):
    folder, sim = catalogue
    with luigi_config(setup(small_disk / "warehouse", folder)):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        with luigi_failures() as failures:
            assert not run_luigi([IngestFullSnapshot(date=DATE)])
    assert [type(exc) for _, exc in failures] == [StorageError], failures
    assert "read-only filesystem" in str(failures[0][1]) and str(small_disk) in str(failures[0][1])
    assert visible(wh) == {}


def cli_run(catalogue, root: Path, prefix: tuple[str, ...] = (), **popen) -> tuple[subprocess.CompletedProcess,
                                                                                    Warehouse]:
    """The operator's ingest command against a fresh warehouse at ``root``, in a worker process."""
    folder, sim = catalogue
    cfg = write_cfg(root / "faults.cfg", setup(root / "warehouse", folder, chunks=2))
    wh = Warehouse(Layout(f"file://{root}/warehouse"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
    cmd = [*prefix, *luigi_cli("IngestFullSnapshot", "--date", layout.format_date(DATE), cfg=cfg), "--no-lock"]
    run = subprocess.run(cmd, env=subprocess_env(cfg), cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=120, **popen)
    return run, wh


NO_DAC_OVERRIDE = ("setpriv", "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search", "--")


def test_permission_denied_fails_naming_the_path_and_publishes_nothing(catalogue, tmp_path):
    """Root ignores file modes, so the worker runs without CAP_DAC_OVERRIDE; the project folder is read-only."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    (tmp_path / "warehouse" / "echonest").mkdir(parents=True)
    (tmp_path / "warehouse" / "echonest").chmod(0o555)
    run, wh = cli_run(catalogue, tmp_path, NO_DAC_OVERRIDE)
    assert run.returncode == 30, run.stderr[-2000:]  # [retcode] task_failed
    assert "StorageError" in run.stderr and "permission denied" in run.stderr, run.stderr[-2000:]
    assert f"file://{tmp_path}/warehouse/echonest/catalog/" in run.stderr
    assert visible(wh) == {}


def test_a_file_size_limit_fails_the_ingest_and_publishes_nothing(catalogue, tmp_path):
    """EFBIG without any privilege: the worker's RLIMIT_FSIZE is smaller than one part file."""
    import resource

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    run, wh = cli_run(catalogue, tmp_path, preexec_fn=limit_file_size)
    assert run.returncode == 30, run.stderr[-2000:]  # [retcode] task_failed
    assert "File too large" in run.stderr, run.stderr[-2000:]
    assert layout.ANALYSIS_FULL not in visible(wh)
    assert_published_whole(wh)
