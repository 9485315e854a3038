"""A bound on the time a TLS handshake may take through the proxy (issue 13).

Without it, a client that connects and sends nothing, or a server that accepts TCP and
never answers the TLS handshake, holds the client's socket (and the server's) until
mitmproxy's idle timeout, ``tcp_timeout``: 600 s. The capture addon arms a timer per
connection (from the client's connection in a reverse TLS mode, else from its
ClientHello) and, when it fires before the client's handshake is done, notes the phase
reached in the session and closes the connection as mitmproxy's own idle timeout does.
STARTTLS sessions are bounded by the STARTTLS layer's own timeout.
"""

from __future__ import annotations

from mitmproxy import connection, ctx
from mitmproxy.proxy import mode_specs

DEFAULT_S = 15
OPTION = "certmatch_handshake_timeout"

# mitmproxy's reverse-mode schemes whose client speaks TLS first (``mode_specs.ReverseMode``).
_TLS_FIRST_SCHEMES = frozenset({"tls", "https"})


def tls_first(client: connection.Client) -> bool:
    """True when the client's first bytes must be a ClientHello: a reverse proxy to a TLS
    server. (In other modes the client may speak a plaintext protocol first.)"""
    mode = client.proxy_mode
    return isinstance(mode, mode_specs.ReverseMode) and mode.scheme in _TLS_FIRST_SCHEMES


def seconds() -> int:
    """The bound in force: the option, never longer than the STARTTLS layer's timeout."""
    bound = int(ctx.options.certmatch_handshake_timeout)
    starttls = getattr(ctx.options, "certmatch_starttls_timeout", None)
    return min(bound, int(starttls)) if starttls else bound


def close_connection(client: connection.Client, reason: str) -> bool:
    """Close the client's connection (and so the server's) the way mitmproxy's idle timeout
    does: cancel its handler. False when the connection is already gone."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client.id) if proxyserver is not None else None
    if handler is None:
        return False
    transport = handler.transports.get(handler.client)
    if transport is None or transport.handler is None:
        return False
    transport.handler.cancel(reason)
    return True
