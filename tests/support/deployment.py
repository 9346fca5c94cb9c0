"""The demo as an operator deploys it: a folder that is not the repository, ``make demo`` run in it,
the documented S3 server serving the demo's catalogue, and a ``LUIGI_CONFIG_PATH`` layer.

One per test session (tests/conftest.py ``deployment``): tests/test_docs_commands.py runs every
documented command in it, tests/test_readers.py reads every file of its warehouse.
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

from pipeline.demo.s3server import fake_credentials_env, s3_client, stop_daemon
from pipeline.ops import scheduler
from pipeline.processes import free_port
from tests.docs_commands import ROOT, Command, of_kind

DATE = "2026-11-26"  # the demo's last day, and the documents' example date
NOW = int(dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.UTC).timestamp())  # the backfill cron's 06:00
EXAMPLE_TRACK = "4uLU6hMCjMI75M1A2tKUQC"


@dataclass
class Deployment:
    root: Path
    env: dict[str, str]
    ports: dict[str, int]
    track_id: str = ""
    demo_output: str = ""

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


def ok(result: subprocess.CompletedProcess, code: int = 0) -> str:
    output = result.stdout + result.stderr
    if result.returncode != code:
        errors = "\n".join(line for line in output.splitlines() if not line.startswith(("DEBUG", "INFO")))
        raise AssertionError(f"`{result.line}` exited {result.returncode}, not {code}:\n{errors[-6000:]}")
    return output


def http_get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
        return response.status, response.read()


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
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


def terminate(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def scheduler_done(port: int) -> set[str]:
    query = urllib.parse.quote(json.dumps({"status": "DONE", "upstream_status": "", "search": ""}))
    _, body = http_get(f"http://127.0.0.1:{port}/api/task_list?data={query}")
    return set(json.loads(body)["response"])


def _avro_body(path: Path) -> tuple[list[dict], bytes]:
    data = path.read_bytes()
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        records = list(reader)
        marker = reader._header["sync"]
    return records, data[data.index(marker) + len(marker):]  # the blocks after the header's sync marker


def records(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        return list(fastavro.reader(f))


def deployment_in(tmp_path_factory):
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
    dep.demo_output = ok(demo)
    try:
        endpoint = ok(dep.run(of_kind("s3server start")[0])).strip().splitlines()[-1]
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
                            for r in records(p) if r["tempo"] is not None)
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


def retcodes() -> dict[str, int]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "luigi.cfg")
    return {k: int(v) for k, v in cfg["retcode"].items()}


