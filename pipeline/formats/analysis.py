"""The analysis record: Echo Nest JSON ↔ Avro record ↔ numpy arrays.

``to_record`` validates and converts an analysis document into the record of
``analysis.avsc``; ``to_document`` is its inverse (used by round-trip tests and
exports); ``arrays`` decodes a record's packed columns into numpy arrays for the
attribute maths. The time series are converted column-wise with ``itemgetter`` and
one ``numpy.array`` call per column group: no Python-level loop over segments on the
happy path; the slow path only runs to name the exact item at fault.
"""

from __future__ import annotations

import itertools
import math
from operator import itemgetter, methodcaller

import numpy as np
import orjson

from pipeline.errors import InvalidDocumentError
from pipeline.formats import raw_schema
from pipeline.formats.packed import F4, F8, pack, unpack
from pipeline.formats.urls import strip_credentials

INTERVAL_KEYS = ("start", "duration", "confidence")
SEGMENT_SCALARS = ("start", "duration", "confidence", "loudness_start", "loudness_max_time", "loudness_max")
SEGMENT_KEYS = frozenset(SEGMENT_SCALARS + ("loudness_end", "pitches", "timbre"))
SERIES = ("bars", "beats", "tatums")
KNOWN_TOP = frozenset(("meta", "track", "sections", "segments") + SERIES)
REDACTED_KEY = "redacted.credentials"  # extra key: {where: [credential parameters removed]}, not part of the source
_LOUDNESS_END = methodcaller("get", "loudness_end", math.nan)  # absent -> NaN, at C speed


def _record_fields(record_name: str) -> dict[str, str]:
    """Field name → Avro primitive of a nested record of analysis.avsc (nullable unions unwrapped)."""
    for field in raw_schema("analysis")["fields"]:
        if isinstance(field["type"], dict) and field["type"].get("name") == record_name:
            return {f["name"]: f["type"][1] for f in field["type"]["fields"]}
    for field in raw_schema("analysis")["fields"]:
        items = field["type"].get("items") if isinstance(field["type"], dict) else None
        if isinstance(items, dict) and items.get("name") == record_name:
            return {f["name"]: (f["type"][1] if isinstance(f["type"], list) else f["type"]) for f in items["fields"]}
    raise KeyError(record_name)


META_FIELDS = _record_fields("AnalysisMeta")
TRACK_FIELDS = _record_fields("TrackSummary")
SECTION_FIELDS = {f["name"]: f["value_type"] for f in next(
    f["type"]["fields"] for f in raw_schema("analysis")["fields"] if f["name"] == "sections") if f["name"] != "count"}
SECTION_REQUIRED = ("start", "duration", "confidence")


class OutOfRangeError(InvalidDocumentError):
    """A value of the right JSON type that its Avro type cannot hold: refused even where types are lenient."""


INT_RANGES = {"int": (-(2 ** 31), 2 ** 31 - 1), "long": (-(2 ** 63), 2 ** 63 - 1)}


def _scalar(value, avro_type: str, where: str):
    """Convert a JSON scalar to an Avro primitive, or raise naming ``where`` and the value.

    Whatever the schema cannot store is refused here, per document, so the writer never meets it:
    an integer beyond Avro's ``int``/``long`` range, a float that is not a whole number in an integer
    field, a number too large for a double.
    """
    if value is None:
        return None
    if avro_type == "string":
        if isinstance(value, str):
            return value
    elif isinstance(value, bool):
        pass
    elif avro_type in INT_RANGES:
        if isinstance(value, float) and value.is_integer():
            if abs(value) > 2 ** 53:  # the text was rounded on parsing: its exact integer is lost
                raise OutOfRangeError(f"{where} is {_short(value)}, beyond the integers a JSON number "
                                      f"can carry exactly into an Avro {avro_type}")
            value = int(value)
        if isinstance(value, int):
            low, high = INT_RANGES[avro_type]
            if low <= value <= high:
                return value
            raise OutOfRangeError(f"{where} is {_short(value)}, outside the Avro {avro_type} range {low}..{high}")
    elif isinstance(value, float) and math.isfinite(value):
        return value
    elif isinstance(value, int):
        if abs(value) <= 2 ** 1023:
            return float(value)
        raise OutOfRangeError(f"{where} is {_short(value)}, beyond the range of a double")
    raise InvalidDocumentError(f"{where} is {_short(value)}, expected {avro_type}")


