"""``python -m pipeline.ops.ledger --date D``: the tracks that did not make it on a day, and why.

Prints the outcome counts and reasons from the ledger of the date (streaming its buckets), then
the first entries, optionally filtered by outcome, reason text or one track id.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

from pipeline import layout
from pipeline.bucketing import track_id_problem
from pipeline.errors import PipelineError
from pipeline.warehouse import Warehouse

URL = re.compile(r"\S+://\S+")  # group reasons by their text, not by the object they name


def summarise(wh: Warehouse, date, outcome: str | None = None, grep: str | None = None, limit: int = 20,
              track: str | None = None) -> str:
    manifest = wh.manifest(layout.LEDGER, date, whole=True)
    outcomes, reasons, shown = collections.Counter(), collections.Counter(), []
    for bucket in range(manifest.buckets):
        for entry in wh.read_bucket(layout.LEDGER, date, bucket, manifest):
            if ((outcome and entry["outcome"] != outcome) or (grep and grep not in entry["reason"])
                    or (track and entry["track_id"] != track)):
                continue
            outcomes[entry["outcome"]] += 1
            reasons[URL.sub("<key>", entry["reason"]).split(":")[0][:70]] += 1
            if len(shown) < limit:
                shown.append(entry)
    lines = [f"ledger {layout.format_date(date)}: {sum(outcomes.values())} tracks "
             f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items())) or 'none'})"]
    lines += [f"  {n:>7}  {reason}" for reason, n in reasons.most_common(10)]
    lines += [f"  {e['track_id']}  {e['outcome']:<8} attempts {e['attempts']:>2} since {e['first_seen']} "
              f"(last {e['last_attempt']})  {e['source_key']}: {e['reason'][:90]}" for e in shown]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", required=True)
    parser.add_argument("--outcome", choices=["missing", "invalid", "failed"])
    parser.add_argument("--grep", help="only entries whose reason contains this text")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--track", help="only this track id (22 base62 characters, matched whole)")
    args = parser.parse_args(argv)
    problem = track_id_problem(args.track) if args.track is not None else None
    if problem:
        print(f"error: --track {problem}", file=sys.stderr)
        return 2
    try:
        print(summarise(Warehouse.from_config(), layout.parse_date(args.date), args.outcome, args.grep, args.limit,
                        args.track))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
