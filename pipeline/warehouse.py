"""The warehouse: datasets by date, their manifests, bucket commits and atomic publication.

The commit protocol follows Hadoop's output committer:

1. a chunk (task attempt) clears its bucket in the staging folder, writes its part
   files (each atomically) and, last, its bucket manifest — the bucket's commit;
2. the publish step (job commit) checks every bucket manifest and every file they
   name, writes the dataset manifest and ``_SUCCESS`` into staging, and moves the
   staging folder into place (an atomic rename on local disk and HDFS; on S3 a copy
   with ``_SUCCESS`` last).

Readers only trust dates with ``_SUCCESS`` and only read files the manifest names,
so a killed attempt never shows. Publishing twice is a no-op. Manifests are typed
(``pipeline.manifest``): this module is the only one that reads or writes their JSON.
A warehouse built from the configuration knows the configured bucket count and refuses
to read a dataset written with another one, instead of silently reading it wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fastavro

from pipeline import __version__, layout
from pipeline.errors import BucketCountError, IncompleteDatasetError, StorageError
from pipeline.formats import fingerprint, schema_fingerprint
from pipeline.formats.avro_io import read_records
from pipeline.layout import Layout
from pipeline.manifest import BucketManifest, Manifest, sum_counts
from pipeline.storage import Storage, join, storage_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Warehouse:
    layout: Layout
    storage: Storage
    buckets: int | None = None  # the configured bucket count every dataset read must have (None: unchecked)

    @classmethod
    def from_config(cls) -> Warehouse:
        from pipeline import config

        cfg = config.warehouse()
        lay = Layout(cfg.root, cfg.project, cfg.metadata_project)
        return cls(lay, storage_for(lay.root, cfg.s3_endpoint_url), config.warehouse().buckets)

    # -- completeness -------------------------------------------------------------------------
    def is_complete(self, dataset: str, date: dt.date) -> bool:
        return self.storage.exists(self.layout.success_url(dataset, date))

    def complete_dates(self, dataset: str) -> list[dt.date]:
        """Every complete date of a dataset from one listing.

        Where the storage renames atomically (local disk, HDFS) a date folder only appears by the
        rename of a staging folder that already holds ``_SUCCESS``, so the folder names suffice.
        Elsewhere (S3) a recursive listing (one request per 1,000 keys) finds the markers.
        """
        url = self.layout.dataset_url(dataset)
        if self.storage.atomic_rename:
            return layout.dates_in(self.storage.list_names(url))
        files = self.storage.list_files(url)
        return layout.dates_in([f.split("/")[0] for f in files if f.endswith("/" + layout.SUCCESS)])

    # -- manifests ----------------------------------------------------------------------------
    def read_json(self, url: str) -> dict:
        try:
            return json.loads(self.storage.read_bytes(url))
        except (OSError, StorageError) as exc:
            raise IncompleteDatasetError(f"cannot read {url}: {exc}") from exc
        except ValueError as exc:
            raise IncompleteDatasetError(f"{url} is not valid JSON: {exc}") from exc

    def write_json(self, url: str, payload: dict) -> None:
        self.storage.write_bytes(url, json.dumps(payload, indent=1, sort_keys=True).encode("utf-8"))

    def load_manifest(self, dataset: str, date: dt.date) -> Manifest:
        """The manifest of a dataset date as it is, whatever its bucket count (for views and sizes)."""
        url = self.layout.manifest_url(dataset, date)
        return Manifest.from_json(self.read_json(url), url)

    def manifest(self, dataset: str, date: dt.date, whole: bool = False) -> Manifest:
        """The manifest of a complete dataset date, to read its data.

        ``IncompleteDatasetError`` when the date is not complete; ``BucketCountError`` when it was
        written with another bucket count than this warehouse's (its bucket ``b`` holds other tracks
        than bucket ``b`` of today's datasets), unless the caller reads it ``whole`` (every bucket,
        joined with nothing), which is correct whatever its count.
        """
        if not self.is_complete(dataset, date):
            raise IncompleteDatasetError(
                f"{self.layout.date_url(dataset, date)} is not complete (no {layout.SUCCESS})")
        manifest = self.load_manifest(dataset, date)
        if not whole and self.buckets is not None and manifest.buckets != self.buckets:
            raise BucketCountError(
                f"{self.layout.date_url(dataset, date)} was written with {manifest.buckets} buckets but "
                f"[warehouse] buckets = {self.buckets}: its buckets hold other tracks, so it cannot be read with "
                f"this configuration. Set the bucket count back to {manifest.buckets}, or start a new chain "
                "(docs/runbook.md, \"Change the number of buckets\").")
        return manifest

    # -- bucket commits (staging) -------------------------------------------------------------
    def bucket_committed(self, dataset: str, date: dt.date, bucket: int) -> bool:
        return self.storage.exists(self.layout.bucket_manifest_url(dataset, date, bucket))

    def clear_bucket(self, dataset: str, date: dt.date, bucket: int) -> None:
        """Remove what an earlier (killed) attempt left of a bucket in staging."""
        staging = self.layout.date_url(dataset, date, staging=True)
        prefix = f"part-{layout.bucket_name(bucket)}-"
        for name in self.storage.list_names(staging):
            if name.startswith(prefix):
                self.storage.remove(join(staging, name))
        self.storage.remove(self.layout.index_url(dataset, date, bucket))
        self.storage.remove(self.layout.record_index_url(dataset, date, bucket))
        self.storage.remove(self.layout.bucket_manifest_url(dataset, date, bucket))
        slices = self.layout.slices_url(dataset, date)
        for name in self.storage.list_names(slices):  # what a map-only ingest job left of the bucket
            if name.startswith(layout.bucket_name(bucket) + "-"):
                self.storage.remove(join(slices, name))

    def commit_bucket(self, dataset: str, date: dt.date, entry: BucketManifest) -> None:
        """Write the bucket manifest: from now on the bucket counts as done."""
        self.write_json(self.layout.bucket_manifest_url(dataset, date, entry.bucket), entry.as_json())

    def staged_bucket(self, dataset: str, date: dt.date, bucket: int) -> BucketManifest:
        """The manifest of a bucket committed in staging."""
        url = self.layout.bucket_manifest_url(dataset, date, bucket)
        return BucketManifest.from_json(self.read_json(url), url)

    def committed_bucket(self, dataset: str, date: dt.date, bucket: int) -> BucketManifest | None:
        """The bucket's manifest if it is already committed (or its date published), else None.

        A chunk's ``complete()`` is asked when the worker schedules it, not when it runs: without a
        central scheduler another worker may commit the bucket in between. Clearing a committed bucket
        while that worker publishes the date would publish it with files missing, so a committed
        bucket is never rebuilt (delete its ``_buckets`` manifest to force that).
        """
        if self.is_complete(dataset, date):
            return self.manifest(dataset, date).bucket(bucket)
        if self.bucket_committed(dataset, date, bucket):
            log.warning("%s %s bucket %d is already committed (another worker?): not rebuilding it",
                        dataset, layout.format_date(date), bucket)
            return self.staged_bucket(dataset, date, bucket)
        return None

    def bucket_manifests(self, dataset: str, date: dt.date, buckets: int) -> list[BucketManifest]:
        return [self.staged_bucket(dataset, date, b) for b in range(buckets)]

    # -- publication ----------------------------------------------------------------------------
    def publish(self, dataset: str, date: dt.date, schema_name: str, buckets: int,
                gate: Callable[[list[BucketManifest]], None] | None = None, **details) -> Manifest:
        """Verify the staged buckets, pass the quality ``gate``, publish the date atomically; idempotent.

        ``details`` are the dataset's own manifest fields (``kind``, ``inputs``, ``mode``, ...).
        """
        if self.is_complete(dataset, date):
            return self.manifest(dataset, date)
        staged = self.bucket_manifests(dataset, date, buckets)
        for entry in staged:
            self._verify_files(dataset, date, entry)
        if gate is not None:
            gate(staged)
        manifest = Manifest(
            dataset=dataset, date=date, schema=schema_name, schema_fingerprint=fingerprint(schema_name),
            code_version=__version__, buckets=buckets, records=sum(e.records for e in staged),
            bytes=sum(e.bytes for e in staged), counts=sum_counts(e.counts for e in staged),
            bucket_manifests={e.bucket: e for e in staged}, **details)
        staging = self.layout.date_url(dataset, date, staging=True)
        self.remove_temporaries(staging)
        self.storage.remove(join(staging, layout.SLICES))  # the (empty) working folder of map-only ingest jobs
        self.write_json(self.layout.manifest_url(dataset, date, staging=True), manifest.as_json())
        self.storage.write_bytes(self.layout.success_url(dataset, date, staging=True), b"")
        if not (self.storage.atomic_rename or self.storage.consistent_listing):
            raise StorageError(f"{type(self.storage).__name__} can neither rename a folder atomically nor list "
                               f"consistently: publishing {dataset} {date} by copy could leave files behind")
        final = self.layout.date_url(dataset, date)
        if self.storage.exists(final):
            if self.is_complete(dataset, date):  # another worker published it while this one verified
                return self.manifest(dataset, date)
            self.storage.remove(final)  # a half-copied S3 publish or a stray folder: never complete
        try:
            self.storage.move_tree(staging, final, last=layout.SUCCESS)
        except StorageError:
            if self.is_complete(dataset, date):  # another worker published the same date first
                return self.manifest(dataset, date)
            raise
        return manifest

    def remove_temporaries(self, staging: str) -> None:
        """Remove what killed writers left in a staging date: every ``_temporary`` folder, at any depth.

        Atomic writers put their temporary file in a ``_temporary`` folder next to the target (so also
        ``_index/_temporary`` and ``_buckets/_temporary``); a ``kill -9`` leaves it there, and without
        this it would be published with the date.
        """
        folders = {join(staging, *sub, layout.TEMPORARY) for sub in ((), ("_index",), ("_buckets",))}
        for rel in self.storage.list_files(staging):
            parts = rel.split("/")
            if layout.TEMPORARY in parts[:-1]:
                folders.add(join(staging, *parts[:parts.index(layout.TEMPORARY) + 1]))
        for url in sorted(folders):
            self.storage.remove(url)

    def _verify_files(self, dataset: str, date: dt.date, entry: BucketManifest) -> None:
        for f in entry.files:
            url = self.layout.file_url(dataset, date, f.name, staging=True)
            if not self.storage.exists(url) or self.storage.size(url) != f.bytes:
                raise IncompleteDatasetError(f"staged file {url} is missing or has the wrong size; "
                                             f"rerun chunk {entry.bucket} of {dataset} {date}")

    def staged_schema_fingerprint(self, dataset: str, date: dt.date, entry: BucketManifest) -> str | None:
        """Fingerprint of the schema written in the first staged file of a bucket (one header read)."""
        if not entry.files:
            return None
        url = self.layout.file_url(dataset, date, entry.files[0].name, staging=True)
        with self.storage.open_read(url) as f:
            return schema_fingerprint(fastavro.reader(f).writer_schema)

    def remove_date(self, dataset: str, date: dt.date) -> None:
        """Unpublish a date: ``_SUCCESS`` goes first, so a reader never sees it half-deleted."""
        self.storage.remove(self.layout.success_url(dataset, date))
        self.storage.remove(self.layout.date_url(dataset, date))

    # -- reading --------------------------------------------------------------------------------
    def bucket_files(self, dataset: str, date: dt.date, bucket: int, manifest: Manifest | None = None) -> list[str]:
        entry = (manifest or self.manifest(dataset, date)).bucket(bucket)
        return [self.layout.file_url(dataset, date, f.name) for f in entry.files]

    def read_bucket(self, dataset: str, date: dt.date, bucket: int,
                    manifest: Manifest | None = None) -> Iterator[dict]:
        """Stream one bucket's records in track id order."""
        for url in self.bucket_files(dataset, date, bucket, manifest):
            yield from read_records(self.storage, url)

    def read_index(self, dataset: str, date: dt.date, bucket: int,
                   manifest: Manifest | None = None) -> Iterator[dict]:
        """Stream one bucket's id index ({track_id, source_updated_at}) without touching payloads."""
        entry = (manifest or self.manifest(dataset, date)).bucket(bucket)
        if entry.index:
            yield from read_records(self.storage, self.layout.file_url(dataset, date, entry.index))
