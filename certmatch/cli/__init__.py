"""The ``certmatch`` command line: one module per command."""
