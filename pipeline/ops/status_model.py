"""The warehouse status as data: one listing per dataset, one manifest per complete date shown.

Shared by the terminal view (:mod:`pipeline.ops.status`, which also holds the command line) and the
pictures (:mod:`pipeline.ops.status_render`, which imports matplotlib), so neither imports the other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pipeline import layout
from pipeline.errors import IncompleteDatasetError, PipelineError
from pipeline.manifest import Manifest
from pipeline.storage import join
from pipeline.warehouse import Warehouse

# (dataset, column title), in the order data flows through the pipeline.
COLUMNS: tuple[tuple[str, str], ...] = (
    (layout.TRACKS, "dump"), (layout.CATALOG, "catalog"), (layout.ANALYSIS_FULL, "analysis full"),
    (layout.ANALYSIS_INCREMENTAL, "analysis incr."), (layout.LEDGER, "ledger"), (layout.ATTRIBUTES, "attributes"))
ANALYSIS_SETS = (layout.ANALYSIS_FULL, layout.ANALYSIS_INCREMENTAL)
OUTCOMES = ("missing", "invalid", "failed")
KEYS = ("C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B")

COMPLETE, STAGED, ABSENT, UNREADABLE = "complete", "staged", "absent", "unreadable"
SYMBOLS = {STAGED: "…", ABSENT: "—", UNREADABLE: "!"}
LEGEND = ("1,234 complete, records from its manifest", "✓ complete (the dump has no manifest)",
          "… staged, not published (running, or a killed run)", "— absent", "! manifest unreadable")


@dataclass(frozen=True)
class Cell:
    """One dataset on one date."""

    state: str
    records: int | None = None
    manifest: Manifest | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        if self.state == COMPLETE:
            return "✓" if self.records is None else f"{self.records:,}"
        return SYMBOLS[self.state]


@dataclass(frozen=True)
class WarehouseStatus:
    """Everything the views show; built by :func:`collect`, rendered by text, PNG and HTML."""

    root: str
    dates: tuple[dt.date, ...]
    cells: dict[tuple[str, dt.date], Cell]
    attributes_date: dt.date | None = None
    attributes_manifest: Manifest | None = field(default=None, repr=False)

    def cell(self, dataset: str, date: dt.date) -> Cell:
        return self.cells[(dataset, date)]

    def outcomes(self, date: dt.date) -> dict[str, int] | None:
        """missing/invalid/failed of the analysis published on ``date`` (full and incremental summed)."""
        manifests = [c.manifest for d in ANALYSIS_SETS if (c := self.cell(d, date)).manifest is not None]
        if not manifests:
            return None
        return {k: sum(m.counts.get(k, 0) for m in manifests) for k in OUTCOMES}

    @property
    def summary(self) -> dict | None:
        """The latest attributes snapshot's histograms (``None`` when it has none)."""
        return self.attributes_manifest.summary or None if self.attributes_manifest else None


def _read_manifest(wh: Warehouse, dataset: str, date: dt.date) -> Cell:
    # The listing already proved completeness: read the manifest straight away (no exists() first).
    try:
        manifest = wh.load_manifest(dataset, date)
    except IncompleteDatasetError:
        return Cell(UNREADABLE)
    return Cell(COMPLETE, manifest.records, manifest)


def _listings(wh: Warehouse) -> dict[str, tuple[set[dt.date], set[dt.date]]]:
    """(complete, staged) dates of every dataset: two listings each, whatever the range."""
    out = {}
    for dataset, _ in COLUMNS:
        complete = set(wh.complete_dates(dataset))
        staging = join(wh.layout.dataset_url(dataset), layout.TEMPORARY)
        staged = set(layout.dates_in(wh.storage.list_names(staging))) if dataset != layout.TRACKS else set()
        out[dataset] = (complete, staged)
    return out


def collect(wh: Warehouse, start: dt.date | None = None, end: dt.date | None = None,
            days: int = 7) -> WarehouseStatus:
    """Read the status of ``start``..``end`` (default: the ``days`` dates up to the latest one seen)."""
    listed = _listings(wh)
    if end is None:
        seen = [d for complete, staged in listed.values() for d in complete | staged]
        if not seen:
            raise PipelineError(f"the warehouse {wh.layout.root} holds no dataset dates yet; give --from/--to")
        end = max(seen)
    start = start or end - dt.timedelta(days=days - 1)
    if start > end:
        raise PipelineError(f"--from {start} is after --to {end}")
    dates = tuple(start + dt.timedelta(days=i) for i in range((end - start).days + 1))
    cells: dict[tuple[str, dt.date], Cell] = {}
    for dataset, (complete, staged) in listed.items():
        for date in dates:
            if date in complete and dataset == layout.TRACKS:
                # A dump folder is written in place (no rename): only its _SUCCESS says it is whole.
                cells[(dataset, date)] = Cell(COMPLETE if wh.is_complete(dataset, date) else STAGED)
            elif date in complete:
                cells[(dataset, date)] = _read_manifest(wh, dataset, date)
            else:
                cells[(dataset, date)] = Cell(STAGED if date in staged else ABSENT)
    attributes = sorted(d for d in listed[layout.ATTRIBUTES][0] if d <= end)
    latest, manifest = (attributes[-1], None) if attributes else (None, None)
    if latest is not None:
        cell = cells.get((layout.ATTRIBUTES, latest)) or _read_manifest(wh, layout.ATTRIBUTES, latest)
        manifest = cell.manifest
    return WarehouseStatus(wh.layout.root, dates, cells, latest, manifest)



def _bars(labels: list[str], counts: list[int], width: int = 40) -> list[str]:
    top = max(counts, default=0) or 1
    pad = max(map(len, labels), default=0)
    return [f"  {label.rjust(pad)} │{'█' * round(width * n / top):<{width}} {n:,}"
            for label, n in zip(labels, counts, strict=True)]


def tempo_labels(edges: list[float]) -> list[str]:
    return [f"{lo:g}–{hi:g}" for lo, hi in zip(edges, edges[1:], strict=False)]


def render_distributions(status: WarehouseStatus) -> list[str]:
    if status.attributes_date is None:
        return [f"Attributes: no complete snapshot up to {status.dates[-1]}."]
    head = f"Attributes {status.attributes_date} (latest complete snapshot up to {status.dates[-1]})"
    records = status.attributes_manifest.records if status.attributes_manifest else None
    head += f": {records:,} tracks" if records is not None else ""
    summary = status.summary
    if summary is None:
        return [head, "  its manifest carries no summary (written before summaries existed): no histograms."]
    lines = [head]
    tempo = summary.get("tempo_histogram")
    if tempo:
        lines += ["tempo (BPM)", *_bars(tempo_labels(tempo["edges"]), tempo["counts"])]
    if summary.get("key_histogram"):
        lines += ["key", *_bars(list(KEYS), summary["key_histogram"])]
    if summary.get("mode_counts"):
        minor, major = summary["mode_counts"]
        lines.append(f"mode   minor {minor:,} · major {major:,}")
    return lines
