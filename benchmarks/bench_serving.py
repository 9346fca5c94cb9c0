"""Serving: publish rate per store, HTTP lookup latency/throughput, similarity speed and recall at scale.

Targets (issue 7): approximate similar-track search with recall@10 >= 0.9 at >= 10x the exact
speed at 1M tracks. Everything runs on loopback in this process tree; request counts and
durations are bounded. Feature vectors at scale come straight from numpy
(``pipeline.demo.synthetic_features.clustered_features``: clustered like real catalogues, not
uniform noise). The random-hyperplane LSH here is the baseline that ``pipeline.serving.ann``
(faiss IVF) was chosen over; it lives in this file only.

Run: ``.venv/bin/python -m benchmarks.bench_serving`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import DATE, save
from pipeline.demo.synthetic import make_track_ids
from pipeline.demo.synthetic_features import attribute_records, clustered_features, write_snapshot
from pipeline.layout import Layout
from pipeline.serving.api import running_service
from pipeline.serving.publish import publish_snapshot
from pipeline.serving.redis_server import running_redis_server
from pipeline.serving.similarity import SimilarityIndex, exact_search
from pipeline.serving.stores import open_store
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"requests": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


# ----------------------------------------------------------------------- publish
def snapshot(wh: Warehouse, n: int) -> None:
    """``n`` records: 2,000 computed ones, repeated under fresh ids (the maths is not what is measured)."""
    base = list(attribute_records(2000, seed=7))
    ids = make_track_ids(np.random.default_rng(8), n)
    write_snapshot(wh, DATE, ({**base[i % len(base)], "track_id": tid} for i, tid in enumerate(ids)), buckets=8)


def publish_rate(wh: Warehouse, kind: str, settings: dict, index_dir: Path, concurrency: int) -> dict:
    with open_store(kind, settings) as store:
        started = time.perf_counter()
        result = publish_snapshot(wh, DATE, store, index_dir, batch_size=1000, concurrency=concurrency)
        seconds = time.perf_counter() - started
    return {"store": kind, "concurrency": concurrency, "records": result.records, "seconds": round(seconds, 2),
            "records_per_s": round(result.records / seconds), "steps_s": {k: round(v, 2) for k, v in
                                                                          result.seconds.items()}}


# ----------------------------------------------------------------------- HTTP
def sequential(client: httpx.Client, paths: list[str], max_seconds: float) -> list[float]:
    """Per-request latency of one keep-alive client, until the paths or the time run out."""
    out: list[float] = []
    deadline = time.monotonic() + max_seconds
    for path in paths:
        started = time.perf_counter()
        response = client.get(path)
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        if time.monotonic() > deadline:
            break
    return out


def throughput(base: str, paths: list[str], clients: int, max_seconds: float) -> dict:
    """Requests per second with ``clients`` concurrent keep-alive clients (bounded count and time)."""
    chunks = [paths[i::clients] for i in range(clients)]

    def run(chunk: list[str]) -> int:
        with httpx.Client(base_url=base, timeout=30) as client:
            return len(sequential(client, chunk, max_seconds))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(run, chunks))
    return {"clients": clients, "requests": done, "requests_per_s": round(done / (time.perf_counter() - started))}


def http_bench(kind: str, settings: dict, index_dir: Path, ids: list[str], scratch: Path, requests: int,
               max_seconds: float) -> dict:
    rng = np.random.default_rng(3)
    picks = [ids[i] for i in rng.integers(0, len(ids), requests)]
    batches = [",".join(ids[j] for j in rng.integers(0, len(ids), 100)) for _ in range(requests // 10)]
    with running_service({"store": kind, **settings}, index_dir, scratch / f"api-{kind}.log") as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            sequential(client, [f"/tracks/{t}" for t in picks[:200]], max_seconds)  # warm up (index load too)
            client.get(f"/tracks/{picks[0]}/similar")
            return {"store": kind,
                    "get_one": percentiles(sequential(client, [f"/tracks/{t}" for t in picks], max_seconds)),
                    "get_batch_100": percentiles(sequential(client, [f"/tracks?ids={b}" for b in batches],
                                                            max_seconds)),
                    "similar_k10": percentiles(sequential(client, [f"/tracks/{t}/similar" for t in picks[:500]],
                                                          max_seconds)),
                    "get_one_throughput": throughput(base, [f"/tracks/{t}" for t in picks], 8, max_seconds)}


# ----------------------------------------------------------------------- similarity at scale
class HyperplaneLsh:
    """Baseline: random-hyperplane LSH, ``tables`` x ``bits``, multi-probe over the least certain bits."""

    def __init__(self, vectors: np.ndarray, bits: int = 18, tables: int = 20, probes: int = 10, seed: int = 1):
        self.vectors, self.bits, self.tables, self.probes = vectors, bits, tables, probes
        self.planes = np.random.default_rng(seed).standard_normal((vectors.shape[1], tables * bits)).astype(np.float32)
        self.weights = (1 << np.arange(bits)).astype(np.uint32)
        self.offsets = (np.arange(tables, dtype=np.uint32) << np.uint32(bits))
        codes = np.empty((len(vectors), tables), dtype=np.uint32)
        for start in range(0, len(vectors), 100_000):
            codes[start:start + 100_000] = self._codes(vectors[start:start + 100_000])[0]
        order = np.argsort(codes.ravel(), kind="stable")
        self.keys, self.rows = codes.ravel()[order], (order // tables).astype(np.int32)

    def _codes(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proj = (x @ self.planes).reshape(len(x), self.tables, self.bits)
        return ((proj > 0).astype(np.uint32) * self.weights).sum(-1, dtype=np.uint32) | self.offsets, proj

    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        codes, proj = self._codes(query[None])
        flips = np.argsort(np.abs(proj[0]), axis=1)[:, :self.probes]
        probe = np.concatenate((codes[0][:, None], codes[0][:, None] ^ self.weights[flips]), axis=1).ravel()
        lo, hi = np.searchsorted(self.keys, probe, "left"), np.searchsorted(self.keys, probe, "right")
        lengths = hi - lo
        starts = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        cand = np.unique(self.rows[starts + np.arange(lengths.sum())])
        scores = self.vectors[cand] @ query
        top = np.argsort(-scores)[:k]
        return cand[top]


def similarity_bench(n: int, queries: int) -> dict:
    started = time.perf_counter()
    features = clustered_features(n, seed=11)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    index = SimilarityIndex.build(features, "bench", approximate=True)
    built = time.perf_counter() - started
    rows = np.random.default_rng(5).choice(n, queries, replace=False)
    exact_t, truth = [], []
    for row in rows:
        t0 = time.perf_counter()
        found, _ = exact_search(index.vectors, index.vectors[row], 11)
        exact_t.append(time.perf_counter() - t0)
        truth.append([r for r in found[0].tolist() if r != row][:10])
    approx_t, approx_recall = [], []
    for row, expected in zip(rows, truth, strict=True):
        t0 = time.perf_counter()
        found = [index.row_of(nb.track_id) for nb in index.similar(index.ids[row].decode(), 10)]
        approx_t.append(time.perf_counter() - t0)
        approx_recall.append(len(set(found) & set(expected)) / 10)
    started = time.perf_counter()
    lsh = HyperplaneLsh(index.vectors)
    lsh_built = time.perf_counter() - started
    lsh_t, lsh_recall = [], []
    for row, expected in zip(rows, truth, strict=True):
        t0 = time.perf_counter()
        found = [r for r in lsh.search(index.vectors[row], 11).tolist() if r != row][:10]
        lsh_t.append(time.perf_counter() - t0)
        lsh_recall.append(len(set(found) & set(expected)) / 10)
    exact_ms = 1e3 * float(np.median(exact_t))  # medians: the machine is shared and a stray spike is not the code
    return {"tracks": n, "dims": int(index.vectors.shape[1]), "queries": queries,
            "generate_s": round(generated, 1), "exact_ms": round(exact_ms, 3),
            "ivf": {"build_s": round(built, 1), "nlist": index.ann.nlist, "nprobe": index.ann.nprobe,
                    "query_ms": round(1e3 * float(np.median(approx_t)), 3),
                    "p99_ms": round(1e3 * float(np.percentile(approx_t, 99)), 3),
                    "recall_at_10": round(float(np.mean(approx_recall)), 4),
                    "speedup": round(exact_ms / (1e3 * float(np.median(approx_t))), 1)},
            "lsh_baseline": {"build_s": round(lsh_built, 1), "tables": lsh.tables, "bits": lsh.bits,
                             "probes": lsh.probes, "table_mb": round((lsh.keys.nbytes + lsh.rows.nbytes) / 1e6),
                             "query_ms": round(1e3 * float(np.median(lsh_t)), 3),
                             "recall_at_10": round(float(np.mean(lsh_recall)), 4),
                             "speedup": round(exact_ms / (1e3 * float(np.median(lsh_t))), 1)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000, help="snapshot size for publish and HTTP")
    parser.add_argument("--requests", type=int, default=3000, help="requests per HTTP measurement (bounded)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time bound per HTTP measurement")
    parser.add_argument("--scales", default="100000,1000000", help="similarity catalogue sizes")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.records, args.requests, args.scales, args.queries = 5000, 300, "20000", 50
    result: dict = {"cores": os.cpu_count(), "records": args.records}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp, running_redis_server(Path(tmp) / "redis") as url:
        scratch = Path(tmp)
        wh = Warehouse(Layout(f"file://{scratch}/warehouse"), LocalStorage())
        snapshot(wh, args.records)
        stores = {"sqlite": ({"sqlite_path": str(scratch / "serving.sqlite")}, 1),
                  "redis": ({"redis_url": url, "redis_prefix": "attrs"}, 4)}
        result["publish"] = [publish_rate(wh, kind, settings, scratch / f"index-{kind}", concurrency)
                             for kind, (settings, concurrency) in stores.items()]
        ids = [i.decode() for i in SimilarityIndex.load(next((scratch / "index-sqlite").glob("*.npz"))).ids]
        result["http"] = [http_bench(kind, settings, scratch / f"index-{kind}", ids, scratch, args.requests,
                                     args.max_seconds) for kind, (settings, _) in stores.items()]
    result["similarity"] = [similarity_bench(int(n), args.queries) for n in args.scales.split(",")]
    save("serving", result)


if __name__ == "__main__":
    main()
