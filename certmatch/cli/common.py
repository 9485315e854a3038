"""What every command shares: exit statuses, the one-line usage error, common arguments."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from certmatch.core.anchors import RecordingAnchors, load_anchors
from certmatch.core.recording import RecordingError, expand_paths
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


def recording_paths(given: Sequence[str], command: str) -> tuple[list[Path], list[str]]:
    """The recordings named by ``given`` (:func:`expand_paths`: the ``*.jsonl`` files directly
    in each directory), and a note for each directory whose subdirectories hold recordings
    that are not read, naming them and how to include them.

    A directory that holds recordings only in subdirectories is a UsageError that names them.
    """
    try:
        paths = expand_paths(given)
    except RecordingError as error:
        below = _found_below(Path(error.path)) if Path(error.path).is_dir() else []
        if not below:
            raise
        raise UsageError(
            f"{error.path} holds no *.jsonl recordings itself, only in subdirectories "
            f"({_listed(below)}); {command} reads the recordings directly in a directory it is "
            f"given, so name those: certmatch {command} {_command_line(below)}"
        ) from None
    return paths, subdirectory_notes(given, command)


def subdirectory_notes(given: Sequence[str], command: str) -> list[str]:
    """A note for each directory in ``given`` whose subdirectories hold recordings, which
    ``command`` does not read: which they are, and the command line that reads them too."""
    notes = []
    for name in dict.fromkeys(given):
        below = _found_below(Path(name)) if Path(name).is_dir() else []
        if below:
            notes.append(
                f"not read: the recordings in subdirectories of {name} ({_listed(below)}); "
                f"{command} reads only the *.jsonl files directly in a directory it is given. "
                f"To include them, name them too: certmatch {command} "
                f"{_command_line([Path(name), *below])}"
            )
    return notes


_SEARCHED_DIRECTORIES = 1000  # never a long walk, even for `certmatch check ~`
_LISTED = 5


def _found_below(directory: Path) -> list[Path]:
    """The subdirectories of ``directory``, at any depth, that hold ``*.jsonl`` files
    themselves; hidden ones (``.git``, ``.venv``) are not searched."""
    found: list[Path] = []
    for searched, (root, dirs, files) in enumerate(os.walk(directory), start=1):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if root != str(directory) and any(f.endswith(".jsonl") for f in files):
            found.append(Path(root))
        if searched >= _SEARCHED_DIRECTORIES:
            break
    return found


def _listed(paths: Sequence[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:_LISTED])
    more = len(paths) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _command_line(paths: Sequence[Path]) -> str:
    words = [shlex.quote(str(p)) for p in paths[: _LISTED + 1]]
    return " ".join(words) + (" ..." if len(paths) > _LISTED + 1 else "")


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
