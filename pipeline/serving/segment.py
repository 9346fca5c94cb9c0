"""One segment of a similarity index on disk: rows grouped by IVF list, memory-mapped by every reader.

Why our own inverted file rather than a library's in-memory index: the publish must build it in
flat memory (the rows stream from a spill file through bounded blocks, never a catalogue-sized
array), and every API process on a host must share one copy (``np.memmap`` of immutable files:
the page cache holds it once). The maths is plain IVF: spherical k-means centroids trained on a
bounded sample, every row assigned to its nearest centroid in batches, a query scores the
centroids and scans the ``nprobe`` best lists exactly. Build cost is linear in the rows for a
given ``nlist``, and ``nlist`` stays fixed (``default_nlist``) up to 1M rows.

Files of a segment (``<dir>/<name>.*``; shapes in the index's ``meta.json``):

=====================  ====================================================================
``vectors.f4``         (n, DIM) unit vectors, list by list; featureless rows last, in no list
``ids.S22``            track id of each row
``tempo.f4``           ``key.i1`` ``mode.i1``: filter columns per row
``offsets.i8``         (nlist + 1) first row of each list; ``offsets[-1]`` = rows in lists
``lookup_ids.S22``     the ids bucket by bucket, sorted within a bucket (the warehouse order)
``lookup_rows.i4``     the row of each of those ids
=====================  ====================================================================
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from pipeline.bucketing import bucket_of
from pipeline.serving.errors import ConfigError
from pipeline.serving.features import DIM, ROW, apply_standardise, column_stats, read_blocks

TRAIN_PER_LIST = 64
MAX_LIST_BASE = 1024  # lists up to 1M rows; beyond, sqrt growth (documented cost in docs/capacity.md)
GROUP_ROWS = 65_536  # rows per layout group held in memory at once (~13 MB)
PLACED = np.dtype([("list", "<i4"), ("orig", "<i4"), ("row", ROW)])
COLUMNS = {"vectors": ("<f4", (DIM,)), "ids": ("S22", ()), "tempo": ("<f4", ()), "key": ("i1", ()),
           "mode": ("i1", ()), "lookup_ids": ("S22", ()), "lookup_rows": ("<i4", ())}


def default_nlist(n: int) -> int:
    """1024 lists up to 1M rows (so build time grows linearly there), then ~sqrt(n); few for small n."""
    if n < 10_000:
        return 1  # one list is exact search: below 10k rows that costs under a millisecond
    return max(1, min(n // 39, int(MAX_LIST_BASE * math.sqrt(max(1.0, n / 1e6)))))


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - the [serving] extra installs it
        raise ConfigError("the similarity index needs faiss-cpu (k-means): pip install -e '.[serving]'") from exc
    return faiss


def train_centroids(spill: str, n: int, mean: np.ndarray, std: np.ndarray, nlist: int, seed: int = 1234) -> np.ndarray:
    """Spherical k-means on an evenly spaced sample of at most ``nlist * TRAIN_PER_LIST`` featured rows."""
    if nlist == 1:
        return np.zeros((1, DIM), np.float32)
    step = max(1, n // (nlist * TRAIN_PER_LIST))
    sample, start = [], 0
    for block in read_blocks(spill, n, ROW):
        first = (-start) % step
        vecs = apply_standardise(block["vec"][first::step].copy(), mean, std)
        sample.append(vecs[vecs.any(axis=1)])
        start += len(block)
    points = np.ascontiguousarray(np.concatenate(sample), dtype=np.float32)
    kmeans = _faiss().Kmeans(DIM, nlist, niter=20, seed=seed, spherical=True, max_points_per_centroid=TRAIN_PER_LIST)
    kmeans.train(points)
    return kmeans.centroids.astype(np.float32)


def _assign(vecs: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid of each row (inner product), batched; featureless rows get ``len(centroids)``."""
    lists = np.full(len(vecs), len(centroids), np.int32)
    featured = vecs.any(axis=1)
    if len(centroids) == 1:
        lists[featured] = 0
    elif featured.any():
        index = _faiss().IndexFlatIP(DIM)
        index.add(centroids)
        _, nearest = index.search(np.ascontiguousarray(vecs[featured]), 1)
        lists[featured] = nearest[:, 0]
    return lists


