"""Attribute maths: each formula on literal inputs, degenerate inputs, synthetic ground truth, Avro, real data."""

from __future__ import annotations

import io
import math

import fastavro
import numpy as np
import pytest

from pipeline.attributes.agreement import agreement, attributes_of_file, main, markdown_table
from pipeline.attributes.maths import (
    ALGORITHM_VERSION,
    KK_MAJOR,
    KK_MINOR,
    PROFILES,
    compute,
    key_correlations,
    null_reasons,
    weighted_quantile,
)
from pipeline.demo.synthetic import kk_profile, synth_analysis
from pipeline.formats import schema
from pipeline.formats.analysis import to_record
from pipeline.formats.arrays import AnalysisArrays, arrays
from tests.helpers import assert_close, real_analysis_files

TID = "A" * 22
SUMMARY = {"duration": 10.0, "tempo": 120.0, "tempo_confidence": 0.5, "key": 2, "key_confidence": 0.4, "mode": 1,
           "mode_confidence": 0.3, "time_signature": 4, "time_signature_confidence": 0.9, "loudness": -8.5,
           "end_of_fade_in": 0.1, "start_of_fade_out": 9.5}
COMPUTED = ("beat_tempo", "tempo_stability", "estimated_key", "estimated_mode", "key_estimate_confidence",
            "loudness_mean", "loudness_range", "timbre_mean", "timbre_std", "chroma_profile", "segment_rate")


def make(durations=(1.0, 1.0), beats=(0.0, 0.5, 1.0, 1.5), pitches=None, timbre=None, loudness=None,
         summary=None, sections=()) -> AnalysisArrays:
    """Hand-built arrays: contiguous segments of the given durations, sensible defaults for the rest."""
    d = np.asarray(durations, dtype=np.float64)
    n = len(d)
    start = np.concatenate(([0.0], np.cumsum(d)[:-1])) if n else np.empty(0)
    f4 = np.zeros(n, dtype=np.float32)
    default_pitches = np.tile(kk_profile(2, 1) / 6.35, (n, 1))  # D major
    return AnalysisArrays(
        track_id=TID, summary=dict(SUMMARY) if summary is None else summary, section_count=len(sections),
        bars_start=np.asarray(beats, dtype=np.float64)[::4], beats_start=np.asarray(beats, dtype=np.float64),
        beats_confidence=np.ones(len(beats), dtype=np.float32), tatums_start=np.empty(0),
        seg_start=start, seg_duration=d, seg_confidence=f4, seg_loudness_start=f4, seg_loudness_max_time=f4,
        seg_loudness_max=np.full(n, -10.0, dtype=np.float32) if loudness is None else np.asarray(loudness, np.float32),
        seg_loudness_end=np.full(n, np.nan, dtype=np.float32),
        pitches=(default_pitches if pitches is None else np.asarray(pitches, dtype=np.float64)).reshape(n, 12),
        timbre=np.zeros((n, 12)) if timbre is None else np.asarray(timbre, dtype=np.float64).reshape(n, 12))


def assert_valid(record: dict) -> None:
    """No NaN/inf anywhere, every null field explained, and the record fits attributes.avsc strictly."""
    for name, value in record.items():
        values = value if isinstance(value, list) else [value]
        assert all(not isinstance(v, float) or math.isfinite(v) for v in values), f"{name} = {value!r}"
        if value is None and name != "source_updated_at":  # provenance, not an attribute
            assert null_reasons(record).get(name), f"{name} is null without a reason"
    for name in null_reasons(record):
        assert record[name] is None, f"{name} has a reason but a value {record[name]!r}"
    for name in ("timbre_mean", "timbre_std", "chroma_profile"):
        assert record[name] is None or len(record[name]) == 12
    assert_avro_round_trip([record])


def assert_avro_round_trip(records: list[dict]) -> None:
    buf = io.BytesIO()
    fastavro.writer(buf, schema("attributes"), records, strict=True)
    buf.seek(0)
    back = list(fastavro.reader(buf))
    for original, read in zip(records, back, strict=True):
        assert_close(original, read, rel=1e-6)  # vectors are stored as float32


