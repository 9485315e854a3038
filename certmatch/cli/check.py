"""``certmatch check``: judge the sessions in recordings, one line each, and a summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from certmatch.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    UsageError,
    add_recording_paths,
    add_trust_options,
)
from certmatch.core import causes as catalogue
from certmatch.core import report
from certmatch.core.diagnosis import Diagnosis
from certmatch.core.judge import Judge
from certmatch.core.recording import LineProblem, expand_paths, iter_recording
from certmatch.core.trust import TrustStore


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "check",
        help="judge the sessions in recordings",
        description="Print one line per recorded session (requested host, presented names, "
        "verdict, primary cause) and a summary. Exit 0 when nothing fails, 1 when sessions fail, "
        "2 on usage or input errors.",
    )
    add_recording_paths(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document for scripts")
    parser.add_argument(
        "--fail-on",
        metavar="CAUSES",
        default=None,
        help="comma-separated cause ids that make the exit status 1, or 'any' for any cause at "
        "all (warnings included); default: any failing session",
    )
    parser.add_argument(
        "-v",
        "--explain",
        action="store_true",
        help="print the explanation, fix and citations under each failing session",
    )
    add_trust_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fail_on = _fail_on(args.fail_on)
    store = TrustStore.load(args.ca_file, use_system=not args.no_system_store)
    paths = expand_paths(args.paths)
    if not paths:
        raise UsageError(f"no recordings (*.jsonl) found in {', '.join(args.paths)}")
    return check(
        paths,
        store,
        json_output=args.json,
        explain=args.explain,
        fail_on=fail_on,
        colour=not args.json and stdout_wants_colour(),
    )


def stdout_wants_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def check(
    paths: Sequence[Path],
    store: TrustStore,
    *,
    json_output: bool = False,
    explain: bool = False,
    fail_on: set[str] | None = None,
    colour: bool = False,
) -> int:
    """Judge every session in ``paths`` and print the report; the command's exit status.

    ``fail_on``: the cause ids that make a session count as failing (``{"any"}``: any cause),
    or None for the verdict's own judgement. Unreadable lines go to stderr; a killed proxy's
    partial last line is a warning, any other one makes the status 2. One judge serves every
    session, so a chain, name or situation seen again is judged once.
    """
    judge = Judge(store)
    verdicts: Counter[str] = Counter()
    primaries: Counter[str] = Counter()
    failures = 0
    input_errors = 0
    json_sessions: list[dict[str, Any]] = []
    json_problems: list[str] = []
    for path in paths:
        for item in iter_recording(path):
            if isinstance(item, LineProblem):
                partial = item.truncated  # a killed proxy's last line: expected, not an error
                if not partial:
                    input_errors += 1
                json_problems.append(str(item))
                label = "warning" if partial else "error"
                print(f"certmatch: {label}: {item}", file=sys.stderr)
                continue
            d = judge.diagnose(item)
            verdicts[d.verdict] += 1
            if d.primary:
                primaries[d.primary.id] += 1
            failed = _is_failure(d, fail_on)
            failures += failed
            if json_output:
                entry = d.to_json()
                entry["recording"] = str(path)
                json_sessions.append(entry)
            else:
                print(report.session_line(d, colour=colour))
                if explain and (failed or d.findings):
                    print(report.explain(d))

    total = sum(verdicts.values())
    if json_output:
        summary = {
            "sessions": total,
            "failed": failures,
            "verdicts": dict(verdicts),
            "primary_causes": dict(primaries),
        }
        document = {"sessions": json_sessions, "summary": summary, "problems": json_problems}
        json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(report.summary(total, failures, verdicts, primaries))
    if input_errors:
        return EXIT_USAGE
    return EXIT_FAILED if failures else EXIT_OK


def _fail_on(spec: str | None) -> set[str] | None:
    if spec is None:
        return None
    if spec.strip() == "any":
        return {"any"}
    ids = {part.strip() for part in spec.split(",") if part.strip()}
    unknown = sorted(ids - set(catalogue.CAUSES))
    if unknown:
        raise UsageError(
            f"--fail-on: unknown cause id(s) {', '.join(unknown)}. "
            f"Known ids: {', '.join(catalogue.CAUSES)}."
        )
    return ids


def _is_failure(d: Diagnosis, fail_on: set[str] | None) -> bool:
    if fail_on is None:
        return d.failed
    if "any" in fail_on:
        return d.failed or bool(d.findings)
    return bool(fail_on.intersection(d.cause_ids))
