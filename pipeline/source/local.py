"""Analysis documents from a local folder (``file://`` source), with the same outcomes as S3."""

from __future__ import annotations

import os

from pipeline.source.base import (
    FAILED,
    INVALID,
    MISSING,
    OK,
    UNBOUNDED,
    Fetched,
    RequestStats,
    Source,
    announced_gzip,
)
from pipeline.source.limits import BodyTooLarge, MemoryBudget, read_capped
from pipeline.storage import local_path


class LocalSource(Source):
    def __init__(self, url: str):
        self.url = url
        self.folder = os.path.realpath(local_path(url))  # ConfigError unless a file:// URL
        self.stats = RequestStats()

    def fetch(self, key: str, budget: MemoryBudget | None = None) -> Fetched:
        path = os.path.realpath(os.path.join(self.folder, key))
        if os.path.commonpath([path, self.folder]) != self.folder:
            # a symlink pointing outside: a fact about the source (like a key with ".."), not a transient
            # failure, so it is ledgered as invalid and cannot fail the chunk's failure ratio day after day
            return Fetched(INVALID, reason=f"{key!r} resolves outside {self.folder} (a symlink?)", attempts=0)
        self.stats.add(gets=1)
        budget = budget or UNBOUNDED
        reservation = None
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                reservation = budget.admit(size, announced_gzip(key, None))
                body = read_capped(f, budget.max_document_bytes, size)
        except FileNotFoundError:
            return Fetched(MISSING, reason=f"{path} not found")
        except BodyTooLarge as exc:
            if reservation is not None:
                reservation.release()
            return Fetched(INVALID, reason=str(exc))
        except OSError as exc:
            if reservation is not None:
                reservation.release()
            return Fetched(FAILED, reason=f"cannot read {path}: {exc.strerror}")
        self.stats.add(bytes=len(body))
        return Fetched(OK, body=body, reservation=reservation)

    def list_objects(self):
        for dirpath, _dirs, files in os.walk(self.folder):
            for name in files:
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, self.folder), os.path.getsize(path)
        self.stats.add(lists=1)
