"""Bounded reads and the memory budget of a chunk's downloads: memory follows configuration, not input.

Every source client (boto3 today, any per-track GET client tomorrow) does the same three things
with one object, in this order:

1. ``budget.admit(declared, gzipped)`` once the response headers are in, *before* the body is read:
   an object whose ``Content-Length`` is over the cap is refused there (``BodyTooLarge``, never
   read), otherwise the call waits until the chunk's budget has room for the document;
2. ``read_capped(stream, max_bytes)`` reads the body with a hard limit, so an absent or lying
   length cannot make it read more than the cap;
3. the engine releases the reservation once the document was converted to its (compact) record
   (the thread consuming the downloads converts every finished one, in any order, so a finished
   download never holds the budget while the consumer waits for an earlier one).

The budget is ``concurrency × max_document_bytes``. A document is charged ``EXPANSION`` times its
decompressed size: its declared length for a plain body, ``GZIP_GUESS`` times it for a gzip body
(one that inflates further gives its charge back and waits for the worst case before inflating
again), the cap for an unknown length. Parsing JSON into Python objects
and converting them to numpy columns peaks at about 17 times the text size (measured by
``tests/test_memory_bound.py``). A charge is clamped to the whole budget, so one document larger
than the budget runs alone. The documents a chunk holds therefore stay under
``max(concurrency, EXPANSION) × max_document_bytes``; docs/reliability.md states the bound.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import threading
from typing import BinaryIO

from pipeline.errors import InvalidDocumentError

EXPANSION = 18  # peak bytes of decoding per decompressed byte (measured ~17, see the module docstring)
GZIP_GUESS = 8  # first guess of a gzip body's inflation (analyses inflate 3-4×); beyond it, charged the worst case
READ_CHUNK = 1024 * 1024


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 1


@functools.cache
def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the process; True when applied (a no-op off glibc).

    glibc gives each thread that allocates its own arena (up to 8 × cores) and memory freed in
    one arena is not reused by another: twenty download threads that each decoded one large
    document keep twenty peaks resident, several times the budget (measured by
    tests/test_memory_bound.py: 95 MiB above the baseline against a 40 MiB budget; 38 MiB with two
    arenas, 30 MiB with one). The download threads hold the GIL while they parse and convert, so
    one arena costs no parallelism. Same effect as ``MALLOC_ARENA_MAX=1`` in the environment.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError, TypeError):
        return False


GC_GEN0_THRESHOLD = 20_000  # net new containers between young collections (CPython's default: 700)


@functools.cache
def relax_gc_for_documents(gen0: int = GC_GEN0_THRESHOLD) -> None:
    """Stop the cyclic garbage collector from rescanning the process's heap for every parsed document.

    Why: a parsed analysis is a few thousand lists and dicts; with CPython's default thresholds
    they trigger ~6 collections per document, and every few documents a full one that walks
    every object the process holds (luigi, boto3's models, numpy: ~10⁵). Measured in the ingest's
    own loop: 0.6-1 ms of CPU per track, as much as parsing the JSON itself (docs/performance.md).
    ``gc.freeze`` moves what exists now (modules, clients, configuration) out of the collector's
    sight for good; the larger first threshold lets a document live and die between young
    collections. JSON documents and the records made from them hold no reference cycles, so
    nothing is left for the collector to find; cycles made later are still collected. Once per
    process (the ingest task process and each converter process).
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, gc.get_threshold()[0]), gen1, gen2)


class BodyTooLarge(InvalidDocumentError):  # noqa: N818 - reads as the reason it is
    """An object over ``max_document_bytes``: by its declared length, or by what actually arrived."""


def refuse_declared(declared: int | None, max_bytes: int) -> None:
    """Refuse an object by its ``Content-Length`` before a byte of it is read."""
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(f"document is {declared} bytes (Content-Length), over the {max_bytes}-byte cap; "
                           "not downloaded")


def read_capped(stream: BinaryIO, max_bytes: int, declared: int | None = None) -> bytes:
    """The whole body of ``stream``, read in bounded chunks; ``BodyTooLarge`` past ``max_bytes``.

    At most ``max_bytes + 1`` bytes are ever read, whatever the declared length says.
    """
    refuse_declared(declared, max_bytes)
    out = bytearray()
    while True:
        chunk = stream.read(min(READ_CHUNK, max_bytes + 1 - len(out)))
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > max_bytes:
            said = f" although {declared} were declared" if declared is not None else ""
            raise BodyTooLarge(f"document is more than {max_bytes} bytes{said}, over the cap; "
                               "stopped reading")


class Reservation:
    """Bytes of the budget held for one document until ``release`` (idempotent)."""

    def __init__(self, budget: MemoryBudget | None, nbytes: int):
        self.budget, self.nbytes = budget, nbytes

    def release(self) -> None:
        budget, self.budget = self.budget, None
        if budget is not None:
            budget._give_back(self.nbytes)


NO_RESERVATION = Reservation(None, 0)


class MemoryBudget:
    """The bytes a chunk's documents may hold at once: ``concurrency × max_document_bytes``."""

    def __init__(self, concurrency: int, max_document_bytes: int, expansion: int = EXPANSION):
        self.max_document_bytes, self.expansion = max_document_bytes, expansion
        self.total = max(1, concurrency) * max_document_bytes
        self.used = self.peak = 0
        self._cond = threading.Condition()

    def cost(self, declared: int | None, gzipped: bool, worst: bool = False) -> int:
        """What decoding a document will cost at its peak, clamped to the whole budget.

        A gzip body is first charged ``GZIP_GUESS`` times its length; one that inflates further
        is charged again at the worst case (``worst``) before it is inflated again.
        """
        if worst or declared is None:
            inflated = self.max_document_bytes
        else:
            inflated = min(declared * (GZIP_GUESS if gzipped else 1), self.max_document_bytes)
        return min(self.total, self.expansion * max(inflated, 1))

    def allowance(self, reservation: Reservation) -> int:
        """Decompressed bytes a document may reach under its reservation (the cap if it runs alone)."""
        if reservation.budget is not self or reservation.nbytes >= self.total:
            return self.max_document_bytes
        return min(self.max_document_bytes, reservation.nbytes // max(self.expansion, 1))

    def admit(self, declared: int | None, gzipped: bool, worst: bool = False) -> Reservation:
        """Refuse an oversized object by its length, else wait for room and hold its cost."""
        refuse_declared(declared, self.max_document_bytes)
        nbytes = self.cost(declared, gzipped, worst)
        with self._cond:
            self._cond.wait_for(lambda: self.used + nbytes <= self.total)
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        return Reservation(self, nbytes)

    def try_admit(self, declared: int | None, gzipped: bool, worst: bool = False) -> Reservation | None:
        """``admit`` without waiting: None when the budget has no room now (the caller frees some first)."""
        refuse_declared(declared, self.max_document_bytes)
        nbytes = self.cost(declared, gzipped, worst)
        with self._cond:
            if self.used + nbytes > self.total:
                return None
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        return Reservation(self, nbytes)

    def _give_back(self, nbytes: int) -> None:
        with self._cond:
            self.used -= nbytes
            self._cond.notify_all()
