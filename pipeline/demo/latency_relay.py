"""A TCP relay on loopback that gives the S3 server S3's first-byte latency (for the benchmarks).

Real S3 answers a GET after ~10-30 ms; a loopback server answers at once, so a sequential client
waits for nothing and concurrency cannot show what it buys. SeaweedFS cannot delay its answers, so
this relay sits in front of it: every chunk a client sends is held ``latency_ms`` before it is
passed on (a GET request is one chunk), and the answer streams back untouched. Connections are
handled concurrently (asyncio), so the delay costs no throughput, only the relay's own CPU per
request (a few reads and writes of the body), which every client measured through it pays alike.

``python -m pipeline.demo.latency_relay --upstream http://127.0.0.1:P --latency-ms 20 --port Q``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from pipeline.errors import SourceUnavailableError
from pipeline.processes import LOOPBACK, free_port, stop_process

CHUNK = 256 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while data := await reader.read(CHUNK):
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def _serve(upstream: tuple[str, int], port: int, delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, 0.0))

    server = await asyncio.start_server(handle, LOOPBACK, port, backlog=1024)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def running_relay(upstream: str, latency_ms: float, timeout: float = 10.0) -> Iterator[str]:
    """Run the relay in its own process in front of ``upstream``; yield its endpoint URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "pipeline.demo.latency_relay", "--upstream", upstream, "--port", str(port),
           "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SourceUnavailableError(f"latency relay on {LOOPBACK}:{port} did not start")
            time.sleep(0.05)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        stop_process(proc, 2.0)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the S3 server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    parts = urlsplit(args.upstream)
    if parts.hostname != LOOPBACK:
        parser.error("the relay only forwards to 127.0.0.1")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve((parts.hostname, parts.port), args.port, args.latency_ms / 1000.0))


if __name__ == "__main__":
    main()
