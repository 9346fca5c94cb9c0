"""The warehouse status view: counts from manifests, states from listings, and never a data file opened.

The warehouse mixes one real ingest (Luigi tasks on a tiny ``file://`` source) with dates
published through the Warehouse commit/publish API, a staged-only date, a dump without
``_SUCCESS``, an unreadable manifest and attribute snapshots with and without a summary.
"""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline import layout
from pipeline.demo.seed import seed_local_folder, write_metadata_dump
from pipeline.demo.synthetic import CatalogSimulation
from pipeline.layout import Layout
from pipeline.manifest import BucketManifest
from pipeline.ops import status as status_mod
from pipeline.ops.status import collect, render_text
from pipeline.storage import LocalStorage
from pipeline.warehouse import Warehouse
from tasks import IngestFullSnapshot
from tests.helpers import luigi_config, run_luigi

D = {n: dt.date(2026, 11, n) for n in range(20, 27)}
BUCKETS = 2
SUMMARY = {"tempo_histogram": {"edges": [60, 90, 120, 150, 180], "counts": [3, 9, 5, 1]},
           "key_histogram": [4, 0, 2, 1, 3, 2, 0, 5, 1, 0, 0, 0], "mode_counts": [7, 11]}
INCREMENTAL_COUNTS = {"ingested": 1234, "missing": 7, "invalid": 3, "failed": 1, "retried": 4}


class CountingStorage(LocalStorage):
    """Local storage that records every call, to prove the view reads manifests only."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _note(self, name: str, url: str) -> None:
        self.calls.append((name, url))

    def exists(self, url):
        self._note("exists", url)
        return super().exists(url)

    def list_names(self, url):
        self._note("list_names", url)
        return super().list_names(url)

    def list_files(self, url):
        self._note("list_files", url)
        return super().list_files(url)

    def open_read(self, url):
        self._note("open_read", url)
        return super().open_read(url)


def _publish(wh: Warehouse, dataset: str, date: dt.date, schema: str, records: list[int], counts: dict | None = None,
             **extra) -> dict:
    """Publish a date through the commit protocol, with bucket manifests naming no data file."""
    for bucket, n in enumerate(records):
        wh.commit_bucket(dataset, date, BucketManifest(bucket, n, 0, [], counts=counts if bucket == 0 else None))
    return wh.publish(dataset, date, schema, len(records), **extra)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Warehouse:
    root = tmp_path_factory.mktemp("status")
    sim = CatalogSimulation(seed=4, start_date=D[24], initial_tracks=50, segments=10, never_ratio=0.06,
                            late_ratio=0.0, malformed_ratio=0.06)
    seed_local_folder(str(root / "source"), sim, 0)
    wh = Warehouse(Layout(f"file://{root / 'warehouse'}"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, D[24], sim.day(0).rows)
    overrides = {"warehouse": {"buckets": BUCKETS, "root": wh.layout.root},
                 "source": {"url": f"file://{root / 'source'}/"},
                 "ingest": {"failure_ratio": 0.5}}
    with luigi_config(overrides):
        assert run_luigi([IngestFullSnapshot(date=D[24])])
    write_metadata_dump(wh.layout, wh.storage, D[25], sim.day(0).rows)
    write_metadata_dump(wh.layout, wh.storage, D[26], sim.day(0).rows)
    wh.storage.remove(wh.layout.success_url(layout.TRACKS, D[26]))  # a dump still being written
    _publish(wh, layout.CATALOG, D[25], "catalog", [700, 600])
    _publish(wh, layout.ANALYSIS_INCREMENTAL, D[25], "analysis", [1000, 234], INCREMENTAL_COUNTS, kind="incremental")
    _publish(wh, layout.LEDGER, D[25], "ledger", [6, 5])
    wh.commit_bucket(layout.ANALYSIS_INCREMENTAL, D[26], BucketManifest(0, 5, 0, []))  # staged only
    _publish(wh, layout.CATALOG, D[23], "catalog", [1, 1])
    wh.storage.write_bytes(wh.layout.manifest_url(layout.CATALOG, D[23]), b"{not json")
    _publish(wh, layout.ATTRIBUTES, D[24], "attributes", [20, 22])  # an old snapshot: no summary
    _publish(wh, layout.ATTRIBUTES, D[25], "attributes", [9, 9], summary=SUMMARY)
    return wh


def _row(text: str, date: dt.date) -> list[str]:
    """The cells of a date's line in the grid (after the date and weekday)."""
    line = next(line for line in text.splitlines() if line.startswith(str(date)))
    return line.split()[2:]


