"""Analysis format 2 packs the sections; records of format 1 (sections as records) still read and upgrade."""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pytest

from pipeline.formats import raw_schema, schema
from pipeline.formats.analysis import SECTION_FIELDS, SECTION_REQUIRED, section_rows, to_document, to_record, upgrade
from pipeline.formats.arrays import arrays
from pipeline.source.document import decode_body, unwrap
from tests.helpers import real_analysis_files


def _format_1_schema() -> dict:
    """analysis.avsc as it was before sections were packed: an array of Section records."""
    raw = raw_schema("analysis")
    fields = [{"name": n, "type": t if n in SECTION_REQUIRED else ["null", t], **({} if n in SECTION_REQUIRED
               else {"default": None})} for n, t in SECTION_FIELDS.items()]
    section = next(f for f in raw["fields"] if f["name"] == "sections")
    section["type"] = {"type": "array", "items": {"type": "record", "name": "Section", "fields": fields}}
    return fastavro.parse_schema(raw)


def _as_format_1(record: dict) -> dict:
    rows = section_rows(record["sections"])
    return {**record, "sections": [{n: row.get(n) for n in SECTION_FIELDS} for row in rows]}


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


def test_format_1_records_read_back_the_same_document_and_upgrade_exactly(documents):
    old_schema = _format_1_schema()
    for i, doc in enumerate(documents):
        current = to_record(doc, track_id=f"{i:022d}", source_key="k", source_updated_at=i)
        buf = io.BytesIO()
        fastavro.writer(buf, old_schema, [_as_format_1(current)], codec="snappy")
        (old,) = list(fastavro.reader(io.BytesIO(buf.getvalue())))
        assert isinstance(old["sections"], list)
        assert to_document(old) == to_document(current)
        assert arrays(old).section_count == arrays(current).section_count == len(doc.get("sections", []))
        upgraded = upgrade(old)
        assert upgraded["sections"] == current["sections"]
        out = io.BytesIO()
        fastavro.writer(out, schema("analysis"), [upgraded], strict=True)  # what compaction writes
        assert upgrade(current) is current
