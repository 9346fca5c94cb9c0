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


def write_cfg(path: Path, overrides: dict[str, dict[str, object]]) -> Path:
    """Write a luigi.cfg layer for a subprocess (pass it through LUIGI_CONFIG_PATH)."""
    lines = []
    for section, values in overrides.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class StartedTasks:
    """Records which tasks a luigi run actually started (to prove a rerun is a no-op)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __enter__(self) -> StartedTasks:
        luigi.Task.event_handler(luigi.Event.START)(self._record)
        return self

    def _record(self, task: luigi.Task) -> None:
        self.names.append(task.task_id)

    def __exit__(self, *exc) -> None:
        luigi.Task._event_callbacks[luigi.Task][luigi.Event.START].discard(self._record)


def luigi_cli(task: str, *args: str, cfg: Path, extra_env: dict | None = None) -> list[str]:
    """The operator's command line for a task, run with the test's config layer on top."""
    import sys

    return [str(Path(sys.executable).with_name("luigi")), "--module", "tasks", task, *args, "--local-scheduler",
            "--log-level", "WARNING"]


def subprocess_env(cfg: Path) -> dict:
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg)}
    from pipeline.demo.s3server import fake_credentials_env

    env.update(fake_credentials_env())
    return env


def run_and_kill(cmd: list[str], env: dict, when, timeout: float = 120.0, poll: float = 0.01) -> bool:
    """Start ``cmd`` in its own process group and SIGKILL the group once ``when()`` holds.

    ``poll = 0`` checks without pausing, for kill points that last well under a millisecond.

    Returns True if it was killed (False if it finished first, which makes the test meaningless).
    """
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if when():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                return True
            time.sleep(poll)
        raise AssertionError(f"{cmd[3]} neither finished nor reached the kill point in {timeout}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
