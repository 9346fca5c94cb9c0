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

TRACK_ID_RE = re.compile(r"^[0-9A-Za-z]{22}$")


def bucket_of(track_id: str, buckets: int) -> int:
    return zlib.crc32(track_id.encode("utf-8")) % buckets


def is_track_id(value: object) -> bool:
    """A 22-character base62 Spotify id."""
    return isinstance(value, str) and TRACK_ID_RE.match(value) is not None
