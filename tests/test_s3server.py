"""The loopback S3 server: it really serves HTTP, stays on loopback, stops cleanly, leaves nothing behind.

SeaweedFS is the default server; moto stays available (``kind="moto"``) and is checked here too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import psutil
import pytest

from pipeline.demo import s3server, seaweed
from pipeline.demo.s3server import fake_credentials_env, free_port, running_s3_server, s3_client
from pipeline.errors import SourceUnavailableError

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def server_pids(port: int) -> list[int]:
    """Pids of our S3 servers (SeaweedFS or moto) serving S3 on ``port`` (read from /proc; nothing is signalled)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        moto = b"pipeline.demo.moto_launcher" in args and str(port).encode() in args
        weed = args[0].endswith(b"weed") and f"-s3.port={port}".encode() in args
        if moto or weed:
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


@pytest.mark.parametrize("kind", [s3server.SEAWEEDFS, s3server.MOTO])
def test_server_serves_http_and_is_gone_after_exit(tmp_path, kind):
    port = free_port()
    with running_s3_server(port, log_dir=str(tmp_path), kind=kind) as endpoint:
        assert endpoint == f"http://127.0.0.1:{port}"
        with DIRECT.open(endpoint + "/", timeout=5) as resp:
            assert resp.status == 200 and b"ListAllMyBucketsResult" in resp.read()
        client = s3_client(endpoint)
        client.create_bucket(Bucket="bkt")
        client.put_object(Bucket="bkt", Key="k.json", Body=b"{}")
        assert client.get_object(Bucket="bkt", Key="k.json")["Body"].read() == b"{}"
        assert server_pids(port)
    assert refuses(port) and not server_pids(port)
    assert (tmp_path / f"s3server-{port}.log").exists()
    assert not (tmp_path / f"s3server-{port}" / "data").exists(), "the server's data is scratch, removed on exit"


def test_session_fixture_bucket_round_trip(s3_endpoint, s3_bucket):
    client = s3_client(s3_endpoint)
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    client.put_object(Bucket=s3_bucket, Key="a/b.json", Body=b"[]")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["a/b.json"]
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"


def fake_spawn(code: str):
    def spawn(kind, port, run_dir, log, latency_ms=0.0, detach=False):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        return proc, None
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

    def spawn(kind, port, run_dir, log, latency_ms=0.0, detach=False):
        spawned.append(fake_spawn("import time; time.sleep(60)")(kind, port, run_dir, log))
        return spawned[-1]

    monkeypatch.setattr(s3server, "_spawn", spawn)
    port = free_port()
    with pytest.raises(SourceUnavailableError, match=rf"127\.0\.0\.1:{port} did not answer"):
        with running_s3_server(port, log_dir=str(tmp_path), startup_timeout=0.5):
            pass
    assert spawned[0][0].poll() is not None


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
        assert again.stdout.strip() == endpoint and server_pids(port) == [pid]
    finally:
        stopped = cli("stop")
    assert stopped.stdout.strip() == "stopped"
    assert not server_pids(port) and refuses(port)
    assert not (tmp_path / "s3" / "s3server.pid").exists()
    assert cli("stop").stdout.strip() == "not running"


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_every_socket_of_the_server_tree_is_loopback_and_its_files_stay_in_its_folder(tmp_path):
    """All nine TCP ports of ``weed server`` (S3, master, volume, filer, their gRPC twins, metrics) and any
    connection it makes are on 127.0.0.1; what it writes lies in the run's folder, and what it must put in
    /tmp (its gRPC Unix sockets, a path compiled into weed) is gone after the stop."""
    port = free_port()
    with running_s3_server(port, log_dir=str(tmp_path)) as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket="loopback")
        client.put_object(Bucket="loopback", Key="k.json", Body=b"{}")
        [pid] = server_pids(port)
        ports = seaweed.Ports.load(tmp_path / f"s3server-{port}")
        procs = _tree(pid)
        inet = [c for p in procs for c in p.net_connections(kind="inet")]
        listening = {c.laddr.port for c in inet if c.status == psutil.CONN_LISTEN}
        assert listening == set(vars(ports).values()), (listening, ports)
        assert all(c.laddr.ip == "127.0.0.1" for c in inet), [c for c in inet if c.laddr.ip != "127.0.0.1"]
        assert all(c.raddr.ip == "127.0.0.1" for c in inet if c.raddr), [c for c in inet if c.raddr]
        run_dir = str(tmp_path) + os.sep  # the run's folder: its log; its data, logs, sockets in s3server-<port>/
        written = [f.path for p in procs for f in p.open_files() if f.mode != "r"]  # (it also reads /sys cgroups)
        assert written and all(path.startswith(run_dir) for path in written), \
            [path for path in written if not path.startswith(run_dir)]
        unix = {c.laddr for p in procs for c in p.net_connections(kind="unix") if c.laddr}
        in_tmp = {seaweed.GRPC_SOCKET.format(role=role, port=grpc) for role, grpc in ports.grpc().items()}
        assert unix and all(path.startswith(run_dir) or path in in_tmp for path in unix), unix
        assert any(os.path.exists(path) for path in in_tmp), "weed's gRPC sockets should exist while it runs"
    assert not any(psutil.pid_exists(p.pid) and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    assert not [path for path in in_tmp if os.path.exists(path)], "gRPC sockets left in /tmp"
    assert all(refuses(p) for p in vars(ports).values())


def test_a_run_killed_with_sigkill_leaves_no_server_running(tmp_path):
    """The server runs in its own session (so a Ctrl-C reaches our stop, not it); the kernel kills it with us."""
    code = ("import sys, time\nfrom pipeline.demo.s3server import running_s3_server\n"
            f"with running_s3_server(log_dir={str(tmp_path)!r}) as endpoint:\n"
            "    print(endpoint, flush=True)\n    time.sleep(600)\n")
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(run.stdout.readline().strip().rsplit(":", 1)[1])
        [pid] = server_pids(port)
    finally:
        run.kill()
        run.wait()
        run.stdout.close()
    server = psutil.Process(pid) if psutil.pid_exists(pid) else None
    if server is not None:
        with pytest.raises(psutil.NoSuchProcess):
            server.wait(60)  # gone by itself (a bound on the wait, not a speed assertion)
            server.status()
    assert not server_pids(port) and refuses(port)
    seaweed.remove_grpc_sockets(seaweed.Ports.load(tmp_path / f"s3server-{port}"))  # what a SIGKILL leaves


def test_the_latency_relay_passes_s3_traffic_through_on_loopback(s3_endpoint, s3_bucket):
    from pipeline.demo.latency_relay import running_relay
    from tests.support.netstat import loopback_only

    body = os.urandom(300_000)  # larger than one relay read, so the answer streams in pieces
    with running_relay(s3_endpoint, latency_ms=5) as relay:
        assert loopback_only(int(relay.rsplit(":", 1)[1]))
        client = s3_client(relay)
        client.put_object(Bucket=s3_bucket, Key="relayed.bin", Body=body)
        assert client.get_object(Bucket=s3_bucket, Key="relayed.bin")["Body"].read() == body
