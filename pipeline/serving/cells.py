"""A track's row in the online store: its attributes in every version still kept, packed as one binary value.

Why one row per track rather than one table per version: a daily publish changes ~1% of the
tracks, so it should write ~1% of the rows. A row holds *cells*; a cell is (day, value), where
``day`` is the snapshot date as a day ordinal and ``value`` is the attributes record's Avro
binary encoding (schemaless, the warehouse's own bytes: ~330 bytes, vs ~1.35 kB of JSON) or a
tombstone (the track left the catalogue on that day). A version ``v`` built on the full load
``base`` reads, per track, the newest cell with ``base <= day <= v``; no such cell means the
track is not in ``v``. A version therefore sees exactly its own rows whatever newer cells are
added for later versions, which is what makes the flip one pointer write and a rollback another.

Layout of a packed row: repeated ``<u32 day><u32 length><length bytes>``, days ascending; a
tombstone has length ``0xFFFFFFFF`` and no bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import struct
from collections.abc import Iterable

import fastavro

from pipeline.formats import ATTRIBUTES, schema

_HEAD = struct.Struct("<II")
TOMBSTONE = 0xFFFFFFFF
Cell = tuple[int, bytes | None]  # (day ordinal, Avro bytes or None for a tombstone)


def day_of(version: str) -> int:
    """The day ordinal of a version ``YYYY-MM-DD`` (validated by the caller)."""
    return dt.date.fromisoformat(version).toordinal()


def unpack(data: bytes | None) -> list[Cell]:
    """The cells of a packed row, oldest first (an absent row has none)."""
    cells: list[Cell] = []
    if not data:
        return cells
    pos, end = 0, len(data)
    while pos < end:
        day, length = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        if length == TOMBSTONE:
            cells.append((day, None))
        else:
            cells.append((day, bytes(data[pos:pos + length])))
            pos += length
    return cells


def pack(cells: Iterable[Cell]) -> bytes:
    out = bytearray()
    for day, value in sorted(cells, key=lambda c: c[0]):
        out += _HEAD.pack(day, TOMBSTONE if value is None else len(value))
        if value is not None:
            out += value
    return bytes(out)


def pick(cells: list[Cell], base: int, top: int) -> Cell | None:
    """The newest cell with ``base <= day <= top`` (what a version built on ``base`` sees), or None."""
    found = None
    for cell in cells:
        if base <= cell[0] <= top:
            found = cell
    return found


def merge(cells: list[Cell], new: Cell, kept: Iterable[tuple[int, int]]) -> list[Cell]:
    """The row after writing ``new``: it replaces a cell of the same day, and only cells some kept version sees stay.

    ``kept`` are the (base, day) ranges of the other registered versions. Pruning on every write keeps a
    row to a few cells (a track changed daily does not accumulate one cell per day).
    """
    return prune([c for c in cells if c[0] != new[0]] + [new], kept, also=new[0])


def prune(cells: list[Cell], kept: Iterable[tuple[int, int]], also: int | None = None) -> list[Cell]:
    """The cells some kept (base, day) range sees (and the cell of day ``also``), oldest first.

    A tombstone with nothing older left hides nothing, so it goes too: the row of a track that no
    kept version holds ends up empty (and is deleted).
    """
    cells = sorted(cells, key=lambda c: c[0])
    needed = {c[0] for c in (pick(cells, b, t) for b, t in kept) if c is not None}
    out = [c for c in cells if c[0] in needed or c[0] == also]
    while out and out[0][1] is None:
        out.pop(0)
    return out


@functools.cache
def _schema():
    return fastavro.parse_schema(schema(ATTRIBUTES))


def encode(record: dict) -> bytes:
    """A record's Avro binary encoding (schemaless: the schema is the warehouse's ``attributes.avsc``)."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _schema(), record)
    return out.getvalue()


def decode(data: bytes) -> dict:
    parsed = _schema()
    return fastavro.schemaless_reader(io.BytesIO(data), parsed, parsed)
