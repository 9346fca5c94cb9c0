"""The metadata dump: duplicates resolved by a total order, 0 a timestamp, a mistyped column a CatalogError.

The order (pipeline/source/catalog.py ``dump_order``, docs/formats.md): of a track's rows the one
with the newest ``analysis_updated_at`` wins (null is older than any time, 0 included); among
equal times the greatest ``analysis_key`` (null lowest). It never depends on which part file of
the dump a row sits in, so the same dump gives the same catalog however the exporter split it.
"""

from __future__ import annotations

import datetime as dt

import fastavro
import pytest

from pipeline import layout
from pipeline.demo.seed import write_metadata_dump
from pipeline.errors import CatalogError
from pipeline.formats import raw_schema
from pipeline.layout import Layout
from pipeline.source.catalog import build_catalog
from pipeline.storage import LocalStorage, join
from pipeline.warehouse import Warehouse

DATE = dt.date(2026, 11, 26)
A, B, C = "A" * 22, "B" * 22, "C" * 22


def _row(track_id: str, key: str | None, updated: int | None) -> dict:
    return {"track_id": track_id, "analysis_key": key, "analysis_updated_at": updated, "title": None, "artist": None}


ROWS = [
    _row(A, "a-old.json", 100), _row(A, "a-tie-1.json", 200), _row(A, "a-tie-2.json", 200), _row(A, None, 200),
    _row(B, "b-null.json", None), _row(B, "b-zero.json", 0),
    _row(C, None, None), _row(C, "c.json", None),
]


def _catalog(tmp_path, name: str, rows: list[dict]) -> dict[str, tuple]:
    wh = Warehouse(Layout(f"file://{tmp_path / name}"), LocalStorage())
    write_metadata_dump(wh.layout, wh.storage, DATE, rows, rows_per_part=1)  # one part file per row
    manifest = build_catalog(wh, DATE, 2)
    assert manifest.rejected["duplicate_id"] == len(rows) - 3
    return {r["track_id"]: (r["analysis_key"], r["analysis_updated_at"])
            for b in range(2) for r in wh.read_bucket(layout.CATALOG, DATE, b)}


def test_duplicates_resolve_by_a_total_order_whatever_the_part_files_order(tmp_path):
    forward = _catalog(tmp_path, "forward", ROWS)
    backward = _catalog(tmp_path, "backward", ROWS[::-1])
    shifted = _catalog(tmp_path, "shifted", ROWS[3:] + ROWS[:3])
    assert forward == backward == shifted
    assert forward == {A: ("a-tie-2.json", 200), B: ("b-zero.json", 0), C: ("c.json", None)}


@pytest.mark.parametrize(("column", "avro_type", "value"), [
    ("analysis_updated_at", "string", "2026-11-26T00:00:00Z"),
    ("analysis_updated_at", "double", 1.7e9),
    ("analysis_key", "long", 42),
])
def test_a_dump_column_of_the_wrong_avro_type_is_a_catalog_error_naming_it(tmp_path, column, avro_type, value):
    wh = Warehouse(Layout(f"file://{tmp_path}"), LocalStorage())
    schema = raw_schema("tracks")
    for field in schema["fields"]:
        if field["name"] == column:
            field["type"] = ["null", avro_type]
    folder = wh.layout.date_url(layout.TRACKS, DATE)
    with wh.storage.atomic_writer(join(folder, "part-00000.avro")) as f:
        fastavro.writer(f, fastavro.parse_schema(schema), [{**_row(A, "a.json", 1), column: value}])
    wh.storage.write_bytes(join(folder, layout.SUCCESS), b"")
    with pytest.raises(CatalogError, match=f"metadata dump column {column} holds {value!r}"):
        build_catalog(wh, DATE, 2)
    assert not wh.is_complete(layout.CATALOG, DATE)
