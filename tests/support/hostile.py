"""A generator of hostile analysis documents: every way a source object can be wrong, or right at the edge.

Each case is ``(name, body, expected, must)``: the bytes to put in the source, the unwrapped analysis
that must read back equal if the track is ingested, and what the outcome must be (``"ingested"``,
``"invalid"`` or ``None`` when either is acceptable, e.g. a value at a documented range's edge).

Families: numbers at and past the limit of every typed field (Avro int/long/double, float32
columns); wrong JSON types at every level (the document, its sections, items, fields and vector
elements); huge arrays; deep nesting; encodings (BOM, UTF-16, Latin-1, gzip variants, trailing bytes).
"""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from collections.abc import Iterator

from pipeline.formats.analysis import META_FIELDS, TRACK_FIELDS
from pipeline.ops.quality import ANALYSIS_RANGES

INGESTED, INVALID = "ingested", "invalid"
LIMITS = {
    "int": [(2 ** 31 - 1, INGESTED), (-(2 ** 31), INGESTED), (2 ** 31, INVALID), (-(2 ** 31) - 1, INVALID),
            (2.0 ** 31, INVALID), (0, INGESTED)],
    "long": [(2 ** 63 - 1, INGESTED), (-(2 ** 63), INGESTED), (2 ** 63, INVALID), (2 ** 64 - 1, INVALID),
             (-(2 ** 63) - 1, INVALID), (2.0 ** 53, INGESTED), (2.0 ** 60, INVALID)],
    "double": [(1.7976931348623157e308, INGESTED), (-1.7976931348623157e308, INGESTED), (5e-324, INGESTED),
               (-0.0, INGESTED), (10 ** 30, INGESTED)],
    "string": [("", INGESTED), ("\u0000\u001f", INGESTED), ("é🎵\u202e", INGESTED), ("x" * 100_000, INGESTED)],
}
WRONG = [None, "text", 7, 2.5, True, [], {}, [1, "a"], {"k": None}]
SERIES = ("bars", "beats", "tatums")


def _dumps(doc) -> bytes:
    """JSON as any exporter might write it (the standard library: any integer, ASCII escapes)."""
    return json.dumps(doc).encode()


