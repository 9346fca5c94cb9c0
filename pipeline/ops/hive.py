"""``python -m pipeline.ops.hive``: the warehouse's datasets as Hive / Spark SQL tables.

Each dataset is an external table partitioned by ``date``, ``STORED AS AVRO`` with the schema of
its ``.avsc`` file (``avro.schema.literal``), so the columns always follow the schema the
pipeline writes. A date folder of the layout (``<dataset>/2026-11-26/``) is not named
``date=2026-11-26``, so partitions are registered explicitly — one ``ALTER TABLE … ADD
PARTITION … LOCATION`` statement per table and day, printed by ``partitions``. Files and
folders starting with ``_`` (manifests, indexes, ``_SUCCESS``) are hidden from Hive readers.

::

    python -m pipeline.ops.hive ddl > tables.sql              # tables + every complete date
    python -m pipeline.ops.hive partitions --date 2026-11-26   # register one more day
    python -m pipeline.ops.hive query --ddl tables.sql "SELECT count(*) FROM echonest.attributes"

``query`` runs statements in a local Spark session (Hive support, metastore in ``--metastore``),
loopback only; on a cluster, feed the DDL to ``spark-sql -f`` or ``beeline -f`` instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from pipeline import formats, layout
from pipeline.errors import PipelineError
from pipeline.warehouse import Warehouse

# table name -> (dataset, schema); the analysis sets carry the full analysis schema (track-level
# fields are plain columns under ``track``; the packed arrays are binary columns)
TABLES = {
    "catalog": (layout.CATALOG, formats.CATALOG),
    "analysis_full": (layout.ANALYSIS_FULL, formats.ANALYSIS),
    "analysis_incremental": (layout.ANALYSIS_INCREMENTAL, formats.ANALYSIS),
    "analysis_ledger": (layout.LEDGER, formats.LEDGER),
    "attributes": (layout.ATTRIBUTES, formats.ATTRIBUTES),
}


def _without_docs(node):
    """The schema without ``doc`` strings (shorter literals, no quotes to escape in prose)."""
    if isinstance(node, dict):
        return {k: _without_docs(v) for k, v in node.items() if k != "doc"}
    if isinstance(node, list):
        return [_without_docs(v) for v in node]
    return node


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def location(url: str, s3_scheme: str = "s3") -> str:
    """A warehouse URL as the engine names it (``s3a://`` for Spark on Hadoop's S3A connector)."""
    return s3_scheme + url[2:] if url.startswith("s3://") else url


def create_table(wh: Warehouse, database: str, table: str, s3_scheme: str = "s3") -> str:
    dataset, schema_name = TABLES[table]
    schema = json.dumps(_without_docs(formats.raw_schema(schema_name)), separators=(",", ":"), sort_keys=True)
    return (f"CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{table}\n"
            f"PARTITIONED BY (`date` STRING)\n"
            f"STORED AS AVRO\n"
            f"LOCATION {_literal(location(wh.layout.dataset_url(dataset), s3_scheme))}\n"
            f"TBLPROPERTIES ('avro.schema.literal'={_literal(schema)});")


def add_partitions(wh: Warehouse, database: str, table: str, dates: list[dt.date], s3_scheme: str = "s3") -> str:
    """One statement registering ``dates`` (already published) as partitions of ``table``."""
    dataset = TABLES[table][0]
    parts = " ".join(f"PARTITION (`date`='{layout.format_date(d)}') "
                     f"LOCATION {_literal(location(wh.layout.date_url(dataset, d), s3_scheme))}" for d in dates)
    return f"ALTER TABLE {database}.{table} ADD IF NOT EXISTS {parts};"


def ddl(wh: Warehouse, database: str = "echonest", dates: list[dt.date] | None = None, s3_scheme: str = "s3"
        ) -> list[str]:
    """Every statement: the database, each table, and the complete dates (all, or those of ``dates``)."""
    out = [f"CREATE DATABASE IF NOT EXISTS {database};"]
    for table in TABLES:
        out.append(create_table(wh, database, table, s3_scheme))
    out.extend(partitions(wh, database, dates, s3_scheme))
    return out


def partitions(wh: Warehouse, database: str = "echonest", dates: list[dt.date] | None = None,
               s3_scheme: str = "s3") -> list[str]:
    """The statements registering the complete dates of every table (only the ``dates`` given, if any)."""
    out = []
    for table, (dataset, _) in TABLES.items():
        complete = wh.complete_dates(dataset)
        chosen = [d for d in complete if dates is None or d in dates]
        if chosen:
            out.append(add_partitions(wh, database, table, chosen, s3_scheme))
    return out


def split_statements(text: str) -> list[str]:
    """Statements of a DDL file as ``ddl`` writes them (each ends with ``;`` at the end of a line)."""
    out, current = [], []
    for line in text.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(current).strip().rstrip(";"))
            current = []
    if "".join(current).strip():
        out.append("\n".join(current).strip())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The warehouse's datasets as Hive / Spark SQL tables.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("ddl", "CREATE statements for every table, then the complete dates"),
                       ("partitions", "the statements registering dates (default: every complete one)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--date", action="append", type=layout.parse_date, help="only this date (repeatable)")
        p.add_argument("--database", default="echonest")
        p.add_argument("--s3-scheme", default="s3", choices=["s3", "s3a"],
                       help="scheme of s3:// locations (s3 on EMR, s3a for Spark/Hive with hadoop-aws)")
    q = sub.add_parser("query", help="run SQL in a local Spark session (Hive support), print rows tab-separated")
    q.add_argument("sql", nargs="+", help="statements to run; the last one's rows are printed")
    q.add_argument("--ddl", help="a file of statements (from `ddl`) to run first")
    q.add_argument("--metastore", default="var/spark", help="folder of the local metastore, warehouse and logs")
    args = parser.parse_args(argv)
    try:
        if args.command == "query":
            from pipeline.ops.spark_sql import local_spark, run_sql

            statements = split_statements(open(args.ddl, encoding="utf-8").read()) if args.ddl else []
            with local_spark(args.metastore) as spark:
                rows = run_sql(spark, statements + args.sql)
            for row in rows:
                print("\t".join("NULL" if v is None else str(v) for v in row))
            return 0
        wh = Warehouse.from_config()
        make = ddl if args.command == "ddl" else partitions
        print("\n\n".join(make(wh, args.database, args.date, args.s3_scheme)))
    except PipelineError as exc:
        print(f"hive: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
