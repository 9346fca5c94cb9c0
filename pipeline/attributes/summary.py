"""What a bucket of attributes reports about itself: counts, histograms and quality statistics.

Each record contributes one *row*: the few values the manifest's histograms and the quality
gate read (``VALUE_FIELDS``, NaN for null). Rows of kept records come from yesterday's
record index, so they are never decoded; rows are folded into the statistics in batches,
with numpy, so a bucket costs a few array operations per thousand records instead of a few
dictionary look-ups per record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.manifest import BucketManifest
from pipeline.ops.quality import ATTRIBUTE_RANGES, QualityStats

VALUE_FIELDS = ("duration", "tempo", "beat_tempo", "loudness", "loudness_mean", "key", "estimated_key", "mode",
                "estimated_mode", "segment_rate")
TEMPO_EDGES = list(range(40, 230, 10))  # BPM histogram bins of the manifest summary
BATCH = 8192
_COLUMN = {name: i for i, name in enumerate(VALUE_FIELDS)}


def row_of(record: dict) -> list[float]:
    """The record's ``VALUE_FIELDS`` as floats: None becomes NaN, a NaN value becomes +inf (never in range)."""
    row = []
    for name in VALUE_FIELDS:
        value = record.get(name)
        row.append(math.nan if value is None else (math.inf if value != value else float(value)))
    return row


@dataclass
class BucketStats:
    kept: int = 0
    computed: int = 0
    dropped: int = 0  # previous attributes of tracks no longer in the catalog
    without_analysis: int = 0  # catalog tracks with no analysis (yet)
    z_threshold: float = 8.0
    tempo: np.ndarray = field(default_factory=lambda: np.zeros(len(TEMPO_EDGES) - 1, dtype=np.int64))
    keys: np.ndarray = field(default_factory=lambda: np.zeros(12, dtype=np.int64))
    modes: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    quality: QualityStats = field(default_factory=lambda: QualityStats(ATTRIBUTE_RANGES))
    _ids: list[Sequence[str] | np.ndarray] = field(default_factory=list)  # id blocks, as given
    _rows: list[np.ndarray] = field(default_factory=list)  # row blocks, in record order
    _pending: int = 0

    def observe(self, track_id: str, row: Sequence[float]) -> None:
        self.observe_many([track_id], np.asarray(row, dtype=np.float64).reshape(1, -1))

    def observe_many(self, track_ids: Sequence[str] | np.ndarray, rows: np.ndarray) -> None:
        """``observe`` for a run of records at once (their rows as a matrix; ids as str, or ASCII bytes)."""
        self._ids.append(track_ids)
        self._rows.append(rows)
        self._pending += len(rows)
        if self._pending >= BATCH:
            self._fold()

    def _fold(self) -> None:
        if not self._rows:
            return
        x = np.concatenate(self._rows).astype(np.float64, copy=False).reshape(-1, len(VALUE_FIELDS))
        col = {name: x[:, i] for name, i in _COLUMN.items()}
        beat = col["beat_tempo"]
        tempo = np.where(np.isnan(beat) | (beat == 0), col["tempo"], beat)  # the beat grid's tempo, else the summary's
        tempo = tempo[np.isfinite(tempo)]
        bins = np.clip(np.searchsorted(TEMPO_EDGES, tempo, side="right") - 1, 0, len(self.tempo) - 1)
        self.tempo += np.bincount(bins, minlength=len(self.tempo))
        self.keys += _counts(col["key"], 12)
        self.modes += _counts(col["mode"], 2)
        loudness = np.where(np.isnan(col["loudness"]), col["loudness_mean"], col["loudness"])
        self.quality.observe_columns(_Ids(self._ids), {**{n: col[n] for n in ATTRIBUTE_RANGES if n in col},
                                                 "loudness": loudness}, col["segment_rate"])
        self._ids, self._rows, self._pending = [], [], 0

    def manifest_fields(self) -> dict:
        """The bucket manifest's ``counts``, ``summary`` and ``quality``."""
        self._fold()
        return {"counts": {"kept": self.kept, "computed": self.computed, "dropped": self.dropped,
                           "without_analysis": self.without_analysis},
                "summary": {"tempo_histogram": {"edges": TEMPO_EDGES, "counts": self.tempo.tolist()},
                            "key_histogram": self.keys.tolist(), "mode_counts": self.modes.tolist()},
                "quality": self.quality.report(self.z_threshold)}


class _Ids(Sequence[str]):
    """The ids of the pending blocks as one sequence, without joining them (only the few flagged are looked up)."""

    def __init__(self, blocks: list):
        self.blocks, self.ends = blocks, np.cumsum([len(b) for b in blocks])

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, i):
        block = int(np.searchsorted(self.ends, i, side="right"))
        value = self.blocks[block][i - (int(self.ends[block - 1]) if block else 0)]
        return value.decode() if isinstance(value, bytes) else value


def _counts(values: np.ndarray, size: int) -> np.ndarray:
    """How often each of 0..size-1 occurs (nulls and out-of-range values are the quality gate's business)."""
    valid = values[(values >= 0) & (values < size)]
    return np.bincount(valid.astype(np.int64), minlength=size)


def combine_summaries(entries: list[BucketManifest]) -> dict:
    """Sum the per-bucket histograms into the dataset manifest's summary (read by the status view)."""
    total = {"tempo_histogram": {"edges": TEMPO_EDGES, "counts": [0] * (len(TEMPO_EDGES) - 1)},
             "key_histogram": [0] * 12, "mode_counts": [0, 0]}
    for entry in entries:
        s = entry.summary
        total["tempo_histogram"]["counts"] = [a + b for a, b in zip(total["tempo_histogram"]["counts"],
                                                                    s["tempo_histogram"]["counts"], strict=True)]
        total["key_histogram"] = [a + b for a, b in zip(total["key_histogram"], s["key_histogram"], strict=True)]
        total["mode_counts"] = [a + b for a, b in zip(total["mode_counts"], s["mode_counts"], strict=True)]
    return total
