"""A TCP relay on loopback that gives the S3 server S3's first-byte latency (for the benchmarks).

Real S3 answers a GET after ~10-30 ms; a loopback server answers at once, so a sequential client
waits for nothing and concurrency cannot show what it buys. SeaweedFS cannot delay its answers, so
this relay sits in front of it: every chunk a client sends is held ``latency_ms`` before it is
passed on (a GET request is one chunk), and the answer streams back untouched. Connections are
handled concurrently (a thread per direction), so the delay costs no throughput, only the relay's
own CPU per request, which every client measured through it pays alike. The answers are moved from
socket to socket by ``splice`` in the kernel, so that CPU stays small: an asyncio relay reading
and writing the bodies in Python cost about as much CPU per GET as the S3 server itself
(docs/performance.md), taking it from the ingest on a 2-core machine.

``python -m pipeline.demo.latency_relay --upstream http://127.0.0.1:P --latency-ms 20 --port Q``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from pipeline.errors import SourceUnavailableError
from pipeline.processes import LOOPBACK, free_port, stop_process

CHUNK = 256 * 1024


def _forward(src: socket.socket, dst: socket.socket, delay: float) -> None:
    """Pass what ``src`` sends on to ``dst``, each chunk held ``delay`` seconds, until either side closes."""
    try:
        if not delay and hasattr(os, "splice"):
            _splice(src, dst)
        else:
            while data := src.recv(CHUNK):
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _splice(src: socket.socket, dst: socket.socket) -> None:
    """Socket to socket through a pipe in the kernel: the answers' bodies never enter Python (Linux)."""
    read_end, write_end = os.pipe()
    try:
        while n := os.splice(src.fileno(), write_end, CHUNK):
            while n:
                n -= os.splice(read_end, dst.fileno(), n)
    finally:
        os.close(read_end)
        os.close(write_end)


def _relay(client: socket.socket, upstream: tuple[str, int], delay: float) -> None:
    try:
        server = socket.create_connection(upstream)
    except OSError:
        client.close()
        return
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_forward, args=(server, client, 0.0), daemon=True)
    back.start()
    _forward(client, server, delay)
    back.join()
    client.close()
    server.close()


def _serve(upstream: tuple[str, int], port: int, delay: float) -> None:
    """One thread per direction of each connection (a handful of connections, blocking I/O, the GIL released)."""
    with socket.create_server((LOOPBACK, port), backlog=1024) as listener:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=_relay, args=(client, upstream, delay), daemon=True).start()


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
        _serve((parts.hostname, parts.port), args.port, args.latency_ms / 1000.0)


if __name__ == "__main__":
    main()
