"""Schemas of earlier warehouse formats, rebuilt from today's, for upgrade tests and format benchmarks."""

from __future__ import annotations

from pipeline.formats import raw_schema


def analysis_format_2_raw() -> dict:
    """analysis.avsc of format 2: beats and tatums reuse the bars' ``TimeIntervals``, ``extra`` is a map."""
    raw = raw_schema("analysis")
    for f in raw["fields"]:
        if f["name"] in ("beats", "tatums"):
            f["type"] = "TimeIntervals"
        elif f["name"] == "extra":
            f["type"], f["default"] = {"type": "map", "values": "string"}, {}
    return raw
