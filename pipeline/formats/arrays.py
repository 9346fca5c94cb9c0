"""Decoded view of an analysis record: numpy arrays over the packed columns, no copies.

This is the input of the attribute maths. Building it costs one ``frombuffer`` per
column, which is why the warehouse stores the time series packed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.formats.analysis import section_count
from pipeline.formats.packed import F4, F8, unpack


@dataclass(frozen=True)
class AnalysisArrays:
    """One track's analysis as arrays (seconds, dB, 0..1 confidences; rows of 12 for vectors)."""

    track_id: str
    summary: dict  # the TrackSummary record: tempo, key, mode, ... (None where absent)
    section_count: int
    bars_start: np.ndarray
    beats_start: np.ndarray
    beats_confidence: np.ndarray
    tatums_start: np.ndarray
    seg_start: np.ndarray
    seg_duration: np.ndarray
    seg_confidence: np.ndarray
    seg_loudness_start: np.ndarray
    seg_loudness_max_time: np.ndarray
    seg_loudness_max: np.ndarray
    seg_loudness_end: np.ndarray  # NaN where the source omitted it
    pitches: np.ndarray  # (n_segments, 12)
    timbre: np.ndarray  # (n_segments, 12)
    source_updated_at: int | None = None  # which analysis this is (the catalog's analysis_updated_at)

    @property
    def n_segments(self) -> int:
        return len(self.seg_start)


def arrays(record: dict) -> AnalysisArrays:
    """Decode an ``analysis.avsc`` record (as read by fastavro) into arrays."""
    seg = record["segments"]
    return AnalysisArrays(
        track_id=record["track_id"],
        summary=record["track"],
        section_count=section_count(record["sections"]),
        bars_start=unpack(record["bars"]["start"], F8),
        beats_start=unpack(record["beats"]["start"], F8),
        beats_confidence=unpack(record["beats"]["confidence"], F4),
        tatums_start=unpack(record["tatums"]["start"], F8),
        seg_start=unpack(seg["start"], F8),
        seg_duration=unpack(seg["duration"], F8),
        seg_confidence=unpack(seg["confidence"], F4),
        seg_loudness_start=unpack(seg["loudness_start"], F4),
        seg_loudness_max_time=unpack(seg["loudness_max_time"], F4),
        seg_loudness_max=unpack(seg["loudness_max"], F4),
        seg_loudness_end=unpack(seg["loudness_end"], F4),
        pitches=unpack(seg["pitches"], F4, 12),
        timbre=unpack(seg["timbre"], F4, 12),
        source_updated_at=record.get("source_updated_at"),
    )