def analysis_arrays(doc: dict, track_id: str = TID) -> AnalysisArrays:
    return arrays(to_record(doc, track_id=track_id, source_key="k"))


# ---------------------------------------------------------------- formulas on literal inputs


def test_beat_tempo_is_60_over_median_interval_and_stability_is_one_minus_cv():
    rec = compute(make(beats=(0.0, 0.5, 1.0, 1.5)))
    assert rec["beat_tempo"] == pytest.approx(120.0)
    assert rec["tempo_stability"] == pytest.approx(1.0)
    rec = compute(make(beats=(0.0, 0.5, 1.0, 1.6)))  # intervals 0.5, 0.5, 0.6
    ibi = np.array([0.5, 0.5, 0.6])
    assert rec["beat_tempo"] == pytest.approx(120.0)
    assert rec["tempo_stability"] == pytest.approx(1 - ibi.std() / ibi.mean())


@pytest.mark.parametrize("n", [2, 3, 4, 51, 500, 501])
def test_beat_statistics_equal_numpy_median_and_std_exactly(n):
    """The hand-rolled median and standard deviation (cheaper per track) are numpy's, bit for bit."""
    beats = np.cumsum(np.random.default_rng(n).uniform(0.3, 0.7, n + 1))
    rec = compute(make(beats=beats))
    ibi = np.diff(beats)
    assert rec["beat_tempo"] == float(60.0 / np.median(ibi))
    assert rec["tempo_stability"] == float(np.clip(1.0 - ibi.std() / ibi.mean(), 0.0, 1.0))


def test_weighted_quantiles_of_float32_loudness_equal_those_of_its_float64_copy():
    """The maths sorts the stored float32 loudness (faster); ties (three decimals) must not move the result."""
    rng = np.random.default_rng(2)
    loud32 = np.round(rng.normal(-12, 4, 900), 1).astype(np.float32)  # many ties
    weights = rng.uniform(0.05, 2.0, 900)
    q = np.array([0.05, 0.95])
    assert weighted_quantile(loud32, weights, q).tolist() == \
        weighted_quantile(loud32.astype(np.float64), weights, q).tolist()


def test_beats_are_sorted_and_duplicates_ignored():
    rec = compute(make(beats=(1.5, 0.0, 1.0, 1.0, 0.5)))
    assert rec["beat_tempo"] == pytest.approx(120.0)
    assert rec["tempo_stability"] == pytest.approx(1.0)


def test_stability_is_clipped_at_zero():
    rec = compute(make(beats=(0.0, 0.01, 0.02, 10.0)))  # CV > 1
    assert rec["tempo_stability"] == 0.0


@pytest.mark.parametrize(("key", "mode"), [(2, 1), (9, 0), (0, 1), (11, 0), (6, 1)])
def test_key_profile_as_chroma_gives_that_key_with_confidence_one(key, mode):
    rec = compute(make(pitches=np.tile(np.roll(KK_MAJOR if mode else KK_MINOR, key), (2, 1))))
    assert (rec["estimated_key"], rec["estimated_mode"]) == (key, mode)
    assert rec["key_estimate_confidence"] == pytest.approx(1.0)


def test_profile_matrix_rows_are_rotations():
    assert np.allclose(PROFILES["krumhansl"][2], np.roll(KK_MAJOR, 2))
    assert np.allclose(PROFILES["krumhansl"][12 + 9], np.roll(KK_MINOR, 9))
    for name in PROFILES:
        assert PROFILES[name].shape == (24, 12)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_key_correlations_batch_equals_per_vector(name):
    chroma = np.random.default_rng(1).uniform(0, 1, (5, 12))
    batch = key_correlations(chroma, PROFILES[name])
    assert batch.shape == (5, 24)
    for row, r in zip(chroma, batch, strict=True):
        assert np.allclose(r, [np.corrcoef(row, p)[0, 1] for p in PROFILES[name]])
    custom = PROFILES[name][::-1].copy()  # profiles the module has not prepared in advance
    assert np.allclose(key_correlations(chroma, custom), batch[:, ::-1])


