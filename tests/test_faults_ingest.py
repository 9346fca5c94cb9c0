"""Transient S3 faults during an ingest: nothing lost, nothing duplicated, every fault accounted for.

Each case runs the full ingest (``IngestFullSnapshot`` through Luigi) of the same seeded catalogue
through the fault-injecting proxy, at 1 % of requests per fault kind, and compares it with a
fault-free run of the same catalogue: the records must be equal one for one, the ledger must hold
only the tracks that are genuinely missing or invalid (never "failed"), and every injected fault
must have cost exactly one extra request — no track given up on, none fetched twice into the
output. The numbers are printed (``pytest -s``) and quoted in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pipeline import layout
from pipeline.demo.s3server import free_port
from pipeline.manifest import Manifest
from tasks import IngestFullSnapshot
from tests.helpers import luigi_cli, luigi_config, run_luigi, subprocess_env, write_cfg
from tests.support.faultproxy import FAULT_KINDS, FaultPlan, FaultProxy, ProxyStats
from tests.support.fixtures_faults import (
    FAULT_DATE,
    PROJECT_ROOT,
    SeededSource,
    assert_published_whole,
    dataset_records,
    fault_source,  # noqa: F401 - a fixture
    new_warehouse,
    overrides_for,
    seed_source,
    visible,
)

RATE = 0.01
# Decisions hash (seed, request path, attempt), and bucket and keys are fixed, so the faults are the same on
# every run; this seed makes each kind hit 3-4 of the ~300 requests at 1 % (so each case proves something).
SEED = 474
READ_TIMEOUT = 0.5  # seconds; a stall outlasts it, so the client times out mid-request and retries
STALL = 1.5
# kind -> (rates, strip the flexible checksums so the pipeline's own ETag check must catch corruption)
CASES: dict[str, tuple[dict[str, float], bool]] = {
    "http_500": ({"http_500": RATE}, False),
    "slowdown_503": ({"slowdown_503": RATE}, False),
    "reset": ({"reset": RATE}, False),
    "stall": ({"stall": RATE}, False),
    "truncate": ({"truncate": RATE}, False),
    "corrupt": ({"corrupt": RATE}, False),
    "corrupt_no_checksum": ({"corrupt": RATE}, True),
    "all_kinds": (dict.fromkeys(FAULT_KINDS, RATE), True),
}
BODY_FAULTS = ("truncate", "corrupt")  # arrive with a 200: caught while reading the body, refetched by the source


@dataclass
class Run:
    records: list[dict]
    ledger: list[dict]
    manifest: Manifest
    proxy: ProxyStats | None
    seconds: float

    @property
    def requests(self) -> dict[str, int]:
        """The source's own request counts, summed over the buckets (what the manifest records)."""
        total: dict[str, int] = {}
        for entry in self.manifest.entries():
            for key, value in entry.requests.items():
                total[key] = total.get(key, 0) + value
        return total


def ingest(tmp_path, source: SeededSource, endpoint: str | None, proxy: FaultProxy | None = None,
           **source_extra: object) -> Run:
    wh = new_warehouse(tmp_path / "warehouse", source.rows)
    started = time.monotonic()
    with luigi_config(overrides_for(tmp_path / "warehouse", source, endpoint, **source_extra)):
        assert run_luigi([IngestFullSnapshot(date=FAULT_DATE)], workers=2), "the ingest failed"
    seconds = time.monotonic() - started
    assert_published_whole(wh)
    return Run(dataset_records(wh, layout.ANALYSIS_FULL), dataset_records(wh, layout.LEDGER),
               wh.manifest(layout.ANALYSIS_FULL, FAULT_DATE), proxy.stats if proxy else None, seconds)


@pytest.fixture(scope="module")
def fault_free(fault_source, tmp_path_factory) -> Run:  # noqa: F811 - the fixture above
    """The reference: the same catalogue ingested straight from the S3 server, no proxy, no faults."""
    run = ingest(tmp_path_factory.mktemp("fault-free"), fault_source, None)
    print(f"\n[reliability] {{'case': 'fault_free', 'tracks': {len(fault_source.rows)}, 'records': {len(run.records)}, "
          f"'gets': {run.requests['gets']}, 'body_refetches': {run.requests['retries']}, "
          f"'seconds': {run.seconds:.1f}}}")
    return run


def check_against(reference: Run, run: Run, source: SeededSource, label: str, plan: FaultPlan) -> dict:
    """Assert the faulty run equals the reference and every fault is accounted for; return the numbers."""
    ids = [r["track_id"] for r in run.records]
    ref_ids = {r["track_id"] for r in reference.records}
    lost, duplicated = len(ref_ids - set(ids)), len(ids) - len(set(ids))
    faults = sum(run.proxy.faults.values())
    tracks = len(source.rows)
    numbers = {"case": label, "tracks": tracks, "records": len(ids), "proxy_requests": run.proxy.requests,
               "gets": run.requests["gets"], "retried_requests": run.proxy.requests - tracks,
               "body_refetches": run.requests["retries"], "faults": faults, "by_kind": run.proxy.faults,
               "lost": lost, "duplicated": duplicated, "seconds": round(run.seconds, 1)}
    print(f"\n[reliability] {numbers}")
    assert faults > 0, f"{label}: the plan injected nothing, so the test proved nothing; change the seed"
    assert set(run.proxy.faults) <= set(plan.rates), run.proxy.faults
    assert lost == 0 and duplicated == 0, numbers
    assert run.records == reference.records, f"{label}: records differ from the fault-free run"
    assert run.ledger == reference.ledger, f"{label}: the ledger differs from the fault-free run"
    assert {e["outcome"] for e in run.ledger} <= {"missing", "invalid"}, "a transient fault reached the ledger"
    assert run.manifest.counts == reference.manifest.counts
    # every catalog track was requested once, and every fault cost exactly one more request
    assert run.proxy.requests == tracks + faults, numbers
    assert run.requests["gets"] >= run.proxy.requests  # the client counts what it sent (and the proxy saw)
    body_faults = sum(n for kind, n in run.proxy.faults.items() if kind in BODY_FAULTS)
    assert run.requests["retries"] == body_faults, "each damaged body is fetched again by the source, once"
    return numbers


