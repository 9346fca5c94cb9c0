"""The layout's exact paths, and one storage contract run against local disk and S3 (moto on loopback)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from pipeline import layout
from pipeline.bucketing import bucket_of, is_track_id, track_id_problem
from pipeline.errors import InvalidDocumentError, LayoutError
from pipeline.layout import Layout
from pipeline.manifest import BucketManifest
from pipeline.source.base import key_for, safe_relative_key
from pipeline.storage import LocalStorage, S3Storage, join, storage_for, target_for
from pipeline.warehouse import Warehouse

D = dt.date(2026, 11, 26)


def test_paths_are_pinned():
    lay = Layout("s3://wh/root", "echonest", "metadata")
    assert lay.date_url(layout.ANALYSIS_FULL, D) == "s3://wh/root/echonest/analysis-full/2026-11-26"
    assert lay.date_url(layout.ANALYSIS_INCREMENTAL, D, staging=True) == \
        "s3://wh/root/echonest/analysis-incremental/_temporary/2026-11-26"
    assert lay.part_url(layout.ATTRIBUTES, D, 7, 1, staging=False) == \
        "s3://wh/root/echonest/attributes/2026-11-26/part-00007-0001.avro"
    assert lay.index_url(layout.ANALYSIS_FULL, D, 3) == \
        "s3://wh/root/echonest/analysis-full/_temporary/2026-11-26/_index/ids-00003.avro"
    assert lay.success_url(layout.LEDGER, D) == "s3://wh/root/echonest/analysis-ledger/2026-11-26/_SUCCESS"
    assert lay.date_url(layout.TRACKS, D) == "s3://wh/root/metadata/tracks/2026-11-26"
    with pytest.raises(LayoutError, match="unknown dataset"):
        lay.dataset_url("nope")


def test_dates_parse_strictly():
    assert layout.parse_date("2026-11-26") == D
    for bad in ("2026-13-01", "26-11-2026", "2026-02-30", "yesterday"):
        with pytest.raises(LayoutError, match=bad):
            layout.parse_date(bad)
    assert layout.dates_in(["2026-11-25", "_temporary", "2026-11-24", "x"]) == [dt.date(2026, 11, 24),
                                                                                dt.date(2026, 11, 25)]


def test_relative_file_root_is_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Layout("file://./wh").root == f"file://{tmp_path}/wh"


def test_url_factory_picks_the_target_class(tmp_path):
    from luigi import LocalTarget
    from luigi.contrib.hdfs import HdfsTarget
    from luigi.contrib.s3 import S3Target

    assert isinstance(target_for(f"file://{tmp_path}/x"), LocalTarget)
    assert isinstance(target_for("s3://bucket/key"), S3Target)
    assert isinstance(target_for("hdfs://namenode:8020/wh/x"), HdfsTarget)
    assert join("s3://b/", "/a/", "b") == "s3://b/a/b"


def test_bucketing_is_stable_and_spread():
    assert bucket_of("7nWUDDCpTDYle0Ppi8i5K1", 20) == bucket_of("7nWUDDCpTDYle0Ppi8i5K1", 20)
    # CRC-32 (IEEE) pinned: changing the function would re-bucket the whole warehouse
    assert bucket_of("7nWUDDCpTDYle0Ppi8i5K1", 20) == 369945211 % 20 == 11
    counts = [0] * 20
    for n in range(20000):
        counts[bucket_of(f"{n:022d}", 20)] += 1
    assert min(counts) > 800 and max(counts) < 1200
    assert is_track_id("7nWUDDCpTDYle0Ppi8i5K1") and not is_track_id("7nWUDDCpTDYle0Ppi8i5K") \
        and not is_track_id("7nWUDDCpTDYle0Ppi8i5K/")


@pytest.mark.parametrize("key", ["../x.json", "a/../../x.json", "/etc/passwd", "a\\..\\b", ""])
def test_keys_cannot_escape_the_source_prefix(key):
    with pytest.raises(InvalidDocumentError):
        safe_relative_key(key)


def test_key_template_and_dump_keys():
    assert key_for("7nWUDDCpTDYle0Ppi8i5K1", None, "{shard}/{track_id}.json") == "7n/7nWUDDCpTDYle0Ppi8i5K1.json"
    assert key_for("7nWUDDCpTDYle0Ppi8i5K1", "x/y.json.gz", "{track_id}.json") == "x/y.json.gz"


@pytest.mark.parametrize("key, phrase", [
    ("x/./y.json.gz", "'.' or '..' segment"), ("sub/../x.json", "'.' or '..' segment"),
    ("a//b.json", "empty, '.' or '..' segment"), ("x/", "segment"), ("../x.json", "escapes the source prefix"),
    ("sub/../../x.json", "escapes the source prefix"), ("/abs.json", "not a relative key"),
    ("a\\b.json", "not a relative key"), ("a\nb.json", "control characters")])
def test_dump_keys_are_used_literally_or_refused_with_a_reason_never_normalised(key, phrase):
    """S3 keys are literal: a normalised key would fetch another object than the one the catalog names."""
    with pytest.raises(InvalidDocumentError, match=re.escape(phrase)):
        key_for("7nWUDDCpTDYle0Ppi8i5K1", key, "{track_id}.json")


@pytest.mark.parametrize("value", ["7nWUDDCpTDYle0Ppi8i5K1\n", "\n7nWUDDCpTDYle0Ppi8i5K1", "7nWUDDCpTDYle0Ppi8i5K1 ",
                                   "7nWUDDCpTDYle0Ppi8i5K\t", "7nWUDDCpTDYle0Ppi8i5K\x00"])
def test_track_ids_are_matched_whole_and_whitespace_or_control_characters_named(value):
    assert not is_track_id(value)
    assert "whitespace or control characters" in track_id_problem(value)
    assert track_id_problem("7nWUDDCpTDYle0Ppi8i5K1") is None


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStorage(), f"file://{tmp_path}/store"
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return S3Storage(endpoint_url=endpoint), f"s3://{bucket}/store"


def test_storage_contract(store):
    storage, root = store
    url = join(root, "a", "b.bin")
    assert not storage.exists(url) and storage.list_names(join(root, "a")) == []
    storage.write_bytes(url, b"hello")
    assert storage.exists(url) and storage.read_bytes(url) == b"hello" and storage.size(url) == 5
    storage.write_bytes(join(root, "a", "c", "d.bin"), b"x")
    assert storage.list_names(join(root, "a")) == ["b.bin", "c"]
    assert storage.list_files(join(root, "a")) == ["b.bin", "c/d.bin"]
    with pytest.raises(RuntimeError), storage.atomic_writer(join(root, "a", "never.bin")) as f:
        f.write(b"partial")
        raise RuntimeError("writer died")
    assert not storage.exists(join(root, "a", "never.bin"))
    storage.write_bytes(join(root, "a", "_SUCCESS"), b"")
    storage.move_tree(join(root, "a"), join(root, "moved"), last="_SUCCESS")
    assert not storage.exists(join(root, "a", "b.bin"))
    assert storage.list_files(join(root, "moved")) == ["_SUCCESS", "b.bin", "c/d.bin"]
    storage.remove(join(root, "moved"))
    storage.remove(join(root, "moved"))  # idempotent
    assert storage.list_files(root) == []


def test_warehouse_on_an_s3_root_by_configuration_alone(s3_endpoint, s3_bucket):
    from pipeline.formats.avro_io import read_records, write_file
    from tests.helpers import luigi_config

    with luigi_config({"warehouse": {"root": f"s3://{s3_bucket}/wh", "s3_endpoint_url": s3_endpoint}}):
        wh = Warehouse.from_config()
    assert isinstance(wh.storage, S3Storage)
    records = [{"track_id": f"{n:022d}", "source_updated_at": n} for n in range(5)]
    info = write_file(wh.storage, wh.layout.index_url(layout.ANALYSIS_FULL, D, 0), "ids", records)
    wh.commit_bucket(layout.ANALYSIS_FULL, D, BucketManifest(0, 5, info.bytes, []))
    manifest = wh.publish(layout.ANALYSIS_FULL, D, "ids", buckets=1)
    assert manifest.records == 5 and wh.complete_dates(layout.ANALYSIS_FULL) == [D]
    assert list(read_records(wh.storage, wh.layout.file_url(layout.ANALYSIS_FULL, D, "_index/ids-00000.avro"))) \
        == records
    assert storage_for("file:///x").__class__ is LocalStorage


def test_each_storage_states_what_the_commit_protocol_may_rely_on():
    from pipeline.storage import HdfsStorage, Storage

    assert (LocalStorage.atomic_rename, HdfsStorage.atomic_rename, S3Storage.atomic_rename) == (True, True, False)
    assert LocalStorage.consistent_listing and HdfsStorage.consistent_listing and S3Storage.consistent_listing
    assert not (Storage.atomic_rename or Storage.consistent_listing), "a new storage must start from the safe side"


class _NoRename(LocalStorage):
    """Local disk behaving like an object store: the warehouse must follow the capability, not the URL."""

    atomic_rename = False


class _NoGuarantees(_NoRename):
    consistent_listing = False


def test_complete_dates_trust_folder_names_only_where_folders_appear_by_atomic_rename(tmp_path):
    root = f"file://{tmp_path}"
    for storage in (LocalStorage(), _NoRename()):
        wh = Warehouse(Layout(root), storage)
        wh.commit_bucket(layout.CATALOG, D, BucketManifest(0, 0, 0, []))
        wh.publish(layout.CATALOG, D, "catalog", buckets=1)
    stray = Layout(root).date_url(layout.CATALOG, D + dt.timedelta(days=1))
    LocalStorage().write_bytes(join(stray, "part-00000-0000.avro"), b"half a copy, no _SUCCESS")
    assert Warehouse(Layout(root), LocalStorage()).complete_dates(layout.CATALOG) == [D, D + dt.timedelta(days=1)]
    assert Warehouse(Layout(root), _NoRename()).complete_dates(layout.CATALOG) == [D]


def test_a_storage_without_rename_or_consistent_listing_cannot_publish(tmp_path):
    from pipeline.errors import StorageError

    wh = Warehouse(Layout(f"file://{tmp_path}"), _NoGuarantees())
    wh.commit_bucket(layout.CATALOG, D, BucketManifest(0, 0, 0, []))
    with pytest.raises(StorageError, match="neither rename a folder atomically nor list consistently"):
        wh.publish(layout.CATALOG, D, "catalog", buckets=1)
    assert not wh.is_complete(layout.CATALOG, D)


def test_concurrent_atomic_writers_sharing_a_folder_never_lose_their_temporary_folder(tmp_path):
    """Writers remove the shared ``_temporary`` folder once empty; another writer must still get its file."""
    import threading

    storage = LocalStorage()
    errors: list[Exception] = []

    def write(n: int) -> None:
        for i in range(300):
            try:
                storage.write_bytes(f"file://{tmp_path}/f-{n}-{i}", b"x")
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(tmp_path.glob("f-*"))) == 8 * 300
