"""The configuration, read once at the task boundary and handed to ``pipeline/`` as small typed objects.

``pipeline/`` never reads ``luigi.cfg`` for a setting: its functions take these objects (the two
factories every entry point shares, ``Warehouse.from_config`` and ``source_from_config``, are
the exception). A task builds what it needs here, in ``run()`` or ``requires()``.
"""

from __future__ import annotations

import datetime as dt

from pipeline import config
from pipeline.attributes.snapshot import JobSettings
from pipeline.ingest.chunk import ChunkSettings
from pipeline.ingest.convert import default_processes
from pipeline.ops.quality import QualitySettings
from pipeline.snapshots import schedule
from pipeline.snapshots.retry import RetryPolicy
from pipeline.source.catalog import SortSettings
from pipeline.warehouse import Warehouse


def quality() -> QualitySettings:
    c = config.quality()
    return QualitySettings(c.enabled, c.max_out_of_range_ratio, c.max_anomaly_ratio, c.z_threshold)


def chunk() -> ChunkSettings:
    src, ing = config.source(), config.ingest()
    return ChunkSettings(src.concurrency, src.max_document_bytes, src.unreachable_after, ing.failure_ratio,
                         ing.records_per_part, ing.codec, quality(), invalid_ratio=ing.invalid_ratio,
                         processes=default_processes(ing.processes, _chunks_at_once()))


def _chunks_at_once() -> int:
    """``[resources] s3_ingest``: how many chunks this host may run side by side."""
    import luigi.configuration

    return luigi.configuration.get_config().getint("resources", "s3_ingest", 1)


def catalog_sort() -> SortSettings:
    c = config.catalog()
    return SortSettings(c.sort_memory_mb, c.max_open_runs)


def compaction() -> schedule.CompactionPolicy:
    c = config.compaction()
    return schedule.CompactionPolicy(c.every_days, c.max_incremental_ratio)


def retry() -> RetryPolicy:
    c = config.retry()
    return RetryPolicy(c.missing_first_days, c.missing_max_days)


def attributes_job() -> JobSettings:
    att, ing = config.attributes(), config.ingest()
    return JobSettings(att.runner, att.mrjob_conf, config.warehouse().s3_endpoint_url, ing.codec,
                       ing.records_per_part, quality(), default_processes(att.processes))


def start_date(wh: Warehouse) -> dt.date:
    """``[pipeline] start_date``, else the earliest metadata dump in the warehouse."""
    return schedule.start_date(wh, config.pipeline().start_date)
