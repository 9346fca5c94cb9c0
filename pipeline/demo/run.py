"""``make demo``: the pipeline end to end on embedded defaults, on this machine, over loopback only.

It starts an S3-compatible server (SeaweedFS, a separate process on 127.0.0.1), seeds a synthetic
catalogue day by day, runs the real Luigi command line against it for each day, prints what
happened, and stops the server. Everything lands under ``var/demo/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import layout
from pipeline.demo.s3server import fake_credentials_env, running_s3_server, s3_client, server_kind
from pipeline.demo.seed import seed_bucket, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse

BUCKET, PREFIX = "echonest-demo", "analysis"
LAST_DATE = dt.date(2026, 11, 26)


@dataclass(frozen=True)
class Demo:
    state: Path
    tracks: int
    segments: int
    days: int
    chunks: int
    seed: int

    @property
    def warehouse_root(self) -> str:
        return f"file://{self.state / 'warehouse'}"

    @property
    def config_path(self) -> Path:
        return self.state / "luigi.cfg"

    def date(self, day: int) -> dt.date:
        return LAST_DATE - dt.timedelta(days=self.days - 1 - day)

    def write_config(self, endpoint: str) -> None:
        """The demo's layer over the repository's luigi.cfg (LUIGI_CONFIG_PATH puts it on top)."""
        self.config_path.write_text(
            f"[warehouse]\nroot = {self.warehouse_root}\nbuckets = {self.chunks}\n\n"
            f"[source]\nurl = s3://{BUCKET}/{PREFIX}/\nendpoint_url = {endpoint}\nconcurrency = 16\n\n"
            "[ingest]\nfailure_ratio = 0.05\n\n"
            "[compaction]\nevery_days = 3\n\n[retention]\nkeep_full = 2\n\n"
            f"[pipeline]\nstart_date = {layout.format_date(self.date(0))}\n\n"
            "[resources]\ns3_ingest = 2\n\n"
            f"[serving]\nstore = sqlite\nsqlite_path = {self.state / 'serving' / 'attributes.sqlite'}\n"
            f"index_dir = {self.state / 'serving'}\n")


def luigi_command(demo: Demo, task: str, *args: str) -> float:
    """Run ``luigi --module tasks TASK ...`` as an operator would; returns the seconds it took."""
    luigi_bin = Path(sys.executable).with_name("luigi")
    cmd = [str(luigi_bin), "--module", "tasks", task, *args, "--local-scheduler", "--workers", "2",
           "--log-level", "WARNING"]
    env = {**os.environ, **fake_credentials_env(), "LUIGI_CONFIG_PATH": str(demo.config_path)}
    print(f"$ luigi --module tasks {task} {' '.join(args)} --local-scheduler --workers 2")
    start = time.monotonic()
    result = subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parents[2], check=False)
    if result.returncode != 0:
        raise SystemExit(f"demo: `luigi --module tasks {task}` failed with exit code {result.returncode}")
    return time.monotonic() - start


def day_summary(wh: Warehouse, date: dt.date, seconds: float) -> dict:
    """One row of the per-day table, from the manifests of the day's analysis set."""
    kind, dataset = next((k, d) for k, d in (("full", layout.ANALYSIS_FULL), ("incr", layout.ANALYSIS_INCREMENTAL))
                         if wh.is_complete(d, date))
    manifest = wh.manifest(dataset, date)
    buckets = manifest.entries()
    counts, delta = manifest.counts, {}
    for b in buckets:
        for key, value in (b.delta or {}).items():
            delta[key] = delta.get(key, 0) + value
    downloaded = sum((b.requests or {}).get("bytes", 0) for b in buckets)
    fetch_seconds = sum(b.seconds or 0.0 for b in buckets)
    first = buckets[0].merge is None and kind == "full"
    return {"date": layout.format_date(date), "kind": "full (first ingest)" if first else
            ("full (compaction)" if kind == "full" else "incremental"),
            "new": delta.get("new", counts.get("ingested", 0)) if not first else counts.get("ingested", 0),
            "retried": delta.get("retried", 0), "ingested": counts.get("ingested", 0),
            "missing": counts.get("missing", 0), "invalid": counts.get("invalid", 0),
            "failed": counts.get("failed", 0), "records": manifest.records, "mb": manifest.bytes / 1e6,
            "tracks_per_s": counts.get("ingested", 0) / fetch_seconds if fetch_seconds else 0.0,
            "mb_per_s": downloaded / 1e6 / fetch_seconds if fetch_seconds else 0.0, "seconds": seconds}


