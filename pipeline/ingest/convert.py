"""Document → record conversion on every core, for one chunk, in track id order.

Why: a chunk's downloads are I/O (threads), but decoding the JSON, validating it and packing
the record is CPU under the GIL — one core for the whole chunk. ``[resources] s3_ingest``
bounds how many chunks hit the source at once; it should not also bound the cores. Here the
fetched bodies are handed in small ordered batches to a pool of worker processes, and their
records come back in the order they went in, so the bucket stays sorted and the writer is
unchanged. In flight at most ``2 × processes`` batches of ≤ ``BATCH`` documents or
``BATCH_BYTES`` bytes each, on top of the download window: memory stays bounded.

The pool lives as long as one chunk's conversion (forkserver: the luigi worker has threads) and is
shut down when it ends, successfully or not. A pool kept for the life of the process would keep
a luigi task process (``--workers`` > 1) from ever exiting: multiprocessing joins a process's
children on its way out, and atexit handlers do not run there. The forkserver has imported this
module once (``forkserver()``), so a chunk's pool starts in a few milliseconds. A process forked
from one that already ran a pool (luigi ``--workers`` > 1 after in-process runs, as in the tests)
cannot use that forkserver: it converts in the thread consuming its downloads instead (same output).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from pipeline.errors import InvalidDocumentError
from pipeline.ops.quality import analysis_values, range_problem
from pipeline.source.document import body_to_record
from pipeline.source.limits import relax_gc_for_documents

BATCH = 32
BATCH_BYTES = 8 * 1024 * 1024
SWITCH_INTERVAL = 0.0005  # seconds; CPython's default is 0.005


def default_processes(configured: int, chunks_at_once: int = 1) -> int:
    """``[ingest] processes``: 0 shares the host's cores among the chunks that may run at once on it.

    With ``[resources] s3_ingest = 2`` and ``luigi --workers 2`` two chunks already keep two cores
    busy; a pool per chunk on top would only add pickling (measured slower, docs/performance.md).
    """
    return configured if configured > 0 else max(1, (os.cpu_count() or 1) // max(1, chunks_at_once))


def convert(body: bytes, key: str, content_encoding: str | None, max_bytes: int, track_id: str,
            updated: int | None) -> tuple[bool, dict | str]:
    """(True, record) or (False, why the document is invalid). Never raises for bad data."""
    try:
        record = body_to_record(body, key=key, content_encoding=content_encoding, max_bytes=max_bytes,
                                track_id=track_id, updated=updated)
        problem = range_problem(analysis_values(record)[0])  # as engine._decode: same results on either path
        if problem:
            return False, problem
        return True, record
    except InvalidDocumentError as exc:
        return False, str(exc)


def _init_converter() -> None:
    """In each converter process, once this module (numpy, orjson, the schema) is imported: see limits.py."""
    relax_gc_for_documents()


def _convert_batch(jobs: list[tuple], max_bytes: int) -> list[tuple[bool, dict | str]]:
    return [convert(body, key, enc, max_bytes, track_id, updated) for body, key, enc, track_id, updated in jobs]


_state = {"used_pool": False, "inherited": False}


def _after_fork_in_child() -> None:
    _state["inherited"] = _state["used_pool"]


os.register_at_fork(after_in_child=_after_fork_in_child)


def may_use_processes() -> bool:
    """False in a process forked from one that already ran a process pool (see the module docstring)."""
    return not _state["inherited"]


def mark_pool_used() -> None:
    _state["used_pool"] = True


def forkserver() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, its server importing the conversion code once for every worker it forks.

    Without the preload each worker of each chunk's pool imports numpy, fastavro and the formats
    itself (~0.5 s of CPU): at 5,000 tracks a chunk that was a fifth of the chunk's work.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # only read when this process starts its forkserver
    return ctx


@contextlib.contextmanager
def converter_pool(processes: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``processes`` converters for one chunk, shut down (queued work cancelled) when it ends."""
    mark_pool_used()
    executor = ProcessPoolExecutor(max_workers=processes, mp_context=forkserver(), initializer=_init_converter)
    switch = sys.getswitchinterval()
    # The pool is fed and drained by its management thread, which needs the GIL that the writing
    # thread holds for up to the switch interval at a time: at the default 5 ms the converters sat
    # idle waiting for it (a 2-process chunk ran no faster than one process); 0.5 ms lets them overlap.
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
    try:
        yield executor
    finally:
        sys.setswitchinterval(switch)
        executor.shutdown(wait=True, cancel_futures=True)


def convert_in_order(pending: Iterator[tuple[object, tuple | None]], processes: int, max_bytes: int
                     ) -> Iterator[tuple[object, tuple[bool, dict | str] | None]]:
    """``(tag, job or None)`` → ``(tag, conversion or None)`` in the same order, converted by ``processes``."""
    with converter_pool(processes) as executor:
        yield from _converted(pending, executor, processes, max_bytes)


def _converted(pending: Iterator[tuple[object, tuple | None]], executor: ProcessPoolExecutor, processes: int,
               max_bytes: int) -> Iterator[tuple[object, tuple[bool, dict | str] | None]]:
    window: collections.deque[tuple[list, Future]] = collections.deque()
    tags: list = []
    jobs: list[tuple] = []
    size = 0

    def submit() -> None:
        nonlocal tags, jobs, size
        window.append((tags, executor.submit(_convert_batch, jobs, max_bytes)))
        tags, jobs, size = [], [], 0

    def drain() -> Iterator:
        batch_tags, future = window.popleft()
        results = iter(future.result())
        for tag, has_job in batch_tags:
            yield tag, next(results) if has_job else None

    try:
        for tag, job in pending:
            tags.append((tag, job is not None))
            if job is not None:
                jobs.append(job)
                size += len(job[0])
            if len(tags) >= BATCH or size >= BATCH_BYTES:
                submit()
                if len(window) >= 2 * processes:
                    yield from drain()
        if tags:
            submit()
        while window:
            yield from drain()
    finally:
        for _, future in window:
            future.cancel()
