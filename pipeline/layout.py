"""The warehouse layout: the only module that turns (dataset, date, bucket, part) into a URL.

::

    <root>/<project>/<dataset>/<YYYY-MM-DD>/part-<bucket>-<part>.avro   data, sorted by track id
    <root>/<project>/<dataset>/<YYYY-MM-DD>/_index/ids-<bucket>.avro    compact id index (analysis sets)
    <root>/<project>/<dataset>/<YYYY-MM-DD>/_index/records-<bucket>.avro  record index (attributes)
    <root>/<project>/<dataset>/<YYYY-MM-DD>/_buckets/<bucket>.json      per-bucket manifest (chunk commit)
    <root>/<project>/<dataset>/<YYYY-MM-DD>/_manifest.json              dataset manifest
    <root>/<project>/<dataset>/<YYYY-MM-DD>/_SUCCESS                    written last
    <root>/<project>/<dataset>/_temporary/<YYYY-MM-DD>/...              staging of a date being built
    <root>/<project>/<dataset>/_temporary/<YYYY-MM-DD>/_slices/<bucket>-<slice>/  a map task's slice (ingest job)
    <root>/<metadata_project>/tracks/<YYYY-MM-DD>/                      the external metadata dump
    <root>/<project>/_retention/<YYYY-MM-DD>.json                       what retention deleted, and why

Names starting with ``_`` are hidden from Hadoop/Hive readers. A date folder only
appears by publication (an atomic rename of its staging folder on local disk and
HDFS), so one listing of a dataset folder tells which dates are complete.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pipeline import storage
from pipeline.errors import LayoutError

DATE_FORMAT = "%Y-%m-%d"
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PART_RE = re.compile(r"^part-(\d{5})-(\d{4})\.avro$")
SUCCESS = "_SUCCESS"
MANIFEST = "_manifest.json"
TEMPORARY = "_temporary"
SLICES = "_slices"

# Dataset names (folders under the project).
ANALYSIS_FULL = "analysis-full"
ANALYSIS_INCREMENTAL = "analysis-incremental"
LEDGER = "analysis-ledger"
CATALOG = "catalog"  # the metadata dump, validated, bucketed and sorted by track id
ATTRIBUTES = "attributes"
TRACKS = "tracks"  # the metadata dump, under the metadata project
DATASETS = (CATALOG, ANALYSIS_FULL, ANALYSIS_INCREMENTAL, LEDGER, ATTRIBUTES)


def format_date(date: dt.date) -> str:
    return date.strftime(DATE_FORMAT)


def parse_date(text: str) -> dt.date:
    """Parse a ``YYYY-MM-DD`` folder name; raise ``LayoutError`` naming the bad value."""
    if not DATE_RE.match(text):
        raise LayoutError(f"{text!r} is not a dataset date (expected YYYY-MM-DD)")
    try:
        return dt.datetime.strptime(text, DATE_FORMAT).date()
    except ValueError as exc:
        raise LayoutError(f"{text!r} is not a valid calendar date") from exc


def bucket_name(bucket: int) -> str:
    return f"{bucket:05d}"


@dataclass(frozen=True)
class Layout:
    """Paths of every dataset under one warehouse root."""

    root: str
    project: str = "echonest"
    metadata_project: str = "metadata"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", storage.absolute_url(self.root))

    def dataset_url(self, dataset: str) -> str:
        if dataset == TRACKS:
            return storage.join(self.root, self.metadata_project, TRACKS)
        if dataset not in DATASETS:
            raise LayoutError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS + (TRACKS,))}")
        return storage.join(self.root, self.project, dataset)

    def date_url(self, dataset: str, date: dt.date, staging: bool = False) -> str:
        base = self.dataset_url(dataset)
        if staging:
            return storage.join(base, TEMPORARY, format_date(date))
        return storage.join(base, format_date(date))

    def success_url(self, dataset: str, date: dt.date, staging: bool = False) -> str:
        return storage.join(self.date_url(dataset, date, staging), SUCCESS)

    def manifest_url(self, dataset: str, date: dt.date, staging: bool = False) -> str:
        return storage.join(self.date_url(dataset, date, staging), MANIFEST)

    def bucket_manifest_url(self, dataset: str, date: dt.date, bucket: int, staging: bool = True) -> str:
        return storage.join(self.date_url(dataset, date, staging), "_buckets", f"{bucket_name(bucket)}.json")

    def part_name(self, bucket: int, part: int) -> str:
        return f"part-{bucket_name(bucket)}-{part:04d}.avro"

    def part_url(self, dataset: str, date: dt.date, bucket: int, part: int, staging: bool = True) -> str:
        return storage.join(self.date_url(dataset, date, staging), self.part_name(bucket, part))

    def index_name(self, bucket: int) -> str:
        return f"_index/ids-{bucket_name(bucket)}.avro"

    def index_url(self, dataset: str, date: dt.date, bucket: int, staging: bool = True) -> str:
        return storage.join(self.date_url(dataset, date, staging), self.index_name(bucket))

    def record_index_name(self, bucket: int) -> str:
        return f"_index/records-{bucket_name(bucket)}.avro"

    def record_index_url(self, dataset: str, date: dt.date, bucket: int, staging: bool = True) -> str:
        return storage.join(self.date_url(dataset, date, staging), self.record_index_name(bucket))

    def slices_url(self, dataset: str, date: dt.date) -> str:
        """Staging folder of the slices of the map-only ingest job (``<bucket>-<slice>`` folders)."""
        return storage.join(self.date_url(dataset, date, True), SLICES)

    def slice_url(self, dataset: str, date: dt.date, bucket: int, slice_no: int, name: str = "") -> str:
        """A working file of one slice of a bucket (or its folder when ``name`` is empty)."""
        folder = storage.join(self.slices_url(dataset, date), f"{bucket_name(bucket)}-{slice_no:04d}")
        return storage.join(folder, name) if name else folder

    def retention_log_url(self, date: dt.date) -> str:
        """Where the retention run after ``date`` logs what it deleted and freed."""
        return storage.join(self.root, self.project, "_retention", f"{format_date(date)}.json")

    def file_url(self, dataset: str, date: dt.date, relative: str, staging: bool = False) -> str:
        """URL of a file named (relative to its date folder) in a manifest."""
        return storage.join(self.date_url(dataset, date, staging), relative)


def dates_in(names: list[str]) -> list[dt.date]:
    """The dataset dates among folder names (``_temporary`` and other names are skipped)."""
    return sorted(parse_date(n) for n in names if DATE_RE.match(n))
