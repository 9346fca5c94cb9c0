"""What a publish writes: every record of a snapshot (full load), or only what changed since a parent date.

The attributes job keeps a track's record byte for byte unless its analysis changed, and each
bucket of ``attributes/<date>`` carries a record index (``_index/records-*.avro``: ids,
``source_updated_at`` and encoded lengths per part). Two dates made by the same algorithm are
therefore diffed per bucket from their record indexes alone: a track is *kept* when its id,
``source_updated_at`` and encoded length agree, *changed* or *added* otherwise, *dropped* when
it is only in the parent. Only the changed and added records' bytes are sliced out of today's
parts (no decoding of the rest); the store receives those bytes as they are (the attributes
record's Avro binary encoding is the store's value).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import fastavro
import numpy as np

from pipeline import layout
from pipeline.errors import CorruptFileError, PipelineError
from pipeline.formats import ATTRIBUTES, fingerprint
from pipeline.formats.avro_raw import read_raw
from pipeline.formats.record_index import read_index
from pipeline.manifest import Manifest
from pipeline.serving import cells
from pipeline.serving.errors import PublishError
from pipeline.warehouse import Warehouse


@dataclass(frozen=True)
class Change:
    """One track's change in a bucket: ``raw`` is None for a dropped track."""

    track_id: str
    kind: str  # "added" | "changed" | "dropped"
    raw: bytes | None = None


def diffable(wh: Warehouse, parent: dt.date, date: dt.date) -> str | None:
    """Why ``date`` cannot be diffed against ``parent`` (None when it can)."""
    if not wh.is_complete(layout.ATTRIBUTES, parent):
        return f"attributes/{layout.format_date(parent)} is not in the warehouse"
    old, new = wh.manifest(layout.ATTRIBUTES, parent, whole=True), wh.manifest(layout.ATTRIBUTES, date, whole=True)
    if old.buckets != new.buckets:
        return "the bucket count changed"
    if old.algorithm_version is None or old.algorithm_version != new.algorithm_version:
        return "the attributes algorithm version changed (or is unknown)"
    if old.schema_fingerprint != new.schema_fingerprint:
        return "the attributes schema changed"
    if not all(e.record_index for m in (old, new) for e in m.entries()):
        return "a bucket has no record index"
    return None


def _parts(wh: Warehouse, date: dt.date, manifest: Manifest, bucket: int) -> list[dict]:
    entry = manifest.bucket(bucket)
    parts = list(read_index(wh.storage, wh.layout.file_url(layout.ATTRIBUTES, date, entry.record_index or "")))
    current = fingerprint(ATTRIBUTES)
    for part in parts:
        if part["schema_fingerprint"] != current:
            raise PublishError(f"attributes/{layout.format_date(date)} part {part['part']} was written with another "
                               "schema: publish it as a full load (--full)")
    return parts


def _columns(parts: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, source_updated_at as float with NaN for null, lengths, part, position) of a bucket's records."""
    if not parts:
        empty = np.empty(0, np.int64)
        return np.empty(0, "S22"), np.empty(0), empty, empty, empty
    ids = np.concatenate([np.asarray(p["track_ids"], dtype="S22") for p in parts])
    updated = np.concatenate([np.asarray(p["source_updated_at"], dtype=np.float64) for p in parts])
    lengths = np.concatenate([np.asarray(p["lengths"], dtype=np.int64) for p in parts])
    part = np.concatenate([np.full(len(p["track_ids"]), i, np.int64) for i, p in enumerate(parts)])
    pos = np.concatenate([np.arange(len(p["track_ids"]), dtype=np.int64) for p in parts])
    return ids, updated, lengths, part, pos


