"""A bound on the time a TLS handshake may take through the proxy (issue 13).

Without it, a client that connects and sends nothing, or a server that accepts TCP and
never answers the TLS handshake, holds the client's socket (and the server's) until
mitmproxy's idle timeout, ``tcp_timeout``: 600 s. The capture addon arms a timer per
connection (from the client's connection in a reverse TLS mode, else from its
ClientHello). When it fires before the client's handshake is done and nothing has moved on
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

DEFAULT_S = 15
HARD_LIMIT = 4  # bounds: the most a handshake that keeps moving may take
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
