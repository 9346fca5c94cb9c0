"""``echonest-plan --date D``: the dry run an operator reads before paying for an ingest."""

from __future__ import annotations

import argparse
import json
import sys

import luigi

from pipeline import config
from pipeline.errors import PipelineError
from pipeline.ingest.plan import Prices, as_json, format_plan, plan
from pipeline.layout import parse_date
from pipeline.source import source_from_config
from pipeline.warehouse import Warehouse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--date", required=True, help="date of the metadata dump, YYYY-MM-DD")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        date = parse_date(args.date)
        # The bucketed catalog is cheap (local work on the dump); build it if it is not there yet.
        from tasks.ingest import CatalogSnapshot

        if not luigi.build([CatalogSnapshot(date=date)], local_scheduler=True, log_level="WARNING"):
            print(f"error: could not build the catalog of {args.date}", file=sys.stderr)
            return 2
        chunks = plan(Warehouse.from_config(), source_from_config(), date, config.ingest().chunks,
                      config.source().key_template, Prices.from_config())
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(chunks), indent=1) if args.json else format_plan(chunks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
