"""What a chunk must fetch: catalog rows turned into work items with their source keys."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pipeline.errors import InvalidDocumentError
from pipeline.ingest.engine import WorkItem
from pipeline.source.base import key_for
from pipeline.source.catalog import CatalogRow


def work_item(row: CatalogRow, key_template: str, previous: dict | None = None) -> WorkItem:
    """A work item; a key that is malformed or escapes the source prefix makes the track invalid, not the chunk."""
    try:
        return WorkItem(row, key_for(row.track_id, row.analysis_key, key_template), previous=previous)
    except InvalidDocumentError as exc:
        return WorkItem(row, row.analysis_key or "", key_error=str(exc), previous=previous)


def full_items(rows: Iterable[CatalogRow], key_template: str) -> Iterator[WorkItem]:
    """Every catalog track of a bucket (the initial full ingest)."""
    for row in rows:
        yield work_item(row, key_template)
