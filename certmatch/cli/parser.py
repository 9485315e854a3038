"""The ``certmatch`` argument parser: the program's own options, then one subparser per command.

Each command module adds its own subparser (``register``) and sets ``run`` as its default.
"""

from __future__ import annotations

import argparse

import certmatch
from certmatch.cli import check, demo, probe, proxy, replay, view

COMMANDS = (check, probe, proxy, view, demo, replay)  # in the order ``--help`` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certmatch",
        description=(
            "Record the TLS handshakes between a mail client and its server, and explain why the "
            "server's certificate does not match the name the client asked for."
        ),
    )
    parser.add_argument("--version", action="version", version=f"certmatch {certmatch.__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser
