"""Publish a complete attributes snapshot to the online store: load, verify, index, flip, retire.

The one pure entry point is ``publish_snapshot(warehouse, date, store, index_dir, ...)``:

1. read the snapshot's manifest (an incomplete date fails here, before any write);
2. unless the version is already loaded and verified, drop what a killed run left of it, then
   stream the records bucket by bucket into ``store.load_version``; a tap collects the feature
   vectors on the way, so the records are read once and never held in memory;
3. ``verify_version`` against the manifest's record count: a short load stops here, readers
   still on the previous version;
4. build and save the similarity index (``index-<date>.npz``, atomic);
5. ``activate``: the single atomic pointer flip; readers see the new version from now on;
6. retire older versions (and their index files), keeping the new one and the one it replaced,
   so a bad snapshot can be rolled back with one ``activate``.

Every step is idempotent: a rerun after a kill at any point resumes, and a rerun after success
does nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import layout
from pipeline.manifest import Manifest
from pipeline.serving.errors import PublishError
from pipeline.serving.features import FeatureCollector
from pipeline.serving.similarity import SimilarityIndex, index_path
from pipeline.serving.stores.base import AttributeStore
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    """What a publish did; ``loaded`` is 0 when the version was already in the store."""

    version: str
    records: int
    loaded: int = 0
    previous: str | None = None
    index: Path | None = None
    dropped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    noop: bool = False


def snapshot_records(wh: Warehouse, date: dt.date, manifest: Manifest) -> Iterator[dict]:
    """Every record of a complete attributes date, bucket after bucket (sorted by id within each)."""
    for bucket in range(manifest.buckets):
        yield from wh.read_bucket(layout.ATTRIBUTES, date, bucket, manifest)


def is_published(store: AttributeStore, version: str, index_dir: str | Path) -> bool:
    """The version is the active one, verified, and its similarity index exists."""
    return (store.active_version() == version and store.is_verified(version)
            and index_path(index_dir, version).exists())


def publish_snapshot(wh: Warehouse, date: dt.date, store: AttributeStore, index_dir: str | Path,
                     batch_size: int = 1000, concurrency: int = 1, approximate: bool | None = None) -> PublishResult:
    """Make the attributes snapshot of ``date`` the store's active version (see the module docstring)."""
    version = layout.format_date(date)
    manifest = wh.manifest(layout.ATTRIBUTES, date, whole=True)
    result = PublishResult(version, manifest.records, index=index_path(index_dir, version))
    if is_published(store, version, index_dir):
        result.noop = True
        return result
    if not store.is_verified(version):
        _load_and_index(wh, date, manifest, store, result, batch_size, concurrency, approximate)
    elif not result.index.exists():  # verified earlier but killed before the index was saved
        _index_only(wh, date, manifest, result, approximate)
    started = time.perf_counter()
    result.previous = store.active_version()
    store.activate(version)
    result.dropped = retire(store, index_dir, keep={version, result.previous})
    result.seconds["activate"] = time.perf_counter() - started
    log.info("%s store: activated %s (%d records, previous %s, dropped %s)", store.kind, version,
             result.records, result.previous, result.dropped or "none")
    return result


def _load_and_index(wh: Warehouse, date: dt.date, manifest: Manifest, store: AttributeStore, result: PublishResult,
                    batch_size: int, concurrency: int, approximate: bool | None) -> None:
    version = result.version
    if version in store.versions():
        store.drop_version(version)  # leftovers of a killed load: start clean rather than trust them
    started = time.perf_counter()
    collector = FeatureCollector(result.records)
    result.loaded = store.load_version(version, collector.tap(snapshot_records(wh, date, manifest)),
                                       batch_size, concurrency)
    result.seconds["load"] = time.perf_counter() - started
    started = time.perf_counter()
    if not store.verify_version(version, result.records):
        raise PublishError(f"{store.kind} store: version {version} holds a different number of records than the "
                           f"{result.records} of {wh.layout.date_url(layout.ATTRIBUTES, date)}; "
                           "the active version is unchanged, rerun the publish")
    result.seconds["verify"] = time.perf_counter() - started
    _save_index(collector, result, approximate)


def _index_only(wh: Warehouse, date: dt.date, manifest: Manifest, result: PublishResult,
                approximate: bool | None) -> None:
    collector = FeatureCollector(result.records)
    for record in snapshot_records(wh, date, manifest):
        collector.add(record)
    _save_index(collector, result, approximate)


def _save_index(collector: FeatureCollector, result: PublishResult, approximate: bool | None) -> None:
    started = time.perf_counter()
    SimilarityIndex.build(collector.finish(), result.version, approximate=approximate).save(result.index)
    result.seconds["index"] = time.perf_counter() - started


def retire(store: AttributeStore, index_dir: str | Path, keep: set[str | None]) -> list[str]:
    """Drop every version older than the newest kept one, except ``keep``; returns the dropped versions.

    Newer versions are left alone: they may be a concurrent publish of a later date.
    """
    newest = max(v for v in keep if v is not None)
    dropped = [v for v in store.versions() if v not in keep and v < newest]
    for version in dropped:
        store.drop_version(version)
        index_path(index_dir, version).unlink(missing_ok=True)
    return dropped


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.serving.publish --date D`` publishes; ``--activate V`` rolls back to a kept version."""
    from pipeline.serving.config import serving
    from pipeline.serving.stores import store_from_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--date", type=layout.parse_date, help="attributes snapshot date to publish (YYYY-MM-DD)")
    group.add_argument("--activate", help="an already verified version to point readers at (rollback)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = serving()
    with store_from_config() as store:
        if args.activate:
            store.activate(args.activate)
            print(f"{store.kind} store: active version is now {args.activate}")
            return
        result = publish_snapshot(Warehouse.from_config(), args.date, store, cfg.index_dir, cfg.batch_size,
                                  cfg.concurrency)
        print(result)


if __name__ == "__main__":
    main()
