"""Pictures of the warehouse status: a PNG (matplotlib, Agg) and a static HTML page.

Why separate from :mod:`pipeline.ops.status`: matplotlib takes a second to import and the
terminal view must stay instant; both renderers take the same :class:`WarehouseStatus`, so
the picture, the page and the terminal always show the same numbers.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display, works on a headless scheduler host

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipeline.ops.status_model import (  # noqa: E402
    ABSENT,
    COLUMNS,
    COMPLETE,
    KEYS,
    LEGEND,
    OUTCOMES,
    STAGED,
    UNREADABLE,
    WarehouseStatus,
    render_distributions,
    tempo_labels,
)

STATES = (COMPLETE, STAGED, ABSENT, UNREADABLE)
COLOURS = {COMPLETE: "#4caf50", STAGED: "#ffb300", ABSENT: "#eceff1", UNREADABLE: "#e53935"}
LABELS = {COMPLETE: "complete", STAGED: "staged, not published", ABSENT: "absent", UNREADABLE: "manifest unreadable"}
OUTCOME_COLOURS = {"missing": "#90a4ae", "invalid": "#ffb300", "failed": "#e53935"}


def _grid(ax, status: WarehouseStatus) -> None:
    """Datasets down, dates across; colour is the state, the text the record count."""
    matrix = [[STATES.index(status.cell(d, date).state) for date in status.dates] for d, _ in COLUMNS]
    ax.imshow(matrix, cmap=ListedColormap([COLOURS[s] for s in STATES]), vmin=-0.5, vmax=len(STATES) - 0.5,
              aspect="auto")
    for y, (dataset, _) in enumerate(COLUMNS):
        for x, date in enumerate(status.dates):
            cell = status.cell(dataset, date)
            ax.text(x, y, cell.text, ha="center", va="center", fontsize=9,
                    color="white" if cell.state in (COMPLETE, UNREADABLE) else "#37474f")
    ax.set_xticks(range(len(status.dates)), [f"{d:%a}\n{d}" for d in status.dates], fontsize=8)
    ax.set_yticks(range(len(COLUMNS)), [title for _, title in COLUMNS])
    ax.set_xticks([x - 0.5 for x in range(1, len(status.dates))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(COLUMNS))], minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="both", length=0)
    ax.set_title(f"Warehouse {status.root} · {status.dates[0]} … {status.dates[-1]}", loc="left", fontsize=10)
    ax.legend(handles=[Patch(color=COLOURS[s], label=LABELS[s]) for s in STATES], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _outcomes(ax, status: WarehouseStatus) -> None:
    labels = [f"{d:%m-%d}" for d in status.dates]
    bottom = [0] * len(status.dates)
    for kind in OUTCOMES:
        values = [(status.outcomes(d) or {}).get(kind, 0) for d in status.dates]
        ax.bar(labels, values, bottom=bottom, color=OUTCOME_COLOURS[kind], label=kind)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title("tracks not ingested, by date", fontsize=10)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, frameon=False)
    ax.tick_params(axis="x", labelsize=7, rotation=45)


def _histograms(ax_tempo, ax_key, status: WarehouseStatus) -> None:
    summary = status.summary or {}
    tempo, keys, modes = summary.get("tempo_histogram"), summary.get("key_histogram"), summary.get("mode_counts")
    when = f" · attributes {status.attributes_date}" if status.attributes_date else ""
    if tempo:
        edges = tempo["edges"]
        ax_tempo.bar(edges[:-1], tempo["counts"], width=[b - a for a, b in zip(edges, edges[1:], strict=False)],
                     align="edge", color="#5c6bc0", edgecolor="white")
        ax_tempo.set_xlabel("BPM", fontsize=8)
    ax_tempo.set_title(f"tempo{when}", fontsize=10)
    if keys:
        ax_key.bar(KEYS, keys, color="#26a69a")
    mode = f" · minor {modes[0]:,} / major {modes[1]:,}" if modes else ""
    ax_key.set_title(f"key{mode}", fontsize=10)
    for ax, present in ((ax_tempo, tempo), (ax_key, keys)):
        if not present:
            ax.text(0.5, 0.5, "no attribute summary" if status.attributes_date else "no attributes snapshot",
                    ha="center", va="center", transform=ax.transAxes, color="#78909c")
            ax.set_xticks([])
            ax.set_yticks([])


def write_png(status: WarehouseStatus, path: str | os.PathLike) -> Path:
    """Draw the grid over the outcome bars and the attribute histograms; returns the path."""
    width = max(11.0, 3.2 + 1.05 * len(status.dates))
    fig = plt.figure(figsize=(width, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[1.1, 1])
    _grid(fig.add_subplot(grid[0, :]), status)
    _outcomes(fig.add_subplot(grid[1, 0]), status)
    _histograms(fig.add_subplot(grid[1, 1]), fig.add_subplot(grid[1, 2]), status)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#263238}
table{border-collapse:collapse}td,th{padding:.3em .7em;text-align:right;border:1px solid #fff}
th:first-child,td:first-child{text-align:left}.sep{border-left:2px solid #90a4ae}
""" + "".join(f".{s}{{background:{c}}}" for s, c in COLOURS.items()) + ".complete,.unreadable{color:#fff}\n"


def write_html(status: WarehouseStatus, path: str | os.PathLike) -> Path:
    """A self-contained page: the coloured grid with outcome counts, and the histograms as text."""
    esc = html.escape
    head = "".join(f"<th>{esc(title)}</th>" for _, title in COLUMNS)
    head += "".join(f'<th{" class=sep" if i == 0 else ""}>{k}</th>' for i, k in enumerate(OUTCOMES))
    rows = []
    for date in status.dates:
        cells = "".join(f'<td class="{c.state}">{esc(c.text)}</td>'
                        for c in (status.cell(d, date) for d, _ in COLUMNS))
        outcomes = status.outcomes(date)
        cells += "".join(f'<td{" class=sep" if i == 0 else ""}>{f"{outcomes[k]:,}" if outcomes else ""}</td>'
                         for i, k in enumerate(OUTCOMES))
        rows.append(f"<tr><td>{date} {date:%a}</td>{cells}</tr>")
    page = (f"<!doctype html>\n<html><head><meta charset=utf-8><title>echonest warehouse status</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>Warehouse status</h1>\n<p>{esc(status.root)} · "
            f"{status.dates[0]} … {status.dates[-1]}</p>\n<table><tr><th>date</th>{head}</tr>\n" + "\n".join(rows)
            + f"\n</table>\n<p>{esc(' · '.join(LEGEND))}</p>\n<h2>Attribute distributions</h2>\n"
            f"<pre>{esc(chr(10).join(render_distributions(status)))}</pre>\n</body></html>\n")
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)


__all__ = ["write_png", "write_html", "tempo_labels"]
