"""The terminal UI from a checkout: ``uv run python tui/app.py RECORDING…`` is ``certmatch view``.

The Textual app lives in :mod:`certmatch.tui`; this file only starts it.
"""

import sys

from certmatch.cli.main import main

sys.exit(main(["view", *sys.argv[1:]]))
