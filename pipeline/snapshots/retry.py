"""When a track that did not make it is tried again.

Millions of catalog tracks never get an analysis; trying each of them every day would cost
millions of requests a day for nothing. Tracks missing from the source (and invalid ones,
which need a new document) are retried after 1, 2, 4, ... days, capped at
``missing_max_days``; tracks that failed (network, throttling) are retried the next day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipeline.layout import parse_date


@dataclass(frozen=True)
class RetryPolicy:
    first_days: int = 1
    max_days: int = 32

    def gap_days(self, attempts: int) -> int:
        """Days to wait after the ``attempts``-th attempt: first, 2×first, 4×first, ... capped."""
        return min(self.first_days * 2 ** max(attempts - 1, 0), self.max_days)

    def is_due(self, entry: dict, today: dt.date) -> bool:
        """Whether a ledger entry should be tried again on ``today``."""
        if entry["outcome"] == "failed":
            return True
        waited = (today - parse_date(entry["last_attempt"])).days
        return waited >= self.gap_days(entry["attempts"])
