"""A whole day sequence at 100k and 1M tracks through the Luigi tasks: wall, CPU, peak RSS per step (issue 14).

The sequence is the production one, on local disk with the ``file://`` source: metadata dump →
catalog → full ingest → attributes (full) → an incremental day (1% new, 0.5% re-analysed) →
its attributes → a compaction day → its attributes → publish (serving) → status view. Every
step runs as its own process tree (``python -m benchmarks.bench_scale --step ...``, which calls
``luigi.build`` with the local scheduler), so CPU is the tree's (``wait4``, children included)
and peak RSS is measured per step: the largest process (rusage) and the whole tree (sampled
from /proc every 50 ms, which is what a host must hold).

The full ingest and the full attributes recompute also run once with one process
(``[ingest] processes = 1``, ``[attributes] processes = 1``) on a copy of the warehouse:
the default settings' speed-up is measured in the same run, on the same machine.

Analyses are small for size (20 s tracks: ~11 kB of JSON, see ``bytes_per_track`` in the
results), drawn from a pool of 256 distinct synthetic documents: each track's source file is a
hard link to its pool document, so the source costs the same per document at both sizes, as an
object store would (a million written copies, 12.6 GB, no longer fit in the page cache beside the
warehouse the ingest writes, and the 1M ingest then paid for disk reads the 100k one did not).
``--real`` runs the real-size calibration point instead (~800 segments, every document distinct).

    python -m benchmarks.bench_scale --sizes 100000,1000000       # (make bench-scale)
    python -m benchmarks.bench_scale --sizes 20000 --real --segments 800
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from benchmarks.common import RESULTS
from pipeline.demo.synthetic import CatalogSimulation, synth_analysis

D0 = dt.date(2026, 11, 26)
BUCKETS = 20
BUCKETS_ENV = "BENCH_SCALE_BUCKETS"  # --buckets: e.g. 2 buckets at 100k hold 1M's bucket size (a worker's memory)
POOL = 256  # distinct small documents; a track's document is picked by a hash of (id, version)


class SmallDocs:
    """Short (20 s) synthetic analyses from a fixed pool: realistic structure, ~11 kB, cheap to write."""

    def __init__(self, seed: int = 3):
        rng = np.random.default_rng(seed)
        self.pool = [orjson.dumps(synth_analysis(rng, f"pool{i}", float(rng.uniform(70, 180)), int(rng.integers(12)),
                                                 int(rng.integers(2)), 4, float(rng.uniform(18, 24)),
                                                 int(rng.integers(8, 14)))) for i in range(POOL)]

    def _pick(self, track_id: str, version: int) -> int:
        digest = hashlib.blake2b(f"{track_id}/{version}".encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big") % POOL

    def body(self, sim: CatalogSimulation, track_id: str, version: int) -> bytes:
        return self.pool[self._pick(track_id, version)]

    def place(self, path: Path, sim: CatalogSimulation, track_id: str, version: int) -> int:
        """Make ``path`` a hard link to the track's pool document (replacing an older version's link)."""
        pool = path.parent.parent / "pool"
        pick = self._pick(track_id, version)
        original = pool / f"{pick}.json"
        if not original.exists():
            pool.mkdir(exist_ok=True)
            original.write_bytes(self.pool[pick])
        path.unlink(missing_ok=True)  # never write through a link: the pool document is shared
        os.link(original, path)
        return len(self.pool[pick])


class RealDocs:
    """Every document generated in full by the simulation (real sizes; ~8 ms a document to make)."""

    def body(self, sim: CatalogSimulation, track_id: str, version: int) -> bytes:
        return sim.document_bytes(track_id, version)

    def place(self, path: Path, sim: CatalogSimulation, track_id: str, version: int) -> int:
        data = self.body(sim, track_id, version)
        path.write_bytes(data)
        return len(data)


def seed_source(folder: Path, sim: CatalogSimulation, day: int, docs, since_day: int | None = None) -> dict:
    """Write the documents new or changed on ``day`` as ``{track_id}.json`` files; returns count and bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    now = sim.objects_available(day)
    before = sim.objects_available(since_day) if since_day is not None else {}
    n = size = 0
    for key, spec in now.items():
        if before.get(key) == spec:
            continue
        n, size = n + 1, size + docs.place(folder / key, sim, spec.track_id, spec.version)
    return {"documents": n, "bytes": size}


