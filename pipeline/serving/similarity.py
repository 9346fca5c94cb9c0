"""Similar tracks: exact cosine search by blocked matrix products, an IVF index for scale, filters.

Why both: exact search is the reference (and fast enough below ~10k tracks or on a small
filtered subset), the approximate index (``pipeline.serving.ann``) answers a million-track
catalogue in well under a millisecond. ``SimilarityIndex.similar`` picks the path per query:

* no filter, or a filter that keeps many tracks: ask the approximate index for enough
  candidates (more when the filter is selective), drop the track itself and the filtered-out
  ones, keep the best ``k``; if fewer than ``k`` survive, fall back to exact search;
* a selective filter (fewer than ``EXACT_BELOW`` tracks pass): exact search over just those.

Filters: a tempo range (BPM, inclusive) and "same key and mode" as the query track. Tracks
with an unknown tempo never pass a tempo filter, and a query track with an unknown key or mode
has no same-key neighbours. A track without any feature value (a zero vector) is nobody's
neighbour and has none itself. The index of a version is saved as one ``index-<version>.npz``
beside the store (written atomically), built by every publish.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.serving.ann import DEFAULT_NPROBE, IvfIndex
from pipeline.serving.errors import UnknownTrackError
from pipeline.serving.features import FEATURE_GROUPS, Features, standardise

BLOCK = 65536  # rows per matrix product: a (queries x BLOCK) score block stays cache- and RAM-friendly
EXACT_BELOW = 20_000  # filtered subsets smaller than this are searched exactly
APPROXIMATE_FROM = 10_000  # catalogues smaller than this get no approximate index (exact is < 1 ms)
MAX_CANDIDATES = 4096


def index_path(index_dir: str | Path, version: str) -> Path:
    return Path(index_dir) / f"index-{version}.npz"


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None,
                 block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` (or of the subset ``rows``) with the highest inner product per query.

    Returns ``(rows, scores)``, each (queries, k') with k' = min(k, candidates), best first; ties
    go to the lower row so results are deterministic. With unit vectors the score is the cosine.
    """
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    total = len(vectors) if rows is None else len(rows)
    k = min(k, total)
    best_rows = np.empty((len(q), 0), dtype=np.int64)
    best_scores = np.empty((len(q), 0), dtype=np.float32)
    for start in range(0, total, block):
        stop = min(total, start + block)
        ids = np.arange(start, stop) if rows is None else np.asarray(rows[start:stop], dtype=np.int64)
        part = vectors[start:stop] if rows is None else vectors[ids]
        scores = np.concatenate((best_scores, q @ part.T), axis=1)
        cand = np.concatenate((best_rows, np.broadcast_to(ids, (len(q), len(ids)))), axis=1)
        if scores.shape[1] > k:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, cand = np.take_along_axis(scores, top, 1), np.take_along_axis(cand, top, 1)
        best_scores, best_rows = scores, cand
    order = np.lexsort((best_rows, -best_scores), axis=1) if k else best_rows
    return np.take_along_axis(best_rows, order, 1), np.take_along_axis(best_scores, order, 1)


@dataclass(frozen=True)
class Filters:
    """Restrictions on the neighbours of a track (all optional)."""

    tempo_min: float | None = None
    tempo_max: float | None = None
    same_key: bool = False

    def active(self) -> bool:
        return self.tempo_min is not None or self.tempo_max is not None or self.same_key


NO_FILTERS = Filters()


@dataclass(frozen=True)
class Neighbour:
    track_id: str
    score: float
    tempo: float | None
    key: int | None
    mode: int | None


