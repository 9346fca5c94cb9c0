"""Per-track GETs through obstore (Rust ``object_store``), everything else of the S3 source through boto3.

Why: on the ingest's own loop boto3 spends most of a track's client CPU inside its request path
(event hooks, parsers, the retry handler), several times what the GET itself needs; obstore signs
and sends the same SigV4 GET from Rust for a fraction of it (docs/performance.md). boto3 keeps what
it does well: the credential chain and its refresh (obstore is fed from it), the plan's listing,
and the warehouse's S3 targets.

Every guarantee of the boto3 path is kept here, in Python, so it is visible and tested:

- one GET per track; a 404 ``NoSuchKey`` is "missing" (a missing *bucket* is an error, not absence);
- 5xx, 429 and 503 SlowDown, resets and timeouts are retried up to ``max_attempts`` with exponential
  backoff and full jitter (obstore's own retries are off, so every request sent is counted);
- a body that arrives truncated, reset mid-read, or not matching its single-part ETag (an MD5) is
  fetched again, and counted in ``retries``;
- a body longer than ``max_bytes`` is refused by its Content-Length before it is read; the read is
  bounded by that length (hyper never reads past it; obstore refuses an answer without one), and a
  read without a known size stops at ``max_bytes`` + 1, so a lying or absent length cannot make it
  buffer more;
- connection failures are flagged so the engine declares a dead or hung endpoint unreachable fast;
- reasons and logs carry the error's first line only (method, URL, status), never a credential.

obstore runs its I/O on a tokio runtime, which does not survive ``fork()``: a process forked after
its parent used obstore would hang on its first GET. Such a process (luigi forks one per task with
``--workers`` > 1) gets the boto3 GET path instead, with a warning; a process that forks before any
GET, as luigi's parent process does, is unaffected.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import threading
import time

from pipeline.errors import SourceUnavailableError
from pipeline.source.base import FAILED, INVALID, MISSING, OK, UNBOUNDED, Fetched, announced_gzip
from pipeline.source.limits import BodyTooLarge, MemoryBudget
from pipeline.source.s3 import S3Source, _etag_matches

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{0,200})</Message>")
_KIND = re.compile(r"HttpError \{\s*kind: (\w+)")
_ELAPSED = re.compile(r" in [0-9.]+(?:ns|µs|us|ms|s)\b")  # "GET ... in 1.2ms": timings would make reasons differ
READ_CHUNK = 8 * 1024 * 1024  # obstore hands the body over in pieces of at least this size (or the whole body)
NO_CREDENTIALS = ("no AWS credentials for {where}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                  "or run where an instance role applies")


_RUNTIME_PID: list[int] = []  # the process that started obstore's runtime (inherited, not reset, by fork)


def obstore_usable() -> bool:
    """False in a process forked after its parent started obstore's runtime (it would hang there)."""
    return not _RUNTIME_PID or _RUNTIME_PID[0] == os.getpid()


class BotoCredentials:
    """obstore's credential provider fed by boto3's chain (profiles, environment, SSO, instance roles).

    botocore refreshes expiring credentials inside ``get_frozen_credentials``; obstore asks again
    when the lifetime given here runs out, so a refreshed key is picked up within ``refresh_every``.
    """

    def __init__(self, session, refresh_every: dt.timedelta = dt.timedelta(minutes=5)):
        self.session, self.refresh_every = session, refresh_every
        self._credentials = None

    def resolve(self, where) -> None:
        """Walk the chain once (it may query an instance-metadata address); fail fast naming the fix.

        ``where()`` names the source in that message (only then: it may build the boto3 client).
        """
        self._credentials = self.session.get_credentials()
        if self._credentials is None:
            raise SourceUnavailableError(NO_CREDENTIALS.format(where=where()))

    def __call__(self) -> dict:
        frozen = self._credentials.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key, "token": frozen.token,
                "expires_at": dt.datetime.now(dt.UTC) + self.refresh_every}


