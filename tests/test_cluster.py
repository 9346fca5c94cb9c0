"""On a real engine: the day sequence with the warehouse on S3 and attributes on Spark; the datasets as SQL tables.

One module fixture runs three days (first ingest, incremental, compaction; attributes and
publication every day) twice, from the same seeded source: on a local-disk warehouse with the
default runners, in process, and on the embedded S3 server with ``[attributes] runner = spark``,
through the command docs/cluster.md gives. Spark starts slowly, so the module launches the
spark runner three times (one per day) and one shared Spark SQL session.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import subprocess
import sys
from pathlib import Path

import fastavro
import httpx
import pytest

from pipeline import layout
from pipeline.demo.s3server import s3_client
from pipeline.demo.seed import seed_bucket, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.layout import Layout
from pipeline.ops import hive
from pipeline.storage import LocalStorage, storage_for
from pipeline.warehouse import Warehouse
from tasks.serving import PublishAttributes
from tests.helpers import luigi_config, run_luigi, subprocess_env, write_cfg

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cluster.md"
DAYS = [dt.date(2026, 11, 24), dt.date(2026, 11, 25), dt.date(2026, 11, 26)]
LAST = DAYS[-1]
CHUNKS = 3


def doc_commands() -> list[str]:
    """Every command of docs/cluster.md (the lines of its ``sh`` blocks)."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def doc_command(prefix: str) -> str:
    found = [c for c in doc_commands() if c.startswith(prefix)]
    assert len(found) == 1, f"docs/cluster.md should show one `{prefix} …` command, found {found}"
    return found[0]


def shell(command: str, cfg: Path, cwd: Path, timeout: float = 900) -> str:
    """Run a documented command as a person would (bash, the virtualenv first on PATH)."""
    env = subprocess_env(cfg)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"`{command}` failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result.stdout


def _config(root: str, serving: Path, source: str, endpoint: str, runner: str) -> dict:
    return {"warehouse": {"root": root, "s3_endpoint_url": endpoint, "buckets": CHUNKS},
            "source": {"url": source, "endpoint_url": endpoint, "concurrency": 4},
            "ingest": {"records_per_part": 40, "failure_ratio": 0.05},
            "pipeline": {"start_date": layout.format_date(DAYS[0])},
            "compaction": {"every_days": 2, "max_incremental_ratio": 1.0},
            "attributes": {"runner": runner},
            "serving": {"store": "sqlite", "sqlite_path": serving / "attributes.sqlite", "index_dir": serving,
                        "batch_size": 200}}


@pytest.fixture(scope="module")
def days(tmp_path_factory, s3_endpoint):
    """(local-disk warehouse, S3 warehouse, their configs, work folder) after the three days."""
    work = tmp_path_factory.mktemp("cluster")
    client = s3_client(s3_endpoint)
    for bucket in ("source", "warehouse"):
        client.create_bucket(Bucket=f"cluster-{bucket}")
    sim = CatalogSimulation(seed=5, start_date=DAYS[0], initial_tracks=260, segments=24, never_ratio=0.03,
                            late_ratio=0.04, malformed_ratio=0.03, reanalysed_ratio=0.02)
    source = "s3://cluster-source/analysis/"
    local = _config(f"file://{work / 'local'}", work / "serving-local", source, s3_endpoint, "inline")
    remote = _config("s3://cluster-warehouse/wh", work / "serving-s3", source, s3_endpoint, "spark")
    remote_cfg = write_cfg(work / "s3.cfg", remote)
    local_wh = Warehouse(Layout(local["warehouse"]["root"]), LocalStorage())
    remote_wh = Warehouse(Layout(remote["warehouse"]["root"]), storage_for(remote["warehouse"]["root"], s3_endpoint))
    command = doc_command("luigi --module tasks PublishAttributes")
    for day, date in enumerate(DAYS):
        seed_bucket(client, "cluster-source", "analysis", sim, day, since_day=day - 1 if day else None)
        for wh in (local_wh, remote_wh):
            write_metadata_dump(wh.layout, wh.storage, date, sim.day(day).rows)
        with luigi_config(local):
            assert run_luigi([PublishAttributes(date=date)]), f"local-disk day {date}"
        # the documented command, as written for the last day (the earlier days differ only in the date)
        shell(command.replace(layout.format_date(LAST), layout.format_date(date)), remote_cfg, work)
    local_cfg = write_cfg(work / "local.cfg", local)
    return local_wh, remote_wh, local_cfg, remote_cfg, work


def _records(wh: Warehouse, dataset: str, date: dt.date) -> list[dict]:
    manifest = wh.manifest(dataset, date)
    return [r for b in range(manifest.buckets) for r in wh.read_bucket(dataset, date, b, manifest)]