class SimilarityIndex:
    """Unit feature vectors of one snapshot version, sorted by track id, with filter columns."""

    def __init__(self, version: str, features: Features, mean: np.ndarray, std: np.ndarray,
                 ann: IvfIndex | None = None):
        self.version = version
        self.ids, self.vectors = features.ids, features.raw  # ``raw`` holds the standardised unit vectors here
        self.tempo, self.key, self.mode = features.tempo, features.key, features.mode
        self.mean, self.std, self.ann = mean, std, ann
        self.featured = self.vectors.any(axis=1)  # all-null tracks (zero vectors) are never anyone's neighbour
        self._all_featured = bool(self.featured.all())

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, features: Features, version: str, approximate: bool | None = None, nlist: int | None = None,
              nprobe: int = DEFAULT_NPROBE) -> SimilarityIndex:
        """Standardise the collected features (in place) and, for a large catalogue, train the IVF index."""
        vectors, mean, std = standardise(features.raw)
        unit = Features(features.ids, vectors, features.tempo, features.key, features.mode)
        if approximate is None:
            approximate = len(features) >= APPROXIMATE_FROM
        ann = IvfIndex.build(vectors, nlist=nlist, nprobe=nprobe) if approximate and len(features) else None
        return cls(version, unit, mean, std, ann)

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the index atomically (temporary file, then rename): readers never see half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        arrays = {"version": np.array(self.version), "ids": self.ids, "vectors": self.vectors, "tempo": self.tempo,
                  "key": self.key, "mode": self.mode, "mean": self.mean, "std": self.std,
                  "groups": np.array([f"{g.name}:{g.dims}:{g.weight}" for g in FEATURE_GROUPS]),
                  "ann": self.ann.to_bytes() if self.ann else np.empty(0, np.uint8),
                  "nprobe": np.array(self.ann.nprobe if self.ann else DEFAULT_NPROBE)}
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SimilarityIndex:
        with np.load(path, allow_pickle=False) as data:
            features = Features(data["ids"], data["vectors"], data["tempo"], data["key"], data["mode"])
            ann = IvfIndex.from_bytes(data["ann"], int(data["nprobe"])) if len(data["ann"]) else None
            return cls(str(data["version"]), features, data["mean"], data["std"], ann)

    # -- queries ------------------------------------------------------------------------------------
    def row_of(self, track_id: str) -> int | None:
        """Binary search in the sorted ids (no per-track Python objects for a million tracks)."""
        key = track_id.encode("ascii", "replace")
        row = int(np.searchsorted(self.ids, key))
        return row if row < len(self.ids) and self.ids[row] == key else None

    def similar(self, track_id: str, k: int = 10, filters: Filters = NO_FILTERS) -> list[Neighbour]:
        """The ``k`` most similar tracks to ``track_id`` that pass ``filters``, best first, itself excluded."""
        row = self.row_of(track_id)
        if row is None:
            raise UnknownTrackError(f"track {track_id} is not in similarity index {self.version}")
        if k < 1 or not self.vectors[row].any():  # a track without any feature has no meaningful neighbours
            return []
        mask = self.filter_mask(row, filters)
        allowed = len(self) - 1 if mask is None else int(mask.sum())
        found: list[tuple[int, float]] = []
        if self.ann is not None and (mask is None or allowed >= EXACT_BELOW):
            found = self._approximate(row, k, mask, allowed)
        if len(found) < min(k, allowed):
            found = self._exact(row, k, mask)
        return [self._neighbour(r, s) for r, s in found]

    def filter_mask(self, row: int, filters: Filters) -> np.ndarray | None:
        """Rows passing the filters, the query row and featureless tracks excluded; None when nothing is."""
        if not filters.active() and self._all_featured:
            return None
        mask = self.featured.copy()
        if filters.tempo_min is not None:
            mask &= self.tempo >= filters.tempo_min  # NaN (unknown tempo) compares False: filtered out
        if filters.tempo_max is not None:
            mask &= self.tempo <= filters.tempo_max
        if filters.same_key:
            if self.key[row] < 0 or self.mode[row] < 0:
                mask[:] = False
            else:
                mask &= (self.key == self.key[row]) & (self.mode == self.mode[row])
        mask[row] = False
        return mask

    def _approximate(self, row: int, k: int, mask: np.ndarray | None, allowed: int) -> list[tuple[int, float]]:
        """Oversample in proportion to how selective the filter is, then filter the candidates."""
        want = min(MAX_CANDIDATES, (k + 1) * max(1, -(-len(self) // allowed)) * (2 if mask is not None else 1))
        rows, scores = self.ann.search(self.vectors[row], want)  # type: ignore[union-attr]
        rows, scores = rows[0], scores[0]
        keep = (rows >= 0) & (rows != row)
        if mask is not None:
            keep &= mask[np.maximum(rows, 0)]
        return list(zip(rows[keep][:k].tolist(), scores[keep][:k].tolist(), strict=True))

    def _exact(self, row: int, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        if mask is None:
            rows, scores = exact_search(self.vectors, self.vectors[row], k + 1)
        else:
            rows, scores = exact_search(self.vectors, self.vectors[row], k, rows=np.flatnonzero(mask))
        pairs = [(r, s) for r, s in zip(rows[0].tolist(), scores[0].tolist(), strict=True) if r != row]
        return pairs[:k]

    def _neighbour(self, row: int, score: float) -> Neighbour:
        tempo = float(self.tempo[row])
        return Neighbour(self.ids[row].decode("ascii"), round(float(score), 6), None if np.isnan(tempo) else tempo,
                         None if self.key[row] < 0 else int(self.key[row]),
                         None if self.mode[row] < 0 else int(self.mode[row]))
