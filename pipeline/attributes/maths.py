"""Per-track attributes computed from an analysis: tempo from the beat grid, key from chroma, loudness, timbre.

Why a separate, pure module: the same maths runs inside the batch jobs, the demo and the tests,
so it must not touch Luigi, mrjob or any I/O. Everything is vectorised over the segment and beat
arrays (the only loops are over the handful of output fields), so a 1000-segment track costs a
few dozen numpy calls.

Contract: ``compute`` never raises on well-typed ``AnalysisArrays`` and never returns NaN or
infinity. A field that cannot be computed (no beats, silence, zero durations, ...) is ``None``
and ``null_reasons[field]`` says why. A final sanitiser turns any non-finite value that slipped
through into ``None`` with a reason; the normal paths are written so that it never fires.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.formats.arrays import AnalysisArrays

ALGORITHM_VERSION = "1.0.0"

# Analyzer summary fields copied as they are (None where absent), in output order.
SUMMARY_FLOATS = ("duration", "tempo", "tempo_confidence", "key_confidence", "mode_confidence",
                  "time_signature_confidence", "loudness", "end_of_fade_in", "start_of_fade_out")
SUMMARY_INTS = ("key", "mode", "time_signature")
SUMMARY_FIELDS = ("duration", "tempo", "tempo_confidence", "key", "key_confidence", "mode", "mode_confidence",
                  "time_signature", "time_signature_confidence", "loudness", "end_of_fade_in", "start_of_fade_out")

# Key profiles, tonic first (index 0 = tonic, 1 = minor second, ...).
# Krumhansl & Kessler (1982), the profiles of the Krumhansl-Schmuckler algorithm: the default.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Temperley (1999, "What's key for key?") and Aarden (2003) profiles, kept for comparison runs.
TEMPERLEY_MAJOR = np.array([5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0])
TEMPERLEY_MINOR = np.array([5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0])
AARDEN_MAJOR = np.array([17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587,
                         0.291248, 22.062, 0.145624, 8.15494, 0.232998, 4.95122])
AARDEN_MINOR = np.array([18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362,
                         0.702494, 18.6161, 4.56621, 1.93186, 7.37619, 1.75623])

# Loudness dynamic range: the spread between these duration-weighted percentiles of loudness_max.
RANGE_LOW, RANGE_HIGH = 0.05, 0.95
_RANGE_QUANTILES = np.array([RANGE_LOW, RANGE_HIGH])
_TINY = 1e-12


def key_profiles(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """The 24 rotated profiles as a (24, 12) matrix: rows 0-11 major on C..B, rows 12-23 minor on C..B.

    Row ``k`` is the profile rolled so that its tonic sits on pitch class ``k``; building the
    matrix once turns the whole key search into one matrix-vector product.
    """
    idx = (np.arange(12)[None, :] - np.arange(12)[:, None]) % 12  # idx[k, p] = interval of p above k
    return np.vstack((major[idx], minor[idx])).astype(np.float64)


PROFILES = {
    "krumhansl": key_profiles(KK_MAJOR, KK_MINOR),
    "temperley": key_profiles(TEMPERLEY_MAJOR, TEMPERLEY_MINOR),
    "aarden": key_profiles(AARDEN_MAJOR, AARDEN_MINOR),
}
DEFAULT_PROFILE = "krumhansl"


def _unit_rows(profiles: np.ndarray) -> np.ndarray:
    """Profiles centred and scaled to unit length, so a dot product with a centred chroma is a correlation."""
    p = profiles - profiles.mean(axis=1, keepdims=True)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


_UNIT_PROFILES = {id(p): _unit_rows(p) for p in PROFILES.values()}  # once, not per track


def key_correlations(chroma: np.ndarray, profiles: np.ndarray = PROFILES[DEFAULT_PROFILE]) -> np.ndarray:
    """Pearson correlation of chroma vector(s) with each of the 24 key profiles.

    Works on one (12,) vector or a batch (n, 12), hence batch-friendly for many tracks at once.
    A flat chroma (zero variance) has no defined correlation: its row is all NaN, and callers
    must check ``chroma_is_flat`` first.

    Returns
    -------
    numpy.ndarray
        Shape (..., 24): columns 0-11 major keys C..B, 12-23 minor keys C..B, values in [-1, 1].
    """
    c = np.asarray(chroma, dtype=np.float64)
    c = c - c.mean(axis=-1, keepdims=True)
    p = _UNIT_PROFILES[id(profiles)] if id(profiles) in _UNIT_PROFILES else _unit_rows(profiles)
    norm = np.sqrt(np.add.reduce(c * c, axis=-1, keepdims=True))  # numpy.linalg.norm's sum, without its overhead
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c @ p.T) / norm


def chroma_is_flat(chroma: np.ndarray) -> bool:
    """True when a chroma vector has (numerically) no variance, so no key can be correlated with it."""
    if chroma.size == 0:
        return True
    low, high = float(chroma.min()), float(chroma.max())
    return high - low <= _TINY * max(1.0, abs(low), abs(high))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles of ``values`` where each value counts with its weight (midpoint interpolation).

    Why weighted: a 2-second sustained chord should weigh more than a 50 ms click when asking
    how loud the track usually is. Requires at least one positive weight.
    """
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(q, cdf, v)