def test_chroma_profile_is_duration_weighted_and_max_normalised():
    c_only, g_only = np.eye(12)[0], np.eye(12)[7]
    rec = compute(make(durations=(1.0, 3.0), pitches=np.stack([c_only, g_only])))
    expected = np.zeros(12)
    expected[0], expected[7] = 1 / 3, 1.0
    assert np.allclose(rec["chroma_profile"], expected)


def test_loudness_mean_is_duration_weighted():
    rec = compute(make(durations=(1.0, 3.0), loudness=(-10.0, -20.0)))
    assert rec["loudness_mean"] == pytest.approx(-17.5)


def test_loudness_range_is_weighted_95th_minus_5th_percentile():
    rec = compute(make(durations=np.ones(21), loudness=np.arange(-20.0, 1.0)))
    # midpoint CDF (i + 0.5) / 21: the 5th percentile is at i = 0.55, the 95th at i = 19.45
    assert rec["loudness_range"] == pytest.approx(18.9)
    # weights 1 and 3 put the CDF midpoints at 0.125 and 0.625: the median interpolates to 7.5
    assert weighted_quantile(np.array([10.0, 0.0]), np.array([3.0, 1.0]), np.array([0.5])) == pytest.approx(7.5)


def test_timbre_mean_and_std_are_duration_weighted():
    rec = compute(make(durations=(1.0, 3.0), timbre=np.stack([np.zeros(12), np.full(12, 2.0)])))
    assert np.allclose(rec["timbre_mean"], 1.5)
    assert np.allclose(rec["timbre_std"], math.sqrt((1 * 1.5**2 + 3 * 0.5**2) / 4))


def test_segment_rate_and_section_count():
    rec = compute(make(durations=np.full(10, 0.5), sections=[{"start": 0.0}, {"start": 2.0}, {"start": 4.0}]))
    assert rec["segment_rate"] == pytest.approx(10 / SUMMARY["duration"])
    assert rec["section_count"] == 3
    no_duration = compute(make(durations=np.full(10, 0.5), summary={**SUMMARY, "duration": None}))
    assert no_duration["segment_rate"] == pytest.approx(10 / 5.0)  # falls back to the end of the last segment


def test_summary_fields_are_carried_and_record_is_complete():
    rec = compute(make(sections=[{"start": 0.0}]))
    for name, value in SUMMARY.items():
        assert rec[name] == value
    assert rec["track_id"] == TID and rec["algorithm_version"] == ALGORITHM_VERSION
    assert null_reasons(rec) == {}
    assert list(rec) == [f["name"] for f in schema("attributes")["fields"]]
    assert_valid(rec)


def test_undetected_key_and_absent_summary_are_null_with_reasons():
    rec = compute(make(summary={**SUMMARY, "key": -1, "mode": -1, "loudness": None}))
    assert rec["key"] is None and rec["mode"] is None and rec["loudness"] is None
    assert "-1" in null_reasons(rec)["key"] and "absent" in null_reasons(rec)["loudness"]
    assert_valid(rec)
    assert_valid(compute(make(summary={})))


# ---------------------------------------------------------------- degenerate inputs


@pytest.mark.parametrize(("beats", "null"), [((), {"beat_tempo", "tempo_stability"}),
                                             ((3.0,), {"beat_tempo", "tempo_stability"}),
                                             ((3.0, 3.0), {"beat_tempo", "tempo_stability"}),
                                             ((1.0, 1.5), {"tempo_stability"})])
def test_too_few_beats(beats, null):
    rec = compute(make(beats=beats))
    assert {n for n in ("beat_tempo", "tempo_stability") if rec[n] is None} == null
    assert_valid(rec)