def test_s3_warehouse_with_spark_attributes_equals_local_disk(days):
    local, remote, _, _, work = days
    kinds = {}
    for dataset in layout.DATASETS:
        dates = local.complete_dates(dataset)
        assert remote.complete_dates(dataset) == dates, dataset
        for date in dates:
            assert _records(remote, dataset, date) == _records(local, dataset, date), f"{dataset} {date}"
        kinds[dataset] = dates
    # the sequence really had a first ingest, an incremental and a compaction, and attributes every day
    assert kinds[layout.ANALYSIS_FULL] == [DAYS[0], DAYS[2]] and kinds[layout.ANALYSIS_INCREMENTAL] == [DAYS[1]]
    assert kinds[layout.ATTRIBUTES] == DAYS and kinds[layout.LEDGER] == DAYS
    assert remote.manifest(layout.ATTRIBUTES, LAST).mode == "incremental"
    # attributes written by the spark runner on S3 are byte for byte those of the inline runner on disk
    for date in DAYS:
        manifest = local.manifest(layout.ATTRIBUTES, date)
        assert manifest.records > 200
        for bucket in range(CHUNKS):
            for ours, theirs in zip(local.bucket_files(layout.ATTRIBUTES, date, bucket),
                                    remote.bucket_files(layout.ATTRIBUTES, date, bucket), strict=True):
                assert local.storage.read_bytes(ours) == remote.storage.read_bytes(theirs), theirs
    # both published to their online store
    for name in ("serving-local", "serving-s3"):
        assert (work / name / "attributes.sqlite").exists()
    assert not list(ROOT.glob("metastore_db")) and not list(ROOT.glob("derby.log"))


@pytest.fixture(scope="module")
def spark(days):
    """One Spark SQL session (Hive support, loopback) for the module, files under the module's folder."""
    from pipeline.ops.spark_sql import local_spark

    with local_spark(str(days[4] / "spark")) as session:
        yield session


def _fastavro(wh: Warehouse, dataset: str, date: dt.date) -> list[dict]:
    out = []
    for bucket in range(CHUNKS):
        for url in wh.bucket_files(dataset, date, bucket):
            with wh.storage.open_read(url) as f:
                out.extend(fastavro.reader(f))
    return out


def test_spark_sql_reads_the_tables_like_fastavro(days, spark):
    local, _, local_cfg, _, work = days
    from pipeline.ops.spark_sql import run_sql

    # the tables as of the first two days, then the last day registered with one statement per table
    run_sql(spark, [s.rstrip(";") for s in hive.ddl(local, dates=DAYS[:2])])
    assert run_sql(spark, ["SELECT count(DISTINCT `date`) FROM echonest.attributes"]) == [(2,)]
    register = hive.partitions(local, dates=[LAST])
    assert len(register) == 4 and all(s.count("ALTER TABLE") == 1 for s in register)  # no incremental that day
    run_sql(spark, [s.rstrip(";") for s in register])
    for table, (dataset, _) in hive.TABLES.items():
        for date in local.complete_dates(dataset):
            expected = _fastavro(local, dataset, date)
            got = run_sql(spark, [f"SELECT count(*) FROM echonest.{table} WHERE `date` = '{date}'"])
            assert got == [(len(expected),)], f"{table} {date}"
    # values, column by column, against fastavro's decoding of the same files
    rows = run_sql(spark, ["SELECT track_id, beat_tempo, estimated_key, estimated_mode, tempo, key, mode, "
                           "null_reasons, timbre_mean, algorithm_version FROM echonest.attributes "
                           f"WHERE `date` = '{LAST}' ORDER BY track_id"])
    expected = sorted(_fastavro(local, layout.ATTRIBUTES, LAST), key=lambda r: r["track_id"])
    assert len(rows) == len(expected) > 200
    for row, rec in zip(rows, expected, strict=True):
        assert row[:7] == tuple(rec[k] for k in ("track_id", "beat_tempo", "estimated_key", "estimated_mode", "tempo",
                                                 "key", "mode"))
        assert row[7] == rec["null_reasons"] or _as_map(rec["null_reasons"]) == row[7]
        assert (row[8] is None) == (rec["timbre_mean"] is None)
        if rec["timbre_mean"] is not None:
            assert row[8] == pytest.approx(rec["timbre_mean"], rel=1e-6)
        assert row[9] == rec["algorithm_version"]
    ledger = run_sql(spark, [f"SELECT track_id, outcome, reason, attempts FROM echonest.analysis_ledger "
                             f"WHERE `date` = '{LAST}' ORDER BY track_id"])
    assert ledger == sorted((r["track_id"], r["outcome"], r["reason"], r["attempts"])
                            for r in _fastavro(local, layout.LEDGER, LAST)) != []
    catalog = run_sql(spark, [f"SELECT track_id, analysis_key, analysis_updated_at FROM echonest.catalog "
                              f"WHERE `date` = '{LAST}' ORDER BY track_id"])
    assert catalog == sorted((r["track_id"], r["analysis_key"], r["analysis_updated_at"])
                             for r in _fastavro(local, layout.CATALOG, LAST))
    tempos = run_sql(spark, [f"SELECT track_id, track.tempo FROM echonest.analysis_full WHERE `date` = '{LAST}' "
                             "ORDER BY track_id"])
    assert tempos == sorted((r["track_id"], r["track"]["tempo"]) for r in _fastavro(local, layout.ANALYSIS_FULL, LAST))


