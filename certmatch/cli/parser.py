"""The ``certmatch`` argument parser: the program's own options, then one subparser per command.

Each command module adds its own subparser (``register``) and sets ``run`` as its default.
A command line that starts with a command's name imports and registers that command only:
``certmatch proxy`` does not load the code of ``check``, ``probe`` and the others before the
proxy listens.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

import certmatch

COMMANDS = ("check", "probe", "proxy", "view", "demo", "replay")  # in the order --help lists them


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: every command, or only the one ``argv`` starts with."""
    parser = argparse.ArgumentParser(
        prog="certmatch",
        description=(
            "Record the TLS handshakes between a mail client and its server, and explain why the "
            "server's certificate does not match the name the client asked for."
        ),
    )
    parser.add_argument("--version", action="version", version=f"certmatch {certmatch.__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else COMMANDS
    for name in wanted:
        importlib.import_module(f"certmatch.cli.{name}").register(commands)
    return parser
