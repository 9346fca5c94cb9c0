"""Shared pytest fixtures: one loopback S3 server per session, a fresh bucket per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from pipeline.demo.s3server import fake_credentials_env, running_s3_server, s3_client


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of the loopback S3 server shared by the session (starting one costs ~3 s).

    SeaweedFS by default; ``ECHONEST_S3_SERVER=moto`` runs the same suite against moto's server.

    The fake credentials are exported for the session (so code using the default boto3 chain
    never looks further) and the previous environment is restored afterwards.
    """
    saved = {name: os.environ.get(name) for name in fake_credentials_env()}
    os.environ.update(fake_credentials_env())
    try:
        with running_s3_server(log_dir=str(tmp_path_factory.mktemp("s3server"))) as endpoint:
            yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket with a unique name on the session's server."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_world(s3_endpoint: str, s3_bucket: str, tmp_path):
    """A seeded bucket (analyses + decoys), a metadata dump, and the config pointing at both.

    Yields ``(warehouse, simulation, overrides)``; the overrides are active during the test.
    """
    from pipeline.demo.seed import seed_bucket, write_metadata_dump
    from pipeline.demo.synthetic import CatalogSimulation
    from pipeline.warehouse import Warehouse
    from tests.helpers import luigi_config

    sim = CatalogSimulation(seed=11, start_date=WORLD_DATE, initial_tracks=150, segments=40,
                            late_ratio=0.05, never_ratio=0.03, malformed_ratio=0.04)
    seed_bucket(s3_client(s3_endpoint), s3_bucket, "analysis", sim, 0)
    overrides = {
        "warehouse": {"buckets": 4, "root": f"file://{tmp_path / 'warehouse'}"},
        "source": {"url": f"s3://{s3_bucket}/analysis/", "endpoint_url": s3_endpoint, "concurrency": 8,
                   "max_attempts": 3, "read_timeout": 5, "connect_timeout": 2},
        "ingest": {"failure_ratio": 0.01, "records_per_part": 16},
    }
    with luigi_config(overrides):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, WORLD_DATE, sim.day(0).rows)
        yield wh, sim, overrides


WORLD_DATE = __import__("datetime").date(2026, 11, 26)


@pytest.fixture(scope="session")
def three_weeks(tmp_path_factory, s3_endpoint):
    """21 simulated days through the fault proxy: analysis sets, retention and attributes (one run per session)."""
    from tests.simulation import run_three_weeks

    yield from run_three_weeks(tmp_path_factory.mktemp("weeks"), s3_endpoint)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    """``make demo`` in a deployment folder with the documented S3 server (tests/support/deployment.py)."""
    from tests.support.deployment import deployment_in

    yield from deployment_in(tmp_path_factory)
