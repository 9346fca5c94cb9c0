"""Analysis documents from an S3 bucket (boto3, the standard credential chain, any endpoint).

One GET per track: a 404 means "missing", so existence costs no extra request
(see docs/ingest.md for the request and cost arithmetic). botocore retries
throttling, 5xx and connection errors (``standard``/``adaptive`` mode); this module
also retries bodies that arrive truncated, time out mid-read, or do not match their
ETag (MD5 of a single-part object), so a corrupted transfer is never ingested.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions as bx

from pipeline.errors import SourceUnavailableError
from pipeline.redact import redact_credentials_in_logs
from pipeline.source.base import FAILED, INVALID, MISSING, OK, UNBOUNDED, Fetched, RequestStats, Source, announced_gzip
from pipeline.source.limits import BodyTooLarge, MemoryBudget, read_capped

BODY_ERRORS = (bx.IncompleteReadError, bx.ResponseStreamingError, bx.ReadTimeoutError, bx.ConnectionClosedError,
               bx.FlexibleChecksumError)
CONNECT_ERRORS = (bx.EndpointConnectionError, bx.ConnectTimeoutError)
# Raised by the request itself (before any body), after botocore's own retries: the endpoint took the
# connection but never answered (hung server, black-holing proxy). Counted like a refused connection,
# so a dead endpoint fails the chunk fast instead of timing out on every track of it.
NO_ANSWER_ERRORS = (bx.ReadTimeoutError, bx.ConnectionClosedError, bx.ResponseStreamingError)
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def make_client(endpoint_url: str | None, region: str, pool: int, max_attempts: int, retry_mode: str,
                connect_timeout: float, read_timeout: float, session=None):
    """A boto3 S3 client with a pool as large as the download concurrency (and credentials kept out of logs)."""
    redact_credentials_in_logs()
    config = botocore.config.Config(
        region_name=region, max_pool_connections=pool, connect_timeout=connect_timeout,
        read_timeout=read_timeout, retries={"total_max_attempts": max_attempts, "mode": retry_mode},
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    return (session or boto3.session.Session()).client("s3", endpoint_url=endpoint_url, config=config)


def _etag_matches(etag: str, body: bytes) -> bool:
    """True unless the ETag is a plain MD5 that the body does not match (multipart ETags are not MD5s)."""
    etag = etag.strip('"')
    if len(etag) != 32 or "-" in etag:
        return True
    return hashlib.md5(body, usedforsecurity=False).hexdigest() == etag


def _validated_by_botocore(response: dict) -> bool:
    """botocore already checked a flexible checksum (CRC32, CRC64NVME, SHA256, ...) of this body."""
    return any(key.startswith("Checksum") and key != "ChecksumType" for key in response)


class S3Source(Source):
    def __init__(self, url: str, client, max_attempts: int = 5, verify_etag: bool = True,
                 client_factory: Callable[[], object] | None = None):
        """``client``: a boto3 S3 client, or None with ``client_factory`` making one on first use.

        Why lazily: building a boto3 S3 client costs ~0.1 s of CPU (its service model is parsed
        anew by every session), paid by every chunk's task process; the obstore path needs it only
        to list or to fall back, so its chunks never pay it (docs/performance.md).
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"{url!r} is not an s3://BUCKET/PREFIX URL")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.max_attempts = max_attempts
        self.verify_etag = verify_etag
        self.stats = RequestStats()
        if client is None and client_factory is None:
            raise ValueError("S3Source needs a client or a client_factory")
        self._client, self._client_factory = None, client_factory
        self._client_lock = threading.Lock()
        if client is not None:
            self._attach(client)

    def _attach(self, client) -> None:
        client.meta.events.register("before-send.s3", self._count_request)
        self._client = client

    @property
    def client(self):
        """The boto3 client, made on first use when only a factory was given."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._attach(self._client_factory())
        return self._client

    def _count_request(self, request, **_kwargs) -> None:
        kind = {"GET": "gets", "HEAD": "heads"}.get(request.method)
        if kind == "gets" and "list-type=" in request.url:
            kind = "lists"
        if kind:
            self.stats.add(**{kind: 1})

    def describe(self) -> str:
        endpoint = self.client.meta.endpoint_url
        return f"{self.url} at {endpoint}"

    def fetch(self, key: str, budget: MemoryBudget | None = None) -> Fetched:
        """GET one object: refused by its Content-Length, else read under the cap within ``budget``."""
        budget = budget or UNBOUNDED
        full_key = self.prefix + key
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=full_key)
            except bx.ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                if code in MISSING_CODES:
                    return Fetched(MISSING, reason=f"s3://{self.bucket}/{full_key} not found", attempts=attempt)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                return Fetched(FAILED, reason=f"HTTP {status} {code}: {error.get('Message', '')}".strip(),
                               attempts=attempt)
            except CONNECT_ERRORS as exc:
                return Fetched(FAILED, reason=f"cannot connect: {exc}", attempts=attempt, connection_error=True)
            except NO_ANSWER_ERRORS as exc:
                return Fetched(FAILED, reason=f"no answer: {exc}", attempts=attempt, connection_error=True)
            except bx.NoCredentialsError as exc:
                raise self._no_credentials() from exc
            stream = response["Body"]
            declared = response.get("ContentLength")
            try:
                reservation = budget.admit(declared, announced_gzip(key, response.get("ContentEncoding")))
            except BodyTooLarge as exc:
                stream.close()  # the body is never read: the connection is dropped, not drained
                return Fetched(INVALID, reason=str(exc), attempts=attempt)
            try:
                body = read_capped(stream, budget.max_document_bytes, declared)
            except BodyTooLarge as exc:
                reservation.release()
                stream.close()
                return Fetched(INVALID, reason=str(exc), attempts=attempt)
            except BODY_ERRORS as exc:
                # truncated, timed out mid-read, reset, or failing its checksum: fetch it again
                reservation.release()
                reason = f"unreadable body: {type(exc).__name__}"
                self.stats.add(retries=1)
                continue
            except BaseException:
                reservation.release()
                raise
            self.stats.add(bytes=len(body))
            checked = _validated_by_botocore(response) or _etag_matches(response.get("ETag", ""), body)
            if self.verify_etag and not checked:
                reservation.release()
                reason = "body does not match its ETag (corrupted in transit)"
                self.stats.add(retries=1)
                continue
            return Fetched(OK, body=body, content_encoding=response.get("ContentEncoding"), attempts=attempt,
                           reservation=reservation)
        return Fetched(FAILED, reason=f"{reason} after {self.max_attempts} attempts", attempts=self.max_attempts)

    def _no_credentials(self) -> SourceUnavailableError:
        return SourceUnavailableError(
            f"no AWS credentials for {self.describe()}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run where an instance role applies")

    def list_objects(self):
        """List only the configured prefix (never the bucket root: the bucket holds other teams' data).

        A setup problem (no credentials, no endpoint, no access to the bucket) fails the listing at
        once with what to fix, not with botocore's traceback.
        """
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):], obj["Size"]
        except bx.NoCredentialsError as exc:
            raise self._no_credentials() from exc
        except CONNECT_ERRORS + NO_ANSWER_ERRORS as exc:
            raise SourceUnavailableError(f"cannot list {self.describe()}: {exc}; check [source] endpoint_url "
                                         "and the network") from exc
        except bx.ClientError as exc:
            error = exc.response.get("Error", {})
            raise SourceUnavailableError(f"cannot list {self.describe()}: {error.get('Code')} "
                                         f"{error.get('Message', '')}; check [source] url and the credentials' "
                                         "access to that bucket and prefix") from exc
