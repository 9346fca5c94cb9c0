"""Put a simulated catalogue where the pipeline reads it: S3 objects, the metadata dump, a local folder.

Why: the demo and the tests must start from the same state a production day would: analysis
documents under a prefix of a bucket (plus unrelated objects the pipeline must leave alone), and
an Avro dump committed with ``_SUCCESS`` last. Seeding day by day only uploads what changed, so
incremental runs can be replayed cheaply.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import fastavro

from pipeline import storage as storage_mod
from pipeline.demo.synthetic import CatalogSimulation, ObjectSpec
from pipeline.formats import header_schema
from pipeline.layout import SUCCESS, TRACKS, Layout
from pipeline.storage import Storage

ROWS_PER_PART = 100_000
# Decoy folders; the last one shares the source prefix as a *string* ("analysis-backup" vs "analysis/").
DECOY_PREFIXES = ("other-team/analysis", "logs/ingest", "{prefix}-backup")


def _changed(sim: CatalogSimulation, day: int, since_day: int | None) -> tuple[int, list[ObjectSpec]]:
    """(objects on ``day``, those of them absent or of another version on ``since_day``)."""
    now = sim.objects_available(day)
    before = sim.objects_available(since_day) if since_day is not None else {}
    return len(now), [spec for key, spec in now.items() if before.get(key) != spec]


def _ensure_bucket(s3_client, bucket: str) -> None:
    existing = {b["Name"] for b in s3_client.list_buckets().get("Buckets", [])}
    if bucket in existing:
        return
    region = s3_client.meta.region_name
    # us-east-1 rejects an explicit LocationConstraint
    extra = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3_client.create_bucket(Bucket=bucket, **extra)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass  # SeaweedFS may not list a bucket created a moment ago; creating it again says it is ours


def _decoys(sim: CatalogSimulation, day: int, prefix: str, n: int) -> Iterator[tuple[str, bytes]]:
    """Keys under other prefixes, some named after real catalog tracks, with bodies that are not analyses.

    A pipeline that lists or fetches outside its prefix would ingest one of these (named like a
    real track, so it cannot be ignored by luck) and fail validation loudly.
    """
    ids = [row["track_id"] for row in sim.day(day).rows[:n]] or ["0" * 22]
    for i in range(n):
        folder = DECOY_PREFIXES[i % len(DECOY_PREFIXES)].format(prefix=prefix)
        name = f"{ids[i % len(ids)]}.json" if i % 2 == 0 else f"part-{i:05d}.log"
        yield f"{folder}/{name}", b'{"decoy": true, "note": "outside the source prefix; never ingest"}'


def seed_bucket(s3_client, bucket: str, prefix: str, sim: CatalogSimulation, day: int, *,
                since_day: int | None = None, decoys: int = 20, workers: int = 16) -> dict[str, int]:
    """Upload the analyses available on ``day`` (only those new or changed since ``since_day``).

    Decoys go under other prefixes, only on the first seeding (``since_day`` None) so a later
    seeding uploads exactly the changed analyses. Returns counts: uploaded, unchanged, decoys, bytes.
    """
    prefix = prefix.strip("/")
    if decoys and not prefix:
        raise ValueError("decoys must live outside the source prefix: give a prefix or decoys=0")
    _ensure_bucket(s3_client, bucket)
    total, todo = _changed(sim, day, since_day)

    def put(spec: ObjectSpec) -> int:
        body = spec.body()
        extra = {"ContentEncoding": spec.content_encoding} if spec.content_encoding else {}
        key = f"{prefix}/{spec.key}" if prefix else spec.key
        ctype = "application/gzip" if spec.key.endswith(".gz") else "application/json"
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=ctype, **extra)
        return len(body)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        sizes = list(pool.map(put, todo))
    n_decoys = 0
    if since_day is None and decoys:
        for key, body in _decoys(sim, day, prefix, decoys):
            s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
            n_decoys += 1
    return {"uploaded": len(todo), "unchanged": total - len(todo), "decoys": n_decoys, "bytes": sum(sizes)}


def _chunks(rows: list[dict], size: int) -> Iterable[list[dict]]:
    if not rows:
        yield []  # an empty dump still gets one (header-only) part, so readers see a schema
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def write_metadata_dump(layout: Layout, storage: Storage, date: dt.date, rows: list[dict],
                        *, rows_per_part: int = ROWS_PER_PART) -> str:
    """Write the dump of ``date`` as deflate Avro parts, then ``_SUCCESS``; return the folder URL.

    ``strict=True`` makes fastavro reject rows with missing or extra fields, so a simulator bug
    cannot produce a dump that only the lenient reader accepts.
    """
    folder = layout.date_url(TRACKS, date)
    for part, chunk in enumerate(_chunks(rows, rows_per_part)):
        with storage.atomic_writer(storage_mod.join(folder, f"part-{part:05d}.avro")) as f:
            fastavro.writer(f, header_schema("tracks"), chunk, codec="deflate", strict=True)
    storage.write_bytes(storage_mod.join(folder, SUCCESS), b"")
    return folder


def seed_local_folder(path: str, sim: CatalogSimulation, day: int, *, since_day: int | None = None) -> int:
    """Write the objects of ``day`` as files under ``path`` (the ``file://`` source); returns the count.

    A file has no Content-Encoding header, so those objects are written decoded; ``.json.gz``
    keys keep their gzip bodies. Each file is written under a temporary name and renamed, so a
    reader never sees half a document.
    """
    _total, todo = _changed(sim, day, since_day)
    os.makedirs(path, exist_ok=True)
    for spec in todo:
        target = os.path.join(path, spec.key)
        data = spec.body() if spec.key.endswith(".gz") else spec.document()
        tmp = f"{target}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    return len(todo)
