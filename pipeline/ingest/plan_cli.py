"""``echonest-plan --date D``: the dry run an operator reads before paying for an ingest."""

from __future__ import annotations

import argparse
import json
import sys

from pipeline import config, layout
from pipeline.errors import PipelineError
from pipeline.ingest.plan import Prices, as_json, format_plan, plan
from pipeline.layout import parse_date
from pipeline.source import source_from_config
from pipeline.source.catalog import SortSettings, build_catalog
from pipeline.warehouse import Warehouse


def _prices() -> Prices:
    c = config.costs()
    return Prices(c.get_per_1000, c.list_per_1000, c.transfer_per_gb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--date", required=True, help="date of the metadata dump, YYYY-MM-DD")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        date = parse_date(args.date)
        wh = Warehouse.from_config()
        # The bucketed catalog is cheap (local work on the dump); build it if it is not there yet,
        # exactly as the CatalogSnapshot task would (an ingest later finds it complete).
        if not wh.is_complete(layout.CATALOG, date):
            build_catalog(wh, date, config.warehouse().buckets,
                          SortSettings(config.catalog().sort_memory_mb, config.catalog().max_open_runs))
        chunks = plan(wh, source_from_config(), date, config.warehouse().buckets,
                      config.source().key_template, _prices())
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(chunks), indent=1) if args.json else format_plan(chunks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
