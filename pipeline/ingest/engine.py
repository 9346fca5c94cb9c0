"""The ingest engine: fetch, validate and convert the documents of one bucket, in track id order.

Downloads run concurrently in a bounded sliding window (``concurrency`` threads, at
most ``2 × concurrency`` documents in memory), conversions in the thread that consumes them or,
with ``processes`` > 1, in worker processes (``convert.py``), while results are handed on strictly
in submission order, so the output stays sorted by track id without buffering the bucket. Every
track ends in exactly one outcome: ingested, missing, invalid or failed.

Why the consuming thread converts rather than the downloading ones: decoding holds the GIL, so
conversions in eight download threads ran one at a time anyway, and a thread busy converting was
a download not in flight. The consumer converts every download that has finished, in any order
(each keeps its memory reservation until its record exists, and none may wait on the consumer
while it waits for an earlier one), and hands the results on in order.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from pipeline.errors import InvalidDocumentError, SourceUnavailableError
from pipeline.ingest.convert import convert_in_order, may_use_processes
from pipeline.ops.quality import analysis_values, range_problem
from pipeline.source.base import FAILED, INVALID, MISSING, OK, Fetched, Source
from pipeline.source.catalog import CatalogRow
from pipeline.source.document import body_to_record
from pipeline.source.limits import BodyTooLarge, MemoryBudget, limit_malloc_arenas, relax_gc_for_documents

INGESTED = "ingested"


@dataclass(frozen=True)
class WorkItem:
    """A catalog track to fetch, with its source key (or why it has none) and its ledger history."""

    row: CatalogRow
    key: str
    key_error: str | None = None
    previous: dict | None = None  # the track's ledger entry before this run, if any


@dataclass(frozen=True)
class Result:
    item: WorkItem
    outcome: str  # INGESTED | MISSING | INVALID | FAILED
    record: dict | None = None
    reason: str = ""
    attempts: int = 1
    connection_error: bool = False


@dataclass
class Counts:
    ingested: int = 0
    missing: int = 0
    invalid: int = 0
    failed: int = 0
    retried: int = 0  # tracks attempted again because the ledger had them
    newly_invalid: int = 0  # invalid, and not already ledgered invalid (what [ingest] invalid_ratio counts)
    bytes: int = 0
    seconds: float = 0.0
    by_reason: collections.Counter = field(default_factory=collections.Counter)

    @property
    def attempted(self) -> int:
        return self.ingested + self.missing + self.invalid + self.failed

    def as_dict(self) -> dict:
        return {"ingested": self.ingested, "missing": self.missing, "invalid": self.invalid,
                "failed": self.failed, "retried": self.retried}


def process(source: Source, item: WorkItem, max_bytes: int, budget: MemoryBudget | None = None) -> Result:
    """Fetch one document and turn it into a record, or say why not. Never raises for bad data.

    The document's memory reservation is held until its record exists, then given back.
    """
    if item.key_error:
        return Result(item, INVALID, reason=item.key_error, attempts=0)
    fetched = source.fetch(item.key, budget)
    try:
        return _convert(item, fetched, max_bytes, budget)
    finally:
        fetched.reservation.release()


def _fetch_held(source: Source, item: WorkItem, budget: MemoryBudget) -> tuple[WorkItem, Fetched | None]:
    """The download of ``_Converter``: the body keeps its reservation until the consumer converted it."""
    return item, (None if item.key_error else source.fetch(item.key, budget))


class _Converter:
    """The window of downloads of ``fetch_in_order`` at ``processes`` ≤ 1, converted by the consuming thread."""

    BUSY = object()  # being converted (the consumer may wait for room in the middle of one)

    def __init__(self, max_bytes: int, budget: MemoryBudget):
        self.max_bytes, self.budget = max_bytes, budget
        self.window: collections.deque[list] = collections.deque()  # [future, None | BUSY | Result | error]

    def head(self) -> Result:
        """The oldest result, once converted; every other finished download is converted meanwhile."""
        head = self.window[0]
        while head[1] is None:
            if not self.settle_finished():
                wait([e[0] for e in self.window if e[1] is None], return_when=FIRST_COMPLETED)
        outcome = self.window.popleft()[1]
        if isinstance(outcome, BaseException):  # raised where the old in-order loop raised it
            raise outcome
        return outcome

    def settle_finished(self) -> bool:
        """Convert every finished download not converted yet, oldest first; False when there was none."""
        finished = [e for e in self.window if e[1] is None and e[0].done()]
        for entry in finished:
            if entry[1] is None:  # a nested settle (waiting for room) may have taken it
                entry[1] = self.BUSY
                future, entry[0] = entry[0], None  # the finished future holds the body: let it go with it
                try:
                    entry[1] = self.convert(*future.result())
                except Exception as exc:  # noqa: BLE001 - kept for its turn (e.g. no credentials)
                    entry[1] = exc
                del future
        return bool(finished)

    def convert(self, item: WorkItem, fetched: Fetched | None) -> Result:
        if fetched is None:
            return Result(item, INVALID, reason=item.key_error or "", attempts=0)
        try:
            return _convert(item, fetched, self.max_bytes, self.budget, admit=self.admit_worst)
        finally:
            fetched.reservation.release()

    def admit_worst(self, size: int):
        """Room for a document's worst case, converting the other finished downloads until there is some."""
        while (reservation := self.budget.try_admit(size, True, worst=True)) is None:
            if not self.settle_finished():
                pending = [e[0] for e in self.window if e[1] is None]
                if not pending:  # nothing else holds the budget: only this document (clamped) remains
                    return self.budget.admit(size, True, worst=True)
                wait(pending, return_when=FIRST_COMPLETED)
        return reservation


