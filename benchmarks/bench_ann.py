"""Which nearest-neighbour index serves similar tracks: the libraries compared on the same 1M vectors.

For each candidate (our on-disk IVF segments, faiss ``IndexIVFFlat`` as served before, usearch
HNSW, Spotify's voyager HNSW and annoy): build time, recall@10 against exact search on held-aside
queries, single-query latency p50/p99, bytes per track on disk, the memory of a fresh "API"
process that opens the saved index the way that library serves it (memory-mapped where it can)
and answers the queries, and the cost of a daily update of 1% of the vectors (remove + add where
the library can, a rebuild where it cannot). Each library runs in its own process, so the peak
RSS and private memory are its own. Vectors: ``clustered_features`` standardised like a snapshot.

Run: ``.venv/bin/python -m benchmarks.bench_ann --tracks 1000000`` (needs ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks.common import save
from pipeline.demo.synthetic_features import clustered_features
from pipeline.serving.features import DIM, Features, standardise
from pipeline.serving.similarity import SimilarityIndex, exact_search

LIBRARIES = ("segments", "faiss_ivf", "usearch", "voyager", "annoy")


def data(n: int, work: Path) -> tuple[np.memmap, np.ndarray]:
    """(vectors, held-aside query rows), cached as files so that every library process reads the same ones."""
    path = work / f"vectors-{n}.f4"
    if not path.exists():
        f = clustered_features(n, seed=11)
        vectors, _, _ = standardise(f.raw)
        vectors.tofile(path)
        np.save(work / f"features-{n}.npy", np.stack([f.tempo, f.key.astype(np.float32), f.mode.astype(np.float32)]))
        np.save(work / f"ids-{n}.npy", f.ids)
    vectors = np.memmap(path, np.float32, "r", shape=(n, DIM))
    queries = np.random.default_rng(5).choice(n, 200, replace=False)
    truth_path = work / f"truth-{n}.npy"
    if not truth_path.exists():
        rows, _ = exact_search(vectors, np.asarray(vectors[queries]), 11)
        np.save(truth_path, rows)
    return vectors, queries


def recall(found: list[list[int]], truth: np.ndarray, queries: np.ndarray) -> float:
    hits = 0.0
    for got, want, q in zip(found, truth, queries, strict=True):
        want = [r for r in want.tolist() if r != q][:10]
        got = [r for r in got if r != q][:10]
        hits += len(set(got) & set(want)) / 10
    return hits / len(queries)


# ----------------------------------------------------------------------- per library: build, update, serve
def build(lib: str, vectors: np.memmap, work: Path, n: int) -> tuple[Path, dict]:
    out = work / f"{lib}-{n}"
    started = time.perf_counter()
    if lib == "segments":
        f = np.load(work / f"features-{n}.npy")
        raw = np.asarray(vectors)  # already unit vectors: identity statistics below
        from pipeline.serving.features import SCALE

        SimilarityIndex.build(Features(np.load(work / f"ids-{n}.npy"), raw.copy(), f[0], f[1].astype(np.int8),
                                       f[2].astype(np.int8)), "2026-11-26", out, buckets=16,
                              stats=(np.zeros(DIM, np.float32), SCALE.copy()))
    elif lib == "faiss_ivf":
        import faiss

        quantizer = faiss.IndexFlatIP(DIM)  # kept referenced: the IVF index does not own it
        index = faiss.IndexIVFFlat(quantizer, DIM, min(1024, n // 39), faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(vectors[:: max(1, n // 65536)]))
        for s in range(0, n, 100_000):
            index.add(np.ascontiguousarray(vectors[s:s + 100_000]))
        faiss.write_index(index, str(out))
    elif lib == "usearch":
        from usearch.index import Index

        index = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=16, expansion_add=128, expansion_search=64)
        for s in range(0, n, 100_000):
            index.add(np.arange(s, min(n, s + 100_000)), np.ascontiguousarray(vectors[s:s + 100_000]))
        index.save(str(out))
    elif lib == "voyager":
        from voyager import Index, Space

        index = Index(Space.InnerProduct, num_dimensions=DIM, M=12, ef_construction=100)
        for s in range(0, n, 100_000):
            index.add_items(np.array(vectors[s:s + 100_000]), list(range(s, min(n, s + 100_000))))
        index.save(str(out))
    elif lib == "annoy":
        from annoy import AnnoyIndex

        index = AnnoyIndex(DIM, "dot")
        for i in range(n):
            index.add_item(i, vectors[i])
        index.build(20, n_jobs=2)
        index.save(str(out))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*")) if out.is_dir() else out.stat().st_size
    return out, {"build_s": round(seconds, 1), "bytes_per_track": round(size / n, 1)}


def update(lib: str, path: Path, vectors: np.memmap, n: int, work: Path) -> float:
    """Seconds to apply a daily change of 1%: remove 1% of the vectors and add 1% new ones."""
    rng = np.random.default_rng(8)
    gone = np.sort(rng.choice(n, n // 100, replace=False))
    fresh = np.asarray(vectors[rng.choice(n, n // 100, replace=False)]) + rng.normal(0, 0.01, (n // 100, DIM))
    fresh = (fresh / np.linalg.norm(fresh, axis=1, keepdims=True)).astype(np.float32)
    new_keys = np.arange(n, n + n // 100)
    started = time.perf_counter()
    if lib == "segments":
        from pipeline.serving.features import ROW
        from pipeline.serving.similarity import write_daily

        parent = SimilarityIndex.open(path)
        rows = np.zeros(len(fresh), ROW)
        rows["vec"] = fresh  # identity statistics (see build)
        rows["id"] = [f"{i:022d}".encode() for i in new_keys]
        spill = work / "delta.spill"
        rows.tofile(spill)
        write_daily(spill, len(rows), [0] + [len(rows)] * 16, gone, parent, work / "segments-daily", "2026-11-27",
                    n, len(gone) + len(rows))
    elif lib == "faiss_ivf":
        import faiss

        index = faiss.read_index(str(path))
        index.remove_ids(gone.astype(np.int64))
        index.add_with_ids(fresh, new_keys.astype(np.int64))
        faiss.write_index(index, str(path) + ".daily")
    elif lib == "usearch":
        from usearch.index import Index

        index = Index.restore(str(path))
        index.remove(gone)
        index.add(new_keys, fresh)
        index.save(str(path) + ".daily")
    elif lib == "voyager":
        from voyager import Index

        index = Index.load(str(path))
        for key in gone.tolist():
            index.mark_deleted(key)
        index.add_items(fresh, new_keys.tolist())
        index.save(str(path) + ".daily")
    elif lib == "annoy":  # static: a daily change is a rebuild
        from annoy import AnnoyIndex

        index = AnnoyIndex(DIM, "dot")
        alive = np.ones(n, bool)
        alive[gone] = False
        for i in np.flatnonzero(alive):
            index.add_item(int(i), vectors[i])
        for key, vec in zip(new_keys, fresh, strict=True):
            index.add_item(int(key), vec)
        index.build(20, n_jobs=2)
        index.save(str(path) + ".daily")
    return round(time.perf_counter() - started, 1)


def serve(lib: str, path: Path, vectors: np.memmap, queries: np.ndarray, n: int, work: Path) -> dict:
    """Open the index as an API process would, answer the queries; latency, recall and this process's memory."""
    ids = np.load(work / f"ids-{n}.npy", mmap_mode="r")
    if lib == "segments":
        index = SimilarityIndex.open(path)

        def search(q_row: int) -> list[int]:
            found = index.similar(bytes(ids[q_row]).decode(), 10)
            return [int(np.searchsorted(ids, n_.track_id.encode())) for n_ in found]
    elif lib == "faiss_ivf":
        import faiss

        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        params = faiss.SearchParametersIVF(nprobe=32)

        def search(q_row: int) -> list[int]:
            return index.search(np.asarray(vectors[q_row:q_row + 1]), 11, params=params)[1][0].tolist()
    elif lib == "usearch":
        from usearch.index import Index

        index = Index.restore(str(path), view=True)

        def search(q_row: int) -> list[int]:
            return index.search(np.asarray(vectors[q_row]), 11).keys.tolist()
    elif lib == "voyager":
        from voyager import Index

        index = Index.load(str(path))
        index.ef = 64

        def search(q_row: int) -> list[int]:
            return index.query(np.asarray(vectors[q_row]), k=11)[0].tolist()
    else:
        from annoy import AnnoyIndex

        index = AnnoyIndex(DIM, "dot")
        index.load(str(path))  # memory-mapped

        def search(q_row: int) -> list[int]:
            return index.get_nns_by_vector(vectors[q_row], 11, search_k=20 * 11 * 100)
    times, found = [], []
    for q in queries:
        started = time.perf_counter()
        found.append(search(int(q)))
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1e3
    info = psutil.Process().memory_full_info()
    return {"recall_at_10": round(recall(found, np.load(work / f"truth-{n}.npy"), queries), 4),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "api_rss_mb": round(info.rss / 2**20, 1), "api_uss_mb": round(info.uss / 2**20, 1)}


