"""Start, stop and inspect the project's central Luigi scheduler (``luigid``) on loopback.

Why a wrapper: the central scheduler is what enforces ``[resources] s3_ingest`` across
workers, applies the retry/disable policy so a bad chunk cannot hot-loop, records task
history and shows progress in its dashboard. All of that only holds if ``luigid`` reads
*this project's* ``luigi.cfg``, so it is started from the repository root (where luigi
looks for ``luigi.cfg``) with a generated layer on top (``LUIGI_CONFIG_PATH``) that only
points its state pickle and SQLite history into the state folder.

It binds 127.0.0.1 unless told otherwise: the scheduler API has no authentication, and
anyone who can reach it can mark tasks done or disable them.

::

    python -m pipeline.ops.scheduler start  [--port 8082] [--state-dir var/luigid]
    python -m pipeline.ops.scheduler status [--state-dir var/luigid]
    python -m pipeline.ops.scheduler stop   [--state-dir var/luigid]

The state folder holds ``luigid.pid``, ``endpoint.json``, the generated ``luigid.cfg``,
``state.pickle``, ``history.sqlite`` and the logs.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import ConfigError, PipelineError
from pipeline.processes import free_port

DEFAULT_PORT = 8082
DEFAULT_STATE_DIR = "var/luigid"
LOOPBACK = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_CONFIG = PROJECT_ROOT / "luigi.cfg"


class SchedulerError(PipelineError):
    """luigid could not be started, reached or stopped; the message names the log to read."""


@dataclass(frozen=True)
class Endpoint:
    """Where a running scheduler answers (what ``endpoint.json`` records)."""

    host: str
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class StateDir:
    """The files of one scheduler instance; all absolute, because luigid runs from the repository root."""

    root: Path

    @classmethod
    def of(cls, path: str | os.PathLike) -> StateDir:
        return cls(Path(path).resolve())

    pidfile = property(lambda self: self.root / "luigid.pid")
    endpoint = property(lambda self: self.root / "endpoint.json")
    config = property(lambda self: self.root / "luigid.cfg")
    state_path = property(lambda self: self.root / "state.pickle")
    history = property(lambda self: self.root / "history.sqlite")
    output = property(lambda self: self.root / "luigid.out")  # stdout/stderr: start-up crashes land here
    log = property(lambda self: self.root / "luigi-server.log")  # luigid's own log (--logdir)


def luigid_command(port: int, state: StateDir, address: str = LOOPBACK) -> list[str]:
    """The luigid command line (foreground; this module does the daemon work itself).

    ``--background``/``--pidfile`` are not used: they need python-daemon and only write the
    pid file after forking, so a caller could not tell a failed start from a slow one.
    """
    luigid = Path(sys.executable).with_name("luigid")
    return [str(luigid), "--address", address, "--port", str(port), "--logdir", str(state.root),
            "--state-path", str(state.state_path)]


def write_config_layer(state: StateDir, base_layer: str | os.PathLike | None) -> Path:
    """Write the layer luigid reads over the project's ``luigi.cfg``; returns its path.

    ``base_layer`` is the caller's own ``LUIGI_CONFIG_PATH`` file (a test or the demo), copied in
    first because luigi accepts only one such file. The state pickle always moves into the state
    folder; so does a SQLite task history, so two schedulers never share one database file.
    """
    layer = configparser.RawConfigParser(interpolation=None)
    layer.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case as luigi does
    if base_layer:
        if not Path(base_layer).is_file():
            raise ConfigError(f"LUIGI_CONFIG_PATH={base_layer} does not exist")
        layer.read(base_layer)
    effective = configparser.RawConfigParser(interpolation=None)
    effective.read([PROJECT_CONFIG, *([base_layer] if base_layer else [])])
    for section in ("scheduler", "task_history"):
        if not layer.has_section(section):
            layer.add_section(section)
    layer.set("scheduler", "state_path", str(state.state_path))
    if effective.get("task_history", "db_connection", fallback="sqlite:///").startswith("sqlite:"):
        layer.set("task_history", "db_connection", f"sqlite:///{state.history}")
    with open(state.config, "w") as f:
        f.write(f"# Written by pipeline.ops.scheduler; luigid reads it over {PROJECT_CONFIG}.\n")
        layer.write(f)
    return state.config


def api(url: str, method: str, data: dict | None = None, timeout: float = 5.0) -> object:
    """Call the scheduler's JSON API (``/api/<method>?data=<json>``) and return its ``response``."""
    query = urllib.parse.urlencode({"data": json.dumps(data or {})})
    with urllib.request.urlopen(f"{url}/api/{method}?{query}", timeout=timeout) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())["response"]


def _answers(url: str) -> bool:
    try:
        api(url, "has_task_history", timeout=1.0)  # read-only: a ping would register a phantom worker
        return True
    except (OSError, ValueError, KeyError):
        return False


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except OSError:  # gone, or another user's process on a recycled pid: not our luigid either way
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # guard against a recycled pid (Linux only; elsewhere the API check decides)
        with contextlib.suppress(OSError):
            return b"luigid" in cmdline.read_bytes()
    return True


