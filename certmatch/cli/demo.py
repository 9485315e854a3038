"""``certmatch demo``: run the lab's demo, then open the TUI on its recording or print the report.

The demo itself (servers, proxy, clients) is :mod:`certmatch.lab.demo`, imported inside the
command; this module says what is happening and shows the result: the TUI, or with
``--no-tui`` exactly the report of ``certmatch check --explain``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from certmatch.cli import check
from certmatch.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    INPUT_ERRORS,
    Commands,
)
from certmatch.core.recording import expand_paths
from certmatch.core.trust import TrustStore

if TYPE_CHECKING:
    from certmatch.lab.demo import DemoResult, Scenario


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="watch certmatch diagnose embedded mail servers with typical certificate mistakes",
        description="Start small IMAP, POP3, SMTP and LDAP servers on loopback (implicit TLS, and "
        "STARTTLS), each but one with a certificate mistake from the cause catalogue, behind the "
        "certmatch proxy; drive Python's own mail clients through it; then open the TUI on the "
        "recording (or print the check report with --no-tui). Nothing is left running afterwards.",
    )
    parser.add_argument(
        "--no-tui", action="store_true", help="print the check report instead of opening the TUI"
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        default=None,
        help="write the recording to FILE (must not exist yet)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's working directory (demo CA, certificates, recording)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    record = Path(args.record) if args.record else None
    return run_demo(tui=not args.no_tui, record=record, keep=args.keep)


def run_demo(*, tui: bool, record: Path | None, keep: bool) -> int:
    """The ``certmatch demo`` command. Exit 0 when the demo recorded what it set out to show."""
    from certmatch.lab.demo import demo_scenarios, record_demo

    if record is not None and record.exists():
        print(
            f"certmatch demo: {record} already exists; the demo writes a fresh recording. "
            "Remove it or pass another --record FILE.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    work = Path(tempfile.mkdtemp(prefix="certmatch-demo-"))
    try:
        recording = record if record is not None else work / "demo.jsonl"
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
        print(_intro(demo_scenarios()), file=sys.stderr)
        started = time.monotonic()
        result = record_demo(work, recording)
        print(
            f"certmatch demo: recorded {len(result.scenarios)} sessions in "
            f"{time.monotonic() - started:.1f} s to {recording}"
            + (" (temporary: removed on exit)" if record is None and not keep else ""),
            file=sys.stderr,
        )
        for name, error in result.client_errors.items():
            print(f"certmatch demo: the {name} client stopped: {error}", file=sys.stderr)
        problems = result.problems()
        shown = _show(result, tui=tui)
        for problem in problems:
            print(f"certmatch demo: unexpected: {problem}", file=sys.stderr)
        if keep:
            kept = result.ca_file
            print(
                f"certmatch demo: kept {work} (demo CA: {kept}); try "
                f"`certmatch check --ca-file {kept} {recording}` or `certmatch replay {recording}`",
                file=sys.stderr,
            )
        elif record is None:
            print(
                "certmatch demo: pass --record FILE (or --keep) to keep the recording.",
                file=sys.stderr,
            )
        return EXIT_FAILED if problems or shown not in (EXIT_OK, EXIT_FAILED) else EXIT_OK
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _intro(scenarios: Sequence[Scenario]) -> str:
    lines = ["certmatch demo: embedded servers on loopback, each behind the certmatch proxy:"]
    for s in scenarios:
        lines.append(f"  - {s.story}")
    if not any(s.tls == "starttls" for s in scenarios):
        lines.append(
            "  (STARTTLS servers join the demo once the STARTTLS proxy layer is installed.)"
        )
    lines.append(
        "The demo's clients check the chain but not the host name, so that every session "
        "reaches the server; certmatch judges the name. A real client would refuse the "
        "mismatches (see README, 'Real clients agree')."
    )
    return "\n".join(lines)


def _show(result: DemoResult, *, tui: bool) -> int:
    """Open the TUI on the recording, or print the ``check --explain`` report; the exit status."""
    if tui:
        try:
            from certmatch.tui.app import run_view
        except ImportError as exc:
            print(
                f"certmatch demo: the TUI is not available ({exc}); printing the report.",
                file=sys.stderr,
            )
        else:
            return int(
                run_view(
                    [str(result.recording)],
                    follow=False,
                    show_all=False,  # as `view`: the failing sessions; `a` shows them all
                    ca_files=[str(result.ca_file)],
                    use_system_store=False,
                )
            )
    try:
        store = TrustStore.load([result.ca_file], use_system=False)
        paths = expand_paths([result.recording])
        return check.check(paths, store, explain=True, colour=check.stdout_wants_colour())
    except INPUT_ERRORS as exc:  # as `certmatch check` reports them: one line, status 2
        print(f"certmatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
