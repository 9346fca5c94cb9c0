"""Serving at catalogue scale: full and daily publish, bytes per record, the index, HTTP latency, API memory.

Targets (issue 15), measured at 100k and 1M records for SQLite and Redis, as ratios within a run:

* a daily publish with 1% changed costs <= 5% of a full publish;
* peak RSS of a publish process (full or daily) <= 500 MB, growing <= 1.3x from 100k to 1M;
* bytes per record in the store <= 2x the attributes record's Avro binary encoding;
* index build time grows <= 12x from 100k to 1M; recall@10 >= 0.95 at 1M on held-aside queries;
* a second API process on the same host adds <= 100 MB (its private memory: the index is shared).

Each publish runs in its own process (``python -m benchmarks.bench_serving publish ...``), so its
peak RSS is its own. The snapshots come from ``benchmarks.serving_fixture`` (clustered vectors,
1% daily change). ``soak`` drives >= 60k mixed requests with two daily publishes and reports the
API's RSS after the first 10k requests and at the end.

Run: ``.venv/bin/python -m benchmarks.bench_serving --records 100000,1000000`` and
``.venv/bin/python -m benchmarks.bench_serving soak``; ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks import serving_fixture as fx
from benchmarks.common import save
from pipeline import layout
from pipeline.formats.record_index import read_index
from pipeline.serving.api import running_service
from pipeline.serving.redis_server import running_redis_server
from pipeline.serving.similarity import NO_FILTERS, Filters, SimilarityIndex, index_path
from pipeline.serving.stores import open_store


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


# ----------------------------------------------------------------------- one publish, in its own process
def publish_main(argv: list[str]) -> None:
    """Publish one date and print what it did and this process's peak RSS (JSON on the last line)."""
    from pipeline.serving.publish import publish_snapshot

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--date", type=layout.parse_date, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--index-dir", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime  # the imports are not the publish's
    with open_store(args.store, json.loads(args.settings)) as store:
        result = publish_snapshot(fx.warehouse(args.root), args.date, store, args.index_dir, batch_size=1000,
                                  concurrency=args.concurrency)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"mode": result.mode, "records": result.records, "rows_written": result.loaded,
                      "seconds": round(time.perf_counter() - started, 2),
                      "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu_before, 2),
                      "steps_s": {k: round(v, 2) for k, v in result.seconds.items()},
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which a child started
    by fork + exec inherits from its parent's size at the fork)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def publish(root: Path, date, kind: str, settings: dict, index_dir: Path, concurrency: int) -> dict:
    """One publish in its own process; with the machine's 1-minute load average before and after it."""
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_serving", "publish", "--root", str(root),
                          "--date", layout.format_date(date), "--store", kind, "--settings", json.dumps(settings),
                          "--index-dir", str(index_dir), "--concurrency", str(concurrency)],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "load_avg": [round(load, 1), round(os.getloadavg()[0], 1)]}


# ----------------------------------------------------------------------- sizes
def avro_bytes_per_record(wh, date) -> float:
    """Mean length of the attributes record's Avro binary encoding (from the record index: uncompressed)."""
    manifest = wh.manifest(layout.ATTRIBUTES, date, whole=True)
    total = count = 0
    for entry in manifest.entries():
        for part in read_index(wh.storage, wh.layout.file_url(layout.ATTRIBUTES, date, entry.record_index)):
            total += sum(part["lengths"])
            count += len(part["lengths"])
    return total / count


def store_bytes(kind: str, settings: dict) -> int:
    with open_store(kind, settings) as store:
        if kind == "sqlite":
            conn = store._conn()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return Path(settings["sqlite_path"]).stat().st_size
        return store.used_memory()  # type: ignore[attr-defined]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------- the index
def recall(index: SimilarityIndex, track_ids: list[str], filters: Filters = NO_FILTERS) -> dict:
    """recall@10 against exact search over every live row, and the in-process query latency."""
    alive = []
    for s, dead in index.segments:  # once per index: rows in lists and not dead
        mask = np.zeros(s.n, bool)
        mask[:s.listed] = True
        if dead is not None:
            mask[dead] = False
        alive.append(mask)
    hits, times = [], []
    for track_id in track_ids:
        seg, row = index.locate(track_id)
        query = np.asarray(seg.vectors[row])
        want = (int(seg.key[row]), int(seg.mode[row])) if filters.same_key else None
        exact = []
        for (s, _), mask in zip(index.segments, alive, strict=True):
            scores = np.concatenate([np.asarray(s.vectors[a:a + 262_144]) @ query for a in range(0, s.n, 262_144)])
            keep = mask.copy()
            if filters.active():
                keep[:s.listed] &= index._passes(s, np.arange(s.listed), filters, want)
            if s is seg:
                keep[row] = False
            scores[~keep] = -np.inf
            top = np.argpartition(-scores, min(10, len(scores) - 1))[:10]
            exact += [(float(scores[r]), bytes(s.ids[r]).decode()) for r in top if scores[r] > -np.inf]
        truth = [t for _, t in sorted(exact, key=lambda x: -x[0])][:10]
        started = time.perf_counter()
        got = [n.track_id for n in index.similar(track_id, 10, filters)]
        times.append(time.perf_counter() - started)
        hits.append(len(set(got) & set(truth)) / max(1, len(truth)))
    return {"queries": len(track_ids), "recall_at_10": round(float(np.mean(hits)), 4), **percentiles(times)}