def one(lib: str, n: int, work: Path) -> dict:
    vectors, queries = data(n, work)
    path, out = build(lib, vectors, work, n)
    out["build_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["daily_1pct_update_s"] = update(lib, path, vectors, n, work)
    served = subprocess.run([sys.executable, "-m", "benchmarks.bench_ann", "--serve", lib, "--tracks", str(n),
                             "--work", str(work), "--path", str(path)], check=True, capture_output=True, text=True)
    out.update(json.loads(served.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        vectors, queries = data(args.tracks, args.work)
        print(json.dumps(serve(args.serve, args.path, vectors, queries, args.tracks, args.work)))
        return
    if args.one:
        print(json.dumps(one(args.one, args.tracks, args.work)))
        return
    result: dict = {"cores": os.cpu_count(), "tracks": args.tracks, "libraries": {}}
    with tempfile.TemporaryDirectory(prefix="bench-ann-", dir=args.work) as tmp:
        work = Path(tmp)
        data(args.tracks, work)
        for lib in args.libraries.split(","):
            try:
                done = subprocess.run([sys.executable, "-m", "benchmarks.bench_ann", "--one", lib, "--tracks",
                                       str(args.tracks), "--work", str(work)], check=True, capture_output=True,
                                      text=True)
                result["libraries"][lib] = json.loads(done.stdout.strip().splitlines()[-1])
            except subprocess.CalledProcessError as exc:
                result["libraries"][lib] = {"error": exc.stderr[-500:]}
            print(lib, json.dumps(result["libraries"][lib]), flush=True)
    save("serving-ann", result)


if __name__ == "__main__":
    main()