def print_days(rows: list[dict]) -> None:
    print(f"\n{'date':<11} {'set':<19} {'new':>5} {'retried':>7} {'ingested':>8} {'missing':>7} {'invalid':>7} "
          f"{'failed':>6} {'set records':>11} {'set MB':>7} {'tracks/s':>8} {'MB/s':>6}")
    for r in rows:
        print(f"{r['date']:<11} {r['kind']:<19} {r['new']:>5} {r['retried']:>7} {r['ingested']:>8} {r['missing']:>7} "
              f"{r['invalid']:>7} {r['failed']:>6} {r['records']:>11} {r['mb']:>7.1f} {r['tracks_per_s']:>8.0f} "
              f"{r['mb_per_s']:>6.1f}")


def print_warehouse(wh: Warehouse) -> None:
    for dataset in (layout.ANALYSIS_FULL, layout.ANALYSIS_INCREMENTAL):
        dates = wh.complete_dates(dataset)
        size = sum(wh.manifest(dataset, d).bytes for d in dates) / 1e6
        print(f"  {dataset}: {len(dates)} date(s) kept, {size:.1f} MB: {', '.join(map(str, dates))}")


def print_attributes(wh: Warehouse, date: dt.date) -> None:
    """The attributes snapshot of the last day: counts, a few rows, and agreement on real documents."""
    manifest = wh.manifest(layout.ATTRIBUTES, date)
    print(f"\ndemo: attributes/{date}: {manifest.records} tracks ({manifest.mode} build), "
          f"{manifest.bytes / 1e3:.0f} kB, algorithm {manifest.algorithm_version}")
    rows = [r for b in range(3) for r in itertools.islice(wh.read_bucket(layout.ATTRIBUTES, date, b, manifest), 2)]
    print(f"  {'track':<22} {'tempo':>7} {'beat tempo':>10} {'key':>4} {'est key':>7} {'mode':>4} "
          f"{'loudness':>8} {'range dB':>8} {'seg/s':>6}")
    for r in rows:
        print(f"  {r['track_id']:<22} {_f(r['tempo'], 1):>7} {_f(r['beat_tempo'], 1):>10} {_f(r['key']):>4} "
              f"{_f(r['estimated_key']):>7} {_f(r['mode']):>4} {_f(r['loudness_mean'], 1):>8} "
              f"{_f(r['loudness_range'], 1):>8} {_f(r['segment_rate'], 2):>6}")
    fixtures = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "echonest-real"
    files = sorted(p for p in fixtures.glob("*.json") if not p.name.endswith(".features.json"))
    if files:
        from pipeline.attributes.agreement import agreement

        a = agreement(files)
        print(f"  agreement on {a['count']} real analyses ({fixtures}): beat-grid tempo within 2% of the "
              f"analyzer's: {a['tempo_within_2pct']:.1%}; estimated key = analyzer key: {a['key_agreement']:.1%}; "
              f"key and mode: {a['key_mode_agreement']:.1%}")
    else:
        print(f"  (no real fixtures at {fixtures}: agreement figures skipped)")


