"""Every command README.md and docs/ tell an operator to type, run through bash exactly as written.

The lines come from the documents (tests/docs_commands.py); only dates, paths, ports and the
example track id are substituted. They run in a deployment folder that is not the repository
(``/srv/echonest-pipeline`` of the crontab: the Makefile, luigi.cfg and ``.venv`` linked in), so
``luigi --module tasks`` imports the installed package. One ``make demo`` builds the warehouse
all of them use (~1 min); a loopback S3 server started with the documented command serves the
demo's catalogue to the commands that read the source. The test's own ``LUIGI_CONFIG_PATH``
layer is the demo's, plus the scheduler's port, ``[RangeDaily] now`` (the crontab's "now":
2026-11-26 06:00 UTC, so ``--days-back`` means the same whatever day the suite runs) and no
``stable_done_cooldown_secs`` (days are rebuilt seconds after they were built).
Each command's exit code is asserted, and what it did: files rebuilt byte for byte, tasks seen
by the central scheduler, counts equal to the warehouse's, answers of the servers it started.
"""

from __future__ import annotations

import json
import re

import pytest

from pipeline.demo.s3server import s3_client
from tests.docs_commands import COMMANDS, NOT_RUN_HERE, documented_commands, of_kind
from tests.support.deployment import (
    DATE,
    Deployment,
    http_get,
    ok,
    records,
    retcodes,
    scheduler_done,
    terminate,
    wait_port,
)

# -- the list itself ---------------------------------------------------------------------------------------


def test_every_documented_command_is_of_a_kind_this_module_runs():
    commands = documented_commands()
    assert len(commands) > 40
    unknown = [f"{c.where}: {c.text}" for c in commands if not c.kind]
    assert not unknown, "documented commands no test runs (add them to tests/docs_commands.py):\n" + "\n".join(unknown)
    stale = set(COMMANDS) - {c.kind for c in commands}
    assert not stale, f"kinds no document shows any more: {stale}"
    assert set(NOT_RUN_HERE) <= set(COMMANDS)


# -- the demo and the S3 server --------------------------------------------------------------------------------


def test_make_demo_builds_serves_and_stops(deployment):
    output = deployment.demo_output
    assert "demo: S3 server and lookup service stopped; done." in output
    assert re.search(r"attributes/2026-11-26: \d+ tracks", output)
    assert (deployment.warehouse / "attributes" / DATE / "_SUCCESS").exists()
    assert (deployment.root / "var" / "demo" / "serving" / "attributes.sqlite").stat().st_size > 0


def test_s3server_start_serves_the_catalogue(deployment):
    endpoint = (deployment.root / "var" / "s3").glob("*")
    assert list(endpoint), "the s3server state folder holds its pid and endpoint"
    again = ok(deployment.run(of_kind("s3server start")[0])).strip()  # idempotent: the same server
    listed = s3_client(again).list_objects_v2(Bucket="echonest-demo", Prefix="analysis/", MaxKeys=5)
    assert listed["KeyCount"] == 5


# -- the central scheduler and the workers ---------------------------------------------------------------------


def test_scheduler_start_status_stop(deployment):
    port = deployment.ports["8082"]
    (start,), (status,), (stop,) = of_kind("scheduler start"), of_kind("scheduler status"), of_kind("scheduler stop")
    assert "luigid running" in ok(deployment.run(start))
    assert http_get(f"http://127.0.0.1:{port}/")[0] == 200
    assert f":{port}" in ok(deployment.run(status))
    assert "luigid stopped" in ok(deployment.run(stop))
    assert "not running" in ok(deployment.run(status), code=3)  # documented: exit code 3 = not running


def test_workers_through_make_scheduler(deployment):
    port = deployment.ports["8082"]
    (make_start,), (make_stop,) = of_kind("make scheduler"), of_kind("make scheduler-stop")
    ok(deployment.run(make_start))
    try:
        for dashboard in of_kind("dashboard"):
            url = deployment.substitute(dashboard.text).split(" ", 1)[1]
            status, body = http_get(url)
            assert status == 200 and b"Luigi" in body
        _daily_attributes(deployment, port)
        _range_backfill(deployment, port)
        _crontab(deployment, port)
        _analysis_tasks(deployment)
    finally:
        ok(deployment.run(make_stop))
    with pytest.raises(OSError):
        http_get(f"http://127.0.0.1:{port}/")


def _daily_attributes(dep: Deployment, port: int) -> None:
    before = dep.files("attributes", DATE)
    for command in of_kind("luigi attributes"):
        dep.remove("attributes", DATE)
        output = ok(dep.run(command))
        assert "DailyAttributes(date=2026-11-26)" in output.split("ran successfully", 1)[1]
        assert dep.files("attributes", DATE) == before, f"{command.text}: not the same bytes"
        if "--local-scheduler" not in command.text:
            assert any(t.startswith("DailyAttributes_2026_11_26") for t in scheduler_done(port))