def _weighted_mean(x: np.ndarray, w: np.ndarray, total: float) -> np.ndarray:
    """Mean of rows of ``x`` (n,) or (n, k) weighted by ``w`` (n,), whose sum ``total`` must be > 0."""
    return (w @ x) / total  # same as tensordot over axis 0, without its Python overhead


def _finite_or_none(value, cast):
    """``cast(value)`` when it is a finite number, else None (bool is rejected: it is not a measurement)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = cast(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if math.isfinite(out) else None


def summary_fields(summary: dict | None, reasons: dict[str, str]) -> dict:
    """Copy the analyzer's track-level fields; key/mode -1 (Spotify's "not detected") become None."""
    summary = summary or {}
    out: dict = {}
    for name in SUMMARY_FIELDS:
        raw = summary.get(name)
        value = _finite_or_none(raw, int if name in SUMMARY_INTS else float)
        if name in ("key", "mode") and value == -1:
            value = None
            reasons[name] = "analyzer reported -1 (no key/mode detected)"
        elif value is None:
            reasons[name] = "absent from the analyzer summary" if raw is None else f"not a finite number: {raw!r}"
        out[name] = value
    return out


def beat_fields(beats_start: np.ndarray, reasons: dict[str, str]) -> dict:
    """``beat_tempo`` = 60 / median inter-beat interval (BPM); ``tempo_stability`` = 1 - CV of the intervals.

    The median makes the tempo robust to a few missed or doubled beats. Stability is the
    coefficient of variation (std / mean) of the inter-beat intervals subtracted from 1 and
    clipped to [0, 1]: 1 is a metronome, real tracks sit at 0.97-0.996, and a tempo change
    or erratic beat tracking pulls it down. Non-positive intervals (duplicate beats) are dropped.
    """
    beats = np.sort(np.asarray(beats_start, dtype=np.float64))
    ibi = np.diff(beats[np.isfinite(beats)])
    ibi = ibi[ibi > 0]
    out = {"beat_tempo": None, "tempo_stability": None}
    if ibi.size < 1:
        reasons["beat_tempo"] = "fewer than 2 distinct beats"
    else:
        out["beat_tempo"] = float(60.0 / _median(ibi))
    if ibi.size < 2:
        reasons["tempo_stability"] = "fewer than 3 distinct beats (needs 2 inter-beat intervals)"
    else:
        mean = float(ibi.sum() / ibi.size)
        deviation = ibi - mean
        std = math.sqrt(float((deviation * deviation).sum()) / ibi.size)  # numpy's std, without its overhead
        out["tempo_stability"] = min(max(1.0 - std / mean, 0.0), 1.0)
    return out


def _median(x: np.ndarray) -> float:
    """``numpy.median`` of a non-empty 1-D array (same partition, same result), at a third of its cost."""
    half = x.size // 2
    if x.size % 2:
        return float(np.partition(x, half)[half])
    part = np.partition(x, (half - 1, half))
    return float((part[half - 1] + part[half]) / 2)


def segment_weights(a: AnalysisArrays) -> np.ndarray:
    """Per-segment weight = duration in seconds; non-finite or negative durations weigh 0."""
    d = np.asarray(a.seg_duration, dtype=np.float64)
    return np.where(np.isfinite(d) & (d > 0), d, 0.0)


def _no_weight_reason(a: AnalysisArrays) -> str:
    return "no segments" if a.n_segments == 0 else "all segments have zero duration"


def key_fields(chroma: np.ndarray | None, profiles: np.ndarray, reasons: dict[str, str], why: str) -> dict:
    """Krumhansl-Schmuckler: the key/mode whose profile correlates best with the mean chroma.

    ``key_estimate_confidence`` is that best Pearson correlation clipped to [0, 1]. The margin
    over the runner-up was considered, but the relative major/minor pair (same pitch set)
    always correlates closely, so the margin says more about mode ambiguity than about the fit.
    """
    names = ("estimated_key", "estimated_mode", "key_estimate_confidence")
    if chroma is None or chroma_is_flat(chroma):
        reason = why if chroma is None else "mean chroma is flat (no tonal centre)"
        reasons.update(dict.fromkeys(names, reason))
        return dict.fromkeys(names)
    r = key_correlations(chroma, profiles)
    best = int(np.argmax(r))
    return {"estimated_key": best % 12, "estimated_mode": 1 if best < 12 else 0,
            "key_estimate_confidence": min(max(float(r[best]), 0.0), 1.0)}


def mean_chroma(a: AnalysisArrays, w: np.ndarray, total: float) -> tuple[np.ndarray | None, str]:
    """Duration-weighted mean pitch vector, or (None, reason) when there is nothing to average or all is silent."""
    if total <= 0:
        return None, _no_weight_reason(a)
    chroma = _weighted_mean(np.asarray(a.pitches, dtype=np.float64), w, total)
    if not np.isfinite(chroma).all():
        return None, "pitch vectors hold non-finite values"
    if chroma.max() <= 0:
        return None, "all pitch vectors are zero (silence)"
    return chroma, ""


def spread_fields(a: AnalysisArrays, w: np.ndarray, total: float, reasons: dict[str, str]) -> dict:
    """Duration-weighted loudness level/range and timbre mean/std.

    ``loudness_range`` is the 95th minus the 5th duration-weighted percentile of segment
    ``loudness_max`` (dB): a robust dynamic range that ignores a stray click or dropout.
    Dispersion fields need at least two segments with positive duration.
    """
    names = ("loudness_mean", "loudness_range", "timbre_mean", "timbre_std")
    if total <= 0:
        reasons.update(dict.fromkeys(names, _no_weight_reason(a)))
        return dict.fromkeys(names)
    loud = np.asarray(a.seg_loudness_max, dtype=np.float64)
    timbre = np.asarray(a.timbre, dtype=np.float64)
    t_mean = _weighted_mean(timbre, w, total)
    out = {"loudness_mean": float(_weighted_mean(loud, w, total)), "loudness_range": None,
           "timbre_mean": t_mean.tolist(), "timbre_std": None}
    if np.count_nonzero(w) < 2:
        reasons.update(dict.fromkeys(("loudness_range", "timbre_std"), "fewer than 2 segments with positive duration"))
        return out
    # sorting the float32 originals gives the same order as their exact float64 copies, in half the time
    low, high = weighted_quantile(a.seg_loudness_max, w, _RANGE_QUANTILES)
    out["loudness_range"] = float(high - low)
    deviation = timbre - t_mean
    deviation *= deviation
    out["timbre_std"] = np.sqrt(np.maximum(_weighted_mean(deviation, w, total), 0.0)).tolist()
    return out


def track_duration(a: AnalysisArrays) -> float | None:
    """The analyzer's duration, or the end of the last segment when the summary lacks it."""
    duration = _finite_or_none((a.summary or {}).get("duration"), float)
    if duration is not None and duration > 0:
        return duration
    if a.n_segments == 0:
        return None
    end = float(np.max(np.asarray(a.seg_start, dtype=np.float64) + np.asarray(a.seg_duration, dtype=np.float64)))
    return end if math.isfinite(end) and end > 0 else None


