"""The proxy side: mitmproxy addons, the STARTTLS layer and the observing relay.

Only this package (and the commands that start a proxy) imports mitmproxy. Its public
entry points, for the lab and the CLI, are the addons below (capture intercepts; observe
relays without terminating TLS; load one of the two, with the STARTTLS addon) and the script
files in :mod:`certmatch.proxy.scripts` that ``mitmdump -s`` loads.
"""

from certmatch.proxy.capture import CertmatchCapture
from certmatch.proxy.observe import ObserveAddon
from certmatch.proxy.starttls_layer import StartTlsAddon

__all__ = ["CertmatchCapture", "ObserveAddon", "StartTlsAddon"]
