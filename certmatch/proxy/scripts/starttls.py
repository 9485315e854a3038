"""mitmproxy script: ``mitmdump -s …/starttls.py`` loads certmatch's STARTTLS layer.

A script file, not a module: mitmproxy executes it by path. Load it beside capture.py.
"""

from certmatch.proxy.starttls_layer import addons  # noqa: F401
