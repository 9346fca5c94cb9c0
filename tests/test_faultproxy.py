"""The fault-injecting proxy itself: clean relaying, each fault as boto3 sees it, determinism, shutdown.

Other tests trust the proxy to inject exactly the faults its plan says; these tests earn that trust
against a real moto server, so a pipeline test that fails under faults points at the pipeline.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    FlexibleChecksumError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from tests.support.faultproxy import FAULT_KINDS, FaultEvent, FaultPlan, FaultProxy

BUCKET = "faultproxy-test"
DOC_KEY = "analysis/doc.json"
# Non-ASCII on purpose: corruption must be caught inside multi-byte characters too.
DOC = json.dumps({"track": {"title": "Ça plane pour moi ♫", "segments": list(range(20000))}}).encode()
KEYS = [f"many/k{i:03d}.json" for i in range(60)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server for this module, seeded directly (not through any proxy)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        try:
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.05)
            s3 = _client(url)
            s3.create_bucket(Bucket=BUCKET)
            s3.put_object(Bucket=BUCKET, Key=DOC_KEY, Body=DOC)
            for key in KEYS:
                s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _client(url: str, *, attempts: int = 1, read_timeout: float = 5.0, **config: Any) -> Any:
    """A client that makes exactly ``attempts`` tries; timeouts generous unless a test is about them."""
    # botocore's retries "max_attempts" counts retries *after* the first try; "total_max_attempts"
    # counts tries, so 1 here really means a single request.
    cfg = Config(
        retries={"total_max_attempts": attempts, "mode": "standard"},
        read_timeout=read_timeout,
        connect_timeout=1,
        s3={"addressing_style": "path"},
        **config,
    )
    return boto3.client("s3", endpoint_url=url, config=cfg)


def _outcome(s3: Any, key: str) -> str:
    try:
        s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return "ok"
    except ClientError as exc:
        return exc.response["Error"]["Code"]


def test_clean_relay_round_trips_byte_exact(moto_url: str) -> None:
    payload = os.urandom(1_500_000)
    with FaultProxy(moto_url) as proxy:
        s3 = _client(proxy.url)
        s3.create_bucket(Bucket="relay-test")
        s3.put_object(Bucket="relay-test", Key="bytes", Body=payload)
        s3.put_object(Bucket="relay-test", Key="stream", Body=io.BytesIO(payload))  # Expect: 100-continue
        for key in ("bytes", "stream"):
            assert s3.get_object(Bucket="relay-test", Key=key)["Body"].read() == payload
        assert s3.head_object(Bucket="relay-test", Key="bytes")["ContentLength"] == len(payload)
        listed = s3.list_objects_v2(Bucket="relay-test")["Contents"]
        assert [(o["Key"], o["Size"]) for o in listed] == [("bytes", len(payload)), ("stream", len(payload))]
        with pytest.raises(ClientError) as missing:
            s3.get_object(Bucket="relay-test", Key="absent")
        assert missing.value.response["Error"]["Code"] == "NoSuchKey"
        # A chunked upload is forwarded with its framing intact.
        conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]), timeout=5)
        conn.request("PUT", "/relay-test/chunked", body=iter([b"hello ", b"world"]), encode_chunked=True)
        assert conn.getresponse().status == 200
        conn.close()
        assert s3.get_object(Bucket="relay-test", Key="chunked")["Body"].read() == b"hello world"
        stats = proxy.stats
        assert stats.faults == {} and stats.requests == stats.forwarded == 10


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("http_500", ClientError),
        ("slowdown_503", ClientError),
        ("reset", (ConnectionClosedError, EndpointConnectionError)),
        ("stall", ReadTimeoutError),
        ("truncate", (ResponseStreamingError, IncompleteReadError)),
        ("corrupt", FlexibleChecksumError),  # botocore verifies the CRC it stored on upload
    ],
)
def test_each_fault_as_boto3_sees_it(moto_url: str, kind: str, expected: type | tuple[type, ...]) -> None:
    plan = FaultPlan({kind: 1.0}, seed=7, stall_seconds=5)
    with FaultProxy(moto_url, plan) as proxy:
        s3 = _client(proxy.url, read_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(expected) as caught:
            s3.get_object(Bucket=BUCKET, Key=DOC_KEY)["Body"].read()
        assert time.monotonic() - started < 4  # the client gave up; it did not wait out the stall
        if kind in ("http_500", "slowdown_503"):
            assert isinstance(caught.value, ClientError)
            code = {"http_500": "InternalError", "slowdown_503": "SlowDown"}[kind]
            assert caught.value.response["Error"]["Code"] == code
        assert proxy.stats.faults == {kind: 1}
        assert proxy.events == [FaultEvent("GET", f"/{BUCKET}/{DOC_KEY}", 1, kind)]
        # HEAD is not in the plan's methods, and the proxy keeps serving after the fault.
        assert _client(proxy.url).head_object(Bucket=BUCKET, Key=DOC_KEY)["ContentLength"] == len(DOC)


@pytest.mark.parametrize("how", ["strip_checksums", "client_skips_validation"])
def test_corrupt_flips_exactly_one_byte_and_breaks_the_json(moto_url: str, how: str) -> None:
    plan = FaultPlan({"corrupt": 1.0}, seed=3, strip_checksums=how == "strip_checksums")
    extra = {"response_checksum_validation": "when_required"} if how == "client_skips_validation" else {}
    with FaultProxy(moto_url, plan) as proxy:
        body = _client(proxy.url, **extra).get_object(Bucket=BUCKET, Key=DOC_KEY)["Body"].read()
    assert len(body) == len(DOC)
    assert sum(a != b for a, b in zip(body, DOC, strict=True)) == 1
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    with pytest.raises(ValueError):
        json.loads(body)


def test_top_bit_flip_always_breaks_utf8() -> None:
    """Why the corrupt fault XORs 0x80: every position of a valid UTF-8 text becomes undecodable."""
    text = "ab ♫ Ça 😀 \"x\": [1, 2]".encode()
    for at in range(len(text)):
        damaged = text[:at] + bytes([text[at] ^ 0x80]) + text[at + 1 :]
        with pytest.raises(UnicodeDecodeError):
            damaged.decode("utf-8")


def test_body_faults_leave_error_responses_alone(moto_url: str) -> None:
    with FaultProxy(moto_url, FaultPlan({"truncate": 0.5, "corrupt": 1.0}, seed=1)) as proxy:
        assert _outcome(_client(proxy.url), "absent.json") == "NoSuchKey"
        assert proxy.stats.faults == {}


def _run(moto_url: str, plan: FaultPlan, order: list[str]) -> tuple[list[str], list[FaultEvent]]:
    with FaultProxy(moto_url, plan) as proxy:
        s3 = _client(proxy.url)
        outcomes = [_outcome(s3, key) for key in order]
        return outcomes, proxy.events


def test_decisions_are_deterministic_per_seed_and_independent_of_order(moto_url: str) -> None:
    rates = {"http_500": 0.2, "slowdown_503": 0.2}
    order = [key for _ in range(3) for key in KEYS[:20]]
    first, events = _run(moto_url, FaultPlan(rates, seed=11), order)
    again, events_again = _run(moto_url, FaultPlan(rates, seed=11), order)
    other, _ = _run(moto_url, FaultPlan(rates, seed=12), order)
    assert first == again and events == events_again
    assert first != other
    assert 0 < sum(o != "ok" for o in first) < len(order)
    # Each key's n-th request is decided the same way however the requests are interleaved.
    _, reversed_events = _run(moto_url, FaultPlan(rates, seed=11), order[::-1])
    assert set(reversed_events) == set(events)
    plan = FaultPlan(rates, seed=11)
    predicted = {
        FaultEvent("GET", f"/{BUCKET}/{key}", n, kind)
        for key in KEYS[:20]
        for n in (1, 2, 3)
        if (kind := plan.decide("GET", f"/{BUCKET}/{key}", n))
    }
    assert set(events) == predicted


def test_concurrent_clients_get_the_planned_faults(moto_url: str) -> None:
    """The pipeline downloads in parallel: per-target attempt numbering must survive that."""
    plan = FaultPlan({"http_500": 0.2, "reset": 0.1, "truncate": 0.1}, seed=4)
    with FaultProxy(moto_url, plan) as proxy:
        s3 = _client(proxy.url, max_pool_connections=8)

        def fetch(key: str) -> str:
            try:
                return "ok" if s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == key.encode() else "bad"
            except (ClientError, ConnectionClosedError, ResponseStreamingError) as exc:
                return type(exc).__name__

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(fetch, KEYS + KEYS))
        predicted = {
            FaultEvent("GET", f"/{BUCKET}/{key}", n, kind)
            for key in KEYS
            for n in (1, 2)
            if (kind := plan.decide("GET", f"/{BUCKET}/{key}", n))
        }
        assert set(proxy.events) == predicted and len(proxy.events) == len(predicted)
        assert outcomes.count("ok") == 2 * len(KEYS) - len(predicted) and "bad" not in outcomes


def test_injected_share_tracks_the_rate(moto_url: str) -> None:
    order = [key for _ in range(5) for key in KEYS]  # 300 GETs
    outcomes, _ = _run(moto_url, FaultPlan({"http_500": 0.3}, seed=5), order)
    share = sum(o == "InternalError" for o in outcomes) / len(outcomes)
    assert 0.22 <= share <= 0.38  # ±3 binomial standard deviations
    # First match wins: a later kind only gets the requests an earlier one left over.
    plan = FaultPlan({"http_500": 0.5, "corrupt": 0.5}, seed=5)
    kinds = [plan.decide("GET", f"/b/{i}", 1) for i in range(4000)]
    assert abs(kinds.count("http_500") / 4000 - 0.5) < 0.03
    assert abs(kinds.count("corrupt") / 4000 - 0.25) < 0.03


def test_plan_scope_methods_and_path_filter() -> None:
    plan = FaultPlan({"reset": 1.0}, seed=0, methods=("get", "PUT"), path_filter=lambda p: p.endswith(".json"))
    assert plan.decide("GET", "/b/x.json?versionId=1", 1) == "reset"
    assert plan.decide("PUT", "/b/x.json", 1) == "reset"
    assert plan.decide("HEAD", "/b/x.json", 1) is None
    assert plan.decide("GET", "/b/x.txt", 1) is None
    with pytest.raises(ValueError):
        FaultPlan({"explode": 0.1}, seed=0)
    with pytest.raises(ValueError):
        FaultPlan({"reset": 1.5}, seed=0)
    assert set(FAULT_KINDS) == {"http_500", "slowdown_503", "reset", "stall", "truncate", "corrupt"}


def test_a_retry_is_decided_independently(moto_url: str) -> None:
    plan = FaultPlan({"http_500": 0.5}, seed=2)
    firsts = [t for t in (f"/b/{i}" for i in range(4000)) if plan.decide("GET", t, 1)]
    seconds = sum(plan.decide("GET", t, 2) is not None for t in firsts) / len(firsts)
    assert 0.45 < seconds < 0.55  # not 1.0: a faulted request is not doomed on its retry
    key = next(
        k for k in KEYS if plan.decide("GET", f"/{BUCKET}/{k}", 1) and not plan.decide("GET", f"/{BUCKET}/{k}", 2)
    )
    with FaultProxy(moto_url, plan) as proxy:
        assert _client(proxy.url, attempts=2).get_object(Bucket=BUCKET, Key=key)["Body"].read() == key.encode()
        assert proxy.events == [FaultEvent("GET", f"/{BUCKET}/{key}", 1, "http_500")]
        assert (proxy.stats.requests, proxy.stats.forwarded) == (2, 1)


def test_set_plan_switches_faults_at_run_time(moto_url: str) -> None:
    with FaultProxy(moto_url) as proxy:
        s3 = _client(proxy.url)
        assert _outcome(s3, DOC_KEY) == "ok"
        proxy.set_plan(FaultPlan({"slowdown_503": 1.0}, seed=0))
        assert _outcome(s3, DOC_KEY) == "SlowDown"
        proxy.set_plan(None)
        assert _outcome(s3, DOC_KEY) == "ok"
        assert proxy.stats.faults == {"slowdown_503": 1}


def _proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("faultproxy")]


def test_stop_joins_idle_keepalive_and_stalled_handlers(moto_url: str) -> None:
    plan = FaultPlan({"stall": 1.0}, seed=0, path_filter=lambda p: "stall" in p, stall_seconds=30)
    others = set(_proxy_threads())  # proxies of session fixtures may be running
    proxy = FaultProxy(moto_url, plan).start()
    url = proxy.url
    idle, stalled = _client(url), _client(url, read_timeout=0.3)
    assert _outcome(idle, DOC_KEY) == "ok"  # leaves a pooled keep-alive connection open
    with pytest.raises(ReadTimeoutError):
        stalled.get_object(Bucket=BUCKET, Key="stall/me")  # leaves a handler parked in a 30 s stall
    assert len(set(_proxy_threads()) - others) >= 3
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3  # the 30 s stall was interrupted, not waited out
    assert set(_proxy_threads()) - others == set()
    with pytest.raises(RuntimeError):
        _ = proxy.url
    with pytest.raises(EndpointConnectionError):  # a stopped proxy is a closed port
        idle.head_object(Bucket=BUCKET, Key=DOC_KEY)
