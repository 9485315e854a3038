"""mitmproxy script: ``mitmdump -s …/observe.py`` loads certmatch's observe addon.

A script file, not a module: mitmproxy executes it by path. Load it beside starttls.py and
instead of capture.py: observe mode relays TLS and terminates none.
"""

from certmatch.proxy.observe import addons  # noqa: F401
