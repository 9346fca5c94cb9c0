"""A deterministic, fault-injecting HTTP/1.1 reverse proxy for S3 tests.

It sits between boto3 (``endpoint_url=proxy.url``, path-style addressing) and an S3-compatible upstream
such as moto's server mode, relays every request and response, and injects faults at configurable
rates. Decisions hash ``(seed, method, target, attempt)`` rather than drawing from a shared RNG, so a
run is reproducible no matter how threads interleave, and a retry (the next attempt) is decided anew.
Standard library only: the tests must not grow dependencies for plumbing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Fixed order: "first match wins" must not depend on the order of the caller's dict.
FAULT_KINDS = ("http_500", "slowdown_503", "reset", "stall", "truncate", "corrupt")
# Faults that damage a successful body; they fall back to a clean relay when there is nothing to damage.
_BODY_FAULTS = ("truncate", "corrupt")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"}
_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{}</Code><Message>{}</Message>'
    "<Resource>{}</Resource><RequestId>faultproxy</RequestId></Error>"
)
_ERRORS = {
    "http_500": (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
    "slowdown_503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


def _unit(*parts: object) -> float:
    """A uniform float in [0, 1) that depends only on ``parts``: reproducible across processes."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class FaultPlan:
    """Which requests get which fault; a pure function of the request's identity and the seed."""

    rates: Mapping[str, float]
    seed: int
    methods: tuple[str, ...] = ("GET",)
    path_filter: Callable[[str], bool] | None = None
    stall_seconds: float = 2.0
    # botocore (>= 1.36) stores a CRC on upload and verifies it on download, so it catches a flipped
    # byte itself; dropping the checksum headers lets the damage reach the caller's own validation.
    strip_checksums: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected some of {FAULT_KINDS}")
        if any(not 0.0 <= rate <= 1.0 for rate in self.rates.values()):
            raise ValueError(f"fault rates must lie in [0, 1]: {dict(self.rates)}")
        object.__setattr__(self, "methods", tuple(m.upper() for m in self.methods))

    def decide(self, method: str, target: str, attempt: int) -> str | None:
        """The fault for the ``attempt``-th (1-based) request ``method target``, or None to relay it.

        ``target`` is the request target including the query string, so list pages differ. Each kind
        rolls its own independent die; the first kind in ``FAULT_KINDS`` order that hits wins.
        """
        method = method.upper()
        if method not in self.methods:
            return None
        if self.path_filter is not None and not self.path_filter(urlsplit(target).path):
            return None
        for kind in FAULT_KINDS:
            rate = self.rates.get(kind, 0.0)
            if rate > 0.0 and _unit(self.seed, method, target, attempt, kind) < rate:
                return kind
        return None

    def corrupt_index(self, method: str, target: str, attempt: int, length: int) -> int:
        """Which byte of a ``length``-byte body the ``corrupt`` fault flips (also deterministic)."""
        return int(_unit(self.seed, method.upper(), target, attempt, "corrupt-at") * length)


