"""Shared harness of the benchmarks: a loopback S3 server, a seeded catalogue, a scratch warehouse.

Benchmarks report ratios measured in one run against a baseline on the same machine and the
same server, never absolute timings asserted in tests (these machines are shared and noisy).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.demo.s3server import fake_credentials_env, running_s3_server, s3_client
from pipeline.demo.seed import seed_bucket, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse

DATE = dt.date(2026, 11, 26)
BUCKET, PREFIX = "bench", "analysis"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class World:
    endpoint: str
    sim: CatalogSimulation
    wh: Warehouse
    scratch: Path
    seeded: dict

    def overrides(self, **sections) -> dict:
        base = {"warehouse": {"root": self.wh.layout.root},
                "source": {"url": f"s3://{BUCKET}/{PREFIX}/", "endpoint_url": self.endpoint}}
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values}
        return base


@contextlib.contextmanager
def world(tracks: int, segments: int, seed: int = 5, latency_ms: float = 0.0, **sim_kwargs) -> Iterator[World]:
    """The loopback S3 server (SeaweedFS; moto with ``ECHONEST_S3_SERVER=moto``) seeded with ``tracks``
    synthetic analyses, and the dump of day 0. ``latency_ms`` needs moto; with SeaweedFS put
    ``pipeline.demo.latency_relay`` in front instead."""
    os.environ.update(fake_credentials_env())
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, \
            running_s3_server(log_dir=scratch, latency_ms=latency_ms) as endpoint:
        kwargs = {"late_ratio": 0.0, "never_ratio": 0.0, "malformed_ratio": 0.0, **sim_kwargs}
        sim = CatalogSimulation(seed=seed, start_date=DATE, initial_tracks=tracks, segments=segments, **kwargs)
        seeded = seed_bucket(s3_client(endpoint), BUCKET, PREFIX, sim, 0, decoys=0)
        wh = Warehouse(Layout(f"file://{scratch}/warehouse"), LocalStorage())
        write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
        yield World(endpoint, sim, wh, Path(scratch), seeded)


@contextlib.contextmanager
def timer() -> Iterator[dict]:
    out: dict = {}
    start = time.perf_counter()
    yield out
    out["seconds"] = time.perf_counter() - start


def save(name: str, payload: dict) -> None:
    """Keep the raw numbers next to the benchmarks (docs/performance.md quotes them)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    print(json.dumps(payload, indent=1, sort_keys=True))
