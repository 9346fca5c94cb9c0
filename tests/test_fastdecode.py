"""The simdjson fast path gives exactly the reference path's outcome, and declines what it cannot vouch for.

Reference: ``decode_body`` + ``unwrap`` + ``to_record`` (orjson), as the ingest converted before.
Under test: ``body_to_record`` (what the ingest's converters and in-thread decode call now). For
every document both give the same record (byte-identical once Avro-written) or the same error
message; ``fast_record`` shows which documents the fast path itself handled.
"""

from __future__ import annotations

import gzip
import io
import zlib

import fastavro
import numpy as np
import orjson
import pytest

from pipeline.demo.synthetic import synth_analysis
from pipeline.errors import InvalidDocumentError
from pipeline.formats import ANALYSIS, schema
from pipeline.formats.fastdecode import fast_record
from pipeline.ingest.convert import convert
from pipeline.source.document import body_to_record, decode_body, unwrap
from pipeline.source.limits import BodyTooLarge
from tests.helpers import real_analysis_files

CAP = 4 * 1024 * 1024


def reference(body: bytes, key: str = "t.json", max_bytes: int = CAP) -> dict | str:
    try:
        analysis, wrapper = unwrap(decode_body(body, key=key, max_bytes=max_bytes))
        return to_record_ref(analysis, key, wrapper)
    except InvalidDocumentError as exc:
        return f"{type(exc).__name__}: {exc}"


def to_record_ref(analysis: dict, key: str, wrapper: dict | None) -> dict:
    from pipeline.formats.analysis import to_record
    return to_record(analysis, track_id="TRAAAAA12345678901", source_key=key, source_updated_at=7, wrapper=wrapper)


def fast(body: bytes, key: str = "t.json", max_bytes: int = CAP) -> dict | str:
    try:
        return body_to_record(body, key=key, content_encoding=None, max_bytes=max_bytes,
                              track_id="TRAAAAA12345678901", updated=7)
    except InvalidDocumentError as exc:
        return f"{type(exc).__name__}: {exc}"


def took_fast_path(body: bytes) -> bool:
    return fast_record(body, track_id="TRAAAAA12345678901", source_key="t.json", source_updated_at=7) is not None


def avro_bytes(record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema(ANALYSIS), record)
    return out.getvalue()


def assert_same(body: bytes, key: str = "t.json") -> dict | str:
    want, got = reference(body, key), fast(body, key)
    assert got == want
    if isinstance(want, dict):
        assert avro_bytes(got) == avro_bytes(want)
    return got


