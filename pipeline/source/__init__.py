"""Sources of analysis documents and the metadata dump that names them."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.source.base import Source

# The ``[source]`` keys a worker needs to build its own source (a map task has no luigi.cfg).
SOURCE_KEYS = ("url", "endpoint_url", "region", "concurrency", "max_attempts", "retry_mode", "connect_timeout",
               "read_timeout", "client", "max_document_bytes")


def source_settings() -> dict:
    """The configured ``[source]`` values a remote worker needs, as plain JSON-able values."""
    from pipeline import config

    cfg = config.source()
    return {key: getattr(cfg, key) for key in SOURCE_KEYS}


def source_from_config(client=None) -> Source:
    """The configured source (``[source] url``); an S3 client can be injected (tests, benchmarks)."""
    return source_from_settings(source_settings(), client)


def source_from_settings(cfg: dict, client=None) -> Source:
    """A source from ``[source]`` values (``source_settings()``), in this process or on a worker."""
    if cfg["url"].startswith("file://"):
        from pipeline.source.local import LocalSource

        return LocalSource(cfg["url"])
    if cfg["url"].startswith("s3://"):
        import boto3

        from pipeline.redact import redact_credentials_in_logs
        from pipeline.source.s3 import S3Source, make_client

        redact_credentials_in_logs()  # now, not when (if ever) the boto3 client is made
        session = boto3.session.Session()

        def new_client():
            return make_client(cfg["endpoint_url"], cfg["region"], cfg["concurrency"] + 4, cfg["max_attempts"],
                               cfg["retry_mode"], cfg["connect_timeout"], cfg["read_timeout"], session=session)

        if cfg["client"] == "boto3":
            return S3Source(cfg["url"], client or new_client(), max_attempts=cfg["max_attempts"])
        from pipeline.source.s3_get import ObstoreS3Source

        # the boto3 client only lists and stands in after a fork: made on first use (s3.py)
        return ObstoreS3Source(cfg["url"], client, client_factory=new_client, endpoint_url=cfg["endpoint_url"],
                               region=cfg["region"], session=session, max_attempts=cfg["max_attempts"],
                               max_bytes=cfg["max_document_bytes"], connect_timeout=cfg["connect_timeout"],
                               read_timeout=cfg["read_timeout"], pool=cfg["concurrency"] + 4)
    raise ConfigError(f"[source] url = {cfg['url']!r}: expected s3://BUCKET/PREFIX or file://FOLDER")
