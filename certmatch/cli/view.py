"""``certmatch view``: browse recordings in the terminal UI (Textual, imported on demand)."""

from __future__ import annotations

import argparse
import inspect
import sys

from certmatch.cli.common import Commands, add_recording_paths, add_trust_options, load_trust
from certmatch.core.judge import JudgesByRecording
from certmatch.core.recording import RecordingError, expand_paths, open_recording
from certmatch.core.report import shown_prose


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
    from certmatch.tui.app import run_view

    trust = load_trust(args)
    options: dict[str, object] = {}
    # Until the TUI's run_view takes judge_for (it judged every file alike before), the
    # recordings' own CAs are left out there, and the user is told so.
    if "judge_for" in inspect.signature(run_view).parameters:
        options["judge_for"] = JudgesByRecording(trust)
    elif trust.use_recorded and _records_cas(args.paths):
        # A TUI that judges every file alike cannot keep one file's CAs to itself.
        print(
            "certmatch view: the recordings' own CA certificates are not applied here; "
            "'certmatch check' applies them",
            file=sys.stderr,
        )
    return run_view(
        args.paths,
        follow=args.follow,
        show_all=args.show_all,
        ca_files=args.ca_file,
        use_system_store=not args.no_system_store,
        **options,  # type: ignore[arg-type]
    )


def _records_cas(paths: list[str]) -> bool:
    try:
        files = expand_paths(paths)
    except RecordingError as error:
        print(f"certmatch view: {shown_prose(str(error))}", file=sys.stderr)
        return False
    for path in files:
        try:
            if open_recording(path)[1].ca_certificates:
                return True
        except RecordingError:
            continue
    return False
