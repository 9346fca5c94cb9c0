"""Publish an attributes snapshot to the online store as a new version: full load or daily changes.

The one pure entry point is ``publish_snapshot(warehouse, date, store, index_dir, ...)``:

1. read the snapshot's manifest (an incomplete date fails here, before any write);
2. choose the mode (``choose_parent``): **daily** when the store's newest version is the
   warehouse date this one can be diffed against (same algorithm, record indexes on both) and
   the changes accumulated since its full load stay under ``full_threshold``; **full** otherwise
   or on demand (``full=True``). Periodic full loads bound the drift, like compaction;
3. register the version and stream the writes into ``store.apply``: the changed tracks only
   (daily) or every record (full), bucket by bucket. The features of what is written go to a
   spill file on disk, never to a catalogue-sized array;
4. ``verify_version``: the new version must hold exactly the manifest's record count. A short
   load stops here, readers still on the previous version;
5. build the similarity index folder (full: a new base segment; daily: a delta segment over the
   parent's base) and rename it into place;
6. ``activate``: the single atomic pointer flip; readers see the new version from now on;
7. retire older versions (and index folders nobody uses), keeping the new one and the one it
   replaced, so a bad snapshot is rolled back with one ``activate``; after a full load, collect
   the rows' cells no kept version sees.

Every step is idempotent: a rerun after a kill at any point resumes (applying a change again
writes the same row), and a rerun after success does nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import layout
from pipeline.manifest import Manifest
from pipeline.serving.changes import bucket_changes, diffable, full_records
from pipeline.serving.daily_delta import DailyDelta
from pipeline.serving.errors import PublishError
from pipeline.serving.features import RowSpill
from pipeline.serving.similarity import SimilarityIndex, index_path, write_daily, write_full
from pipeline.serving.stores.base import AttributeStore
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)
FULL_THRESHOLD = 0.25  # a daily version whose changes since the full load pass this share of records -> full load


@dataclass
class PublishResult:
    """What a publish did; ``loaded`` is the number of rows written (0 when the version was already there)."""

    version: str
    records: int
    mode: str = "full"
    parent: str | None = None
    loaded: int = 0
    previous: str | None = None
    index: Path | None = None
    dropped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    noop: bool = False


def snapshot_records(wh: Warehouse, date: dt.date, manifest: Manifest):
    """Every record of a complete attributes date, bucket after bucket (sorted by id within each)."""
    for bucket in range(manifest.buckets):
        yield from wh.read_bucket(layout.ATTRIBUTES, date, bucket, manifest)


def is_published(store: AttributeStore, version: str, index_dir: str | Path) -> bool:
    """The version is the active one, verified, and its similarity index exists."""
    return (store.active_version() == version and store.is_verified(version)
            and (index_path(index_dir, version) / "meta.json").exists())


def choose_parent(wh: Warehouse, date: dt.date, store: AttributeStore, index_dir: str | Path, full: bool = False,
                  full_threshold: float = FULL_THRESHOLD) -> tuple[str | None, str]:
    """(the parent version a daily publish builds on, or None for a full load; why)."""
    version = layout.format_date(date)
    later = [v for v in store.versions() if v > version]
    if later:
        raise PublishError(f"{store.kind} store already holds the later version(s) {', '.join(later)}; "
                           f"to serve {version} again use --activate {version} if it is kept")
    if full:
        return None, "full load asked for"
    older = [v for v in store.versions() if v < version]
    if not older:
        return None, "no earlier version in the store"
    parent = max(older)
    if not store.is_verified(parent):
        return None, f"the newest earlier version {parent} is not verified"
    meta_path = index_path(index_dir, parent) / "meta.json"
    if not meta_path.exists():
        return None, f"the index of {parent} is missing"
    meta = json.loads(meta_path.read_text())
    if meta["drift"] > full_threshold * max(1, meta["records"]):
        return None, f"{meta['drift']} changes since the full load {meta['base']} pass {full_threshold:.0%}"
    why = diffable(wh, layout.parse_date(parent), date)
    if why:
        return None, why
    return parent, f"daily changes since {parent}"


def publish_snapshot(wh: Warehouse, date: dt.date, store: AttributeStore, index_dir: str | Path,
                     batch_size: int = 1000, concurrency: int = 1, full: bool = False,
                     full_threshold: float = FULL_THRESHOLD) -> PublishResult:
    """Make the attributes snapshot of ``date`` the store's active version (see the module docstring)."""
    version = layout.format_date(date)
    manifest = wh.manifest(layout.ATTRIBUTES, date, whole=True)
    result = PublishResult(version, manifest.records, index=index_path(index_dir, version))
    if is_published(store, version, index_dir):
        result.noop, result.mode = True, "full" if store.base_of(version) == version else "daily"
        return result
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    if store.is_verified(version):  # killed after verify: the version's mode is in the registry
        base = store.base_of(version)
        result.parent = None if base == version else max(v for v in store.versions() if v < version)
        result.mode = "full" if result.parent is None else "daily"
    else:
        result.parent, why = choose_parent(wh, date, store, index_dir, full, full_threshold)
        result.mode = "full" if result.parent is None else "daily"
        log.info("%s store: publishing %s as a %s load (%s)", store.kind, version, result.mode, why)
    with tempfile.TemporaryDirectory(prefix=".publish-", dir=index_dir) as scratch:
        if result.mode == "full":
            _full(wh, date, manifest, store, result, Path(scratch), batch_size, concurrency)
        else:
            _daily(wh, date, manifest, store, result, Path(index_dir), Path(scratch), batch_size, concurrency)
    started = time.perf_counter()
    result.previous = store.active_version()
    store.activate(version)
    result.dropped = retire(store, index_dir, keep={version, result.previous})
    if result.mode == "full" and result.loaded:
        store.collect_garbage()
    result.seconds["activate"] = time.perf_counter() - started
    log.info("%s store: activated %s (%s, %d records, %d rows written, previous %s, dropped %s)", store.kind, version,
             result.mode, result.records, result.loaded, result.previous, result.dropped or "none")
    return result


