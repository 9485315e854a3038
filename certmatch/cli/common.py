"""What every command shares: exit statuses, the one-line usage error, common arguments."""

from __future__ import annotations

import argparse
from pathlib import Path

from certmatch.core.anchors import RecordingAnchors, load_anchors
from certmatch.core.recording import RecordingError
from certmatch.core.trust import TrustStoreError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

type Commands = argparse._SubParsersAction[argparse.ArgumentParser]
"""What ``add_subparsers()`` returns: each command module adds its own parser to it."""


class UsageError(Exception):
    """A problem with what the user typed or gave us; printed as one line, exit 2."""


# Errors in what the user gave us: one line on stderr and exit 2, never a traceback.
INPUT_ERRORS: tuple[type[Exception], ...] = (UsageError, RecordingError, TrustStoreError)


def add_recording_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="FILE", help="recording files or directories of *.jsonl"
    )


def add_trust_options(parser: argparse.ArgumentParser, *, recorded: bool = True) -> None:
    """--ca-file and --no-system-store; with ``recorded`` (commands that read recordings),
    --ignore-recorded-ca too."""
    parser.add_argument(
        "--ca-file",
        action="append",
        default=[],
        metavar="PEM",
        help="extra CA certificates to trust when judging chains (repeatable)",
    )
    parser.add_argument(
        "--no-system-store",
        action="store_true",
        help="trust only the --ca-file certificates (and those a recording's header records)",
    )
    if not recorded:
        return
    parser.add_argument(
        "--ignore-recorded-ca",
        action="store_true",
        help="do not trust the CA certificates a recording's header records (the ones the "
        "proxy judged with); by default each recording's own are trusted for its sessions",
    )


def load_trust(args: argparse.Namespace) -> RecordingAnchors:
    """The trust the options ask for: the system store and every --ca-file, each root with
    its origin, plus each recording's own header CAs unless --ignore-recorded-ca."""
    base = load_anchors(args.ca_file, use_system=not args.no_system_store)
    return RecordingAnchors(base, use_recorded=not getattr(args, "ignore_recorded_ca", False))


def recorded_ca_pems(ca_files: list[str]) -> list[str]:
    """The text of each --ca-file, for a recording's header: ``check`` and ``view`` then judge
    its sessions with the same anchors as the command that recorded them."""
    return [Path(path).read_text(encoding="ascii", errors="replace") for path in ca_files]
