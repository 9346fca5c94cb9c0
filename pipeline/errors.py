"""One exception tree for the whole pipeline.

Operators read these messages at 3 a.m.: every error names the thing at fault
(a URL, a track id, a config key, an endpoint) and, where it can, how to fix it.
Bad *records* are not exceptions at the task level: they are counted and kept in
the ledger. Exceptions are for bad *setup* and for work that cannot be published.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(PipelineError):
    """A configuration value is missing or invalid (names the section and key)."""


class BucketCountError(ConfigError):
    """A dataset was written with another bucket count than the configured one: reading it would misread it."""


class LayoutError(PipelineError):
    """A warehouse path or dataset date is malformed or not where it should be."""


class StorageError(PipelineError):
    """The warehouse cannot be read or written (permissions, disk full, missing files)."""


class IncompleteDatasetError(StorageError):
    """A dataset date exists but has no ``_SUCCESS`` marker, or its manifest is missing."""


class CorruptFileError(StorageError):
    """A data file cannot be decoded (truncated, wrong schema, bad checksum)."""


class SourceError(PipelineError):
    """Problems with the source of analyses (the S3 bucket or a local folder)."""


class SourceUnavailableError(SourceError):
    """The source endpoint cannot be reached at all: fail fast instead of ledgering every track."""


class InvalidDocumentError(SourceError):
    """An analysis document is not a valid Echo Nest analysis; the reason says why.

    Raised per track and caught by the ingest, which records it in the ledger.
    """


class CatalogError(PipelineError):
    """The metadata dump (the track catalog) is missing, empty or malformed."""


class TooManyFailuresError(PipelineError):
    """A chunk's failure ratio exceeded the configured limit, so nothing was published."""


class QualityGateError(PipelineError):
    """A dataset failed its quality checks before publication; the message lists them."""


class ScheduleError(PipelineError):
    """A task was asked to build a dataset the snapshot schedule says must not exist."""