def test_zero_segments():
    rec = compute(make(durations=()))
    for name in COMPUTED[2:-1]:
        assert rec[name] is None and null_reasons(rec)[name] == "no segments"
    assert rec["segment_rate"] == 0.0 and rec["beat_tempo"] == pytest.approx(120.0)
    assert_valid(rec)
    bare = compute(make(durations=(), beats=(), summary={}))
    assert all(bare[name] is None for name in COMPUTED)
    assert_valid(bare)


def test_one_segment_has_no_spread():
    rec = compute(make(durations=(2.0,)))
    assert rec["loudness_mean"] == pytest.approx(-10.0) and rec["estimated_key"] == 2
    assert rec["loudness_range"] is None and rec["timbre_std"] is None
    assert "fewer than 2 segments" in null_reasons(rec)["loudness_range"]
    assert_valid(rec)


def test_zero_durations():
    rec = compute(make(durations=(0.0, 0.0, 0.0)))
    for name in ("estimated_key", "chroma_profile", "loudness_mean", "timbre_mean"):
        assert rec[name] is None and "zero duration" in null_reasons(rec)[name]
    assert_valid(rec)


def test_silence_and_flat_chroma():
    silent = compute(make(pitches=np.zeros((2, 12))))
    assert silent["chroma_profile"] is None and silent["estimated_key"] is None
    assert "silence" in null_reasons(silent)["estimated_key"]
    assert silent["loudness_mean"] is not None
    assert_valid(silent)
    flat = compute(make(pitches=np.ones((2, 12))))
    assert flat["chroma_profile"] == [1.0] * 12 and flat["estimated_key"] is None
    assert "flat" in null_reasons(flat)["estimated_key"]
    assert_valid(flat)


def test_non_finite_inputs_are_sanitised_never_raised():
    bad = make(loudness=(np.nan, -3.0), timbre=np.stack([np.full(12, np.inf), np.zeros(12)]),
               summary={**SUMMARY, "tempo": math.nan}, beats=(0.0, np.nan, 0.5, 1.0))
    rec = compute(bad)
    assert rec["loudness_mean"] is None and rec["timbre_mean"] is None and rec["tempo"] is None
    assert rec["beat_tempo"] == pytest.approx(120.0)
    assert_valid(rec)


# ---------------------------------------------------------------- synthetic ground truth


def test_synthetic_tempo_and_key_are_recovered():
    rng = np.random.default_rng(20261101)
    n, tempo_ok, key_ok = 200, 0, 0
    for i in range(n):
        key, mode = i % 12, (i // 12) % 2
        tempo = float(rng.uniform(65, 200))
        doc = synth_analysis(rng, TID, tempo, key, mode, int(rng.choice([3, 4])), float(rng.uniform(60, 300)),
                             int(rng.integers(40, 400)))
        rec = compute(analysis_arrays(doc))
        tempo_ok += abs(rec["beat_tempo"] - tempo) / tempo <= 0.01
        key_ok += (rec["estimated_key"], rec["estimated_mode"]) == (key, mode)
        assert null_reasons(rec) == {}
    assert tempo_ok == n
    assert key_ok / n >= 0.95, key_ok


# ---------------------------------------------------------------- real fixtures


def test_real_fixtures_give_complete_valid_records():
    records = [attributes_of_file(path) for path in real_analysis_files()]
    for rec in records:
        assert_valid(rec)
        assert all(rec[name] is not None for name in COMPUTED)
    assert_avro_round_trip(records)


def test_agreement_with_the_analyzer_on_real_fixtures(capsys):
    files = real_analysis_files()
    result = agreement(files)
    with capsys.disabled():
        print()
        print(markdown_table(result))
    assert result["count"] == len(files) == len(result["tracks"])
    assert result["tempo_within_2pct"] >= 0.90
    assert result["key_agreement"] >= 0.70
    # measured: tempo 15/16, key 12/16, key+mode 11/16; guard against silent regressions
    assert result["key_mode_agreement"] >= 11 / 16


def test_agreement_cli(capsys):
    files = [str(p) for p in real_analysis_files()[:2]]
    assert main(files) == 0
    out = capsys.readouterr().out
    assert all(p.rsplit("/", 1)[1] in out for p in files)
    assert main([]) == 2
