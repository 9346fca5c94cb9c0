"""Synthetic catalogues of track features, straight from numpy, for similarity tests and benchmarks.

Why not uniform noise: in uniform high-dimensional noise every point is about equally far from
every other, so nearest-neighbour search is both meaningless and unrepresentative (IVF and LSH
look much worse than on real data). Real catalogues are clumpy: genres and production styles.
So tracks are drawn around "styles" (cluster centres of very different sizes, Dirichlet
weights), each style with its own timbre, tempo, key tendency and loudness, with per-track
spread, in the raw units of the attributes (BPM, dB, timbre coefficients). The result goes
through the same ``standardise`` as a real snapshot. A million tracks take a few seconds.

``attribute_records`` and ``write_snapshot`` make a real ``attributes/<date>`` snapshot (records
from ``maths.compute`` on synthetic analyses, bucketed and published like the batch job does)
for tests, benchmarks and the demo while the batch side is not in the loop.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np

from pipeline import layout
from pipeline.bucketing import bucket_of
from pipeline.demo.synthetic import BASE62, TIMBRE_MEAN_SD, TIMBRE_SD, kk_profile, make_track_ids, synth_analysis
from pipeline.formats import ATTRIBUTES
from pipeline.manifest import Manifest
from pipeline.serving.features import DIM, Features
from pipeline.warehouse import Warehouse


def attribute_records(n: int, seed: int) -> Iterator[dict]:
    """``n`` attributes records computed by ``maths.compute`` from synthetic analyses (short tracks: fast)."""
    from pipeline.attributes.maths import compute
    from pipeline.formats.analysis import to_record
    from pipeline.formats.arrays import arrays

    rng = np.random.default_rng(seed)
    for i, track_id in enumerate(make_track_ids(rng, n)):
        doc = synth_analysis(rng, track_id, float(rng.uniform(70, 180)), i % 12, (i // 12) % 2, 4,
                             float(rng.uniform(30, 90)), int(rng.integers(20, 60)))
        yield compute(arrays(to_record(doc, track_id=track_id, source_key=f"{track_id}.json")))


def write_snapshot(wh: Warehouse, date: dt.date, records: Iterable[dict], buckets: int = 4,
                   records_per_part: int = 20000, codec: str = "null") -> Manifest:
    """Publish ``records`` as ``attributes/<date>``: bucketed by id, sorted within buckets, committed, published.

    Written by the daily job's own bucket writer, so the snapshot has its record index, summary and
    quality statistics like a real one (a full build of computed records).
    """
    from pipeline.attributes.daily import write_bucket
    from pipeline.attributes.maths import ALGORITHM_VERSION
    from pipeline.attributes.summary import BucketStats, combine_summaries

    entries = []
    by_bucket: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        by_bucket[bucket_of(record["track_id"], buckets)].append(record)
    for bucket in range(buckets):
        rows = sorted(by_bucket.pop(bucket, []), key=lambda r: r["track_id"])
        stats = BucketStats(computed=len(rows))
        entries.append(write_bucket(wh, date, bucket, ((None, r) for r in rows), stats, codec, records_per_part, []))
    return wh.publish(layout.ATTRIBUTES, date, ATTRIBUTES, buckets, mode="full", algorithm_version=ALGORITHM_VERSION,
                      summary=combine_summaries(entries), inputs=[])


def random_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` unique sorted base62 ids as an ``S22`` array (vectorised: no Python string per id)."""
    ids = np.empty(0, dtype="S22")
    while len(ids) < n:
        codes = np.ascontiguousarray(BASE62[rng.integers(0, 62, size=(n - len(ids), 22))])
        ids = np.unique(np.concatenate((ids, codes.view("S22").ravel())))
    return ids[rng.permutation(len(ids))[:n]] if len(ids) > n else ids


def _styles(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    keys, modes = rng.integers(0, 12, count), rng.integers(0, 2, count)
    chroma = np.stack([(kk_profile(k, m) / 6.35) ** 2 for k, m in zip(keys, modes, strict=True)])
    return {"timbre_mean": rng.normal(0, TIMBRE_MEAN_SD, (count, 12)) + np.array([30.0] + [0.0] * 11),
            "timbre_std": TIMBRE_SD * rng.lognormal(0, 0.3, (count, 12)),
            "chroma": chroma / chroma.max(axis=1, keepdims=True), "key": keys, "mode": modes,
            "tempo": rng.uniform(70, 180, count), "loudness": rng.uniform(-20, -4, count),
            "spread": rng.uniform(0.4, 1.2, count), "weight": rng.dirichlet(np.full(count, 0.5))}


def clustered_features(n: int, seed: int = 0, styles: int | None = None, block: int = 200_000) -> Features:
    """``n`` tracks of raw features (sorted by id) drawn around ``styles`` clusters (default ~sqrt(n))."""
    rng = np.random.default_rng(seed)
    st = _styles(rng, styles or max(20, int(np.sqrt(n))))
    label = rng.choice(len(st["weight"]), size=n, p=st["weight"])
    raw = np.empty((n, DIM), dtype=np.float32)
    tempo = np.empty(n, dtype=np.float32)
    for start in range(0, n, block):
        lab = label[start:start + block]
        raw[start:start + block], tempo[start:start + block] = _draw(rng, st, lab)
    same_key = rng.random(n) < 0.7  # most tracks of a style share its key; the rest are anywhere
    key = np.where(same_key, st["key"][label], rng.integers(0, 12, n)).astype(np.int8)
    mode = np.where(same_key, st["mode"][label], rng.integers(0, 2, n)).astype(np.int8)
    raw[:, -1] = mode
    return Features(random_ids(rng, n), raw, tempo, key, mode)


def _draw(rng: np.random.Generator, st: dict[str, np.ndarray], lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw feature rows (``features.FEATURE_GROUPS`` order) and tempi for the tracks of labels ``lab``."""
    m, s = len(lab), st["spread"][lab, None]
    noise = rng.standard_normal((m, DIM)).astype(np.float32)
    tempo = st["tempo"][lab] * np.exp(0.08 * noise[:, 36])
    loud = st["loudness"][lab] + 2.0 * noise[:, 39]
    cols = [st["timbre_mean"][lab] + s * TIMBRE_MEAN_SD.clip(5) * noise[:, :12],
            st["timbre_std"][lab] * np.exp(s * 0.5 * noise[:, 12:24]),
            np.clip(st["chroma"][lab] + s * 0.3 * noise[:, 24:36], 0, 1),
            np.log2(tempo)[:, None], np.clip(0.95 + 0.03 * noise[:, 37:38], 0, 1),
            np.exp(np.log(3.0) + 0.3 * noise[:, 38:39]), loud[:, None],
            np.clip(12 + 3 * noise[:, 40:41], 0, None), np.zeros((m, 1))]
    return np.hstack(cols).astype(np.float32), tempo.astype(np.float32)
