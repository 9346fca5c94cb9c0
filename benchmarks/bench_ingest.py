"""Ingest throughput against the limit (raw concurrent GETs of the same server) and a naive baseline.

Targets (issue 2): ingest ≥ 0.8× the raw GET rate and ≥ 10× the naive baseline (sequential
downloads, one output file per track). All three run in this process tree against the same
loopback moto server, one after the other.
"""

from __future__ import annotations

import argparse
import os
import resource
from concurrent.futures import ThreadPoolExecutor

import luigi
import urllib3

from benchmarks.common import BUCKET, DATE, PREFIX, save, timer, world
from pipeline import layout
from pipeline.demo.s3server import s3_client


def raw_get_rate(endpoint: str, keys: list[str], threads: int) -> dict:
    """The server's limit: bare urllib3 GETs on keep-alive connections, bodies read and dropped."""
    pool = urllib3.PoolManager(maxsize=threads, retries=False)

    def get(key: str) -> int:
        return len(pool.request("GET", f"{endpoint}/{BUCKET}/{PREFIX}/{key}", preload_content=True).data)

    with timer() as t:
        with ThreadPoolExecutor(threads) as ex:
            downloaded = sum(ex.map(get, keys))
    return {"threads": threads, "tracks_per_s": len(keys) / t["seconds"], "mb_per_s": downloaded / 1e6 / t["seconds"]}


def naive_rate(endpoint: str, keys: list[str], out_dir: str) -> dict:
    """What a first script would do: one boto3 GET after another, one JSON file written per track."""
    client = s3_client(endpoint)
    os.makedirs(out_dir, exist_ok=True)
    with timer() as t:
        for key in keys:
            body = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()
            with open(os.path.join(out_dir, key.replace("/", "_")), "wb") as f:
                f.write(body)
    return {"tracks_per_s": len(keys) / t["seconds"]}


def ingest_rate(w, concurrency: int, chunks: int, workers: int) -> dict:
    """The real thing: IngestFullSnapshot with ``workers`` luigi worker processes running chunks side by side."""
    from tasks import CatalogSnapshot, IngestFullSnapshot
    from tests.helpers import luigi_config

    with luigi_config(w.overrides(source={"concurrency": concurrency}, warehouse={"buckets": chunks},
                                  resources={"s3_ingest": workers})):
        w.wh.remove_date(layout.ANALYSIS_FULL, DATE)
        w.wh.remove_date(layout.LEDGER, DATE)
        luigi.build([CatalogSnapshot(date=DATE)], local_scheduler=True, log_level="WARNING")
        cpu = _children_cpu()
        with timer() as t:
            ok = luigi.build([IngestFullSnapshot(date=DATE)], local_scheduler=True, log_level="WARNING",
                             workers=workers)
        cpu = _children_cpu() - cpu if workers > 1 else None
    assert ok, "ingest failed"
    manifest = w.wh.manifest(layout.ANALYSIS_FULL, DATE)
    tracks = manifest.counts["ingested"]
    downloaded = sum(b.requests["bytes"] for b in manifest.entries())
    return {"concurrency": concurrency, "chunks": chunks, "workers": workers, "tracks": tracks,
            "tracks_per_s": tracks / t["seconds"],
            "client_cpu_ms_per_track": cpu / tracks * 1e3 if cpu is not None else None,
            "mb_per_s": downloaded / 1e6 / t["seconds"], "avro_mb": manifest.bytes / 1e6,
            "json_mb": downloaded / 1e6}


def _children_cpu() -> float:
    """CPU seconds of finished child processes (luigi runs each task of a multi-worker build in one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scenario(args, latency_ms: float) -> dict:
    with world(args.tracks, args.segments, gzip_ratio=0.0, latency_ms=latency_ms) as w:
        keys = sorted(w.sim.objects_available(0))
        raw_get_rate(w.endpoint, keys[:200], 16)  # warm-up
        raw = max((raw_get_rate(w.endpoint, keys, n) for n in (16, 32, 64)), key=lambda r: r["tracks_per_s"])
        ingest = ingest_rate(w, args.concurrency, chunks=args.chunks, workers=args.workers)
        naive = naive_rate(w.endpoint, keys[:args.naive_tracks], str(w.scratch / "naive"))
        object_kb = w.seeded["bytes"] / len(keys) / 1e3
    return {"latency_ms": latency_ms, "object_kb": object_kb, "raw": raw, "ingest": ingest, "naive": naive,
            "ingest_vs_raw": ingest["tracks_per_s"] / raw["tracks_per_s"],
            "ingest_vs_naive": ingest["tracks_per_s"] / naive["tracks_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracks", type=int, default=2000)
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--naive-tracks", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latencies", default="0,20", help="first-byte latencies of the server, ms")
    args = parser.parse_args()
    result = {"tracks": args.tracks, "segments": args.segments, "cores": os.cpu_count(),
              "scenarios": [scenario(args, float(ms)) for ms in args.latencies.split(",")]}
    save("ingest", result)


if __name__ == "__main__":
    main()
