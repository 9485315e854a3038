"""``certmatch view``: browse recordings in the terminal UI (Textual, imported on demand)."""

from __future__ import annotations

import argparse

from certmatch.cli.common import (
    Commands,
    add_recording_paths,
    add_trust_options,
    load_trust,
    recording_paths,
    subdirectory_notes,
)
from certmatch.core.judge import JudgesByRecording
from certmatch.core.recording import RecordingError


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "view",
        help="browse recordings in the terminal UI",
        description="Open the TUI on recordings: failing sessions first (a: all), each with its "
        "cause, evidence, chain, fix and citations. Each recording's sessions are judged with "
        "the CA certificates its header records, as check does.",
    )
    add_recording_paths(parser)
    parser.add_argument(
        "--follow", action="store_true", help="keep reading sessions as they are appended"
    )
    parser.add_argument(
        "--all",
        dest="show_all",
        action="store_true",
        help="show every session, not only failing ones",
    )
    add_trust_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.follow:  # files that are not there yet are waited for
        notes = subdirectory_notes(args.paths, "view")
    else:
        try:  # a directory with recordings only below it: a UsageError naming them
            notes = recording_paths(args.paths, "view")[1]
        except RecordingError:
            notes = []  # run_view says what is wrong, as for every other bad input
    from certmatch.tui.app import run_view

    return run_view(
        args.paths,
        follow=args.follow,
        show_all=args.show_all,
        ca_files=args.ca_file,
        use_system_store=not args.no_system_store,
        judge_for=JudgesByRecording(load_trust(args)),
        notes=notes,
    )
