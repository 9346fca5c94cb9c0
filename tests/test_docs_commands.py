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

import configparser
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import fastavro
import pytest

from pipeline.demo.s3server import fake_credentials_env, s3_client, stop_daemon
from pipeline.ops import scheduler
from pipeline.ops.processes import free_port
from tests.docs_commands import COMMANDS, NOT_RUN_HERE, ROOT, Command, documented_commands, of_kind

DATE = "2026-11-26"  # the demo's last day, and the documents' example date
NOW = int(dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.UTC).timestamp())  # the backfill cron's 06:00
EXAMPLE_TRACK = "4uLU6hMCjMI75M1A2tKUQC"


@dataclass
class Deployment:
    root: Path
    env: dict[str, str]
    ports: dict[str, int]
    track_id: str = ""

    @property
    def warehouse(self) -> Path:
        return self.root / "var" / "demo" / "warehouse" / "echonest"

    def substitute(self, text: str, dates: dict[str, str] | None = None) -> str:
        text = text.replace("/srv/echonest-pipeline", str(self.root)).replace(r"$(date -u +\%F)", DATE)
        for documented, port in self.ports.items():
            text = re.sub(rf"\b{documented}\b", str(port), text)
        if self.track_id:
            text = text.replace(EXAMPLE_TRACK, self.track_id)
        for documented, date in (dates or {}).items():
            text = text.replace(documented, date)
        return text

    def run(self, command: Command | str, *, keep_optional: bool = True, dates: dict[str, str] | None = None,
            timeout: float = 300, append: str = "") -> subprocess.CompletedProcess:
        text = command.optional(keep_optional) if isinstance(command, Command) else command
        line = self.substitute(text, dates) + append
        result = subprocess.run(["bash", "-c", line], cwd=self.root, env=self.env, capture_output=True, text=True,
                                timeout=timeout, check=False)
        result.line = line  # type: ignore[attr-defined]
        return result

    def popen(self, command: Command, *, keep_optional: bool) -> subprocess.Popen:
        line = self.substitute(command.optional(keep_optional))
        return subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=self.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def files(self, dataset: str, date: str) -> dict[str, object]:
        """Every file of a dataset date: its bytes, or for Avro files their records and data blocks.

        (The JSON of the schema in an Avro header may order keys differently from one process to
        another, see docs/formats.md, so the header is left out.)
        """
        folder = self.warehouse / dataset / date
        return {str(p.relative_to(folder)): _avro_body(p) if p.suffix == ".avro" else p.read_bytes()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    def remove(self, dataset: str, *dates: str) -> None:
        for date in dates:
            shutil.rmtree(self.warehouse / dataset / date)


def _ok(result: subprocess.CompletedProcess, code: int = 0) -> str:
    output = result.stdout + result.stderr
    if result.returncode != code:
        errors = "\n".join(line for line in output.splitlines() if not line.startswith(("DEBUG", "INFO")))
        raise AssertionError(f"`{result.line}` exited {result.returncode}, not {code}:\n{errors[-6000:]}")
    return output


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
        return response.status, response.read()


def _wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before listening: {proc.stdout.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def _scheduler_done(port: int) -> set[str]:
    query = urllib.parse.quote(json.dumps({"status": "DONE", "upstream_status": "", "search": ""}))
    _, body = _get(f"http://127.0.0.1:{port}/api/task_list?data={query}")
    return set(json.loads(body)["response"])


def _avro_body(path: Path) -> tuple[list[dict], bytes]:
    data = path.read_bytes()
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        records = list(reader)
        marker = reader._header["sync"]
    return records, data[data.index(marker) + len(marker):]  # the blocks after the header's sync marker


def _records(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        return list(fastavro.reader(f))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Deployment:
    """``make demo`` in a deployment folder, then the documented S3 server seeded with the demo's catalogue."""
    root = tmp_path_factory.mktemp("srv") / "echonest-pipeline"
    root.mkdir()
    for name in ("Makefile", "luigi.cfg", "setup.cfg", "pyproject.toml"):
        (root / name).symlink_to(ROOT / name)
    (root / ".venv").symlink_to(Path(sys.prefix))
    (root / "var" / "log").mkdir(parents=True)  # the crontab's logs (docs/attributes.md)
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    env.update(fake_credentials_env(), PATH=f"{root / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    stamp = subprocess.run(["make", "-q", ".venv/.installed-stamp"], cwd=root, env=env, check=False)
    assert stamp.returncode == 0, f"{sys.prefix} is not the project's up-to-date .venv: run `make test`"
    ports = {"8082": free_port(), "8090": free_port(), "6379": free_port()}
    dep = Deployment(root, env, ports)
    demo = dep.run(of_kind("make demo")[0], timeout=600)
    dep.demo_output = _ok(demo)  # type: ignore[attr-defined]
    try:
        endpoint = _ok(dep.run(of_kind("s3server start")[0])).strip().splitlines()[-1]
        _seed_demo_catalogue(endpoint)
        layer = (root / "var" / "demo" / "luigi.cfg").read_text()
        layer = re.sub(r"endpoint_url = \S+", f"endpoint_url = {endpoint}", layer)
        # luigid ignores "pending" for a task marked done less than stable_done_cooldown_secs (10) ago: this
        # module deletes and rebuilds a day seconds after building it, which no operator does
        layer += (f"\n[core]\nscheduler_port = {ports['8082']}\n\n[RangeDaily]\nnow = {NOW}\n\n"
                  "[scheduler]\nstable_done_cooldown_secs = 0\n")
        (root / "layer.cfg").write_text(layer)
        env["LUIGI_CONFIG_PATH"] = str(root / "layer.cfg")
        dep.track_id = next(r["track_id"] for p in sorted((dep.warehouse / "attributes" / DATE).glob("part-*"))
                            for r in _records(p) if r["tempo"] is not None)
        yield dep
    finally:
        stop_daemon(str(root / "var" / "s3"))
        scheduler.stop(root / "var" / "luigid")


def _seed_demo_catalogue(endpoint: str) -> None:
    """The demo's S3 objects as of its last day (the demo stops its own server when it ends)."""
    from pipeline.demo.run import BUCKET, LAST_DATE, PREFIX
    from pipeline.demo.seed import seed_bucket
    from pipeline.demo.synthetic import CatalogSimulation

    days = 7
    sim = CatalogSimulation(seed=7, start_date=LAST_DATE - dt.timedelta(days=days - 1), initial_tracks=400,
                            segments=150, reanalysed_ratio=0.005)
    saved = {k: os.environ.get(k) for k in fake_credentials_env()}
    os.environ.update(fake_credentials_env())
    try:
        seed_bucket(s3_client(endpoint), BUCKET, PREFIX, sim, days - 1)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _retcodes() -> dict[str, int]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "luigi.cfg")
    return {k: int(v) for k, v in cfg["retcode"].items()}


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
    again = _ok(deployment.run(of_kind("s3server start")[0])).strip()  # idempotent: the same server
    listed = s3_client(again).list_objects_v2(Bucket="echonest-demo", Prefix="analysis/", MaxKeys=5)
    assert listed["KeyCount"] == 5


# -- the central scheduler and the workers ---------------------------------------------------------------------


def test_scheduler_start_status_stop(deployment):
    port = deployment.ports["8082"]
    (start,), (status,), (stop,) = of_kind("scheduler start"), of_kind("scheduler status"), of_kind("scheduler stop")
    assert "luigid running" in _ok(deployment.run(start))
    assert _get(f"http://127.0.0.1:{port}/")[0] == 200
    assert f":{port}" in _ok(deployment.run(status))
    assert "luigid stopped" in _ok(deployment.run(stop))
    assert "not running" in _ok(deployment.run(status), code=3)  # documented: exit code 3 = not running


def test_workers_through_make_scheduler(deployment):
    port = deployment.ports["8082"]
    (make_start,), (make_stop,) = of_kind("make scheduler"), of_kind("make scheduler-stop")
    _ok(deployment.run(make_start))
    try:
        for dashboard in of_kind("dashboard"):
            url = deployment.substitute(dashboard.text).split(" ", 1)[1]
            status, body = _get(url)
            assert status == 200 and b"Luigi" in body
        _daily_attributes(deployment, port)
        _range_backfill(deployment, port)
        _crontab(deployment, port)
        _analysis_tasks(deployment)
    finally:
        _ok(deployment.run(make_stop))
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/")


def _daily_attributes(dep: Deployment, port: int) -> None:
    before = dep.files("attributes", DATE)
    for command in of_kind("luigi attributes"):
        dep.remove("attributes", DATE)
        output = _ok(dep.run(command))
        assert "DailyAttributes(date=2026-11-26)" in output.split("ran successfully", 1)[1]
        assert dep.files("attributes", DATE) == before, f"{command.text}: not the same bytes"
        if "--local-scheduler" not in command.text:
            assert any(t.startswith("DailyAttributes_2026_11_26") for t in _scheduler_done(port))


def _range_backfill(dep: Deployment, port: int) -> None:
    before = {d: dep.files("attributes", d) for d in ("2026-11-25", DATE)}
    for command in of_kind("luigi range"):
        for append in ("", " --local-scheduler"):  # with luigid, and without (luigi.cfg: "pass --local-scheduler")
            dep.remove("attributes", *before)
            output = _ok(dep.run(command, append=append))
            assert {d: dep.files("attributes", d) for d in before} == before
            # days older than the oldest analysis set retention kept are named, not re-ingested
            assert "attributes of 2026-11-20, 2026-11-21, 2026-11-22 are missing but their analysis sets were " \
                   "retired" in output
    assert any(t.startswith("RangeDaily") for t in _scheduler_done(port))
    # a day that fails (a truncated analysis file) fails the command with [retcode] task_failed, for cron to see;
    # once the file is back, the same command builds the day
    kept = dep.files("attributes", "2026-11-25")
    part = sorted((dep.warehouse / "analysis-incremental" / "2026-11-25").glob("part-*.avro"))[0]
    good = part.read_bytes()
    dep.remove("attributes", "2026-11-25", DATE)
    part.write_bytes(good[: len(good) // 2])
    one_day = {"2026-11-01": "2026-11-25", "2026-11-27": DATE}
    output = _ok(dep.run(of_kind("luigi range")[0], dates=one_day), code=_retcodes()["task_failed"])
    assert "CorruptFileError" in output and part.name in output
    assert not (dep.warehouse / "attributes" / "2026-11-25").exists()
    part.write_bytes(good)
    _ok(dep.run(of_kind("luigi range")[0], dates=one_day))
    assert dep.files("attributes", "2026-11-25") == kept
    _ok(dep.run(of_kind("luigi range")[0]))
    assert dep.files("attributes", DATE) == before[DATE]


def _crontab(dep: Deployment, port: int) -> None:
    daily, retention, backfill = of_kind("cron")
    before = dep.files("attributes", DATE)
    dep.remove("attributes", DATE)
    _ok(dep.run(daily))
    assert dep.files("attributes", DATE) == before
    assert "ran successfully" in (dep.root / "var" / "log" / "daily.log").read_text()
    _ok(dep.run(retention))
    log = (dep.root / "var" / "log" / "retention.log").read_text()
    assert "ApplyRetention(date=2026-11-26)" in log and ":)" in log
    assert (dep.warehouse / "_retention").exists()
    kept = dep.files("attributes", "2026-11-24")
    dep.remove("attributes", "2026-11-24")
    _ok(dep.run(backfill))
    assert dep.files("attributes", "2026-11-24") == kept
    log = (dep.root / "var" / "log" / "backfill.log").read_text()
    assert "DailyAttributes(date=2026-11-24)" in log.split("ran successfully", 1)[1]
    assert any(t.startswith("DailyAttributes_2026_11_24") for t in _scheduler_done(port))


def _analysis_tasks(dep: Deployment) -> None:
    """The analysis sets of the demo's days exist: each command finds its task complete and changes nothing."""
    datasets = ("analysis-full", "analysis-incremental", "analysis-ledger", "catalog")
    before = {ds: sorted((p, p.stat().st_mtime_ns) for p in (dep.warehouse / ds).rglob("*")) for ds in datasets}
    for command in of_kind("luigi analysis"):
        # IncrementalChunk is for an incremental day: the demo's 2026-11-26 is a compaction day, 11-25 is one
        dates = {DATE: "2026-11-25"} if "IncrementalChunk" in command.text else None
        output = _ok(dep.run(command, dates=dates))
        task = re.search(r"tasks (\w+)", command.text).group(1)
        assert re.search(rf"complete ones were encountered:\n\s+- 1 {task}\(date=", output), output[-2000:]
        assert "ran successfully" not in output
    assert before == {ds: sorted((p, p.stat().st_mtime_ns) for p in (dep.warehouse / ds).rglob("*"))
                      for ds in datasets}
    for command in of_kind("luigi retention"):
        output = _ok(dep.run(command))
        if "--dry-run" in command.text:
            assert "retention as of 2026-11-26: would free 0.0 MB in 0 date folders: nothing" in output
        else:
            assert "ApplyRetention(date=2026-11-26)" in output.split("complete ones were encountered", 1)[1]


# -- reading the warehouse -------------------------------------------------------------------------------------


def test_plan_counts_the_catalogue_and_its_cost(deployment):
    catalog = sum(len(_records(p)) for p in (deployment.warehouse / "catalog" / DATE).glob("part-*.avro"))
    for command in of_kind("plan"):
        output = _ok(deployment.run(command))
        if "--json" in command.text:
            chunks = json.loads(output[output.index("["):])
            assert sum(c["tracks"] for c in chunks) == catalog
            assert 0 < sum(c["found"] for c in chunks) <= catalog and sum(c["get_requests"] for c in chunks) > 0
        else:
            assert re.search(rf"\b{catalog:,}\b|\b{catalog}\b", output), output


def test_status_views(deployment):
    for command in of_kind("make status") + of_kind("status"):
        output = _ok(deployment.run(command))
        assert re.search(r"2026-11-26 Thu\s+✓", output), output
        assert "2026-11-20" in output
    for name in ("var/status.png", "var/status.html", "status.png", "status.html"):
        assert (deployment.root / name).stat().st_size > 0, name


def test_ledger_cli(deployment):
    ledger = [r for p in (deployment.warehouse / "analysis-ledger" / DATE).glob("part-*.avro") for r in _records(p)]
    assert ledger
    for command in of_kind("ledger"):
        output = _ok(deployment.run(command))
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
    publish, activate = of_kind("publish")
    assert "--date" in publish.text and "--activate 2026-11-25" in activate.text
    assert "2026-11-25" in _ok(deployment.run(publish, dates={DATE: "2026-11-25"}))
    assert DATE in _ok(deployment.run(publish))

    (redis,) = of_kind("redis")
    server = deployment.popen(redis, keep_optional=True)
    try:
        _wait_port(deployment.ports["6379"], server)
        import redis as redis_client

        assert redis_client.Redis(port=deployment.ports["6379"]).ping()
    finally:
        _stop(server)

    (api,) = of_kind("lookup api")
    server = deployment.popen(api, keep_optional=False)  # the store of [serving]: the demo's SQLite
    try:
        _wait_port(deployment.ports["8090"], server)
        base = f"http://127.0.0.1:{deployment.ports['8090']}"
        assert json.loads(_get(f"{base}/snapshot")[1])["version"] == DATE
        assert "active version is now 2026-11-25" in _ok(deployment.run(activate))
        assert json.loads(_get(f"{base}/snapshot")[1])["version"] == "2026-11-25"  # readers see the rollback
        (luigi_publish,) = of_kind("luigi publish")
        output = _ok(deployment.run(luigi_publish))  # 2026-11-26 is not the active version: published again
        assert "PublishAttributes(date=2026-11-26)" in output.split("ran successfully", 1)[1]
        assert json.loads(_get(f"{base}/snapshot")[1])["version"] == DATE
        tempo, similar, batch = of_kind("curl")
        value = float(_ok(deployment.run(tempo)).strip())
        expected = json.loads(_get(f"{base}/tracks/{deployment.track_id}")[1])["attributes"]["tempo"]
        assert value == pytest.approx(expected)
        ids = [line.strip('"') for line in _ok(deployment.run(similar)).split()]
        assert 0 < len(ids) <= 5 and deployment.track_id not in ids
        found = json.loads(_ok(deployment.run(batch)))
        assert deployment.track_id in json.dumps(found)
    finally:
        _stop(server)


# -- last: the S3 server goes ----------------------------------------------------------------------------------


def test_s3server_stop(deployment):
    endpoint = (deployment.root / "var" / "s3")
    (stop,) = of_kind("s3server stop")
    assert "stopped" in _ok(deployment.run(stop))
    assert "not running" in _ok(deployment.run(stop))
    assert not any(p.name.endswith("pid") for p in endpoint.iterdir())