def _port_taken(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as luigid does: TIME_WAIT is no conflict
        try:
            s.bind((address, port))
        except OSError:
            return True
    return False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_pid(state: StateDir) -> int | None:
    try:
        return int(state.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def status(state_dir: str | os.PathLike = DEFAULT_STATE_DIR) -> Endpoint | None:
    """The running scheduler of a state folder, or None (stale pid files are removed)."""
    state = StateDir.of(state_dir)
    try:
        endpoint = Endpoint(**json.loads(state.endpoint.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not _alive(endpoint.pid):
        for path in (state.endpoint, state.pidfile):
            path.unlink(missing_ok=True)
        return None
    return endpoint if _answers(endpoint.url) else None


def check_address(address: str, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless explicitly allowed: the API has no authentication."""
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = address == "localhost"
    if not loopback and not allow_remote:
        raise ConfigError(f"refusing to bind luigid to {address!r}: its API has no authentication. "
                          "Use 127.0.0.1 (and an SSH tunnel or a reverse proxy), or pass --allow-remote.")


def start(port: int = DEFAULT_PORT, state_dir: str | os.PathLike = DEFAULT_STATE_DIR, *, address: str = LOOPBACK,
          allow_remote: bool = False, config_layer: str | os.PathLike | None = None,
          timeout: float = 30.0) -> Endpoint:
    """Start luigid in the background and wait until its API answers; idempotent.

    A scheduler already running for this state folder on the same port is returned as is;
    on another port it is an error (two schedulers would split the workers between them).
    ``config_layer`` defaults to the caller's ``LUIGI_CONFIG_PATH``.
    """
    check_address(address, allow_remote)
    if not PROJECT_CONFIG.is_file():
        raise ConfigError(f"{PROJECT_CONFIG} not found: luigid must read the project's luigi.cfg")
    state = StateDir.of(state_dir)
    running = status(state.root)
    if running:
        if running.port != port:
            raise SchedulerError(f"a scheduler for {state.root} already runs on port {running.port} "
                                 f"(pid {running.pid}); stop it first: python -m pipeline.ops.scheduler stop")
        return running
    stale = _read_pid(state)
    if stale and _alive(stale):
        raise SchedulerError(f"luigid pid {stale} of {state.root} runs but does not answer; "
                             f"see {state.log}, then python -m pipeline.ops.scheduler stop")
    if _answers(f"http://{LOOPBACK}:{port}") or _port_taken(address, port):
        raise SchedulerError(f"port {port} is already in use (another scheduler with another --state-dir?); "
                             "pick another --port")
    state.root.mkdir(parents=True, exist_ok=True)
    layer = write_config_layer(state, config_layer or os.environ.get("LUIGI_CONFIG_PATH"))
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(layer)}
    with open(state.output, "ab") as out:
        proc = subprocess.Popen(luigid_command(port, state, address), cwd=PROJECT_ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # survives the shell (and Ctrl-C) that started it
    endpoint = Endpoint(LOOPBACK if address in ("0.0.0.0", "::") else address, port, proc.pid)
    deadline = time.monotonic() + timeout
    while not _answers(endpoint.url):
        if proc.poll() is not None:
            tail = "\n".join(state.output.read_text(errors="replace").splitlines()[-15:])
            raise SchedulerError(f"luigid exited with code {proc.returncode} on start; "
                                 f"last lines of {state.output}:\n{tail}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SchedulerError(f"luigid did not answer on {endpoint.url} within {timeout:.0f}s; see {state.log}")
        time.sleep(0.1)
    _write_atomic(state.pidfile, f"{proc.pid}\n")
    _write_atomic(state.endpoint, json.dumps(asdict(endpoint)) + "\n")
    return endpoint


def stop(state_dir: str | os.PathLike = DEFAULT_STATE_DIR, timeout: float = 15.0) -> bool:
    """Stop the scheduler of a state folder (SIGTERM: luigid saves its state first); False if none ran."""
    state = StateDir.of(state_dir)
    pid = _read_pid(state)
    if pid is None:
        return False
    stopped = False
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)  # state is lost, but a hung scheduler must not block a restart
                time.sleep(0.2)
                break
            time.sleep(0.05)
        stopped = True
    for path in (state.endpoint, state.pidfile):
        path.unlink(missing_ok=True)
    return stopped




@contextlib.contextmanager
def running_scheduler(port: int | None = None, state_dir: str | os.PathLike = DEFAULT_STATE_DIR,
                      config_layer: str | os.PathLike | None = None) -> Iterator[Endpoint]:
    """A scheduler for the duration of a block (tests): a free port unless given, stopped afterwards."""
    endpoint = start(port or free_port(), state_dir, config_layer=config_layer)
    try:
        yield endpoint
    finally:
        stop(state_dir)


def configured_port() -> int:
    """``[core] scheduler_port`` of the Luigi configuration (luigi.cfg + LUIGI_CONFIG_PATH), else 8082.

    Workers find the scheduler through that key, so ``make scheduler`` starts it where they look.
    """
    import luigi.configuration

    return luigi.configuration.get_config().getint("core", "scheduler_port", DEFAULT_PORT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, default=configured_port(),
                        help="API and dashboard port (default: luigi.cfg [core] scheduler_port, the one workers use)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="pid, endpoint, state, history and logs")
    parser.add_argument("--address", default=LOOPBACK, help="listening address (default 127.0.0.1)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --address")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            endpoint = start(args.port, args.state_dir, address=args.address, allow_remote=args.allow_remote)
            print(f"luigid running (pid {endpoint.pid}): dashboard {endpoint.url}  state {Path(args.state_dir)}")
        elif args.action == "stop":
            print("luigid stopped" if stop(args.state_dir) else "luigid was not running")
        else:
            endpoint = status(args.state_dir)
            if endpoint is None:
                print("luigid is not running")
                return 3  # like `service status`: scripts can tell "not running" from an error
            print(f"luigid running (pid {endpoint.pid}): dashboard {endpoint.url}")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
