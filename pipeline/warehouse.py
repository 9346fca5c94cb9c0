"""The warehouse: datasets by date, their manifests, bucket commits and atomic publication.

The commit protocol follows Hadoop's output committer:

1. a chunk (task attempt) clears its bucket in the staging folder, writes its part
   files (each atomically) and, last, its bucket manifest — the bucket's commit;
2. the publish step (job commit) checks every bucket manifest and every file they
   name, writes the dataset manifest and ``_SUCCESS`` into staging, and moves the
   staging folder into place (an atomic rename on local disk and HDFS; on S3 a copy
   with ``_SUCCESS`` last).

Readers only trust dates with ``_SUCCESS`` and only read files the manifest names,
so a killed attempt never shows. Publishing twice is a no-op.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fastavro

from pipeline import __version__, layout
from pipeline.errors import IncompleteDatasetError, StorageError
from pipeline.formats import fingerprint, schema_fingerprint
from pipeline.formats.avro_io import read_records
from pipeline.layout import Layout
from pipeline.storage import Storage, join, storage_for


@dataclass(frozen=True)
class Warehouse:
    layout: Layout
    storage: Storage

    @classmethod
    def from_config(cls) -> Warehouse:
        from pipeline import config

        cfg = config.warehouse()
        lay = Layout(cfg.root, cfg.project, cfg.metadata_project)
        return cls(lay, storage_for(lay.root, cfg.s3_endpoint_url))

    # -- completeness -------------------------------------------------------------------------
    def is_complete(self, dataset: str, date: dt.date) -> bool:
        return self.storage.exists(self.layout.success_url(dataset, date))

    def complete_dates(self, dataset: str) -> list[dt.date]:
        """Every complete date of a dataset from one listing.

        On local disk and HDFS a date folder only appears by an atomic rename of a
        staging folder that already holds ``_SUCCESS``, so the folder names suffice.
        On S3 a recursive listing (one request per 1,000 keys) finds the markers.
        """
        url = self.layout.dataset_url(dataset)
        if url.startswith("s3://"):
            files = self.storage.list_files(url)
            return layout.dates_in([f.split("/")[0] for f in files if f.endswith("/" + layout.SUCCESS)])
        return layout.dates_in(self.storage.list_names(url))

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

    def manifest(self, dataset: str, date: dt.date) -> dict:
        """The manifest of a complete dataset date; ``IncompleteDatasetError`` otherwise."""
        if not self.is_complete(dataset, date):
            raise IncompleteDatasetError(
                f"{self.layout.date_url(dataset, date)} is not complete (no {layout.SUCCESS})")
        return self.read_json(self.layout.manifest_url(dataset, date))

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

    def commit_bucket(self, dataset: str, date: dt.date, bucket: int, info: dict) -> None:
        """Write the bucket manifest: from now on the bucket counts as done."""
        self.write_json(self.layout.bucket_manifest_url(dataset, date, bucket), {"bucket": bucket, **info})

    def bucket_manifests(self, dataset: str, date: dt.date, buckets: int) -> list[dict]:
        return [self.read_json(self.layout.bucket_manifest_url(dataset, date, b)) for b in range(buckets)]

    # -- publication ----------------------------------------------------------------------------
    def publish(self, dataset: str, date: dt.date, schema_name: str, buckets: int,
                gate: Callable[[list[dict]], None] | None = None, **extra) -> dict:
        """Verify the staged buckets, pass the quality ``gate``, publish the date atomically; idempotent."""
        if self.is_complete(dataset, date):
            return self.manifest(dataset, date)
        staged = self.bucket_manifests(dataset, date, buckets)
        for entry in staged:
            self._verify_files(dataset, date, entry)
        if gate is not None:
            gate(staged)
        manifest = {
            "dataset": dataset, "date": layout.format_date(date), "schema": schema_name,
            "schema_fingerprint": fingerprint(schema_name), "code_version": __version__,
            "buckets": buckets, "records": sum(e["records"] for e in staged),
            "bytes": sum(e["bytes"] for e in staged),
            "counts": _sum_counts(e.get("counts", {}) for e in staged),
            "bucket_manifests": {layout.bucket_name(e["bucket"]): e for e in staged}, **extra,
        }
        staging = self.layout.date_url(dataset, date, staging=True)
        self.storage.remove(join(staging, layout.TEMPORARY))  # leftovers of killed writers
        self.write_json(self.layout.manifest_url(dataset, date, staging=True), manifest)
        self.storage.write_bytes(self.layout.success_url(dataset, date, staging=True), b"")
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

    def _verify_files(self, dataset: str, date: dt.date, entry: dict) -> None:
        for f in entry["files"]:
            url = self.layout.file_url(dataset, date, f["name"], staging=True)
            if not self.storage.exists(url) or self.storage.size(url) != f["bytes"]:
                raise IncompleteDatasetError(f"staged file {url} is missing or has the wrong size; "
                                             f"rerun chunk {entry['bucket']} of {dataset} {date}")

    def staged_schema_fingerprint(self, dataset: str, date: dt.date, entry: dict) -> str | None:
        """Fingerprint of the schema written in the first staged file of a bucket (one header read)."""
        if not entry["files"]:
            return None
        url = self.layout.file_url(dataset, date, entry["files"][0]["name"], staging=True)
        with self.storage.open_read(url) as f:
            return schema_fingerprint(fastavro.reader(f).writer_schema)

    def remove_date(self, dataset: str, date: dt.date) -> None:
        """Unpublish a date: ``_SUCCESS`` goes first, so a reader never sees it half-deleted."""
        self.storage.remove(self.layout.success_url(dataset, date))
        self.storage.remove(self.layout.date_url(dataset, date))

    # -- reading --------------------------------------------------------------------------------
    def bucket_files(self, dataset: str, date: dt.date, bucket: int, manifest: dict | None = None) -> list[str]:
        manifest = manifest or self.manifest(dataset, date)
        entry = manifest["bucket_manifests"][layout.bucket_name(bucket)]
        return [self.layout.file_url(dataset, date, f["name"]) for f in entry["files"]]

    def read_bucket(self, dataset: str, date: dt.date, bucket: int, manifest: dict | None = None) -> Iterator[dict]:
        """Stream one bucket's records in track id order."""
        for url in self.bucket_files(dataset, date, bucket, manifest):
            yield from read_records(self.storage, url)

    def read_index(self, dataset: str, date: dt.date, bucket: int, manifest: dict | None = None) -> Iterator[dict]:
        """Stream one bucket's id index ({track_id, source_updated_at}) without touching payloads."""
        manifest = manifest or self.manifest(dataset, date)
        entry = manifest["bucket_manifests"][layout.bucket_name(bucket)]
        if entry.get("index"):
            yield from read_records(self.storage, self.layout.file_url(dataset, date, entry["index"]))


def _sum_counts(counts) -> dict:
    total: dict = {}
    for c in counts:
        for key, value in c.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))
