"""Ingest throughput against the limit (raw concurrent GETs of the same server), a naive baseline, and CPU.

Targets (issues 2 and 17): the ingest ≥ 10× the naive baseline (sequential downloads, one output
file per track) at S3-like latency, and its client CPU per track with obstore ≤ 60% of the boto3
path on the same documents. One SeaweedFS server for the whole run, seeded once; the 20 ms case
puts ``pipeline.demo.latency_relay`` in front of it. Everything is measured one after the other
in this process tree: the raw GET rate of a bare client, the ingest with each client, the naive
baseline, at each latency; then per-track client CPU by phase (request, parse, validate/pack,
Avro) for each client, sequentially in this process so every CPU second is attributable.

CPU is complete: this process is the subreaper of its descendants (``adopt_orphans``), so the
converter processes' forkserver, which outlives the luigi process that started it, is waited
for and counted too. The S3 server's and the relay's CPU are read from their processes and
reported per track beside the client's: the three share the machine's cores (``cpu_budget``).
The client comparison runs at ``[ingest] processes = 1`` (conversion in the download threads);
the default (0: converter processes on every core) is measured beside it for obstore.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import luigi
import psutil
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

    before = services_cpu()
    with timer() as t:
        with ThreadPoolExecutor(threads) as ex:
            downloaded = sum(ex.map(get, keys))
    after = services_cpu()
    return {"threads": threads, "tracks_per_s": len(keys) / t["seconds"], "mb_per_s": downloaded / 1e6 / t["seconds"],
            "server_cpu_ms_per_get": (after["server"] - before["server"]) / len(keys) * 1e3,
            "relay_cpu_ms_per_get": (after["relay"] - before["relay"]) / len(keys) * 1e3}


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


def ingest_rate(w, endpoint: str, client: str, concurrency: int, chunks: int, workers: int,
                processes: int | None = None) -> dict:
    """The real thing: IngestFullSnapshot with ``workers`` luigi worker processes running chunks side by side.

    CPU is counted for the whole tree (this process's luigi scheduler, the task processes, their
    converter processes) and, apart, for the S3 server and the relay (``measured``).
    """
    from tasks import CatalogSnapshot, IngestFullSnapshot
    from tests.helpers import luigi_config

    source = {"concurrency": concurrency, "endpoint_url": endpoint, "client": client}
    ingest = {} if processes is None else {"processes": processes}
    with luigi_config(w.overrides(source=source, warehouse={"buckets": chunks}, resources={"s3_ingest": workers},
                                  ingest=ingest)):
        w.wh.remove_date(layout.ANALYSIS_FULL, DATE)
        w.wh.remove_date(layout.LEDGER, DATE)
        luigi.build([CatalogSnapshot(date=DATE)], local_scheduler=True, log_level="WARNING")
        with measured(lambda: w.wh.manifest(layout.ANALYSIS_FULL, DATE).counts["ingested"]) as m:
            ok = luigi.build([IngestFullSnapshot(date=DATE)], local_scheduler=True, log_level="WARNING",
                             workers=workers)
    assert ok, "ingest failed"
    manifest = w.wh.manifest(layout.ANALYSIS_FULL, DATE)
    downloaded = sum(b.requests["bytes"] for b in manifest.entries())
    return {"client": client, "concurrency": concurrency, "chunks": chunks, "workers": workers,
            "processes": "default" if processes is None else processes, **m,
            "mb_per_s": downloaded / 1e6 / m["seconds"], "avro_mb": manifest.bytes / 1e6,
            "json_mb": downloaded / 1e6}


def cli_ingest(w, endpoint: str, client: str, concurrency: int, chunks: int, processes: int = 1) -> dict:
    """The operator's command (``luigi --module tasks IngestFullSnapshot``), CPU of its whole process tree.

    It runs twice: the ingest, then the same command on the now complete date, which does nothing
    but start up (imports, luigi, config); the difference is the CPU the tracks themselves cost.
    The tree includes the converter processes' forkserver, which outlives the command (``tree_cpu``).
    """
    from tests.helpers import luigi_cli, subprocess_env, write_cfg

    cfg = write_cfg(w.scratch / f"cli-{client}.cfg", w.overrides(
        source={"concurrency": concurrency, "endpoint_url": endpoint, "client": client}, warehouse={"buckets": chunks},
        ingest={"processes": processes}))
    w.wh.remove_date(layout.ANALYSIS_FULL, DATE)
    w.wh.remove_date(layout.LEDGER, DATE)
    runs = []
    for _ in range(2):
        with tree_cpu() as cpu, timer() as t:
            done = subprocess.run(luigi_cli("IngestFullSnapshot", "--date", layout.format_date(DATE), cfg=cfg),
                                  env=subprocess_env(cfg), capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
        runs.append((cpu["seconds"], t["seconds"]))
    tracks = w.wh.manifest(layout.ANALYSIS_FULL, DATE).counts["ingested"]
    (cpu, seconds), (startup, _) = runs
    return {"client": client, "processes": processes, "tracks": tracks, "tracks_per_s": tracks / seconds,
            "command_cpu_ms_per_track": cpu / tracks * 1e3, "startup_cpu_s": startup,
            "marginal_cpu_ms_per_track": (cpu - startup) / tracks * 1e3}


def _children_cpu() -> float:
    """CPU seconds of reaped descendants (luigi runs each task of a multi-worker build in a child process)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux), so their CPU is counted here.

    Why: the ingest converts in a forkserver's processes ([ingest] processes, pipeline/ingest/convert.py).
    The forkserver is a child of the luigi task process and outlives it by a moment; orphaned, it
    would be reparented to init and its CPU, with its converters', never reach our RUSAGE_CHILDREN.
    As subreaper we adopt it, wait for it and count it (``tree_cpu``).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _reap_new_children(known: set[int], timeout: float = 30.0) -> None:
    """Wait for every child not in ``known`` (adopted orphans included) to exit, and reap it."""
    deadline = time.monotonic() + timeout
    while pending := [p.pid for p in psutil.Process().children() if p.pid not in known]:
        for pid in pending:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise RuntimeError(f"descendants {pending} did not exit: their CPU cannot be counted")
        time.sleep(0.01)


