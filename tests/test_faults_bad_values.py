"""Values the warehouse cannot hold, or that are outside their documented ranges, never stop a day.

Validation owns every value's range: a number an Avro ``int``/``long`` cannot store, or one the
quality ranges refuse (a key of 12, a tempo of 900), makes *that* track ``invalid`` in the ledger
with a reason naming the field and the value; the good tracks of the same chunk publish and the
operator's command exits 0. Only a burst of invalid documents beyond ``[ingest] invalid_ratio``
fails the chunk, with a message counting them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys

import numpy as np
import orjson
import pytest

from pipeline import layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation, make_track_ids
from pipeline.errors import TooManyFailuresError
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tasks import IngestFullSnapshot
from tests.helpers import luigi_cli, luigi_config, run_luigi, subprocess_env, write_cfg
from tests.support.fixtures_faults import PROJECT_ROOT, assert_published_whole, dataset_records, luigi_failures

DATE = dt.date(2026, 11, 26)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A file:// source of 40 good analyses and their dump rows."""
    folder = tmp_path_factory.mktemp("bad-values") / "source"
    sim = CatalogSimulation(seed=7, start_date=DATE, initial_tracks=40, segments=16, late_ratio=0.0,
                            never_ratio=0.0, malformed_ratio=0.0)
    seed_local_folder(str(folder), sim, 0)
    return folder, sim


def _good(sim: CatalogSimulation) -> dict:
    return orjson.loads(sim.document_bytes(sim.day(0).rows[0]["track_id"], 0))


def _with(doc: dict, section: str, key: str, value) -> bytes:
    doc = orjson.loads(orjson.dumps(doc))
    if key:
        doc[section][key] = value
    else:
        doc[section] = value
    return json.dumps(doc).encode()  # the standard library writes any integer, as hostile exporters do


def bad_values(good: dict) -> dict[str, tuple[bytes, str]]:
    """kind -> (body, the phrase its ledger reason must hold: field and value)."""
    section0 = orjson.loads(orjson.dumps(good))
    section0["sections"][0]["key"] = 2 ** 40
    section0 = json.dumps(section0).encode()
    return {
        "timestamp_2_64": (_with(good, "meta", "timestamp", 2 ** 64 - 1),
                           "meta.timestamp is 18446744073709551615, outside the Avro long range"),
        "timestamp_below_long": (_with(good, "meta", "timestamp", -(2 ** 63) - 1),
                                 "meta.timestamp is -9.223372036854776e+18, beyond the integers"),
        "key_3e9": (_with(good, "track", "key", 3e9), "track.key is 3000000000, outside the Avro int range"),
        "status_code_1e300": (_with(good, "meta", "status_code", 1e300),
                              "meta.status_code is 1e+300, beyond the integers a JSON number can carry exactly"),
        "num_samples_2_63": (_with(good, "track", "num_samples", 2 ** 63), "track.num_samples is 9223372036854775808"),
        "bitrate_2_31": (_with(good, "meta", "bitrate", 2 ** 31), "meta.bitrate is 2147483648, outside the Avro int"),
        "section_key_2_40": (section0, "sections[0].key is 1099511627776, outside the Avro int range"),
        "key_12": (_with(good, "track", "key", 12), "track.key is 12, outside its documented range -1..11"),
        "tempo_900": (_with(good, "track", "tempo", 900.0), "track.tempo is 900.0, outside its documented range 0..5"),
        "loudness_50": (_with(good, "track", "loudness", 50.0), "track.loudness is 50.0, outside its documented"),
        "mode_2": (_with(good, "track", "mode", 2), "track.mode is 2, outside its documented range 0..1"),
        "track_garbage": (_with(good, "track", "", "garbage"), "track is 'garbage', expected an object"),
        "meta_list": (_with(good, "meta", "", [1, 2]), "meta is [1, 2], expected an object"),
    }


def good_edge_values(good: dict) -> dict[str, tuple[bytes, dict]]:
    """kind -> (body, values that must read back equal): limits themselves are storable and in range."""
    multi = gzip.compress(orjson.dumps(good)[:100]) + gzip.compress(orjson.dumps(good)[100:])
    return {
        "timestamp_long_max": (_with(good, "meta", "timestamp", 2 ** 63 - 1), {"meta.timestamp": 2 ** 63 - 1}),
        "status_code_int_min": (_with(good, "meta", "status_code", -(2 ** 31)), {"meta.status_code": -(2 ** 31)}),
        "key_minus_1": (_with(good, "track", "key", -1), {"track.key": -1}),
        "tempo_500": (_with(good, "track", "tempo", 500.0), {"track.tempo": 500.0}),
        "multi_member.json.gz": (multi, {"track.tempo": good["track"]["tempo"]}),
    }


