"""Test helpers: configuration overrides, the shared real fixtures, deep float comparison."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import luigi
import luigi.configuration
import luigi.task_register

SHARED = Path(os.environ.get("ECHONEST_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REAL_FIXTURES = SHARED / "fixtures" / "echonest-real"


def real_analysis_files() -> list[Path]:
    """The real analysis documents (audio-features files excluded); fails loudly when absent."""
    files = sorted(p for p in REAL_FIXTURES.glob("*.json") if not p.name.endswith(".features.json"))
    assert files, f"no real fixtures under {REAL_FIXTURES} (CI keeps ../shared beside the clone)"
    return files


@contextlib.contextmanager
def luigi_config(overrides: dict[str, dict[str, object]]):
    """Set ``luigi.cfg`` values for the duration of a block, then restore them."""
    cfg = luigi.configuration.get_config()
    saved: list[tuple[str, str, str | None]] = []
    for section, values in overrides.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for key, value in values.items():
            saved.append((section, key, cfg.get(section, key, None)))
            cfg.set(section, key, str(value))
    luigi.task_register.Register.clear_instance_cache()
    try:
        yield cfg
    finally:
        for section, key, old in reversed(saved):
            if old is None:
                cfg.remove_option(section, key)
            else:
                cfg.set(section, key, old)
        luigi.task_register.Register.clear_instance_cache()


def assert_close(expected, actual, path: str = "", rel: float = 1e-6) -> None:
    """Deep equality with float tolerance (float32 storage) and a path to the first difference."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        assert set(expected) == set(actual), f"{path}: keys differ: {sorted(set(expected) ^ set(actual))}"
        for key in expected:
            assert_close(expected[key], actual[key], f"{path}.{key}", rel)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(expected) == len(actual), f"{path}: length differs"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_close(e, a, f"{path}[{i}]", rel)
    elif isinstance(expected, float) or isinstance(actual, float):
        assert math.isclose(expected, actual, rel_tol=rel, abs_tol=1e-6), f"{path}: {expected!r} != {actual!r}"
    else:
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"


def run_luigi(tasks: list, workers: int = 1) -> bool:
    """Build tasks in-process with the local scheduler; True when everything succeeded."""
    return luigi.build(tasks, local_scheduler=True, workers=workers, log_level="WARNING",
                       detailed_summary=True).status.name in ("SUCCESS", "SUCCESS_WITH_RETRY")
