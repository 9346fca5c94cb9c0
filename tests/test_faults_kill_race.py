"""Workers killed mid-job and workers racing on the same date: nothing half-published, reruns identical.

SIGKILL during an ingest chunk is ``tests/test_ingest_kill.py``; here the same is done during a
compaction (``CompactFullSnapshot``) and during the attributes job (``DailyAttributes``), each killed
once a bucket is committed in staging and others are still to come. Then two workers race on the same
date: on one host luigi's process lock stops the second; two hosts sharing a warehouse without a
central scheduler are simulated with ``--no-lock``; with a central scheduler, luigid hands each task
to one worker. Two deterministic interleavings pin the publication races that timing rarely hits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import subprocess

import pytest

from pipeline import layout
from pipeline.demo.s3server import free_port, s3_client
from pipeline.demo.seed import seed_bucket, write_metadata_dump
from pipeline.errors import SourceUnavailableError
from pipeline.formats.avro_io import write_file
from pipeline.ingest.chunk import ChunkSettings, ingest_bucket
from pipeline.ingest.work import full_items
from pipeline.layout import Layout
from pipeline.manifest import BucketManifest
from pipeline.ops.scheduler import running_scheduler
from pipeline.source import source_from_config
from pipeline.source.catalog import read_catalog_bucket
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tasks import CompactFullSnapshot, DailyAttributes, IngestFullSnapshot
from tests.helpers import StartedTasks, luigi_cli, luigi_config, run_and_kill, run_luigi, subprocess_env, write_cfg
from tests.support.faultproxy import FaultPlan, FaultProxy
from tests.support.fixtures_faults import (
    FAULT_DATE,
    PREFIX,
    PROJECT_ROOT,
    assert_published_whole,
    dataset_records,
    new_warehouse,
    overrides_for,
    seed_source,
    visible,
)

D0, D1 = FAULT_DATE, FAULT_DATE + dt.timedelta(days=1)
CHUNKS = 4


@pytest.fixture(scope="module")
def world(s3_endpoint, tmp_path_factory):
    """Day 0 ingested (a full snapshot), day 1's dump and objects waiting: the start of every test here."""
    source = seed_source(s3_endpoint, tracks=160)
    seed_bucket(s3_client(s3_endpoint), source.bucket, PREFIX, source.sim, 1, since_day=0)
    base = tmp_path_factory.mktemp("kill-base") / "warehouse"
    wh = new_warehouse(base, source.rows, D0)
    write_metadata_dump(wh.layout, wh.storage, D1, source.sim.day(1).rows)
    with luigi_config(layered(base, source)):
        assert run_luigi([IngestFullSnapshot(date=D0)])
    return source, base


def layered(root, source, endpoint=None, **source_extra) -> dict:
    cfg = overrides_for(root, source, endpoint, **source_extra)
    cfg["compaction"] = {"every_days": 1}  # day 1 is a compaction day
    cfg["pipeline"] = {"start_date": layout.format_date(D0)}
    return cfg


def copy_of(base, tmp_path, name: str) -> Warehouse:
    shutil.copytree(base, tmp_path / name)
    return Warehouse(Layout(f"file://{tmp_path / name}"), LocalStorage())


def staged_buckets(wh: Warehouse, dataset: str, date: dt.date) -> list[str]:
    names = wh.storage.list_names(f"{wh.layout.date_url(dataset, date, staging=True)}/_buckets")
    return [n for n in names if n.endswith(".json")]  # not the atomic writer's own _temporary folder


def kill_mid_job(wh: Warehouse, cfg_layer: dict, tmp_path, task: str, date: dt.date, dataset: str,
                 module: str = "tasks", extra_env: dict | None = None) -> list[str]:
    """Run ``task`` in a worker process and SIGKILL it once a bucket of ``dataset`` is committed."""
    cfg = write_cfg(tmp_path / "kill.cfg", cfg_layer)
    env = {**subprocess_env(cfg), "PYTHONPATH": str(PROJECT_ROOT), **(extra_env or {})}
    cmd = luigi_cli(task, "--date", layout.format_date(date), cfg=cfg)
    cmd[cmd.index("tasks")] = module
    before = visible(wh)
    assert run_and_kill(cmd, env, lambda: len(staged_buckets(wh, dataset, date)) >= 1), "finished before the kill"
    committed = staged_buckets(wh, dataset, date)
    assert 1 <= len(committed) < CHUNKS, f"the kill should land mid-job, not after every bucket: {committed}"
    after = visible(wh)
    assert layout.format_date(date) not in after.get(dataset, []), "a killed job must not publish"
    assert {d: v for d, v in after.items() if d != layout.CATALOG} == \
        {d: v for d, v in before.items() if d != layout.CATALOG}, "nothing but the day's catalog may appear"
    assert_published_whole(wh)  # every _SUCCESS a reader can see has all of its data
    return committed