def _as_map(value):
    """``null_reasons`` as Spark shows it, whether the schema holds a map or an array of entries."""
    if isinstance(value, dict):
        return value
    return {e["field"] if "field" in e else e["key"]: e.get("reason", e.get("value")) for e in value}


def test_documented_sql_commands_answer_like_the_lookup_api(days):
    local, _, local_cfg, _, work = days
    from pipeline.serving.api import running_service

    ddl_cmd, partitions_cmd, query_cmd = (doc_command(f"python -m pipeline.ops.hive {c}")
                                          for c in ("ddl", "partitions", "query"))
    shell(ddl_cmd, local_cfg, work)
    assert (work / "tables.sql").read_text().count("CREATE EXTERNAL TABLE") == len(hive.TABLES)
    register = shell(partitions_cmd, local_cfg, work)
    assert register.count("ALTER TABLE") == 4 and f"'{LAST}'" in register
    answer = [line.split("\t") for line in shell(query_cmd, local_cfg, work).splitlines()]
    assert (work / "spark-metastore" / "metastore_db").is_dir()  # under the folder named, not the repo
    # the lookup API: every track of the snapshot, filtered the way the SQL does
    ids = [r["track_id"] for r in _fastavro(local, layout.ATTRIBUTES, LAST)]
    serving = work / "serving-local"
    with running_service({"store": "sqlite", "sqlite_path": serving / "attributes.sqlite"}, serving,
                         work / "api.log") as base:
        assert httpx.get(f"{base}/snapshot").json()["version"] == layout.format_date(LAST)
        tracks = {}
        for start in range(0, len(ids), 500):
            tracks.update(httpx.post(f"{base}/tracks:batch", json={"ids": ids[start:start + 500]}).json()["tracks"])
    assert len(tracks) == len(ids)
    expected = sorted((t, a["tempo"]) for t, a in tracks.items()
                      if a["key"] == 2 and a["mode"] == 0 and a["tempo"] is not None and 120 <= a["tempo"] <= 130)
    assert expected, "the sample has no track in D minor at 120-130 BPM: the comparison would prove nothing"
    d_minor = [t for t, a in tracks.items() if a["key"] == 2 and a["mode"] == 0]
    in_range = [t for t, a in tracks.items() if a["tempo"] is not None and 120 <= a["tempo"] <= 130]
    assert len(d_minor) > len(expected) and len(in_range) > len(expected)  # both conditions filter something
    assert [(t, float(tempo)) for t, tempo in answer] == expected
    print(f"\nD minor, 120-130 BPM on {LAST}: {len(expected)} tracks, SQL and lookup API agree; "
          f"`{shlex.split(query_cmd)[:4]}`")


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket the process ``pid`` owns, from the kernel's tables."""
    import os

    from tests.support.netstat import LISTEN, _address

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN and fields[9] in inodes:
                hex_ip, hex_port = fields[1].split(":")
                found.add((_address(hex_ip), int(hex_port, 16)))
    return found


def _ipv4(address: str) -> str:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return str(getattr(ip, "ipv4_mapped", None) or ip)


def test_spark_listens_on_loopback_only(spark):
    """The driver, the block manager and py4j: every socket the Spark JVM listens on is on 127.0.0.1."""
    sockets = _listening(spark.sparkContext._gateway.proc.pid)
    driver = int(spark.sparkContext.getConf().get("spark.driver.port"))
    assert driver in {port for _, port in sockets}
    # Java listens on IPv6 sockets; 127.0.0.1 shows there as the IPv4-mapped ::ffff:127.0.0.1
    assert sockets and {_ipv4(address) for address, _ in sockets} == {"127.0.0.1"}, sockets
    assert spark.sparkContext.uiWebUrl is None  # no web UI


def test_every_documented_command_is_one_the_tests_run():
    """docs/cluster.md shows only commands this module runs as written (a new one needs its test)."""
    run_here = ("luigi --module tasks PublishAttributes", "python -m pipeline.ops.hive ddl",
                "python -m pipeline.ops.hive partitions", "python -m pipeline.ops.hive query")
    commands = doc_commands()
    assert len(commands) == len(run_here)
    for prefix in run_here:
        doc_command(prefix)
