"""Thin Luigi tasks: parameters, ``requires()``, ``output()`` and a ``run()`` that calls ``pipeline``.

Run them the Luigi way from the repository root, e.g.::

    luigi --module tasks IngestFullSnapshot --date 2026-11-26 --local-scheduler
"""

from tasks.attributes import DailyAttributes
from tasks.ingest import CatalogSnapshot, IngestChunk, IngestFullSnapshot
from tasks.serving import PublishAttributes
from tasks.snapshots import (
    AnalysisSet,
    ApplyRetention,
    CompactChunk,
    CompactFullSnapshot,
    IncrementalAnalysis,
    IncrementalChunk,
)

__all__ = ["CatalogSnapshot", "IngestChunk", "IngestFullSnapshot", "AnalysisSet", "IncrementalChunk",
           "IncrementalAnalysis", "CompactChunk", "CompactFullSnapshot", "ApplyRetention", "DailyAttributes",
           "PublishAttributes"]
