"""Catalog ids read as arrays (formats/catalog_ids.py) are fastavro's, whatever the rows hold."""

from __future__ import annotations

import fastavro
import numpy as np
import pytest

from pipeline.formats import CATALOG, header_schema
from pipeline.formats.catalog_ids import parse_fixed_rows, read_id_blocks
from pipeline.storage import LocalStorage

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _ids(n: int, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    return sorted({"".join(rng.choice(list(ALPHABET), 22)) for _ in range(n)})


def _write(path, rows, codec="deflate", sync_interval=4000):
    with open(path, "wb") as f:
        fastavro.writer(f, header_schema(CATALOG), rows, codec=codec, sync_interval=sync_interval)


def _fastavro_ids(path) -> list[bytes]:
    with open(path, "rb") as f:
        return [r["track_id"].encode() for r in fastavro.reader(f)]


def _read(path) -> tuple[list[bytes], list[np.dtype]]:
    blocks = list(read_id_blocks(LocalStorage(), f"file://{path}"))
    return [i for b in blocks for i in b.tolist()], [b.dtype for b in blocks]


def test_rows_of_the_common_shape_are_one_strided_view_per_block(tmp_path, monkeypatch):
    from pipeline.formats import catalog_ids

    parsed = []
    monkeypatch.setattr(catalog_ids, "parse_fixed_rows",
                        lambda *a, _f=catalog_ids.parse_fixed_rows: parsed.append(_f(*a)) or parsed[-1])
    rows = [{"track_id": t, "analysis_key": None, "analysis_updated_at": 1_700_000_000 + i}
            for i, t in enumerate(_ids(5000))]
    _write(tmp_path / "c.avro", rows)
    ids, dtypes = _read(tmp_path / "c.avro")
    assert ids == _fastavro_ids(tmp_path / "c.avro") and len(dtypes) > 5
    assert len(parsed) == len(dtypes) and all(p is not None for p in parsed)  # no block went to fastavro


@pytest.mark.parametrize("odd", [
    {"analysis_updated_at": None},  # a null version
    {"analysis_key": "some/other/key.json"},  # a key of its own
    {"analysis_updated_at": 12},  # a short varint
    {"analysis_updated_at": 2 ** 40},  # a long one
    {"track_id": "short"},  # another length
    {"track_id": "é" * 11},  # 22 characters, 22 bytes... of 2-byte characters: 22 bytes is not 22 characters
])
def test_any_other_row_is_read_by_fastavro_with_the_same_ids(tmp_path, odd):
    rows = [{"track_id": t, "analysis_key": None, "analysis_updated_at": 1_700_000_000 + i}
            for i, t in enumerate(_ids(3000))]
    rows[1234] = {**rows[1234], **odd}
    for codec in ("null", "deflate", "snappy"):
        _write(tmp_path / f"c-{codec}.avro", rows, codec)
        ids, _ = _read(tmp_path / f"c-{codec}.avro")
        assert ids == _fastavro_ids(tmp_path / f"c-{codec}.avro")


def test_a_block_of_another_size_or_shape_is_not_parsed_here():
    row = bytes([44]) + b"A" * 22 + bytes([0, 2]) + bytes([0x80, 0x80, 0x80, 0x80, 0x01])  # 2**28 zig-zagged
    ids, versions = parse_fixed_rows(row * 3, 3)
    assert ids.tolist() == [b"A" * 22] * 3 and versions.tolist() == [2 ** 27] * 3
    assert parse_fixed_rows(row * 3, 4) is None
    assert parse_fixed_rows(row * 2 + row[:-1] + b"\x81", 3) is None  # a varint that does not end
    assert parse_fixed_rows(b"", 0) is None


def test_an_empty_catalog_file_has_no_ids(tmp_path):
    _write(tmp_path / "c.avro", [])
    assert _read(tmp_path / "c.avro")[0] == []


@pytest.mark.parametrize("odd", [None, {"source_updated_at": None}, {"source_updated_at": 7}, {"track_id": "x"}])
def test_an_id_index_gives_fastavros_ids_and_versions(tmp_path, odd):
    from pipeline.formats import IDS
    from pipeline.formats.catalog_ids import read_id_version_blocks

    rows = [{"track_id": t, "source_updated_at": 1_700_000_000 + 37 * i} for i, t in enumerate(_ids(3000))]
    if odd:
        rows[999] = {**rows[999], **odd}
    with open(tmp_path / "ids.avro", "wb") as f:
        fastavro.writer(f, header_schema(IDS), rows, codec="snappy", sync_interval=4000)
    blocks = list(read_id_version_blocks(LocalStorage(), f"file://{tmp_path / 'ids.avro'}"))
    assert [i.decode() for b, _ in blocks for i in b.tolist()] == [r["track_id"] for r in rows]
    versions = np.concatenate([v for _, v in blocks])
    want = np.array([np.nan if r["source_updated_at"] is None else r["source_updated_at"] for r in rows])
    assert np.array_equal(versions, want, equal_nan=True)
