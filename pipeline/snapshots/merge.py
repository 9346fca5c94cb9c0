"""Streaming k-way merges over inputs sorted by track id (the sort-merge-bucket pass).

Inputs are given oldest first. For a track present in several inputs the newest one
wins; memory holds one record per input, whatever the size of the data. Records are dicts
(``record["track_id"]``) unless ``id_of`` says otherwise (e.g. record index entries).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

BY_ID: Callable[[Any], str] = itemgetter("track_id")


@dataclass
class MergeStats:
    inputs: int = 0  # records read from every input
    replaced: int = 0  # older versions dropped because a newer input had the track
    dropped: int = 0  # records removed by the filter (e.g. tracks that left the catalog)
    written: int = 0


def merge_newest(streams: list[Iterable[Any]], stats: MergeStats | None = None,
                 id_of: Callable[[Any], str] = BY_ID) -> Iterator[Any]:
    """One record per track id, in id order, taken from the newest stream that has it."""
    stats = stats if stats is not None else MergeStats()
    tagged = [_tag(stream, -age, id_of) for age, stream in enumerate(streams)]
    last = None
    for track_id, _neg_age, record in heapq.merge(*tagged, key=lambda t: (t[0], t[1])):
        stats.inputs += 1
        if track_id == last:
            stats.replaced += 1
            continue
        last = track_id
        yield record


def _tag(stream: Iterable[Any], rank: int, id_of: Callable[[Any], str]) -> Iterator[tuple[str, int, Any]]:
    # A function, not a generator expression in a loop: the rank must be bound per stream.
    for record in stream:
        yield id_of(record), rank, record


def keep_ids(records: Iterable[Any], ids: Iterable[str], stats: MergeStats | None = None,
             id_of: Callable[[Any], str] = BY_ID) -> Iterator[Any]:
    """The records whose id is in ``ids`` (both sorted): a streaming semi-join."""
    stats = stats if stats is not None else MergeStats()
    wanted = iter(ids)
    current = next(wanted, None)
    for record in records:
        track_id = id_of(record)
        while current is not None and current < track_id:
            current = next(wanted, None)
        if current == track_id:
            stats.written += 1
            yield record
        else:
            stats.dropped += 1
