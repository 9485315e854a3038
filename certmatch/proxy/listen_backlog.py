"""A listen backlog for bursts of connections (issue 13).

mitmproxy opens its listening sockets with ``asyncio.start_server`` and asyncio's default
backlog, 100, with no option to change it. A burst of 500 clients connecting at once then
overflows the accept queue: the kernel drops their SYNs or handshake ACKs (counted as
ListenOverflows), some clients time out before they ever reach the proxy, and nothing of
them is recorded. On Linux, ``listen()`` on a socket that already listens sets its backlog
anew, so the capture addon calls it again on each of mitmproxy's listening TCP sockets
once they are bound, and whenever mitmproxy rebinds them. The kernel caps the value at
``net.core.somaxconn`` (4096 by default since Linux 5.4).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

OPTION = "certmatch_listen_backlog"
DEFAULT = 4096


def raise_backlog(proxyserver: Any, backlog: int) -> int:
    """Set ``backlog`` on every listening TCP socket of mitmproxy's ``proxyserver`` addon;
    the number of sockets set."""
    done = 0
    for instance in proxyserver.servers:
        # ServerInstance keeps its asyncio servers in ``_servers`` (mode_servers.py); UDP and
        # WireGuard servers are mitmproxy_rs objects with no backlog.
        for server in getattr(instance, "_servers", ()):
            if not isinstance(server, asyncio.Server):
                continue
            for transport_socket in server.sockets:
                with contextlib.closing(transport_socket.dup()) as sock:
                    sock.listen(backlog)
                done += 1
    return done
