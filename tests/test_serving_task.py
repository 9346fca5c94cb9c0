"""``PublishAttributes`` end to end with Luigi's local scheduler, in a temp warehouse and store."""

from __future__ import annotations

import datetime as dt
import sys
import types

import luigi
import pytest

from pipeline import layout
from pipeline.serving.stores import store_from_config
from tasks.base import success_target
from tests.helpers import luigi_config
from tests.serving_support import DAY1, DAY2, attribute_records, make_warehouse, write_snapshot


class FakeDailyAttributes(luigi.ExternalTask):
    """Stands in for tasks.attributes.DailyAttributes (built elsewhere): done when the date is published."""

    date = luigi.DateParameter()

    def output(self):
        return success_target(layout.ATTRIBUTES, self.date)


@pytest.fixture
def world(tmp_path, monkeypatch):
    module = types.ModuleType("tasks.attributes")
    module.DailyAttributes = FakeDailyAttributes
    monkeypatch.setitem(sys.modules, "tasks.attributes", module)
    overrides = {"warehouse": {"root": f"file://{tmp_path / 'warehouse'}"},
                 "serving": {"store": "sqlite", "sqlite_path": str(tmp_path / "serving.sqlite"),
                             "index_dir": str(tmp_path / "index"), "batch_size": 50}}
    with luigi_config(overrides):
        wh = make_warehouse(tmp_path / "warehouse")
        write_snapshot(wh, DAY1, attribute_records(120, 1))
        write_snapshot(wh, DAY2, attribute_records(80, 2))
        yield wh


def build(task: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")


def test_publish_attributes_task(world):
    from tasks.serving import PublishAttributes

    assert not PublishAttributes(DAY1).complete()
    assert build(PublishAttributes(DAY1)).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    assert PublishAttributes(DAY1).complete()
    with store_from_config() as store:
        assert store.active_version() == layout.format_date(DAY1) and store.records_of("2026-11-26") == 120
    assert build(PublishAttributes(DAY2)).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    # An older day stays complete once superseded: rerunning it must not roll readers back.
    assert PublishAttributes(DAY1).complete()
    assert "1 complete ones were encountered" in build(PublishAttributes(DAY1)).summary_text  # nothing ran
    with store_from_config() as store:
        assert store.active_version() == layout.format_date(DAY2)
        assert store.versions() == ["2026-11-26", "2026-11-27"]


def test_missing_snapshot_is_not_published(world):
    from tasks.serving import PublishAttributes

    later = DAY2 + dt.timedelta(days=5)
    assert build(PublishAttributes(later)).status == luigi.execution_summary.LuigiStatusCode.MISSING_EXT
    with store_from_config() as store:
        assert store.active_version() is None
