"""Hostile documents against the real ingest: every outcome is ``ingested`` (values read back equal) or
``invalid`` with a reason; never a crash, a hang, a blocked day, or RSS above the documented bound.

The documents come from tests/support/hostile.py (numbers at and past every type's limits, wrong
types at every level, huge arrays, deep nesting, encodings). They sit in a loopback S3 bucket
beside as many good documents; one chunk ingests them in a process of its own (a timeout catches
a hang, the exit status a crash), publishes through the quality gate, and reports its peak RSS.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import orjson

from pipeline import layout
from pipeline.demo.s3server import s3_client
from pipeline.demo.synthetic import make_track_ids, synth_analysis
from pipeline.formats.analysis import META_FIELDS, SECTION_FIELDS, TRACK_FIELDS, to_document
from pipeline.layout import Layout
from pipeline.source.limits import EXPANSION
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tests.helpers import assert_close
from tests.support.fixtures_faults import PROJECT_ROOT
from tests.support.hostile import INGESTED, INVALID, hostile_documents

DATE = dt.date(2026, 11, 26)
MAX = 4 * 1024 * 1024
CONCURRENCY = 8


def _normalised(analysis: dict) -> dict:
    """What a reader gets back: a known summary field that is null reads back as absent."""
    out = dict(analysis)
    for section, fields in (("meta", META_FIELDS), ("track", TRACK_FIELDS)):
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if not (k in fields and v is None)}
    for key, fields in (("segments", ("loudness_end",)), ("sections", SECTION_FIELDS)):  # optional item fields
        if isinstance(out.get(key), list):
            out[key] = [{k: v for k, v in s.items() if not (k in fields and v is None)} for s in out[key]]
    return out


def test_hostile_documents_are_ingested_equal_or_ledgered_with_a_reason_never_a_crash(s3_endpoint, s3_bucket,
                                                                                       tmp_path):
    rng = np.random.default_rng(8)
    good = orjson.loads(orjson.dumps(synth_analysis(rng, "x", 120.0, 5, 1, 4, 60.0, 12, timestamp=1_700_000_000)))
    cases = hostile_documents(good)
    ids = make_track_ids(rng, 2 * len(cases) + 2)
    client = s3_client(s3_endpoint)
    items, by_id = [], {}
    for i, (name, body, expected, must) in enumerate(cases):
        key = f"hostile/{i:04d}.json.gz" if name.startswith("gzip") else f"hostile/{i:04d}.json"
        client.put_object(Bucket=s3_bucket, Key=f"analysis/{key}", Body=body)
        items.append([ids[i], key])
        by_id[ids[i]] = (name, expected, must)
    for j, track_id in enumerate(ids[len(cases):-2]):  # as many good documents: the shipped invalid_ratio holds
        client.put_object(Bucket=s3_bucket, Key=f"analysis/good/{j}.json", Body=orjson.dumps(good))
        items.append([track_id, f"good/{j}.json"])
        by_id[track_id] = ("good", good, INGESTED)
    warmup = []
    for track_id in ids[-2:]:
        client.put_object(Bucket=s3_bucket, Key=f"analysis/warm/{track_id}.json", Body=orjson.dumps(good))
        warmup.append([track_id, f"warm/{track_id}.json"])

    job = {"endpoint": s3_endpoint, "source_url": f"s3://{s3_bucket}/analysis/", "warehouse": str(tmp_path),
           "items": items, "warmup": warmup, "concurrency": CONCURRENCY, "max_document_bytes": MAX, "publish": True}
    done = subprocess.run([sys.executable, "-m", "tests.support.memory_chunk"], input=json.dumps(job), text=True,
                          capture_output=True, cwd=PROJECT_ROOT, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]  # no crash (a hang would have hit the timeout)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    bound = max(CONCURRENCY, EXPANSION) * MAX
    assert report["peak"] - report["baseline"] < bound, (report, bound)
    print(f"[hostile] {len(cases)} cases, peak RSS {(report['peak'] - report['baseline']) / 2**20:.1f} MiB above "
          f"the baseline, bound {bound / 2**20:.0f} MiB, counts {report['counts']}")

    wh = Warehouse(Layout(f"file://{tmp_path}/run"), LocalStorage())
    assert wh.is_complete(layout.ANALYSIS_FULL, DATE), "the day must publish"
    records = {r["track_id"]: r for r in wh.read_bucket(layout.ANALYSIS_FULL, DATE, 0)}
    ledger = {e["track_id"]: e for e in wh.read_bucket(layout.LEDGER, DATE, 0)}
    assert set(records) | set(ledger) == set(by_id) and not set(records) & set(ledger)
    outcomes, wrong = {INGESTED: 0, INVALID: 0}, []
    for track_id, (name, expected, must) in by_id.items():
        if track_id in records:
            outcomes[INGESTED] += 1
            if must == INVALID or expected is None:
                wrong.append(f"{name}: ingested, but it must be refused")
                continue
            try:
                assert_close(_normalised(expected), to_document(records[track_id]), name)
            except AssertionError as exc:
                wrong.append(f"{name}: read back different: {str(exc)[:200]}")
        else:
            outcomes[INVALID] += 1
            entry = ledger[track_id]
            if entry["outcome"] != INVALID or must == INGESTED or len(entry["reason"]) < 10:
                wrong.append(f"{name}: {entry['outcome']} ({entry['reason']})")
    assert wrong == []
    assert outcomes[INGESTED] > len(cases) and outcomes[INVALID] > len(cases) // 4, outcomes
