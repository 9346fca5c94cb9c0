"""The warehouse's contract as types: a dataset manifest and the bucket manifests it holds.

Every published dataset date carries ``_manifest.json`` and every committed bucket in staging
``_buckets/<bucket>.json`` (see docs/layout.md). Both were plain dicts read with string keys in
a dozen modules; here they are dataclasses, parsed and validated in one place, written back to
exactly the same JSON. Keys this version does not know (written by a newer one) are kept in
``extra`` and written back unchanged, so a rewrite never drops them.

Values that are themselves open-ended tallies (``counts``, ``requests``, ``delta``, the
attributes ``summary``) stay mappings: their keys are data, not the manifest's structure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline import layout
from pipeline.errors import IncompleteDatasetError


@dataclass(frozen=True)
class FileEntry:
    """A data file of a bucket, named relative to its date folder."""

    name: str
    records: int
    bytes: int

    def as_json(self) -> dict:
        return {"name": self.name, "records": self.records, "bytes": self.bytes}


@dataclass(frozen=True)
class QualityReport:
    """The quality statistics a bucket writer gathered (read by the quality gate)."""

    checked: int = 0
    out_of_range: dict[str, int] = field(default_factory=dict)
    anomalies: int = 0
    examples: list[str] = field(default_factory=list)
    z_threshold: float | None = None


@dataclass(frozen=True)
class MergeReport:
    """What a compaction merged, and whether its record count was verified."""

    inputs: int
    replaced: int
    taken_down: int
    verified: bool = False


@dataclass(frozen=True)
class BucketManifest:
    """One committed bucket: its files and what its writer reports. ``None`` fields are absent on disk."""

    bucket: int
    records: int
    bytes: int
    files: list[FileEntry]
    index: str | None = None  # id index (analysis sets)
    record_index: str | None = None  # record index: lengths and values of each record (attributes, analysis sets)
    counts: dict[str, int] | None = None
    quality: QualityReport | None = None
    merge: MergeReport | None = None
    inputs: list[str] | None = None
    requests: dict[str, int] | None = None
    seconds: float | None = None
    delta: dict[str, int] | None = None
    ledger_records: int | None = None
    algorithm_version: str | None = None
    summary: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_files(cls, bucket: int, files: Iterable, **fields: Any) -> BucketManifest:
        """A bucket manifest over written files (anything with ``name``, ``records`` and ``bytes``)."""
        entries = [FileEntry(f.name, f.records, f.bytes) for f in files]
        return cls(bucket, sum(f.records for f in entries), sum(f.bytes for f in entries), entries, **fields)

    def with_details(self, **fields: Any) -> BucketManifest:
        return dataclasses.replace(self, **fields)

    def as_json(self) -> dict:
        return _as_json(self, files=lambda files: [e.as_json() for e in files])

    @classmethod
    def from_json(cls, data: Mapping, where: str) -> BucketManifest:
        data = dict(_require(data, ("bucket", "records", "bytes", "files"), where))
        try:
            files = [FileEntry(f["name"], f["records"], f["bytes"]) for f in data.pop("files")]
            quality = data.pop("quality", None)
            merge = data.pop("merge", None)
            return cls(files=files, quality=QualityReport(**quality) if quality is not None else None,
                       merge=MergeReport(**merge) if merge is not None else None, extra=_unknown(cls, data), **data)
        except (KeyError, TypeError) as exc:
            raise IncompleteDatasetError(f"{where} is not a valid bucket manifest: {exc!r}") from exc


@dataclass(frozen=True)
class Manifest:
    """A published dataset date: what it holds, how it was made, and every bucket's manifest."""

    dataset: str
    date: dt.date
    schema: str
    schema_fingerprint: str
    code_version: str
    buckets: int
    records: int
    bytes: int
    counts: dict[str, int]
    bucket_manifests: dict[int, BucketManifest]
    kind: str | None = None  # analysis sets: full | incremental | compaction
    analysis_dataset: str | None = None  # ledger: the analysis set it belongs to
    inputs: list[str] | None = None
    mode: str | None = None  # attributes: incremental | full
    algorithm_version: str | None = None
    summary: dict | None = None
    rejected: dict[str, int] | None = None  # catalog: rows the dump had to drop
    rejected_examples: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def bucket(self, bucket: int) -> BucketManifest:
        """The manifest of one bucket; ``IncompleteDatasetError`` when the dataset has no such bucket."""
        try:
            return self.bucket_manifests[bucket]
        except KeyError:
            raise IncompleteDatasetError(
                f"{self.dataset}/{layout.format_date(self.date)} has no bucket {bucket} "
                f"(it was written with {self.buckets} buckets)") from None

    def entries(self) -> list[BucketManifest]:
        """Every bucket manifest, in bucket order."""
        return [self.bucket_manifests[b] for b in sorted(self.bucket_manifests)]

    def as_json(self) -> dict:
        return _as_json(self, date=layout.format_date, bucket_manifests=lambda entries: {
            layout.bucket_name(b): e.as_json() for b, e in sorted(entries.items())})

    @classmethod
    def from_json(cls, data: Mapping, where: str) -> Manifest:
        required = ("dataset", "date", "schema", "schema_fingerprint", "code_version", "buckets", "records",
                    "bytes", "counts", "bucket_manifests")
        data = dict(_require(data, required, where))
        try:
            entries = [BucketManifest.from_json(e, f"{where} bucket {name}")
                       for name, e in data.pop("bucket_manifests").items()]
            date = layout.parse_date(data.pop("date"))
            return cls(date=date, bucket_manifests={e.bucket: e for e in entries}, extra=_unknown(cls, data), **data)
        except (AttributeError, TypeError) as exc:
            raise IncompleteDatasetError(f"{where} is not a valid dataset manifest: {exc!r}") from exc


def _as_json(manifest: Any, **encode: Any) -> dict:
    """The JSON object of a manifest: absent (``None``) fields left out, unknown keys written back."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(manifest):
        value = getattr(manifest, f.name)
        if f.name == "extra" or value is None:
            continue
        if f.name in encode:
            value = encode[f.name](value)
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        out[f.name] = value
    return {**manifest.extra, **out}


def _unknown(cls: type, data: dict) -> dict:
    """Take the keys ``cls`` has no field for out of ``data`` (kept in ``extra``, written back unchanged)."""
    known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return {k: data.pop(k) for k in list(data) if k not in known}


def _require(data: Mapping, keys: tuple[str, ...], where: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise IncompleteDatasetError(f"{where} is not a manifest (a JSON object was expected)")
    missing = [k for k in keys if k not in data]
    if missing:
        raise IncompleteDatasetError(f"{where} is not a valid manifest: it lacks {', '.join(missing)}")
    return data


def sum_counts(counts: Iterable[Mapping[str, int] | None]) -> dict[str, int]:
    """Outcome counts of many buckets added up, keys sorted (the dataset manifest's ``counts``)."""
    total: dict[str, int] = {}
    for c in counts:
        for key, value in (c or {}).items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))
