"""``echonest-plan`` with a bad setup ends with one line naming what to fix, exit status 2, no traceback."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo.s3server import fake_credentials_env, free_port
from pipeline.demo.seed import write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.layout import Layout
from pipeline.storage import LocalStorage
from tests.helpers import write_cfg
from tests.support.fixtures_faults import PROJECT_ROOT

D = dt.date(2026, 11, 26)
PLAN = str(Path(sys.executable).with_name("echonest-plan"))


def _plan(tmp_path: Path, credentials: bool) -> subprocess.CompletedProcess:
    root = tmp_path / "warehouse"
    sim = CatalogSimulation(seed=2, start_date=D, initial_tracks=30, segments=4)
    write_metadata_dump(Layout(f"file://{root}"), LocalStorage(), D, sim.day(0).rows)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = write_cfg(tmp_path / "plan.cfg", {"warehouse": {"root": f"file://{root}", "buckets": 2},
                                            "source": {"url": "s3://echonest-analyses/analyses/",
                                                       "endpoint_url": endpoint, "max_attempts": 1}})
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LUIGI_CONFIG_PATH": str(cfg),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1"}
    if credentials:
        env.update(fake_credentials_env())
    return subprocess.run([PLAN, "--date", D.isoformat()], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("credentials, says", [(False, "no AWS credentials for s3://echonest-analyses/analyses/"),
                                               (True, "check [source] endpoint_url")])
def test_the_plan_names_the_setup_problem(tmp_path, credentials, says):
    run = _plan(tmp_path, credentials)
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert says in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
