"""mitmproxy script files (loaded by path with ``-s``), for an installed certmatch."""