def fetch_one(source: Source, item: WorkItem, budget: MemoryBudget) -> tuple[WorkItem, Fetched | None]:
    """The download half of ``process`` for the process-pool path (None when the item has no valid key).

    The body's reservation is given back at once: from here the body is bounded by the
    conversion window (``convert_in_order``), and holding it could starve the downloads that
    the window waits for.
    """
    if item.key_error:
        return item, None
    fetched = source.fetch(item.key, budget)
    fetched.reservation.release()
    return item, fetched


def finish(item: WorkItem, fetched: Fetched | None, converted: tuple[bool, dict | str] | None) -> Result:
    """The result of an item from its download and, when that succeeded, its conversion in a worker process."""
    if fetched is None:
        return Result(item, INVALID, reason=item.key_error or "", attempts=0)
    if fetched.outcome in (MISSING, INVALID):
        return Result(item, fetched.outcome, reason=fetched.reason, attempts=fetched.attempts)
    if fetched.outcome != OK:
        return Result(item, FAILED, reason=fetched.reason, attempts=fetched.attempts,
                      connection_error=fetched.connection_error)
    ok, value = converted
    if not ok:
        return Result(item, INVALID, reason=value, attempts=fetched.attempts)
    return Result(item, INGESTED, record=value, attempts=fetched.attempts)


def _convert(item: WorkItem, fetched: Fetched, max_bytes: int, budget: MemoryBudget | None, admit=None) -> Result:
    if fetched.outcome in (MISSING, INVALID):
        return Result(item, fetched.outcome, reason=fetched.reason, attempts=fetched.attempts)
    if fetched.outcome != OK:
        return Result(item, FAILED, reason=fetched.reason, attempts=fetched.attempts,
                      connection_error=fetched.connection_error)
    cap = max_bytes if budget is None else budget.allowance(fetched.reservation)
    try:
        return _decode(item, fetched, cap)
    except BodyTooLarge as exc:
        if cap >= max_bytes:
            return Result(item, INVALID, reason=str(exc), attempts=fetched.attempts)
    # it inflates past what it was charged for (a gzip body beyond the first guess, or one that
    # nothing announced): give the charge back, wait for the worst case, then inflate it again
    fetched.reservation.release()
    reservation = (admit or (lambda size: budget.admit(size, True, worst=True)))(len(fetched.body))
    try:
        return _decode(item, fetched, max_bytes)
    except BodyTooLarge as exc:
        return Result(item, INVALID, reason=str(exc), attempts=fetched.attempts)
    finally:
        reservation.release()


def _decode(item: WorkItem, fetched: Fetched, cap: int) -> Result:
    """Decode, validate and convert a body of at most ``cap`` decompressed bytes (``BodyTooLarge`` past it)."""
    try:
        record = body_to_record(fetched.body, key=item.key, content_encoding=fetched.content_encoding, max_bytes=cap,
                                track_id=item.row.track_id, updated=item.row.analysis_updated_at)
        problem = range_problem(analysis_values(record)[0])
        if problem:
            raise InvalidDocumentError(problem)
    except BodyTooLarge:
        raise
    except InvalidDocumentError as exc:
        return Result(item, INVALID, reason=str(exc), attempts=fetched.attempts)
    return Result(item, INGESTED, record=record, attempts=fetched.attempts)