_NO_FAULTS = FaultPlan({}, seed=0)


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault, for assertions about what a run actually saw."""

    method: str
    target: str
    attempt: int
    kind: str


@dataclass(frozen=True)
class ProxyStats:
    """A consistent snapshot of the proxy's counters."""

    requests: int = 0
    forwarded: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    """Tracks client sockets and threads so ``stop()`` can break idle keep-alive reads and join them all.

    Threads are daemons, joined by ``stop()`` itself: a test that fails before stopping its proxy must
    not leave the interpreter waiting forever at exit for a serving thread.
    """

    proxy: FaultProxy

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.open_sockets: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        args = (request, client_address)
        thread = threading.Thread(target=self.process_request_thread, args=args, name="faultproxy-conn", daemon=True)
        with self.sockets_lock:
            self.open_sockets.add(request)
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def shutdown_request(self, request: socket.socket) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        """Unblock handlers waiting for a next keep-alive request, join them, close the listener."""
        with self.sockets_lock:
            for sock in list(self.open_sockets):
                with contextlib.suppress(OSError):  # already gone (e.g. a reset fault closed it)
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self.threads)
        for thread in threads:
            thread.join()
        self.server_close()

    def handle_error(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        """Clients hanging up mid-exchange is routine here (timeouts, resets); don't spam stderr."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses pooled connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        """Silence per-request logging; the stats and events carry what the tests need."""

    def _read_body(self) -> bytes:
        """The request body as raw bytes; chunked framing is kept so it can be forwarded unchanged."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                        raw += trailer
                    return bytes(raw + b"\r\n")
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Relay over a fresh upstream connection: no stale keep-alive state to recover from."""
        conn = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=30)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.server.proxy._count_forwarded()
        return resp.status, resp.reason, resp.getheaders(), data

    def _respond(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """Send a response; ``body`` is written as given, so callers can send less than announced."""
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close with SO_LINGER 0 so the kernel sends RST instead of FIN: an abrupt peer failure."""
        self.close_connection = True
        self.rfile.close()  # drop makefile()'s reference, or close() below would not close the fd
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _reply(self, status: int, reason: str, content_type: str, payload: bytes) -> None:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(payload)))]
        self._respond(status, reason, headers, payload)

    def _handle(self) -> None:
        proxy, method, target = self.server.proxy, self.command, self.path
        try:
            body = self._read_body()  # always drained, so a faulted request leaves the framing intact
            plan, attempt = proxy._admit(method, target)
            kind = plan.decide(method, target, attempt)
            if kind in ("reset", "stall", *_ERRORS):
                proxy._record(FaultEvent(method, target, attempt, kind))
            if kind == "reset":
                return self._reset()
            if kind in _ERRORS:
                status, reason, code, message = _ERRORS[kind]
                xml = _ERROR_XML.format(code, message, target.split("?")[0]).encode()
                return self._reply(status, reason, "application/xml", xml)
            if kind == "stall" and proxy._stopping.wait(plan.stall_seconds):
                self.close_connection = True  # stop() interrupted the stall
                return None
            try:
                status, reason, headers, data = self._forward(body)
            except (OSError, http.client.HTTPException) as exc:
                return self._reply(502, "Bad Gateway", "text/plain", f"upstream failed: {exc!r}".encode())
            headers = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP | {"transfer-encoding"}]
            if method != "HEAD" and status not in (204, 304):  # we re-frame: the body was read whole
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(data))))
            if kind in _BODY_FAULTS:
                if not 200 <= status < 300 or not data or method == "HEAD":
                    kind = None  # nothing to damage: relay cleanly and don't count a fault
                else:
                    proxy._record(FaultEvent(method, target, attempt, kind))
            if kind == "truncate":
                self.close_connection = True  # full Content-Length announced, half sent, then FIN
                return self._respond(status, reason, headers, data[: len(data) // 2])
            if kind == "corrupt":
                at = plan.corrupt_index(method, target, attempt, len(data))
                # Flipping the top bit always leaves invalid UTF-8 behind, so a strict JSON parser
                # is guaranteed to reject the document instead of ingesting a plausible wrong value.
                data = data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1 :]
                if plan.strip_checksums:
                    headers = [(k, v) for k, v in headers if not k.lower().startswith("x-amz-checksum-")]
            return self._respond(status, reason, headers, data)
        except (OSError, ValueError, http.client.HTTPException):
            self.close_connection = True  # the client went away or spoke garbage: drop the connection
        return None

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _handle


class FaultProxy:
    """A reverse proxy on 127.0.0.1 (free port) in front of ``upstream``, injecting ``plan``'s faults.

    Use as a context manager or call ``start()``/``stop()``. ``stop()`` joins every thread it started,
    including those serving idle keep-alive connections and those parked in a stall.
    """

    def __init__(self, upstream: str, plan: FaultPlan | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream: tuple[str, int] = (parts.hostname, parts.port or 80)
        self._plan = plan
        self._lock = threading.Lock()
        self._seen: Counter[tuple[str, str]] = Counter()
        self._requests = 0
        self._forwarded = 0
        self._events: list[FaultEvent] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(self._requests, self._forwarded, dict(Counter(e.kind for e in self._events)))

    @property
    def events(self) -> list[FaultEvent]:
        """Injected faults in the order they were decided (threads may interleave that order)."""
        with self._lock:
            return list(self._events)

    def set_plan(self, plan: FaultPlan | None, *, reset_attempts: bool = True) -> None:
        """Swap the fault plan at run time (e.g. none while seeding, some during the run under test).

        Attempt counters restart by default so a plan's decisions don't depend on earlier traffic.
        """
        with self._lock:
            self._plan = plan
            if reset_attempts:
                self._seen.clear()

    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = self._server = _Server(self)
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="faultproxy-accept",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # wakes handlers parked in a stall
        server.shutdown()  # no new connections after this returns
        server.close_all()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _admit(self, method: str, target: str) -> tuple[FaultPlan, int]:
        """Count the request and number its attempt, atomically with reading the current plan."""
        with self._lock:
            self._requests += 1
            self._seen[(method, target)] += 1
            return self._plan or _NO_FAULTS, self._seen[(method, target)]

    def _count_forwarded(self) -> None:
        with self._lock:
            self._forwarded += 1

    def _record(self, event: FaultEvent) -> None:
        with self._lock:
            self._events.append(event)
