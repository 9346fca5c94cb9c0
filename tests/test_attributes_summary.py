"""Bucket statistics folded with numpy equal the per-record definitions they replace."""

from __future__ import annotations

import bisect
import math

import numpy as np

from pipeline.attributes.summary import TEMPO_EDGES, VALUE_FIELDS, BucketStats, row_of
from pipeline.ops.quality import ATTRIBUTE_RANGES, QualityStats, attribute_values


def _records(n: int, seed: int = 5) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        def maybe(value, rng=rng):
            return None if rng.random() < 0.1 else value
        records.append({
            "track_id": f"{i:022d}", "duration": maybe(float(rng.uniform(30, 600))),
            "tempo": maybe(float(rng.uniform(20, 260))), "beat_tempo": maybe(float(rng.choice([0.0, 95.5, 600.0]))),
            "loudness": maybe(float(rng.uniform(-60, 2))), "loudness_mean": maybe(float(rng.uniform(-120, 0))),
            "key": maybe(int(rng.integers(0, 12))), "estimated_key": maybe(int(rng.integers(0, 13))),
            "mode": maybe(int(rng.integers(0, 2))), "estimated_mode": maybe(int(rng.integers(0, 2))),
            "segment_rate": maybe(float(rng.uniform(1, 8)))})
    records[3]["loudness"] = math.inf
    records[4]["duration"] = math.nan
    return records


def test_row_of_spells_null_as_nan_and_nan_as_infinity():
    row = row_of({"duration": None, "tempo": float("nan"), "key": 3})
    assert len(row) == len(VALUE_FIELDS)
    assert math.isnan(row[0]) and row[1] == math.inf and row[VALUE_FIELDS.index("key")] == 3.0


def test_column_quality_equals_record_by_record_quality():
    records = _records(3000)
    one = QualityStats(ATTRIBUTE_RANGES)
    for r in records:
        one.observe(r["track_id"], *attribute_values(r))
    stats = BucketStats()
    for r in records:
        stats.observe(r["track_id"], row_of(r))
    folded = stats.manifest_fields()["quality"]
    expected = one.report(8.0)
    assert folded.checked == expected.checked == 3000
    assert folded.out_of_range == expected.out_of_range and folded.out_of_range["beat_tempo"] > 0
    assert folded.out_of_range["duration"] == 1 and folded.out_of_range["loudness"] >= 1
    assert len(folded.examples) == 10


def test_column_anomalies_equal_record_by_record_anomalies():
    records = [r for r in _records(3000, seed=8) if not (r["duration"] != r["duration"])]  # a NaN poisons a median
    for r in records[:40]:
        r["segment_rate"] = 400.0  # far outside the bucket's spread
    one, stats = QualityStats(ATTRIBUTE_RANGES), BucketStats()
    for r in records:
        one.observe(r["track_id"], *attribute_values(r))
        stats.observe(r["track_id"], row_of(r))
    assert stats.manifest_fields()["quality"].anomalies == one.report(8.0).anomalies >= 30


def test_histograms_equal_the_per_record_definition():
    records = _records(20000)  # more than one batch
    stats = BucketStats()
    for r in records:
        stats.observe(r["track_id"], row_of(r))
    summary = stats.manifest_fields()["summary"]
    tempo, keys, modes = [0] * (len(TEMPO_EDGES) - 1), [0] * 12, [0, 0]
    for r in records:
        value = r["beat_tempo"] or r["tempo"]
        if value is not None:
            tempo[min(max(bisect.bisect_right(TEMPO_EDGES, value) - 1, 0), len(tempo) - 1)] += 1
        if r["key"] is not None:
            keys[r["key"]] += 1
        if r["mode"] is not None:
            modes[r["mode"]] += 1
    assert summary["tempo_histogram"]["counts"] == tempo
    assert summary["key_histogram"] == keys and summary["mode_counts"] == modes


def test_runs_of_ids_as_bytes_report_the_same_examples_as_ids_one_by_one():
    """Kept runs hand their ids over as the record index's bytes; a flagged record is still named by its id."""
    records = _records(20000)
    rows = np.asarray([row_of(r) for r in records])
    one, runs = BucketStats(), BucketStats()
    for record, row in zip(records, rows, strict=True):
        one.observe(record["track_id"], row)
    ids = np.asarray([r["track_id"].encode() for r in records])
    for start in range(0, len(records), 7001):  # runs that straddle the statistics' batches
        runs.observe_many(ids[start:start + 7001], rows[start:start + 7001])
    assert runs.manifest_fields() == one.manifest_fields()
    examples = runs.manifest_fields()["quality"].examples
    assert examples and all(e.startswith(("0", "1")) and "b'" not in e for e in examples)