def _json(value, where: str) -> str:
    """A value kept in ``extra`` as JSON text; one nested deeper than orjson writes (254) is refused, not a crash."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidDocumentError(f"{where} cannot be kept: {exc}") from None


def _short(value) -> str:
    """``repr`` of a value, cut to a length a ledger reason can hold."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}…({len(text)} characters)"


def _summary(obj, fields: dict[str, str], where: str, extra: dict[str, str], lenient: bool) -> dict:
    """Convert a summary object; unknown keys (and, if lenient, mistyped ones) go to ``extra``."""
    if not isinstance(obj, dict):  # "track": "garbage" (or null) must not become a record of nulls
        raise InvalidDocumentError(f"{where} is {_short(obj)}, expected an object")
    out = dict.fromkeys(fields)
    for key, value in obj.items():
        if key in fields:
            try:
                out[key] = _scalar(value, fields[key], f"{where}.{key}")
                continue
            except InvalidDocumentError as exc:
                if not lenient or isinstance(exc, OutOfRangeError):
                    raise
        extra[f"{where}.{key}"] = _json(value, f"{where}.{key}")
    return out


def _locate(items: list, keys, where: str, width: int | None = None) -> InvalidDocumentError:
    """Slow path: find the first item that breaks the fast conversion and say why."""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return InvalidDocumentError(f"{where}[{i}] is {type(item).__name__}, expected an object")
        for key in keys:
            if key not in item:
                return InvalidDocumentError(f"{where}[{i}] has no {key!r}")
            value = item[key]
            if width is not None:
                if not isinstance(value, list) or len(value) != width:
                    n = len(value) if isinstance(value, list) else type(value).__name__
                    return InvalidDocumentError(f"{where}[{i}].{key} has {n} values, expected {width}")
                values = value
            else:
                values = [value]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    return InvalidDocumentError(f"{where}[{i}].{key} holds {v!r}, expected a finite number")
    return InvalidDocumentError(f"{where}: values out of range for their storage type")


def _columns(items, keys: tuple[str, ...], where: str) -> np.ndarray:
    """Rows of ``keys`` of every item as a (len(items), len(keys)) array, validated finite."""
    if not isinstance(items, list):
        raise InvalidDocumentError(f"{where} is {type(items).__name__}, expected a list")
    if not items:
        return np.empty((0, len(keys)))
    try:
        flat = np.fromiter(itertools.chain.from_iterable(map(itemgetter(*keys), items)), dtype=np.float64,
                           count=len(items) * len(keys))
    except (KeyError, TypeError, ValueError):
        raise _locate(items, keys, where) from None
    arr = flat.reshape(len(items), len(keys))
    if not np.isfinite(arr).all():
        raise _locate(items, keys, where)
    return arr


def _intervals(items, where: str) -> dict:
    return interval_columns(_columns(items, INTERVAL_KEYS, where))


def interval_columns(cols: np.ndarray) -> dict:
    """The packed series of an (n, 3) array of start, duration, confidence (shared with ``fastdecode``)."""
    return {"count": len(cols), "start": pack(cols[:, 0], F8), "duration": pack(cols[:, 1], F8),
            "confidence": pack(cols[:, 2], F4)}


def _extra_item_keys(items: list, known, where: str, extra: dict[str, str]) -> None:
    """Keep per-item keys the schema does not model as one JSON list per key."""
    if not items:
        return
    unknown = set(itertools.chain.from_iterable(items)) - set(known)
    for key in sorted(unknown):
        extra[f"{where}[].{key}"] = _json([item.get(key) for item in items], f"{where}[].{key}")


def _vectors(items: list, key: str) -> np.ndarray:
    """The 12-value vectors ``key`` of every segment as an (n, 12) array, validated."""
    n = len(items)
    try:
        rows = list(map(itemgetter(key), items))
        if not (np.fromiter(map(len, rows), dtype=np.int64, count=n) == 12).all():
            raise ValueError
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=12 * n)
    except (KeyError, TypeError, ValueError):
        raise _locate(items, (key,), "segments", width=12) from None
    if not np.isfinite(flat).all():
        raise _locate(items, (key,), "segments", width=12)
    return flat.reshape(n, 12)


