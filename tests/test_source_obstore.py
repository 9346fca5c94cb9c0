"""The obstore GET client keeps the boto3 path's guarantees: bounded bodies, credentials from boto3's chain.

The fault suites (tests/test_faults_*.py) run the whole ingest through it; these tests pin what only
this client does itself: refusing a body by its length before reading it, a read that a lying or
absent length cannot stretch, credentials refreshed through botocore, and a clear error without any.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.credentials import RefreshableCredentials

from pipeline.demo.s3server import free_port, s3_client
from pipeline.errors import SourceUnavailableError
from pipeline.source.base import FAILED, INVALID, MISSING, OK
from pipeline.source.s3 import make_client
from pipeline.source.s3_get import BotoCredentials, ObstoreS3Source, obstore_usable


def source(endpoint: str, url: str, **kwargs) -> ObstoreS3Source:
    client = make_client(endpoint, "us-east-1", 4, 1, "standard", 2.0, 5.0)
    return ObstoreS3Source(url, client, endpoint_url=endpoint, connect_timeout=2.0, read_timeout=5.0, **kwargs)


def test_fetch_missing_and_body_over_the_cap_refused_unread(s3_endpoint, s3_bucket):
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key="p/small.json", Body=b'{"a": 1}')
    client.put_object(Bucket=s3_bucket, Key="p/big.json", Body=b"x" * 5000)
    src = source(s3_endpoint, f"s3://{s3_bucket}/p/", max_bytes=1000)
    ok = src.fetch("small.json")
    assert (ok.outcome, ok.body) == (OK, b'{"a": 1}')
    assert src.fetch("absent.json").outcome == MISSING
    big = src.fetch("big.json")
    assert big.outcome == INVALID and "5000 bytes, over the 1000-byte cap" in big.reason
    assert src.stats.as_dict() == {"gets": 3, "lists": 0, "heads": 0, "retries": 0, "bytes": len(b'{"a": 1}')}


def test_a_missing_bucket_is_a_failure_not_a_missing_document(s3_endpoint):
    fetched = source(s3_endpoint, "s3://no-such-bucket-here/p/").fetch("k.json")
    assert fetched.outcome == FAILED and "NoSuchBucket" in fetched.reason


class _Liar(BaseHTTPRequestHandler):
    """Answers every GET with a body that does not match what its headers announce."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("ETag", '"not-an-md5"')
        if "chunked" in self.path:  # no Content-Length at all: 20 kB in chunks
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(20):
                    self.wfile.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
        else:  # announces 10 bytes, sends 5000
            self.send_header("Content-Length", "10")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"x" * 5000)
        self.close_connection = True


@contextlib.contextmanager
def liar() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_lying_or_absent_length_cannot_make_it_buffer_more_than_the_cap(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with liar() as endpoint:
        src = source(endpoint, "s3://bkt/p/", max_bytes=1000, max_attempts=1)
        short = src.fetch("lying.json")
        assert short.outcome == OK and short.body == b"x" * 10  # the announced length bounds the read
        chunked = src.fetch("chunked.json")
        assert chunked.outcome == FAILED and not chunked.connection_error
        assert "Content-Length" in chunked.reason
        assert src.stats.bytes == 10


def test_refused_connections_are_connection_errors_with_deterministic_reasons(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = f"http://127.0.0.1:{free_port()}"
    src = source(dead, "s3://bkt/p/", max_attempts=2, backoff_base=0.01)
    first, second = src.fetch("a.json"), src.fetch("a.json")
    assert first.outcome == FAILED and first.connection_error and first.reason.startswith("cannot connect")
    assert first.reason == second.reason, "a ledger reason must not carry timings"
    assert src.stats.gets == 4


def test_credentials_come_from_botocore_and_are_refreshed():
    issued = iter(range(1, 100))

    def refresh() -> dict:
        n = next(issued)
        expiry = dt.datetime.now(dt.UTC) + (dt.timedelta(seconds=1) if n == 1 else dt.timedelta(hours=1))
        return {"access_key": f"KEY{n}", "secret_key": f"SECRET{n}", "token": f"TOKEN{n}",
                "expiry_time": expiry.isoformat()}

    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")

    class Session:
        def get_credentials(self):
            return credentials

    provider = BotoCredentials(Session())
    provider.resolve("s3://bkt/p/")
    first = provider()
    assert first["access_key_id"] == "KEY2"  # botocore refreshed at once: KEY1 expired within its margin
    assert first["token"] == "TOKEN2" and first["expires_at"] > dt.datetime.now(dt.UTC)
    assert provider()["access_key_id"] == "KEY2"  # still valid: no refresh


def test_no_credentials_fail_fast_naming_the_fix(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    src = source(f"http://127.0.0.1:{free_port()}", "s3://bkt/p/")
    with pytest.raises(SourceUnavailableError, match="no AWS credentials.*AWS_PROFILE"):
        src.fetch("a.json")


def _fetch_in_child(endpoint: str, bucket: str) -> tuple[str, bytes | None, bool]:
    fetched = source(endpoint, f"s3://{bucket}/p/").fetch("a.json")
    return fetched.outcome, fetched.body, obstore_usable()


def test_a_process_forked_after_obstore_ran_uses_boto3_instead_of_hanging(s3_endpoint, s3_bucket):
    """tokio does not survive fork(): the child would wait forever on its first GET through obstore."""
    s3_client(s3_endpoint).put_object(Bucket=s3_bucket, Key="p/a.json", Body=b'{"a": 1}')
    assert source(s3_endpoint, f"s3://{s3_bucket}/p/").fetch("a.json").outcome == OK  # runtime started here
    with multiprocessing.get_context("fork").Pool(1) as pool:
        outcome = pool.apply_async(_fetch_in_child, (s3_endpoint, s3_bucket)).get(timeout=120)
    assert outcome == (OK, b'{"a": 1}', False)
    assert obstore_usable()


def test_the_configured_source_builds_its_boto3_client_only_to_list(s3_endpoint, s3_bucket):
    """A chunk's GETs need no boto3 client (~0.1 s of CPU per task process to build): it is made on first use."""
    from pipeline.source import source_from_settings

    s3_client(s3_endpoint).put_object(Bucket=s3_bucket, Key="p/a.json", Body=b'{"a": 1}')
    cfg = {"url": f"s3://{s3_bucket}/p/", "endpoint_url": s3_endpoint, "region": "us-east-1", "concurrency": 2,
           "max_attempts": 2, "retry_mode": "standard", "connect_timeout": 2.0, "read_timeout": 5.0,
           "client": "obstore", "max_document_bytes": 1000}
    src = source_from_settings(cfg)
    assert src.fetch("a.json").body == b'{"a": 1}' and src.fetch("b.json").outcome == MISSING
    assert src._client is None and src.describe() == f"s3://{s3_bucket}/p/ at {s3_endpoint}"
    assert list(src.list_objects()) == [("a.json", 8)]
    assert src.stats.as_dict() == {"gets": 2, "lists": 1, "heads": 0, "retries": 0, "bytes": 8}
