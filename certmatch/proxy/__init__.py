"""The proxy side: mitmproxy addons, the STARTTLS layer and the observing relay.

Only this package (and the commands that start a proxy) imports mitmproxy. Its public
entry points, for the lab and the CLI, are the addons below (capture intercepts; observe
relays without terminating TLS; load one of the two, with the STARTTLS addon) and the script
files in :mod:`certmatch.proxy.scripts` that ``mitmdump -s`` loads.

The addons are imported on first use: a proxy that captures never compiles the observing
relay, and finding the script files imports no addon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certmatch.proxy.capture import CertmatchCapture
    from certmatch.proxy.observe import ObserveAddon
    from certmatch.proxy.starttls_layer import StartTlsAddon

__all__ = ["CertmatchCapture", "ObserveAddon", "StartTlsAddon"]

_HOMES = {
    "CertmatchCapture": "certmatch.proxy.capture",
    "ObserveAddon": "certmatch.proxy.observe",
    "StartTlsAddon": "certmatch.proxy.starttls_layer",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
