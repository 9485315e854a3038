"""The proxy side: mitmproxy addons and the STARTTLS layer.

Only this package (and the commands that start a proxy) imports mitmproxy. Its public
entry points, for the lab and the CLI, are the two addons below and the script files in
:mod:`certmatch.proxy.scripts` that ``mitmdump -s`` loads.
"""

from certmatch.proxy.capture import CertmatchCapture
from certmatch.proxy.starttls_layer import StartTlsAddon

__all__ = ["CertmatchCapture", "StartTlsAddon"]