def _in_order(pool: ThreadPoolExecutor, fn, items: Iterable, concurrency: int) -> Iterator:
    """``fn(item)`` for every item, in order, with at most ``2 × concurrency`` in flight."""
    window: collections.deque[Future] = collections.deque()
    try:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * concurrency:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        for future in window:
            future.cancel()


def _converted_here(pool: ThreadPoolExecutor, source: Source, items: Iterable[WorkItem], concurrency: int,
                    max_bytes: int, budget: MemoryBudget) -> Iterator[Result]:
    """Downloads in ``pool``, conversions in this thread (``_Converter``), results in order."""
    converter = _Converter(max_bytes, budget)
    try:
        for item in items:
            converter.window.append([pool.submit(_fetch_held, source, item, budget), None])
            if len(converter.window) >= 2 * concurrency:
                yield converter.head()
        while converter.window:
            yield converter.head()
    finally:
        for future, _ in converter.window:
            if future is not None:
                future.cancel()


def fetch_in_order(source: Source, items: Iterable[WorkItem], concurrency: int, max_bytes: int,
                   processes: int = 1) -> Iterator[Result]:
    """Results in the order of ``items``, with at most ``2 × concurrency`` downloads in flight.

    Documents being downloaded and decoded share one ``MemoryBudget`` of ``concurrency ×
    max_bytes`` (see pipeline/source/limits.py), each held from its download until its record
    exists (``_Converter``: this thread converts them); finished results hold only compact records.
    With ``processes`` > 1 the downloads stay in threads here and the conversions run in that
    many worker processes (``convert_in_order``), still in order.
    """
    budget = MemoryBudget(concurrency, max_bytes)
    limit_malloc_arenas()  # before the threads exist: per-thread arenas would keep each thread's peak
    relax_gc_for_documents()  # the collector would rescan the whole heap every few documents
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch") as pool:
        if processes <= 1 or not may_use_processes():
            yield from _converted_here(pool, source, items, concurrency, max_bytes, budget)
            return
        fetched = _in_order(pool, lambda item: fetch_one(source, item, budget), items, concurrency)
        jobs = (((item, f), (f.body, item.key, f.content_encoding, item.row.track_id, item.row.analysis_updated_at)
                 if f is not None and f.outcome == OK else None) for item, f in fetched)
        for (item, f), converted in convert_in_order(jobs, processes, max_bytes):
            yield finish(item, f, converted)


class Reachability:
    """Declares the source unreachable after N connection failures in a row before any answer."""

    def __init__(self, source: Source, limit: int):
        self.source, self.limit, self.in_a_row, self.answered = source, limit, 0, False

    def observe(self, result: Result) -> None:
        if result.outcome == FAILED and result.connection_error:
            self.in_a_row += 1
            if not self.answered and self.in_a_row >= self.limit:
                raise SourceUnavailableError(
                    f"source {self.source.describe()} is unreachable: {self.in_a_row} connection failures "
                    f"in a row and no answer yet ({result.reason}); check [source] endpoint_url and the network")
        elif result.attempts:
            self.in_a_row, self.answered = 0, True


def run(source: Source, items: Iterable[WorkItem], *, concurrency: int, max_bytes: int, unreachable_after: int,
        on_result: Callable[[Result], None], progress: Callable[[Counts], None] | None = None,
        progress_every: float = 1.0, processes: int = 1) -> Counts:
    """Process every item, hand each result to ``on_result`` in order, and count outcomes."""
    counts = Counts()
    reach = Reachability(source, unreachable_after)
    start = last = time.monotonic()
    for result in fetch_in_order(source, items, concurrency, max_bytes, processes):
        reach.observe(result)
        setattr(counts, result.outcome, getattr(counts, result.outcome) + 1)
        if result.item.previous is not None:
            counts.retried += 1
        if result.outcome in (INVALID, FAILED):
            counts.by_reason[result.reason.split(":")[0][:60]] += 1
        if result.outcome == INVALID and (result.item.previous or {}).get("outcome") != INVALID:
            counts.newly_invalid += 1
        on_result(result)
        now = time.monotonic()
        if progress and now - last >= progress_every:
            counts.seconds, counts.bytes = now - start, source.stats.bytes
            progress(counts)
            last = now
    counts.seconds, counts.bytes = time.monotonic() - start, source.stats.bytes
    if progress:
        progress(counts)  # the final state, so the dashboard shows 100% and the true counts
    return counts


__all__ = ["INGESTED", "MISSING", "INVALID", "FAILED", "WorkItem", "Result", "Counts", "run", "process"]
