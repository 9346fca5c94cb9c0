"""Serving errors: subclasses of the pipeline's single exception tree.

Each says which version or store is at fault and what to do, because the usual reader is an
operator looking at a failed publish or a 503 from the lookup service.
"""

from __future__ import annotations

from pipeline.errors import ConfigError, PipelineError

__all__ = ["ConfigError", "NoActiveVersionError", "PipelineError", "PublishError", "ServingError",
           "StoreUnavailableError", "UnknownTrackError", "VersionNotVerifiedError"]


class ServingError(PipelineError):
    """Base of the errors of the online store, the similarity index and the lookup API."""


class StoreUnavailableError(ServingError):
    """The online store cannot be reached or opened (names the URL, path or hosts)."""


class NoActiveVersionError(ServingError):
    """No snapshot has been activated yet: run ``PublishAttributes`` for a date first."""


class VersionNotVerifiedError(ServingError):
    """Refused to activate a version whose load was not verified (a killed or short load)."""


class PublishError(ServingError):
    """A snapshot could not be published to the store; the active version was left untouched."""


class UnknownTrackError(ServingError):
    """A well-formed track id that the served snapshot does not hold."""
