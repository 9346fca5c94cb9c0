"""What every analysis source (S3 bucket, local folder) offers the ingest."""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.errors import InvalidDocumentError
from pipeline.source.limits import NO_RESERVATION, MemoryBudget, Reservation

OK, MISSING, INVALID, FAILED = "ok", "missing", "invalid", "failed"


@dataclass(frozen=True)
class Fetched:
    """The result of fetching one document: a body, or why there is none."""

    outcome: str  # OK | MISSING | INVALID (refused before reading) | FAILED
    body: bytes | None = None
    content_encoding: str | None = None
    reason: str = ""
    attempts: int = 1
    connection_error: bool = False  # the endpoint could not be reached at all
    reservation: Reservation = NO_RESERVATION  # memory held for the body until the engine has decoded it


@dataclass
class RequestStats:
    """Requests actually sent (retries included), for the run summary, costs and reliability numbers."""

    gets: int = 0
    lists: int = 0
    heads: int = 0
    retries: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict:
        return {"gets": self.gets, "lists": self.lists, "heads": self.heads, "retries": self.retries,
                "bytes": self.bytes}


def safe_relative_key(key: str) -> str:
    """Check a key from the metadata dump; refuse (never rewrite) one that is not a plain relative key.

    ``sub/../x`` or ``a//b`` are refused rather than normalised: S3 keys are literal strings, so the
    normalised key names another object than the one the catalog lists.
    """
    if not key or key.startswith("/") or "\\" in key or any(not c.isprintable() for c in key):
        raise InvalidDocumentError(f"analysis key {key!r} is not a relative key (absolute, empty, backslash "
                                   "or control characters)")
    if posixpath.normpath(key) != key:
        if posixpath.normpath(key).startswith(".."):
            raise InvalidDocumentError(f"analysis key {key!r} escapes the source prefix")
        raise InvalidDocumentError(f"analysis key {key!r} has an empty, '.' or '..' segment; keys are used "
                                   "literally, never normalised")
    if key == ".." or key.startswith("../"):
        raise InvalidDocumentError(f"analysis key {key!r} escapes the source prefix")
    return key


def announced_gzip(key: str, content_encoding: str | None) -> bool:
    """Whether a body will be gzip, as far as can be told before reading it."""
    return key.endswith(".gz") or (content_encoding or "").lower() == "gzip"


UNBOUNDED = MemoryBudget(1, 1 << 62, expansion=0)  # no budget given: no cap, no waiting (tools, tests)


def key_for(track_id: str, analysis_key: str | None, template: str) -> str:
    """The source key of a track: the dump's own key, or the configured template."""
    key = analysis_key or template.format(track_id=track_id, shard=track_id[:2])
    return safe_relative_key(key)


class Source:
    """Fetches analysis documents by key relative to the source URL."""

    url: str
    stats: RequestStats

    def fetch(self, key: str, budget: MemoryBudget | None = None) -> Fetched:
        """One document; with a ``budget``, refused by its length or read under its cap and reservation."""
        raise NotImplementedError

    def list_objects(self) -> Iterator[tuple[str, int]]:
        """(relative key, size) of every object under the source prefix, and nothing outside it."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where the source is, for error messages (never credentials)."""
        return self.url
