"""Similar tracks: exact cosine search, an on-disk IVF index shared by processes, daily deltas, filters.

An index of a version is a folder ``index-<version>/`` (``meta.json`` written last, the folder
renamed into place, so a reader sees a whole index or none):

* a **full** version has one *base* segment (``pipeline.serving.segment``) of every track;
* a **daily** version reuses its base's segment files as they are (in the base's folder) and
  adds a small *delta* segment of the tracks changed since the base (in the base's vector
  space: its standardisation and its centroids), plus ``dead.i8``, the base rows that changed
  or left since. So a daily index costs in proportion to the changes, and full loads rebuild.

``SimilarityIndex.similar`` finds a track's row (delta first, then base unless dead), scans the
``nprobe`` best lists of each segment, applies the filters to those rows, and keeps the best
``k``; when fewer than ``k`` pass (a selective filter) it searches exactly over every row that
passes. With one list (below 10,000 tracks) the scan is exact search.

Filters: a tempo range (BPM, inclusive) and "same key and mode" as the query track. Tracks
with an unknown tempo never pass a tempo filter, and a query track with an unknown key or mode
has no same-key neighbours. A track without any feature value (a zero vector) is in no list:
nobody's neighbour, and it has none itself.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.serving.errors import UnknownTrackError
from pipeline.serving.features import FEATURE_GROUPS, ROW, Features
from pipeline.serving.segment import Segment, build_segment, fsync_dir

BLOCK = 65536  # rows per matrix product: a (queries x BLOCK) score block stays cache- and RAM-friendly
DEFAULT_NPROBE = 32
FORMAT = 2


def index_path(index_dir: str | Path, version: str) -> Path:
    return Path(index_dir) / f"index-{version}"


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
        scores = np.concatenate((best_scores, q @ np.asarray(part).T), axis=1)
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
    """The segments of one version: base, optional delta, and the base rows that are dead."""

    def __init__(self, directory: Path, meta: dict, base: Segment, delta: Segment | None, dead: np.ndarray):
        self.directory, self.meta = directory, meta
        self.version, self.nprobe = meta["version"], meta["nprobe"]
        self.base, self.delta, self.dead = base, delta, dead
        self.mean = np.asarray(meta["mean"], np.float32)
        self.std = np.asarray(meta["std"], np.float32)

    def __len__(self) -> int:
        return self.meta["records"]

    @property
    def segments(self) -> list[tuple[Segment, np.ndarray | None]]:
        out: list[tuple[Segment, np.ndarray | None]] = [(self.base, self.dead if len(self.dead) else None)]
        if self.delta is not None:
            out.append((self.delta, None))
        return out

    # -- persistence --------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path) -> SimilarityIndex:
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        base_dir = directory.parent / meta["base_dir"]
        base_meta = meta["segments"]["base"]
        centroids = np.fromfile(base_dir / "centroids.f4", np.float32).reshape(-1, base_meta["dim"])
        base = Segment(base_dir, "base", base_meta, centroids)
        delta = None
        if "delta" in meta["segments"]:
            delta = Segment(directory, "delta", meta["segments"]["delta"], base.centroids)
        dead_path = directory / "dead.i8"
        dead = np.fromfile(dead_path, np.int64) if dead_path.exists() else np.empty(0, np.int64)
        return cls(directory, meta, base, delta, dead)

    load = open

    @classmethod
    def build(cls, features: Features, version: str, directory: str | Path | None = None,
              nlist: int | None = None, nprobe: int = DEFAULT_NPROBE, buckets: int = 1,
              stats: tuple[np.ndarray, np.ndarray] | None = None) -> SimilarityIndex:
        """A full index of in-memory ``features`` (tests, benchmarks): spilled, then built like a publish does.

        ``stats`` (mean, std) replaces the snapshot's own statistics (a test's literal vectors).
        """
        from pipeline.bucketing import bucket_of

        target = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="similarity-")) / f"index-{version}"
        target.parent.mkdir(parents=True, exist_ok=True)
        order = sorted(range(len(features)), key=lambda i: (bucket_of(features.ids[i].decode(), buckets),
                                                            features.ids[i]))
        rows = np.empty(len(order), ROW)
        rows["id"], rows["vec"] = features.ids[order], features.raw[order]
        rows["tempo"], rows["key"], rows["mode"] = features.tempo[order], features.key[order], features.mode[order]
        spill = target.parent / f".{version}.spill"
        rows.tofile(spill)
        counts = np.bincount([bucket_of(i.decode(), buckets) for i in rows["id"]], minlength=buckets)
        offsets = [0, *np.cumsum(counts).tolist()]
        try:
            write_full(spill, len(rows), offsets, target, version, nlist=nlist, nprobe=nprobe, stats=stats)
        finally:
            spill.unlink(missing_ok=True)
        return cls.open(target)

    # -- queries ------------------------------------------------------------------------------------
    def locate(self, track_id: str) -> tuple[Segment, int] | None:
        """The segment and row of a track: its delta row if it changed since the base, else its live base row."""
        if self.delta is not None:
            row = self.delta.row_of(track_id)
            if row is not None:
                return self.delta, row
        row = self.base.row_of(track_id)
        if row is None or (len(self.dead) and _contains(self.dead, row)):
            return None
        return self.base, row

    def row_of(self, track_id: str) -> int | None:
        found = self.locate(track_id)
        return None if found is None else found[1]

    def similar(self, track_id: str, k: int = 10, filters: Filters = NO_FILTERS,
                nprobe: int | None = None) -> list[Neighbour]:
        """The ``k`` most similar tracks to ``track_id`` that pass ``filters``, best first, itself excluded."""
        found = self.locate(track_id)
        if found is None:
            raise UnknownTrackError(f"track {track_id} is not in similarity index {self.version}")
        seg, row = found
        query = np.asarray(seg.vectors[row], dtype=np.float32)
        if k < 1 or not query.any():  # a track without any feature has no meaningful neighbours
            return []
        if filters.same_key and (seg.key[row] < 0 or seg.mode[row] < 0):
            return []
        want = (int(seg.key[row]), int(seg.mode[row])) if filters.same_key else None
        best = self._approximate(query, seg, row, k, filters, want, nprobe or self.nprobe)
        if len(best) < k:
            best = self._exact(query, seg, row, k, filters, want)
        return [self._neighbour(s, r, score) for score, _, s, r in best]

    def _passes(self, s: Segment, rows: np.ndarray | slice, filters: Filters, want) -> np.ndarray:
        """Which of ``rows`` (an index array or a slice) pass the filters."""
        count = len(rows) if not isinstance(rows, slice) else rows.stop - rows.start
        keep = np.ones(count, bool)
        if filters.tempo_min is not None or filters.tempo_max is not None:
            tempo = s.tempo[rows]
            if filters.tempo_min is not None:
                keep &= tempo >= filters.tempo_min  # NaN (unknown tempo) compares False: filtered out
            if filters.tempo_max is not None:
                keep &= tempo <= filters.tempo_max
        if want is not None:
            keep &= (s.key[rows] == want[0]) & (s.mode[rows] == want[1])
        return keep

    def _collect(self, query, seg, row, k, filters, want, per_segment_rows) -> list[tuple]:
        """Score candidate rows per segment; returns up to ``k`` (score, tie, segment, row), best first."""
        scored = []
        for si, (s, dead) in enumerate(self.segments):
            rows = per_segment_rows(s)
            if rows is None or not len(rows):
                continue
            keep = self._passes(s, rows, filters, want)
            if dead is not None:
                keep &= ~_contains_many(dead, rows)
            if s is seg:
                keep &= rows != row
            rows = rows[keep]
            if not len(rows):
                continue
            found, scores = exact_search(s.vectors, query, k, rows=rows)
            scored += [(float(sc), (si, int(r)), s, int(r)) for r, sc in zip(found[0], scores[0], strict=True)]
        scored.sort(key=lambda t: (-t[0], t[1]))
        return scored[:k]

    def _approximate(self, query, seg, row, k, filters, want, nprobe) -> list[tuple]:
        """Score the probed lists in place: each list is a contiguous slice of the memory map (no gather copy)."""
        scored = []
        for si, (s, dead) in enumerate(self.segments):
            scores, rows = [], []
            for li in np.sort(s.probe(query, nprobe)):
                a, b = int(s.offsets[li]), int(s.offsets[li + 1])
                if a == b:
                    continue
                part = np.asarray(s.vectors[a:b]) @ query
                keep = self._passes(s, slice(a, b), filters, want)
                ids = np.arange(a, b)
                if dead is not None:
                    keep &= ~_contains_many(dead, ids)
                if s is seg and a <= row < b:
                    keep[row - a] = False
                scores.append(part[keep])
                rows.append(ids[keep])
            if not scores:
                continue
            sc, rw = np.concatenate(scores), np.concatenate(rows)
            if len(sc) > k:
                top = np.argpartition(-sc, k - 1)[:k]
                sc, rw = sc[top], rw[top]
            scored += [(float(v), (si, int(r)), s, int(r)) for v, r in zip(sc, rw, strict=True)]
        scored.sort(key=lambda t: (-t[0], t[1]))
        return scored[:k]

    def _exact(self, query, seg, row, k, filters, want) -> list[tuple]:
        return self._collect(query, seg, row, k, filters, want, lambda s: np.arange(s.listed))

    @staticmethod
    def _neighbour(s: Segment, row: int, score: float) -> Neighbour:
        tempo = float(s.tempo[row])
        return Neighbour(bytes(s.ids[row]).decode("ascii"), round(float(score), 6), None if np.isnan(tempo) else tempo,
                         None if s.key[row] < 0 else int(s.key[row]), None if s.mode[row] < 0 else int(s.mode[row]))


def _contains(sorted_values: np.ndarray, value: int) -> bool:
    pos = int(np.searchsorted(sorted_values, value))
    return pos < len(sorted_values) and sorted_values[pos] == value


def _contains_many(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[pos] == values


# ----------------------------------------------------------------------------- writing
def _staging(target: Path) -> Path:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _commit(tmp: Path, target: Path, meta: dict) -> Path:
    """``meta.json`` last, fsynced, then the folder renamed into place: a reader sees all of it or nothing."""
    with open(tmp / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    return target


def _segment_meta(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("mean", "std", "_centroids")} | {"dim": len(meta["mean"])}


def write_full(spill: str | Path, n: int, bucket_offsets: list[int], target: Path, version: str,
               nlist: int | None = None, nprobe: int = DEFAULT_NPROBE,
               stats: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Build the base segment of a full version from its spill file; the folder appears atomically."""
    tmp = _staging(target)
    mean, std = stats if stats is not None else (None, None)
    try:
        seg = build_segment(str(spill), n, bucket_offsets, tmp, "base", mean=mean, std=std, nlist=nlist)
        seg["_centroids"].tofile(tmp / "centroids.f4")
        meta = {"format": FORMAT, "version": version, "base": version, "base_dir": target.name, "records": n,
                "nprobe": nprobe, "mean": seg["mean"], "std": seg["std"], "drift": 0,
                "groups": [f"{g.name}:{g.dims}:{g.weight}" for g in FEATURE_GROUPS],
                "segments": {"base": _segment_meta(seg)}}
        return _commit(tmp, target, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_daily(spill: str | Path, n: int, bucket_offsets: list[int], dead: np.ndarray, parent: SimilarityIndex,
                target: Path, version: str, records: int, drift: int) -> Path:
    """A daily version: the parent's base as it is, a new delta segment (``spill``: every track changed since the
    base, in warehouse order) and the sorted dead base rows."""
    tmp = _staging(target)
    try:
        meta = {k: v for k, v in parent.meta.items() if k != "segments"}
        meta.update(version=version, records=records, drift=int(drift),
                    segments={"base": parent.meta["segments"]["base"]})
        if n:
            seg = build_segment(str(spill), n, bucket_offsets, tmp, "delta", mean=parent.mean, std=parent.std,
                                centroids=parent.base.centroids)
            meta["segments"]["delta"] = _segment_meta(seg)
            shutil.copyfile(spill, tmp / "delta.rows")
        np.asarray(dead, np.int64).tofile(tmp / "dead.i8")
        return _commit(tmp, target, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
