"""The loopback S3 server: it really serves HTTP, stops cleanly, and fails loudly naming the endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from pipeline.demo import s3server
from pipeline.demo.s3server import fake_credentials_env, free_port, running_s3_server, s3_client
from pipeline.errors import SourceUnavailableError

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def moto_pids(port: int) -> list[int]:
    """Pids of moto servers bound to ``port`` (read from /proc; nothing is signalled)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"pipeline.demo.moto_launcher" in args and str(port).encode() in args:
            out.append(int(pid))
    return out


def refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_fake_credentials_are_not_real():
    env = fake_credentials_env()
    assert env == {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"}


def test_server_serves_http_and_is_gone_after_exit(tmp_path):
    port = free_port()
    with running_s3_server(port, log_dir=str(tmp_path)) as endpoint:
        assert endpoint == f"http://127.0.0.1:{port}"
        with DIRECT.open(endpoint + "/", timeout=5) as resp:
            assert resp.status == 200 and b"ListAllMyBucketsResult" in resp.read()
        client = s3_client(endpoint)
        client.create_bucket(Bucket="bkt")
        client.put_object(Bucket="bkt", Key="k.json", Body=b"{}")
        assert client.get_object(Bucket="bkt", Key="k.json")["Body"].read() == b"{}"
        assert moto_pids(port)
    assert refuses(port) and not moto_pids(port)
    assert (tmp_path / f"s3server-{port}.log").exists()


def test_session_fixture_bucket_round_trip(s3_endpoint, s3_bucket):
    client = s3_client(s3_endpoint)
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    client.put_object(Bucket=s3_bucket, Key="a/b.json", Body=b"[]")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["a/b.json"]
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"


def fake_spawn(code: str):
    def spawn(port, log, detach, latency_ms=0.0):
        return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    return spawn


def test_a_server_that_dies_is_reported_with_its_endpoint(tmp_path, monkeypatch):
    dies = fake_spawn("print('address already in use'); raise SystemExit(3)")
    monkeypatch.setattr(s3server, "_spawn", dies)
    port = free_port()
    with pytest.raises(SourceUnavailableError, match=rf"127\.0\.0\.1:{port}.*code 3(.|\n)*already in use"):
        with running_s3_server(port, log_dir=str(tmp_path)):
            pass


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path, monkeypatch):
    spawned = []

    def spawn(port, log, detach, latency_ms=0.0):
        spawned.append(fake_spawn("import time; time.sleep(60)")(port, log, detach))
        return spawned[-1]

    monkeypatch.setattr(s3server, "_spawn", spawn)
    port = free_port()
    with pytest.raises(SourceUnavailableError, match=rf"127\.0\.0\.1:{port} did not answer"):
        with running_s3_server(port, log_dir=str(tmp_path), startup_timeout=0.5):
            pass
    assert spawned[0].poll() is not None


def test_cli_start_is_idempotent_and_stop_removes_the_process(tmp_path):
    state = str(tmp_path / "s3")
    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pipeline.demo.s3server", *args, "--state-dir", state]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    started = cli("start")
    assert started.returncode == 0, started.stderr
    endpoint = started.stdout.strip()
    port = int(endpoint.rsplit(":", 1)[1])
    pid = int((tmp_path / "s3" / "s3server.pid").read_text())
    try:
        assert (tmp_path / "s3" / "endpoint").read_text().strip() == endpoint
        with DIRECT.open(endpoint + "/", timeout=5) as resp:
            assert resp.status == 200
        again = cli("start")
        assert again.stdout.strip() == endpoint and moto_pids(port) == [pid]
    finally:
        stopped = cli("stop")
    assert stopped.stdout.strip() == "stopped"
    assert not moto_pids(port) and refuses(port)
    assert not (tmp_path / "s3" / "s3server.pid").exists()
    assert cli("stop").stdout.strip() == "not running"
