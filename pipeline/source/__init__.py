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
        from pipeline.source.s3 import S3Source, make_client

        client = client or make_client(cfg.endpoint_url, cfg.region, cfg.concurrency + 4, cfg.max_attempts,
                                       cfg.retry_mode, cfg.connect_timeout, cfg.read_timeout)
        return S3Source(cfg.url, client, max_attempts=cfg.max_attempts)
    raise ConfigError(f"[source] url = {cfg.url!r}: expected s3://BUCKET/PREFIX or file://FOLDER")
