"""Stable bucketing of track ids: the same id lands in the same bucket in every process and language.

Python's ``hash()`` is salted per process, so it cannot be used. CRC-32 (zlib, IEEE
polynomial) of the UTF-8 id modulo the bucket count is cheap, available everywhere
(Java ``java.util.zip.CRC32``, Hive ``crc32()``) and spreads base62 ids evenly.
Every analysis-shaped dataset uses it, so buckets of the same number can be merged
pairwise in one streaming pass with no shuffle (sort-merge-bucket).
"""

from __future__ import annotations

import re
import zlib

TRACK_ID_RE = re.compile(r"[0-9A-Za-z]{22}")  # always used with fullmatch: "$" would accept "X\n"


def bucket_of(track_id: str, buckets: int) -> int:
    return zlib.crc32(track_id.encode("utf-8")) % buckets


def is_track_id(value: object) -> bool:
    """A 22-character base62 Spotify id, matched whole (a trailing newline is not part of an id)."""
    return isinstance(value, str) and TRACK_ID_RE.fullmatch(value) is not None


def track_id_problem(value: object) -> str | None:
    """Why ``value`` is not a track id (None when it is one), for ledgers, logs and API answers."""
    if is_track_id(value):
        return None
    if not isinstance(value, str):
        return f"{value!r} is a {type(value).__name__}, not a track id"
    if any(c.isspace() or not c.isprintable() for c in value):
        return f"{value!r} holds whitespace or control characters; a track id is 22 base62 characters"
    return f"{value!r} is not a track id (22 characters, base62)"
