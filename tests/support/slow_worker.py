"""``luigi --module tests.support.slow_worker ...``: the project's tasks, each attribute computed a little slower.

Why: the attributes of a small test catalogue are computed in a fraction of a second, too fast for a
test to SIGKILL the worker *between* two bucket commits. A uniform delay per computed record (not a
pause at a chosen point) stretches the job so the kill lands somewhere inside it, as it would on a
real catalogue; nothing else about the code under test changes. ``ECHONEST_TEST_RECORD_DELAY`` sets
the delay in seconds.
"""

from __future__ import annotations

import os
import time

import tasks  # noqa: F401 - registers every task of the project with luigi
from pipeline.attributes import daily

DELAY = float(os.environ.get("ECHONEST_TEST_RECORD_DELAY", "0.01"))
_compute = daily.compute


def _slow_compute(*args, **kwargs):
    time.sleep(DELAY)
    return _compute(*args, **kwargs)


daily.compute = _slow_compute