def build_segment(spill: str, n: int, bucket_offsets: list[int], out: Path, name: str,
                  mean: np.ndarray | None = None, std: np.ndarray | None = None,
                  centroids: np.ndarray | None = None, nlist: int | None = None) -> dict:
    """Lay the spilled rows out as a segment in ``out``; returns its meta (with mean, std, centroids to reuse).

    A base segment computes the statistics and trains the centroids; a delta segment (a daily's
    changed tracks) reuses the base's, so that its vectors live in the same space and lists.
    Three sequential passes over the spill file plus one per layout group: flat memory.
    """
    if mean is None or std is None:
        mean, std = column_stats(b["vec"] for b in read_blocks(spill, n, ROW))
    if centroids is None:
        centroids = train_centroids(spill, n, mean, std, nlist or default_nlist(n))
    nlist = len(centroids)
    groups = max(1, math.ceil(n / GROUP_ROWS))
    bounds = np.linspace(0, nlist + 1, groups + 1).astype(np.int64)  # list nlist = featureless rows
    tmp = [out / f".{name}.group{g}" for g in range(groups)]
    files = [open(p, "wb") for p in tmp]  # noqa: SIM115 - closed below
    try:
        start = 0
        for block in read_blocks(spill, n, ROW):
            placed = np.empty(len(block), PLACED)
            placed["row"] = block
            apply_standardise(placed["row"]["vec"], mean, std)
            placed["list"] = _assign(placed["row"]["vec"], centroids)
            placed["orig"] = np.arange(start, start + len(block))
            start += len(block)
            group = np.searchsorted(bounds, placed["list"], side="right") - 1
            for g in np.unique(group):
                files[g].write(placed[group == g].tobytes())
    finally:
        for f in files:
            f.close()
    counts = _layout(tmp, n, out, name, nlist)
    _write_lookup(spill, n, out, name)
    offsets = np.zeros(nlist + 1, np.int64)
    np.cumsum(counts[:nlist], out=offsets[1:])
    offsets.tofile(out / f"{name}.offsets.i8")
    return {"rows": n, "nlist": nlist, "buckets": len(bucket_offsets) - 1, "bucket_offsets": list(bucket_offsets),
            "mean": mean.tolist(), "std": std.tolist(), "_centroids": centroids}


def _layout(groups: list[Path], n: int, out: Path, name: str, nlist: int) -> np.ndarray:
    """Concatenate the groups, each sorted by list, into the column files; fill ``lookup_rows``."""
    counts = np.zeros(nlist + 1, np.int64)
    cols = {c: open(out / f"{name}.{c}.{_suffix(c)}", "wb") for c in ("vectors", "ids", "tempo", "key", "mode")}  # noqa: SIM115
    rows_of = np.lib.format.open_memmap(out / f".{name}.rows.npy", "w+", np.int32, (n,)) if n else None
    written = 0
    try:
        for path in groups:
            placed = np.fromfile(path, PLACED)
            path.unlink()
            placed = placed[np.lexsort((placed["orig"], placed["list"]))]
            counts += np.bincount(placed["list"], minlength=nlist + 1)
            row = placed["row"]
            for c, field in (("vectors", "vec"), ("ids", "id"), ("tempo", "tempo"), ("key", "key"), ("mode", "mode")):
                cols[c].write(np.ascontiguousarray(row[field]).tobytes())
            if rows_of is not None:
                rows_of[placed["orig"]] = np.arange(written, written + len(placed), dtype=np.int32)
            written += len(placed)
    finally:
        for f in cols.values():
            f.close()
    if rows_of is not None:
        rows_of.flush()
        np.asarray(rows_of).tofile(out / f"{name}.lookup_rows.i4")
        del rows_of
    (out / f".{name}.rows.npy").unlink(missing_ok=True)
    return counts


def _write_lookup(spill: str, n: int, out: Path, name: str) -> None:
    with open(out / f"{name}.lookup_ids.S22", "wb") as f:
        for block in read_blocks(spill, n, ROW):
            f.write(np.ascontiguousarray(block["id"]).tobytes())
    if n == 0:
        (out / f"{name}.lookup_rows.i4").touch()


def _suffix(column: str) -> str:
    dtype = COLUMNS[column][0]
    return dtype.lstrip("<")


class Segment:
    """A segment opened read-only: columns memory-mapped, centroids and offsets in memory (small)."""

    def __init__(self, directory: Path, name: str, meta: dict, centroids: np.ndarray):
        self.directory, self.name = directory, name
        self.n, self.nlist, self.buckets = meta["rows"], meta["nlist"], meta["buckets"]
        self.bucket_offsets = np.asarray(meta["bucket_offsets"], np.int64)
        self.centroids = centroids
        self.offsets = np.fromfile(directory / f"{name}.offsets.i8", np.int64)
        for column, (dtype, shape) in COLUMNS.items():
            path = self.column_path(column)
            value = (np.memmap(path, dtype, "r", shape=(self.n, *shape)) if self.n
                     else np.empty((0, *shape), dtype))
            setattr(self, column, value)
        self.listed = int(self.offsets[-1])  # rows [0, listed) are in lists; the rest have no features

    def column_path(self, column: str) -> Path:
        """The file of one column (for readers that stream it rather than map it)."""
        return self.directory / f"{self.name}.{column}.{_suffix(column)}"

    def row_of(self, track_id: str) -> int | None:
        """Bucket of the id, then binary search among that bucket's sorted ids."""
        if self.n == 0:
            return None
        key = track_id.encode("ascii", "replace")
        b = bucket_of(track_id, self.buckets)
        lo, hi = int(self.bucket_offsets[b]), int(self.bucket_offsets[b + 1])
        pos = lo + int(np.searchsorted(self.lookup_ids[lo:hi], key))
        return int(self.lookup_rows[pos]) if pos < hi and self.lookup_ids[pos] == key else None

    def probe(self, query: np.ndarray, nprobe: int) -> np.ndarray:
        """The lists to scan for ``query``: the ``nprobe`` best-scoring centroids."""
        if self.nlist <= nprobe:
            return np.arange(self.nlist)
        scores = self.centroids @ query
        return np.argpartition(-scores, nprobe - 1)[:nprobe]


def remove_files(directory: Path, name: str) -> None:
    for path in directory.glob(f"{name}.*"):
        path.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