def _full(wh: Warehouse, date: dt.date, manifest: Manifest, store: AttributeStore, result: PublishResult,
          scratch: Path, batch_size: int, concurrency: int) -> None:
    version = result.version
    spill = RowSpill(str(scratch / "rows.spill"))

    def writes():
        for bucket in range(manifest.buckets):
            for record, raw in full_records(wh, date, manifest, bucket):
                spill.add(record)
                yield record["track_id"], raw
            spill.end_bucket()

    started = time.perf_counter()
    if not store.is_verified(version):
        if store.base_of(version) != version:
            store.begin_version(version, version)
        result.loaded = store.apply(version, writes(), batch_size, concurrency)
        spill.close()
        result.seconds["load"] = time.perf_counter() - started
        started = time.perf_counter()
        if not store.verify_version(version, result.records):
            raise _short(store, wh, date, result)
        result.seconds["verify"] = time.perf_counter() - started
    else:
        for _ in writes():
            pass
        spill.close()
    started = time.perf_counter()
    write_full(spill.path, spill.n, spill.bucket_offsets, result.index, version)  # type: ignore[arg-type]
    result.seconds["index"] = time.perf_counter() - started


def _short(store: AttributeStore, wh: Warehouse, date: dt.date, result: PublishResult) -> PublishError:
    return PublishError(f"{store.kind} store: version {result.version} holds a different number of records than the "
                        f"{result.records} of {wh.layout.date_url(layout.ATTRIBUTES, date)}; the active version is "
                        "unchanged, rerun the publish")


def _daily(wh: Warehouse, date: dt.date, manifest: Manifest, store: AttributeStore, result: PublishResult,
           index_dir: Path, scratch: Path, batch_size: int, concurrency: int) -> None:
    version, parent = result.version, result.parent
    assert parent is not None
    parent_date = layout.parse_date(parent)
    parent_index = SimilarityIndex.open(index_path(index_dir, parent))
    delta = DailyDelta(parent_index, scratch, manifest.buckets)
    counts = {"added": 0, "changed": 0, "dropped": 0}
    changed_ids = scratch / "changed.ids"  # for the verification: on disk, not in memory

    def writes():
        with open(changed_ids, "w", encoding="ascii") as ids:
            for bucket in range(manifest.buckets):
                delta.start_bucket(bucket)
                for chunk in bucket_changes(wh, parent_date, date, bucket):  # streamed: a part at a time
                    for change in chunk:
                        counts[change.kind] += 1
                        ids.write(change.track_id + "\n")
                        yield change.track_id, change.raw
                    delta.add(chunk)
                delta.end_bucket()

    started = time.perf_counter()
    if not store.is_verified(version):
        base = store.base_of(parent)
        if store.base_of(version) != base:
            store.begin_version(version, base)  # type: ignore[arg-type]
        result.loaded = store.apply(version, writes(), batch_size, concurrency)
        result.seconds["load"] = time.perf_counter() - started
        started = time.perf_counter()
        with open(changed_ids, encoding="ascii") as ids:
            if not store.verify_version(version, result.records, changed=(line.rstrip("\n") for line in ids),
                                        parent=parent):
                raise _short(store, wh, date, result)
        result.seconds["verify"] = time.perf_counter() - started
    else:
        for _ in writes():
            pass
    started = time.perf_counter()
    n, dead, drift = delta.finish()
    write_daily(delta.spill.path, n, delta.spill.bucket_offsets, dead, parent_index, result.index,  # type: ignore[arg-type]
                version, result.records, drift)
    result.seconds["index"] = time.perf_counter() - started
    log.info("%s: %d added, %d changed, %d dropped since %s", version, counts["added"], counts["changed"],
             counts["dropped"], parent)


def retire(store: AttributeStore, index_dir: str | Path, keep: set[str | None]) -> list[str]:
    """Drop every version older than the newest kept one, except ``keep``; returns the dropped versions.

    Newer versions are left alone. An index folder goes when no kept version's index uses it (a
    daily version's index reads its base's folder).
    """
    newest = max(v for v in keep if v is not None)
    dropped = [v for v in store.versions() if v not in keep and v < newest]
    for version in dropped:
        store.drop_version(version)
    used = set()
    for version in store.versions():
        meta = index_path(index_dir, version) / "meta.json"
        if meta.exists():
            used |= {f"index-{version}", json.loads(meta.read_text())["base_dir"]}
    for folder in Path(index_dir).glob("index-*"):
        version = folder.name[len("index-"):]
        if folder.name not in used and version < newest and version not in store.versions():
            shutil.rmtree(folder, ignore_errors=True)
    return dropped


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.serving.publish --date D [--full]`` publishes; ``--activate V`` rolls back."""
    from pipeline.serving.config import serving
    from pipeline.serving.stores import store_from_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--date", type=layout.parse_date, help="attributes snapshot date to publish (YYYY-MM-DD)")
    group.add_argument("--activate", help="an already verified version to point readers at (rollback)")
    parser.add_argument("--full", action="store_true", help="load every record (a new base) instead of the changes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = serving()
    with store_from_config() as store:
        if args.activate:
            store.activate(args.activate)
            print(f"{store.kind} store: active version is now {args.activate}")
            return
        result = publish_snapshot(Warehouse.from_config(), args.date, store, cfg.index_dir, cfg.batch_size,
                                  cfg.concurrency, full=args.full, full_threshold=cfg.full_threshold)
        print(result)


if __name__ == "__main__":
    main()
