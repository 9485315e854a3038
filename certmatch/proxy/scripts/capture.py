"""mitmproxy script: ``mitmdump -s …/capture.py`` loads certmatch's capture addon.

A script file, not a module: mitmproxy executes it by path. It only imports the addon
from the installed package, so the addon has one identity however it is loaded. It also
loads the guard that ends a transparent-mode redirect loop
(:mod:`certmatch.proxy.redirect_loop`); the guard is not in the capture module's own
``addons``, so that loading capture and observe together registers it once.
"""

from certmatch.proxy.capture import addons as _capture
from certmatch.proxy.redirect_loop import RedirectLoopGuard

addons = [*_capture, RedirectLoopGuard()]