def diff_bucket(old_parts: list[dict], new_parts: list[dict]) -> list[tuple[str, str, int, int]]:
    """(track_id, kind, part, position) of every change in a bucket, in id order.

    Vectorised: the id columns of both days are intersected as arrays (a bucket is sorted by id),
    so a million unchanged tracks cost a few array operations, not a Python loop.
    """
    old_ids, old_upd, old_len, _, _ = _columns(old_parts)
    new_ids, new_upd, new_len, new_part, new_pos = _columns(new_parts)
    _, in_old, in_new = np.intersect1d(old_ids, new_ids, assume_unique=True, return_indices=True)
    same_upd = (old_upd[in_old] == new_upd[in_new]) | (np.isnan(old_upd[in_old]) & np.isnan(new_upd[in_new]))
    changed = in_new[~(same_upd & (old_len[in_old] == new_len[in_new]))]
    added = np.setdiff1d(np.arange(len(new_ids)), in_new, assume_unique=True)
    dropped = np.setdiff1d(np.arange(len(old_ids)), in_old, assume_unique=True)
    events = [(new_ids[i].decode(), "changed", int(new_part[i]), int(new_pos[i])) for i in changed]
    events += [(new_ids[i].decode(), "added", int(new_part[i]), int(new_pos[i])) for i in added]
    events += [(old_ids[i].decode(), "dropped", -1, -1) for i in dropped]
    events.sort()
    return events


def raw_records(wh: Warehouse, url: str, part: dict, positions: set[int]) -> dict[int, bytes]:
    """The encoded bytes of the records at ``positions`` of a part file, sliced by the index's lengths."""
    lengths = np.asarray(part["lengths"], dtype=np.int64)
    wanted = np.zeros(len(lengths), bool)
    wanted[sorted(positions)] = True
    out: dict[int, bytes] = {}
    first = 0
    try:
        with wh.storage.open_read(url) as f:
            for block in fastavro.block_reader(f):
                last = first + block.num_records
                if wanted[first:last].any():
                    data = block.bytes_.getvalue()
                    ends = np.cumsum(lengths[first:last])
                    if last > len(lengths) or int(ends[-1]) != len(data):
                        raise CorruptFileError(f"record index does not match {url} at byte {block.offset}")
                    for i in np.flatnonzero(wanted[first:last]):
                        out[first + int(i)] = data[int(ends[i] - lengths[first + i]):int(ends[i])]
                first = last
    except (OSError, PipelineError):
        raise
    except Exception as exc:  # truncated blocks, bad codecs, garbage: whatever fastavro or cramjam raise
        raise CorruptFileError(f"cannot decode Avro file {url}: {type(exc).__name__}: {exc}") from exc
    return out


def bucket_changes(wh: Warehouse, parent: dt.date, date: dt.date, bucket: int, with_bytes: bool = True) -> list[Change]:
    """The changes of one bucket from ``parent`` to ``date``, with the new records' bytes."""
    old_m = wh.manifest(layout.ATTRIBUTES, parent, whole=True)
    new_m = wh.manifest(layout.ATTRIBUTES, date, whole=True)
    new_parts = _parts(wh, date, new_m, bucket)
    events = diff_bucket(_parts(wh, parent, old_m, bucket), new_parts)
    raws: dict[tuple[int, int], bytes] = {}
    if with_bytes:
        wanted: dict[int, set[int]] = {}
        for _, kind, p, i in events:
            if kind != "dropped":
                wanted.setdefault(p, set()).add(i)
        for p, positions in sorted(wanted.items()):
            url = wh.layout.file_url(layout.ATTRIBUTES, date, new_parts[p]["part"])
            raws.update(((p, i), raw) for i, raw in raw_records(wh, url, new_parts[p], positions).items())
    return [Change(tid, kind, raws.get((p, i))) for tid, kind, p, i in events]


def full_records(wh: Warehouse, date: dt.date, manifest: Manifest, bucket: int) -> Iterator[tuple[dict, bytes]]:
    """Every record of a bucket with its Avro bytes (re-encoded when written with another schema)."""
    current = fingerprint(ATTRIBUTES)
    for url in wh.bucket_files(layout.ATTRIBUTES, date, bucket, manifest):
        for record, raw, fp in read_raw(wh.storage, url):
            yield record, (raw if fp == current else cells.encode(record))
