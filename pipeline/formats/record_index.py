"""Record indexes: a columnar sidecar that lets a later pass copy records without decoding them.

Decoding one attributes record costs ~20 µs in fastavro (unions, three float arrays, a map),
yet the daily snapshot keeps ~99% of yesterday's records unchanged and needs only their id,
the analysis version they were computed from, their encoded bytes and a few summary values
(for the quality gate and the manifest's histograms). The record index stores exactly those,
as columns: one index record per part file (``record_index.avsc``). Reading it is a few array
decodes per part; the records' bytes are then sliced out of the decompressed blocks by their
lengths, with no per-record decode at all.

An index is checked against the data it describes as it is read: per block, the lengths must
add up to the block's size and the counts must agree, else ``CorruptFileError`` names both
files. Same input records give the same index, so reruns stay byte-identical.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import fastavro
import numpy as np

from pipeline.errors import CorruptFileError, PipelineError
from pipeline.formats import RECORD_INDEX, fingerprint
from pipeline.formats.avro_io import AbortOnError, FileInfo, read_records
from pipeline.formats.avro_raw import LazyRawWriter, RawRollingWriter
from pipeline.formats.index_encode import encode_entry
from pipeline.formats.packed import F8, pack, unpack
from pipeline.storage import Storage


class Entry(NamedTuple):
    """One record of a part file as its index describes it, with its encoded bytes.

    Readers without an index (older files, another schema) build the same entry from the decoded
    record: ``raw`` is then None when the bytes cannot be copied, and ``record`` holds it.
    """

    track_id: str
    source_updated_at: int | None
    raw: bytes | None
    row: Sequence[float]  # the index's value_fields, NaN for null (a read-only view of the index's values)
    record: dict | None = None


class IndexedPartsWriter(AbortOnError):
    """A ``RawRollingWriter`` that also writes the bucket's record index, one entry per part file.

    Every record comes with its index ``row``: floats in ``value_fields`` order, NaN for null.
    The index file appears (atomically) only on ``close``, after the last part; an empty bucket has none.
    Until a part is full its entries wait in flat arrays (8 bytes a value, not a Python float each), and
    runs of copied records keep their ids and versions as the arrays they came in (``write_raw_run``);
    the part's entry is then encoded from arrays (``index_encode.py``), never as Python lists.
    """

    def __init__(self, storage: Storage, part_url: Callable[[int], str], index_url: str, schema_name: str,
                 codec: str, records_per_part: int, identity: str, value_fields: Sequence[str]):
        self.fields = list(value_fields)
        self._fingerprint = fingerprint(schema_name)
        self._index = LazyRawWriter(storage, index_url, RECORD_INDEX, codec,
                                    f"{identity}/{index_url.rsplit('/', 1)[-1]}")
        self.parts = RawRollingWriter(storage, part_url, schema_name, codec, records_per_part, identity,
                                      on_part=self._index_part)
        self._reset()

    def _reset(self) -> None:
        self._ids: list[list[str] | np.ndarray] = [[]]  # chunks: lists of new records' ids, arrays of runs
        self._updated: list[list[int | None] | np.ndarray] = [[]]  # the same chunks' versions (NaN: null)
        self._count = 0
        self._lengths = array("q")
        self._values = array("d")

    def write(self, record: dict, row: Sequence[float]) -> None:
        """Encode a new record (strictly) and index it."""
        length = self.parts.write(record)
        self._add(record["track_id"], record.get("source_updated_at"), length, row)

    def write_raw(self, raw: bytes, track_id: str, source_updated_at: int | None, row: Sequence[float]) -> None:
        """Copy an already-encoded record (same schema) and index it."""
        self._add(track_id, source_updated_at, self.parts.write_raw(raw), row)

    def write_raw_run(self, data, lengths: np.ndarray, track_ids: np.ndarray, source_updated_at: np.ndarray,
                      rows: np.ndarray) -> None:
        """Copy a run of already-encoded records (concatenated in ``data``) and index them: the same files
        as ``write_raw`` record by record, at a fraction of the cost (parts and blocks end at the same records).

        ``track_ids`` are ASCII bytes (an ``S`` array), ``source_updated_at`` floats with NaN for null
        (exact for epoch seconds), as ``index_columns.read_columns`` reads them.
        """
        if rows.shape != (len(lengths), len(self.fields)):
            raise ValueError(f"index rows of shape {rows.shape} for {len(lengths)} records "
                             f"of {len(self.fields)} values")
        ends = np.cumsum(lengths, dtype=np.int64)
        done = start = 0
        while done < len(lengths):
            stop = done + min(self.parts.room(), len(lengths) - done)
            end = int(ends[stop - 1])
            self.parts.write_raw_run(data[start:end], lengths[done:stop])
            self._ids += [track_ids[done:stop], []]
            self._updated += [source_updated_at[done:stop], []]
            self._count += stop - done
            self._lengths.frombytes(np.ascontiguousarray(lengths[done:stop], dtype="<i8").tobytes())
            self._values.frombytes(np.ascontiguousarray(rows[done:stop], dtype=F8).tobytes())
            done, start = stop, end

    def _add(self, track_id: str, updated: int | None, length: int, row: Sequence[float]) -> None:
        if len(row) != len(self.fields):
            raise ValueError(f"index row of {track_id} has {len(row)} values, expected {len(self.fields)}")
        self._ids[-1].append(track_id)
        self._updated[-1].append(updated)
        self._count += 1
        self._lengths.append(length)
        self._values.extend(row)

    def _index_part(self, info: FileInfo) -> None:
        if self._count != info.records:
            raise PipelineError(f"record index out of step with {info.name}: {self._count} entries for "
                                f"{info.records} records")
        values = pack(np.frombuffer(self._values, dtype=F8), F8) if self._values else b""
        updated = [_as_floats(c) for c in self._updated]
        if all(u is not None for u in updated):
            ids = np.concatenate([_as_bytes(c) for c in self._ids])
            self._index.write_raw(encode_entry(info.name, self._fingerprint, ids, np.concatenate(updated),
                                               np.frombuffer(self._lengths, np.int64), self.fields, values))
        else:  # a version beyond 2**53 (not epoch seconds): exact through fastavro
            self._index.write({"part": info.name, "schema_fingerprint": self._fingerprint,
                               "track_ids": _flat(self._ids, lambda a: [i.decode() for i in a.tolist()]),
                               "source_updated_at": _flat(self._updated, _versions),
                               "lengths": self._lengths.tolist(), "value_fields": self.fields, "values": values})
        self._reset()

    def close(self) -> list[FileInfo]:
        """Publish the last part, then the index (neither exists for an empty bucket)."""
        files = self.parts.close()
        self._index.close()
        return files

    def abort(self) -> None:
        self.parts.abort()
        self._index.abort()


def _flat(chunks: list, of_array: Callable[[np.ndarray], list]) -> list:
    out: list = []
    for chunk in chunks:
        out.extend(of_array(chunk) if isinstance(chunk, np.ndarray) else chunk)
    return out


def _versions(updated: np.ndarray) -> list[int | None]:
    return [None if v != v else int(v) for v in updated.tolist()]


def _as_bytes(chunk: list[str] | np.ndarray) -> np.ndarray:
    if isinstance(chunk, np.ndarray):
        return chunk
    return np.array([i.encode("utf-8") for i in chunk], dtype=bytes) if chunk else np.empty(0, "S1")


EXACT = 2 ** 53  # floats hold every integer up to here


def _as_floats(chunk: list[int | None] | np.ndarray) -> np.ndarray | None:
    """Versions as floats (NaN for null), or None when one of them would not survive the conversion."""
    if isinstance(chunk, np.ndarray):
        return chunk
    if any(u is not None and abs(u) > EXACT for u in chunk):
        return None
    return np.array([np.nan if u is None else u for u in chunk], dtype=np.float64)


def read_index(storage: Storage, index_url: str) -> Iterator[dict]:
    """The index entries of a bucket, one per part file, in part order."""
    return read_records(storage, index_url)


def copyable(part: dict, schema_name: str, value_fields: Sequence[str]) -> bool:
    """Whether a part's records can be copied as they are into a file of ``schema_name`` with these values."""
    return part["schema_fingerprint"] == fingerprint(schema_name) and list(part["value_fields"]) == list(value_fields)