def write_cfg(path: Path, root: Path, **sections) -> Path:
    base = {
        "core": {"autoload_range": "false"},
        "warehouse": {"root": f"file://{root / 'warehouse'}", "buckets": int(os.environ.get(BUCKETS_ENV, BUCKETS))},
        "source": {"url": f"file://{root.parent / 'source'}/", "concurrency": 16},
        "pipeline": {"start_date": D0.isoformat()},
        "compaction": {"every_days": 2, "max_incremental_ratio": 10.0},
        "catalog": {"sort_memory_mb": 16},
        "serving": {"sqlite_path": str(root / "serving" / "attributes.sqlite"), "index_dir": str(root / "serving")},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    path.write_text("".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in vals.items()) + "\n"
                            for s, vals in base.items()))
    return path


# -- one step, in its own process tree ------------------------------------------------------------------------

def run_step(task: str, date: str) -> None:
    """(child process) Build one task with the local scheduler; print bytes read from analysis payloads."""
    import luigi

    import tasks
    from pipeline import layout
    from pipeline.storage import LocalStorage

    reads = {"payload": 0, "index": 0, "manifests": 0, "own_output": 0}
    orig = LocalStorage.open_read

    def open_read(storage, url):
        """Counts the sizes of analysis files opened: earlier sets' payload parts, id indexes and manifests,
        and this day's own files (the quality gate reads their headers)."""
        if f"/{layout.ANALYSIS_FULL}/" in url or f"/{layout.ANALYSIS_INCREMENTAL}/" in url:
            kind = ("own_output" if date in url else "index" if "/_index/" in url
                    else "payload" if "/part-" in url else "manifests")
            reads[kind] += os.path.getsize(url[len("file://"):])
        return orig(storage, url)

    LocalStorage.open_read = open_read
    ok = luigi.build([getattr(tasks, task)(date=dt.date.fromisoformat(date))], local_scheduler=True,
                     log_level="WARNING")
    print(json.dumps({"ok": ok, "analysis_bytes_read": reads}))
    sys.exit(0 if ok else 1)


