"""Analysis format 2 packs the sections, format 3 has no map and no reused named type (polars reads it);
records of formats 1 (sections as records) and 2 (``extra`` as a map, bars' type reused) still read and upgrade."""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pytest

from pipeline.formats import raw_schema, schema
from pipeline.formats.analysis import (
    SECTION_FIELDS,
    SECTION_REQUIRED,
    extra_map,
    section_rows,
    to_document,
    to_record,
    upgrade,
)
from pipeline.formats.arrays import arrays
from pipeline.source.document import decode_body, unwrap
from tests.helpers import real_analysis_files
from tests.support.old_formats import analysis_format_2_raw


def _format_2_schema() -> dict:
    return fastavro.parse_schema(analysis_format_2_raw())


def _format_1_schema() -> dict:
    """analysis.avsc as it was before sections were packed: an array of Section records."""
    raw = analysis_format_2_raw()
    fields = [{"name": n, "type": t if n in SECTION_REQUIRED else ["null", t], **({} if n in SECTION_REQUIRED
               else {"default": None})} for n, t in SECTION_FIELDS.items()]
    section = next(f for f in raw["fields"] if f["name"] == "sections")
    section["type"] = {"type": "array", "items": {"type": "record", "name": "Section", "fields": fields}}
    return fastavro.parse_schema(raw)


def _as_format_2(record: dict) -> dict:
    return {**record, "extra": extra_map(record)}


def _as_format_1(record: dict) -> dict:
    rows = section_rows(record["sections"])
    return {**_as_format_2(record), "sections": [{n: row.get(n) for n in SECTION_FIELDS} for row in rows]}


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return [unwrap(decode_body(p.read_bytes()))[0] for p in real_analysis_files()]


def test_sections_are_packed_columns_with_nan_for_absent(documents):
    with_sections = [d for d in documents if d.get("sections")]
    assert with_sections
    for doc in with_sections:
        sections = to_record(doc, track_id="x" * 22, source_key="k")["sections"]
        assert sections["count"] == len(doc["sections"])
        starts = np.frombuffer(sections["start"], "<f8")
        assert starts.tolist() == [float(s["start"]) for s in doc["sections"]]
        keys = np.frombuffer(sections["key"], "<f8")
        assert [None if np.isnan(k) else int(k) for k in keys] == [s.get("key") for s in doc["sections"]]


@pytest.mark.parametrize("version, old_schema, as_old", [(1, _format_1_schema, _as_format_1),
                                                          (2, _format_2_schema, _as_format_2)])
def test_older_formats_read_back_the_same_document_and_upgrade_exactly(documents, version, old_schema, as_old):
    for i, doc in enumerate(documents):
        current = to_record(doc, track_id=f"{i:022d}", source_key="k", source_updated_at=i)
        buf = io.BytesIO()
        fastavro.writer(buf, old_schema(), [as_old(current)], codec="snappy")
        (old,) = list(fastavro.reader(io.BytesIO(buf.getvalue())))
        assert isinstance(old["sections"], list) == (version == 1) and isinstance(old["extra"], dict)
        assert to_document(old) == to_document(current)
        assert arrays(old).section_count == arrays(current).section_count == len(doc.get("sections", []))
        upgraded = upgrade(old)
        assert upgraded == current
        out = io.BytesIO()
        fastavro.writer(out, schema("analysis"), [upgraded], strict=True)  # what compaction writes
        assert upgrade(current) is current


PRIMITIVES = ("null", "string", "int", "long", "float", "double", "bytes", "boolean")


@pytest.mark.parametrize("name", ["analysis", "attributes", "catalog", "ids", "ledger", "record_index"])
def test_schemas_reuse_no_named_type_and_have_no_map(name):
    """What polars (and arrow-based readers) need: a named type reused for bars/beats/tatums is "OutOfSpec"
    to polars, and it panics on Avro maps."""
    names, maps = [], []

    def walk(t) -> None:
        if isinstance(t, list):
            for x in t:
                walk(x)
        elif isinstance(t, dict):
            if t.get("type") in ("record", "enum", "fixed"):
                names.append(t["name"])
            if t.get("type") == "map":
                maps.append(t)
            for f in t.get("fields", []):
                walk(f["type"])
            walk(t.get("items"))
        elif isinstance(t, str) and t not in PRIMITIVES:
            names.append(t)  # a reference to a named type

    walk(raw_schema(name))
    assert len(names) == len(set(names)) and not maps, names