def _range_backfill(dep: Deployment, port: int) -> None:
    before = {d: dep.files("attributes", d) for d in ("2026-11-25", DATE)}
    for command in of_kind("luigi range"):
        for append in ("", " --local-scheduler"):  # with luigid, and without (luigi.cfg: "pass --local-scheduler")
            dep.remove("attributes", *before)
            output = ok(dep.run(command, append=append))
            assert {d: dep.files("attributes", d) for d in before} == before
            # days older than the oldest analysis set retention kept are named, not re-ingested
            assert "attributes of 2026-11-20, 2026-11-21, 2026-11-22 are missing but their analysis sets were " \
                   "retired" in output
    assert any(t.startswith("RangeDaily") for t in scheduler_done(port))
    # a day that fails (a truncated analysis file) fails the command with [retcode] task_failed, for cron to see;
    # once the file is back, the same command builds the day
    kept = dep.files("attributes", "2026-11-25")
    part = sorted((dep.warehouse / "analysis-incremental" / "2026-11-25").glob("part-*.avro"))[0]
    good = part.read_bytes()
    dep.remove("attributes", "2026-11-25", DATE)
    part.write_bytes(good[: len(good) // 2])
    one_day = {"2026-11-01": "2026-11-25", "2026-11-27": DATE}
    output = ok(dep.run(of_kind("luigi range")[0], dates=one_day), code=retcodes()["task_failed"])
    assert "CorruptFileError" in output and part.name in output
    assert not (dep.warehouse / "attributes" / "2026-11-25").exists()
    part.write_bytes(good)
    ok(dep.run(of_kind("luigi range")[0], dates=one_day))
    assert dep.files("attributes", "2026-11-25") == kept
    ok(dep.run(of_kind("luigi range")[0]))
    assert dep.files("attributes", DATE) == before[DATE]


def _crontab(dep: Deployment, port: int) -> None:
    daily, retention, backfill = of_kind("cron")
    before = dep.files("attributes", DATE)
    dep.remove("attributes", DATE)
    ok(dep.run(daily))
    assert dep.files("attributes", DATE) == before
    assert "ran successfully" in (dep.root / "var" / "log" / "daily.log").read_text()
    ok(dep.run(retention))
    log = (dep.root / "var" / "log" / "retention.log").read_text()
    assert "ApplyRetention(date=2026-11-26)" in log and ":)" in log
    assert (dep.warehouse / "_retention").exists()
    kept = dep.files("attributes", "2026-11-24")
    dep.remove("attributes", "2026-11-24")
    ok(dep.run(backfill))
    assert dep.files("attributes", "2026-11-24") == kept
    log = (dep.root / "var" / "log" / "backfill.log").read_text()
    assert "DailyAttributes(date=2026-11-24)" in log.split("ran successfully", 1)[1]
    assert any(t.startswith("DailyAttributes_2026_11_24") for t in scheduler_done(port))


def _analysis_tasks(dep: Deployment) -> None:
    """The analysis sets of the demo's days exist: each command finds its task complete and changes nothing."""
    datasets = ("analysis-full", "analysis-incremental", "analysis-ledger", "catalog")
    before = {ds: sorted((p, p.stat().st_mtime_ns) for p in (dep.warehouse / ds).rglob("*")) for ds in datasets}
    for command in of_kind("luigi analysis"):
        # IncrementalChunk is for an incremental day: the demo's 2026-11-26 is a compaction day, 11-25 is one
        dates = {DATE: "2026-11-25"} if "IncrementalChunk" in command.text else None
        output = ok(dep.run(command, dates=dates))
        task = re.search(r"tasks (\w+)", command.text).group(1)
        assert re.search(rf"complete ones were encountered:\n\s+- 1 {task}\(date=", output), output[-2000:]
        assert "ran successfully" not in output
    assert before == {ds: sorted((p, p.stat().st_mtime_ns) for p in (dep.warehouse / ds).rglob("*"))
                      for ds in datasets}
    for command in of_kind("luigi retention"):
        output = ok(dep.run(command))
        if "--dry-run" in command.text:
            assert "retention as of 2026-11-26: would free 0.0 MB in 0 date folders: nothing" in output
        else:
            assert "ApplyRetention(date=2026-11-26)" in output.split("complete ones were encountered", 1)[1]


# -- reading the warehouse -------------------------------------------------------------------------------------


def test_plan_counts_the_catalogue_and_its_cost(deployment):
    catalog = sum(len(records(p)) for p in (deployment.warehouse / "catalog" / DATE).glob("part-*.avro"))
    for command in of_kind("plan"):
        output = ok(deployment.run(command))
        if "--json" in command.text:
            chunks = json.loads(output[output.index("["):])
            assert sum(c["tracks"] for c in chunks) == catalog
            assert 0 < sum(c["found"] for c in chunks) <= catalog and sum(c["get_requests"] for c in chunks) > 0
        else:
            assert re.search(rf"\b{catalog:,}\b|\b{catalog}\b", output), output


def test_status_views(deployment):
    for command in of_kind("make status") + of_kind("status"):
        output = ok(deployment.run(command))
        assert re.search(r"2026-11-26 Thu\s+✓", output), output
        assert "2026-11-20" in output
    for name in ("var/status.png", "var/status.html", "status.png", "status.html"):
        assert (deployment.root / name).stat().st_size > 0, name


def test_ledger_cli(deployment):
    ledger = [r for p in (deployment.warehouse / "analysis-ledger" / DATE).glob("part-*.avro") for r in records(p)]
    assert ledger
    for command in of_kind("ledger"):
        output = ok(deployment.run(command))
        expected = ledger
        if "--outcome invalid" in command.text:
            expected = [r for r in ledger if r["outcome"] == "invalid"]
        if "--grep SlowDown" in command.text:
            expected = [r for r in ledger if "SlowDown" in r["reason"]]
        assert f"ledger 2026-11-26: {len(expected)} tracks" in output
        for r in expected[:5]:
            assert r["track_id"] in output


# -- serving ---------------------------------------------------------------------------------------------------


def test_publish_rollback_and_the_lookup_api(deployment):
    publish, full, activate = of_kind("publish")
    assert "--date" in publish.text and "--full" in full.text and "--activate 2026-11-25" in activate.text
    # a store starting afresh (the demo's is set aside): the on-demand full load of the day before, then the
    # day's changes on top of it; a store refuses a version older than those it holds, so the order matters
    serving = deployment.root / "var" / "demo" / "serving"
    serving.rename(serving.with_name("serving-of-the-demo"))
    loaded = ok(deployment.run(full, dates={DATE: "2026-11-25"}))
    assert "version='2026-11-25'" in loaded and "mode='full'" in loaded and "noop=False" in loaded
    daily = ok(deployment.run(publish))
    assert f"version='{DATE}'" in daily and "mode='daily'" in daily and "parent='2026-11-25'" in daily

    (redis,) = of_kind("redis")
    server = deployment.popen(redis, keep_optional=True)
    try:
        wait_port(deployment.ports["6379"], server)
        import redis as redis_client

        assert redis_client.Redis(port=deployment.ports["6379"]).ping()
    finally:
        terminate(server)

    (api,) = of_kind("lookup api")
    server = deployment.popen(api, keep_optional=False)  # the store of [serving]: the demo's SQLite
    try:
        wait_port(deployment.ports["8090"], server)
        base = f"http://127.0.0.1:{deployment.ports['8090']}"
        assert json.loads(http_get(f"{base}/snapshot")[1])["version"] == DATE
        assert "active version is now 2026-11-25" in ok(deployment.run(activate))
        assert json.loads(http_get(f"{base}/snapshot")[1])["version"] == "2026-11-25"  # readers see the rollback
        (luigi_publish,) = of_kind("luigi publish")
        output = ok(deployment.run(luigi_publish))  # 2026-11-26 is not the active version: published again
        assert "PublishAttributes(date=2026-11-26)" in output.split("ran successfully", 1)[1]
        assert json.loads(http_get(f"{base}/snapshot")[1])["version"] == DATE
        tempo, similar, batch = of_kind("curl")
        value = float(ok(deployment.run(tempo)).strip())
        expected = json.loads(http_get(f"{base}/tracks/{deployment.track_id}")[1])["attributes"]["tempo"]
        assert value == pytest.approx(expected)
        ids = [line.strip('"') for line in ok(deployment.run(similar)).split()]
        assert 0 < len(ids) <= 5 and deployment.track_id not in ids
        found = json.loads(ok(deployment.run(batch)))
        assert deployment.track_id in json.dumps(found)
    finally:
        terminate(server)


# -- last: the S3 server goes ----------------------------------------------------------------------------------


def test_s3server_stop(deployment):
    endpoint = (deployment.root / "var" / "s3")
    (stop,) = of_kind("s3server stop")
    assert "stopped" in ok(deployment.run(stop))
    assert "not running" in ok(deployment.run(stop))
    assert not any(p.name.endswith("pid") for p in endpoint.iterdir())
