"""The fixed-length feature vector of a track, for similar-track search.

What goes in, and why (after per-dimension standardisation over the snapshot, every dimension
has mean 0 and variance 1; each group is then scaled by ``weight / sqrt(dims)`` so its share
of the squared norm is ``weight**2`` whatever its width):

=================  ====  ======  =================================================================
group              dims  weight  why
=================  ====  ======  =================================================================
timbre_mean          12    1.0   the sound's colour (brightness, attack, ...): what "sounds alike"
timbre_std           12    0.6   how much the colour moves: sparse ballad vs busy production
chroma_profile       12    0.5   harmonic content; low weight so key does not dominate sound
log2_tempo            1    0.4   tempo on a log scale (120 -> 240 BPM is one step, like 60 -> 120)
tempo_stability       1    0.2   steady grid vs rubato
segment_rate          1    0.3   onsets per second: rhythmic density
loudness_mean         1    0.4   mastering level
loudness_range        1    0.3   dynamics
mode                  1    0.3   major/minor mood
=================  ====  ======  =================================================================

Shares of the squared norm: timbre 62 %, chroma 11 %, rhythm 13 %, loudness 11 %, mode 4 %.
A missing value (a null attribute) becomes the snapshot mean, i.e. 0 after standardisation, so
it neither attracts nor repels. Vectors are L2-normalised: similarity is cosine.

Scalars also used by filters are kept beside the matrix: tempo (the analyzer's, else the beat
grid's), key and mode (the analyzer's, else the estimated ones; -1 when unknown).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.serving.errors import PublishError


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    dims: int
    weight: float


FEATURE_GROUPS = (
    FeatureGroup("timbre_mean", 12, 1.0), FeatureGroup("timbre_std", 12, 0.6),
    FeatureGroup("chroma_profile", 12, 0.5), FeatureGroup("log2_tempo", 1, 0.4),
    FeatureGroup("tempo_stability", 1, 0.2), FeatureGroup("segment_rate", 1, 0.3),
    FeatureGroup("loudness_mean", 1, 0.4), FeatureGroup("loudness_range", 1, 0.3),
    FeatureGroup("mode", 1, 0.3),
)
DIM = sum(g.dims for g in FEATURE_GROUPS)
SCALE = np.concatenate([np.full(g.dims, g.weight / math.sqrt(g.dims)) for g in FEATURE_GROUPS]).astype(np.float32)
ID_LENGTH = 22


def _first(record: dict, *names: str):
    """The first non-null of several fields (analyzer value first, computed fallback second)."""
    for name in names:
        if record.get(name) is not None:
            return record[name]
    return None


def tempo_of(record: dict) -> float | None:
    return _first(record, "tempo", "beat_tempo")


def key_of(record: dict) -> int:
    value = _first(record, "key", "estimated_key")
    return -1 if value is None else int(value)


def mode_of(record: dict) -> int:
    value = _first(record, "mode", "estimated_mode")
    return -1 if value is None else int(value)


def raw_vector(record: dict, out: np.ndarray) -> None:
    """Write a record's unstandardised features into ``out`` (length ``DIM``); NaN where a value is null."""
    out[:] = np.nan
    pos = 0
    for group in FEATURE_GROUPS:
        value = _group_value(record, group.name)
        if value is not None:
            out[pos:pos + group.dims] = value
        pos += group.dims


def _group_value(record: dict, name: str):
    if name == "log2_tempo":
        tempo = tempo_of(record)
        return math.log2(tempo) if tempo and tempo > 0 else None
    if name == "mode":
        mode = mode_of(record)
        return None if mode < 0 else mode
    value = record.get(name)
    if isinstance(value, list) and len(value) != 12:
        return None  # a malformed vector is treated as missing rather than shifting the other groups
    return value


@dataclass
class Features:
    """Rows sorted by track id: ids (``S22``), raw features (NaN = missing), filter scalars."""

    ids: np.ndarray
    raw: np.ndarray
    tempo: np.ndarray
    key: np.ndarray
    mode: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


