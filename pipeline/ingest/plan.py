"""Plan before you pay: what an ingest of a date would download and cost, without downloading bodies.

One listing of the source prefix (LIST pages of 1,000 keys, ~1,000× cheaper per key than
a HEAD) is matched against the catalog of the date. Catalog keys are held as a sorted
array of 64-bit key hashes plus their bucket (9 bytes a track: ~315 MB for 35M tracks),
so listed keys are looked up a page at a time with ``numpy.searchsorted``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from pipeline import layout
from pipeline.ingest.work import work_item
from pipeline.source.base import Source
from pipeline.source.catalog import read_catalog_bucket
from pipeline.warehouse import Warehouse

PAGE = 1000


@dataclass(frozen=True)
class Prices:
    get_per_1000: float = 0.0004
    list_per_1000: float = 0.005
    transfer_per_gb: float = 0.09


@dataclass
class ChunkPlan:
    chunk: int
    tracks: int = 0
    found: int = 0
    bytes: int = 0
    get_requests: int = 0
    list_requests: int = 0
    cost_usd: float = 0.0


def _key_hash(keys: list[str]) -> np.ndarray:
    return np.fromiter((int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
                        for k in keys), dtype=np.uint64, count=len(keys))


def _catalog_keys(wh: Warehouse, date: dt.date, buckets: int, key_template: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted key hashes of every catalog track with a valid key, and each one's bucket."""
    manifest = wh.manifest(layout.CATALOG, date)
    hashes, owners = [], []
    for bucket in range(buckets):
        keys = [item.key for item in map(lambda r: work_item(r, key_template),
                                         read_catalog_bucket(wh, date, bucket, manifest)) if not item.key_error]
        hashes.append(_key_hash(keys))
        owners.append(np.full(len(keys), bucket, dtype=np.uint8 if buckets < 256 else np.uint32))
    h, o = np.concatenate(hashes), np.concatenate(owners)
    order = np.argsort(h, kind="stable")
    return h[order], o[order]


def plan(wh: Warehouse, source: Source, date: dt.date, buckets: int, key_template: str,
         prices: Prices) -> list[ChunkPlan]:
    """Per-chunk tracks, tracks found in the source, bytes, requests and estimated cost."""
    manifest = wh.manifest(layout.CATALOG, date)
    chunks = [ChunkPlan(b, tracks=manifest.bucket(b).records) for b in range(buckets)]
    hashes, owners = _catalog_keys(wh, date, buckets, key_template)
    found = np.zeros(buckets, dtype=np.int64)
    size = np.zeros(buckets, dtype=np.int64)
    listed = 0
    page: list[tuple[str, int]] = []
    for entry in source.list_objects():
        page.append(entry)
        if len(page) == PAGE:
            listed += _match(page, hashes, owners, found, size)
            page = []
    listed += _match(page, hashes, owners, found, size)
    list_requests = max(1, -(-listed // PAGE))
    for chunk in chunks:
        chunk.found, chunk.bytes = int(found[chunk.chunk]), int(size[chunk.chunk])
        chunk.get_requests = chunk.tracks  # one GET per track: a 404 is "missing", no HEAD first
        chunk.list_requests = 0
        chunk.cost_usd = round(chunk.get_requests / 1000 * prices.get_per_1000
                               + chunk.bytes / 1e9 * prices.transfer_per_gb, 4)
    chunks.append(ChunkPlan(-1, list_requests=list_requests,
                            cost_usd=round(list_requests / 1000 * prices.list_per_1000, 4)))  # the plan's own LISTs
    return chunks


def _match(page, hashes, owners, found, size) -> int:
    if not page:
        return 0
    keys, sizes = zip(*page, strict=True)
    h = _key_hash(list(keys))
    pos = np.clip(np.searchsorted(hashes, h), 0, max(len(hashes) - 1, 0))
    hit = (hashes[pos] == h) if len(hashes) else np.zeros(len(h), dtype=bool)
    np.add.at(found, owners[pos[hit]], 1)
    np.add.at(size, owners[pos[hit]], np.asarray(sizes, dtype=np.int64)[hit])
    return len(page)


def format_plan(chunks: list[ChunkPlan]) -> str:
    rows = [c for c in chunks if c.chunk >= 0]
    lines = [f"{'chunk':>5} {'tracks':>9} {'found':>9} {'missing':>8} {'MB':>10} {'GETs':>9} {'cost $':>9}"]
    for c in rows:
        lines.append(f"{c.chunk:>5} {c.tracks:>9} {c.found:>9} {c.tracks - c.found:>8} {c.bytes / 1e6:>10.1f} "
                     f"{c.get_requests:>9} {c.cost_usd:>9.4f}")
    total = {k: sum(getattr(c, k) for c in rows) for k in ("tracks", "found", "bytes", "get_requests")}
    listing = [c for c in chunks if c.chunk < 0][0]
    cost = sum(c.cost_usd for c in chunks)
    lines.append(f"{'all':>5} {total['tracks']:>9} {total['found']:>9} {total['tracks'] - total['found']:>8} "
                 f"{total['bytes'] / 1e6:>10.1f} {total['get_requests']:>9} {cost:>9.4f}")
    lines.append(f"(planning itself made {listing.list_requests} LIST requests, ${listing.cost_usd:.4f}; "
                 "no analysis body was downloaded)")
    return "\n".join(lines)


def as_json(chunks: list[ChunkPlan]) -> list[dict]:
    return [asdict(c) for c in chunks]
