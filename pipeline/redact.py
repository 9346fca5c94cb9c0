"""Keep AWS credentials out of logs, even when an operator turns on DEBUG logging for everything.

botocore logs every request at DEBUG: ``botocore.endpoint`` prints the headers (the access key id
in ``Authorization: ... Credential=AKIA.../...``, a session token in ``X-Amz-Security-Token``) and
``botocore.auth`` prints the canonical request (the session token again). A session token is a
credential; an access key id names one; a signature can be replayed for minutes. The secret key
itself is never logged (it only feeds the HMAC). This filter rewrites those values to
``<redacted>`` and keeps the rest of the record, so DEBUG logs stay useful.
"""

from __future__ import annotations

import logging
import re

# Leaf loggers: a filter on a logger only sees records logged to that very logger, not its children.
BOTOCORE_LOGGERS = ("botocore.endpoint", "botocore.auth", "botocore.awsrequest", "botocore.parsers")
REDACTED = "<redacted>"
_PATTERNS = (
    re.compile(r"(Credential=)[^/,\s'\"]+"),
    re.compile(r"(Signature=)[0-9a-fA-F]+"),
    re.compile(r"(x-amz-security-token[\"']?\s*[:=]\s*b?[\"']?)[^\s'\",}]+", re.IGNORECASE),
)


class RedactCredentials(logging.Filter):
    """Rewrites credential values in a log record's message; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for pattern in _PATTERNS:
            redacted = pattern.sub(lambda m: m.group(1) + REDACTED, redacted)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_FILTER = RedactCredentials()


def redact_credentials_in_logs() -> None:
    """Attach the filter to botocore's request-logging loggers (idempotent; cheap unless DEBUG is on)."""
    for name in BOTOCORE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
