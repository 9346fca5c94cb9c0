"""Ingest tasks: the bucketed catalog, one chunk per bucket, and the full snapshot that publishes them."""

from __future__ import annotations

import luigi

from pipeline import config, layout
from pipeline.errors import ConfigError
from pipeline.ingest.chunk import ingest_bucket
from pipeline.ingest.work import full_items
from pipeline.snapshots.chunk_job import ingest_chunk_job
from pipeline.source import source_from_config, source_settings
from pipeline.source.catalog import build_catalog, read_catalog_bucket
from pipeline.storage import target_for
from tasks import settings
from tasks.base import PublishedSet, chunk_progress, success_target, warehouse


class CatalogSnapshot(luigi.Task):
    """The metadata dump of a date, validated, de-duplicated, bucketed and sorted by track id."""

    date = luigi.DateParameter(description="Date of the metadata dump (YYYY-MM-DD).")

    def output(self):
        return success_target(layout.CATALOG, self.date)

    def run(self):
        build_catalog(warehouse(), self.date, config.warehouse().buckets, settings.catalog_sort())


class IngestChunk(luigi.Task):
    """Download and pack the analyses of one bucket of the catalog (the initial full ingest)."""

    date = luigi.DateParameter(description="Date of the metadata dump to ingest.")
    chunk = luigi.IntParameter(description="Bucket number, 0 <= chunk < [warehouse] buckets.")
    resources = {"s3_ingest": 1}  # limited in luigi.cfg [resources]: protects the bucket and the bill

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        buckets = config.warehouse().buckets
        if not 0 <= self.chunk < buckets:
            raise ConfigError(f"chunk {self.chunk} is out of range: [warehouse] buckets = {buckets} "
                              f"(0..{buckets - 1})")

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
        total = manifest.bucket(self.chunk).records
        inputs = [wh.layout.date_url(layout.CATALOG, self.date), config.source().url]
        cfg = config.ingest()
        if cfg.runner != "inprocess":  # the map-only job MRIngestChunk, one map task per slice
            ingest_chunk_job(wh, source_settings(), config.source().key_template, layout.ANALYSIS_FULL, self.date,
                             self.chunk, settings.chunk(), cfg.runner, cfg.slices, cfg.mrjob_conf,
                             config.warehouse().s3_endpoint_url, chunk_progress(self, total), inputs)
            return
        rows = read_catalog_bucket(wh, self.date, self.chunk, manifest)
        ingest_bucket(wh, source_from_config(), layout.ANALYSIS_FULL, self.date, self.chunk,
                      full_items(rows, config.source().key_template), settings.chunk(),
                      progress=chunk_progress(self, total), inputs=inputs)


class IngestFullSnapshot(PublishedSet):
    """The full analysis snapshot of a date from a complete ingest of its catalog: all chunks, then publish."""

    date = luigi.DateParameter(description="Date of the metadata dump to ingest.")
    dataset, kind = layout.ANALYSIS_FULL, "full"

    def chunk(self, bucket: int) -> luigi.Task:
        return IngestChunk(self.date, bucket)

    def details(self, wh) -> dict:
        return {"inputs": [wh.layout.date_url(layout.CATALOG, self.date), config.source().url]}
