"""The synthetic catalogue: determinism, realism, recoverable ground truth, evolution, and seeding."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re

import fastavro
import numpy as np
import pytest

from pipeline.demo.s3server import s3_client
from pipeline.demo.seed import seed_bucket, seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import (
    KK_MAJOR,
    KK_MINOR,
    MALFORMED_KINDS,
    CatalogSimulation,
    make_track_ids,
    synth_analysis,
)
from pipeline.layout import TRACKS, Layout
from pipeline.storage import LocalStorage, local_path

START = dt.date(2026, 11, 1)
ID_RE = re.compile(r"^[0-9A-Za-z]{22}$")


def small_sim(seed: int = 1, **kw) -> CatalogSimulation:
    params = {"initial_tracks": 400, "segments": 12, "late_ratio": 0.1, "never_ratio": 0.03,
              "malformed_ratio": 0.05, "daily_new_ratio": 0.05, "takedown_ratio": 0.01, "gzip_ratio": 0.3}
    params.update(kw)
    return CatalogSimulation(seed=seed, start_date=START, **params)


def best_key_mode(chroma: np.ndarray) -> tuple[int, int]:
    """Independent KK estimator (not the module's helper), so the test checks the generator."""
    scores = {(k, m): np.corrcoef(chroma, np.roll(KK_MAJOR if m else KK_MINOR, k))[0, 1]
              for k in range(12) for m in (0, 1)}
    return max(scores, key=scores.get)


def test_track_ids_are_unique_base62_and_deterministic():
    ids = make_track_ids(np.random.default_rng(5), 5000)
    assert len(set(ids)) == 5000 and all(ID_RE.match(i) for i in ids)
    assert ids == make_track_ids(np.random.default_rng(5), 5000)
    assert not set(make_track_ids(np.random.default_rng(5), 10, exclude=set(ids[:10]))) & set(ids[:10])


def test_same_seed_same_bytes_distinct_seeds_differ():
    a, b, c = small_sim(7), small_sim(7), small_sim(8)
    objs_a, objs_b = a.objects_available(3), b.objects_available(3)
    assert list(objs_a) == list(objs_b)
    sample = list(objs_a)[::37]
    assert [objs_a[k].body() for k in sample] == [objs_b[k].body() for k in sample]
    assert a.day(3).rows == b.day(3).rows
    assert not set(objs_a) & set(c.objects_available(3))
    ok = next(s for s in objs_a.values() if s.malformed is None)
    assert ok.document() != c.document_bytes(next(iter(c.day(0).truth)), 0)
    doc1 = synth_analysis(np.random.default_rng(1), "x", 120.0, 0, 1, 4, 60.0, 30)
    assert doc1 == synth_analysis(np.random.default_rng(1), "x", 120.0, 0, 1, 4, 60.0, 30)
    assert doc1 != synth_analysis(np.random.default_rng(2), "x", 120.0, 0, 1, 4, 60.0, 30)


def test_document_has_the_spotify_shape():
    doc = synth_analysis(np.random.default_rng(3), "x", 131.5, 9, 0, 3, 187.25, 150, timestamp=1_700_000_000)
    assert list(doc) == ["meta", "track", "bars", "beats", "tatums", "sections", "segments"]
    assert doc["meta"]["analyzer_version"] == "4.0.0" and doc["meta"]["timestamp"] == 1_700_000_000
    track = doc["track"]
    for field in ("num_samples", "sample_md5", "end_of_fade_in", "start_of_fade_out", "loudness",
                  "key_confidence", "codestring", "code_version", "echoprintstring", "synchstring",
                  "rhythmstring", "rhythm_version"):
        assert field in track
    assert track["codestring"].startswith("eJ") and track["sample_md5"] == ""
    assert (track["tempo"], track["key"], track["mode"], track["time_signature"]) == (131.5, 9, 0, 3)
    assert len(doc["sections"][0]) == 12 and doc["sections"][0]["start"] == 0.0
    segs = doc["segments"]
    assert len(segs) == 150 and segs[0]["start"] == 0.0
    for prev, seg in zip(segs, segs[1:], strict=False):
        assert abs(prev["start"] + prev["duration"] - seg["start"]) < 2e-5
    assert abs(segs[-1]["start"] + segs[-1]["duration"] - track["duration"]) < 2e-5
    assert [("loudness_end" in s) for s in segs] == [False] * 149 + [True]
    for s in segs:
        assert len(s["pitches"]) == 12 and max(s["pitches"]) == 1.0 and min(s["pitches"]) >= 0
        assert len(s["timbre"]) == 12 and 0 <= s["timbre"][0] <= 60
        assert all(abs(t) <= 150 for t in s["timbre"])
        assert -60 <= s["loudness_start"] <= 0 and -60 <= s["loudness_max"] <= 0
        assert 0 <= s["loudness_max_time"] <= s["duration"] + 1e-5
    beats, bars, tatums = doc["beats"], doc["bars"], doc["tatums"]
    assert [b["start"] for b in bars] == [b["start"] for b in beats[::3]]
    assert len(tatums) == 2 * len(beats) and [t["start"] for t in tatums[::2]] == [b["start"] for b in beats]


def test_ground_truth_is_recoverable():
    rng = np.random.default_rng(2024)
    hits = 0
    for n in range(200):
        tempo, key, mode = float(rng.uniform(62, 205)), int(rng.integers(12)), int(rng.integers(2))
        doc = synth_analysis(np.random.default_rng([9, n]), "x", tempo, key, mode, int(rng.choice([3, 4, 5])),
                             float(rng.uniform(30, 300)), 60)
        starts = np.array([b["start"] for b in doc["beats"]])
        assert abs(60 / np.median(np.diff(starts)) - tempo) / tempo < 0.01
        w = np.array([s["duration"] for s in doc["segments"]])
        chroma = (w[:, None] * np.array([s["pitches"] for s in doc["segments"]])).sum(axis=0) / w.sum()
        hits += best_key_mode(chroma) == (key, mode)
    assert hits >= 190


def test_catalog_evolution():
    sim = small_sim(11)
    days = [sim.day(d) for d in range(8)]
    for prev, cur in zip(days, days[1:], strict=False):
        ids = [r["track_id"] for r in cur.rows]
        assert ids == sorted(set(ids))
        new = [t for t in cur.truth.values() if t.added_day == cur.day]
        assert abs(len(new) - 0.05 * len(prev.rows)) <= 1.5
        gone = {t.track_id for t in cur.truth.values() if t.removed_day == cur.day}
        assert gone and gone <= {r["track_id"] for r in prev.rows} and not gone & set(ids)
    objects = [sim.objects_available(d) for d in range(8)]
    final = days[-1].truth.values()
    taken_down = [t for t in final if t.removed_day is not None and t.available_day is not None]
    assert taken_down and all(f"{t.track_id}.json" in objects[-1] or f"{t.track_id}.json.gz" in objects[-1]
                              for t in taken_down)
    late = [t for t in final if t.available_day is not None and t.available_day > t.added_day]
    assert late
    for t in late:
        key = f"{t.track_id}.json.gz" if t.storage == "gzip-key" else f"{t.track_id}.json"
        assert any(r["track_id"] == t.track_id for r in days[t.added_day].rows)
        assert key not in objects[min(t.available_day - 1, 7)]
        if t.available_day <= 7:
            assert key in objects[t.available_day]
    never = [t for t in final if t.available_day is None]
    assert never and all(t.analysis_updated_at is None for t in never)
    assert not {t.track_id for t in never} & {s.track_id for s in objects[-1].values()}


def test_malformed_bodies_have_their_defect():
    sim = small_sim(12, initial_tracks=600, malformed_ratio=0.06)
    specs = [s for s in sim.objects_available(0).values() if s.malformed]
    assert {s.malformed for s in specs} == set(MALFORMED_KINDS)
    for spec in specs:
        data = spec.document()
        assert gzip.decompress(spec.body()) == data if spec.body()[:2] == b"\x1f\x8b" else spec.body() == data
        if spec.malformed in ("not_json", "truncated", "empty"):
            with pytest.raises(json.JSONDecodeError):
                json.loads(data)
        elif spec.malformed == "nan":
            assert b'"loudness": NaN' in data
        elif spec.malformed == "wrong_shape_list":
            assert isinstance(json.loads(data), list)
        elif spec.malformed == "no_segments":
            assert "segments" not in json.loads(data)
        else:
            assert sorted({len(s["pitches"]) for s in json.loads(data)["segments"]}) == [11, 12]


def test_storage_kinds_and_dump_keys():
    sim = small_sim(13)
    state, objs = sim.day(0), sim.objects_available(0)
    rows = {r["track_id"]: r for r in state.rows}
    kinds = {t.storage for t in state.truth.values()}
    assert kinds == {"plain", "gzip-key", "gzip-encoding"}
    for spec in objs.values():
        truth, row = state.truth[spec.track_id], rows[spec.track_id]
        assert row["analysis_key"] == (spec.key if truth.storage == "gzip-key" else None)
        assert (spec.content_encoding == "gzip") == (truth.storage == "gzip-encoding")
        if truth.storage != "plain":
            assert spec.body()[:2] == b"\x1f\x8b"
    good = next(s for s in objs.values() if not s.malformed)
    assert json.loads(good.document())["meta"]["timestamp"] == rows[good.track_id]["analysis_updated_at"]


def test_reanalysis_bumps_version_content_and_timestamp():
    sim = small_sim(14, reanalysed_ratio=0.05)
    before, after = sim.day(1), sim.day(2)
    bumped = [t for t in after.truth.values()
              if t.track_id in before.truth and t.version > before.truth[t.track_id].version]
    assert bumped
    for t in bumped[:5]:
        old = before.truth[t.track_id]
        assert t.analysis_updated_at > old.analysis_updated_at and t.available_day == 2
        key = f"{t.track_id}.json.gz" if t.storage == "gzip-key" else f"{t.track_id}.json"
        o1, o2 = sim.objects_available(1)[key], sim.objects_available(2)[key]
        assert o1 != o2 and o1.document() != o2.document()
        assert json.loads(o2.document())["meta"]["timestamp"] == t.analysis_updated_at


class CountingClient:
    """Wraps a boto3 client and records the keys written, to check what a seeding uploads."""

    def __init__(self, client):
        self._client, self.put_keys = client, []

    def put_object(self, **kw):
        self.put_keys.append(kw["Key"])
        return self._client.put_object(**kw)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_seed_bucket_uploads_only_new_objects_and_decoys_elsewhere(s3_endpoint, s3_bucket):
    sim = small_sim(15, initial_tracks=120, reanalysed_ratio=0.03, segments=8)
    client = CountingClient(s3_client(s3_endpoint))
    first = seed_bucket(client, s3_bucket, "analysis/", sim, 0, decoys=9)
    assert first["uploaded"] == len(sim.objects_available(0)) and first["decoys"] == 9
    decoys = [k for k in client.put_keys if not k.startswith("analysis/")]
    assert len(decoys) == 9 and {k.split("/")[0] for k in decoys} == {"other-team", "logs", "analysis-backup"}
    client.put_keys.clear()
    second = seed_bucket(client, s3_bucket, "analysis", sim, 3, since_day=0)
    old, new = sim.objects_available(0), sim.objects_available(3)
    expected = {f"analysis/{k}" for k, s in new.items() if old.get(k) != s}
    assert set(client.put_keys) == expected and second["uploaded"] == len(expected) > 0
    assert second["decoys"] == 0 and second["unchanged"] == len(new) - len(expected)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix="analysis/")
    listed = {o["Key"] for page in pages for o in page.get("Contents", [])}
    assert listed == {f"analysis/{k}" for k in new}
    spec = next(s for s in new.values() if s.content_encoding)
    got = client.get_object(Bucket=s3_bucket, Key=f"analysis/{spec.key}")
    assert got.get("ContentEncoding") == "gzip" and got["Body"].read() == spec.body()


