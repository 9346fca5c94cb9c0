"""A record index entry encoded with numpy: the Avro bytes fastavro would write, without a Python object per id.

Why: an entry lists a part's 20,000 ids, versions and lengths. Handing them to fastavro means
building a list of Python strings and ints first, then encoding each (~1.2 s of the ~13 s of a
daily attributes run at 1M tracks, the largest cost after computing the changed tracks). Here
the columns stay arrays: ids of one width become a strided copy behind their length byte, the
integer columns are zig-zag varints encoded for all items at once. ``encode_entry`` returns the
entry's bytes, identical to ``fastavro.schemaless_writer`` on the same entry
(``tests/test_record_index.py`` compares them), which ``avro_raw.RawFileWriter`` appends to a block.

The schema is ``record_index.avsc``: part (string), schema_fingerprint (string), track_ids
(array of string), source_updated_at (array of [null, long]), lengths (array of int),
value_fields (array of string), values (bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def varints(values: np.ndarray) -> np.ndarray:
    """Avro's zig-zag varints of int64 ``values``, concatenated, as uint8."""
    values = np.asarray(values, dtype=np.int64)
    zigzag = ((values << 1) ^ (values >> 63)).view(np.uint64)
    size = np.ones(len(zigzag), np.int64)
    rest = zigzag >> np.uint64(7)
    while rest.any():
        size += rest > 0
        rest >>= np.uint64(7)
    out = np.empty(int(size.sum()), np.uint8)
    start = np.cumsum(size) - size
    for k in range(int(size.max()) if len(size) else 0):
        at = size > k
        low = ((zigzag[at] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        out[start[at] + k] = low | ((size[at] > k + 1).astype(np.uint8) << 7)
    return out


def _long(n: int) -> bytes:
    return varints(np.array([n])).tobytes()


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _long(len(data)) + data


def _array(count: int, items: bytes) -> bytes:
    """An array in one block: its count, its items, the end marker (as fastavro writes it)."""
    return (_long(count) + items if count else b"") + b"\x00"


def _strings(ids: np.ndarray) -> bytes:
    """UTF-8 ids (an ``S`` array) as Avro strings: one strided copy when they all have the array's width."""
    width = ids.dtype.itemsize
    if len(ids) and width < 64 and int(np.char.str_len(ids).min()) == width:  # length fits one varint byte
        out = np.empty((len(ids), width + 1), np.uint8)
        out[:, 0] = 2 * width
        out[:, 1:] = ids.view(np.uint8).reshape(len(ids), width)
        return out.tobytes()
    return b"".join(_long(len(i)) + i for i in ids.tolist())


def _nullable_longs(values: np.ndarray) -> bytes:
    """[null, long] items: branch 0 for NaN, else branch 1 and the value (exact below 2**53)."""
    null = np.isnan(values)
    branch_and_value = np.empty(2 * len(values), np.int64)
    branch_and_value[0::2] = ~null
    branch_and_value[1::2] = np.where(null, 0, values).astype(np.int64)
    keep = np.ones(2 * len(values), bool)
    keep[1::2] = ~null
    return varints(branch_and_value[keep]).tobytes()


def encode_entry(part: str, schema_fingerprint: str, ids: np.ndarray, updated: np.ndarray, lengths: np.ndarray,
                 value_fields: Sequence[str], values: bytes) -> bytes:
    """The Avro encoding of one ``RecordIndexPart`` (ids as UTF-8 bytes, ``updated`` as floats, NaN = null)."""
    n = len(ids)
    if not n == len(updated) == len(lengths):
        raise ValueError(f"record index columns of different lengths: {n}, {len(updated)}, {len(lengths)}")
    return b"".join((
        _string(part), _string(schema_fingerprint),
        _array(n, _strings(ids)),
        _array(n, _nullable_longs(updated)),
        _array(n, varints(lengths).tobytes()),
        _array(len(value_fields), b"".join(_string(f) for f in value_fields)),
        _long(len(values)) + values,
    ))