def small_doc(n_segments: int = 6, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return synth_analysis(rng, "TRAAAAA12345678901", 120.0, 2, 1, 4, 8.0, n_segments, timestamp=1_700_000_000)


@pytest.mark.parametrize("path", real_analysis_files(), ids=lambda p: p.name[:40])
def test_real_fixtures_convert_identically(path):
    body = path.read_bytes()
    got = assert_same(body)
    assert isinstance(got, dict)


def test_the_fast_path_handles_the_plain_real_fixtures():
    """Not a vacuous equivalence: most real documents are bare analyses the fast path converts itself."""
    fast_ones = [p.name for p in real_analysis_files() if took_fast_path(p.read_bytes())]
    assert len(fast_ones) >= len(real_analysis_files()) - 2, fast_ones


@pytest.mark.parametrize("seed", range(8))
def test_synthetic_documents_convert_identically_through_the_fast_path(seed):
    rng = np.random.default_rng(seed)
    doc = synth_analysis(rng, f"TR{seed:016d}", float(rng.uniform(60, 180)), seed % 12, seed % 2, 3 + seed % 3,
                         float(rng.uniform(30, 300)), int(rng.integers(50, 400)))
    if seed % 2:  # a loudness_end on some segments only, as in real analyses
        for segment in doc["segments"][::7]:
            segment["loudness_end"] = -42.5
    body = orjson.dumps(doc)
    assert took_fast_path(body)
    assert isinstance(assert_same(body), dict)
    gzipped = assert_same(gzip.compress(body, mtime=0), key="t.json.gz")
    assert gzipped == {**assert_same(body), "source_key": "t.json.gz"}


def _raw(doc: dict, old: bytes, new: bytes) -> bytes:
    """The JSON text of ``doc`` with its first ``old`` replaced by ``new`` (for what orjson cannot write)."""
    text = orjson.dumps(doc)
    assert old in text
    return text.replace(old, new, 1)


def _set(path: tuple, value) -> bytes:
    doc = small_doc()
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return orjson.dumps(doc)


def _drop(path: tuple) -> bytes:
    doc = small_doc()
    target = doc
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return orjson.dumps(doc)


def _edge_cases() -> dict[str, bytes]:
    doc = small_doc()
    bar = orjson.dumps(doc["bars"][0])
    seg = orjson.dumps(doc["segments"][0])
    pitches = orjson.dumps(doc["segments"][1]["pitches"])
    return {
        # parse level, where simdjson and orjson disagree or must both refuse
        "bom": b"\xef\xbb\xbf" + orjson.dumps(doc),
        "trailing-whitespace": orjson.dumps(doc) + b" \n\t\r",
        "trailing-garbage": orjson.dumps(doc) + b" x",
        "trailing-nul": orjson.dumps(doc) + b"\x00",
        "truncated": orjson.dumps(doc)[:-40],
        "empty": b"",
        "top-level-list": orjson.dumps([doc]),
        "top-level-empty-object": b"{}",
        "nan-literal": _raw(doc, b'"tempo":120.0', b'"tempo":NaN'),
        "infinity-in-bar": _raw(doc, bar, bar.replace(b'"start":', b'"start":Infinity,"x":', 1)),
        "1e400-in-bar": _raw(doc, bar, bar.replace(b'"confidence":', b'"confidence":1e400,"x":', 1)),
        "1e400-in-pitches": _raw(doc, pitches, b"[1e400" + pitches[pitches.index(b","):]),
        "int-2**64-in-bar": _raw(doc, bar, b'{"start":18446744073709551616,"duration":1,"confidence":0.5}'),
        "int-2**64-1-in-bar": _raw(doc, bar, b'{"start":18446744073709551615,"duration":1,"confidence":0.5}'),
        "int-below-int64-in-bar": _raw(doc, bar, b'{"start":-9223372036854775809,"duration":1,"confidence":0.5}'),
        "huge-int-in-pitches": _raw(doc, pitches, b"[18446744073709551615" + pitches[pitches.index(b","):]),
        "minus-zero-int": _raw(doc, bar, b'{"start":-0,"duration":-0.0,"confidence":0}'),
        "lone-high-surrogate": _raw(doc, b'"analyzer_version":"4.0.0"', b'"analyzer_version":"\\ud800"'),
        "lone-low-surrogate": _raw(doc, b'"analyzer_version":"4.0.0"', b'"analyzer_version":"\\udc00x"'),
        "surrogate-pair": _raw(doc, b'"analyzer_version":"4.0.0"', b'"analyzer_version":"\\ud83c\\udfb5 \\u00e9"'),
        "invalid-utf8": _raw(doc, b'"analyzer_version":"4.0.0"', b'"analyzer_version":"4.0\xff"'),
        "control-char-in-string": _raw(doc, b'"analyzer_version":"4.0.0"', b'"analyzer_version":"4\t0"'),
        "escaped-key-in-bar": _raw(doc, bar, bar.replace(b'"start"', b'"st\\u0061rt"', 1)),
        "escaped-top-level-key": _raw(doc, b'"segments":', b'"segm\\u0065nts":'),
        "bracket-in-string": _set(("meta", "detailed_status"), "[ok]"),
        # fastdecode._counted: the ':' and '[' of the text against those read (strings included)
        "colon-in-string": _set(("meta", "detailed_status"), "ok: 12:30 [x]"),
        "colon-in-unknown-top-level-key": _set(("a:b[",), {"c:d": ["e:[f"]}),
        "escaped-colon-in-string": _raw(doc, b'"analyzer_version":"4.0.0"', b'"analyzer_version":"4\\u003a0"'),
        "escaped-bracket-in-string": _raw(doc, b'"analyzer_version":"4.0.0"', b'"analyzer_version":"4\\u005B0"'),
        "escaped-backslash-u003a": _raw(doc, b'"analyzer_version":"4.0.0"', b'"analyzer_version":"4\\\\u003a0"'),
        "extra-key-in-bar-and-escaped-colon": _raw(doc, bar, bar[:-1] + b',"x":1}').replace(
            b'"analyzer_version":"4.0.0"', b'"analyzer_version":"4\\u003A0"'),
        "duplicate-key-in-bar-and-colon-gone": _raw(doc, bar, bar[:-1] + b',"start":99.5}').replace(
            b'"platform":', b'"platform":"x:y","p2":'),
        "nested-pitches-and-escaped-bracket": _set(("segments", 1, "pitches"), [0.5] * 11 + [[0.5]]).replace(
            b'"analyzer_version":"4.0.0"', b'"analyzer_version":"\\u005b"'),
        "loudness-end-nan-string": _set(("segments", 1, "loudness_end"), "nan"),
        "loudness-end-missing-but-extra-key": _set(("segments", 1, "loudness_edn"), -3.0),
        "minus-zero-int-in-pitches": _raw(doc, pitches, b"[-0" + pitches[pitches.index(b","):]),
        "deep-unknown-key-200": _raw(doc, b'"meta":', b'"deep":' + b"[" * 200 + b"]" * 200 + b',"meta":'),
        "deep-unknown-key-1000": _raw(doc, b'"meta":', b'"deep":' + b"[" * 1000 + b"]" * 1000 + b',"meta":'),
        "deep-unknown-key-1030": _raw(doc, b'"meta":', b'"deep":' + b"[" * 1030 + b"]" * 1030 + b',"meta":'),
        # duplicate keys: orjson keeps the last, simdjson's lookup the first
        "duplicate-top-level-segments": _raw(doc, b'"segments":', b'"segments":[],"segments":'),
        "duplicate-top-level-bars": _raw(doc, b'"bars":', b'"bars":[],"bars":'),
        "duplicate-key-in-bar": _raw(doc, bar, bar[:-1] + b',"start":99.5}'),
        "duplicate-key-in-segment": _raw(doc, seg, seg[:-1] + b',"loudness_max":-1.5}'),
        "duplicate-loudness-end": _raw(doc, seg, seg[:-1] + b',"loudness_end":-3.0,"loudness_end":-4.0}'),
        "duplicate-pitches": _raw(doc, seg, seg[:-1] + b',"pitches":' + pitches + b"}"),
        "duplicate-key-in-meta": _raw(doc, b'"meta":{', b'"meta":{"analyzer_version":"x",'),
        "duplicate-key-in-track": _raw(doc, b'"track":{', b'"track":{"tempo":1.0,'),
        "duplicate-key-in-unknown-object": _raw(doc, b'"meta":', b'"odd":{"a":1,"b":[2],"a":{"c":3}},"meta":'),
        "duplicate-list-in-unknown-object": _raw(doc, b'"meta":', b'"odd":{"a":[1],"a":2},"meta":'),
        # wrapper shapes
        "wrapped-analysis": orjson.dumps({"analysis": doc, "id": "x"}),
        "wrapped-response": orjson.dumps({"response": {"track": {"analysis": doc, "id": "y"}, "status": 0}}),
        # per-item keys, missing keys, wrong types
        "unknown-key-in-segment": _set(("segments", 2, "foo"), [1, "a"]),
        "unknown-key-in-bar": _set(("bars", 0, "foo"), 1),
        "unknown-key-in-tatum": _set(("tatums", 3, "x"), None),
        "missing-start-in-beat": _drop(("beats", 1, "start")),
        "missing-pitches": _drop(("segments", 0, "pitches")),
        "missing-loudness-max": _drop(("segments", 0, "loudness_max")),
        "segments-missing": _drop(("segments",)),
        "bars-missing": _drop(("bars",)),
        "meta-missing": _drop(("meta",)),
        "track-missing": _drop(("track",)),
        "sections-missing": _drop(("sections",)),
        "bar-start-true": _set(("bars", 0, "start"), True),
        "bar-start-null": _set(("bars", 0, "start"), None),
        "bar-start-string": _set(("bars", 0, "start"), "1.5"),
        "bar-not-object": _set(("bars", 0), [1.0, 2.0, 0.5]),
        "bar-number": _set(("bars", 0), 3),
        "bars-object": _set(("bars",), {"start": 1}),
        "bars-null": _set(("bars",), None),
        "bars-empty": _set(("bars",), []),
        "segments-empty": _set(("segments",), []),
        "segments-object": _set(("segments",), {}),
        "segments-null": _set(("segments",), None),
        "segment-not-object": _set(("segments", 1), 5),
        "segment-start-true": _set(("segments", 1, "start"), True),
        "segment-start-string": _set(("segments", 1, "start"), "0.5"),
        "segment-scalar-beyond-float32": _set(("segments", 1, "loudness_max"), 1e39),
        "segment-start-beyond-float32": _set(("segments", 1, "start"), 1e300),
        "pitches-11": _set(("segments", 1, "pitches"), [0.5] * 11),
        "pitches-13": _set(("segments", 1, "pitches"), [0.5] * 13),
        "pitches-ints": _set(("segments", 1, "pitches"), [1] * 12),
        "pitches-with-true": _set(("segments", 1, "pitches"), [True] + [0.5] * 11),
        "pitches-with-null": _set(("segments", 1, "pitches"), [None] + [0.5] * 11),
        "pitches-with-string": _set(("segments", 1, "pitches"), ["0.5"] + [0.5] * 11),
        "pitches-nested": _set(("segments", 1, "pitches"), [[0.5]] * 12),  # simdjson's as_buffer flattens
        "pitches-nested-mixed": _set(("segments", 1, "pitches"), [0.5] * 10 + [[0.5, 0.5], []]),
        "timbre-nested-one": _set(("segments", 1, "timbre"), [0.5] * 11 + [[0.5]]),
        "pitches-object": _set(("segments", 1, "pitches"), {"a": 1}),
        "timbre-beyond-float32": _set(("segments", 1, "timbre"), [1e39] + [0.5] * 11),
        "timbre-minus-zero": _set(("segments", 1, "timbre"), [-0.0] * 12),
        "loudness-end-null": _set(("segments", 1, "loudness_end"), None),
        "loudness-end-string": _set(("segments", 1, "loudness_end"), "-3"),
        "loudness-end-true": _set(("segments", 1, "loudness_end"), True),
        "loudness-end-int": _set(("segments", 1, "loudness_end"), -3),
        "loudness-end-beyond-float32": _set(("segments", 1, "loudness_end"), -1e39),
        # the small parts, converted by to_record itself
        "meta-garbage": _set(("meta",), "garbage"),
        "track-null": _set(("track",), None),
        "track-tempo-string": _set(("track", "tempo"), "fast"),
        "track-key-huge": _set(("track", "key"), 2 ** 40),
        "track-key-float": _set(("track", "key"), 3.0),
        "track-duration-1e308": _set(("track", "duration"), 1e308),
        "meta-url-with-credentials": _set(("meta", "detailed_status"), "https://x.example/a?X-Amz-Signature=abc&k=1"),
        "unknown-top-level-key": _set(("extra_thing",), {"a": [1, 2, {"b": None}], "c": "d"}),
        "sections-with-unknown-key": _set(("sections", 0, "colour"), "blue"),
        "sections-missing-start": _drop(("sections", 0, "start")),
        "section-not-object": _set(("sections", 0), 1),
    }


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_and_malformed_documents_get_the_same_outcome(name):
    assert_same(EDGE_CASES[name])


# A duplicate key in meta, track or an unknown key's object is read as orjson reads it (the last), but it
# adds a ':' that fastdecode._counted cannot tell from one in a series: declined, for the reference path.
FAST = {"trailing-whitespace", "minus-zero-int", "surrogate-pair", "deep-unknown-key-200", "bars-empty",
        "segments-empty", "bars-missing", "meta-missing", "track-missing",
        "sections-missing", "pitches-ints", "timbre-minus-zero", "loudness-end-int", "int-2**64-1-in-bar",
        "meta-url-with-credentials", "unknown-top-level-key", "sections-with-unknown-key", "bar-start-true",
        "segment-start-true", "huge-int-in-pitches", "bar-start-string", "segment-start-string",
        "loudness-end-string", "loudness-end-true", "loudness-end-beyond-float32", "track-duration-1e308",
        "track-key-float",
        "escaped-key-in-bar", "escaped-top-level-key", "minus-zero-int-in-pitches", "bracket-in-string",
        "colon-in-string", "colon-in-unknown-top-level-key"}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_the_fast_path_declines_everything_unusual(name):
    """Only plain documents (and harmless variations the fast path reads exactly as orjson) take it."""
    assert took_fast_path(EDGE_CASES[name]) == (name in FAST)


HARD_NUMBERS = ["0.1000000000000000055511151231257827021181583404541015625", "2.2250738585072011e-308",
                "4.9406564584124654e-324", "2.4703282292062327e-324", "1.7976931348623157e308", "9007199254740993",
                "123456789012345678901234567890e-10", "-0.0", "1e-400", "0.30000000000000004", "3.4028235677973366e38",
                "-9223372036854775808", "9223372036854775807", "1E+2", "1.5e-45", "7.038531e-26", "-1e-400", "-0.0e5"]


def test_hard_numbers_read_the_same_in_series_and_vectors():
    """simdjson and orjson both round correctly; checked where the fast path reads numbers itself."""
    doc = small_doc()
    text = orjson.dumps(doc)
    for number in HARD_NUMBERS:
        bar = orjson.dumps(doc["bars"][1])
        pitches = orjson.dumps(doc["segments"][2]["pitches"])
        body = text.replace(bar, b'{"start":%s,"duration":%s,"confidence":0.5}' % (number.encode(), number.encode()))
        body = body.replace(pitches, b"[%s" % number.encode() + pitches[pitches.index(b","):])
        outcome = assert_same(body)
        assert took_fast_path(body) == isinstance(outcome, dict), number  # declined: beyond float32 in the pitches


def test_size_cap_and_gzip_errors_are_unchanged():
    body = orjson.dumps(small_doc())
    with pytest.raises(BodyTooLarge, match="over the 100-byte cap"):
        body_to_record(body, key="t.json", content_encoding=None, max_bytes=100, track_id="T", updated=None)
    bomb = gzip.compress(body, mtime=0)
    assert fast(bomb, "t.json.gz", max_bytes=len(body) - 1) == reference(bomb, "t.json.gz", max_bytes=len(body) - 1)
    assert "BodyTooLarge" in fast(bomb, "t.json.gz", max_bytes=len(body) - 1)
    for broken in (bomb[:-12], bomb + b"junk", bomb[:10] + zlib.compress(b"x")):
        assert fast(broken, "t.json.gz") == reference(broken, "t.json.gz")


def test_convert_reports_the_same_reasons_as_before():
    """The pooled converter's entry point: same record, or the same ledger reason."""
    from pipeline.ops.quality import analysis_values, range_problem
    for name in ("pitches-11", "nan-literal", "wrapped-analysis", "duplicate-key-in-bar", "track-duration-1e308",
                 "deep-unknown-key-1000"):
        body = EDGE_CASES[name]
        ok, got = convert(body, "t.json", None, CAP, "TRAAAAA12345678901", 7)
        want = reference(body)
        if isinstance(want, str):
            assert (ok, got) == (False, want.split(": ", 1)[1])
        else:
            problem = range_problem(analysis_values(want)[0])
            assert (ok, got) == ((False, problem) if problem else (True, want))
