"""mitmproxy script: ``mitmdump -s …/capture.py`` loads certmatch's capture addon.

A script file, not a module: mitmproxy executes it by path. It only imports the addon
from the installed package, so the addon has one identity however it is loaded (with it the
guard that ends a transparent-mode redirect loop, :mod:`certmatch.proxy.redirect_loop`).
"""

from certmatch.proxy.capture import addons  # noqa: F401
