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
import warnings
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


def standardise(raw: np.ndarray, block: int = 262144) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised, group-weighted, L2-normalised float32 vectors, plus the mean and std used.

    Works in place on ``raw`` block by block, so a million tracks never need a second matrix.
    A constant dimension (std 0) is left at 0 instead of dividing by zero.
    """
    with warnings.catch_warnings():  # an all-null column has no mean: it becomes 0 below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(raw, axis=0, dtype=np.float64)) if len(raw) else np.zeros(DIM)
        std = np.nan_to_num(np.nanstd(raw, axis=0, dtype=np.float64)) if len(raw) else np.zeros(DIM)
    safe_std = np.where(std > 0, std, np.inf)
    scale = (SCALE / safe_std).astype(np.float32)
    for start in range(0, len(raw), block):
        part = raw[start:start + block]
        part -= mean.astype(np.float32)
        part *= scale
        np.nan_to_num(part, copy=False, nan=0.0)
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        np.divide(part, norms, out=part, where=norms > 0)
    return raw, mean.astype(np.float32), std.astype(np.float32)
