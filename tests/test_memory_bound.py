"""Memory follows configuration, not input: a chunk's peak RSS stays under its documented bound.

The bound (docs/reliability.md, pipeline/source/limits.py): the documents a chunk holds stay
under ``max(concurrency, EXPANSION) × max_document_bytes`` above the worker's baseline. The
source holds objects far over the cap (refused by their Content-Length, never read), gzip bombs
(inflation stopped at the cap), documents just under the cap and small ones. The chunk runs in a
process of its own, whose high-water mark (``getrusage``) is compared with the bound.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import orjson
import pytest

from pipeline.demo.s3server import s3_client
from pipeline.demo.synthetic import make_track_ids, synth_analysis
from pipeline.errors import InvalidDocumentError
from pipeline.source.limits import EXPANSION, GZIP_GUESS, BodyTooLarge, MemoryBudget, read_capped
from tests.support.fixtures_faults import PROJECT_ROOT

MAX = 2 * 1024 * 1024
CONCURRENCY = 20  # ≥ EXPANSION, so the bound is concurrency × max_document_bytes itself
OVERSIZED = 24 * 1024 * 1024


def _doc(rng, track_id: str, segments: int) -> bytes:
    return orjson.dumps(synth_analysis(rng, track_id, 120.0, 5, 1, 4, 200.0, segments, timestamp=1_700_000_000))


def _seed(endpoint: str, bucket: str) -> tuple[list, list, dict[str, str]]:
    """(warm-up items, items, expected outcome by track id) of a hostile source."""
    client = s3_client(endpoint)
    rng = np.random.default_rng(3)
    ids = make_track_ids(rng, 64)
    items, expect = [], {}

    def put(track_id: str, key: str, body: bytes, outcome: str, **extra) -> None:
        client.put_object(Bucket=bucket, Key=f"analysis/{key}", Body=body, **extra)
        items.append([track_id, key])
        expect[track_id] = outcome

    big = _doc(rng, ids[0], 6000)
    assert 0.6 * MAX < len(big) < MAX, len(big)
    for i in range(6):  # far over the cap: a whole one in memory would break the bound on its own
        put(ids[i], f"huge-{i}.json", b'{"segments": [], "pad": "' + b"x" * OVERSIZED + b'"}', "invalid")
    for i in range(6, 9):  # gzip bombs: a few kilobytes that inflate far past the cap
        put(ids[i], f"bomb-{i}.json.gz", gzip.compress(b'{"pad": "' + b" " * OVERSIZED + b'"}'), "invalid")
    for i in range(9, 21):  # just under the cap, plain and gzip
        body = _doc(rng, ids[i], 6000)
        if i % 3:
            put(ids[i], f"big-{i}.json", body, "ingested")
        else:
            put(ids[i], f"big-{i}.json.gz", gzip.compress(body), "ingested")
    for i in range(21, 60):
        put(ids[i], f"small-{i}.json", _doc(rng, ids[i], 200), "ingested")
    warmup = []
    for i in range(60, 64):
        client.put_object(Bucket=bucket, Key=f"analysis/warm-{i}.json", Body=_doc(rng, ids[i], 200))
        warmup.append([ids[i], f"warm-{i}.json"])
    return warmup, items, expect


def test_peak_rss_of_a_chunk_with_oversized_objects_stays_under_the_documented_bound(s3_endpoint, s3_bucket,
                                                                                     tmp_path):
    warmup, items, expect = _seed(s3_endpoint, s3_bucket)
    job = {"endpoint": s3_endpoint, "source_url": f"s3://{s3_bucket}/analysis/", "warehouse": str(tmp_path),
           "items": items, "warmup": warmup, "concurrency": CONCURRENCY, "max_document_bytes": MAX}
    done = subprocess.run([sys.executable, "-m", "tests.support.memory_chunk"], input=json.dumps(job), text=True,
                          capture_output=True, cwd=PROJECT_ROOT, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    bound = max(CONCURRENCY, EXPANSION) * MAX
    grew = report["peak"] - report["baseline"]
    print(f"[memory] peak RSS {grew / 2**20:.1f} MiB above a {report['baseline'] / 2**20:.0f} MiB baseline; "
          f"bound {bound / 2**20:.0f} MiB")
    assert grew < bound, f"peak RSS grew {grew / 2**20:.1f} MiB over the baseline, bound {bound / 2**20:.0f} MiB"
    outcomes = list(expect.values())
    assert report["counts"]["ingested"] == outcomes.count("ingested")
    assert report["counts"]["invalid"] == outcomes.count("invalid")


class _Stream:
    """A body stream that sends ``size`` bytes whatever its headers said, recording what was read."""

    def __init__(self, size: int):
        self.left, self.read_bytes = size, 0

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        self.left -= n
        self.read_bytes += n
        return b"x" * n


@pytest.mark.parametrize("declared", [None, 10, MAX])
def test_a_lying_or_absent_length_never_makes_a_read_go_past_the_cap(declared):
    stream = _Stream(50 * MAX)
    with pytest.raises(BodyTooLarge, match="over the cap; stopped reading"):
        read_capped(stream, MAX, declared)
    assert stream.read_bytes <= MAX + 1


def test_an_object_over_the_cap_is_refused_by_its_length_before_a_byte_is_read():
    stream = _Stream(50 * MAX)
    with pytest.raises(BodyTooLarge, match=r"\(Content-Length\), over the"):
        read_capped(stream, MAX, 50 * MAX)
    assert stream.read_bytes == 0
    budget = MemoryBudget(4, MAX)
    with pytest.raises(InvalidDocumentError, match="not downloaded"):
        budget.admit(MAX + 1, False)
    assert budget.used == 0


def test_the_budget_holds_concurrency_times_the_cap_and_charges_each_document_its_decoding_peak():
    budget = MemoryBudget(20, MAX)
    assert budget.total == 20 * MAX
    assert budget.cost(1000, False) == EXPANSION * 1000
    assert budget.cost(1000, True) == EXPANSION * GZIP_GUESS * 1000  # a first guess of its inflation
    assert budget.cost(None, False) == budget.cost(1000, True, worst=True) == EXPANSION * MAX  # size unknown
    assert budget.allowance(budget.admit(1000, True)) == GZIP_GUESS * 1000  # beyond it: charged the worst case
    small = MemoryBudget(2, MAX)
    assert small.cost(MAX, False) == small.total  # clamped: a document larger than the budget runs alone
    budget = MemoryBudget(20, MAX)
    held = [budget.admit(MAX, False)]
    assert budget.used == EXPANSION * MAX
    held[0].release()
    held[0].release()  # idempotent
    assert budget.used == 0 and budget.peak == EXPANSION * MAX
