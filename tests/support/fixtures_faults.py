"""Shared pieces of the fault tests: a seeded source, isolated warehouses, and "is it whole?" checks.

Why a module of its own: every reliability test asks the same questions of a warehouse after
something went wrong — what can a reader see, is every published date whole, do the records equal
those of an undisturbed run — and they must be asked the same way everywhere, from what a reader
trusts (``_SUCCESS`` and the manifests), never from staging internals.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import luigi
import pytest

from pipeline import layout
from pipeline.demo.s3server import s3_client
from pipeline.demo.seed import seed_bucket, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.formats.avro_io import read_records
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse

FAULT_DATE = dt.date(2026, 11, 26)
PREFIX = "analysis"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SeededSource:
    """A bucket on the session's loopback S3 server holding one simulated day of analyses."""

    endpoint: str
    bucket: str
    sim: CatalogSimulation

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}/"

    @property
    def rows(self) -> list[dict]:
        return self.sim.day(0).rows


def seed_source(endpoint: str, tracks: int, seed: int = 11, segments: int = 24) -> SeededSource:
    """Seed a bucket with every outcome represented (missing, late, malformed, gzip).

    The bucket's name is a function of the arguments, never random: the fault proxy decides from the
    request path (bucket included), so a fixed name keeps the injected faults the same on every run.
    Seeding the same arguments twice puts the same objects again.
    """
    sim = CatalogSimulation(seed=seed, start_date=FAULT_DATE, initial_tracks=tracks, segments=segments,
                            late_ratio=0.05, never_ratio=0.03, malformed_ratio=0.04)
    bucket = f"faults-{tracks}-{seed}-{segments}"
    seed_bucket(s3_client(endpoint), bucket, PREFIX, sim, 0)
    return SeededSource(endpoint, bucket, sim)


@pytest.fixture(scope="module")
def fault_source(s3_endpoint: str) -> SeededSource:
    """300 tracks seeded once per module: enough that a 1 % fault rate hits every kind a few times."""
    return seed_source(s3_endpoint, tracks=300)


def overrides_for(root: Path | str, source: SeededSource, endpoint: str | None = None, **source_extra: object
                  ) -> dict[str, dict[str, object]]:
    """The config layer of one isolated warehouse reading ``source`` (through ``endpoint`` if given)."""
    return {
        "warehouse": {"buckets": 4, "root": f"file://{root}"},
        "source": {"url": source.url, "endpoint_url": endpoint or source.endpoint, "concurrency": 8,
                   "max_attempts": 5, "read_timeout": 5, "connect_timeout": 2, **source_extra},
        "ingest": {"failure_ratio": 0.01, "records_per_part": 32},
    }


def new_warehouse(root: Path | str, rows: list[dict], date: dt.date = FAULT_DATE) -> Warehouse:
    """A local warehouse at ``root`` holding only the metadata dump of ``date``."""
    wh = Warehouse(Layout(f"file://{root}"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, date, rows)
    return wh


def dataset_records(wh: Warehouse, dataset: str, date: dt.date = FAULT_DATE) -> list[dict]:
    """Every record of a published date, bucket by bucket, as a reader gets them."""
    manifest = wh.manifest(dataset, date)
    return [r for b in range(manifest.buckets) for r in wh.read_bucket(dataset, date, b, manifest)]


def visible(wh: Warehouse) -> dict[str, list[str]]:
    """What a reader can see: the date folders of every dataset (staging is hidden under ``_``)."""
    out = {}
    for dataset in layout.DATASETS:
        names = [n for n in wh.storage.list_names(wh.layout.dataset_url(dataset)) if not n.startswith("_")]
        if names:
            out[dataset] = names
    return out


def assert_published_whole(wh: Warehouse) -> int:
    """Every date folder a reader can see has ``_SUCCESS``, a manifest, and every file it names, whole.

    Each file is decoded to the end and its record count compared with the manifest, so a truncated
    or missing part behind a ``_SUCCESS`` fails here. Returns the number of dates checked.
    """
    checked = 0
    for dataset, names in visible(wh).items():
        for name in names:
            date = layout.parse_date(name)
            assert wh.is_complete(dataset, date), f"{dataset}/{name} is visible without {layout.SUCCESS}"
            manifest = wh.manifest(dataset, date)
            total = 0
            for bucket, entry in manifest.bucket_manifests.items():
                for f in entry.files:
                    url = wh.layout.file_url(dataset, date, f.name)
                    assert wh.storage.exists(url), f"{url} is named by the manifest but missing"
                    assert wh.storage.size(url) == f.bytes, f"{url} has the wrong size"
                    assert sum(1 for _ in read_records(wh.storage, url)) == f.records, url
                total += entry.records
                assert entry.records == sum(f.records for f in entry.files), f"{dataset} bucket {bucket}"
            assert total == manifest.records, f"{dataset}/{name}: bucket records do not add up"
            checked += 1
    return checked


def files_under(root: Path | str) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name


@contextlib.contextmanager
def luigi_failures() -> Iterator[list[tuple[str, BaseException]]]:
    """Collect ``(task_id, exception)`` of every task that fails in-process (luigi only logs them)."""
    failures: list[tuple[str, BaseException]] = []

    def record(task: luigi.Task, exc: BaseException) -> None:
        failures.append((task.task_id, exc))

    luigi.Task.event_handler(luigi.Event.FAILURE)(record)
    try:
        yield failures
    finally:
        luigi.Task._event_callbacks[luigi.Task][luigi.Event.FAILURE].discard(record)
