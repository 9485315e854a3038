"""The STARTTLS layer for stock mitmproxy, from a checkout (load it beside capture.py)::

    uv run mitmdump -s addons/capture.py -s addons/starttls.py \\
        --mode reverse:tcp://mail.example.com:143 --set certmatch_record=imap.jsonl

The layer lives in :mod:`certmatch.proxy.starttls_layer`; this file only loads it.
"""

from certmatch.proxy.starttls_layer import addons  # noqa: F401
