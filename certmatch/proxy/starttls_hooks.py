"""The hooks the STARTTLS layer raises, in mitmproxy's own style (see ``proxy/layers/tcp.py``).

The layer yields a hook; mitmproxy calls the method of the hook's name on every addon,
with the hook's one data object (``mode_servers.handle_hook`` unpacks ``(data,) =
hook.args()``). The capture addon implements both methods; any other addon may too::

    class Watch:
        def starttls_start(self, data: StartTlsData) -> None: ...
        def starttls_upgrade(self, data: StartTlsData) -> None: ...
        def starttls_plaintext_end(self, data: StartTlsData) -> None: ...
        def starttls_handshake_timeout(self, data: StartTlsData) -> None: ...

Defining a hook class registers its name in ``mitmproxy.hooks.all_hooks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mitmproxy.proxy.commands import StartHook
from mitmproxy.proxy.context import Context

from certmatch.core.facts import StartTlsFacts
from certmatch.core.tls_wire import WireSession


@dataclass
class StartTlsData:
    """One connection's plaintext phase, as the STARTTLS layer saw it."""

    context: Context
    protocol: str
    facts: StartTlsFacts
    """Shared with the layer: findings it makes later (injected bytes) reach the record."""
    error: str | None = None
    """Why the connection broke off, for ``starttls_plaintext_end`` and
    ``starttls_handshake_timeout``; None if it just ended."""
    failed_side: Literal["server", "client"] = "server"
    """Whose fault ``error`` is: the server's (silent, closed, garbage) or the client's."""
    client_silent: bool = False
    """For ``starttls_plaintext_end``: the client closed without sending a byte (a port
    check or a health probe)."""
    client_tls: WireSession | None = None
    """For ``starttls_plaintext_end``: the client answered the plaintext greeting with a TLS
    handshake (set up for implicit TLS on this port); its bytes read as TLS (its
    ``client_hello`` says what it asked for, unless it stopped before the whole of it)."""


@dataclass
class StarttlsStartHook(StartHook):
    """The STARTTLS layer took over a plaintext connection: from now on it bounds the
    waits of the plaintext phase and of the TLS handshakes after it."""

    data: StartTlsData


@dataclass
class StarttlsUpgradeHook(StartHook):
    """The server accepted the client's STARTTLS: the next TLS handshake on this
    connection is a STARTTLS one. mitmproxy's TLS hooks follow."""

    data: StartTlsData


@dataclass
class StarttlsPlaintextEndHook(StartHook):
    """The connection ends without a TLS handshake: the server did not offer or refused
    the upgrade, the client never asked, or the plaintext phase broke off
    (``data.error`` says why)."""

    data: StartTlsData


@dataclass
class StarttlsHandshakeTimeoutHook(StartHook):
    """The TLS handshakes after an accepted STARTTLS did not complete within the layer's
    timeout, after the client's ClientHello: ``data.error`` says which side stalled
    (``data.failed_side``). The layer closes the connection next."""

    data: StartTlsData