def read_entries(storage: Storage, part_url: str, part: dict) -> Iterator[Entry]:
    """Every record of one part file, as its index entry ``part`` describes it, with its bytes."""
    ids, updated, lengths = part["track_ids"], part["source_updated_at"], part["lengths"]
    width = len(part["value_fields"])
    rows = unpack(part["values"], F8, width) if width else np.empty((len(ids), 0))  # rows are views, never copies
    if not len(ids) == len(updated) == len(lengths) == len(rows):
        raise CorruptFileError(f"record index of {part_url} has columns of different lengths")
    first = 0
    try:
        with storage.open_read(part_url) as f:
            for block in fastavro.block_reader(f):
                data, last = block.bytes_.getvalue(), first + block.num_records
                if last > len(ids) or sum(lengths[first:last]) != len(data):
                    raise CorruptFileError(f"record index does not match {part_url}: block at byte {block.offset} "
                                           f"holds {block.num_records} records in {len(data)} bytes")
                pos = 0
                for i in range(first, last):
                    end = pos + lengths[i]
                    yield Entry(ids[i], updated[i], data[pos:end], rows[i])
                    pos = end
                first = last
    except (OSError, PipelineError):
        raise
    except Exception as exc:  # truncated blocks, bad codecs, garbage: whatever fastavro or cramjam raise
        raise CorruptFileError(f"cannot decode Avro file {part_url}: {type(exc).__name__}: {exc}") from exc
    if first != len(ids):
        raise CorruptFileError(f"record index lists {len(ids)} records but {part_url} holds {first}")


