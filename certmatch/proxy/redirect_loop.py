"""Refuse a transparent proxy's own connection when the redirect sends it back to itself.

In ``--mode transparent`` a NAT rule sends the client's connection to the proxy, and the
proxy connects to the original destination. When the rule also matches the proxy's own
connections (an ``iptables -t nat -A OUTPUT ... -j REDIRECT`` for every program on the
machine), that upstream connection is redirected to the proxy again, which connects again,
and so on: thousands of connections a second, and the client never reaches its server.

:class:`RedirectLoopGuard` notices it in the ``server_connect`` hook: a transparent-mode
client whose address is the local end of a TCP socket this very process holds is the
proxy's own upstream connection come back. The next hop is refused (``server.error``) with
a message that says how to exclude the proxy from the rule, so the loop ends at once.
Linux only (``/proc``); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import struct

from mitmproxy.proxy import mode_specs, server_hooks

logger = logging.getLogger("certmatch")

LOOP_ERROR = (
    "redirect loop: this connection comes from certmatch's own connection to the server, "
    "redirected back to the proxy by the NAT rule. Exclude the proxy's own traffic from the "
    "rule: match only the clients (-m owner --uid-owner/--gid-owner, or -s for a client "
    "network), or exempt the proxy's user (-m owner ! --uid-owner USER)"
)


class RedirectLoopGuard:
    """mitmproxy addon: ends a transparent-mode redirect loop at its second hop."""

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        client = data.client
        if not isinstance(client.proxy_mode, mode_specs.TransparentMode) or not client.peername:
            return
        try:
            looped = _is_own_socket(client.peername[0], client.peername[1])
        except Exception as exc:  # noqa: BLE001 - a guard must never cost a connection
            logger.debug(f"certmatch: redirect loop check failed ({exc!r})")
            return
        if looped:
            data.server.error = LOOP_ERROR
            # A warning: mitmproxy exits on an error logged while it is still starting, and
            # the first looping connection can arrive that early.
            logger.warning(f"certmatch: {LOOP_ERROR}.")


def _is_own_socket(host: str, port: int) -> bool:
    """Whether ``host:port`` is the local end of a TCP socket this process holds."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)  # the column names
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and local_end(fields[1]) == (address, port):
                    inodes.add(fields[9])
    if not inodes:
        return False
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") in wanted:
                return True
    return False


def local_end(
    field: str,
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    """``/proc/net/tcp{,6}``'s ``local_address`` column: 32-bit words in host byte order,
    then the port in hex."""
    raw_host, _, raw_port = field.partition(":")
    words = [int(raw_host[i : i + 8], 16) for i in range(0, len(raw_host), 8)]
    packed = b"".join(struct.pack("=I", word) for word in words)
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    if len(packed) == 4:
        address = ipaddress.IPv4Address(socket.inet_ntop(socket.AF_INET, packed))
    elif len(packed) == 16:
        address = ipaddress.IPv6Address(packed)
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    else:
        return None
    return address, int(raw_port, 16)
