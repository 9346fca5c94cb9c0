"""The one interface every online attribute store implements, and the logic they share.

A store holds one row per track (``pipeline.serving.cells``: the track's attributes in each
kept version, packed), a registry of *versions* (snapshot dates, each with the full load it
builds on, its ``base``) and one *pointer* naming the active version. The publish protocol is:

1. ``begin_version(v, base)`` registers ``v`` unverified. A full load has ``base = v``; a daily
   version builds on the newest version's base and writes only what changed.
2. ``apply(v, changes)`` writes a cell for day ``v`` into each changed track's row (the record's
   Avro bytes, or a tombstone for a track that left). Readers never see it: the pointer still
   names an older version, and a version reads only cells up to its own day. Writing the same
   cell again gives the same row, so a rerun after a kill simply applies everything again.
3. ``verify_version`` checks what landed and marks ``v`` verified only if it holds exactly the
   snapshot's record count.
4. ``activate`` flips the pointer in one atomic write, and refuses an unverified version; the
   previous version is still readable, so a rollback is another ``activate``.

Dropping a version only unregisters it: its cells go when a row is next written or by
``collect_garbage`` (run after each full load), so retiring costs nothing on a daily publish.
Subclasses implement small row and registry primitives; the protocol lives here once, so the
contract suite checks the same rules for every store.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from pipeline import layout
from pipeline.errors import LayoutError
from pipeline.serving import cells as C
from pipeline.serving.errors import NoActiveVersionError, ServingError, VersionNotVerifiedError

Change = tuple[str, bytes | None]  # (track_id, Avro-encoded record, or None: the track left the catalogue)
Row = tuple[str, bytes | None]  # (track_id, packed cells, or None: delete the row)
_INFO_CACHE = 64


def check_version(version: str) -> str:
    """A version is a snapshot date ``YYYY-MM-DD``; anything else would end up in a key or a registry."""
    try:
        layout.parse_date(version)
    except LayoutError as exc:
        raise ServingError(f"bad store version {version!r}: {exc}") from exc
    return version


def batched(rows: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most ``size`` items (``itertools.batched`` is Python 3.12+)."""
    if size < 1:
        raise ServingError(f"batch size must be >= 1, got {size}")
    batch: list = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_bounded(send: Callable[[list], int], batches: Iterable[list], concurrency: int) -> int:
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
    parallel_writes = True  # sqlite has one writer

    def __init__(self) -> None:
        self._bases: dict[str, int] = {}  # verified version -> day of its base (immutable once verified)

    # -- publishing -------------------------------------------------------------------------------
    def begin_version(self, version: str, base: str) -> None:
        """Register ``version`` (unverified) as built on the full load ``base``; its existing cells are kept."""
        check_version(version), check_version(base)
        if version == self.active_version():
            raise ServingError(f"{self.kind} store: refusing to reload the active version {version} under readers")
        if base > version:
            raise ServingError(f"{self.kind} store: version {version} cannot build on the later base {base}")
        self._bases.pop(version, None)
        self._register(version, base)

    def apply(self, version: str, changes: Iterable[Change], batch_size: int = 1000, concurrency: int = 1) -> int:
        """Write the cell of ``version`` into every changed track's row; returns the number of changes written.

        Each row is read, merged (``cells.merge``: cells no other registered version sees are pruned)
        and written back. The same changes applied again give the same rows.
        """
        info = self._info(check_version(version))
        if info is None:
            raise ServingError(f"{self.kind} store: version {version} is not registered (begin_version first)")
        day = C.day_of(version)
        kept = [(C.day_of(b), C.day_of(v)) for v, b in self._registry().items() if v != version]

        def send(batch: list[Change]) -> int:
            current = self._read_rows([t for t, _ in batch])
            rows = [(t, C.pack(C.merge(C.unpack(current.get(t)), (day, value), kept)) or None) for t, value in batch]
            self._write_rows(rows)
            return len(rows)

        return run_bounded(send, batched(changes, batch_size), max(1, concurrency) if self.parallel_writes else 1)

    def load_version(self, version: str, records: Iterable[dict], batch_size: int = 1000,
                     concurrency: int = 1) -> int:
        """A full load: ``version`` becomes its own base and holds exactly ``records``."""
        self.begin_version(version, version)
        return self.apply(version, ((r["track_id"], C.encode(r)) for r in records), batch_size, concurrency)

    def verify_version(self, version: str, expected_count: int, changed: Iterable[str] | None = None,
                       parent: str | None = None, batch_size: int = 5000) -> bool:
        """Count the version's records; mark it verified exactly when the count is ``expected_count``.

        A full version (``changed`` None) is counted by scanning every row. A daily one is counted from
        its ``parent``'s verified count plus, for each id in ``changed``, what the change did (a cell of
        exactly this day must be there: a missing one means the load was short).
        """
        info = self._info(check_version(version))
        if info is None:
            return False
        if changed is None:
            count = self._count_full(version, info["base"])
        else:
            count = self._count_daily(version, info["base"], changed, parent, batch_size)
        ok = count == expected_count
        self._mark_verified(version, expected_count if ok else None)
        return ok

    def _count_full(self, version: str, base: str) -> int:
        lo, hi = C.day_of(base), C.day_of(version)
        count = 0
        for rows in self._scan_rows():
            for _, data in rows:
                cell = C.pick(C.unpack(data), lo, hi)
                count += cell is not None and cell[1] is not None
        return count

    def _count_daily(self, version: str, base: str, changed: Iterable[str], parent: str | None,
                     batch_size: int) -> int | None:
        parent_count = self.records_of(parent) if parent else None
        if parent_count is None:
            return None
        day, lo, pday = C.day_of(version), C.day_of(base), C.day_of(parent)
        count = parent_count
        for batch in batched(changed, batch_size):
            rows = self._read_rows(batch)
            for track_id in batch:
                cells = C.unpack(rows.get(track_id))
                now = C.pick(cells, day, day)
                if now is None:
                    return None  # this change never landed
                before = C.pick(cells, lo, pday)
                count += (now[1] is not None) - (before is not None and before[1] is not None)
        return count

    def is_verified(self, version: str) -> bool:
        return self.records_of(version) is not None

    def activate(self, version: str) -> None:
        """Point readers at ``version`` with one atomic write; only a verified version may be activated."""
        if not self.is_verified(version):
            raise VersionNotVerifiedError(
                f"{self.kind} store: version {version} is not verified (load and verify it first)")
        self._set_pointer(version)

    def drop_version(self, version: str) -> None:
        """Unregister a version (its cells are pruned later); the active version is never dropped."""
        check_version(version)
        if version == self.active_version():
            raise ServingError(f"{self.kind} store: refusing to drop the active version {version}")
        self._bases.pop(version, None)
        self._unregister(version)

    def collect_garbage(self, batch_size: int = 5000) -> int:
        """Prune every row to the cells a registered version still sees; delete empty rows. Returns rows changed.

        A full scan: run after a full load (which is a full pass anyway), so that the rows of tracks
        dropped long ago and the cells of retired versions do not accumulate.
        """
        kept = [(C.day_of(b), C.day_of(v)) for v, b in self._registry().items()]
        changed = 0
        for rows in self._scan_rows(batch_size):
            out: list[Row] = []
            for track_id, data in rows:
                cells = C.unpack(data)
                keep = C.prune(cells, kept)
                if len(keep) != len(cells):
                    out.append((track_id, C.pack(keep) if keep else None))
            if out:
                self._write_rows(out)
                changed += len(out)
        return changed

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
        base = self._base_day(version)
        if base is None or not track_ids:
            return {}
        top = C.day_of(version)
        found = {}
        for track_id, data in self._read_rows(list(dict.fromkeys(track_ids))).items():
            cell = C.pick(C.unpack(data), base, top)
            if cell is not None and cell[1] is not None:
                found[track_id] = C.decode(cell[1])
        return found

    def _base_day(self, version: str) -> int | None:
        day = self._bases.get(version)
        if day is None:
            info = self._info(version)
            if info is None:
                return None
            day = C.day_of(info["base"])
            if info["records"] is not None:  # verified: its base can no longer change
                if len(self._bases) >= _INFO_CACHE:
                    self._bases.clear()
                self._bases[version] = day
        return day

    def records_of(self, version: str | None) -> int | None:
        """The verified record count of a version (None when unverified or absent)."""
        info = self._info(check_version(version)) if version else None
        return None if info is None else info["records"]

    def base_of(self, version: str) -> str | None:
        """The full load a version builds on (itself for a full load), None when not registered."""
        info = self._info(check_version(version))
        return None if info is None else info["base"]

    def versions(self) -> list[str]:
        """Every registered version (loaded, partially loaded or verified), sorted."""
        return sorted(self._registry())

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    def __enter__(self) -> AttributeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- primitives ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def active_version(self) -> str | None:
        """The version the pointer names, read from the store now (None before the first activation)."""

    @abc.abstractmethod
    def _registry(self) -> dict[str, str]:
        """Every registered version -> its base."""

    @abc.abstractmethod
    def _info(self, version: str) -> dict | None:
        """``{"base": str, "records": int | None}`` of a registered version, else None."""

    @abc.abstractmethod
    def _register(self, version: str, base: str) -> None:
        """Register (or re-register) ``version`` as unverified, built on ``base``."""

    @abc.abstractmethod
    def _mark_verified(self, version: str, count: int | None) -> None:
        """Record the verified count (None = not verified)."""

    @abc.abstractmethod
    def _unregister(self, version: str) -> None:
        """Forget a version (idempotent)."""

    @abc.abstractmethod
    def _set_pointer(self, version: str) -> None:
        """Atomically make ``version`` the active one."""

    @abc.abstractmethod
    def _read_rows(self, track_ids: list[str]) -> dict[str, bytes]:
        """The packed rows of the ids that have one."""

    @abc.abstractmethod
    def _write_rows(self, rows: list[Row]) -> None:
        """Replace (or, for None, delete) each row; each row's write is atomic for readers."""

    @abc.abstractmethod
    def _scan_rows(self, batch_size: int = 5000) -> Iterator[list[tuple[str, bytes]]]:
        """Every row, in batches (order unspecified)."""