@pytest.mark.parametrize("case", list(CASES))
def test_one_percent_faults_change_nothing(case, fault_source, fault_free, tmp_path):  # noqa: F811
    rates, strip = CASES[case]
    plan = FaultPlan(rates, seed=SEED, stall_seconds=STALL, strip_checksums=strip)
    with FaultProxy(fault_source.endpoint, plan) as proxy:
        run = ingest(tmp_path, fault_source, proxy.url, proxy, read_timeout=READ_TIMEOUT)
    check_against(fault_free, run, fault_source, case, plan)


def test_without_the_etag_check_corruption_would_get_through(fault_source, fault_free, tmp_path):  # noqa: F811
    """The control experiment: checksums stripped *and* the ETag check off, the same faults change the output.

    So in ``corrupt_no_checksum`` above it is the ETag check, not luck, that keeps damaged bodies out.
    """
    from pipeline.source import s3 as s3_source

    original = s3_source.S3Source.__init__

    def without_etag(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "verify_etag": False})

    plan = FaultPlan({"corrupt": 0.05}, seed=7, strip_checksums=True)
    with pytest.MonkeyPatch.context() as mp, FaultProxy(fault_source.endpoint, plan) as proxy:
        mp.setattr(s3_source.S3Source, "__init__", without_etag)
        run = ingest(tmp_path, fault_source, proxy.url, proxy)
    assert run.proxy.faults.get("corrupt", 0) > 0
    assert run.requests["retries"] == 0  # nothing noticed the damage...
    # ...so good tracks were ledgered as invalid (a flipped top bit is never valid UTF-8, so never a
    # plausible wrong value here; without that property of the fault it could have been ingested)
    assert run.manifest.counts["invalid"] > fault_free.manifest.counts["invalid"]
    assert len(run.records) < len(fault_free.records)


@pytest.mark.slow
def test_heavy_faults_on_a_larger_catalogue(s3_endpoint, tmp_path):
    """2,000 tracks, 3 % of requests failing in each of the six ways at once, checksums stripped."""
    source = seed_source(s3_endpoint, tracks=2000, seed=31)
    reference = ingest(tmp_path / "reference", source, None)
    plan = FaultPlan(dict.fromkeys(FAULT_KINDS, 0.03), seed=13, stall_seconds=STALL, strip_checksums=True)
    with FaultProxy(source.endpoint, plan) as proxy:
        run = ingest(tmp_path / "faulty", source, proxy.url, proxy, read_timeout=READ_TIMEOUT)
    numbers = check_against(reference, run, source, "heavy_all_kinds_3pct", plan)
    assert set(numbers["by_kind"]) == set(FAULT_KINDS), "every kind should have been injected"


@contextlib.contextmanager
def hung_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a hung server or a black-holing proxy)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=256)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for sock in [*held, server]:
            sock.close()


@pytest.mark.parametrize("down", ["refused", "hung"])
def test_a_dead_endpoint_fails_the_cli_fast_naming_it(down, fault_source, tmp_path):  # noqa: F811
    """Nothing listening, or a server that never answers: the chunk fails within seconds, exits non-zero
    ([retcode] task_failed = 30), names the endpoint, publishes nothing and writes no ledger."""
    wh = new_warehouse(tmp_path / "warehouse", fault_source.rows)
    with contextlib.ExitStack() as stack:
        endpoint = f"http://127.0.0.1:{free_port()}" if down == "refused" else stack.enter_context(hung_endpoint())
        layer = overrides_for(tmp_path / "warehouse", fault_source, endpoint, read_timeout=0.3)
        del layer["source"]["max_attempts"], layer["source"]["concurrency"]  # the shipped retry policy
        cfg = write_cfg(tmp_path / "down.cfg", layer)
        started = time.monotonic()
        run = subprocess.run(luigi_cli("IngestChunk", "--date", layout.format_date(FAULT_DATE), "--chunk", "0",
                                       cfg=cfg), env=subprocess_env(cfg), cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=120)
        seconds = time.monotonic() - started
    print(f"\n[reliability] endpoint {down}: exit {run.returncode} after {seconds:.1f}s")
    assert run.returncode == 30, run.stderr[-2000:]
    assert "SourceUnavailableError" in run.stderr and endpoint in run.stderr, run.stderr[-2000:]
    assert seconds < 30, "a dead endpoint must fail the chunk fast, not time out track by track"
    assert visible(wh) == {layout.CATALOG: [layout.format_date(FAULT_DATE)]}, "only the (local) catalog"
    assert not wh.bucket_committed(layout.ANALYSIS_FULL, FAULT_DATE, 0)
    assert not wh.bucket_committed(layout.LEDGER, FAULT_DATE, 0), "the ledger must not be flooded"
