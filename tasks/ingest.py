"""Ingest tasks: the bucketed catalog, one chunk per bucket, and the full snapshot that publishes them."""

from __future__ import annotations

import luigi

from pipeline import config, layout
from pipeline.errors import ConfigError
from pipeline.ingest.chunk import ChunkSettings, ingest_bucket, publish_analysis
from pipeline.ingest.work import full_items
from pipeline.ops.quality import QualitySettings
from pipeline.source import source_from_config
from pipeline.source.catalog import build_catalog, read_catalog_bucket
from pipeline.storage import target_for
from tasks.base import chunk_progress, success_target, warehouse


class CatalogSnapshot(luigi.Task):
    """The metadata dump of a date, validated, de-duplicated, bucketed and sorted by track id."""

    date = luigi.DateParameter(description="Date of the metadata dump (YYYY-MM-DD).")

    def output(self):
        return success_target(layout.CATALOG, self.date)

    def run(self):
        cfg = config.catalog()
        build_catalog(warehouse(), self.date, config.ingest().chunks, cfg.sort_memory_mb, cfg.max_open_runs)


class IngestChunk(luigi.Task):
    """Download and pack the analyses of one bucket of the catalog (the initial full ingest)."""

    date = luigi.DateParameter(description="Date of the metadata dump to ingest.")
    chunk = luigi.IntParameter(description="Bucket number, 0 <= chunk < [ingest] chunks.")
    resources = {"s3_ingest": 1}  # limited in luigi.cfg [resources]: protects the bucket and the bill

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        chunks = config.ingest().chunks
        if not 0 <= self.chunk < chunks:
            raise ConfigError(f"chunk {self.chunk} is out of range: [ingest] chunks = {chunks} (0..{chunks - 1})")

    def requires(self):
        return CatalogSnapshot(self.date)

    def output(self):
        wh = warehouse()
        return target_for(wh.layout.bucket_manifest_url(layout.ANALYSIS_FULL, self.date, self.chunk), wh.storage)

    def complete(self):
        # Once the date is published its staging is gone: the chunk stays done, never re-downloaded.
        wh = warehouse()
        return (wh.is_complete(layout.ANALYSIS_FULL, self.date)
                or wh.bucket_committed(layout.ANALYSIS_FULL, self.date, self.chunk))

    def run(self):
        wh = warehouse()
        manifest = wh.manifest(layout.CATALOG, self.date)
        total = manifest["bucket_manifests"][layout.bucket_name(self.chunk)]["records"]
        rows = read_catalog_bucket(wh, self.date, self.chunk, manifest)
        ingest_bucket(wh, source_from_config(), layout.ANALYSIS_FULL, self.date, self.chunk,
                      full_items(rows, config.source().key_template), ChunkSettings.from_config(),
                      progress=chunk_progress(self, total),
                      inputs=[wh.layout.date_url(layout.CATALOG, self.date), config.source().url])


class IngestFullSnapshot(luigi.Task):
    """The full analysis snapshot of a date from a complete ingest of its catalog: all chunks, then publish."""

    date = luigi.DateParameter(description="Date of the metadata dump to ingest.")

    def requires(self):
        return [IngestChunk(self.date, chunk) for chunk in range(config.ingest().chunks)]

    def output(self):
        return success_target(layout.ANALYSIS_FULL, self.date)

    def run(self):
        wh = warehouse()
        publish_analysis(wh, layout.ANALYSIS_FULL, self.date, config.ingest().chunks, QualitySettings.from_config(),
                         kind="full",
                         inputs=[wh.layout.date_url(layout.CATALOG, self.date), config.source().url])
