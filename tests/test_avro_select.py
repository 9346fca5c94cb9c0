"""read_selected: exactly the flagged records, in order, for every codec; blocks without one are skipped."""

from __future__ import annotations

import random

import fastavro
import numpy as np
import pytest

from pipeline.attributes.changed import changed_flags
from pipeline.errors import CorruptFileError
from pipeline.formats.avro_select import read_selected
from pipeline.storage import LocalStorage

SCHEMA = {"type": "record", "name": "r", "fields": [{"name": "track_id", "type": "string"},
                                                     {"name": "v", "type": {"type": "array", "items": "double"}}]}


def _write(path, n: int, codec: str) -> list[dict]:
    records = [{"track_id": f"{i:06d}", "v": [float(i)] * (i % 7)} for i in range(n)]
    with open(path, "wb") as f:
        fastavro.writer(f, SCHEMA, records, codec=codec, sync_interval=200)  # many small blocks
    return records


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy"])
def test_selected_records_equal_those_of_a_full_read(tmp_path, codec):
    records = _write(tmp_path / "f.avro", 500, codec)
    rnd = random.Random(3)
    wanted = [rnd.random() < 0.03 for _ in records]
    got = list(read_selected(LocalStorage(), f"file://{tmp_path / 'f.avro'}", wanted))
    assert got == [r for r, w in zip(records, wanted, strict=True) if w]
    assert 0 < len(got) < len(records)


def test_nothing_wanted_decodes_nothing_and_all_wanted_decodes_all(tmp_path):
    records = _write(tmp_path / "f.avro", 300, "snappy")
    url = f"file://{tmp_path / 'f.avro'}"
    assert list(read_selected(LocalStorage(), url, [False] * 300)) == []
    assert list(read_selected(LocalStorage(), url, [True] * 300)) == records


def test_flags_that_do_not_match_the_file_are_corruption(tmp_path):
    _write(tmp_path / "f.avro", 100, "deflate")
    url = f"file://{tmp_path / 'f.avro'}"
    with pytest.raises(CorruptFileError):
        list(read_selected(LocalStorage(), url, [True] * 99))
    with pytest.raises(CorruptFileError):
        list(read_selected(LocalStorage(), url, [True] * 101))


def test_changed_flags_mark_new_and_re_analysed_tracks_only():
    index = [(np.array([b"a", b"b"]), np.array([1.0, 2.0])), (np.array([b"c", b"e"]), np.array([3.0, np.nan]))]
    previous = [(np.array([b"a", b"b"]), np.array([1.0, 1.0])),  # record index parts, as read_columns gives them
                (np.array([b"d", b"e"]), np.array([4.0, np.nan]))]
    assert list(changed_flags(index, previous)) == [False, True, True, False]
    assert list(changed_flags(index, [])) == [True] * 4
    assert list(changed_flags([], previous)) == []
