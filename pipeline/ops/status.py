"""What the warehouse holds, date by date, read from listings and manifests only.

Why: an operator's first question ("did last night's run publish everything, and how many
tracks went missing?") must be answered in seconds on a warehouse of terabytes. So this view
never opens a data file: it makes one listing per dataset (plus one of its staging folder, to
tell a date being built from an absent one) and reads one ``_manifest.json`` per complete date
shown. Record counts, missing/invalid/failed counts and the attribute histograms all come from
manifests.

::

    python -m pipeline.ops.status --from 2026-11-20 --to 2026-11-26 [--png status.png] [--html status.html]

The external metadata dump has no manifest and is not published by an atomic rename, so its
dates are checked for ``_SUCCESS`` one by one and shown without a count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from pipeline import layout
from pipeline.errors import PipelineError
from pipeline.ops.status_model import (  # noqa: F401 - re-exported: the status view's API
    ABSENT,
    COLUMNS,
    COMPLETE,
    LEGEND,
    OUTCOMES,
    STAGED,
    UNREADABLE,
    Cell,
    WarehouseStatus,
    collect,
    render_distributions,
)
from pipeline.warehouse import Warehouse


# -- terminal ---------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]], sep_after: int | None = None) -> list[str]:
    """Right-aligned columns (the first left-aligned), an optional │ before column ``sep_after``."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cols = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
        if sep_after is not None:
            cols.insert(sep_after, "│")
        lines.append("  ".join(cols).rstrip())
    return lines


def render_text(status: WarehouseStatus) -> str:
    """The grid (dates down, datasets across, then the analysis outcomes), its legend and the histograms."""
    header = ["date", *(title for _, title in COLUMNS), *OUTCOMES]
    rows = []
    for date in status.dates:
        outcomes = status.outcomes(date)
        rows.append([f"{date} {date:%a}", *(status.cell(d, date).text for d, _ in COLUMNS),
                     *(f"{outcomes[k]:,}" if outcomes else "" for k in OUTCOMES)])
    lines = [f"Warehouse {status.root}   {status.dates[0]} … {status.dates[-1]}", "",
             *_table(header, rows, sep_after=1 + len(COLUMNS)), "",
             f"Legend: {' · '.join(LEGEND[:2])}", f"        {' · '.join(LEGEND[2:])}",
             "Right of │: tracks missing from the source, invalid documents and failed downloads,",
             "           from the analysis manifests (full and incremental) of the date.", "",
             *render_distributions(status)]
    return "\n".join(lines) + "\n"


def _date(text: str) -> dt.date:
    try:
        return layout.parse_date(text)
    except PipelineError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.status", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="start", type=_date, help="first date (default: 6 days before --to)")
    parser.add_argument("--to", dest="end", type=_date, help="last date (default: the latest date in the warehouse)")
    parser.add_argument("--root", help="warehouse root URL (default: [warehouse] root of luigi.cfg)")
    parser.add_argument("--png", help="also draw the status as a PNG picture here")
    parser.add_argument("--html", help="also write a static HTML page here")
    args = parser.parse_args(argv)
    try:
        status = collect(_warehouse(args.root), args.start, args.end)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render_text(status))
    if args.png or args.html:
        from pipeline.ops import status_render  # matplotlib is only imported when a picture is asked for

        if args.png:
            status_render.write_png(status, args.png)
            print(f"wrote {args.png}")
        if args.html:
            status_render.write_html(status, args.html)
            print(f"wrote {args.html}")
    return 0


def _warehouse(root: str | None) -> Warehouse:
    if root is None:
        return Warehouse.from_config()
    from pipeline import config
    from pipeline.layout import Layout
    from pipeline.storage import storage_for

    cfg = config.warehouse()
    lay = Layout(root, cfg.project, cfg.metadata_project)
    return Warehouse(lay, storage_for(lay.root, cfg.s3_endpoint_url))


if __name__ == "__main__":
    sys.exit(main())