def sanitise(record: dict, reasons: dict[str, str]) -> dict:
    """Safety net: any non-finite float (or vector holding one) becomes None with a reason."""
    for name, value in record.items():
        bad = (isinstance(value, float) and not math.isfinite(value)) or (
            isinstance(value, list) and not all(map(math.isfinite, value)))
        if bad:
            record[name] = None
            reasons[name] = "non-finite result (bad input values)"
    return record


def compute(a: AnalysisArrays, *, profile: str = DEFAULT_PROFILE) -> dict:
    """The attributes record (``attributes.avsc``) of one track.

    Parameters
    ----------
    a : AnalysisArrays
        The decoded analysis.
    profile : str
        Key-profile family for the key estimate (``krumhansl`` by default; ``temperley`` and
        ``aarden`` exist for comparison runs, see docs/attributes.md).

    Returns
    -------
    dict
        ``track_id``, the analyzer summary fields, the computed fields, ``null_reasons``
        (``[{field, reason}]``, one per None field) and ``algorithm_version``. No value is NaN or infinite.
    """
    reasons: dict[str, str] = {}
    with np.errstate(all="ignore"):  # only non-finite inputs can trip these; ``sanitise`` reports them
        record = _fields(a, profile, reasons)
    sanitise(record, reasons)
    record["null_reasons"] = [{"field": field, "reason": why} for field, why in sorted(reasons.items())]
    record["algorithm_version"] = ALGORITHM_VERSION
    return record


