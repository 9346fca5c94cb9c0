"""Attributes snapshots at 100k-1M records for the serving benchmark, in flat memory and kept between runs.

Why not the computed records repeated: the similarity index must be measured on vectors with a
real structure. Each record is one of 2,000 computed records (for every other field) with its
feature fields replaced by a row of ``clustered_features`` (styles of very different sizes, raw
attribute units), so recall and list balance are what a clumpy catalogue gives. Day 2 changes
1% of the tracks like the daily job does: 0.4% re-analysed (new ``source_updated_at``, new
features), 0.3% dropped, 0.3% added. Both days are written like the attributes job writes them
(bucketed, sorted, record-indexed), into ``<root>/<n>/`` once.

Run: ``.venv/bin/python -m benchmarks.serving_fixture --records 1000000 --root /tmp/serving-bench``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import zlib
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.demo.synthetic_features import attribute_records, clustered_features, random_ids
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse

DAY1, DAY2, DAY3 = dt.date(2026, 11, 26), dt.date(2026, 11, 27), dt.date(2026, 11, 28)
BUCKETS = 16
CHANGED, DROPPED, ADDED = 0.004, 0.003, 0.003


def warehouse(root: Path) -> Warehouse:
    return Warehouse(Layout(f"file://{root}"), LocalStorage())


def _record(template: dict, track_id: str, raw: np.ndarray, key: int, updated: int) -> dict:
    return {**template, "track_id": track_id, "source_updated_at": updated,
            "timbre_mean": raw[0:12].tolist(), "timbre_std": raw[12:24].tolist(),
            "chroma_profile": raw[24:36].tolist(), "tempo": float(2 ** raw[36]), "tempo_stability": float(raw[37]),
            "segment_rate": float(raw[38]), "loudness_mean": float(raw[39]), "loudness_range": float(raw[40]),
            "mode": int(raw[41]), "key": int(key)}


def _write(wh: Warehouse, date: dt.date, ids: np.ndarray, rows: np.ndarray, features, updated: np.ndarray,
           templates: list[dict]) -> None:
    """One day, bucket by bucket, through the attributes job's own bucket writer (record index included)."""
    from pipeline.attributes.daily import write_bucket
    from pipeline.attributes.maths import ALGORITHM_VERSION
    from pipeline.attributes.summary import BucketStats, combine_summaries
    from pipeline.formats import ATTRIBUTES

    text = [i.decode() for i in ids]
    bucket = np.array([zlib.crc32(t.encode()) % BUCKETS for t in text])
    entries = []
    for b in range(BUCKETS):
        members = np.flatnonzero(bucket == b)
        members = members[np.argsort(ids[members])]
        records = ((None, _record(templates[rows[i] % len(templates)], text[i], features.raw[rows[i]],
                                  features.key[rows[i]], updated[i])) for i in members)
        entries.append(write_bucket(wh, date, b, records, BucketStats(computed=len(members)), "snappy", 50_000, []))
    wh.publish(layout.ATTRIBUTES, date, ATTRIBUTES, BUCKETS, mode="full", algorithm_version=ALGORITHM_VERSION,
               summary=combine_summaries(entries), inputs=[])


def make(root: Path, n: int, seed: int = 11, day3: bool = False) -> Warehouse:
    """Both days of an ``n``-record catalogue under ``root/<n>`` (written once; reused when complete).

    ``day3`` adds a third day equal to day 1 again (so its daily diff from day 2 undoes day 2's changes):
    a second daily publish for the soak.
    """
    wh = warehouse(root / str(n))
    if wh.is_complete(layout.ATTRIBUTES, DAY2) and (not day3 or wh.is_complete(layout.ATTRIBUTES, DAY3)):
        return wh
    rng = np.random.default_rng(seed)
    extra = int(n * ADDED)
    features = clustered_features(n + extra + int(n * CHANGED), seed=seed)  # rows: day1, added, re-analysed
    ids = random_ids(rng, n + extra)
    templates = list(attribute_records(2000, seed=7))
    updated = np.full(n + extra, 1_700_000_000, np.int64)
    if not wh.is_complete(layout.ATTRIBUTES, DAY1):
        _write(wh, DAY1, ids[:n], np.arange(n), features, updated[:n], templates)
    if day3 and not wh.is_complete(layout.ATTRIBUTES, DAY3):
        _write(wh, DAY3, ids[:n], np.arange(n), features, updated[:n], templates)
    order = rng.permutation(n)
    dropped = order[:int(n * DROPPED)]
    changed = order[int(n * DROPPED):int(n * DROPPED) + int(n * CHANGED)]
    keep = np.setdiff1d(np.arange(n), dropped)
    rows = np.concatenate([np.arange(n), np.arange(n, n + extra)])
    rows[changed] = n + extra + np.arange(len(changed))  # new features for the re-analysed tracks
    updated[changed] += 86_400
    day2 = np.concatenate([keep, np.arange(n, n + extra)])
    if not wh.is_complete(layout.ATTRIBUTES, DAY2):
        _write(wh, DAY2, ids[day2], rows[day2], features, updated[day2], templates)
    return wh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    make(args.root, args.records)


if __name__ == "__main__":
    main()