class ObstoreS3Source(S3Source):
    """An ``S3Source`` whose per-track GETs go through obstore; listing and credentials stay with boto3."""

    def __init__(self, url: str, client, *, client_factory=None, endpoint_url: str | None = None,
                 region: str | None = None, session=None, max_attempts: int = 5, max_bytes: int = 64 * 1024 * 1024,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0, pool: int = 32, backoff_base: float = 0.2,
                 backoff_cap: float = 20.0, verify_etag: bool = True):
        """``client`` (boto3, or None and ``client_factory``) lists; ``session`` (boto3, default: a new one)
        supplies the credentials; ``region`` (default: the client's) signs the GETs."""
        super().__init__(url, client, max_attempts=max_attempts, verify_etag=verify_etag, client_factory=client_factory)
        self.endpoint_url, self.session, self.region = endpoint_url, session, region
        self.max_bytes, self.backoff_base, self.backoff_cap = max_bytes, backoff_base, backoff_cap
        self._timeouts = (connect_timeout, read_timeout)
        self._pool = pool
        self._store = None
        self._lock = threading.Lock()
        self._fallback_warned = False

    def _get_store(self):
        """The obstore store, built on first use (credentials are resolved then, not at construction)."""
        with self._lock:
            if self._store is None:
                import boto3
                from obstore.store import S3Store

                credentials = BotoCredentials(self.session or boto3.session.Session())
                credentials.resolve(self.describe)
                if not _RUNTIME_PID:
                    _RUNTIME_PID.append(os.getpid())
                endpoint = self.endpoint_url
                connect, read = self._timeouts
                options = {"connect_timeout": f"{int(connect * 1000)}ms", "read_timeout": f"{int(read * 1000)}ms",
                           "timeout": f"{int(max(60.0, 4 * read) * 1000)}ms", "pool_max_idle_per_host": str(self._pool),
                           "allow_http": bool(endpoint and endpoint.startswith("http://"))}
                kwargs = {"endpoint": endpoint, "virtual_hosted_style_request": False} if endpoint else {}
                region = self.region or self.client.meta.region_name
                self._store = S3Store(self.bucket, region=region, credential_provider=credentials,
                                      client_options=options, retry_config={"max_retries": 0}, **kwargs)
            return self._store

    def _backoff(self, attempt: int) -> None:
        time.sleep(random.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))))

    def fetch(self, key: str, budget: MemoryBudget | None = None) -> Fetched:
        """Like boto3's path: each body attempt gets its own request retries (``max_attempts`` each).

        The body is admitted to the chunk's memory ``budget`` by its size before a byte is read
        (pipeline/source/limits.py), and the reservation travels with the returned body.
        """
        if not obstore_usable():
            if not self._fallback_warned:
                self._fallback_warned = True
                log.warning("obstore's runtime was started before this process was forked (tokio is not fork-safe): "
                            "GETs of %s go through boto3 in process %d", self.url, os.getpid())
            return super().fetch(key, budget)
        budget = budget or UNBOUNDED
        store = self._get_store()
        full_key = self.prefix + key
        where = f"s3://{self.bucket}/{full_key}"
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            result, failed = self._request(store, full_key, where, attempt)
            if failed is not None:
                return failed
            outcome, reason = self._read(result, where, attempt, key, budget)
            if outcome is not None:
                return outcome
        return Fetched(FAILED, reason=f"{reason} after {self.max_attempts} attempts", attempts=self.max_attempts)

    def _request(self, store, full_key: str, where: str, attempt: int):
        """(the GET's result, None), or (None, the Fetched to return) once retrying cannot help."""
        import obstore
        from obstore.exceptions import BaseError

        reason, connection_error = "", False
        for tried in range(1, self.max_attempts + 1):
            self.stats.add(gets=1)
            try:
                return obstore.get(store, full_key), None
            except FileNotFoundError as exc:  # obstore's NotFoundError: a 404
                code, message = _error_code(str(exc))
                log.debug("GET %s: 404 %s", where, code)
                if code in ("", "NoSuchKey", "NotFound"):
                    return None, Fetched(MISSING, reason=f"{where} not found", attempts=attempt)
                return None, Fetched(FAILED, reason=f"HTTP 404 {code}: {message}".strip(), attempts=attempt)
            except BaseError as exc:
                text = str(exc)
                status = _status(text)
                log.debug("GET %s: %s", where, status or _first_line(text))
                if status is not None:
                    code, message = _error_code(text)
                    reason, connection_error = f"HTTP {status} {code}: {message}".strip(), False
                    if status not in RETRYABLE_STATUS:
                        return None, Fetched(FAILED, reason=reason, attempts=attempt)
                elif kind := _kind(text):  # nothing came back: refused, reset before an answer, or timed out
                    reason = ("cannot connect: " if kind == "Connect" else "no answer: ") + _first_line(text)
                    connection_error = True
                else:  # an answer obstore refused unread (no Content-Length), or a local error: not transient
                    return None, Fetched(FAILED, reason=f"refused: {_first_line(text)}", attempts=attempt)
                if tried < self.max_attempts:
                    self._backoff(tried)
        return None, Fetched(FAILED, reason=f"{reason} after {self.max_attempts} attempts", attempts=attempt,
                             connection_error=connection_error)

    def _read(self, result, where: str, attempt: int, key: str, budget: MemoryBudget) -> tuple[Fetched | None, str]:
        """(the body as a Fetched, "") or (None, why) when it must be fetched again."""
        from obstore.exceptions import BaseError

        size = result.meta.get("size")
        cap = min(self.max_bytes, budget.max_document_bytes)
        if size is not None and size > cap:
            log.debug("GET %s: %d bytes refused unread", where, size)
            return Fetched(INVALID, reason=f"document is {size} bytes, over the {cap}-byte cap",
                           attempts=attempt), ""
        encoding = result.attributes.get("Content-Encoding")
        try:
            reservation = budget.admit(size, announced_gzip(key, encoding))
        except BodyTooLarge as exc:
            return Fetched(INVALID, reason=str(exc), attempts=attempt), ""
        try:
            # hyper reads exactly the announced Content-Length (never more), and obstore refuses an answer
            # without one, so a checked size bounds the read; without a size the read counts as it goes
            body = bytes(result.bytes()) if size is not None else read_limited(result, cap)
        except BaseError as exc:
            reservation.release()
            self.stats.add(retries=1)
            return None, f"unreadable body: {_first_line(str(exc))}"
        except BaseException:
            reservation.release()
            raise
        if body is None:
            reservation.release()
            return Fetched(INVALID, reason=f"document is over the {cap}-byte cap", attempts=attempt), ""
        self.stats.add(bytes=len(body))
        log.debug("GET %s: 200, %d bytes", where, len(body))
        if self.verify_etag and not _etag_matches(result.meta.get("e_tag") or "", body):
            reservation.release()
            self.stats.add(retries=1)
            return None, "body does not match its ETag (corrupted in transit)"
        return Fetched(OK, body=body, content_encoding=encoding, attempts=attempt, reservation=reservation), ""


def read_limited(result, max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as more than ``max_bytes`` arrived (whatever the headers said)."""
    pieces, total = [], 0
    for piece in result.stream(min_chunk_size=min(READ_CHUNK, max_bytes + 1)):
        total += len(piece)
        if total > max_bytes:
            return None
        pieces.append(piece)
    if len(pieces) == 1:
        return bytes(pieces[0])
    return b"".join(bytes(p) for p in pieces)


def _status(text: str) -> int | None:
    match = _STATUS.search(text)
    return int(match.group(1)) if match else None


def _error_code(text: str) -> tuple[str, str]:
    code, message = _CODE.search(text), _MESSAGE.search(text)
    return (code.group(1) if code else ""), (message.group(1) if message else "")


def _kind(text: str) -> str:
    match = _KIND.search(text)
    return match.group(1) if match else ""


def _first_line(text: str) -> str:
    return _ELAPSED.sub("", text.split("\n", 1)[0])[:300]