def test_grid_counts_match_the_manifests(warehouse):
    wh = warehouse
    text = render_text(collect(wh, D[20], D[26]))
    full = wh.manifest(layout.ANALYSIS_FULL, D[24])
    catalog = wh.manifest(layout.CATALOG, D[24])
    ledger = wh.manifest(layout.LEDGER, D[24])
    attributes = wh.manifest(layout.ATTRIBUTES, D[24])
    assert full.counts["missing"] > 0 and full.counts["invalid"] > 0  # the source exercised the ledger
    #                     dump catalog        full                  incr ledger              attributes
    assert _row(text, D[24]) == ["✓", f"{catalog.records:,}", f"{full.records:,}", "—",
                                 f"{ledger.records:,}", f"{attributes.records:,}", "│",
                                 *(f"{full.counts[k]:,}" for k in ("missing", "invalid", "failed"))]
    assert _row(text, D[25]) == ["✓", "1,300", "—", "1,234", "11", "18", "│", "7", "3", "1"]
    assert _row(text, D[26]) == ["…", "—", "—", "…", "—", "—", "│"]
    assert _row(text, D[23]) == ["—", "!", "—", "—", "—", "—", "│"]
    for n in (20, 21, 22):
        assert _row(text, D[n]) == ["—"] * 6 + ["│"]
    assert "Legend:" in text and "… staged" in text


def test_grid_is_aligned(warehouse):
    lines = render_text(collect(warehouse, D[20], D[26])).splitlines()
    grid = lines[2:10]  # header + 7 dates
    assert len({line.index("│") for line in grid}) == 1
    assert all(len(line) <= 120 for line in lines)


def test_latest_attributes_histograms_are_shown(warehouse):
    status = collect(warehouse, D[20], D[26])
    assert status.attributes_date == D[25] and status.summary == SUMMARY
    text = render_text(status)
    assert "Attributes 2026-11-25 (latest complete snapshot up to 2026-11-26): 18 tracks" in text
    tempo = [line for line in text.splitlines() if "90–120 │" in line]
    assert tempo and tempo[0].rstrip().endswith("█ 9") and tempo[0].count("█") == 40  # the tallest bar
    assert "mode   minor 7 · major 11" in text
    assert any(line.strip().startswith("G │") and line.endswith(" 5") for line in text.splitlines())


def test_an_attributes_snapshot_without_summary_is_reported(warehouse):
    text = render_text(collect(warehouse, D[20], D[24]))
    assert "Attributes 2026-11-24" in text
    assert "carries no summary" in text and "tempo (BPM)" not in text


def test_reads_manifests_only_with_one_listing_per_dataset(warehouse):
    counting = CountingStorage()
    wh = Warehouse(warehouse.layout, counting)
    collect(wh, D[20], D[26])
    opened = [url for name, url in counting.calls if name == "open_read"]
    assert not [u for u in opened if u.endswith(".avro")]
    assert all(u.endswith("/" + layout.MANIFEST) for u in opened)
    assert len(opened) == len(set(opened)) == 9  # catalog 3, full 1, incr 1, ledger 2, attributes 2
    listings = [url for name, url in counting.calls if name.startswith("list_")]
    assert len(listings) == 2 * len(status_mod.COLUMNS) - 1  # dataset + staging each; the dump has no staging
    exists = [url for name, url in counting.calls if name == "exists"]
    assert exists == [warehouse.layout.success_url(layout.TRACKS, d) for d in (D[24], D[25], D[26])]


def test_png_and_html(warehouse, tmp_path):
    from pipeline.ops import status_render

    status = collect(warehouse, D[20], D[26])
    png = status_render.write_png(status, tmp_path / "status.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] >= 1000 and image.size[1] >= 700
    page = status_render.write_html(status, tmp_path / "status.html").read_text()
    for needle in ("1,234", "1,300", '<td class="staged">…</td>', '<td class="unreadable">!</td>', "90–120",
                   "minor 7 · major 11"):
        assert needle in page, needle


def test_cli_defaults_to_the_week_up_to_the_latest_date(warehouse, tmp_path, capsys):
    assert status_mod.main(["--root", warehouse.layout.root, "--png", str(tmp_path / "s.png"),
                            "--html", str(tmp_path / "s.html")]) == 0
    out = capsys.readouterr().out
    assert f"{D[20]} … {D[26]}" in out
    assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "s.html").stat().st_size > 0


def test_cli_rejects_a_reversed_range_and_an_empty_warehouse(tmp_path, capsys):
    root = f"file://{tmp_path / 'empty'}"
    assert status_mod.main(["--root", root, "--from", "2026-11-26", "--to", "2026-11-20"]) == 1
    assert "is after" in capsys.readouterr().err
    assert status_mod.main(["--root", root]) == 1
    assert "holds no dataset dates yet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        status_mod.main(["--root", root, "--from", "2026-13-01"])
