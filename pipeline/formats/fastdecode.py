"""JSON text → analysis record without building ~15,000 Python floats: the ingest's fast path.

Why: per track, ``orjson.loads`` spent ~1.6–2 ms creating a Python object for every number and
every ``{start, duration, confidence}`` of a 200 kB analysis, and ``to_record`` then turned them
back into arrays. simdjson (``pysimdjson``) parses to a tape instead; the segments' pitches and
timbre come out as 12-double buffers and the series' scalars are read through its proxies at C
speed (``itemgetter``), so only the small parts (meta, track, sections, unknown keys) become
Python objects — and those go through ``analysis.to_record`` itself, as does the packing.

It is a pure optimisation: ``fast_record`` returns the record ``to_record`` would build, or
``None`` whenever the document is anything but plain — a parse error, a wrapper shape, a
per-item key the schema does not model, a duplicate key, a missing or mistyped value, a value out
of range, a byte-order mark — and the caller then takes the reference path (orjson +
``to_record``), which decides and words every rejection exactly as before. Where simdjson and
orjson differ it must not decide: a BOM (simdjson skips it, orjson refuses it) is checked first;
duplicate keys (simdjson's lookup finds the first, orjson keeps the last) and keys the schema does
not model are refused by counting, and ``as_buffer`` flattens nested arrays, so the text must hold
exactly the ':' and '[' of what was read (``_counted``); ``true`` in a 12-vector and ints beyond 64
bits fail simdjson and fall back; numbers beyond a double (``1e400``), NaN literals, lone
surrogates and invalid UTF-8 fail both.
"""

from __future__ import annotations

import itertools
from operator import itemgetter

import numpy as np
import orjson
import simdjson

from pipeline.formats.analysis import (
    INTERVAL_KEYS,
    SEGMENT_SCALARS,
    SERIES,
    interval_columns,
    segment_columns,
    to_record,
)

BOM = b"\xef\xbb\xbf"
# escapes that decode to the characters ``_counted`` counts in the raw text (hex digits in either case)
COUNTED_ESCAPES = (b"\\u003a", b"\\u003A", b"\\u005b", b"\\u005B")
COLON, BRACKET = ord(":"), ord("[")
_INTERVAL = itemgetter(*INTERVAL_KEYS)
_SEGMENT = itemgetter(*SEGMENT_SCALARS, "pitches", "timbre")
_SCALARS = itemgetter(*range(len(SEGMENT_SCALARS)))
_VECTORS = itemgetter(len(SEGMENT_SCALARS), len(SEGMENT_SCALARS) + 1)
_LOUDNESS_END = itemgetter("loudness_end")
_SEGMENT_PAIRS = len(SEGMENT_SCALARS) + 2  # the keys of _SEGMENT; loudness_end adds one where present


class NotPlain(Exception):
    """The document needs the reference path (never leaves this module)."""


def fast_record(text: bytes, *, track_id: str, source_key: str, source_updated_at: int | None = None) -> dict | None:
    """The ``to_record`` record of a bare analysis's JSON ``text``, or ``None``: take the reference path."""
    if text[:3] == BOM:
        return None
    try:
        return _record(text, track_id, source_key, source_updated_at)
    except Exception:  # noqa: BLE001 - anything unusual is the reference path's to judge and word
        return None


def _record(text: bytes, track_id: str, source_key: str, source_updated_at: int | None) -> dict | None:
    # one parser per document: a parser is not thread-safe (the engine converts in threads), and
    # one whose proxies outlive an exception cannot parse again; allocating it costs ~0.04 ms
    doc = simdjson.Parser().parse(text)
    if not isinstance(doc, simdjson.Object):
        return None
    keys = list(doc.keys())
    if "segments" not in keys or len(set(keys)) != len(keys):
        return None
    packed, rest = {}, {}
    pairs = arrays = 0  # read from the series: the text must hold exactly these (see _counted)
    for key in keys:
        value = doc[key]
        if key == "segments":
            packed[key], with_end = _segments(value)
            n = packed[key]["count"]
            pairs += _SEGMENT_PAIRS * n + with_end
            arrays += 1 + 2 * n
        elif key in SERIES:
            cols = _columns(value, _INTERVAL, len(INTERVAL_KEYS))
            packed[key] = interval_columns(cols)
            pairs += len(INTERVAL_KEYS) * len(cols)
            arrays += 1
        else:
            rest[key] = _python(value)
    if not _counted(text, rest, len(packed) + pairs, arrays):
        return None
    return to_record(rest, track_id=track_id, source_key=source_key, source_updated_at=source_updated_at,
                     packed=packed)