_COLUMNS = ("ids", "raw", "tempo", "key", "mode")


def _empty_columns(capacity: int) -> dict[str, np.ndarray]:
    return {"ids": np.empty(capacity, dtype=f"S{ID_LENGTH}"), "raw": np.empty((capacity, DIM), dtype=np.float32),
            "tempo": np.empty(capacity, dtype=np.float32), "key": np.empty(capacity, dtype=np.int8),
            "mode": np.empty(capacity, dtype=np.int8)}


class FeatureCollector:
    """Collects the features of records streaming past (to the store) into preallocated arrays.

    Why a tap rather than a second read: the publish reads the snapshot once, and only these
    arrays (about 190 bytes a track) stay in memory, never the records themselves. Size it with
    the manifest's record count; it doubles if the count was short.
    """

    def __init__(self, capacity: int = 1024):
        self.n = 0
        self._cols = _empty_columns(max(1, capacity))

    def _grow(self) -> None:
        bigger = _empty_columns(2 * len(self._cols["ids"]))
        for name in _COLUMNS:
            bigger[name][:self.n] = self._cols[name][:self.n]
        self._cols = bigger

    def add(self, record: dict) -> None:
        track_id = record["track_id"]
        if len(track_id) != ID_LENGTH or not track_id.isascii():
            raise PublishError(f"track id {track_id!r} is not a 22-character base62 id")
        if self.n == len(self._cols["ids"]):
            self._grow()
        i, cols = self.n, self._cols
        cols["ids"][i] = track_id.encode("ascii")
        raw_vector(record, cols["raw"][i])
        tempo = tempo_of(record)
        cols["tempo"][i] = np.nan if tempo is None else tempo
        cols["key"][i], cols["mode"][i] = key_of(record), mode_of(record)
        self.n += 1

    def tap(self, records: Iterable[dict]) -> Iterator[dict]:
        """Pass records through unchanged, collecting each one's features on the way."""
        for record in records:
            self.add(record)
            yield record

    def finish(self) -> Features:
        """The collected rows, sorted by track id (duplicate ids are a broken snapshot)."""
        cols = {name: self._cols[name][:self.n] for name in _COLUMNS}
        order = np.argsort(cols["ids"], kind="stable")
        ids = cols["ids"][order]
        dup = np.flatnonzero(ids[1:] == ids[:-1])
        if len(dup):
            raise PublishError(f"duplicate track id {ids[dup[0]].decode()} in the snapshot")
        return Features(ids, cols["raw"][order], cols["tempo"][order], cols["key"][order], cols["mode"][order])


def column_stats(raw_blocks) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per dimension over blocks of raw rows, ignoring NaN (float64 sums: one pass, flat memory).

    An all-null column has mean 0 and std 0 (it is then left at 0 by ``apply_standardise``).
    """
    total, squares, count = np.zeros(DIM), np.zeros(DIM), np.zeros(DIM)
    for raw in raw_blocks:
        values = raw.astype(np.float64)
        seen = ~np.isnan(values)
        values[~seen] = 0.0
        total += values.sum(axis=0)
        squares += (values * values).sum(axis=0)
        count += seen.sum(axis=0)
    safe = np.maximum(count, 1)
    mean = total / safe
    std = np.sqrt(np.maximum(squares / safe - mean * mean, 0.0))
    std[std < 1e-12 * np.maximum(1.0, np.abs(mean))] = 0.0
    return mean.astype(np.float32), std.astype(np.float32)


def apply_standardise(part: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise, weight by group and L2-normalise ``part`` in place with given statistics."""
    scale = (SCALE / np.where(std > 0, std, np.inf)).astype(np.float32)
    part -= mean.astype(np.float32)
    part *= scale
    np.nan_to_num(part, copy=False, nan=0.0)
    norms = np.linalg.norm(part, axis=1, keepdims=True)
    np.divide(part, norms, out=part, where=norms > 0)
    return part


