"""Security basics: credentials never written anywhere, keys never leave the source, servers stay on loopback.

- An ingest through the operator's command line, with either GET client (boto3, obstore), sentinel AWS
  credentials and *every* logger at DEBUG (botocore prints request headers there), leaves no trace of
  them in the log, the output or any warehouse file.
- Object keys from the metadata dump cannot reach outside the configured S3 prefix (checked on the
  wire: every request the pipeline sends goes through a recording proxy) nor, with a ``file://``
  source, outside the configured folder through a symlink; such tracks are ledgered as invalid.
- The central scheduler, the S3 test server and the serving API and Redis listen on 127.0.0.1 by
  default (checked in the kernel's socket tables, not taken from the servers' word).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

from pipeline import layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.ops.scheduler import running_scheduler
from pipeline.warehouse import Warehouse
from tasks import IngestFullSnapshot
from tests.helpers import luigi_cli, luigi_config, run_luigi, subprocess_env, write_cfg
from tests.support.faultproxy import FaultPlan, FaultProxy
from tests.support.fixtures_faults import (
    FAULT_DATE,
    PREFIX,
    PROJECT_ROOT,
    dataset_records,
    files_under,
    new_warehouse,
    overrides_for,
    seed_source,
)
from tests.support.netstat import listening_addresses, loopback_only

LOGGING_INI = """[loggers]
keys=root
[handlers]
keys=file
[formatters]
keys=plain
[logger_root]
level=DEBUG
handlers=file
[handler_file]
class=FileHandler
level=DEBUG
formatter=plain
args=({path!r}, 'a')
[formatter_plain]
format=%(asctime)s %(name)s %(levelname)s %(message)s
"""


@pytest.mark.parametrize("client", ["boto3", "obstore"])
def test_credentials_never_reach_logs_manifests_or_warehouse_files(s3_endpoint, tmp_path, client):
    source = seed_source(s3_endpoint, tracks=30)
    wh = new_warehouse(tmp_path / "warehouse", source.rows)
    log = tmp_path / "debug.log"
    (tmp_path / "logging.ini").write_text(LOGGING_INI.format(path=str(log)))
    layer = {**overrides_for(tmp_path / "warehouse", source, client=client),
             "core": {"logging_conf_file": tmp_path / "logging.ini"}}
    cfg = write_cfg(tmp_path / "security.cfg", layer)
    sentinels = {"AWS_ACCESS_KEY_ID": "AKIA" + uuid.uuid4().hex[:16].upper(),
                 "AWS_SECRET_ACCESS_KEY": "SECRET" + uuid.uuid4().hex,
                 "AWS_SESSION_TOKEN": "TOKEN" + uuid.uuid4().hex}
    cmd = [a for a in luigi_cli("IngestFullSnapshot", "--date", layout.format_date(FAULT_DATE), cfg=cfg)
           if a not in ("--log-level", "WARNING")]  # the logging file above decides: everything at DEBUG
    run = subprocess.run(cmd, env={**subprocess_env(cfg), **sentinels}, cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    text = log.read_text()
    # the test means something only if the request logging of the client that sent the GETs was captured
    if client == "boto3":
        assert "botocore.endpoint DEBUG Sending http request" in text and "botocore.auth DEBUG" in text
    else:  # obstore signs in Rust and logs nothing itself; the source logs each GET, boto3 found the keys
        assert "pipeline.source.s3_get DEBUG GET s3://" in text and "botocore.credentials" in text
    assert dataset_records(wh, layout.ANALYSIS_FULL, FAULT_DATE), "the ingest with these credentials worked"
    files = list(files_under(tmp_path / "warehouse"))
    assert any(p.name == "_manifest.json" for p in files)
    for name, secret in sentinels.items():
        assert secret not in text, f"{name} is in the DEBUG log"
        assert secret not in run.stdout + run.stderr, f"{name} is in the command's output"
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"{name} was written to {leaked}"


def test_s3_keys_from_the_dump_cannot_leave_the_source_prefix(s3_endpoint, tmp_path):
    """The seeded bucket holds decoy analyses named like catalog tracks under other prefixes (other teams'
    data, and "analysis-backup", which shares the prefix as a string). Keys aimed at them are refused."""
    source = seed_source(s3_endpoint, tracks=30)
    rows = [dict(r) for r in source.rows]
    aimed = {
        rows[0]["track_id"]: f"../other-team/analysis/{rows[0]['track_id']}.json",
        rows[2]["track_id"]: f"/other-team/analysis/{rows[0]['track_id']}.json",
        rows[4]["track_id"]: f"x/../../{PREFIX}-backup/{rows[2]['track_id']}.json",
        rows[6]["track_id"]: f"..\\other-team\\analysis\\{rows[0]['track_id']}.json",
    }
    for row in rows:
        row["analysis_key"] = aimed.get(row["track_id"], row["analysis_key"])
    requested: list[str] = []
    recorder = FaultPlan({}, seed=0, path_filter=lambda path: requested.append(path) or False)
    wh = new_warehouse(tmp_path / "warehouse", rows)
    with FaultProxy(source.endpoint, recorder) as proxy, \
            luigi_config(overrides_for(tmp_path / "warehouse", source, proxy.url)):
        assert run_luigi([IngestFullSnapshot(date=FAULT_DATE)])
    assert len(requested) == len(rows) - len(aimed)
    assert all(p.startswith(f"/{source.bucket}/{PREFIX}/") for p in requested), \
        [p for p in requested if not p.startswith(f"/{source.bucket}/{PREFIX}/")]
    ledger = {e["track_id"]: e for e in dataset_records(wh, layout.LEDGER, FAULT_DATE)}
    for track_id in aimed:
        assert ledger[track_id]["outcome"] == "invalid", ledger.get(track_id)
        assert "escapes the source prefix" in ledger[track_id]["reason"] or \
            "is not a relative key" in ledger[track_id]["reason"]
    assert not set(aimed) & {r["track_id"] for r in dataset_records(wh, layout.ANALYSIS_FULL, FAULT_DATE)}


def test_symlinks_cannot_lead_a_file_source_outside_its_folder(tmp_path):
    sim = CatalogSimulation(seed=8, start_date=FAULT_DATE, initial_tracks=30, segments=12, late_ratio=0.0,
                            never_ratio=0.0, malformed_ratio=0.0)
    folder, outside = tmp_path / "source", tmp_path / "elsewhere"
    seed_local_folder(str(folder), sim, 0)
    rows = [dict(r) for r in sim.day(0).rows]
    plain = [r["track_id"] for r in rows[5:] if r["analysis_key"] is None]  # stored as <id>.json
    secret_doc = (folder / f"{plain[0]}.json").read_bytes()  # a valid analysis, but not ours
    outside.mkdir()
    (outside / "secret.json").write_bytes(secret_doc)
    os.symlink(outside / "secret.json", folder / "link-out.json")  # file symlink pointing outside
    os.symlink(outside, folder / "dir-out")  # folder symlink pointing outside
    os.symlink(folder / f"{plain[1]}.json", folder / "link-in.json")  # inside: allowed
    rows[2]["analysis_key"], rows[3]["analysis_key"] = "link-out.json", "dir-out/secret.json"
    rows[4]["analysis_key"] = "link-in.json"
    # the shipped failure_ratio: one bad link must not fail the chunk
    overrides = {"warehouse": {"buckets": 1, "root": f"file://{tmp_path / 'warehouse'}"},
                 "source": {"url": f"file://{folder}/", "concurrency": 2}}
    with luigi_config(overrides):
        wh = Warehouse.from_config()
        write_metadata_dump(wh.layout, wh.storage, FAULT_DATE, rows)
        assert run_luigi([IngestFullSnapshot(date=FAULT_DATE)])
    records = {r["track_id"]: r for r in dataset_records(wh, layout.ANALYSIS_FULL, FAULT_DATE)}
    ledger = {e["track_id"]: e for e in dataset_records(wh, layout.LEDGER, FAULT_DATE)}
    for row in rows[2:4]:
        assert row["track_id"] not in records
        assert ledger[row["track_id"]]["outcome"] == "invalid"
        assert "resolves outside" in ledger[row["track_id"]]["reason"]
    assert rows[4]["track_id"] in records, "a symlink that stays inside the folder is fine"
    assert set(records) == {r["track_id"] for r in rows} - {rows[2]["track_id"], rows[3]["track_id"]}
    assert orjson.loads(secret_doc)  # (the outside document was a perfectly valid analysis)


# -- servers bind loopback -----------------------------------------------------------------------------------


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_the_central_scheduler_listens_on_loopback_only(tmp_path):
    with running_scheduler(state_dir=tmp_path / "luigid") as endpoint:
        assert loopback_only(endpoint.port), listening_addresses(endpoint.port)


def test_the_s3_test_server_and_the_fault_proxy_listen_on_loopback_only(s3_endpoint):
    assert loopback_only(_port(s3_endpoint)), listening_addresses(_port(s3_endpoint))
    with FaultProxy(s3_endpoint) as proxy:
        assert loopback_only(_port(proxy.url)), listening_addresses(_port(proxy.url))


def test_the_serving_api_and_redis_listen_on_loopback_only(tmp_path):
    pytest.importorskip("uvicorn", reason="the [serving] extra is not installed")
    from pipeline.serving.api import running_service
    from pipeline.serving.redis_server import running_redis_server

    with running_redis_server(tmp_path / "redis") as url:
        assert loopback_only(_port(url)), listening_addresses(_port(url))
    with running_service({"store": "sqlite", "sqlite_path": str(tmp_path / "serving.sqlite")}, tmp_path / "index",
                         Path(tmp_path / "api.log")) as base:
        assert loopback_only(_port(base)), listening_addresses(_port(base))