@contextlib.contextmanager
def tree_cpu() -> Iterator[dict]:
    """CPU seconds of this process and of every descendant that ran during the block, orphans included.

    ``adopt_orphans`` must have been called; long-running children started before (the S3 server,
    the relay) are left alone and counted apart (``services_cpu``).
    """
    known = {p.pid for p in psutil.Process().children()}
    own, children = time.process_time(), _children_cpu()
    out: dict = {}
    yield out
    _reap_new_children(known)
    out["seconds"] = time.process_time() - own + _children_cpu() - children


def services_cpu() -> dict[str, float]:
    """CPU seconds so far of the S3 server (``weed``) and the latency relay, this process's long-lived children."""
    out = {"server": 0.0, "relay": 0.0}
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(child.cmdline())
            role = "relay" if "latency_relay" in cmd else "server" if ("weed" in cmd or "moto" in cmd) else None
            if role:
                for proc in [child, *child.children(recursive=True)]:
                    t = proc.cpu_times()
                    out[role] += t.user + t.system + t.children_user + t.children_system
    return out


@contextlib.contextmanager
def measured(tracks_of) -> Iterator[dict]:
    """Wall time and CPU per track of the client tree, the S3 server and the relay for the block.

    ``tracks_of()`` gives the number of tracks once the block ended.
    """
    services = services_cpu()
    out: dict = {}
    with tree_cpu() as cpu, timer() as t:
        yield out
    after = services_cpu()
    tracks = tracks_of()
    per_track = {"client": cpu["seconds"], **{k: after[k] - services[k] for k in services}}
    out.update(tracks=tracks, seconds=t["seconds"], tracks_per_s=tracks / t["seconds"],
               cpu_ms_per_track={k: v / tracks * 1e3 for k, v in per_track.items()})
    out["cpu_ms_per_track"]["total"] = sum(out["cpu_ms_per_track"].values())