def test_metadata_dump_round_trip(tmp_path):
    rows = small_sim(16).day(2).rows
    layout = Layout(f"file://{tmp_path}/wh")
    folder = write_metadata_dump(layout, LocalStorage(), START, rows, rows_per_part=150)
    assert folder == layout.date_url(TRACKS, START)
    names = sorted(os.listdir(local_path(folder)))
    n_parts = -(-len(rows) // 150)
    assert names == ["_SUCCESS"] + [f"part-{i:05d}.avro" for i in range(n_parts)]  # no _temporary left
    back = []
    for name in names[1:]:
        with open(os.path.join(local_path(folder), name), "rb") as f:
            reader = fastavro.reader(f)
            assert reader.codec == "deflate"
            back.extend(reader)
    assert back == rows
    with pytest.raises((ValueError, TypeError)):
        write_metadata_dump(layout, LocalStorage(), START + dt.timedelta(1), [{**rows[0], "extra": 1}])


def test_seed_local_folder_writes_plain_documents(tmp_path):
    sim = small_sim(17, initial_tracks=60, segments=8)
    count = seed_local_folder(str(tmp_path / "src"), sim, 0)
    objs = sim.objects_available(0)
    assert count == len(objs) and sorted(os.listdir(tmp_path / "src")) == sorted(objs)
    for key, spec in objs.items():
        data = (tmp_path / "src" / key).read_bytes()
        assert data == (spec.body() if key.endswith(".gz") else spec.document())
    assert seed_local_folder(str(tmp_path / "src"), sim, 0, since_day=0) == 0
