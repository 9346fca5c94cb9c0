"""Thin Luigi tasks: parameters, ``requires()``, ``output()`` and a ``run()`` that calls ``pipeline``.

Run them the Luigi way from the repository root, e.g.::

    luigi --module tasks IngestFullSnapshot --date 2026-11-26 --local-scheduler
    luigi --module tasks RangeDaily --of DailyAttributes --start 2026-11-01 --stop 2026-11-27

``RangeDaily`` (Luigi's backfill wrapper) is imported here on purpose: ``luigi.cfg`` sets
``[core] autoload_range = false`` (Luigi deprecates the autoload), so without this import
``--module tasks RangeDaily`` would not find the class, from the repository or an installed
package alike.
"""

from luigi.tools.range import RangeDaily

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
           "PublishAttributes", "RangeDaily"]
