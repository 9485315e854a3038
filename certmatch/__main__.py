"""``python -m certmatch``: the command line."""

import sys

from certmatch.cli.main import main

sys.exit(main())
