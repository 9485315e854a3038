"""Reverse proxy to implicit TLS: dial the server after the client's ClientHello, not before.

mitmproxy's default ``connection_strategy=eager`` makes its ``ReverseProxy`` layer dial the
server as soon as a client connects, and close the client at once when that fails: the
ClientHello, already on its way, is never read. The capture addon's record of a session to
an unreachable server then says what the proxy was configured with (no SNI, the reverse
target as the requested host), not what the client asked for.

For a ``reverse:tls://`` client, whose ClientHello always comes first, the capture addon
swaps the connection's ``ReverseProxy`` for :class:`ReverseProxyDialingAfterClientHello`
when the client connects (before the layer starts). That is mitmproxy's own ``lazy``
strategy for this one connection: the TLS layer below dials the server when it needs it,
after the ``tls_clienthello`` hook, where the capture addon asks for the server's handshake
first. The global option stays ``eager``, as mitmproxy's tlsconfig addon expects: it asks
for the server's handshake first only under ``eager`` (``TlsConfig.tls_clienthello``), and a
script's hooks run before tlsconfig's. So the client sees nothing different; only a server
that cannot be reached is now found after the ClientHello instead of before it.
"""

from __future__ import annotations

from mitmproxy import connection, ctx
from mitmproxy.proxy import events, layer, mode_specs
from mitmproxy.proxy.layers import modes


class ReverseProxyDialingAfterClientHello(modes.ReverseProxy):
    """mitmproxy's ``ReverseProxy`` under ``connection_strategy=lazy``: starts the layer
    below without dialling; the TLS layers dial once they have read the ClientHello."""

    def finish_start(self) -> layer.CommandGenerator[str | None]:
        self._handle_event = self.child_layer.handle_event  # type: ignore[method-assign]
        yield from self.child_layer.handle_event(events.Start())
        return None


def dial_after_client_hello(client: connection.Client) -> connection.Server | None:
    """Make a new ``reverse:tls://`` client connection dial its server after the client's
    ClientHello (call it from ``client_connected``, before the connection's layer starts).
    Returns the server connection it will dial (its address is set when the layer starts),
    for a record written before any dial; None, and nothing changed, for any other mode,
    for ``connection_strategy=lazy`` (which does this already) or when the connection's
    layer is not mitmproxy's ``ReverseProxy``."""
    mode = client.proxy_mode
    if not (isinstance(mode, mode_specs.ReverseMode) and mode.scheme == "tls"):
        return None
    if ctx.options.connection_strategy != "eager":
        return None
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client.id) if proxyserver is not None else None
    root = getattr(handler, "layer", None)
    if type(root) is not modes.ReverseProxy:
        return None
    # The subclass adds no state and the layer has not started: the instance stays valid.
    root.__class__ = ReverseProxyDialingAfterClientHello
    return root.context.server
