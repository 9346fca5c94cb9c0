"""Files assembled from copied and newly encoded records read back equal, with fastavro and Apache avro."""

from __future__ import annotations

import avro.datafile
import avro.io
import pytest

from pipeline.formats.avro_io import read_records, write_file
from pipeline.formats.avro_raw import RawRollingWriter, _long, read_raw
from pipeline.storage import LocalStorage


def test_zigzag_longs():
    assert [_long(n) for n in (0, -1, 1, 63, -64, 64)] == [b"\x00", b"\x01", b"\x02", b"\x7e", b"\x7f", b"\x80\x01"]


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy"])
def test_copied_and_new_records_round_trip(tmp_path, codec):
    storage = LocalStorage()
    source = f"file://{tmp_path}/source.avro"
    records = [{"track_id": f"{n:022d}", "source_updated_at": n * 1000} for n in range(3000)]
    write_file(storage, source, "ids", records[:2000], codec)
    copied = list(read_raw(storage, source))
    assert [r for r, _, _ in copied] == records[:2000] and len({fp for _, _, fp in copied}) == 1
    writer = RawRollingWriter(storage, lambda p: f"file://{tmp_path}/out-{p}.avro", "ids", codec, 1200, "test/ids")
    for _, raw, _ in copied:
        writer.write_raw(raw)
    for record in records[2000:]:
        writer.write(record)
    parts = writer.close()
    assert [p.records for p in parts] == [1200, 1200, 600]
    back = [r for p in range(3) for r in read_records(storage, f"file://{tmp_path}/out-{p}.avro")]
    assert back == records
    with open(tmp_path / "out-1.avro", "rb") as f, avro.datafile.DataFileReader(f, avro.io.DatumReader()) as reader:
        assert list(reader) == records[1200:2400]
    assert sum(p.bytes for p in parts) == sum((tmp_path / f"out-{p}.avro").stat().st_size for p in range(3))
