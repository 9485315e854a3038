"""A TLS client on a port where the server speaks plaintext first (a STARTTLS port).

The client is set up for implicit TLS where the server greets in plaintext (IMAP's ``* OK``,
SMTP's ``220``), whichever of the two spoke first on the wire: a ClientHello answered by a
greeting, or a greeting answered by a ClientHello. Both are recorded alike, as
``certmatch probe`` reports such a port: the server speaks plaintext here, and what to
change.

:class:`TlsClientOnPlaintextPort` is the sans-io layer for it, in mitmproxy's own style: it
relays every byte unchanged, reads the client's ClientHello (which may span TCP segments)
and the server's first bytes, then ends the connection and raises ``starttls_plaintext_end``
with ``client_tls`` set, so the capture and observe addons record it. The STARTTLS layer
hands over to it when a ClientHello answers the greeting; ``--mode reverse:tcp://`` chooses
it when the ClientHello comes first (mitmproxy would otherwise end the client's TLS at the
proxy and speak plaintext to the server).
"""

from __future__ import annotations

import logging
from typing import Literal

from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.utils import expect

from certmatch.core import protocols, tls_wire
from certmatch.core.facts import SessionFacts, StartTlsFacts
from certmatch.core.text import printable
from certmatch.proxy.connection_facts import new_facts
from certmatch.proxy.starttls_hooks import (
    StartTlsData,
    StarttlsPlaintextEndHook,
    StarttlsStartHook,
)

GREETING_SHOWN = 80  # characters of the greeting quoted in the record
SERVER_FIRST_KEPT = 512  # bytes of the server's first data kept to quote its greeting


def protocol_name(protocol: str) -> str:
    """The protocol as its users name it: ``IMAP``; submission is SMTP."""
    return "SMTP" if protocol == "submission" else protocol.upper()


def plaintext_server(first: bytes) -> str | None:
    """What to record when a server's first bytes, where a TLS ServerHello was due, are a
    line of text (an SMTP, IMAP, POP3 or NNTP greeting): the server speaks plaintext on this
    port, as ``certmatch probe`` says of it. None for anything else."""
    if not first or first[0] in (tls_wire.HANDSHAKE, tls_wire.ALERT):
        return None
    line = first.split(b"\n", 1)[0].rstrip(b"\r")
    if not line or not all(0x20 <= byte < 0x7F or byte == 0x09 for byte in line):
        return None
    text = line.decode("ascii")
    if len(text) > GREETING_SHOWN:
        text = text[: GREETING_SHOWN - 3] + "..."
    return (
        f"the server speaks plaintext here, not TLS: its first bytes were {text!r}, as on a "
        "STARTTLS or plaintext port. Point the client at the server's implicit-TLS port "
        "(993, 995, 465), or set it to use STARTTLS on this one"
    )


# When the server's first bytes are not at hand (mitmproxy's own TLS layer read them), only
# that they were text where a ServerHello was due.
PLAINTEXT_ANSWER = (
    "the server speaks plaintext here, not TLS: it answered the ClientHello with text where a "
    "TLS ServerHello was due, as on a STARTTLS or plaintext port. Point the client at the "
    "server's implicit-TLS port (993, 995, 465), or set it to use STARTTLS on this one"
)


def client_hello_after_greeting(protocol: str, server_first: bytes) -> str:
    """What to record when the client answered the server's plaintext greeting with a TLS
    ClientHello: the same words as for the other order (:func:`plaintext_server`), or, with no
    greeting line to quote, the protocol the server speaks here."""
    return plaintext_server(server_first) or (
        f"the server speaks {protocol_name(protocol)} in plaintext here, not TLS, and the client "
        "started a TLS handshake, as a client set up for implicit TLS does on a STARTTLS or "
        "plaintext port. Point the client at the server's implicit-TLS port (993, 995, 465), "
        "or set it to use STARTTLS on this one"
    )


def implicit_tls_on_plaintext_port(data: StartTlsData, configured_host: str) -> SessionFacts:
    """The facts of a client that started a TLS handshake where the server was to speak
    plaintext first (``data.client_tls``, from :class:`TlsClientOnPlaintextPort`): an implicit
    TLS session that never reached a certificate, asking for what its ClientHello asked for.
    No plaintext phase is recorded: the client sent nothing in plaintext."""
    assert data.client_tls is not None
    context = data.context
    hello = data.client_tls.client_hello
    facts = new_facts(context.client, context.server, hello.sni if hello else None, configured_host)
    if hello is not None:
        facts.client_alpn = list(hello.alpn)
        facts.client_tls_versions = list(hello.versions)
        facts.client_signature_algorithms = (
            list(hello.signature_algorithms) if hello.signature_algorithms is not None else None
        )
    else:
        facts.notes.append("the client stopped before the end of its ClientHello")
    if context.server.peername:
        facts.server_ip = context.server.peername[0]
    if not (data.error or "").startswith("cannot connect"):
        facts.notes.append(
            "the client started a TLS handshake where the server was to speak plaintext first; "
            "certmatch relayed what the client sent and closed the connection"
        )
    return facts


def starts_a_tls_handshake(data: bytes) -> bool:
    """A client's first bytes open a TLS handshake (or SSL 2.0's compatible hello) rather
    than a plaintext protocol's first command."""
    return tls_wire.starts_like_tls(data) or tls_wire.starts_like_sslv2_hello(data)