def _tree(pid: int, cpu: dict[int, float], sys_cpu: dict[int, float]) -> int:
    """Resident bytes of a process and all its descendants (from /proc); records each one's CPU seconds
    (and, in ``sys_cpu``, the kernel's share of them)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[bytes]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        stats[int(entry)] = fields
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            fields = stats[p]
            total += int(fields[21]) * PAGE
            cpu[p] = max(cpu.get(p, 0.0), (int(fields[11]) + int(fields[12])) / TICKS)
            sys_cpu[p] = max(sys_cpu.get(p, 0.0), int(fields[12]) / TICKS)
        todo.extend(children.get(p, ()))
    return total


PAGE, TICKS = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; wall seconds, CPU seconds of its tree, peak RSS (largest process and whole tree).

    CPU is the larger of ``wait4`` (children reaped by their parents) and the sum over every process
    seen in the tree (a forkserver's workers are reaped by the forkserver, which nobody waits for).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = [0]
    cpu: dict[int, float] = {}
    sys_cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree(proc.pid, cpu, sys_cpu))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    waited = usage.ru_utime + usage.ru_stime
    result = {"wall_s": round(wall, 2), "cpu_s": round(max(waited, sum(cpu.values())), 2),
              "cpu_waited_s": round(waited, 2), "cpu_sys_s": round(max(usage.ru_stime, sum(sys_cpu.values())), 2),
              "processes_seen": len(cpu),
              "max_process_rss_mb": round(usage.ru_maxrss / 1024, 1), "tree_rss_mb": round(peak[0] / 2**20, 1),
              "load_1min": round(os.getloadavg()[0], 1)}
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if last.startswith("{"):
        result.update(json.loads(last))
        result.pop("ok", None)
    return result


def step(name: str, cfg: Path, task: str, date: dt.date, results: dict) -> dict:
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg)}
    cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--step", task, date.isoformat()]
    out = measure(cmd, env)
    results[name] = out
    print(f"  {name:<24} {json.dumps(out)}", flush=True)
    return out


# -- the sequence at one size -----------------------------------------------------------------------------------

def sequence(tracks: int, scratch: Path, real: bool, segments: int, compare: bool = True,
             compare_only: bool = False) -> dict:
    from pipeline import layout
    from pipeline.demo.seed import write_metadata_dump
    from pipeline.layout import Layout
    from pipeline.storage import LocalStorage
    from pipeline.warehouse import Warehouse

    sim = CatalogSimulation(seed=11, start_date=D0, initial_tracks=tracks, segments=segments, daily_new_ratio=0.01,
                            reanalysed_ratio=0.005, takedown_ratio=0.001, late_ratio=0.0, never_ratio=0.0,
                            malformed_ratio=0.0, gzip_ratio=0.0)
    docs = RealDocs() if real else SmallDocs()
    default_root, single_root = scratch / "default", scratch / "single"
    cfg = write_cfg(scratch / "default.cfg", default_root)
    single = write_cfg(scratch / "single.cfg", single_root, ingest={"processes": 1}, attributes={"processes": 1})
    wh = Warehouse(Layout(f"file://{default_root / 'warehouse'}"), LocalStorage())
    steps: dict = {}
    info: dict = {"tracks": tracks, "real_documents": real, "cores": os.cpu_count()}
    print(f"== {tracks} tracks ({'real' if real else 'small'} analyses) in {scratch}", flush=True)

    t = time.perf_counter()
    info["source_day0"] = seed_source(scratch / "source", sim, 0, docs)
    rows = sim.day(0).rows
    write_metadata_dump(wh.layout, wh.storage, D0, rows)
    info["setup_day0_s"] = round(time.perf_counter() - t, 1)
    info["load_before"] = os.getloadavg()
    step("catalog", cfg, "CatalogSnapshot", D0, steps)
    if compare:
        single_wh = Warehouse(Layout(f"file://{single_root / 'warehouse'}"), LocalStorage())
        shutil.copytree(wh.layout.date_url(layout.TRACKS, D0)[len("file://"):],
                        single_wh.layout.date_url(layout.TRACKS, D0)[len("file://"):])
        step("catalog_single", single, "CatalogSnapshot", D0, {})
        step("full_ingest_single", single, "AnalysisSet", D0, steps)
    step("full_ingest", cfg, "AnalysisSet", D0, steps)
    if compare:
        step("attributes_full_single", single, "DailyAttributes", D0, steps)
        shutil.rmtree(single_root)
    step("attributes_full", cfg, "DailyAttributes", D0, steps)
    if compare_only:  # the one-process vs default comparison alone (an idle host's ten minutes)
        return {**info, "steps": steps, "ratios": ratios(steps)}
    full = wh.manifest(layout.ANALYSIS_FULL, D0)
    info["analysis_avro_bytes_per_track"] = round(full.bytes / full.records)
    info["json_bytes_per_track"] = round(info["source_day0"]["bytes"] / info["source_day0"]["documents"])

    for day, kind in ((1, "incremental"), (2, "compaction")):
        date = D0 + dt.timedelta(days=day)
        t = time.perf_counter()
        info[f"source_day{day}"] = seed_source(scratch / "source", sim, day, docs, since_day=day - 1)
        write_metadata_dump(wh.layout, wh.storage, date, sim.day(day).rows)
        info[f"setup_day{day}_s"] = round(time.perf_counter() - t, 1)
        step(f"catalog_day{day}", cfg, "CatalogSnapshot", date, steps)
        step(kind, cfg, "AnalysisSet", date, steps)
        step(f"attributes_{kind}_day", cfg, "DailyAttributes", date, steps)
        info[f"attributes_counts_day{day}"] = wh.manifest(layout.ATTRIBUTES, date).counts
    last = D0 + dt.timedelta(days=2)
    assert wh.is_complete(layout.ANALYSIS_FULL, last), "day 2 should be a compaction day"
    step("publish", cfg, "PublishAttributes", last, steps)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg)}
    steps["status_view"] = measure([sys.executable, "-m", "pipeline.ops.status", "--html",
                                    str(scratch / "status.html")], env)
    print(f"  {'status_view':<24} {json.dumps(steps['status_view'])}", flush=True)
    info["disk_mb"] = {name: round(_du(default_root / "warehouse" / "echonest" / name) / 1e6, 1)
                       for name in sorted(os.listdir(default_root / "warehouse" / "echonest"))}
    info["source_mb"] = round(_du(scratch / "source") / 1e6, 1)
    info["serving_mb"] = round(_du(default_root / "serving") / 1e6, 1)
    info["load_after"] = os.getloadavg()
    return {**info, "steps": steps, "ratios": ratios(steps)}


def _du(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def ratios(steps: dict) -> dict:
    out = {}
    if "full_ingest_single" in steps:
        out["ingest_speedup_default_vs_single"] = round(steps["full_ingest_single"]["wall_s"]
                                                        / steps["full_ingest"]["wall_s"], 2)
        out["attributes_speedup_default_vs_single"] = round(steps["attributes_full_single"]["wall_s"]
                                                            / steps["attributes_full"]["wall_s"], 2)
    if "attributes_incremental_day" not in steps:
        return out
    full, daily = steps["attributes_full"], steps["attributes_incremental_day"]
    out["daily_vs_full_attributes_wall"] = round(daily["wall_s"] / full["wall_s"], 3)
    out["daily_vs_full_attributes_cpu"] = round(daily["cpu_s"] / full["cpu_s"], 3)
    comp = steps["attributes_compaction_day"]
    out["compaction_day_vs_ordinary_day_attributes_wall"] = round(comp["wall_s"] / daily["wall_s"], 2)
    out["compaction_day_vs_ordinary_day_attributes_cpu"] = round(comp["cpu_s"] / daily["cpu_s"], 2)
    out["incremental_day_payload_bytes_read"] = steps["incremental"].get("analysis_bytes_read", {}).get("payload")
    return out


def growth(small: dict, large: dict) -> dict:
    out = {}
    for name, a in small["steps"].items():
        b = large["steps"].get(name)
        if b:
            out[name] = {"rss_growth": round(b["tree_rss_mb"] / a["tree_rss_mb"], 2),
                         "max_process_rss_growth": round(b["max_process_rss_mb"] / a["max_process_rss_mb"], 2),
                         "cpu_growth": round(b["cpu_s"] / max(a["cpu_s"], 1e-3), 2),
                         "wall_growth": round(b["wall_s"] / max(a["wall_s"], 1e-3), 2)}
    return out


def table(runs: list[dict]) -> str:
    lines = ["step | " + " | ".join(f"{r['tracks']:,} wall s / CPU s / tree RSS MB" for r in runs),
             "---|" * (len(runs) + 1)]
    for name in runs[0]["steps"]:
        cells = []
        for r in runs:
            s = r["steps"].get(name)
            cells.append(f"{s['wall_s']} / {s['cpu_s']} / {s['tree_rss_mb']}" if s else "-")
        lines.append(f"{name} | " + " | ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", nargs=2, metavar=("TASK", "DATE"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--real", action="store_true", help="real-size documents (use with --segments 800)")
    parser.add_argument("--segments", type=int, default=800)
    parser.add_argument("--no-compare", action="store_true", help="skip the single-process runs")
    parser.add_argument("--compare-only", action="store_true",
                        help="only the single-process vs default runs of the full ingest and attributes")
    parser.add_argument("--scratch", default=None, help="parent folder for the scratch data (default: $TMPDIR)")
    parser.add_argument("--buckets", type=int, default=BUCKETS, help="warehouse buckets (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (to profile a step afterwards)")
    parser.add_argument("--name", default=None, help="results file name (default: scale or scale_real)")
    parser.add_argument("--merge", nargs=2, metavar=("SMALL", "LARGE"),
                        help="combine two results files (e.g. scale_100k scale_1m) into --name with growth factors")
    args = parser.parse_args()
    if args.step:
        run_step(*args.step)
        return
    if args.merge:
        runs = [json.loads((RESULTS / f"{n}.json").read_text())["runs"][0] for n in args.merge]
        _save(args, runs)
        print(table(runs))
        return
    os.environ[BUCKETS_ENV] = str(args.buckets)
    runs = []
    for n in (int(s) for s in args.sizes.split(",")):
        scratch = tempfile.mkdtemp(prefix=f"bench-scale-{n}-", dir=args.scratch)
        try:
            runs.append({**sequence(n, Path(scratch), args.real, args.segments, compare=not args.no_compare,
                                    compare_only=args.compare_only), "buckets": args.buckets})
        finally:
            if args.keep:
                print(f"kept {scratch}", flush=True)
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        _save(args, runs)
    print(table(runs))


def _save(args, runs: list[dict]) -> None:
    payload = {"runs": runs}
    if len(runs) >= 2:
        payload["growth"] = growth(runs[0], runs[-1])
    RESULTS.mkdir(exist_ok=True)
    name = args.name or ("scale_real" if args.real else "scale")
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
