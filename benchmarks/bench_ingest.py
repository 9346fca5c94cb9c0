"""Ingest throughput against the limit (raw concurrent GETs of the same server), a naive baseline, and CPU.

Targets (issues 2 and 17): the ingest ≥ 10× the naive baseline (sequential downloads, one output
file per track) at S3-like latency, and its client CPU per track with obstore ≤ 60% of the boto3
path on the same documents. One SeaweedFS server for the whole run, seeded once; the 20 ms case
puts ``pipeline.demo.latency_relay`` in front of it. Everything is measured one after the other
in this process tree: the raw GET rate of a bare client, the ingest with each client, the naive
baseline, at each latency; then per-track client CPU by phase (request, parse, validate/pack,
Avro) for each client, sequentially in this process so every CPU second is attributable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import luigi
import urllib3

from benchmarks.common import BUCKET, DATE, PREFIX, save, timer, world
from pipeline import layout
from pipeline.demo.latency_relay import running_relay
from pipeline.demo.s3server import s3_client, server_kind

CLIENTS = ("boto3", "obstore")
PHASES = ("request", "parse", "validate_pack", "avro")


def raw_get_rate(endpoint: str, keys: list[str], threads: int) -> dict:
    """The server's limit: bare urllib3 GETs on keep-alive connections, bodies read and dropped (unsigned)."""
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


def ingest_rate(w, endpoint: str, client: str, concurrency: int, chunks: int, workers: int) -> dict:
    """The real thing: IngestFullSnapshot with ``workers`` luigi worker processes running chunks side by side."""
    from tasks import CatalogSnapshot, IngestFullSnapshot
    from tests.helpers import luigi_config

    source = {"concurrency": concurrency, "endpoint_url": endpoint, "client": client}
    with luigi_config(w.overrides(source=source, warehouse={"buckets": chunks}, resources={"s3_ingest": workers})):
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
    return {"client": client, "concurrency": concurrency, "chunks": chunks, "workers": workers, "tracks": tracks,
            "tracks_per_s": tracks / t["seconds"],
            "client_cpu_ms_per_track": cpu / tracks * 1e3 if cpu is not None else None,
            "mb_per_s": downloaded / 1e6 / t["seconds"], "avro_mb": manifest.bytes / 1e6,
            "json_mb": downloaded / 1e6}


