"""Record indexes: records copied by their index equal the originals byte for byte; a wrong index is named."""

from __future__ import annotations

import io
import math

import avro.datafile
import avro.io
import fastavro
import numpy as np
import pytest

from pipeline.errors import CorruptFileError
from pipeline.formats import schema
from pipeline.formats.avro_io import read_records
from pipeline.formats.record_index import IndexedPartsWriter, copyable, read_entries, read_index
from pipeline.storage import LocalStorage

FIELDS = ("updated", "spare")


def _records(n: int) -> list[dict]:
    return [{"track_id": f"{i:022d}", "source_updated_at": None if i % 7 == 0 else i * 1000} for i in range(n)]


def _row(record: dict) -> list[float]:
    updated = record["source_updated_at"]
    return [math.nan if updated is None else float(updated), 0.5]


def _encoded(record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema("ids"), record, strict=True)
    return out.getvalue()


def _write(tmp_path, records, codec="snappy", per_part=1200, raw_from=0):
    storage = LocalStorage()
    writer = IndexedPartsWriter(storage, lambda p: f"file://{tmp_path}/part-{p}.avro", f"file://{tmp_path}/index.avro",
                                "ids", codec, per_part, "test/ids", FIELDS)
    for i, record in enumerate(records):
        if i >= raw_from:
            writer.write_raw(_encoded(record), record["track_id"], record["source_updated_at"], _row(record))
        else:
            writer.write(record, _row(record))
    return storage, writer.close()


def _entries(storage, tmp_path):
    for part in read_index(storage, f"file://{tmp_path}/index.avro"):
        yield from read_entries(storage, f"file://{tmp_path}/{part['part']}", part)


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy"])
def test_indexed_records_come_back_with_their_exact_bytes(tmp_path, codec):
    records = _records(3000)
    storage, parts = _write(tmp_path, records, codec, raw_from=1000)  # encoded here, then copied
    assert [p.records for p in parts] == [1200, 1200, 600]
    entries = list(_entries(storage, tmp_path))
    assert [e.raw for e in entries] == [_encoded(r) for r in records]
    assert [(e.track_id, e.source_updated_at) for e in entries] == [(r["track_id"], r["source_updated_at"])
                                                                   for r in records]
    np.testing.assert_array_equal(np.array([e.row for e in entries]), np.array([_row(r) for r in records]))
    with open(tmp_path / "part-1.avro", "rb") as f, avro.datafile.DataFileReader(f, avro.io.DatumReader()) as reader:
        assert list(reader) == records[1200:2400]  # the parts stay plain Avro for every other reader
    index = list(read_records(storage, f"file://{tmp_path}/index.avro"))
    assert [p["part"] for p in index] == ["part-0.avro", "part-1.avro", "part-2.avro"]
    assert all(copyable(p, "ids", FIELDS) for p in index)
    assert not copyable(index[0], "attributes", FIELDS) and not copyable(index[0], "ids", FIELDS[:1])


def test_an_empty_bucket_has_no_index_file(tmp_path):
    """No zero-record Avro files: some readers (polars) cannot open them; the manifest says "no index"."""
    _, parts = _write(tmp_path, [])
    assert parts == [] and sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_index_that_does_not_match_its_part_is_named(tmp_path):
    records = _records(500)
    storage, _ = _write(tmp_path, records)
    part = next(read_index(storage, f"file://{tmp_path}/index.avro"))
    url = f"file://{tmp_path}/part-0.avro"
    shifted = {**part, "lengths": [part["lengths"][0] + 1, *part["lengths"][1:]]}
    with pytest.raises(CorruptFileError, match="part-0.avro"):
        list(read_entries(storage, url, shifted))
    short = {**part, **{k: part[k][:-1] for k in ("track_ids", "source_updated_at", "lengths")},
             "values": part["values"][:-16]}
    with pytest.raises(CorruptFileError, match="part-0.avro"):
        list(read_entries(storage, url, short))
    ragged = {**part, "track_ids": part["track_ids"][:-1]}
    with pytest.raises(CorruptFileError, match="different lengths"):
        list(read_entries(storage, url, ragged))


