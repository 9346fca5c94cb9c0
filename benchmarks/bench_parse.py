"""Parse + validate + pack per document: the orjson path vs the simdjson fast path (issue 17).

Old: ``decode_body`` + ``unwrap`` + ``to_record`` (orjson builds every number as a Python object).
New: ``body_to_record``, what the ingest calls now (``pipeline/formats/fastdecode.py``, the old path
as its fallback). Process CPU per document, the two alternating round by round so drift hits both;
the collector set as the ingest sets it (``relax_gc_for_documents``). ``--hold`` keeps the last N
results alive, as the ingest's download window does (16 = 2 × 8 in flight): documents that
overlap are what made orjson's parse cost 1.1–1.4 ms instead of 0.7 (docs/performance.md).

    python -m benchmarks.bench_parse [--docs 200] [--segments 300] [--hold 16] [--rounds 7]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time

import numpy as np
import orjson

from benchmarks.common import RESULTS
from pipeline.demo.synthetic import synth_analysis
from pipeline.formats.analysis import to_record
from pipeline.formats.fastdecode import fast_record
from pipeline.source.document import body_to_record, decode_body, unwrap
from pipeline.source.limits import relax_gc_for_documents
from tests.helpers import REAL_FIXTURES

CAP = 64 * 1024 * 1024


def synthetic_bodies(n: int, segments: int) -> list[bytes]:
    rng = np.random.default_rng(17)
    return [orjson.dumps(synth_analysis(rng, f"TRBENCH{i:011d}", float(rng.uniform(70, 170)), i % 12, i % 2, 4,
                                        float(rng.uniform(180, 260)), segments)) for i in range(n)]


def real_bodies() -> list[bytes]:
    return [p.read_bytes() for p in sorted(REAL_FIXTURES.glob("*.json")) if not p.name.endswith(".features.json")]


def old(body: bytes):
    doc = decode_body(body, key="t.json", max_bytes=CAP)
    analysis, wrapper = unwrap(doc)
    return doc, to_record(analysis, track_id="TRBENCH", source_key="t.json", wrapper=wrapper)


def new(body: bytes):
    return body_to_record(body, key="t.json", content_encoding=None, max_bytes=CAP, track_id="TRBENCH", updated=None)


def measure(bodies: list[bytes], hold: int, rounds: int) -> dict:
    """Best and median ms of CPU per document for each path, after checking they give the same records."""
    for body in bodies:
        assert old(body)[1] == new(body), "the fast path and the orjson path disagree"
    reps = max(1, 1000 // len(bodies))
    spent: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(rounds):
        for path in (old, new):
            held: collections.deque = collections.deque(maxlen=hold or None)
            t0 = time.process_time()
            for _ in range(reps):
                for body in bodies:
                    held.append(path(body)) if hold else path(body)
            spent[path.__name__].append((time.process_time() - t0) / (reps * len(bodies)) * 1e3)
            held.clear()
    out = {name: {"best_ms": min(v), "median_ms": sorted(v)[len(v) // 2]} for name, v in spent.items()}
    out["new_over_old_best"] = out["new"]["best_ms"] / out["old"]["best_ms"]
    out["new_over_old_median"] = out["new"]["median_ms"] / out["old"]["median_ms"]
    out["fast_path_documents"] = sum(fast_record(b, track_id="T", source_key="t.json") is not None for b in bodies)
    out["documents"] = len(bodies)
    out["mean_kB"] = sum(map(len, bodies)) / len(bodies) / 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--hold", type=int, default=16, help="results kept alive (0 and this value are both run)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    relax_gc_for_documents()
    sets = {"synthetic": synthetic_bodies(args.docs, args.segments), "real fixtures": real_bodies()}
    results = {"load_average_before": os.getloadavg(), "runs": []}
    for name, bodies in sets.items():
        for hold in sorted({0, args.hold}):
            row = {"set": name, "hold": hold, **measure(bodies, hold, args.rounds)}
            results["runs"].append(row)
            old_ms, new_ms = row["old"], row["new"]
            print(f"{name:14} hold {hold:2}: old {old_ms['best_ms']:.3f} ms (median {old_ms['median_ms']:.3f}), "
                  f"new {new_ms['best_ms']:.3f} ms (median {new_ms['median_ms']:.3f}); new/old "
                  f"{row['new_over_old_best']:.2f} best, {row['new_over_old_median']:.2f} median; "
                  f"{row['fast_path_documents']}/{row['documents']} docs on the fast path, {row['mean_kB']:.0f} kB",
                  flush=True)
    results["load_average_after"] = os.getloadavg()
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "parse.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