def test_sigkill_mid_compaction_publishes_nothing_and_the_rerun_is_identical(world, tmp_path):
    source, base = world
    killed, clean = copy_of(base, tmp_path, "killed"), copy_of(base, tmp_path, "clean")
    # 0.1 s of latency per GET (a stall shorter than the read timeout) spreads the job over seconds
    with FaultProxy(source.endpoint, FaultPlan({"stall": 1.0}, seed=1, stall_seconds=0.1)) as slow:
        cfg = layered(killed.layout.root[len("file://"):], source, slow.url, concurrency=1)
        committed = kill_mid_job(killed, cfg, tmp_path, "CompactFullSnapshot", D1, layout.ANALYSIS_FULL)
    with luigi_config(layered(killed.layout.root[len("file://"):], source)), StartedTasks() as started:
        assert run_luigi([CompactFullSnapshot(date=D1)])
    redone = sorted(int(m.group(1)) for n in started.names if (m := re.match(r"CompactChunk_(\d+)_", n)))
    assert redone == sorted(set(range(CHUNKS)) - {int(n[:5]) for n in committed}), "committed buckets are kept"
    with luigi_config(layered(clean.layout.root[len("file://"):], source)):
        assert run_luigi([CompactFullSnapshot(date=D1)])
    for dataset in (layout.ANALYSIS_FULL, layout.LEDGER):
        assert dataset_records(killed, dataset, D1) == dataset_records(clean, dataset, D1), dataset
    assert killed.manifest(layout.ANALYSIS_FULL, D1).counts == clean.manifest(layout.ANALYSIS_FULL, D1).counts
    assert_published_whole(killed)


def test_sigkill_mid_attributes_publishes_nothing_and_the_rerun_is_identical(world, tmp_path):
    source, base = world
    killed, clean = copy_of(base, tmp_path, "killed"), copy_of(base, tmp_path, "clean")
    cfg = layered(killed.layout.root[len("file://"):], source)
    kill_mid_job(killed, cfg, tmp_path, "DailyAttributes", D0, layout.ATTRIBUTES, module="tests.support.slow_worker",
                 extra_env={"ECHONEST_TEST_RECORD_DELAY": "0.01"})
    with luigi_config(cfg):
        assert run_luigi([DailyAttributes(date=D0)])
    with luigi_config(layered(clean.layout.root[len("file://"):], source)):
        assert run_luigi([DailyAttributes(date=D0)])
    assert dataset_records(killed, layout.ATTRIBUTES, D0) == dataset_records(clean, layout.ATTRIBUTES, D0)
    assert killed.manifest(layout.ATTRIBUTES, D0).counts == clean.manifest(layout.ATTRIBUTES, D0).counts
    assert_published_whole(killed)


# -- two workers, one date ------------------------------------------------------------------------------