def query_service(demo: Demo, wh: Warehouse, date: dt.date) -> None:
    """Start the lookup API on loopback over the published snapshot and ask it what a service would."""
    import httpx

    from pipeline.serving.api import running_service

    serving = demo.state / "serving"
    track_id = next(wh.read_bucket(layout.ATTRIBUTES, date, 0))["track_id"]
    settings = {"store": "sqlite", "sqlite_path": serving / "attributes.sqlite"}
    with running_service(settings, serving, demo.state / "lookup-api.log") as base:
        print(f"\ndemo: lookup API on {base} (OpenAPI at {base}/docs)")
        print(f"  GET /snapshot -> {httpx.get(f'{base}/snapshot').json()}")
        attrs = httpx.get(f"{base}/tracks/{track_id}").json()
        print(f"  GET /tracks/{track_id} -> tempo {attrs['attributes']['beat_tempo']:.1f}, "
              f"key {attrs['attributes']['estimated_key']}, mode {attrs['attributes']['estimated_mode']}")
        similar = httpx.get(f"{base}/tracks/{track_id}/similar", params={"k": 3, "same_key": "true"}).json()
        print(f"  GET /tracks/{track_id}/similar?k=3&same_key=true -> "
              + ", ".join(f"{s['track_id']} ({s['score']:.3f})" for s in similar["similar"]))
        unknown, malformed = "0" * 22, "not-an-id"
        print(f"  GET /tracks/{unknown} -> HTTP {httpx.get(f'{base}/tracks/{unknown}').status_code}; "
              f"GET /tracks/{malformed} -> HTTP {httpx.get(f'{base}/tracks/{malformed}').status_code}")


def _f(value, digits: int = 0) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if digits else str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", default="var/demo", help="folder for the warehouse, config and logs")
    parser.add_argument("--tracks", type=int, default=400, help="tracks in the catalogue on day 0")
    parser.add_argument("--segments", type=int, default=150, help="mean segments per synthetic analysis")
    parser.add_argument("--days", type=int, default=7, help="days to simulate, ending on 2026-11-26")
    parser.add_argument("--chunks", type=int, default=8, help="ingest chunks (buckets)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    demo = Demo(Path(args.state).resolve(), args.tracks, args.segments, args.days, args.chunks, args.seed)
    shutil.rmtree(demo.state / "warehouse", ignore_errors=True)
    demo.state.mkdir(parents=True, exist_ok=True)
    wh = Warehouse(Layout(demo.warehouse_root), LocalStorage())
    sim = CatalogSimulation(seed=demo.seed, start_date=demo.date(0), initial_tracks=demo.tracks,
                            segments=demo.segments, reanalysed_ratio=0.005)
    print(f"demo: {demo.tracks} tracks, {demo.days} day(s) ending {LAST_DATE}, warehouse {demo.warehouse_root}")
    with running_s3_server(log_dir=str(demo.state)) as endpoint:
        print(f"demo: S3-compatible server ({server_kind()}) on {endpoint}")
        demo.write_config(endpoint)
        os.environ.update(fake_credentials_env())
        client = s3_client(endpoint)
        rows = []
        for day in range(demo.days):
            date = demo.date(day)
            seed_bucket(client, BUCKET, PREFIX, sim, day, since_day=day - 1 if day else None)
            write_metadata_dump(wh.layout, wh.storage, date, sim.day(day).rows)
            # the analysis set of the day (first ingest, incremental or compaction), then retention
            seconds = luigi_command(demo, "ApplyRetention", "--date", layout.format_date(date))
            rows.append(day_summary(wh, date, seconds))
        print_days(rows)
        print("demo: analysis sets in the warehouse after retention (keep_full = 2):")
        print_warehouse(wh)
        luigi_command(demo, "DailyAttributes", "--date", layout.format_date(LAST_DATE))
        print_attributes(wh, LAST_DATE)
        luigi_command(demo, "DailyAttributes", "--date", layout.format_date(LAST_DATE))  # a rerun: nothing to do
    luigi_command(demo, "PublishAttributes", "--date", layout.format_date(LAST_DATE))
    query_service(demo, wh, LAST_DATE)
    print("demo: S3 server and lookup service stopped; done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
