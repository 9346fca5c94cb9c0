"""``make demo``: the pipeline end to end on embedded defaults, on this machine, over loopback only.

It starts an S3-compatible server (moto, a separate process on 127.0.0.1), seeds a synthetic
catalogue day by day, runs the real Luigi command line against it for each day, prints what
happened, and stops the server. Everything lands under ``var/demo/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import layout
from pipeline.demo.s3server import fake_credentials_env, running_s3_server, s3_client
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
            f"[warehouse]\nroot = {self.warehouse_root}\n\n"
            f"[source]\nurl = s3://{BUCKET}/{PREFIX}/\nendpoint_url = {endpoint}\nconcurrency = 16\n\n"
            f"[ingest]\nchunks = {self.chunks}\nfailure_ratio = 0.05\n\n"
            f"[pipeline]\nstart_date = {layout.format_date(self.date(0))}\n\n"
            "[resources]\ns3_ingest = 2\n")


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


def ingest_summary(wh: Warehouse, dataset: str, date: dt.date, seconds: float) -> str:
    manifest = wh.manifest(dataset, date)
    counts = manifest["counts"]
    buckets = manifest["bucket_manifests"].values()
    files = sum(len(b["files"]) for b in buckets)
    downloaded = sum(b.get("requests", {}).get("bytes", 0) for b in buckets)
    fetch_seconds = sum(b.get("seconds", 0.0) for b in buckets) or seconds
    return (f"  {dataset} {date}: ingested {counts.get('ingested', 0)}, missing {counts.get('missing', 0)}, "
            f"invalid {counts.get('invalid', 0)}, failed {counts.get('failed', 0)}\n"
            f"  {files} Avro files, {manifest['bytes'] / 1e6:.1f} MB written from {downloaded / 1e6:.1f} MB "
            f"downloaded; {counts.get('ingested', 0) / fetch_seconds:.0f} tracks/s, "
            f"{downloaded / 1e6 / fetch_seconds:.1f} MB/s while fetching ({seconds:.1f}s wall with start-up)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", default="var/demo", help="folder for the warehouse, config and logs")
    parser.add_argument("--tracks", type=int, default=400, help="tracks in the catalogue on day 0")
    parser.add_argument("--segments", type=int, default=150, help="mean segments per synthetic analysis")
    parser.add_argument("--days", type=int, default=1, help="days to simulate, ending on 2026-11-26")
    parser.add_argument("--chunks", type=int, default=8, help="ingest chunks (buckets)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    demo = Demo(Path(args.state).resolve(), args.tracks, args.segments, args.days, args.chunks, args.seed)
    shutil.rmtree(demo.state / "warehouse", ignore_errors=True)
    demo.state.mkdir(parents=True, exist_ok=True)
    wh = Warehouse(Layout(demo.warehouse_root), LocalStorage())
    sim = CatalogSimulation(seed=demo.seed, start_date=demo.date(0), initial_tracks=demo.tracks,
                            segments=demo.segments)
    print(f"demo: {demo.tracks} tracks, {demo.days} day(s) ending {LAST_DATE}, warehouse {demo.warehouse_root}")
    with running_s3_server(log_dir=str(demo.state)) as endpoint:
        print(f"demo: S3-compatible server (moto) on {endpoint}")
        demo.write_config(endpoint)
        os.environ.update(fake_credentials_env())
        client = s3_client(endpoint)
        for day in range(demo.days):
            date = demo.date(day)
            seed_bucket(client, BUCKET, PREFIX, sim, day, since_day=day - 1 if day else None)
            write_metadata_dump(wh.layout, wh.storage, date, sim.day(day).rows)
            seconds = luigi_command(demo, "IngestFullSnapshot", "--date", layout.format_date(date))
            print(ingest_summary(wh, layout.ANALYSIS_FULL, date, seconds))
    print("demo: S3 server stopped; done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
