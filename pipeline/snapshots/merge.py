"""Streaming k-way merges over inputs sorted by track id (the sort-merge-bucket pass).

Inputs are given oldest first. For a track present in several inputs the newest one
wins; memory holds one record per input, whatever the size of the data.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class MergeStats:
    inputs: int = 0  # records read from every input
    replaced: int = 0  # older versions dropped because a newer input had the track
    dropped: int = 0  # records removed by the filter (e.g. tracks that left the catalog)
    written: int = 0


def merge_newest(streams: list[Iterable[dict]], stats: MergeStats | None = None) -> Iterator[dict]:
    """One record per track id, in id order, taken from the newest stream that has it."""
    stats = stats if stats is not None else MergeStats()
    tagged = [_tag(stream, -age) for age, stream in enumerate(streams)]
    last = None
    for track_id, _neg_age, record in heapq.merge(*tagged, key=lambda t: (t[0], t[1])):
        stats.inputs += 1
        if track_id == last:
            stats.replaced += 1
            continue
        last = track_id
        yield record


def _tag(stream: Iterable[dict], rank: int) -> Iterator[tuple[str, int, dict]]:
    # A function, not a generator expression in a loop: the rank must be bound per stream.
    for record in stream:
        yield record["track_id"], rank, record


def keep_ids(records: Iterable[dict], ids: Iterable[str], stats: MergeStats | None = None) -> Iterator[dict]:
    """The records whose id is in ``ids`` (both sorted): a streaming semi-join."""
    stats = stats if stats is not None else MergeStats()
    wanted = iter(ids)
    current = next(wanted, None)
    for record in records:
        while current is not None and current < record["track_id"]:
            current = next(wanted, None)
        if current == record["track_id"]:
            stats.written += 1
            yield record
        else:
            stats.dropped += 1
