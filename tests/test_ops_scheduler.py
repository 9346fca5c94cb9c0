"""The project's central scheduler: started on loopback, fed by a real worker, read back through its API.

One luigid serves the module (starting it costs ~1 s); one real ``luigi --module tasks`` run
against a tiny ``file://`` source goes through it, then the API, the resources, the retry policy
and the SQLite task history are checked on that instance.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pipeline import layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.errors import ConfigError
from pipeline.layout import Layout
from pipeline.ops import scheduler
from pipeline.ops.scheduler import api, running_scheduler
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tests.helpers import subprocess_env, write_cfg

DATE = dt.date(2026, 11, 26)
CHUNKS = 3
S3_INGEST = 2  # differs from luigi.cfg's 1, so seeing it proves the test layer reached luigid


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A tiny local source and dump, a config layer for it, and a luigid reading that layer."""
    root = tmp_path_factory.mktemp("scheduler")
    sim = CatalogSimulation(seed=3, start_date=DATE, initial_tracks=60, segments=12, never_ratio=0.05,
                            late_ratio=0.0, malformed_ratio=0.05)
    seed_local_folder(str(root / "source"), sim, 0)
    wh = Warehouse(Layout(f"file://{root / 'warehouse'}"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
    cfg = write_cfg(root / "test.cfg", {
        "warehouse": {"buckets": CHUNKS, "root": wh.layout.root},
        "source": {"url": f"file://{root / 'source'}/", "concurrency": 2},
        "ingest": {"failure_ratio": 0.5, "records_per_part": 16},
        "resources": {"s3_ingest": S3_INGEST},
    })
    state = root / "luigid"
    with running_scheduler(state_dir=state, config_layer=cfg) as endpoint:
        cmd = [str(Path(sys.executable).with_name("luigi")), "--module", "tasks", "IngestFullSnapshot",
               "--date", layout.format_date(DATE), "--scheduler-host", endpoint.host,
               "--scheduler-port", str(endpoint.port), "--workers", "2", "--log-level", "WARNING"]
        run = subprocess.run(cmd, env=subprocess_env(cfg), capture_output=True, text=True, timeout=300)
        yield wh, endpoint, state, run


def test_the_pipeline_runs_through_the_central_scheduler(world):
    wh, endpoint, _, run = world
    assert run.returncode == 0, run.stderr[-2000:]
    assert wh.complete_dates(layout.ANALYSIS_FULL) == [DATE]
    assert "local scheduler" not in run.stderr.lower()
    done = api(endpoint.url, "task_list", {"status": "DONE", "upstream_status": ""})
    families = sorted(t["name"] for t in done.values())
    assert families == sorted(["CatalogSnapshot", "IngestFullSnapshot"] + ["IngestChunk"] * CHUNKS)
    for status in ("PENDING", "RUNNING", "FAILED", "DISABLED"):
        assert api(endpoint.url, "task_list", {"status": status, "upstream_status": ""}) == {}, status


def test_chunks_report_progress_to_the_scheduler(world):
    """Every chunk ends at 100 % with its final counts, however fast it ran."""
    wh, endpoint, _, _ = world
    analysis = wh.manifest(layout.ANALYSIS_FULL, DATE)
    catalog = wh.manifest(layout.CATALOG, DATE)
    chunks = [t for t in api(endpoint.url, "task_list", {"status": "DONE"}).values() if t["name"] == "IngestChunk"]
    assert len(chunks) == CHUNKS
    for task in chunks:
        bucket = int(task["params"]["chunk"])
        total, counts = catalog.bucket(bucket).records, analysis.bucket(bucket).counts
        assert task["progress_percentage"] == 100.0, (
            f"chunk {bucket} ended at {task['progress_percentage']} % ({task['status_message']}): "
            "the ingest must report its final counts once after the last track, not only every second")
        assert task["status_message"].startswith(f"{total}/{total} tracks · ingested {counts['ingested']} · "
                                                 f"missing {counts['missing']} · invalid {counts['invalid']} · ")
        assert task["resources"] == {"s3_ingest": 1}


def test_resources_from_the_config_reach_luigid(world):
    _, endpoint, _, _ = world
    resources = {r["name"]: r["num_total"] for r in api(endpoint.url, "resource_list")}
    assert resources == {"s3_ingest": S3_INGEST}


def test_the_retry_policy_of_luigi_cfg_reaches_luigid(world):
    """luigi.cfg says retry_count = 3: the third failure within the window disables the task
    (luigid's built-in default would allow 999,999,999)."""
    _, endpoint, _, _ = world
    task_id = "RetryPolicyProbe__99914b932b"
    for _ in range(3):
        api(endpoint.url, "add_task", {"worker": "probe", "task_id": task_id, "status": "FAILED",
                                       "family": "RetryPolicyProbe", "params": {}})
    disabled = api(endpoint.url, "task_list", {"status": "DISABLED"})
    assert list(disabled) == [task_id]


def test_task_history_is_recorded_in_sqlite(world):
    _, endpoint, state, _ = world
    assert api(endpoint.url, "has_task_history") is True
    with sqlite3.connect(state / "history.sqlite") as db:
        events = db.execute("SELECT t.name, e.event_name FROM tasks t "
                            "JOIN task_events e ON e.task_id = t.id").fetchall()
    for family in ("CatalogSnapshot", "IngestChunk", "IngestFullSnapshot"):
        assert (family, "RUNNING") in events and (family, "DONE") in events, family
    assert sum(1 for name, event in events if (name, event) == ("IngestChunk", "DONE")) == CHUNKS


def test_luigid_listens_on_loopback_only(world):
    _, endpoint, state, _ = world
    assert endpoint.host == "127.0.0.1"
    listening = {c.laddr.ip for c in psutil.Process(endpoint.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}
    command = scheduler.luigid_command(8082, scheduler.StateDir.of(state))
    assert command[command.index("--address") + 1] == "127.0.0.1"
    assert Path(command[0]).name == "luigid" and Path(command[0]).parent == Path(sys.executable).parent


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_non_loopback_addresses_are_refused_unless_allowed(address, tmp_path):
    with pytest.raises(ConfigError, match="refusing to bind"):
        scheduler.start(18999, tmp_path, address=address)
    assert not (tmp_path / "luigid.pid").exists()
    scheduler.check_address(address, allow_remote=True)  # the explicit opt-in


def test_start_is_idempotent_and_stop_cleans_up(world):
    _, endpoint, state, _ = world
    assert scheduler.start(endpoint.port, state) == endpoint
    assert scheduler.status(state) == endpoint
    with pytest.raises(scheduler.SchedulerError, match="already runs on port"):
        scheduler.start(endpoint.port + 1, state)


def test_cli_start_status_stop(tmp_path):
    port = scheduler.free_port()
    cli = [sys.executable, "-m", "pipeline.ops.scheduler"]
    state = ["--state-dir", str(tmp_path)]
    started = subprocess.run([*cli, "start", "--port", str(port), *state], capture_output=True, text=True,
                             timeout=60)
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout
        pid = int((tmp_path / "luigid.pid").read_text())
        assert psutil.pid_exists(pid)  # outlives the CLI that started it
        assert subprocess.run([*cli, "status", *state], timeout=30).returncode == 0
    finally:
        stopped = subprocess.run([*cli, "stop", *state], capture_output=True, text=True, timeout=60)
    assert stopped.stdout.strip() == "luigid stopped"
    assert (tmp_path / "state.pickle").exists()  # SIGTERM let luigid save its state
    assert subprocess.run([*cli, "status", *state], timeout=30).returncode == 3
    assert subprocess.run([*cli, "stop", *state], capture_output=True, text=True).stdout.strip() == \
        "luigid was not running"


def test_a_port_taken_by_another_scheduler_is_refused(tmp_path):
    with running_scheduler(state_dir=tmp_path / "first") as endpoint:
        try:
            with pytest.raises(scheduler.SchedulerError, match="already in use") as err:
                scheduler.start(endpoint.port, tmp_path / "second", timeout=20)
        finally:
            scheduler.stop(tmp_path / "second")  # had it started after all, do not leak it
        assert "--port" in str(err.value)
