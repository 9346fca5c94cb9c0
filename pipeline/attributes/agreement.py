"""How well the computed tempo and key agree with the analyzer's own values, over JSON analysis files.

Why: the analyzer's ``track.tempo`` and ``track.key`` are the only ground truth real data
offers, so the demo, the docs and the tests all report this comparison; keeping it in one
place means they print the same numbers. Usage: ``python -m pipeline.attributes.agreement FILE...``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from pipeline.attributes.maths import DEFAULT_PROFILE, compute
from pipeline.formats.analysis import to_record
from pipeline.formats.arrays import arrays
from pipeline.source.document import decode_body, unwrap

TEMPO_TOLERANCE = 0.02  # relative: |beat_tempo - tempo| / tempo
KEY_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_PLACEHOLDER_ID = "0" * 22  # analysis files do not carry their track id; the comparison does not need it


def attributes_of_file(path: Path, *, profile: str = DEFAULT_PROFILE) -> dict:
    """Decode one JSON analysis (plain, gzip or wrapped) and compute its attributes record."""
    doc, wrapper = unwrap(decode_body(Path(path).read_bytes(), key=str(path)))
    record = to_record(doc, track_id=_PLACEHOLDER_ID, source_key=Path(path).name, wrapper=wrapper)
    return compute(arrays(record), profile=profile)


def _row(name: str, attrs: dict) -> dict:
    """One track's comparison; ``None`` in a ``*_ok`` field means "not comparable" (a side is missing)."""
    tempo, beat = attrs["tempo"], attrs["beat_tempo"]
    key, est = attrs["key"], attrs["estimated_key"]
    mode, est_mode = attrs["mode"], attrs["estimated_mode"]
    tempo_ok = None if not tempo or beat is None else abs(beat - tempo) / tempo <= TEMPO_TOLERANCE
    key_ok = None if key is None or est is None else key == est
    key_mode_ok = None if key_ok is None or mode is None else key_ok and mode == est_mode
    return {"file": name, "tempo": tempo, "beat_tempo": beat, "tempo_ok": tempo_ok,
            "key": key, "mode": mode, "estimated_key": est, "estimated_mode": est_mode,
            "key_estimate_confidence": attrs["key_estimate_confidence"], "key_ok": key_ok, "key_mode_ok": key_mode_ok}


def _share(rows: list[dict], field: str) -> float | None:
    """Fraction of comparable rows where ``field`` is True (None when no row is comparable)."""
    flags = [r[field] for r in rows if r[field] is not None]
    return sum(flags) / len(flags) if flags else None


def agreement(files: Iterable[Path | str], *, profile: str = DEFAULT_PROFILE) -> dict:
    """Agreement of the computed attributes with the analyzer over JSON analysis files.

    Returns
    -------
    dict
        ``count`` (files), ``tempo_within_2pct``, ``key_agreement`` and ``key_mode_agreement``
        (fractions 0..1 over the comparable files, None if none), ``profile``, and ``tracks``:
        one row per file with both sides of each comparison.
    """
    rows = [_row(Path(f).name, attributes_of_file(Path(f), profile=profile)) for f in files]
    return {"count": len(rows), "profile": profile, "tempo_within_2pct": _share(rows, "tempo_ok"),
            "key_agreement": _share(rows, "key_ok"), "key_mode_agreement": _share(rows, "key_mode_ok"),
            "tracks": rows}


def _key_label(key: int | None, mode: int | None) -> str:
    if key is None:
        return "-"
    return KEY_NAMES[key] + {1: " major", 0: " minor"}.get(mode, "")


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(result: dict) -> str:
    """The per-file comparison and the totals as a Markdown table (for the docs and the demo)."""
    lines = ["| file | analyzer tempo | beat tempo | Δ % | analyzer key | estimated key | r |",
             "|---|---:|---:|---:|---|---|---:|"]
    for r in result["tracks"]:
        delta = None if r["tempo_ok"] is None else 100 * (r["beat_tempo"] - r["tempo"]) / r["tempo"]
        key_mark = "" if r["key_mode_ok"] else (" (key ✓, mode ✗)" if r["key_ok"] else " ✗")
        lines.append(f"| {r['file']} | {_num(r['tempo'], 3)} | {_num(r['beat_tempo'], 2)} | {_num(delta, 2)} | "
                     f"{_key_label(r['key'], r['mode'])} | {_key_label(r['estimated_key'], r['estimated_mode'])}"
                     f"{key_mark} | {_num(r['key_estimate_confidence'], 3)} |")
    pct = {k: _num(None if result[k] is None else 100 * result[k], 1)
           for k in ("tempo_within_2pct", "key_agreement", "key_mode_agreement")}
    lines.append("")
    lines.append(f"{result['count']} files, profile {result['profile']}: "
                 f"tempo within 2 %: {pct['tempo_within_2pct']} %, key: {pct['key_agreement']} %, "
                 f"key and mode: {pct['key_mode_agreement']} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the agreement table of the files given on the command line."""
    args = sys.argv[1:] if argv is None else argv
    profile = DEFAULT_PROFILE
    if args and args[0].startswith("--profile="):
        profile, args = args[0].split("=", 1)[1], args[1:]
    files = [p for p in args if not p.endswith(".features.json")]
    if not files:
        print("usage: python -m pipeline.attributes.agreement [--profile=NAME] FILE.json...", file=sys.stderr)
        return 2
    print(markdown_table(agreement(files, profile=profile)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