BEFORE = "boto3, collector as before"  # the boto3 path as it was: CPython's default GC settings, nothing frozen
FAST = "obstore, fast path"  # obstore + body_to_record (simdjson, issue 17): "parse" holds parse, validation, packing


def cpu_breakdown(w, endpoint: str, rows: list[dict], warmup: int = 20) -> dict:
    """Client CPU per track by phase for each client, one track after another in this process.

    The phases are exactly the ingest's per-track work: ``source.fetch`` (the GET, body read, ETag
    check), ``decode_body`` + ``unwrap`` (orjson), ``to_record`` (validation, column packing) and the
    Avro writer (snappy), in the code the ingest runs. The clients alternate track by track, so
    drift on a shared machine hits both alike; process CPU counts obstore's I/O threads too.
    ``FAST`` is obstore with the conversion the ingest runs now (``body_to_record``: the simdjson
    fast path, orjson as its fallback), timed whole in ``parse``; boto3 and obstore keep
    ``decode_body`` + ``to_record``, today's path, so FAST ÷ boto3 is the new ingest against it.
    A further column, ``BEFORE``, is the boto3 path with the collector left at CPython's defaults,
    as the ingest ran before ``relax_gc_for_documents``: what the same documents cost then. It runs
    first, on its own (the collector's settings are per process and ``gc.freeze`` is one-way here).
    """
    from pipeline.formats import ANALYSIS
    from pipeline.formats.avro_io import open_writer
    from pipeline.source import source_from_config
    from pipeline.source.limits import limit_malloc_arenas, relax_gc_for_documents
    from tests.helpers import luigi_config

    limit_malloc_arenas()  # as the ingest engine does (pipeline/ingest/engine.py)
    variants = {BEFORE: "boto3", "boto3": "boto3", "obstore": "obstore", FAST: "obstore"}
    spent = {v: dict.fromkeys(PHASES, 0.0) for v in variants}
    sources = {}
    for variant, client in variants.items():
        with luigi_config(w.overrides(source={"endpoint_url": endpoint, "client": client, "concurrency": 1})):
            sources[variant] = source_from_config()
    with contextlib.ExitStack() as stack:
        writers = {v: stack.enter_context(open_writer(w.wh.storage, f"file://{w.scratch}/cpu-{n}.avro", ANALYSIS))
                   for n, v in enumerate(variants)}
        warm = rows[:warmup]
        for group in ((BEFORE,), ("boto3", "obstore", FAST)):
            if group != (BEFORE,):
                relax_gc_for_documents()  # as the ingest engine does, from here on
            held: dict = {}
            for n, row in enumerate(warm + rows):
                _phases(sources, writers, group, row, spent if n >= len(warm) else None, held)
    out = {}
    for variant in variants:
        per_track = {phase: seconds / len(rows) * 1e3 for phase, seconds in spent[variant].items()}
        per_track["total"] = sum(per_track.values())
        out[variant] = {"tracks": len(rows), "ms_per_track": per_track, "requests": sources[variant].stats.as_dict()}
    return out


