"""The one interface every online attribute store implements, and the logic they share.

A store holds several *versions* (one per snapshot date, each in its own table or key space)
and one *pointer* naming the active version. The publish protocol is:

1. ``load_version`` writes every record of the new version (batched; concurrent where the
   store allows). Readers never look at it: the pointer still names the old version.
2. ``verify_version`` counts what landed and marks the version verified only if the count is
   the snapshot's record count.
3. ``activate`` flips the pointer in one atomic write, and refuses an unverified version.

A load killed midway therefore leaves an unverified, invisible version that the next run
drops and reloads. Subclasses implement small primitives; the protocol lives here once, so
the contract test suite checks the same rules for every store.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import orjson

from pipeline import layout
from pipeline.errors import LayoutError
from pipeline.serving.errors import NoActiveVersionError, ServingError, VersionNotVerifiedError

Row = tuple[str, bytes]  # (track_id, encoded record)


def check_version(version: str) -> str:
    """A version is a snapshot date ``YYYY-MM-DD``; anything else would end up in a table or key name."""
    try:
        layout.parse_date(version)
    except LayoutError as exc:
        raise ServingError(f"bad store version {version!r}: {exc}") from exc
    return version


def encode(record: dict) -> bytes:
    """Records are stored as orjson bytes: compact, fast both ways, identical across stores."""
    return orjson.dumps(record)


def decode(data: bytes | str) -> dict:
    return orjson.loads(data)


def batched(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """Consecutive lists of at most ``size`` rows (``itertools.batched`` is Python 3.12+)."""
    if size < 1:
        raise ServingError(f"batch size must be >= 1, got {size}")
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_bounded(send: Callable[[list[Row]], int], batches: Iterable[list[Row]], concurrency: int) -> int:
    """Send batches from a thread pool with at most ``2 * concurrency`` in flight; returns the sum of results.

    The bound keeps a fast reader from queueing the whole snapshot in memory ahead of a slower store.
    """
    if concurrency <= 1:
        return sum(send(batch) for batch in batches)
    total = 0
    with ThreadPoolExecutor(concurrency, thread_name_prefix="store-load") as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(send, batch))
            if len(pending) >= 2 * concurrency:
                total += pending.popleft().result()
        while pending:
            total += pending.popleft().result()
    return total


class AttributeStore(abc.ABC):
    """Versioned attribute records keyed by track id, with an atomically switched active version."""

    kind: str = "abstract"

    # -- publishing -------------------------------------------------------------------------------
    def load_version(self, version: str, records: Iterable[dict], batch_size: int = 1000,
                     concurrency: int = 1) -> int:
        """Write every record into ``version`` (created if needed); returns the number written.

        Loading the same records again overwrites them, so a rerun is safe. The version stays
        unverified (and cannot be activated) until ``verify_version`` passes.
        """
        check_version(version)
        if version == self.active_version():
            raise ServingError(f"{self.kind} store: refusing to reload the active version {version} under readers")
        self._begin(version)
        rows = ((r["track_id"], encode(r)) for r in records)
        return self._write_batches(version, batched(rows, batch_size), max(1, concurrency))

    def verify_version(self, version: str, expected_count: int) -> bool:
        """Count the version's records; mark it verified exactly when the count is ``expected_count``."""
        check_version(version)
        if version not in self.versions():
            return False
        ok = self._count(version) == expected_count
        self._mark_verified(version, expected_count if ok else None)
        return ok

    def is_verified(self, version: str) -> bool:
        return self._verified_count(check_version(version)) is not None

    def activate(self, version: str) -> None:
        """Point readers at ``version`` with one atomic write; only a verified version may be activated."""
        if not self.is_verified(version):
            raise VersionNotVerifiedError(
                f"{self.kind} store: version {version} is not verified (load and verify it first)")
        self._set_pointer(version)

    def drop_version(self, version: str) -> None:
        """Delete a version's records and bookkeeping; the active version is never dropped."""
        check_version(version)
        if version == self.active_version():
            raise ServingError(f"{self.kind} store: refusing to drop the active version {version}")
        self._drop(version)

    # -- reading ----------------------------------------------------------------------------------
    def resolve(self, version: str | None = None) -> str:
        """``version`` itself, or the active version read from the pointer now."""
        if version is not None:
            return check_version(version)
        active = self.active_version()
        if active is None:
            raise NoActiveVersionError(f"{self.kind} store has no active version: publish a snapshot first")
        return active

    def get(self, track_id: str, version: str | None = None) -> dict | None:
        """One record of ``version`` (default: the active one), or None when the track is absent."""
        return self.get_many([track_id], version).get(track_id)

    def get_many(self, track_ids: Sequence[str], version: str | None = None) -> dict[str, dict]:
        """The records found among ``track_ids`` (absent ids are simply missing from the result)."""
        version = self.resolve(version)
        unique = list(dict.fromkeys(track_ids))
        return {tid: decode(data) for tid, data in self._fetch(version, unique) if data is not None}

    def records_of(self, version: str) -> int | None:
        """The verified record count of a version (None when unverified or absent)."""
        return self._verified_count(check_version(version))

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    def __enter__(self) -> AttributeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- primitives ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> list[str]:
        """Every version present (loaded, partially loaded or verified), sorted."""

    @abc.abstractmethod
    def active_version(self) -> str | None:
        """The version the pointer names, read from the store now (None before the first activation)."""

    @abc.abstractmethod
    def _begin(self, version: str) -> None:
        """Create the version's table/key space and register it as unverified."""

    @abc.abstractmethod
    def _write_batches(self, version: str, batches: Iterable[list[Row]], concurrency: int) -> int:
        """Write every batch; returns the number of rows written."""

    @abc.abstractmethod
    def _count(self, version: str) -> int:
        """Records actually present in the version."""

    @abc.abstractmethod
    def _mark_verified(self, version: str, count: int | None) -> None:
        """Record the verified count (None = not verified)."""

    @abc.abstractmethod
    def _verified_count(self, version: str) -> int | None:
        """The count recorded by ``_mark_verified`` (None when unverified or unknown)."""

    @abc.abstractmethod
    def _set_pointer(self, version: str) -> None:
        """Atomically make ``version`` the active one."""

    @abc.abstractmethod
    def _fetch(self, version: str, track_ids: list[str]) -> Iterable[tuple[str, bytes | None]]:
        """(track_id, stored bytes or None) for each requested id."""

    @abc.abstractmethod
    def _drop(self, version: str) -> None:
        """Delete the version's records and bookkeeping (idempotent)."""
