"""Sources of analysis documents and the metadata dump that names them."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.source.base import Source


def source_from_config(client=None) -> Source:
    """The configured source (``[source] url``); an S3 client can be injected (tests, benchmarks)."""
    from pipeline import config

    cfg = config.source()
    if cfg.url.startswith("file://"):
        from pipeline.source.local import LocalSource

        return LocalSource(cfg.url)
    if cfg.url.startswith("s3://"):
        import boto3

        from pipeline.source.s3 import S3Source, make_client

        session = boto3.session.Session()
        client = client or make_client(cfg.endpoint_url, cfg.region, cfg.concurrency + 4, cfg.max_attempts,
                                       cfg.retry_mode, cfg.connect_timeout, cfg.read_timeout, session=session)
        if cfg.client == "boto3":
            return S3Source(cfg.url, client, max_attempts=cfg.max_attempts)
        from pipeline.source.s3_get import ObstoreS3Source

        return ObstoreS3Source(cfg.url, client, endpoint_url=cfg.endpoint_url, session=session,
                               max_attempts=cfg.max_attempts, max_bytes=cfg.max_document_bytes,
                               connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout,
                               pool=cfg.concurrency + 4)
    raise ConfigError(f"[source] url = {cfg.url!r}: expected s3://BUCKET/PREFIX or file://FOLDER")
