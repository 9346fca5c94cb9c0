"""Analysis sets carry a record index: compaction copies records by their bytes, attributes skip unchanged ones.

The copies must be exactly what decoding and encoding again would write (byte for byte, indexes and
gate statistics included), for sets with an index, sets written before indexes existed and sets of
an older analysis format; and the attributes of a compaction day must find the same changed
analyses through the record index as through the id index.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from pathlib import Path

import fastavro
import numpy as np
import pytest

from pipeline import layout
from pipeline.attributes.changed import changed_analyses
from pipeline.errors import CorruptFileError
from pipeline.formats import schema
from pipeline.formats.analysis import to_record
from pipeline.formats.avro_select import read_selected
from pipeline.formats.index_columns import read_columns
from pipeline.ingest.chunk import BucketWriter, ChunkSettings
from pipeline.layout import Layout
from pipeline.ops.quality import analysis_row, analysis_values, row_values
from pipeline.snapshots.entries import bucket_entries, decoded_entries
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tests.support.old_formats import analysis_format_2_raw

D = dt.date(2026, 11, 26)
SET = layout.ANALYSIS_FULL
SETTINGS = ChunkSettings(records_per_part=70, codec="deflate")  # several parts, many small records a block


@pytest.fixture(scope="module")
def records() -> list[dict]:
    from pipeline.demo.synthetic import synth_analysis

    rng = np.random.default_rng(5)
    out = []
    for i in range(200):
        doc = synth_analysis(rng, f"TR{i:016d}", float(rng.uniform(70, 170)), i % 12, i % 2, 4,
                             float(rng.uniform(180, 260)), 3 + i % 5)
        out.append(to_record(doc, track_id=f"TR{i:016d}", source_key=f"a/{i}.json", source_updated_at=1000 + i))
    return out


def _warehouse(root: Path) -> Warehouse:
    return Warehouse(Layout(f"file://{root}"), LocalStorage())


def _publish(wh: Warehouse, write) -> None:
    with BucketWriter(wh, SET, D, 0, SETTINGS) as writer:
        write(writer)
        info = writer.close()
    wh.commit_bucket(SET, D, info)
    wh.publish(SET, D, "analysis", buckets=1, kind="full")


def _files(root: Path) -> dict[str, bytes]:
    date = Path(_warehouse(root).layout.date_url(SET, D).removeprefix("file://"))
    found = {str(p.relative_to(date)): p.read_bytes() for p in date.rglob("*") if p.is_file()}
    assert any(name.startswith("part-") for name in found)
    return found


@pytest.fixture(scope="module")
def original(records, tmp_path_factory) -> Warehouse:
    wh = _warehouse(tmp_path_factory.mktemp("original"))
    _publish(wh, lambda w: [w.write(r) for r in records])
    return wh


def test_the_record_index_lists_every_record_with_its_length_and_gate_values(original, records):
    entry = original.manifest(SET, D).bucket(0)
    assert entry.record_index and len(entry.files) == 3
    parts = list(read_columns(original.storage, original.layout.file_url(SET, D, entry.record_index),
                              with_values=True))
    assert [p.part for p in parts] == [f.name for f in entry.files]
    entries = list(bucket_entries(original, SET, D, 0))
    assert [e.track_id for e in entries] == [r["track_id"] for r in records]
    for e, r in zip(entries, records, strict=True):
        assert fastavro.schemaless_reader(io.BytesIO(e.raw), schema("analysis"), None) == r
        assert tuple(e.row) == analysis_row(r)
        assert row_values(e.row) == analysis_values(r)
    assert np.concatenate([p.lengths for p in parts]).tolist() == [len(e.raw) for e in entries]


@pytest.mark.parametrize("without_index", [False, True])
def test_copied_entries_write_byte_identical_files(original, records, tmp_path, without_index):
    if without_index:  # a set written before analysis sets had record indexes: decoded, then encoded again
        manifest = original.manifest(SET, D)
        old = dataclasses.replace(manifest, bucket_manifests={
            0: dataclasses.replace(manifest.bucket(0), record_index=None)})
        original.write_json(original.layout.manifest_url(SET, D), old.as_json())
    try:
        entries = list(bucket_entries(original, SET, D, 0))
        assert all(e.raw is not None for e in entries)  # the current format: bytes copied either way
        assert all((e.record is not None) == without_index for e in entries)  # decoded only without an index
        copy = _warehouse(tmp_path)
        _publish(copy, lambda w: [w.write_entry(e) for e in entries])
    finally:
        if without_index:
            original.write_json(original.layout.manifest_url(SET, D), manifest.as_json())
    assert _files(tmp_path) == _files(Path(original.layout.root.removeprefix("file://")))
    assert copy.manifest(SET, D).bucket(0).quality == original.manifest(SET, D).bucket(0).quality


def test_an_older_format_is_upgraded_and_written_as_the_current_one(records, tmp_path):
    old_schema = fastavro.parse_schema(analysis_format_2_raw())
    old_file = tmp_path / "old.avro"
    with open(old_file, "wb") as f:
        fastavro.writer(f, old_schema, [{**r, "extra": {e["key"]: e["value"] for e in r["extra"]}} for r in records])
    entries = list(decoded_entries(LocalStorage(), f"file://{old_file}"))
    assert all(e.raw is None for e in entries)  # another schema: never copied as it is
    upgraded, current = _warehouse(tmp_path / "a"), _warehouse(tmp_path / "b")
    _publish(upgraded, lambda w: [w.write_entry(e) for e in entries])
    _publish(current, lambda w: [w.write(r) for r in records])
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def _changed(wh: Warehouse, previous_versions) -> list[dict]:
    versions = [(np.array([i.encode() for i, _ in previous_versions]),
                 np.array([float(v) for _, v in previous_versions]))]
    got = changed_analyses(wh, SET, D, 0, versions)
    assert got is not None
    return list(got)


def test_a_compaction_day_finds_the_same_changed_analyses_through_either_index(original, records):
    rng = np.random.default_rng(2)
    previous = [(r["track_id"], r["source_updated_at"] + (rng.random() < 0.05)) for r in records
                if rng.random() < 0.97]
    expected = [r for r in records if (r["track_id"], r["source_updated_at"]) not in set(previous)]
    assert 0 < len(expected) < len(records) // 4
    assert _changed(original, previous) == expected
    manifest = original.manifest(SET, D)
    old = dataclasses.replace(manifest, bucket_manifests={0: dataclasses.replace(manifest.bucket(0),
                                                                                 record_index=None)})
    original.write_json(original.layout.manifest_url(SET, D), old.as_json())
    try:
        assert _changed(original, previous) == expected  # the id index, decoding up to each changed record
    finally:
        original.write_json(original.layout.manifest_url(SET, D), manifest.as_json())


def test_a_record_index_that_does_not_describe_the_files_is_corruption(original, records):
    manifest = original.manifest(SET, D)
    entry = manifest.bucket(0)
    wrong = dataclasses.replace(entry, files=[entry.files[1], entry.files[0], entry.files[2]])
    original.write_json(original.layout.manifest_url(SET, D),
                        dataclasses.replace(manifest, bucket_manifests={0: wrong}).as_json())
    try:
        with pytest.raises(CorruptFileError, match="does not describe the bucket's files"):
            _changed(original, [])
    finally:
        original.write_json(original.layout.manifest_url(SET, D), manifest.as_json())


def test_lengths_that_do_not_match_a_block_are_corruption(original):
    entry = original.manifest(SET, D).bucket(0)
    part = next(read_columns(original.storage, original.layout.file_url(SET, D, entry.record_index)))
    url = original.layout.file_url(SET, D, part.part)
    wanted = np.zeros(len(part), bool)
    wanted[[3, 40]] = True
    assert [r["track_id"] for r in read_selected(original.storage, url, wanted, part.lengths)] == [
        part.ids[3].decode(), part.ids[40].decode()]
    lengths = part.lengths.copy()
    lengths[2] += 1
    with pytest.raises(CorruptFileError, match="does not match"):
        list(read_selected(original.storage, url, wanted, lengths))
