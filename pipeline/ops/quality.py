"""The quality gate: checks a dataset must pass before it may publish ``_SUCCESS``.

Statistics are gathered while records stream through the bucket writers (no extra pass over
the data) and kept in each bucket manifest; at publication the gate reads only those
manifests and one file header per bucket. It checks:

- values in their documented ranges (tempo 0–500 BPM, loudness −100–10 dB, keys 0–11 — or −1,
  Spotify's "not detected", in analyses — modes 0/1, durations > 0);
- the share of anomalous records: a robust z-score (median and MAD within the bucket, a random
  1/N sample of the catalogue) of duration, segment rate and loudness above ``z_threshold``;
- record counts consistent with the outcome counts, and the schema of the files as expected.

A failing gate raises ``QualityGateError`` listing every failed check; nothing is published.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import QualityGateError
from pipeline.manifest import BucketManifest, QualityReport

MIN_FOR_ANOMALIES = 20  # below this a bucket's median/MAD mean little
ANALYSIS_RANGES = {"tempo": (0.0, 500.0), "loudness": (-100.0, 10.0), "key": (-1, 11), "mode": (0, 1),
                   "duration": (1e-9, 86400.0)}
ATTRIBUTE_RANGES = {"tempo": (0.0, 500.0), "beat_tempo": (0.0, 500.0), "loudness": (-100.0, 10.0),
                    "loudness_mean": (-100.0, 10.0), "key": (0, 11), "estimated_key": (0, 11), "mode": (0, 1),
                    "estimated_mode": (0, 1), "duration": (1e-9, 86400.0)}


@dataclass(frozen=True)
class QualitySettings:
    enabled: bool = True
    max_out_of_range_ratio: float = 0.0
    max_anomaly_ratio: float = 0.02
    z_threshold: float = 8.0


@dataclass
class QualityStats:
    """Per-bucket accumulator: range violations now, anomaly features for the end of the bucket."""

    ranges: dict[str, tuple[float, float]]
    checked: int = 0
    out_of_range: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    # (duration, segment rate, loudness) of each record observed one by one, flat: a list of tuples would hold a
    # bucket's worth of objects the garbage collector walks (1.75M at production size) at ~80 bytes each
    _features: array = field(default_factory=lambda: array("d"))
    _feature_blocks: list[np.ndarray] = field(default_factory=list)

    def observe(self, track_id: str, values: dict, segment_rate: float | None) -> None:
        self.checked += 1
        for name, (low, high) in self.ranges.items():
            value = values.get(name)
            if value is not None and not (low <= value <= high and math.isfinite(value)):
                self.out_of_range[name] = self.out_of_range.get(name, 0) + 1
                if len(self.examples) < 10:
                    self.examples.append(f"{track_id}: {name} = {value}")
        duration, loudness = values.get("duration"), values.get("loudness")
        if duration is not None and loudness is not None and segment_rate is not None:
            self._features.extend((duration, segment_rate, loudness))

    def observe_columns(self, track_ids: Sequence[str], values: dict[str, np.ndarray],
                        segment_rate: np.ndarray) -> None:
        """``observe`` for many records at once: one float column per name, NaN meaning null.

        A value that must be flagged although it is not a number (a NaN in a record) has to
        reach this method as an infinity: NaN here is how a null is spelled.
        """
        self.checked += len(track_ids)
        for name, (low, high) in self.ranges.items():
            column = values.get(name)
            if column is None:
                continue
            with np.errstate(invalid="ignore"):
                bad = ~np.isnan(column) & ~((column >= low) & (column <= high))
            count = int(bad.sum())
            if count:
                self.out_of_range[name] = self.out_of_range.get(name, 0) + count
                for i in np.flatnonzero(bad)[:max(0, 10 - len(self.examples))]:
                    self.examples.append(f"{track_ids[i]}: {name} = {column[i]:g}")
        duration, loudness = values.get("duration"), values.get("loudness")
        if duration is not None and loudness is not None:
            x = np.column_stack([duration, segment_rate, loudness]).astype(np.float64, copy=False)
            self._feature_blocks.append(x[~np.isnan(x).any(axis=1)])

    def _feature_matrix(self) -> np.ndarray:
        blocks = [np.frombuffer(self._features, dtype=np.float64).reshape(-1, 3), *self._feature_blocks]
        return np.concatenate(blocks)

    def features(self) -> np.ndarray:
        """The (duration, segment rate, loudness) rows observed, for combining slices of one bucket."""
        return self._feature_matrix()

    def add_features(self, block: np.ndarray) -> None:
        """Rows observed elsewhere (another slice of the bucket) that the anomaly check must include."""
        self._feature_blocks.append(np.asarray(block, dtype=np.float64).reshape(-1, 3))

    def anomalies(self, z_threshold: float) -> int:
        x = self._feature_matrix()
        if len(x) < MIN_FOR_ANOMALIES:
            return 0
        median = np.median(x, axis=0)
        mad = np.median(np.abs(x - median), axis=0) * 1.4826  # MAD scaled to a normal sigma
        mad[mad == 0] = np.inf  # a constant feature flags nothing
        z = np.abs(x - median) / mad
        return int((z > z_threshold).any(axis=1).sum())

    def report(self, z_threshold: float) -> QualityReport:
        return QualityReport(self.checked, dict(sorted(self.out_of_range.items())), self.anomalies(z_threshold),
                             self.examples, z_threshold)


def range_problem(values: dict, ranges: dict[str, tuple[float, float]] = ANALYSIS_RANGES) -> str | None:
    """The first value outside its documented range, as a ledger reason (None when all are in range).

    The ingest asks this of every record before writing it, so an out-of-range value makes its
    own track invalid; the gate's range check then only ever sees records that passed.
    """
    for name, (low, high) in ranges.items():
        value = values.get(name)
        if value is not None and not (low <= value <= high and math.isfinite(value)):
            return f"track.{name} is {value!r}, outside its documented range {low:g}..{high:g}"
    return None


def analysis_values(record: dict) -> tuple[dict, float | None]:
    """(summary values, segments per second) of an analysis record."""
    track = record["track"]
    duration = track.get("duration")
    rate = record["segments"]["count"] / duration if duration else None
    return {k: track.get(k) for k in ANALYSIS_RANGES}, rate


# The analysis record index's values (``record_index.avsc``): what the gate reads of each analysis, so that a
# record copied by its bytes (compaction) is observed without being decoded. NaN means null; a NaN that is a value
# is kept as an infinity, which the range check flags as the record itself would have been.
ANALYSIS_VALUE_FIELDS = (*ANALYSIS_RANGES, "segment_rate")
_INTEGER_VALUES = frozenset({"key", "mode"})  # ints in the record: read back as ints, as the record holds them


def _as_float(value) -> float:
    if value is None:
        return math.nan
    value = float(value)
    return math.inf if value != value else value


def analysis_row(record: dict) -> tuple[float, ...]:
    """The record index row of an analysis record (``ANALYSIS_VALUE_FIELDS`` order)."""
    values, rate = analysis_values(record)
    return (*map(_as_float, values.values()), _as_float(rate))


def row_values(row: Sequence[float]) -> tuple[dict, float | None]:
    """``analysis_values`` of the record an index row describes (``analysis_row``'s inverse for ``observe``)."""
    plain = [None if v != v else (int(v) if name in _INTEGER_VALUES and math.isfinite(v) else float(v))
             for name, v in zip(ANALYSIS_VALUE_FIELDS, row, strict=True)]
    return dict(zip(ANALYSIS_RANGES, plain[:-1], strict=True)), plain[-1]


def attribute_values(record: dict) -> tuple[dict, float | None]:
    values = {k: record.get(k) for k in ATTRIBUTE_RANGES}
    values["loudness"] = record.get("loudness_mean") if record.get("loudness") is None else record.get("loudness")
    return values, record.get("segment_rate")


def check(entries: list[BucketManifest], settings: QualitySettings, where: str, expected_schema: str | None = None,
          schema_of=None) -> list[str]:
    """Every failed check of a dataset about to be published (empty when it may publish)."""
    failures = []
    reports = [e.quality or QualityReport() for e in entries]
    checked = sum(q.checked for q in reports)
    records = sum(e.records for e in entries)
    if checked != records:
        failures.append(f"{checked} records checked but {records} written")
    for e in entries:
        counts = e.counts or {}
        if "ingested" in counts and e.merge is None and counts["ingested"] != e.records:
            failures.append(f"bucket {e.bucket}: {counts['ingested']} ingested but {e.records} written")
        if e.merge is not None and not e.merge.verified:
            failures.append(f"bucket {e.bucket}: compaction not verified")
    bad: dict[str, int] = {}
    for q in reports:
        for name, n in q.out_of_range.items():
            bad[name] = bad.get(name, 0) + n
    if checked and sum(bad.values()) / checked > settings.max_out_of_range_ratio:
        examples = [x for q in reports for x in q.examples][:5]
        failures.append(f"values out of their documented ranges: {bad} (e.g. {'; '.join(examples)})")
    anomalies = sum(q.anomalies for q in reports)
    if checked and anomalies / checked > settings.max_anomaly_ratio:
        failures.append(f"{anomalies} of {checked} records ({anomalies / checked:.1%}) are anomalous "
                        f"(robust z > {settings.z_threshold:g}); [quality] max_anomaly_ratio = "
                        f"{settings.max_anomaly_ratio:.1%}")
    if expected_schema is not None and schema_of is not None:
        for e in entries:
            found = schema_of(e)
            if found is not None and found != expected_schema:
                failures.append(f"bucket {e.bucket}: files written with another schema")
    return failures


def enforce(entries: list[BucketManifest], settings: QualitySettings, where: str, **schema_check) -> None:
    """Raise ``QualityGateError`` naming every failed check; no-op when the gate is disabled."""
    if not settings.enabled:
        return
    failures = check(entries, settings, where, **schema_check)
    if failures:
        raise QualityGateError(f"{where} failed its quality gate, nothing was published:\n  - "
                               + "\n  - ".join(failures))