class TlsClientOnPlaintextPort(layer.Layer):
    """Relays a TLS client's first flight to a server that is to speak plaintext first, reads
    it, and ends the connection with a record once its ClientHello is whole and the server
    has spoken (its greeting, or its answer to the ClientHello), or on a close or after
    ``timeout`` seconds.

    ``protocol`` and ``server_first``: what the STARTTLS layer already knows when the
    greeting came first; otherwise the protocol is named by the greeting or the port.
    ``announce``: raise ``starttls_start`` (the STARTTLS layer has, when it hands over).
    """

    def __init__(
        self,
        context: Context,
        timeout: int,
        *,
        protocol: str | None = None,
        server_first: bytes = b"",
        announce: bool = True,
    ) -> None:
        super().__init__(context)
        self.timeout = timeout
        self.protocol = protocol
        self.server_first = server_first
        self.announce = announce
        self.wire = tls_wire.WireSession()
        self._client_read = 0
        self._timer: commands.RequestWakeup | None = None
        self._closed_by: Literal["server", "client"] | None = None

    def __repr__(self) -> str:
        return f"TlsClientOnPlaintextPort({self.wire.phase})"

    @expect(events.Start)
    def start(self, _: events.Event) -> layer.CommandGenerator[None]:
        if self.announce:
            # Blocking: the capture addon stops its pre-handshake clock; this layer has its own.
            yield StarttlsStartHook(StartTlsData(self.context, self._protocol(), StartTlsFacts()))
        server = self.context.server
        if server.timestamp_start is None:
            err = yield commands.OpenConnection(server)
            if err:
                yield from self._end(f"cannot connect: {err}")
                return
        self._handle_event = self.relay
        self._timer = commands.RequestWakeup(self.timeout)
        yield self._timer

    _handle_event = start

    @expect(events.DataReceived, events.ConnectionClosed, events.Wakeup)
    def relay(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Wakeup):
            if event.command is self._timer:
                yield from self._end()
            return
        assert isinstance(event, events.ConnectionEvent)
        by_server = event.connection == self.context.server
        if isinstance(event, events.DataReceived):
            # Relayed first and unchanged, as ever.
            if by_server:
                yield commands.SendData(self.context.client, event.data)
                if not self.server_first:
                    self.server_first = event.data[:SERVER_FIRST_KEPT]
            else:
                yield commands.SendData(self.context.server, event.data)
                self._client_read += len(event.data)
                self.wire.client_data(event.data)
            if self._client_hello_read() and self.server_first:
                yield from self._end()
            return
        self._closed_by = "server" if by_server else "client"
        yield from self._end()

    @expect(events.DataReceived, events.ConnectionClosed, events.Wakeup)
    def done(self, _: events.Event) -> layer.CommandGenerator[None]:
        yield from ()

    def _client_hello_read(self) -> bool:
        wire = self.wire
        return (
            wire.client_hello is not None
            or wire.finished
            or wire.error is not None
            or self._client_read >= tls_wire.MAX_HANDSHAKE_PREFIX
        )

    def _protocol(self) -> str:
        if self.protocol:
            return self.protocol
        address = self.context.server.address
        by_port = protocols.protocol_from_port(address[1] if address else None)
        seen = protocols.protocol_from_server_greeting(self.server_first[:SERVER_FIRST_KEPT])
        return protocols.refine_protocol(by_port, seen)

    def _end(self, error: str | None = None) -> layer.CommandGenerator[None]:
        self._handle_event = self.done
        side: Literal["server", "client"] = "server"
        if error is None:
            error, side = self._outcome()
        yield commands.Log(
            f"certmatch: {printable(error)}; closing the connection.", logging.WARNING
        )
        yield StarttlsPlaintextEndHook(
            StartTlsData(
                self.context,
                self._protocol(),
                StartTlsFacts(),
                error,
                side,
                client_tls=self.wire,
            )
        )
        for conn in (self.context.server, self.context.client):
            if conn.state is not ConnectionState.CLOSED:
                yield commands.CloseConnection(conn)

    def _outcome(self) -> tuple[str, Literal["server", "client"]]:
        """What the record says, and whose doing it was."""
        first = self.server_first
        if first:
            text = plaintext_server(first)
            if text is not None:
                return text, "server"
            if self.protocol:  # a greeting came first, but not a line of text to quote
                return client_hello_after_greeting(self.protocol, first), "server"
            if tls_wire.starts_like_tls(first) or first[:1] == bytes([tls_wire.ALERT]):
                return (
                    "the server answered the client's ClientHello with TLS: it speaks implicit "
                    "TLS on this port, which certmatch intercepts in --mode reverse:tls://, not "
                    "reverse:tcp:// (for STARTTLS and plaintext ports). Run the proxy with "
                    "--mode reverse:tls://HOST:PORT for this server"
                ), "server"
            return (
                "the server answered the client's TLS ClientHello with bytes that are neither "
                "TLS nor a line of text"
            ), "server"
        if self._closed_by == "client":
            return (
                "the client closed the connection after starting a TLS handshake, before the "
                "server said anything"
            ), "client"
        if self._closed_by == "server":
            return (
                "the server closed the connection after the client's TLS ClientHello, "
                "without a word"
            ), "server"
        return (
            f"the server sent nothing within {self.timeout} s of the client's TLS ClientHello: "
            "no greeting and no TLS answer"
        ), "server"