def _counted(text: bytes, rest: dict, pairs: int, arrays: int) -> bool:
    """The text holds no key/value pair and no array beyond those read: no duplicate key, no key the
    schema does not model, no array that ``as_buffer`` flattened into a 12-vector.

    Every ':' of the text outside a string separates a pair, and every '[' opens an array. The
    small parts' own (``rest``, as orjson writes them back: one ':' per pair, one '[' per list, and
    the ':' and '[' inside their strings) are counted exactly; the series' are ``pairs`` and
    ``arrays``, those read. Each count of the text can only be larger than this (a duplicate key
    read once, an extra key, a nested array), never smaller, unless an escape (``\\u003a``) wrote a
    ':' or '[' of a string: such a text is declined. Equality therefore means nothing else is there.
    """
    if text.find(b"\\") >= 0 and any(escape in text for escape in COUNTED_ESCAPES):  # find: memchr, fast
        return False
    small = orjson.dumps(rest)
    chars = np.frombuffer(text, dtype=np.uint8)  # numpy counts a frequent byte ~3x faster than bytes.count
    return (np.count_nonzero(chars == COLON) == pairs + small.count(b":")
            and np.count_nonzero(chars == BRACKET) == arrays + small.count(b"["))


def _python(value):
    """A small part of the document (meta, track, sections, an unknown key) as orjson would give it."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()  # builds a dict key by key: a duplicate keeps the last value, as orjson
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _columns(items, getter: itemgetter, width: int) -> np.ndarray:
    """(n, width) float64 of the objects of ``items``, each holding at least the keys ``getter`` reads."""
    if not isinstance(items, simdjson.Array):
        raise NotPlain
    n = len(items)
    if not n:
        return np.empty((0, width))
    flat = np.fromiter(itertools.chain.from_iterable(map(getter, items)), dtype=np.float64, count=n * width)
    if not np.isfinite(flat).all():
        raise NotPlain
    return flat.reshape(n, width)


def _segments(items) -> tuple[dict, int]:
    """(the packed segments, how many have a loudness_end), in one pass over the proxies for their values
    (another counts each one's pairs)."""
    if not isinstance(items, simdjson.Array):
        raise NotPlain
    n = len(items)
    if not n:
        return segment_columns(np.empty((0, len(SEGMENT_SCALARS))), np.empty((0, 2, 12)), np.empty(0)), 0
    # the eight keys read below, plus loudness_end where a segment has nine pairs: nothing else, no duplicate
    pairs = np.fromiter(map(len, items), dtype=np.int64, count=n)
    with_end = pairs == _SEGMENT_PAIRS + 1
    if not (with_end | (pairs == _SEGMENT_PAIRS)).all():
        raise NotPlain
    rows = list(map(_SEGMENT, items))  # the six scalars, pitches, timbre (KeyError if one is absent)
    scalars = np.fromiter(itertools.chain.from_iterable(map(_SCALARS, rows)), dtype=np.float64,
                          count=n * len(SEGMENT_SCALARS)).reshape(n, len(SEGMENT_SCALARS))
    arrays = list(itertools.chain.from_iterable(map(_VECTORS, rows)))
    if not (np.fromiter(map(len, arrays), dtype=np.int64, count=2 * n) == 12).all():
        raise NotPlain
    # as_buffer flattens nested arrays ([[0.5]] * 12 reads as 12 doubles): ``_counted`` declines any
    # document whose text holds more '[' than the arrays read, so a vector here held 12 numbers
    # (a comprehension: ``methodcaller`` with a keyword argument costs twice as much per call)
    vectors = np.frombuffer(b"".join([a.as_buffer(of_type="d") for a in arrays]), dtype=np.float64).reshape(n, 2, 12)
    ends = np.full(n, np.nan)
    ended = int(np.count_nonzero(with_end))
    if ended:  # compress walks the array once (indexing a simdjson array is a linear scan)
        ends[with_end] = np.fromiter(map(_LOUDNESS_END, itertools.compress(items, with_end.tolist())),
                                     dtype=np.float64, count=ended)
    if not (np.isfinite(scalars).all() and np.isfinite(ends[with_end]).all() and np.isfinite(vectors).all()):
        raise NotPlain
    return segment_columns(scalars, vectors, ends), ended
