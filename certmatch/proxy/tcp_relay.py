"""mitmproxy's TCP relay, noting which side closed first.

A client that refuses a certificate after the handshake just closes; a server that turns a
client away (a rejecting greeting, a timeout) closes first, and the client follows. No hook
tells the two apart: both end in one ``tcp_end``. :class:`CloseOrderTCPLayer` is
mitmproxy's ``TCPLayer`` with one addition: the first ``ConnectionClosed`` it relays is
written to the flow's metadata under :data:`FIRST_CLOSE` as ("client" | "server",
monotonic seconds).

The STARTTLS layer builds it directly. For implicit TLS mitmproxy builds its own
``TCPLayer``; :func:`adopt` turns it into this one from the ``tcp_start`` hook, before the
layer relays anything (the subclass adds no state, so the instance stays valid).
"""

from __future__ import annotations

import time

from mitmproxy import tcp
from mitmproxy.proxy import events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import TCPLayer

FIRST_CLOSE = "certmatch_first_close"


class CloseOrderTCPLayer(TCPLayer):
    """``TCPLayer`` that records which connection closed first."""

    def relay_messages(self, event: events.Event) -> layer.CommandGenerator[None]:
        # Returns mitmproxy's own generator, which checks the event's type, rather than
        # wrapping it in one more: this runs for every chunk of a long session.
        flow = self.flow
        if (
            isinstance(event, events.ConnectionClosed)
            and flow is not None
            and FIRST_CLOSE not in flow.metadata
        ):
            side = "client" if event.connection == self.context.client else "server"
            flow.metadata[FIRST_CLOSE] = (side, time.monotonic())
        return super().relay_messages(event)


def adopt(context: Context, flow: tcp.TCPFlow) -> bool:
    """Make the stock ``TCPLayer`` relaying ``flow`` a :class:`CloseOrderTCPLayer`; whether
    ``flow`` is now relayed by one (the STARTTLS layer builds its own)."""
    for candidate in reversed(context.layers):
        if isinstance(candidate, TCPLayer) and candidate.flow is flow:
            if type(candidate) is TCPLayer:
                candidate.__class__ = CloseOrderTCPLayer
            return isinstance(candidate, CloseOrderTCPLayer)
    return False
