"""The ``certmatch`` command line: parse, run the command, turn input errors into exit 2.

Each command lives in its own module (:mod:`certmatch.cli.check`, ``view``, ``proxy``,
``demo``, ``replay``) and imports mitmproxy, the TUI or the lab only inside the command that
needs them, so ``check`` starts fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from certmatch.cli.common import EXIT_OK, EXIT_USAGE, INPUT_ERRORS
from certmatch.cli.parser import build_parser
from certmatch.core.report import shown_prose


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except INPUT_ERRORS as exc:
        print(f"certmatch: {shown_prose(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