def _segments(items, extra: dict[str, str]) -> dict:
    scalars = _columns(items, SEGMENT_SCALARS, "segments")
    n = len(scalars)
    if n:
        vectors = np.stack([_vectors(items, "pitches"), _vectors(items, "timbre")], axis=1)
        try:
            ends = np.fromiter(map(_LOUDNESS_END, items), dtype=np.float64, count=n)
        except (TypeError, ValueError):
            raise InvalidDocumentError("segments[].loudness_end holds a value that is not a number") from None
        if np.isinf(ends).any():
            raise InvalidDocumentError("segments[].loudness_end holds an infinite value")
        _extra_item_keys(items, SEGMENT_KEYS, "segments", extra)
    else:
        vectors, ends = np.empty((0, 2, 12)), np.empty(0)
    return segment_columns(scalars, vectors, ends)


def segment_columns(scalars: np.ndarray, vectors: np.ndarray, ends: np.ndarray) -> dict:
    """The packed segments of validated (n, 6) scalars, (n, 2, 12) pitches/timbre and (n,) loudness_end."""
    n = len(scalars)
    as_f4 = scalars.astype(F4)
    if not (np.isfinite(as_f4).all() and np.isfinite(vectors.astype(F4)).all()):
        raise InvalidDocumentError("segments: values exceed the float32 range")
    return {"count": n, "start": pack(scalars[:, 0], F8), "duration": pack(scalars[:, 1], F8),
            "confidence": pack(as_f4[:, 2], F4), "loudness_start": pack(as_f4[:, 3], F4),
            "loudness_max_time": pack(as_f4[:, 4], F4), "loudness_max": pack(as_f4[:, 5], F4),
            "loudness_end": pack(ends, F4), "pitches": pack(vectors[:, 0, :], F4),
            "timbre": pack(vectors[:, 1, :], F4)}


def _sections(items, extra: dict[str, str]) -> dict:
    """Validate the sections (about ten: a Python loop is fine) and pack them column-wise, NaN for absent."""
    if not isinstance(items, list):
        raise InvalidDocumentError(f"sections is {type(items).__name__}, expected a list")
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidDocumentError(f"sections[{i}] is {type(item).__name__}, expected an object")
        section = _summary(item, SECTION_FIELDS, f"sections[{i}]", extra, lenient=False)
        for key in SECTION_REQUIRED:
            if section[key] is None:
                raise InvalidDocumentError(f"sections[{i}] has no {key!r}")
        rows.append([math.nan if section[k] is None else section[k] for k in SECTION_FIELDS])
    cols = np.array(rows, dtype=np.float64).reshape(len(rows), len(SECTION_FIELDS))
    return {"count": len(rows), **{name: pack(cols[:, i], F8) for i, name in enumerate(SECTION_FIELDS)}}


def section_rows(sections) -> list[dict]:
    """The sections of a record as the source's objects (absent fields left out, ints as ints)."""
    if isinstance(sections, list):  # written before sections were packed (analysis format 1)
        return [{k: v for k, v in s.items() if v is not None} for s in sections]
    cols = {name: unpack(sections[name], F8).tolist() for name in SECTION_FIELDS}
    return [{name: (int(v) if SECTION_FIELDS[name] == "int" else v) for name in SECTION_FIELDS
             if not math.isnan(v := cols[name][i])} for i in range(sections["count"])]


def upgrade(record: dict) -> dict:
    """A record of any analysis format as a record of the current one.

    Format 1 kept sections as records; format 2 kept ``extra`` as a map (format 3: a list of
    key/value records, so polars and other arrow-based readers open the files).
    """
    if isinstance(record["sections"], list):
        record = {**record, "sections": _sections(section_rows(record["sections"]), {})}
    if isinstance(record.get("extra"), dict):
        extra = record["extra"]
        record = {**record, "extra": [{"key": key, "value": extra[key]} for key in sorted(extra)]}
    return record


def section_count(sections) -> int:
    return len(sections) if isinstance(sections, list) else sections["count"]


def to_record(doc: dict, *, track_id: str, source_key: str, source_updated_at: int | None = None,
              wrapper: dict | None = None, packed: dict | None = None) -> dict:
    """Validate an (unwrapped) analysis document and convert it to an ``analysis.avsc`` record.

    ``packed``: series (bars, beats, tatums, segments) already validated and packed by
    ``fastdecode``, left out of ``doc``; everything else goes through the same code as here.
    """
    packed = packed or {}
    if "segments" not in doc and "segments" not in packed:
        raise InvalidDocumentError("analysis has no 'segments'")
    extra: dict[str, str] = {}
    record = {
        "track_id": track_id,
        "source_key": source_key,
        "source_updated_at": source_updated_at,
        "meta": _summary(doc.get("meta", {}), META_FIELDS, "meta", extra, lenient=True),
        "track": _summary(doc.get("track", {}), TRACK_FIELDS, "track", extra, lenient=False),
        **{name: packed[name] if name in packed else _intervals(doc.get(name, []), name) for name in SERIES},
        "sections": _sections(doc.get("sections", []), extra),
        "segments": packed["segments"] if "segments" in packed else _segments(doc["segments"], extra),
    }
    for key in sorted(set(doc) - KNOWN_TOP):
        extra[key] = _json(doc[key], key)
    for key in ("meta", "track"):
        if key not in doc:
            extra[f"absent.{key}"] = "true"
    if wrapper is not None:
        extra["wrapper"] = _json(wrapper, "the wrapper")
    _strip_credentials(record, extra)
    record["extra"] = [{"key": key, "value": extra[key]} for key in sorted(extra)]
    return record


def extra_map(record: dict) -> dict[str, str]:
    """The record's ``extra`` as path -> JSON text, for any analysis format (format ≤ 2 stored a map)."""
    extra = record.get("extra") or {}
    return dict(extra) if isinstance(extra, dict) else {e["key"]: e["value"] for e in extra}


def _strip_credentials(record: dict, extra: dict[str, str]) -> None:
    """Remove credential query parameters from every stored URL; ``extra[REDACTED_KEY]`` says what and where."""
    redacted: dict[str, list[str]] = {}
    for section in ("meta", "track"):
        for key, value in record[section].items():
            if isinstance(value, str):
                record[section][key], removed = strip_credentials(value)
                if removed:
                    redacted[f"{section}.{key}"] = removed
    for key, text in extra.items():
        extra[key], removed = strip_credentials(text)
        if removed:
            redacted[key] = removed
    if redacted:
        extra[REDACTED_KEY] = orjson.dumps(redacted).decode()


def _rows(series: dict, names=INTERVAL_KEYS, dtypes=(F8, F8, F4)) -> list[dict]:
    cols = [unpack(series[name], dtype).tolist() for name, dtype in zip(names, dtypes, strict=True)]
    return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]


def to_document(record: dict) -> dict:
    """Rebuild the unwrapped analysis document of a record (values to float32 precision)."""
    extra = extra_map(record)
    doc: dict = {}
    for key in ("meta", "track"):
        if extra.get(f"absent.{key}") != "true":
            doc[key] = {k: v for k, v in record[key].items() if v is not None}
    for name in SERIES:
        doc[name] = _rows(record[name])
    doc["sections"] = section_rows(record["sections"])
    seg = record["segments"]
    segments = _rows(seg, SEGMENT_SCALARS, (F8, F8, F4, F4, F4, F4))
    ends = unpack(seg["loudness_end"], F4).tolist()
    pitches = unpack(seg["pitches"], F4, 12).tolist()
    timbre = unpack(seg["timbre"], F4, 12).tolist()
    for s, end, p, t in zip(segments, ends, pitches, timbre, strict=True):
        if not math.isnan(end):
            s["loudness_end"] = end
        s["pitches"], s["timbre"] = p, t
    doc["segments"] = segments
    for key, text in extra.items():
        value = orjson.loads(text)
        if key.startswith("absent.") or key in ("wrapper", REDACTED_KEY):
            continue
        if "[]." in key:
            series, field = key.split("[].", 1)
            for item, v in zip(doc[series], value, strict=True):
                if v is not None:
                    item[field] = v
        elif "." in key and key.split(".", 1)[0] in ("meta", "track"):
            section, field = key.split(".", 1)
            doc.setdefault(section, {})[field] = value
        elif key.startswith("sections["):
            index, field = key[len("sections["):].split("].", 1)
            doc["sections"][int(index)][field] = value
        else:
            doc[key] = value
    return doc
