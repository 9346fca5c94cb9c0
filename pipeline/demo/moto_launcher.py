"""Run moto's S3-compatible server, optionally with S3-like first-byte latency.

Real S3 answers a GET after ~10-30 ms; loopback answers at once. Without latency a
sequential client waits for nothing and concurrency cannot show what it buys, so the
benchmarks can ask for a delay. The delay is a sleep before each request is handled
(threads sleep in parallel, the GIL is released), so the server's throughput limit is
unchanged. ``python -m pipeline.demo.moto_launcher --port P [--latency-ms 20]``.
"""

from __future__ import annotations

import argparse
import logging
import time

from moto.moto_server.threaded_moto_server import DomainDispatcherApplication
from moto.server import create_backend_app
from werkzeug.serving import run_simple


def delayed(app, seconds: float):
    def wrapper(environ, start_response):
        time.sleep(seconds)
        return app(environ, start_response)

    return wrapper


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no log line per request
    app = DomainDispatcherApplication(create_backend_app)
    if args.latency_ms > 0:
        app = delayed(app, args.latency_ms / 1000.0)
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False, use_debugger=False)


if __name__ == "__main__":
    main()