def _seed_bad(catalogue, source, cases: dict, rng_seed: int) -> tuple[list[dict], dict[str, str]]:
    folder, sim = catalogue
    rows = list(sim.day(0).rows)
    ids = make_track_ids(np.random.default_rng(rng_seed), len(cases), exclude={r["track_id"] for r in rows})
    (source / "odd").mkdir(exist_ok=True)
    by_id = {}
    for track_id, (kind, (body, _)) in zip(ids, cases.items(), strict=True):
        key = f"odd/{kind}" if kind.endswith(".gz") else f"odd/{kind}.json"
        (source / key).write_bytes(body)
        rows.append({"track_id": track_id, "analysis_key": key, "analysis_updated_at": None, "title": None,
                     "artist": None})
        by_id[track_id] = kind
    return rows, by_id


def setup(root, source, chunks: int = 1) -> dict:
    return {"warehouse": {"root": f"file://{root}", "buckets": chunks},
            "source": {"url": f"file://{source}/", "concurrency": 4},
            "ingest": {"records_per_part": 16}}  # shipped failure, invalid and quality ratios


def test_a_day_with_unstorable_and_out_of_range_values_publishes_the_good_tracks_and_ledgers_each_bad_one(
        catalogue, tmp_path):
    """The operator's command, as typed, exits 0; the quality gate (max_out_of_range_ratio = 0) passes."""
    import shutil

    folder, sim = catalogue
    source = tmp_path / "source"
    shutil.copytree(folder, source)
    good = _good(sim)
    bad, edges = bad_values(good), good_edge_values(good)
    rows, by_id = _seed_bad(catalogue, source, {**bad, **edges}, 17)
    cfg = write_cfg(tmp_path / "day.cfg", setup(tmp_path / "warehouse", source))
    wh = Warehouse(Layout(f"file://{tmp_path}/warehouse"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, DATE, rows)
    run = subprocess.run(luigi_cli("IngestFullSnapshot", "--date", layout.format_date(DATE), cfg=cfg),
                         env=subprocess_env(cfg), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_published_whole(wh)
    records = {r["track_id"]: r for r in dataset_records(wh, layout.ANALYSIS_FULL, DATE)}
    ledger = {e["track_id"]: e for e in dataset_records(wh, layout.LEDGER, DATE)}
    good_ids = {r["track_id"] for r in sim.day(0).rows}
    edge_ids = {t for t, kind in by_id.items() if kind in edges}
    assert set(records) == good_ids | edge_ids
    assert set(ledger) == {t for t, kind in by_id.items() if kind in bad}
    for track_id, entry in ledger.items():
        kind = by_id[track_id]
        assert entry["outcome"] == "invalid" and bad[kind][1] in entry["reason"], (kind, entry["reason"])
    for track_id in edge_ids:
        for path, value in edges[by_id[track_id]][1].items():
            section, name = path.split(".")
            assert records[track_id][section][name] == value, (by_id[track_id], path)
    manifest = wh.manifest(layout.ANALYSIS_FULL, DATE)
    assert manifest.counts["invalid"] == len(bad) and manifest.counts["ingested"] == len(records)

    # the operator's ledger command names the track and its reason; an id with a newline is refused
    track_id = next(t for t, kind in by_id.items() if kind == "key_12")
    ledger_cmd = [sys.executable, "-m", "pipeline.ops.ledger", "--date", layout.format_date(DATE)]
    shown = subprocess.run([*ledger_cmd, "--track", track_id], env=subprocess_env(cfg), cwd=PROJECT_ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "ledger 2026-11-26: 1 tracks (invalid 1)" in shown.stdout and "track.key is 12" in shown.stdout
    refused = subprocess.run([*ledger_cmd, "--track", track_id + "\n"], env=subprocess_env(cfg), cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "whitespace or control characters" in refused.stderr, refused.stderr


def test_a_burst_of_invalid_documents_beyond_the_ratio_fails_the_chunk_counting_them(catalogue, tmp_path):
    import shutil

    folder, sim = catalogue
    source = tmp_path / "source"
    shutil.copytree(folder, source)
    good = _good(sim)
    burst = {f"tempo_{i}": (_with(good, "track", "tempo", 600.0 + i), "tempo") for i in range(50)}
    rows, _ = _seed_bad(catalogue, source, burst, 23)  # 50 invalid of 90: 56 % > the shipped 50 %
    with luigi_config(setup(tmp_path / "warehouse", source)):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, DATE, rows)
        with luigi_failures() as failures:
            assert not run_luigi([IngestFullSnapshot(date=DATE)])
    assert [type(exc) for _, exc in failures] == [TooManyFailuresError], failures
    message = str(failures[0][1])
    assert "50 of 90 documents are newly invalid" in message and "[ingest] invalid_ratio 50.00%" in message, message
    assert "track.tempo is 6" in message, message
    assert layout.ANALYSIS_FULL not in [d for d in layout.DATASETS if wh.is_complete(d, DATE)]
