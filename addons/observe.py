"""The observe addon for stock mitmproxy, from a checkout (relays TLS, terminates none)::

    uv run mitmdump -s addons/observe.py -s addons/starttls.py \\
        --mode reverse:tls://mail.example.com:993 --set certmatch_record=imap.jsonl

Load it instead of capture.py. The addon lives in :mod:`certmatch.proxy.observe`; this file
only loads it, so the installed wheel claims no top-level ``addons`` package (see the README's
layout section).
"""

from certmatch.proxy.observe import addons  # noqa: F401
