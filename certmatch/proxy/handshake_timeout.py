"""A bound on the time a TLS handshake may take through the proxy (issue 13).

Without it, a client that connects and sends nothing, or a server that accepts TCP and
never answers the TLS handshake, holds the client's socket (and the server's) until
mitmproxy's idle timeout, ``tcp_timeout``: 600 s. The capture addon arms a timer per
TCP connection when the client connects, and again at its ClientHello. It covers a forward
proxy's client that never sends its SOCKS5 or CONNECT request, and a connection on which
nobody speaks: while a known destination and its client are both silent, the server may
owe a greeting, so the STARTTLS timeout (the greeting's documented wait) applies instead.
The timer stands aside once the STARTTLS layer takes over (it bounds its own waits), or the
connection turns out to be a plain HTTP request or a plaintext TCP relay. When it fires before the client's handshake is done and nothing has moved on
the connection for the bound (by mitmproxy's own activity clock) and no byte from either
side waits to be read, the addon notes the phase reached in the session and closes the
connection as mitmproxy's idle timeout does. A proxy busy with a burst of handshakes is
slow, not stalled: bytes wait in its buffers, and the handshake gets more time. A handshake
that keeps moving is cut off after :data:`HARD_LIMIT` bounds when nothing waits to be read
(a client dripping one byte at a time). STARTTLS sessions are bounded by the
STARTTLS layer's own timeout.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import termios
import time
from typing import Any

from mitmproxy import connection, ctx
from mitmproxy.proxy import mode_specs

from certmatch.core import protocols

DEFAULT_S = 15
HARD_LIMIT = 4  # bounds: the most a handshake that keeps moving may take
OPTION = "certmatch_handshake_timeout"

# mitmproxy's reverse-mode schemes whose client speaks TLS first (``mode_specs.ReverseMode``).
_TLS_FIRST_SCHEMES = frozenset({"tls", "https"})

# The STARTTLS protocols whose server speaks first (LDAP's client does).
_GREETING_PROTOCOLS = frozenset(p for p in protocols.STARTTLS_PROTOCOLS if p != "ldap")


def tls_first(client: connection.Client) -> bool:
    """True when the client's first bytes must be a ClientHello: a reverse proxy to a TLS
    server. (In other modes the client may speak a plaintext protocol first.)"""
    mode = client.proxy_mode
    return isinstance(mode, mode_specs.ReverseMode) and mode.scheme in _TLS_FIRST_SCHEMES


def greeting_seconds() -> int | None:
    """How long a server may take to greet (the STARTTLS timeout), or None when the STARTTLS
    layer is not loaded or switched off (nothing then waits for a greeting)."""
    starttls = getattr(ctx.options, "certmatch_starttls_timeout", None)
    mode = getattr(ctx.options, "certmatch_starttls", "off")
    return int(starttls) if starttls and mode != "off" else None


def request_awaited(client: connection.Client, server: connection.Server | None) -> str | None:
    """What a forward proxy's client owes before the destination is known: its SOCKS5
    request (socks5 mode) or its HTTP CONNECT request (regular mode); None otherwise."""
    if destination_known(client, server):
        return None
    mode = client.proxy_mode
    if isinstance(mode, mode_specs.Socks5Mode):
        return "SOCKS5 request"
    if isinstance(mode, mode_specs.RegularMode):
        return "HTTP CONNECT request"
    return None


def destination_known(client: connection.Client, server: connection.Server | None) -> bool:
    """True once the proxy knows where the client goes: from the mode itself (reverse,
    transparent) or, for a forward proxy, once its request named the server."""
    if isinstance(client.proxy_mode, (mode_specs.Socks5Mode, mode_specs.RegularMode)):
        return server is not None and server.address is not None
    return True


def greeting_protocol(client: connection.Client, server: connection.Server | None) -> str | None:
    """The server-speaks-first STARTTLS protocol this connection is taken for: the one
    ``certmatch_starttls`` names, else the one the server's port is known for."""
    forced = getattr(ctx.options, "certmatch_starttls", "off")
    port = server.address[1] if server is not None and server.address else None
    if port is None and isinstance(client.proxy_mode, mode_specs.ReverseMode):
        port = client.proxy_mode.address[1]
    if forced not in ("auto", "off", ""):
        protocol = forced
    else:
        protocol = protocols.protocol_from_port(port)
        if not protocols.is_starttls_port(protocol, port):
            return None
    return protocol if protocol in _GREETING_PROTOCOLS else None


def seconds() -> int:
    """The bound in force: the option, never longer than the STARTTLS layer's timeout."""
    bound = int(ctx.options.certmatch_handshake_timeout)
    starttls = getattr(ctx.options, "certmatch_starttls_timeout", None)
    return min(bound, int(starttls)) if starttls else bound


def stalled(client: connection.Client, bound: float, *, hard_limit_passed: bool) -> bool | None:
    """Whether the client's connection waits on a peer that has sent nothing: no byte from
    either side waits to be read by the proxy, and (unless ``hard_limit_passed``) nothing
    has moved for ``bound`` seconds by mitmproxy's activity clock. None when it is gone.

    Bytes waiting to be read mean the proxy is the slow one (a burst of handshakes queued
    on its event loop), not the peer: that is never a stall.
    """
    handler = _handler(client)
    if handler is None:
        return None
    if any(_unread(io) for io in list(handler.transports.values())):
        return False
    if hard_limit_passed:
        return True
    return time.time() - handler.timeout_watchdog.last_activity >= bound


def _handler(client: connection.Client) -> Any:
    proxyserver = ctx.master.addons.get("proxyserver")
    return proxyserver.connections.get(client.id) if proxyserver is not None else None


def close_connection(client: connection.Client, reason: str) -> bool:
    """Close the client's connection (and so the server's) the way mitmproxy's idle timeout
    does: cancel its handler. False when the connection is already gone."""
    handler = _handler(client)
    if handler is None:
        return False
    transport = handler.transports.get(handler.client)
    if transport is None or transport.handler is None:
        return False
    transport.handler.cancel(reason)
    return True


def _unread(io: Any) -> bool:
    """True when bytes from this transport's peer wait in the proxy: in asyncio's stream
    buffer or still in the kernel's receive queue."""
    reader, writer = getattr(io, "reader", None), getattr(io, "writer", None)
    if isinstance(reader, asyncio.StreamReader) and len(getattr(reader, "_buffer", b"")) > 0:
        return True
    sock = writer.get_extra_info("socket") if isinstance(writer, asyncio.StreamWriter) else None
    if sock is None:
        return False
    fd = sock.fileno()
    if fd < 0:  # closed meanwhile
        return False
    waiting = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, waiting)
    except (OSError, ValueError):
        return False
    return waiting[0] > 0