def race(wh: Warehouse, source, tmp_path, *extra_args: str, stagger: bool = False) -> list[subprocess.CompletedProcess]:
    """Start two identical ingest workers at the same moment (or the second once the first holds the
    process lock, with ``stagger``); return both, finished."""
    cfg = write_cfg(tmp_path / "race.cfg", overrides_for(wh.layout.root[len("file://"):], source))
    cmd = luigi_cli("IngestFullSnapshot", "--date", layout.format_date(D0), cfg=cfg)
    cmd[cmd.index("WARNING")] = "INFO"  # the workers log which tasks they ran
    args = [a for a in extra_args if a != "--central"]
    if "--central" in extra_args:
        cmd.remove("--local-scheduler")
    def start() -> subprocess.Popen:
        return subprocess.Popen([*cmd, *args], env=subprocess_env(cfg), cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    first = start()
    if stagger:
        _wait_for_process_lock(first)
    procs = [first, start()]
    return [subprocess.CompletedProcess(p.args, p.wait(300), p.stdout.read()) for p in procs]


def _wait_for_process_lock(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until ``proc`` holds luigi's process lock (its pid is in a pid file of ``[core] lock_pid_dir``).

    luigi's lock is a read-then-write of that file, not an atomic one: two workers started in
    the same instant can both find it empty. The guarantee is for a worker that starts while
    another holds the lock, which is what cron's overlapping runs are.
    """
    import glob
    import tempfile
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for path in glob.glob(os.path.join(tempfile.gettempdir(), "luigi", "*.pid")):
            with contextlib.suppress(OSError), open(path) as f:
                if str(proc.pid) in f.read().split():
                    return
        time.sleep(0.01)
    raise AssertionError("the first worker never took luigi's process lock")


def ran(output: str) -> list[str]:
    """The tasks a worker ran, from its own log."""
    return re.findall(r"\) running +(\w+\([^)]*\))", output)


@pytest.fixture
def single_run(world, tmp_path):
    """What one undisturbed worker publishes for day 0 (records and ledger)."""
    source, base = world
    wh = copy_of(base, tmp_path, "single")
    return {d: dataset_records(wh, d, D0) for d in (layout.ANALYSIS_FULL, layout.LEDGER)}


def fresh(world, tmp_path) -> tuple[Warehouse, object]:
    source, _ = world
    return new_warehouse(tmp_path / "raced", source.rows, D0), source


def test_on_one_host_luigis_process_lock_stops_the_second_worker(world, single_run, tmp_path):
    wh, source = fresh(world, tmp_path)
    runs = race(wh, source, tmp_path, stagger=True)
    codes = sorted(r.returncode for r in runs)
    assert codes == [0, 10], [r.stdout[-1500:] for r in runs]  # [retcode] already_running = 10
    loser = next(r for r in runs if r.returncode == 10)
    assert "already running" in loser.stdout and ran(loser.stdout) == []
    assert_published_whole(wh)
    assert {d: dataset_records(wh, d, D0) for d in single_run} == single_run


def test_two_hosts_without_a_scheduler_never_publish_a_half_date(world, single_run, tmp_path):
    """``--no-lock`` stands for two hosts building the same date at once, uncoordinated. At most one
    publishes, and whole; the loser fails loudly (exit 30: its staging was moved away under it). Rarely
    both lose (each clears the other's in-flight files): then nothing is published and a rerun finishes."""
    wh, source = fresh(world, tmp_path)
    runs = race(wh, source, tmp_path, "--no-lock")
    codes = sorted(r.returncode for r in runs)
    assert set(codes) <= {0, 30}, [r.stdout[-3000:] for r in runs]  # 30 = [retcode] task_failed
    assert all(ran(r.stdout) for r in runs), "both workers should really have raced"
    assert_published_whole(wh)
    if 0 not in codes:
        assert layout.ANALYSIS_FULL not in visible(wh)
        with luigi_config(overrides_for(wh.layout.root[len("file://"):], source)):
            assert run_luigi([IngestFullSnapshot(date=D0)]), "the rerun after a lost race must finish the date"
    assert {d: dataset_records(wh, d, D0) for d in single_run} == single_run


def test_with_a_central_scheduler_each_task_runs_on_one_worker(world, single_run, tmp_path):
    wh, source = fresh(world, tmp_path)
    cfg = write_cfg(tmp_path / "race.cfg", overrides_for(wh.layout.root[len("file://"):], source))
    with running_scheduler(state_dir=tmp_path / "luigid", config_layer=cfg) as endpoint:
        runs = race(wh, source, tmp_path, "--central", "--no-lock", "--scheduler-host", endpoint.host,
                    "--scheduler-port", str(endpoint.port))
    first, second = (ran(r.stdout) for r in runs)
    assert not set(first) & set(second), f"a task ran on both workers: {set(first) & set(second)}"
    assert sorted(first + second) == sorted(
        ["CatalogSnapshot(date=2026-11-26)", "IngestFullSnapshot(date=2026-11-26)"]
        + [f"IngestChunk(date=2026-11-26, chunk={c})" for c in range(CHUNKS)]), (first, second)
    # a worker some of whose tasks the other one ran exits with [retcode] already_running (10) or not_run (25),
    # even when the date was published (both can say 25 after sharing the work): never task_failed (30)
    assert {r.returncode for r in runs} <= {0, 10, 25}, [r.stdout[-2000:] for r in runs]
    idle = [r for r in runs if not ran(r.stdout)]
    assert all("being run by another worker" in r.stdout or "complete ones were encountered" in r.stdout for r in idle)
    assert_published_whole(wh)
    assert {d: dataset_records(wh, d, D0) for d in single_run} == single_run


# -- the races timing rarely hits, replayed deterministically ------------------------------------------


class HookedStorage(LocalStorage):
    """Local storage that runs ``hook`` once, just before the first write of a URL ending in ``suffix``."""

    def __init__(self, suffix: str, hook) -> None:
        self.suffix, self.hook = suffix, hook

    def write_bytes(self, url: str, data: bytes) -> None:
        if self.hook is not None and url.endswith(self.suffix):
            hook, self.hook = self.hook, None
            hook()
        super().write_bytes(url, data)


def stage(wh: Warehouse, buckets: int = 2) -> None:
    for bucket in range(buckets):
        records = [{"track_id": f"{bucket}{n:021d}", "source_updated_at": n} for n in range(5)]
        info = write_file(wh.storage, wh.layout.part_url(layout.ATTRIBUTES, D0, bucket, 0), "ids", records)
        wh.commit_bucket(layout.ATTRIBUTES, D0, BucketManifest.of_files(bucket, [info]))


def test_a_late_publisher_never_replaces_a_complete_date(tmp_path):
    """Worker B passed its "already published?" check; worker A then publishes; B must not undo that."""
    root = f"file://{tmp_path}/wh"
    a = Warehouse(Layout(root), LocalStorage())
    stage(a)
    b = Warehouse(Layout(root), HookedStorage("_manifest.json", lambda: a.publish(layout.ATTRIBUTES, D0, "ids", 2)))
    b.publish(layout.ATTRIBUTES, D0, "ids", 2)
    assert assert_published_whole(a) == 1


def test_a_chunk_rerun_never_clears_a_bucket_another_worker_committed(world, tmp_path):
    """Worker A verified the staged files and is about to publish; worker B (no central scheduler, so
    nobody told it the chunk is done) reruns chunk 0 and dies after starting. A must publish whole data."""
    source, base = world
    wh = copy_of(base, tmp_path, "wh")
    with luigi_config(layered(wh.layout.root[len("file://"):], source)):
        catalog = wh.manifest(layout.CATALOG, D0)
        wh.remove_date(layout.ANALYSIS_FULL, D0)
        for bucket in range(CHUNKS):  # every bucket committed in staging, the date not yet published
            ingest_bucket(wh, source_from_config(), layout.ANALYSIS_FULL, D0, bucket,
                          full_items(read_catalog_bucket(wh, D0, bucket, catalog), "{track_id}.json"),
                          ChunkSettings(concurrency=2, failure_ratio=0.01, records_per_part=32))
    other_worker = []

    def other_worker_reruns_chunk_0() -> None:
        dead = f"http://127.0.0.1:{free_port()}"  # B's network is down: it gives up after starting
        with luigi_config({"source": {"endpoint_url": dead, "max_attempts": 1}}):
            try:
                ingest_bucket(wh, source_from_config(), layout.ANALYSIS_FULL, D0, 0,
                              full_items(read_catalog_bucket(wh, D0, 0, catalog), "{track_id}.json"),
                              ChunkSettings(concurrency=2, unreachable_after=2))
                other_worker.append("found the bucket committed")
            except SourceUnavailableError:
                other_worker.append("failed")

    a = Warehouse(wh.layout, HookedStorage("_manifest.json", other_worker_reruns_chunk_0))
    a.publish(layout.ANALYSIS_FULL, D0, "analysis", CHUNKS)
    assert other_worker == ["found the bucket committed"], "B must leave a committed bucket alone"
    assert_published_whole(wh)
