"""Shared pytest fixtures: one loopback S3 server per session, a fresh bucket per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from pipeline.demo.s3server import fake_credentials_env, running_s3_server, s3_client


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto server process shared by the session (starting one costs ~2 s).

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
