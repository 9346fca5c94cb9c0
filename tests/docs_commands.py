"""The commands README.md and docs/ tell a person to type, read from the documents themselves.

``documented_commands()`` extracts every line of every fenced ``sh``/``bash``/``cron`` block
(comments dropped, a crontab line's five schedule fields dropped). ``COMMANDS`` names each kind
of command with the pattern its lines match; tests/test_docs_commands.py runs every line of every
kind through ``bash -c`` exactly as written, with only dates, paths, ports (and the example track
id) substituted. A documented line that matches no kind, or a kind that no longer matches any
line, fails the suite, so the documents and the tests cannot drift apart silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = ("sh", "bash", "shell", "cron")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_COMMENT = re.compile(r"\s+#.*$")

# kind -> the pattern (re.fullmatch) of its documented lines
COMMANDS = {
    "make demo": r"make demo",
    "make test": r"make test",
    "make test-slow": r"make test-slow",
    "pytest": r"pytest .*",
    "make scheduler": r"make scheduler",
    "make scheduler-stop": r"make scheduler-stop",
    "scheduler start": r"python -m pipeline\.ops\.scheduler start .*",
    "scheduler status": r"python -m pipeline\.ops\.scheduler status .*",
    "scheduler stop": r"python -m pipeline\.ops\.scheduler stop .*",
    "dashboard": r"open http://\S+",
    "make status": r"make status.*",
    "status": r"python -m pipeline\.ops\.status.*",
    "plan": r"echonest-plan .*",
    "ledger": r"python -m pipeline\.ops\.ledger .*",
    "s3server start": r"python -m pipeline\.demo\.s3server start .*",
    "s3server stop": r"python -m pipeline\.demo\.s3server stop .*",
    "luigi analysis": r"luigi --module tasks (IngestFullSnapshot|IngestChunk|IncrementalChunk|AnalysisSet) .*",
    "luigi attributes": r"luigi --module tasks DailyAttributes .*",
    "luigi range": r"luigi --module tasks RangeDaily .*",
    "luigi retention": r"luigi --module tasks ApplyRetention .*",
    "luigi publish": r"luigi --module tasks\.serving PublishAttributes .*",
    "cron": r"cd /srv/echonest-pipeline && \.venv/bin/luigi --module tasks .*",
    "publish": r"\.venv/bin/python -m pipeline\.serving\.publish .*",
    "lookup api": r"\.venv/bin/python -m pipeline\.serving\.api .*",
    "redis": r"\.venv/bin/python -m pipeline\.serving\.redis_server .*",
    "curl": r"curl .*",
    "hive": r"python -m pipeline\.ops\.hive .*",
    "luigi publish on a cluster": r"luigi --module tasks PublishAttributes .*",
}
# Developer commands, not operator ones: this suite *is* `make test`, and the others run test files.
NOT_RUN_HERE = {
    "make test": "the suite itself (CI's .ci/run); running it from inside would recurse",
    "make test-slow": "the slow-marked tests of this same suite",
    "pytest": "a test module of this same suite, printing its numbers",
    # docs/cluster.md: tests/test_cluster.py runs each of its lines as written, on its one Spark session
    "hive": "run as written by tests/test_cluster.py (Spark SQL over the generated DDL)",
    "luigi publish on a cluster": "run as written by tests/test_cluster.py (the day sequence on S3 with Spark)",
}


@dataclass(frozen=True)
class Command:
    text: str  # as documented, comment removed, brackets of optional parts kept
    kind: str
    where: str  # file:line

    def optional(self, keep: bool) -> str:
        """The text with ``[--optional parts]`` kept (brackets dropped) or left out (``jq .a[]`` is no option)."""
        if keep:
            return re.sub(r"\[(--[^\]]*)\]", r"\1", self.text)
        return re.sub(r"\s*\[--[^\]]*\]", "", self.text)


def _lines(path: Path):
    text = path.read_text(encoding="utf-8")
    for match in _FENCE.finditer(text):
        if match.group(1) not in SHELL_LANGUAGES:
            continue
        first = text.count("\n", 0, match.start(2)) + 1
        for offset, line in enumerate(match.group(2).splitlines()):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if match.group(1) == "cron":
                line = line.split(None, 5)[5]  # minute hour day month weekday command
            yield _COMMENT.sub("", line).strip(), f"{path.relative_to(ROOT)}:{first + offset}"


def documented_commands() -> list[Command]:
    """Every command line of every shell block of the documents, with its kind ('' when none matches)."""
    out = []
    for path in DOCUMENTS:
        for text, where in _lines(path):
            kinds = [k for k, pattern in COMMANDS.items() if re.fullmatch(pattern, text)]
            out.append(Command(text, kinds[0] if len(kinds) == 1 else "", where))
    return out


def of_kind(kind: str) -> list[Command]:
    """The distinct documented lines of one kind (a line repeated in several documents runs once)."""
    seen, out = set(), []
    for c in documented_commands():
        if c.kind == kind and c.text not in seen:
            seen.add(c.text)
            out.append(c)
    assert out, f"no documented command of kind {kind!r} any more: update tests/docs_commands.py"
    return out