class PartBytes:
    """The encoded records of one part file, read forward block by block and sliced by record ranges.

    ``take(i, j)`` returns the bytes of records ``i..j-1`` (as the index's ``lengths`` delimit them);
    ranges must come in increasing order. Each block is checked against the index as it is read,
    as in ``read_entries``. Only the block being sliced is held.
    """

    def __init__(self, storage: Storage, url: str, lengths: np.ndarray):
        self.url, self.lengths = url, lengths
        self._file = storage.open_read(url)
        self._blocks = fastavro.block_reader(self._file)
        self._first = self._last = 0
        self._data = memoryview(b"")
        self._offsets = np.zeros(1, np.int64)

    def take(self, i: int, j: int) -> bytes:
        out = []
        while i < j:
            while i >= self._last:
                self._next_block()
            stop = min(j, self._last)
            out.append(self._data[int(self._offsets[i - self._first]):int(self._offsets[stop - self._first])])
            i = stop
        return b"".join(out)

    def _next_block(self) -> None:
        try:
            block = next(self._blocks)
            data = block.bytes_.getvalue()
        except StopIteration:
            raise CorruptFileError(f"record index lists {len(self.lengths)} records but {self.url} holds "
                                   f"{self._last}") from None
        except (OSError, PipelineError):
            raise
        except Exception as exc:  # truncated blocks, bad codecs, garbage: whatever fastavro or cramjam raise
            raise CorruptFileError(f"cannot decode Avro file {self.url}: {type(exc).__name__}: {exc}") from exc
        first, last = self._last, self._last + block.num_records
        sizes = self.lengths[first:last]
        if last > len(self.lengths) or int(sizes.sum()) != len(data):
            raise CorruptFileError(f"record index does not match {self.url}: block at byte {block.offset} "
                                   f"holds {block.num_records} records in {len(data)} bytes")
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._data, self._first, self._last = memoryview(data), first, last

    def close(self) -> None:
        self._file.close()