def null_reasons(record: dict) -> dict[str, str]:
    """Field -> why it is null, from a record of any attributes format (format 1 stored a map)."""
    reasons = record["null_reasons"]
    return dict(reasons) if isinstance(reasons, dict) else {r["field"]: r["reason"] for r in reasons}


def upgrade(record: dict) -> dict:
    """A record of any attributes format as one of the current format (2: ``null_reasons`` as records).

    Format 1 wrote ``null_reasons`` as an Avro map, which polars (and arrow-based readers) cannot
    read. Yesterday's records of format 1 are decoded, upgraded here and re-encoded, once.
    """
    if isinstance(record["null_reasons"], dict):
        reasons = sorted(record["null_reasons"].items())
        record = {**record, "null_reasons": [{"field": field, "reason": why} for field, why in reasons]}
    return record


def _fields(a: AnalysisArrays, profile: str, reasons: dict[str, str]) -> dict:
    """Every field of the record except ``null_reasons`` and ``algorithm_version``, in schema order."""
    w = segment_weights(a)
    total = float(w.sum())  # once per track: every weighted mean divides by it
    chroma, chroma_why = mean_chroma(a, w, total)
    record: dict = {"track_id": a.track_id, "source_updated_at": a.source_updated_at,
                    **summary_fields(a.summary, reasons),
                    **beat_fields(a.beats_start, reasons),
                    **key_fields(chroma, PROFILES[profile], reasons, chroma_why),
                    **spread_fields(a, w, total, reasons)}
    record["chroma_profile"] = None if chroma is None else (chroma / chroma.max()).tolist()
    if chroma is None:
        reasons["chroma_profile"] = chroma_why
    duration = track_duration(a)
    record["segment_rate"] = None if duration is None else a.n_segments / duration
    if duration is None:
        reasons["segment_rate"] = "track duration unknown"
    record["section_count"] = a.section_count
    return record