def test_a_truncated_part_is_named(tmp_path):
    storage, _ = _write(tmp_path, _records(5000), per_part=5000)
    part = next(read_index(storage, f"file://{tmp_path}/index.avro"))
    path = tmp_path / "part-0.avro"
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(CorruptFileError, match="part-0.avro"):
        list(read_entries(storage, f"file://{path}", part))


def test_a_row_of_the_wrong_width_is_refused(tmp_path):
    writer = IndexedPartsWriter(LocalStorage(), lambda p: f"file://{tmp_path}/p-{p}.avro", f"file://{tmp_path}/i.avro",
                                "ids", "null", 10, "t", FIELDS)
    with pytest.raises(ValueError, match="expected 2"):
        writer.write(_records(1)[0], [1.0])
    writer.abort()
    assert not list(tmp_path.glob("*.avro"))  # nothing half-written became visible


def test_index_files_are_plain_avro(tmp_path):
    _write(tmp_path, _records(10))
    with open(tmp_path / "index.avro", "rb") as f, avro.datafile.DataFileReader(f, avro.io.DatumReader()) as reader:
        (entry,) = list(reader)
    assert entry["track_ids"] == [r["track_id"] for r in _records(10)]
    assert np.frombuffer(entry["values"], "<f8").reshape(-1, 2)[:, 1].tolist() == [0.5] * 10


@pytest.mark.parametrize("kind", ["rolling", "raw", "indexed"])
def test_every_part_writer_aborts_by_itself_when_its_block_raises(tmp_path, kind):
    """``with writer:`` is the only error handling a caller needs: no part, finished or not, shows."""
    from pipeline.formats.avro_io import RollingWriter
    from pipeline.formats.avro_raw import RawRollingWriter

    storage, part = LocalStorage(), (lambda p: f"file://{tmp_path}/p-{p}.avro")
    make = {"rolling": lambda: RollingWriter(storage, part, "ids", "null", 3, "t"),
              "raw": lambda: RawRollingWriter(storage, part, "ids", "null", 3, "t"),
              "indexed": lambda: IndexedPartsWriter(storage, part, f"file://{tmp_path}/i.avro", "ids", "null", 3,
                                                    "t", FIELDS)}[kind]
    with pytest.raises(RuntimeError, match="download failed"), make() as w:
        for record in _records(2):
            w.write(record, [0.0, 0.5]) if kind == "indexed" else w.write(record)
        raise RuntimeError("download failed")
    assert not list(tmp_path.rglob("*.avro"))
    with make() as w:  # and a clean block publishes through close()
        for record in _records(4):
            w.write(record, [0.0, 0.5]) if kind == "indexed" else w.write(record)
        files = w.close()
    assert [f.records for f in files] == [3, 1]


def test_a_synthetic_snapshot_is_written_like_a_daily_one_with_its_record_index(tmp_path):
    """Yesterday's attributes read through the index (no decoding) whoever wrote them."""
    import datetime as dt

    from pipeline import layout
    from pipeline.attributes.daily import _previous
    from pipeline.demo.synthetic_features import attribute_records, write_snapshot
    from pipeline.layout import Layout
    from pipeline.warehouse import Warehouse

    wh, date = Warehouse(Layout(f"file://{tmp_path}"), LocalStorage()), dt.date(2026, 11, 26)
    records = {r["track_id"]: r for r in attribute_records(40, 3)}
    manifest = write_snapshot(wh, date, records.values(), buckets=2, records_per_part=8)
    assert manifest.mode == "full" and manifest.counts["computed"] == 40 == manifest.records
    assert all(e.record_index for e in manifest.entries()) and sum(manifest.summary["mode_counts"]) == 40
    kept = [e for b in range(2) for e in _previous(wh, date, b)]
    assert all(e.record is None and e.raw for e in kept), "read through the record index, not decoded"
    assert sorted(e.track_id for e in kept) == sorted(records)
    decoded = [r for b in range(2) for r in wh.read_bucket(layout.ATTRIBUTES, date, b)]
    assert {r["track_id"]: r["tempo"] for r in decoded} == {t: r["tempo"] for t, r in records.items()}


