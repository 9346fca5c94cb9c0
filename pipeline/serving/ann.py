"""Approximate nearest neighbours for catalogue scale: an inverted-file index (faiss ``IndexIVFFlat``).

Why IVF from faiss rather than random-hyperplane LSH: on 1M clustered 42-d vectors
(benchmarks/bench_serving.py, numbers in docs/serving.md) LSH with 20 tables of 18 bits and
10 probes (160 MB of tables) reached recall@10 0.78 at ~18x the exact speed, IVF reached 0.97
at ~110x with no memory beyond a copy of the vectors. hnswlib matched the recall in a prototype
but has no wheel here (it compiles on install) and took 3 minutes to build 1M on 2 cores;
faiss-cpu ships manylinux wheels.

How it works: k-means splits the (unit) vectors into ``nlist`` cells; a query scores the cell
centroids, then scans only the ``nprobe`` best cells exactly (inner product = cosine here).
The index is serialised to bytes and kept inside the similarity index file.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.serving.errors import ConfigError

MIN_POINTS_PER_CELL = 39  # faiss warns below this many training points per centroid
DEFAULT_NPROBE = 32


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - the [serving] extra installs it
        raise ConfigError("the approximate similarity index needs faiss-cpu: pip install -e '.[serving]'") from exc
    return faiss


def default_nlist(n: int) -> int:
    """About 4 * sqrt(n) cells (faiss's rule of thumb), with enough points per cell to train."""
    return max(1, min(int(4 * math.sqrt(n)), n // MIN_POINTS_PER_CELL))


class IvfIndex:
    """A trained IVF-flat index over unit vectors, searched by inner product."""

    def __init__(self, index, nprobe: int = DEFAULT_NPROBE):
        self.index = index
        self.nprobe = nprobe

    @classmethod
    def build(cls, vectors: np.ndarray, nlist: int | None = None, nprobe: int = DEFAULT_NPROBE,
              seed: int = 1234, max_training_points: int = 64) -> IvfIndex:
        """Train on a seeded sample (``max_training_points`` per cell) and add every row (row number = id)."""
        faiss = _faiss()
        n, dim = vectors.shape
        nlist = nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        sample_size = min(n, nlist * max_training_points)
        sample = vectors if sample_size == n else vectors[np.random.default_rng(seed).choice(n, sample_size,
                                                                                             replace=False)]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, nprobe)

    @property
    def nlist(self) -> int:
        return self.index.nlist

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the ``k`` best rows per query; rows are -1 where fewer were found."""
        faiss = _faiss()
        params = faiss.SearchParametersIVF(nprobe=min(nprobe or self.nprobe, self.nlist))
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        scores, rows = self.index.search(q, k, params=params)
        return rows, scores

    def to_bytes(self) -> np.ndarray:
        return _faiss().serialize_index(self.index)

    @classmethod
    def from_bytes(cls, data: np.ndarray, nprobe: int = DEFAULT_NPROBE) -> IvfIndex:
        return cls(_faiss().deserialize_index(np.asarray(data, dtype=np.uint8)), nprobe)