def cli_ingest(w, endpoint: str, client: str, concurrency: int, chunks: int) -> dict:
    """The operator's command (``luigi --module tasks IngestFullSnapshot``), CPU of its whole process tree.

    It runs twice: the ingest, then the same command on the now complete date, which does nothing
    but start up (imports, luigi, config); the difference is the CPU the tracks themselves cost.
    """
    from tests.helpers import luigi_cli, subprocess_env, write_cfg

    cfg = write_cfg(w.scratch / f"cli-{client}.cfg", w.overrides(
        source={"concurrency": concurrency, "endpoint_url": endpoint, "client": client}, warehouse={"buckets": chunks}))
    w.wh.remove_date(layout.ANALYSIS_FULL, DATE)
    w.wh.remove_date(layout.LEDGER, DATE)
    runs = []
    for _ in range(2):
        before = _children_cpu()
        with timer() as t:
            done = subprocess.run(luigi_cli("IngestFullSnapshot", "--date", layout.format_date(DATE), cfg=cfg),
                                  env=subprocess_env(cfg), capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
        runs.append((_children_cpu() - before, t["seconds"]))
    tracks = w.wh.manifest(layout.ANALYSIS_FULL, DATE).counts["ingested"]
    (cpu, seconds), (startup, _) = runs
    return {"client": client, "tracks": tracks, "tracks_per_s": tracks / seconds,
            "command_cpu_ms_per_track": cpu / tracks * 1e3, "startup_cpu_s": startup,
            "marginal_cpu_ms_per_track": (cpu - startup) / tracks * 1e3}


def _children_cpu() -> float:
    """CPU seconds of finished child processes (luigi runs each task of a multi-worker build in one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_breakdown(w, endpoint: str, rows: list[dict], warmup: int = 20) -> dict:
    """Client CPU per track by phase for each client, one track after another in this process.

    The phases are exactly the ingest's per-track work: ``source.fetch`` (the GET, body read, ETag
    check), ``decode_body`` + ``unwrap`` (orjson), ``to_record`` (validation, column packing) and the
    Avro writer (snappy), in the code the ingest runs. The clients alternate track by track, so
    drift on a shared machine hits both alike; process CPU counts obstore's I/O threads too.
    """
    from pipeline.formats import ANALYSIS
    from pipeline.formats.analysis import to_record
    from pipeline.formats.avro_io import open_writer
    from pipeline.source import source_from_config
    from pipeline.source.base import key_for
    from pipeline.source.document import decode_body, unwrap
    from tests.helpers import luigi_config

    spent = {c: dict.fromkeys(PHASES, 0.0) for c in CLIENTS}
    sources = {}
    for client in CLIENTS:
        with luigi_config(w.overrides(source={"endpoint_url": endpoint, "client": client, "concurrency": 1})):
            sources[client] = source_from_config()
    with contextlib.ExitStack() as stack:
        writers = {c: stack.enter_context(open_writer(w.wh.storage, f"file://{w.scratch}/cpu-{c}.avro", ANALYSIS))
                   for c in CLIENTS}
        warm = rows[:warmup]
        for n, row in enumerate(warm + rows):
            key = key_for(row["track_id"], row["analysis_key"], "{track_id}.json")
            for client in CLIENTS:
                t0 = time.process_time()
                fetched = sources[client].fetch(key)
                t1 = time.process_time()
                doc = decode_body(fetched.body, key=key, content_encoding=fetched.content_encoding)
                analysis, wrapper = unwrap(doc)
                t2 = time.process_time()
                record = to_record(analysis, track_id=row["track_id"], source_key=key, wrapper=wrapper)
                t3 = time.process_time()
                writers[client](record)
                t4 = time.process_time()
                if n >= len(warm):
                    for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                        spent[client][phase] += seconds
    out = {}
    for client in CLIENTS:
        per_track = {phase: seconds / len(rows) * 1e3 for phase, seconds in spent[client].items()}
        per_track["total"] = sum(per_track.values())
        out[client] = {"tracks": len(rows), "ms_per_track": per_track, "requests": sources[client].stats.as_dict()}
    return out


def scenario(args, w, keys: list[str], endpoint: str, latency_ms: float) -> dict:
    raw_get_rate(endpoint, keys[:200], 16)  # warm-up
    raw = max((raw_get_rate(endpoint, keys, n) for n in (16, 32, 64)), key=lambda r: r["tracks_per_s"])
    ingest = {c: ingest_rate(w, endpoint, c, args.concurrency, args.chunks, args.workers) for c in CLIENTS}
    cli = {c: cli_ingest(w, endpoint, c, args.concurrency, args.chunks) for c in CLIENTS}
    naive = naive_rate(endpoint, keys[:args.naive_tracks], str(w.scratch / f"naive-{latency_ms:g}"))
    return {"latency_ms": latency_ms, "raw": raw, "ingest": ingest, "cli": cli, "naive": naive,
            "ingest_vs_raw": {c: ingest[c]["tracks_per_s"] / raw["tracks_per_s"] for c in CLIENTS},
            "ingest_vs_naive": {c: ingest[c]["tracks_per_s"] / naive["tracks_per_s"] for c in CLIENTS}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracks", type=int, default=2000)
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--naive-tracks", type=int, default=300)
    parser.add_argument("--cpu-tracks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latencies", default="0,20", help="first-byte latencies added in front of the server, ms")
    args = parser.parse_args()
    with world(args.tracks, args.segments, gzip_ratio=0.0) as w:  # one server, seeded once, for everything
        keys = sorted(w.sim.objects_available(0))
        object_kb = w.seeded["bytes"] / len(keys) / 1e3
        scenarios = []
        for ms in (float(x) for x in args.latencies.split(",")):
            relay = running_relay(w.endpoint, ms) if ms else contextlib.nullcontext(w.endpoint)
            with relay as endpoint:
                scenarios.append(scenario(args, w, keys, endpoint, ms))
        rows = w.sim.day(0).rows[:args.cpu_tracks]
        cpu = cpu_breakdown(w, w.endpoint, rows)
    ms = {c: cpu[c]["ms_per_track"] for c in CLIENTS}
    ingest_cpu = [{c: s["ingest"][c]["client_cpu_ms_per_track"] for c in CLIENTS} for s in scenarios]
    cli_cpu = [{c: s["cli"][c]["marginal_cpu_ms_per_track"] for c in CLIENTS} for s in scenarios]
    result = {"tracks": args.tracks, "segments": args.segments, "cores": os.cpu_count(), "server": server_kind(),
              "object_kb": object_kb, "scenarios": scenarios, "cpu_breakdown": cpu,
              "client_cpu_obstore_vs_boto3": {
                  "per_track_sequential": ms["obstore"]["total"] / ms["boto3"]["total"],
                  "request_phase": ms["obstore"]["request"] / ms["boto3"]["request"],
                  "ingest": [c["obstore"] / c["boto3"] for c in ingest_cpu],
                  "command_marginal": [c["obstore"] / c["boto3"] for c in cli_cpu]}}
    save("ingest", result)


if __name__ == "__main__":
    main()
