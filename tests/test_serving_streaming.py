"""The daily diff streams: record indexes read as columns part by part, merged without holding a bucket.

The reader parses the record index's Avro bytes itself (fastavro would build a Python object per
id), so it is checked against fastavro on what the writer produces and on the rarer encodings
(nulls, ids of another length, arrays written in several blocks). The merge is checked against
a set-based diff on parts whose boundaries differ between the two days.
"""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pytest

from pipeline.formats import RECORD_INDEX, header_schema, schema
from pipeline.formats.index_columns import PartColumns, parse_block, read_columns
from pipeline.serving.changes import KINDS, diff_columns
from pipeline.storage import LocalStorage

ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "S1")


def ids_of(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.choice(ALPHABET, (n, 22)).view("S22").ravel()
    return np.unique(raw)


def entry(name: str, ids, updated, lengths) -> dict:
    return {"part": name, "schema_fingerprint": "f" * 64, "track_ids": list(ids), "source_updated_at": list(updated),
            "lengths": list(lengths), "value_fields": ["duration", "tempo"],
            "values": np.arange(2 * len(ids), dtype="<f8").tobytes()}


def as_columns(record: dict) -> tuple:
    return (record["part"], record["schema_fingerprint"], [t.encode() for t in record["track_ids"]],
            [np.nan if u is None else float(u) for u in record["source_updated_at"]], list(record["lengths"]))


def same(columns: PartColumns, record: dict) -> bool:
    want = as_columns(record)
    got = (columns.part, columns.schema_fingerprint, columns.ids.tolist(), columns.updated.tolist(),
           columns.lengths.tolist())
    return got[:3] == want[:3] and np.array_equal(got[3], want[3], equal_nan=True) and got[4] == want[4]


@pytest.fixture
def records():
    rng = np.random.default_rng(3)
    ids = [t.decode() for t in ids_of(rng, 3000)]
    updated = [int(u) for u in rng.integers(-2**40, 2**40, 3000)]
    lengths = [int(v) for v in rng.integers(0, 2**31 - 1, 3000)]
    with_nulls = [None if i % 7 == 0 else u for i, u in enumerate(updated)]
    return [entry("part-0.avro", ids[:1500], updated[:1500], lengths[:1500]),  # what the writer makes
            entry("part-1.avro", ids[1500:2999], with_nulls[1500:2999], lengths[1500:2999]),
            entry("part-2.avro", [], [], []),
            entry("part-3.avro", ["short", "a-much-longer-track-identifier", "é"], [None, 0, -1], [0, 1, 2**31 - 1])]


def test_the_column_reader_agrees_with_fastavro_on_every_encoding(records, tmp_path):
    path = tmp_path / "records-00000.avro"
    with open(path, "wb") as f:
        fastavro.writer(f, header_schema(RECORD_INDEX), records, codec="deflate", sync_interval=100)
    got = list(read_columns(LocalStorage(), f"file://{path}"))
    assert len(got) == len(records) and all(same(c, r) for c, r in zip(got, records, strict=True))
    assert got[0].ids.dtype == np.dtype("S22")  # the fast path: one strided view, no Python string per id


def test_value_rows_are_read_when_asked_for_and_skipped_otherwise(records, tmp_path):
    """The daily attributes keep yesterday's records with their value rows, read as columns (kept_runs.py)."""
    path = tmp_path / "records-00000.avro"
    with open(path, "wb") as f:
        fastavro.writer(f, header_schema(RECORD_INDEX), records, codec="snappy")
    for with_values in (True, False):
        got = list(read_columns(LocalStorage(), f"file://{path}", with_values=with_values))
        assert all(same(c, r) for c, r in zip(got, records, strict=True))
        for columns, record in zip(got, records, strict=True):
            assert columns.value_fields == tuple(record["value_fields"])
            if with_values:
                want = np.frombuffer(record["values"], "<f8").reshape(len(record["track_ids"]), 2)
                assert np.array_equal(columns.values, want)
            else:
                assert columns.values is None


def test_arrays_written_in_several_blocks_with_byte_sizes_parse_like_fastavro(records):
    """Avro lets a writer split an array into blocks, a negative count announcing the block's byte size."""
    def long(v: int) -> bytes:
        v = (v << 1) ^ (v >> 63)
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not out[-1] & 0x80:
                return bytes(out)

    def string(s: str) -> bytes:
        return long(len(s.encode())) + s.encode()

    def blocks(items: list[bytes], sizes=(2, 3)) -> bytes:
        out, i, k = b"", 0, 0
        while i < len(items):
            n = sizes[k % len(sizes)]
            body = b"".join(items[i:i + n])
            out += (long(-len(items[i:i + n])) + long(len(body)) if k % 2 else long(len(items[i:i + n]))) + body
            i, k = i + n, k + 1
        return out + long(0)

    rec = records[1]
    data = (string(rec["part"]) + string(rec["schema_fingerprint"]) + blocks([string(t) for t in rec["track_ids"]])
            + blocks([long(0) if u is None else long(1) + long(u) for u in rec["source_updated_at"]])
            + blocks([long(v) for v in rec["lengths"]]) + blocks([string(s) for s in rec["value_fields"]])
            + long(len(rec["values"])) + rec["values"])
    assert fastavro.schemaless_reader(io.BytesIO(data), schema(RECORD_INDEX)) == rec  # a valid encoding
    (parsed,) = parse_block(data, 1)
    assert same(parsed, rec)
    with pytest.raises(ValueError, match="does not parse|bytes after"):
        parse_block(data[:-5], 1)


def reference(old: dict, new: dict) -> list[tuple[str, str]]:
    out = [(t, "changed") for t in new.keys() & old.keys() if new[t] != old[t]]
    out += [(t, "added") for t in new.keys() - old.keys()] + [(t, "dropped") for t in old.keys() - new.keys()]
    return sorted(out)


def parts(ids: np.ndarray, updated: np.ndarray, lengths: np.ndarray, cuts: list[int]) -> list[PartColumns]:
    bounds = [0, *cuts, len(ids)]
    return [PartColumns(f"p{i}", "", ids[a:b], updated[a:b], lengths[a:b]) for i, (a, b) in
            enumerate(zip(bounds[:-1], bounds[1:], strict=True))]


@pytest.mark.parametrize("seed", range(6))
def test_the_streamed_diff_is_the_set_difference_whatever_the_part_boundaries(seed):
    rng = np.random.default_rng(seed)
    pool = ids_of(rng, 5000)
    old_ids = np.sort(rng.choice(pool, 3000, replace=False))
    new_ids = np.sort(np.concatenate([rng.choice(old_ids, 2900, replace=False),
                                      rng.choice(np.setdiff1d(pool, old_ids), 150 * (seed % 3), replace=False)]))
    old_upd = rng.choice([np.nan, 1.0, 2.0], len(old_ids))
    old_len = rng.integers(300, 303, len(old_ids))
    where = np.searchsorted(old_ids, new_ids)
    known = (where < len(old_ids)) & (old_ids[np.minimum(where, len(old_ids) - 1)] == new_ids)
    new_upd = np.where(known, old_upd[np.minimum(where, len(old_ids) - 1)], 1.0)
    new_len = np.where(known, old_len[np.minimum(where, len(old_ids) - 1)], 300)
    touched = rng.random(len(new_ids)) < 0.05
    new_upd[touched & (rng.random(len(new_ids)) < 0.5)] = np.nan
    new_len[touched] += 1
    old_cuts = sorted(rng.choice(np.arange(1, len(old_ids)), 1 + seed, replace=False).tolist())
    new_cuts = sorted(rng.choice(np.arange(1, len(new_ids)), 3 + seed, replace=False).tolist())
    if seed % 2:
        new_cuts = [new_cuts[0], new_cuts[0], *new_cuts[1:]]  # an empty part
    new = parts(new_ids, new_upd, new_len, new_cuts)
    events = [(t, KINDS[k], int(p), int(i)) for step in diff_columns(parts(old_ids, old_upd, old_len, old_cuts), new)
              for t, k, p, i in zip(*step, strict=True)]

    def key(ids, upd, lens):
        return {t.decode(): ("nan" if np.isnan(u) else u, int(n)) for t, u, n in zip(ids, upd, lens, strict=True)}

    assert [(t.decode(), k) for t, k, _, _ in events] == reference(key(old_ids, old_upd, old_len),
                                                                   key(new_ids, new_upd, new_len))
    for t, kind, p, i in events:  # each change points at its record in today's parts
        assert (kind == "dropped") == (p == -1) and (p == -1 or new[p].ids[i] == t)
