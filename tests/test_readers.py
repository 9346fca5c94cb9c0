"""Every file of the demo warehouse opens in the readers other teams use: polars, Apache avro, fastavro.

polars has its own (Rust) Avro decoder: it rejects a named type used twice ("OutOfSpec"), panics on
Avro maps and on files without records. The formats avoid all three (analysis format 3, attributes
format 2, no zero-record files); this reads every Avro file of ``make demo``'s warehouse (data
parts and ``_index`` files of every dataset, and the metadata dump) with each reader the project's
own setup installs, and compares row counts and a sample of rows, value for value, with fastavro.
"""

from __future__ import annotations

from pathlib import Path

import avro.datafile
import avro.io
import fastavro
import polars as pl

KINDS = {"analysis-full", "analysis-incremental", "analysis-ledger", "attributes", "catalog", "tracks",
         "analysis-full/_index/ids", "analysis-incremental/_index/ids", "attributes/_index/records",
         "analysis-full/_index/records", "analysis-incremental/_index/records"}


def _kind(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts  # <project>/<dataset>/<date>/[_index/]<file>
    dataset = parts[1]
    return f"{dataset}/_index/{path.name.split('-')[0]}" if "_index" in parts else dataset


def _sample(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})


def test_every_file_reads_the_same_in_polars_apache_avro_and_fastavro(deployment):
    root = deployment.root / "var" / "demo" / "warehouse"
    files = sorted(root.rglob("*.avro"))
    seen: dict[str, int] = {}
    for path in files:
        with open(path, "rb") as f:
            expected = list(fastavro.reader(f))
        assert expected, f"{path}: a file without records (some readers cannot open those)"
        with open(path, "rb") as f, avro.datafile.DataFileReader(f, avro.io.DatumReader()) as reader:
            apache = list(reader)
        frame = pl.read_avro(path)
        assert len(apache) == frame.height == len(expected), path
        for i in _sample(len(expected)):
            assert apache[i] == expected[i], f"{path} row {i}: Apache avro differs"
            assert frame.row(i, named=True) == expected[i], f"{path} row {i}: polars differs"
        kind = _kind(path, root)
        seen[kind] = seen.get(kind, 0) + len(expected)
    assert set(seen) == KINDS, f"datasets read: {sorted(seen)}"


def test_polars_sees_the_packed_columns_and_nested_records(deployment):
    """What another team does with the analysis: beats (no longer a reused type) and the packed segments."""
    import numpy as np

    part = sorted((deployment.warehouse / "analysis-full" / "2026-11-26").glob("part-*.avro"))[0]
    frame = pl.read_avro(part)
    row = frame.row(0, named=True)
    beats = np.frombuffer(row["beats"]["start"], "<f8")
    assert len(beats) == row["beats"]["count"] > 0 and (np.diff(beats) > 0).all()
    timbre = np.frombuffer(row["segments"]["timbre"], "<f4").reshape(-1, 12)
    assert timbre.shape[0] == row["segments"]["count"]
    attributes = pl.read_avro(sorted((deployment.warehouse / "attributes" / "2026-11-26").glob("part-*"))[0])
    assert attributes.schema["null_reasons"] == pl.List(pl.Struct({"field": pl.String, "reason": pl.String}))
