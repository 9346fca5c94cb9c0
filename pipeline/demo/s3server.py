"""An S3-compatible server on loopback (moto's server mode) for the demo, the tests and benchmarks.

Why a separate process rather than moto's in-process mock: the pipeline's real code paths
(botocore's HTTP stack, connection pools, retries, Luigi workers in other processes) must be
exercised over a real socket, exactly as against AWS. The server only binds 127.0.0.1 and is
given fake credentials; nothing here ever talks to a non-loopback address.

CLI::

    python -m pipeline.demo.s3server start [--port P] --state-dir var/s3   # prints the endpoint
    python -m pipeline.demo.s3server stop --state-dir var/s3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO

from pipeline.errors import SourceUnavailableError
from pipeline.processes import free_port, stop_process

HOST = "127.0.0.1"
PID_FILE, ENDPOINT_FILE, LOG_FILE = "s3server.pid", "endpoint", "s3server.log"
# A direct opener: proxy environment variables must never route loopback traffic elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))




def fake_credentials_env() -> dict[str, str]:
    """Environment for boto3 against the loopback server: moto accepts any key, these are not secrets."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def s3_client(endpoint_url: str, max_pool_connections: int = 32):
    """A boto3 S3 client for the loopback server (path-style: an IP endpoint has no bucket subdomains).

    Credentials are passed explicitly so boto3 never walks the credential chain (which could
    query an instance-metadata address).
    """
    import boto3
    from botocore.config import Config

    env = fake_credentials_env()
    config = Config(max_pool_connections=max_pool_connections, s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], config=config)


def _answers(endpoint: str) -> bool:
    try:
        with _OPENER.open(endpoint + "/", timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log_path: str, n: int = 15) -> str:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip() or "(empty log)"
    except OSError:
        return "(no log)"


def _spawn(port: int, log: IO[bytes], detach: bool, latency_ms: float = 0.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipeline.demo.moto_launcher", "--host", HOST, "--port", str(port),
           "--latency-ms", str(latency_ms)]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **fake_credentials_env()}, start_new_session=detach)


def _wait_ready(endpoint: str, proc: subprocess.Popen, log_path: str, timeout: float) -> None:
    """Poll until the endpoint answers; fail naming the endpoint (and why, from the log) otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(endpoint):
            return
        if proc.poll() is not None:
            raise SourceUnavailableError(
                f"S3 test server for {endpoint} exited with code {proc.returncode} before answering "
                f"(port in use? moto[server] installed?). Log {log_path}:\n{_log_tail(log_path)}")
        time.sleep(0.1)
    raise SourceUnavailableError(f"S3 test server at {endpoint} did not answer within {timeout:g}s. "
                                 f"Log {log_path}:\n{_log_tail(log_path)}")


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    stop_process(proc, grace)


@contextlib.contextmanager
def running_s3_server(port: int | None = None, *, log_dir: str | None = None, startup_timeout: float = 30.0,
                      grace: float = 5.0, latency_ms: float = 0.0) -> Iterator[str]:
    """Run moto's server on ``127.0.0.1:port`` (a free port by default) and yield its endpoint URL.

    Its output goes to ``s3server-<port>.log`` under ``log_dir`` (a temp dir by default); the
    process is terminated on exit, then killed if it ignores SIGTERM for ``grace`` seconds.
    ``latency_ms`` delays every answer like S3's first-byte latency (benchmarks).
    """
    port = port or free_port()
    endpoint = f"http://{HOST}:{port}"
    log_dir = log_dir or tempfile.mkdtemp(prefix="s3server-")
    os.makedirs(log_dir, exist_ok=True)
    log_path = os.path.join(log_dir, f"s3server-{port}.log")
    with open(log_path, "ab") as log:
        proc = _spawn(port, log, detach=False, latency_ms=latency_ms)
        try:
            _wait_ready(endpoint, proc, log_path, startup_timeout)
            yield endpoint
        finally:
            _terminate(proc, grace)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs and is a moto server (so a recycled pid is never signalled)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child that just exited: reaped now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: not ours to stop
    cmdline = f"/proc/{pid}/cmdline"
    if os.path.exists(cmdline):
        with open(cmdline, "rb") as f:
            return b"moto_launcher" in f.read()
    return True


def start_daemon(state_dir: str, port: int | None = None, startup_timeout: float = 30.0) -> str:
    """Start a detached server recorded in ``state_dir`` (pid, endpoint, log); return its endpoint.

    Idempotent: if the recorded server is alive and answering, its endpoint is returned.
    """
    os.makedirs(state_dir, exist_ok=True)
    pid_path, endpoint_path = os.path.join(state_dir, PID_FILE), os.path.join(state_dir, ENDPOINT_FILE)
    pid, endpoint = _read(pid_path), _read(endpoint_path)
    if pid and endpoint and _alive(int(pid)) and _answers(endpoint):
        return endpoint
    port = port or free_port()
    endpoint = f"http://{HOST}:{port}"
    log_path = os.path.join(state_dir, LOG_FILE)
    with open(log_path, "ab") as log:
        proc = _spawn(port, log, detach=True)
    try:
        _wait_ready(endpoint, proc, log_path, startup_timeout)
    except SourceUnavailableError:
        _terminate(proc, 2.0)
        raise
    for path, text in ((pid_path, str(proc.pid)), (endpoint_path, endpoint)):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(path + ".tmp", path)
    return endpoint


def stop_daemon(state_dir: str, grace: float = 5.0) -> bool:
    """Stop the server recorded in ``state_dir``; True if one was running. Removes the state files."""
    pid_text = _read(os.path.join(state_dir, PID_FILE))
    was_running = False
    if pid_text and _alive(pid := int(pid_text)):
        was_running = True
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
    for name in (PID_FILE, ENDPOINT_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(state_dir, name))
    return was_running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo.s3server",
                                     description="Run a loopback S3 server (moto) in the background.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a detached server and print its endpoint")
    start.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    start.add_argument("--state-dir", default="var/s3", help="where the pidfile, endpoint and log go")
    start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it to answer")
    stop = sub.add_parser("stop", help="stop the server recorded in the state dir")
    stop.add_argument("--state-dir", default="var/s3")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start_daemon(args.state_dir, args.port, args.timeout))
        else:
            print("stopped" if stop_daemon(args.state_dir) else "not running")
    except SourceUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
