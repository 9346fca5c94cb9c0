"""A chunk converted by worker processes ([ingest] processes) writes the same files as one process:
same records in the same (sorted) order, same ledger, byte for byte — bad documents included."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from tasks import AnalysisSet
from tests.helpers import luigi_config, run_luigi

DATE = dt.date(2026, 11, 26)


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for dataset in (layout.ANALYSIS_FULL, layout.LEDGER):
        folder = root / "echonest" / dataset / layout.format_date(DATE)
        out.update({str(p.relative_to(root)): p.read_bytes() for p in sorted(folder.rglob("*.avro"))})
    return out


def test_one_and_two_processes_write_identical_buckets(tmp_path):
    sim = CatalogSimulation(seed=8, start_date=DATE, initial_tracks=400, segments=12, malformed_ratio=0.05,
                            never_ratio=0.03)
    seed_local_folder(str(tmp_path / "source"), sim, 0)
    for processes in (1, 2):
        root = tmp_path / f"p{processes}"
        overrides = {"warehouse": {"root": f"file://{root}", "buckets": 3}, "source": {"url": f"file://{tmp_path}/source"},
                     "ingest": {"processes": processes, "failure_ratio": 0.5},
                     "pipeline": {"start_date": layout.format_date(DATE)}}
        with luigi_config(overrides):
            from pipeline.warehouse import Warehouse

            wh = Warehouse.from_config()
            write_metadata_dump(wh.layout, wh.storage, DATE, sim.day(0).rows)
            assert run_luigi([AnalysisSet(date=DATE)])
    one, two = _files(tmp_path / "p1"), _files(tmp_path / "p2")
    assert one and one.keys() == two.keys()
    assert all(one[name] == two[name] for name in one), [n for n in one if one[n] != two[n]]
    outcomes = {r["outcome"] for b in range(3) for r in wh.read_bucket(layout.LEDGER, DATE, b)}
    assert "invalid" in outcomes, "malformed documents must go through the worker processes too"


queue_dir = None


def _convert_in_child(queue) -> None:
    from pipeline.ingest.convert import may_use_processes
    from pipeline.ingest.engine import WorkItem, fetch_in_order
    from pipeline.source.catalog import CatalogRow
    from pipeline.source.local import LocalSource

    source = LocalSource(f"file://{queue_dir}")
    items = [WorkItem(CatalogRow("0" * 22, None, 1), "bad.json")]
    queue.put((may_use_processes(), [r.outcome for r in fetch_in_order(source, items, 2, 1 << 20, processes=2)]))


def test_a_child_forked_by_a_luigi_worker_converts_without_its_parents_pool(tmp_path):
    """luigi --workers 2 forks task processes; one must not wait forever on its parent's pool or forkserver."""
    import multiprocessing

    from pipeline.ingest.convert import converter_pool

    global queue_dir
    queue_dir = tmp_path
    (tmp_path / "bad.json").write_bytes(b"<html>not json")
    with converter_pool(2) as parents_pool:
        parents_pool.submit(int, "1").result(timeout=120)  # the parent's pool exists and works
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_convert_in_child, args=(queue,))
        child.start()
        child.join(180)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=10) == (False, ["invalid"])


class _HoldingSource:
    """Each download holds the whole budget until its document is converted; the first one is slow."""

    def __init__(self, body: bytes):
        from pipeline.source.base import RequestStats

        self.body, self.stats = body, RequestStats()

    def fetch(self, key: str, budget=None):
        import time

        from pipeline.source.base import OK, Fetched

        if key == "k0":
            time.sleep(0.3)  # the others finish first and take the budget
        return Fetched(OK, body=self.body, reservation=budget.admit(len(self.body), False))


def test_finished_downloads_never_hold_the_budget_while_the_first_is_still_coming():
    """At processes = 1 the consuming thread converts: it converts every finished download, in any order,
    so one waiting for room behind them cannot deadlock the chunk; results still come in order."""
    import threading

    import orjson

    from pipeline.demo.synthetic import synth_analysis
    from pipeline.ingest.engine import INGESTED, WorkItem, fetch_in_order
    from pipeline.source.catalog import CatalogRow

    body = orjson.dumps(synth_analysis(np.random.default_rng(1), "TR0", 120.0, 1, 1, 4, 20.0, 30))
    items = [WorkItem(CatalogRow(f"TR{i:020d}", None, 1), f"k{i}") for i in range(8)]
    results: list = []
    # budget: 2 × len(body); each document is charged its decoding peak, clamped to the whole budget
    runner = threading.Thread(target=lambda: results.extend(
        fetch_in_order(_HoldingSource(body), items, 2, len(body), processes=1)), daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "the chunk deadlocked on its memory budget"
    assert [r.item.key for r in results] == [f"k{i}" for i in range(8)]
    assert {r.outcome for r in results} == {INGESTED}
