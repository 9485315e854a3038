"""The capture addon for stock mitmproxy, from a checkout::

    uv run mitmdump -s addons/capture.py --mode reverse:tls://mail.example.com:993 \\
        --set certmatch_record=imap.jsonl

The addon lives in :mod:`certmatch.proxy.capture`; this file only loads it, so the
installed wheel claims no top-level ``addons`` package (see the README's layout section).
"""

from certmatch.proxy.capture import addons  # noqa: F401