def standardise(raw: np.ndarray, block: int = 262144) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised, group-weighted, L2-normalised float32 vectors, plus the mean and std used.

    Works in place on ``raw`` block by block, so a million tracks never need a second matrix.
    A constant dimension (std 0) is left at 0 instead of dividing by zero.
    """
    mean, std = column_stats(raw[start:start + block] for start in range(0, len(raw), block))
    for start in range(0, len(raw), block):
        apply_standardise(raw[start:start + block], mean, std)
    return raw, mean, std


ROW = np.dtype([("id", f"S{ID_LENGTH}"), ("vec", "<f4", (DIM,)), ("tempo", "<f4"), ("key", "i1"), ("mode", "i1")])


def feature_row(record: dict, out) -> None:
    """Fill one ``ROW`` (a numpy record) from an attributes record."""
    track_id = record["track_id"]
    if len(track_id) != ID_LENGTH or not track_id.isascii():
        raise PublishError(f"track id {track_id!r} is not a 22-character base62 id")
    out["id"] = track_id.encode("ascii")
    raw_vector(record, out["vec"])
    tempo = tempo_of(record)
    out["tempo"] = np.nan if tempo is None else tempo
    out["key"], out["mode"] = key_of(record), mode_of(record)


class RowSpill:
    """Features of records streaming past, appended to a file of ``ROW`` records: flat memory at any size.

    Why a file: at 35M tracks the feature rows alone are ~7 GB; the publish keeps one 8192-row
    buffer and the index builder reads the file back block by block. Rows must arrive bucket by
    bucket, sorted by id within a bucket (the warehouse's order); ``end_bucket`` marks each end.
    """

    def __init__(self, path: str, buffer_rows: int = 8192):
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._buf = np.zeros(buffer_rows, ROW)
        self._used = 0
        self.n = 0
        self.bucket_offsets = [0]
        self._last = b""

    def add(self, record: dict) -> None:
        if self._used == len(self._buf):
            self._flush()
        feature_row(record, self._buf[self._used])
        self._append(record["track_id"])

    def add_row(self, row) -> None:
        """Append an already filled ``ROW``."""
        if self._used == len(self._buf):
            self._flush()
        self._buf[self._used] = row
        self._append(row["id"].decode())

    def add_rows(self, rows: np.ndarray) -> None:
        """Append filled ``ROW`` records, already sorted by id (checked, vectorised)."""
        if not len(rows):
            return
        ids = rows["id"]
        if ids[0] <= self._last or bool((ids[1:] <= ids[:-1]).any()):
            raise PublishError("track ids are out of order or duplicated in the snapshot")
        self._flush()
        self._file.write(np.ascontiguousarray(rows, ROW).tobytes())
        self.n += len(rows)
        self._last = bytes(ids[-1])

    def _append(self, track_id: str) -> None:
        row = self._buf[self._used]
        if row["id"] <= self._last:
            raise PublishError(f"track id {track_id} is out of order or duplicated in the snapshot")
        self._last = bytes(row["id"])
        self._used += 1
        self.n += 1

    def tap(self, records: Iterable[dict]) -> Iterator[dict]:
        for record in records:
            self.add(record)
            yield record

    def end_bucket(self) -> None:
        self.bucket_offsets.append(self.n)
        self._last = b""

    def _flush(self) -> None:
        self._file.write(self._buf[:self._used].tobytes())
        self._used = 0

    def close(self) -> int:
        self._flush()
        self._file.close()
        return self.n


def read_blocks(path: str, n: int, dtype: np.dtype, block: int = 65536) -> Iterator[np.ndarray]:
    """The records of a flat file in blocks (read, not mapped: the pages do not stay in this process)."""
    with open(path, "rb") as f:
        for start in range(0, n, block):
            yield np.fromfile(f, dtype, count=min(block, n - start))