def memory(pid: int) -> dict:
    info = psutil.Process(pid).memory_full_info()
    return {"rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1),
            "pss_mb": round(info.pss / 2**20, 1)}


def timed(client: httpx.Client, paths: list[str], ok=(200,)) -> list[float]:
    out = []
    for path in paths:
        started = time.perf_counter()
        response = client.get(path)
        out.append(time.perf_counter() - started)
        assert response.status_code in ok, (path, response.status_code, response.text[:200])
    return out


def api_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    raise RuntimeError(f"no process listens on {base}")


def http(kind: str, settings: dict, index_dir: Path, ids: list[str], scratch: Path, requests: int) -> dict:
    rng = np.random.default_rng(3)
    picks = [ids[i] for i in rng.integers(0, len(ids), requests)]
    out: dict = {}
    with running_service({"store": kind, **settings}, index_dir, scratch / f"api1-{kind}.log") as base1:
        with httpx.Client(base_url=base1, timeout=60) as client:
            timed(client, [f"/tracks/{t}/similar" for t in picks[:50]])  # warm-up: opens the index
            out["get_one"] = percentiles(timed(client, [f"/tracks/{t}" for t in picks]))
            out["similar_k10"] = percentiles(timed(client, [f"/tracks/{t}/similar" for t in picks[:requests // 2]]))
            out["api1"] = memory(api_pid(base1))
        with running_service({"store": kind, **settings}, index_dir, scratch / f"api2-{kind}.log") as base2:
            with httpx.Client(base_url=base2, timeout=60) as client:
                timed(client, [f"/tracks/{t}" for t in picks])
                timed(client, [f"/tracks/{t}/similar" for t in picks[:requests // 2]])
            out["api2"] = memory(api_pid(base2))
            out["api1_while_api2"] = memory(api_pid(base1))
    return out


# ----------------------------------------------------------------------- one scale
def scale(n: int, root: Path, redis_url: str, scratch: Path, requests: int, queries: int) -> dict:
    wh = fx.make(root, n)
    result: dict = {"records": n, "avro_bytes_per_record": round(avro_bytes_per_record(wh, fx.DAY1), 1)}
    ids = [t for entry in wh.manifest(layout.ATTRIBUTES, fx.DAY2, whole=True).entries()
           for part in read_index(wh.storage, wh.layout.file_url(layout.ATTRIBUTES, fx.DAY2, entry.record_index))
           for t in part["track_ids"][:2000]]
    stores = {"sqlite": ({"sqlite_path": str(scratch / f"serving-{n}.sqlite")}, 1),
              "redis": ({"redis_url": redis_url, "redis_prefix": f"bench{n}"}, 4)}
    for kind, (settings, concurrency) in stores.items():
        index_dir = scratch / f"index-{kind}-{n}"
        empty = store_bytes(kind, settings)
        full = publish(wh.layout.root.removeprefix("file://"), fx.DAY1, kind, settings, index_dir, concurrency)
        size = store_bytes(kind, settings) - empty
        daily = publish(wh.layout.root.removeprefix("file://"), fx.DAY2, kind, settings, index_dir, concurrency)
        row = {"full": full, "daily": daily, "daily_over_full": round(daily["seconds"] / full["seconds"], 4),
               "daily_over_full_cpu": round(daily["cpu_s"] / max(full["cpu_s"], 1e-9), 4),
               "bytes_per_record": round(size / n, 1),
               "bytes_over_avro": round(size / n / result["avro_bytes_per_record"], 2)}
        if kind == "sqlite":
            base = SimilarityIndex.open(index_path(index_dir, layout.format_date(fx.DAY1)))
            today = SimilarityIndex.open(index_path(index_dir, layout.format_date(fx.DAY2)))
            held = [ids[i] for i in np.random.default_rng(5).choice(len(ids), queries, replace=False)]
            result["index"] = {"build_s": full["steps_s"]["index"], "nlist": base.base.nlist, "nprobe": base.nprobe,
                               "bytes": folder_bytes(index_path(index_dir, layout.format_date(fx.DAY1))),
                               "bytes_per_track": round(folder_bytes(index_path(index_dir,
                                                                                layout.format_date(fx.DAY1))) / n),
                               "daily_delta_bytes": folder_bytes(index_path(index_dir, layout.format_date(fx.DAY2))),
                               "full": recall(base, [t for t in held if base.locate(t)]),
                               "daily": recall(today, held),
                               "daily_same_key": recall(today, held[:queries // 2], Filters(same_key=True))}
        row["http"] = http(kind, settings, index_dir, ids, scratch, requests)
        result[kind] = row
        print(json.dumps({n: {kind: row}}), flush=True)
    return result


# ----------------------------------------------------------------------- soak
def soak(root: Path, n: int, requests: int, scratch: Path) -> dict:
    """``requests`` mixed requests (lookups, batches, similar with filters, malformed) with two daily publishes."""
    wh = fx.make(root, n, day3=True)
    ids = [t for entry in wh.manifest(layout.ATTRIBUTES, fx.DAY1, whole=True).entries()
           for part in read_index(wh.storage, wh.layout.file_url(layout.ATTRIBUTES, fx.DAY1, entry.record_index))
           for t in part["track_ids"]]
    settings = {"sqlite_path": str(scratch / "soak.sqlite")}
    index_dir = scratch / "index-soak"
    publish(Path(wh.layout.root.removeprefix("file://")), fx.DAY1, "sqlite", settings, index_dir, 1)
    kinds = ["one", "batch", "similar", "similar_filtered", "post", "bad", "absent"]
    samples, publishes, statuses = [], [], {}
    root_dir = Path(wh.layout.root.removeprefix("file://"))

    def request(client: httpx.Client, i: int) -> int:
        kind = kinds[i % len(kinds)]
        pick = [ids[j] for j in np.random.default_rng(i).integers(0, len(ids), 100)]
        if kind == "one":
            return client.get(f"/tracks/{pick[0]}").status_code
        if kind == "batch":
            return client.get("/tracks", params={"ids": ",".join(pick[:1 + i % 100])}).status_code
        if kind == "similar":
            return client.get(f"/tracks/{pick[0]}/similar", params={"k": 1 + i % 100}).status_code
        if kind == "similar_filtered":
            return client.get(f"/tracks/{pick[0]}/similar", params={"k": 20, "tempo_min": 90, "tempo_max": 140,
                                                                    "same_key": bool(i % 2)}).status_code
        if kind == "post":
            return client.post("/tracks:batch", json={"ids": pick}).status_code
        if kind == "bad":
            return client.get(f"/tracks/{pick[0][:-3]}!!", params={"k": "x"}).status_code
        return client.get(f"/tracks/{'0' * 22}/similar").status_code

    with running_service({"store": "sqlite", **settings}, index_dir, scratch / "soak-api.log") as base:
        pid = api_pid(base)
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(4)]
        background: list[threading.Thread] = []
        with ThreadPoolExecutor(4) as pool:
            for start in range(0, requests, 1000):  # rounds of 1,000 requests from 4 concurrent clients
                for code in pool.map(lambda i: request(clients[i % 4], i), range(start, min(requests, start + 1000))):
                    statuses[code] = statuses.get(code, 0) + 1
                samples.append({"requests": min(requests, start + 1000), **memory(pid)})
                if start + 1000 in (requests // 3, 2 * requests // 3):  # a daily publish while the load goes on
                    day = fx.DAY2 if start + 1000 == requests // 3 else fx.DAY3
                    thread = threading.Thread(target=lambda d=day: publishes.append(
                        publish(root_dir, d, "sqlite", settings, index_dir, 1)))
                    thread.start()
                    background.append(thread)
        for thread in background:
            thread.join()
        for client in clients:
            client.close()
    after_10k = next(s for s in samples if s["requests"] == 10_000)
    return {"records": n, "requests": requests, "clients": 4, "statuses": statuses, "publishes": publishes,
            "rss_after_10k_mb": after_10k["rss_mb"], "rss_end_mb": samples[-1]["rss_mb"],
            "rss_end_over_10k": round(samples[-1]["rss_mb"] / after_10k["rss_mb"], 3),
            "uss_after_10k_mb": after_10k["uss_mb"], "uss_end_mb": samples[-1]["uss_mb"],
            "samples": samples[::5] + [samples[-1]]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        return publish_main(sys.argv[2:])
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", default="scales", choices=["scales", "soak"])
    parser.add_argument("--records", default="100000,1000000", help="catalogue sizes (scales) or one size (soak)")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "echonest-serving-bench",
                        help="where the fixture snapshots are kept between runs")
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per measurement")
    parser.add_argument("--queries", type=int, default=200, help="held-aside queries for recall@10")
    parser.add_argument("--soak-requests", type=int, default=60_000)
    parser.add_argument("--name", default="serving", help="results file benchmarks/results/<name>.json")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.records, args.requests, args.queries, args.soak_requests = "20000", 200, 50, 12_000
    result: dict = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        scratch = Path(tmp)
        if args.what == "soak":
            result["soak"] = soak(args.root, int(args.records.split(",")[0]), args.soak_requests, scratch)
            print(json.dumps(result["soak"]))
            save("serving-soak", result)
            return None
        with running_redis_server(scratch / "redis") as url:
            result["scales"] = [scale(int(n), args.root, url, scratch, args.requests, args.queries)
                                for n in args.records.split(",")]
    if len(result["scales"]) == 2:
        small, big = result["scales"]
        result["growth"] = {
            "index_build": round(big["index"]["build_s"] / small["index"]["build_s"], 2),
            **{f"{kind}_{mode}_peak_rss": round(big[kind][mode]["peak_rss_mb"] / small[kind][mode]["peak_rss_mb"], 2)
               for kind in ("sqlite", "redis") for mode in ("full", "daily")}}
    save(args.name, result)
    return None


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
