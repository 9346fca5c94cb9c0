"""The lookup service: attributes by track id, batches, similar tracks and the served snapshot, over HTTP.

Every request reads the store's pointer first and answers from that version only, so a
publish's flip is visible to the next request and no answer mixes two snapshots. The
similarity index of the active version is loaded on first use and swapped when the pointer
moves. Errors: 400 for a malformed id or parameter, 404 for an unknown track, 503 when
nothing is published yet. OpenAPI at ``/openapi.json``, docs at ``/docs``.

Run on loopback: ``python -m pipeline.serving.api --port 8090`` (store from ``[serving]``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipeline.bucketing import track_id_problem
from pipeline.serving.api_models import (
    MAX_BATCH,
    BatchRequest,
    BatchResponse,
    SimilarResponse,
    SnapshotResponse,
    TrackResponse,
)
from pipeline.serving.errors import NoActiveVersionError, StoreUnavailableError, UnknownTrackError
from pipeline.serving.similarity import Filters, SimilarityIndex, index_path
from pipeline.serving.stores.base import AttributeStore


def _cap_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (default 8 per core): with FastAPI's thread pool each worker thread
    otherwise gets its own arena, and freed memory stays fragmented across them, so RSS kept
    growing under a long mixed load. Same effect as ``MALLOC_ARENA_MAX``; a no-op off glibc."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


class ServingState:
    """The store plus the similarity index of whichever version is active (swapped on a flip).

    Only one index is held: on a flip the new one replaces it and the old one's memory maps are
    released with it (the index files are memory-mapped, so API processes on a host share them).
    """

    def __init__(self, store: AttributeStore, index_dir: str | Path):
        self.store, self.index_dir = store, Path(index_dir)
        self._index: SimilarityIndex | None = None
        self._lock = threading.Lock()

    def version(self) -> str:
        return self.store.resolve()

    def index(self, version: str) -> SimilarityIndex:
        current = self._index
        if current is not None and current.version == version:
            return current
        with self._lock:  # one request loads a new index; the others wait for it rather than load it again
            if self._index is None or self._index.version != version:
                path = index_path(self.index_dir, version)
                if not (path / "meta.json").exists():
                    raise StoreUnavailableError(f"no similarity index {path} for the active version {version}")
                self._index = None  # release the retired version's maps before opening the next
                self._index = SimilarityIndex.open(path)
            return self._index


def check_id(track_id: str) -> str:
    problem = track_id_problem(track_id)
    if problem:
        raise HTTPException(400, problem)
    return track_id


def _batch(state: ServingState, ids: list[str]) -> dict:
    if not 1 <= len(ids) <= MAX_BATCH:
        raise HTTPException(400, f"give 1 to {MAX_BATCH} ids per request, got {len(ids)}")
    for track_id in ids:
        check_id(track_id)
    version = state.version()
    found = state.store.get_many(ids, version)
    return {"snapshot": version, "tracks": found, "missing": [t for t in dict.fromkeys(ids) if t not in found]}


def create_app(store: AttributeStore, index_dir: str | Path) -> FastAPI:
    """The FastAPI application serving ``store`` (the caller owns and closes it)."""
    app = FastAPI(title="echonest attributes", version="1.0",
                  description="Per-track audio attributes and similar tracks from the active published snapshot.")
    state = ServingState(store, index_dir)
    app.state.serving = state
    _add_error_handlers(app)

    @app.get("/snapshot", response_model=SnapshotResponse, summary="The snapshot being served")
    def snapshot() -> dict:
        version = state.version()
        return {"version": version, "records": store.records_of(version), "store": store.kind,
                "similarity_index": (index_path(index_dir, version) / "meta.json").exists()}

    @app.get("/tracks/{track_id}", response_model=TrackResponse, summary="Attributes of one track")
    def track(track_id: str) -> dict:
        check_id(track_id)
        version = state.version()
        record = store.get(track_id, version)
        if record is None:
            raise UnknownTrackError(f"track {track_id} is not in snapshot {version}")
        return {"snapshot": version, "attributes": record}

    @app.get("/tracks", response_model=BatchResponse, summary="Attributes of many tracks (comma-separated ids)")
    def tracks(ids: Annotated[str, Query(description="Comma-separated track ids.")]) -> dict:
        return _batch(state, [i for i in ids.split(",") if i])

    @app.post("/tracks:batch", response_model=BatchResponse, summary="Attributes of many tracks (JSON body)")
    def tracks_batch(body: BatchRequest) -> dict:
        return _batch(state, body.ids)

    @app.get("/tracks/{track_id}/similar", response_model=SimilarResponse, summary="Most similar tracks")
    def similar(track_id: str, k: Annotated[int, Query(ge=1, le=100)] = 10,
                tempo_min: Annotated[float | None, Query(gt=0, description="Lowest tempo, BPM.")] = None,
                tempo_max: Annotated[float | None, Query(gt=0, description="Highest tempo, BPM.")] = None,
                same_key: Annotated[bool, Query(description="Only tracks in the same key and mode.")] = False) -> dict:
        check_id(track_id)
        for name, value in (("tempo_min", tempo_min), ("tempo_max", tempo_max)):
            if value is not None and not math.isfinite(value):
                raise HTTPException(400, f"{name} must be a finite number of BPM, got {value}")
        if tempo_min is not None and tempo_max is not None and tempo_min > tempo_max:
            raise HTTPException(400, f"tempo_min {tempo_min} is above tempo_max {tempo_max}")
        version = state.version()
        filters = Filters(tempo_min, tempo_max, same_key)
        neighbours = state.index(version).similar(track_id, k, filters)
        return {"snapshot": version, "track_id": track_id, "k": k, "similar": [n.__dict__ for n in neighbours],
                "filters": {"tempo_min": tempo_min, "tempo_max": tempo_max, "same_key": same_key}}

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Map the serving errors to status codes; validation failures are client errors (400), not 422."""

    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=400)

    async def not_found(request: Request, exc: UnknownTrackError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(UnknownTrackError, not_found)
    app.add_exception_handler(NoActiveVersionError, unavailable)
    app.add_exception_handler(StoreUnavailableError, unavailable)


@contextlib.contextmanager
def running_service(settings: dict[str, object], index_dir: str | Path, log: str | Path,
                    timeout: float = 30.0) -> Iterator[str]:
    """Run ``python -m pipeline.serving.api`` on a free loopback port; yield its base URL, stop it on exit.

    ``settings`` are ``[serving]`` parameters (``store``, ``sqlite_path``, ``redis_url``, ...) passed
    as flags. For tests, benchmarks and the demo: a real server process, as in production.
    """
    import httpx

    from pipeline.processes import free_port, stop_process

    port = free_port()
    args = ["--port", str(port), "--index-dir", str(index_dir)]
    for name, value in settings.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.serving.api", *args], stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _answers(httpx, f"{base}/openapi.json"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StoreUnavailableError(f"the lookup API did not start; see {log}: "
                                            f"{Path(log).read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield base
    finally:
        stop_process(proc)


def _answers(httpx, url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def main(argv: list[str] | None = None) -> None:
    """Serve the configured store on loopback until interrupted; flags override ``[serving]``."""
    import uvicorn

    from pipeline.serving.config import STORE_TYPES, serving
    from pipeline.serving.stores import store_from_config

    cfg = serving()
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default=cfg.http_host)
    parser.add_argument("--port", type=int, default=cfg.http_port)
    parser.add_argument("--store", choices=STORE_TYPES, default=None, help="flags below override [serving]")
    parser.add_argument("--sqlite-path", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--redis-prefix", default=None)
    parser.add_argument("--cassandra-hosts", default=None)
    parser.add_argument("--cassandra-port", type=int, default=None)
    parser.add_argument("--cassandra-keyspace", default=None)
    parser.add_argument("--index-dir", default=cfg.index_dir)
    args = parser.parse_args(argv)
    _cap_malloc_arenas()
    with store_from_config(store=args.store, sqlite_path=args.sqlite_path, redis_url=args.redis_url,
                           redis_prefix=args.redis_prefix, cassandra_hosts=args.cassandra_hosts,
                           cassandra_port=args.cassandra_port, cassandra_keyspace=args.cassandra_keyspace) as store:
        app = create_app(store, args.index_dir)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