def _phases(sources: dict, writers: dict, variants: tuple[str, ...], row: dict, spent: dict | None,
            held: dict) -> None:
    """One track through each variant in turn, its CPU per phase added to ``spent`` (None: a warm-up track).

    Each variant's previous document stays alive in ``held`` until the next one is parsed, and is
    freed in the parse phase: in the ingest, documents overlap (a window of ``2 × concurrency``),
    and this overlap is what makes the collector promote them and rescan the heap.
    """
    from pipeline.formats.analysis import to_record
    from pipeline.source.base import key_for
    from pipeline.source.document import body_to_record, decode_body, unwrap

    key = key_for(row["track_id"], row["analysis_key"], "{track_id}.json")
    for variant in variants:
        t0 = time.process_time()
        fetched = sources[variant].fetch(key)
        t1 = time.process_time()
        if variant == FAST:
            doc = record = body_to_record(fetched.body, key=key, content_encoding=fetched.content_encoding,
                                          max_bytes=64 * 1024 * 1024, track_id=row["track_id"], updated=None)
            held.pop(variant, None)
            t2 = t3 = time.process_time()
        else:
            doc = decode_body(fetched.body, key=key, content_encoding=fetched.content_encoding)
            analysis, wrapper = unwrap(doc)
            held.pop(variant, None)
            t2 = time.process_time()
            record = to_record(analysis, track_id=row["track_id"], source_key=key, wrapper=wrapper)
            t3 = time.process_time()
        writers[variant](record)
        t4 = time.process_time()
        held[variant] = (fetched, doc, record)
        if spent is not None:
            for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                spent[variant][phase] += seconds


POOLED = "obstore, processes=0"  # the ingest as configured by default: converter processes on every core


def scenario(args, w, keys: list[str], endpoint: str, latency_ms: float) -> dict:
    """Raw GET rate, the ingest (each client at ``[ingest] processes = 1``, and obstore with the default 0),
    the operator's command per client, the naive baseline; CPU per track of client, server and relay."""
    raw_get_rate(endpoint, keys[:200], 16)  # warm-up
    raw = max((raw_get_rate(endpoint, keys, n) for n in (16, 32, 64)), key=lambda r: r["tracks_per_s"])
    ingest = {c: ingest_rate(w, endpoint, c, args.concurrency, args.chunks, args.workers, processes=1)
              for c in CLIENTS}
    ingest[POOLED] = ingest_rate(w, endpoint, "obstore", args.concurrency, args.chunks, args.workers)
    cli = {c: cli_ingest(w, endpoint, c, args.concurrency, args.chunks) for c in CLIENTS}
    naive = naive_rate(endpoint, keys[:args.naive_tracks], str(w.scratch / f"naive-{latency_ms:g}"))
    budget = {name: {"cpu_ms_per_track": run["cpu_ms_per_track"],
                     "cpu_bound_tracks_per_s": (os.cpu_count() or 1) * 1e3 / run["cpu_ms_per_track"]["total"]}
              for name, run in ingest.items()}
    return {"latency_ms": latency_ms, "load_average": os.getloadavg(), "raw": raw, "ingest": ingest, "cli": cli,
            "naive": naive, "cpu_budget": budget,
            "ingest_vs_raw": {c: run["tracks_per_s"] / raw["tracks_per_s"] for c, run in ingest.items()},
            "ingest_vs_naive": {c: run["tracks_per_s"] / naive["tracks_per_s"] for c, run in ingest.items()}}


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
    adopt_orphans()
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
    ingest_cpu = [{c: s["ingest"][c]["cpu_ms_per_track"]["client"] for c in CLIENTS} for s in scenarios]
    cli_cpu = [{c: s["cli"][c]["marginal_cpu_ms_per_track"] for c in CLIENTS} for s in scenarios]
    result = {"load_average_end": os.getloadavg(),
              "tracks": args.tracks, "segments": args.segments, "cores": os.cpu_count(), "server": server_kind(),
              "object_kb": object_kb, "scenarios": scenarios, "cpu_breakdown": cpu,
              "client_cpu_obstore_vs_boto3": {
                  "per_track_sequential": ms["obstore"]["total"] / ms["boto3"]["total"],
                  "per_track_sequential_vs_before": ms["obstore"]["total"] / cpu[BEFORE]["ms_per_track"]["total"],
                  "per_track_sequential_fast_path": cpu[FAST]["ms_per_track"]["total"] / ms["boto3"]["total"],
                  "request_phase": ms["obstore"]["request"] / ms["boto3"]["request"],
                  "ingest": [c["obstore"] / c["boto3"] for c in ingest_cpu],
                  "command_marginal": [c["obstore"] / c["boto3"] for c in cli_cpu]}}
    save("ingest", result)


if __name__ == "__main__":
    main()