# -- the entry encoded from arrays (index_encode.py) is what fastavro writes ----------------------------------------


def _fastavro_entry(entry: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema("record_index"), entry, strict=True)
    return out.getvalue()


@pytest.mark.parametrize("ids, updated, lengths", [
    ([f"{i:022d}" for i in range(3000)], [None if i % 5 == 0 else 1_700_000_000 + i for i in range(3000)],
     [i * 37 % 70_000 for i in range(3000)]),
    ([], [], []),
    (["short", "a-much-longer-track-identifier", "é", "x" * 70], [None, 0, -1, 2 ** 53], [0, 1, 2 ** 31 - 1, 64]),
    (["A" * 22], [-(2 ** 53)], [63]),
])
def test_the_entry_encoded_from_arrays_is_fastavros(ids, updated, lengths):
    from pipeline.formats.index_encode import encode_entry

    values = np.arange(2 * len(ids), dtype="<f8").tobytes()
    entry = {"part": "part-00003-0001.avro", "schema_fingerprint": "f" * 64, "track_ids": ids,
             "source_updated_at": updated, "lengths": lengths, "value_fields": ["duration", "tempo"], "values": values}
    got = encode_entry(entry["part"], entry["schema_fingerprint"],
                       np.array([i.encode() for i in ids], dtype=bytes) if ids else np.empty(0, "S1"),
                       np.array([np.nan if u is None else u for u in updated], dtype=np.float64),
                       np.array(lengths, dtype=np.int64), entry["value_fields"], values)
    assert got == _fastavro_entry(entry)


def test_varints_are_avros_zigzag_longs():
    from pipeline.formats.index_encode import varints

    values = [0, -1, 1, 63, -64, 64, 2 ** 31 - 1, -(2 ** 31), 2 ** 62, 2 ** 63 - 1, -(2 ** 63)]
    want = b"".join(_fastavro_long(v) for v in values)
    assert varints(np.array(values, dtype=np.int64)).tobytes() == want


def _fastavro_long(v: int) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", v)
    return out.getvalue()


def test_an_index_written_from_arrays_is_the_file_fastavro_writes(tmp_path):
    """Same header, blocks and sync marker: the raw writer's file equals fastavro's, byte for byte."""
    from pipeline.formats.avro_io import write_file
    from pipeline.formats.avro_raw import LazyRawWriter

    records = _records(5000)
    _write(tmp_path, records, per_part=1200, raw_from=2000)
    entries = list(read_index(LocalStorage(), f"file://{tmp_path}/index.avro"))
    assert len(entries) == 5  # parts of 1,200: runs and single records, nulls included
    again = write_file(LocalStorage(), f"file://{tmp_path}/again.avro", "record_index", entries,
                       identity="test/ids/index.avro")  # the identity IndexedPartsWriter gave its index
    assert (tmp_path / "index.avro").read_bytes() == (tmp_path / "again.avro").read_bytes()
    lazy = LazyRawWriter(LocalStorage(), f"file://{tmp_path}/raw.avro", "record_index", "snappy", "test/ids/index.avro")
    for entry in entries:
        lazy.write(entry)
    info = lazy.close()
    assert info is not None and info.records == 5 and info.bytes == again.bytes
    assert (tmp_path / "raw.avro").read_bytes() == (tmp_path / "again.avro").read_bytes()
    assert LazyRawWriter(LocalStorage(), f"file://{tmp_path}/none.avro", "record_index", "snappy", "x").close() is None
    assert not (tmp_path / "none.avro").exists()