def _edit(good: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(good)
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def _nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def numbers_at_and_past_limits(good: dict) -> Iterator[tuple]:
    for section, fields in (("meta", META_FIELDS), ("track", TRACK_FIELDS)):
        for name, avro_type in fields.items():
            for value, outcome in LIMITS[avro_type]:
                if section == "track" and name in ANALYSIS_RANGES:
                    outcome = None  # at the edge of a documented range: valid or invalid, never a crash
                doc = _edit(good, (section, name), value)
                yield f"{section}.{name}={value!r:.30}", _dumps(doc), doc, outcome
    for key in ("loudness_max", "confidence", "start"):  # float32 (and float64) packed columns
        for value, outcome in ((3.4e38, INGESTED), (3.5e38, None), (1e-46, INGESTED), (1e308, None)):
            doc = _edit(good, ("segments", 0, key), value)
            yield f"segments[0].{key}={value!r}", _dumps(doc), doc, outcome
    for value, outcome in ((3.4e38, INGESTED), (3.5e38, INVALID), (-3.5e38, INVALID)):
        doc = _edit(good, ("segments", 1, "pitches", 3), value)
        yield f"segments[1].pitches[3]={value!r}", _dumps(doc), doc, outcome
    yield "number 1e400", b'{"segments": [], "track": {"tempo": 1e400}}', None, INVALID
    yield "integer of 400 digits", b'{"segments": [], "x": 1' + b"0" * 400 + b"}", None, INVALID


def wrong_types_at_every_level(good: dict) -> Iterator[tuple]:
    for wrong in WRONG:
        yield f"document={wrong!r}", _dumps(wrong), None, INVALID
        for key in ("meta", "track", "sections", "segments", *SERIES):
            doc = _edit(good, (key,), wrong)
            if key in ("meta", "track"):
                outcome = INGESTED if isinstance(wrong, dict) else INVALID
            else:
                outcome = INGESTED if wrong == [] else INVALID
            yield f"{key}={wrong!r}", _dumps(doc), doc, outcome
        for key in ("sections", "segments", *SERIES):
            if not isinstance(wrong, dict):
                doc = _edit(good, (key, 0), wrong)
                yield f"{key}[0]={wrong!r}", _dumps(doc), doc, INVALID
        for path in (("segments", 0, "start"), ("segments", 0, "pitches"), ("segments", 0, "pitches", 0),
                     ("segments", 0, "loudness_end"), ("beats", 0, "confidence"), ("sections", 0, "tempo"),
                     ("track", "tempo"), ("meta", "status_code"), ("meta", "platform")):
            doc = _edit(good, path, wrong)
            yield f"{'.'.join(map(str, path))}={wrong!r}", _dumps(doc), doc, None


def huge_and_deep(good: dict) -> Iterator[tuple]:
    many_bars = [{"start": i * 0.5, "duration": 0.5, "confidence": 0.5} for i in range(60_000)]
    doc = _edit(good, ("bars",), many_bars)
    yield "60k bars", _dumps(doc), doc, INGESTED
    doc = _edit(good, ("segments", 0, "pitches"), [0.5] * 100_000)
    yield "100k pitches", _dumps(doc), doc, INVALID
    doc = _edit(good, ("unknown_list",), list(range(200_000)))
    yield "200k-item unknown key", _dumps(doc), doc, INGESTED
    doc = _edit(good, ("nested",), _nested(200))
    yield "200-deep unknown key", _dumps(doc), doc, INGESTED
    doc = _edit(good, ("meta", "platform"), _nested(100))
    yield "100-deep meta field", _dumps(doc), doc, INGESTED
    yield "5000-deep", b'{"segments": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, INVALID
    yield "5000-deep objects", b'{"segments": [], "x": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", None, INVALID
    doc = _edit(good, ("k" * 10_000,), "long key")
    yield "10k-character key", _dumps(doc), doc, INGESTED


def encodings(good: dict) -> Iterator[tuple]:
    body = _dumps(good)
    yield "utf-8 BOM", b"\xef\xbb\xbf" + body, None, INVALID
    yield "utf-16", json.dumps(good).encode("utf-16"), None, INVALID
    yield "latin-1 string", body.replace(b'"segments"', b'"caf\xe9": 1, "segments"', 1), None, INVALID
    yield "lone surrogate", body.replace(b'"segments"', b'"x": "\\ud800", "segments"', 1), None, INVALID
    yield "escaped NUL and emoji", body.replace(b'"segments"', b'"x\\u0000": "\\ud83c\\udfb5", "segments"', 1), \
        {**good, "x\u0000": "\U0001f3b5"}, INGESTED
    yield "trailing garbage", body + b"}}", None, INVALID
    yield "trailing whitespace", body + b"\r\n\t ", good, INGESTED
    yield "pretty-printed CRLF", json.dumps(good, indent=2).replace("\n", "\r\n").encode(), good, INGESTED
    yield "gzip", gzip.compress(body), good, INGESTED
    yield "gzip twice", gzip.compress(gzip.compress(body)), None, INVALID
    yield "unannounced gzip", gzip.compress(body), good, INGESTED  # a .json key, no Content-Encoding
    yield "gzip members", gzip.compress(body[:50]) + gzip.compress(body[50:]), good, INGESTED
    yield "gzip then garbage", gzip.compress(body) + b"garbage", None, INVALID
    yield "zlib", zlib.compress(body), None, INVALID
    yield "truncated", body[: len(body) // 2], None, INVALID
    yield "wrapped analysis", _dumps({"analysis": good, "id": "x"}), good, INGESTED
    yield "wrapped response", _dumps({"response": {"track": {"analysis": good}}}), good, INGESTED
    yield "wrapped garbage", _dumps({"analysis": "garbage"}), None, INVALID


def hostile_documents(good: dict) -> list[tuple[str, bytes, dict | None, str | None]]:
    """Every case, in a fixed order (names are unique)."""
    cases = [*numbers_at_and_past_limits(good), *wrong_types_at_every_level(good), *huge_and_deep(good),
             *encodings(good)]
    names = [c[0] for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases
