"""mitmproxy addon and layer: intercept STARTTLS (SMTP, IMAP, POP3, LDAP, NNTP).

Load it beside the capture addon::

    mitmdump -s addons/capture.py -s addons/starttls.py \
        --mode reverse:tcp://mail.example.com:143 --set certmatch_record=session.jsonl

A ``next_layer`` hook picks :class:`StartTlsLayer` for a plaintext TCP
connection whose server greets like a mail or news server (or whose client
opens with an LDAPMessage), or for every plaintext connection with
``certmatch_starttls=<protocol>``. The layer relays the plaintext phase
unchanged, driven by a pure machine from :mod:`certmatch.core.starttls`; once the
server accepts the upgrade it stacks mitmproxy's own ServerTLSLayer ->
ClientTLSLayer -> TCPLayer (one that notes who closed first), so the capture
addon's TLS hooks (faithful SNI, chain recording, mirror, block/pass) apply
exactly as for implicit TLS.

The layer reports through hooks (:mod:`certmatch.proxy.starttls_hooks`):
``starttls_start`` when it takes over a connection, ``starttls_upgrade`` when the
server accepts, ``starttls_plaintext_end`` for a connection that never reaches TLS
(not offered, refused, broken off), and ``starttls_handshake_timeout`` when the
handshakes after the upgrade stall. A server that stays silent when an answer is due,
answers garbage, closes before the client asked for the upgrade (not after its QUIT or
LOGOUT) or while its reply is due, ends the connection with a recorded error naming the
phase and the side at fault; the proxy carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from mitmproxy import ctx, exceptions, tcp
from mitmproxy.addonmanager import Loader
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events, layer, mode_specs
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import ClientTLSLayer, ServerTLSLayer, modes
from mitmproxy.proxy.layers.http import HttpLayer, HttpStream
from mitmproxy.proxy.utils import expect

from certmatch.core.facts import StartTlsFacts
from certmatch.core.starttls import (
    GREETING,
    HANDSHAKE,
    NEEDS_MORE,
    PLAINTEXT,
    STARTTLS_PROTOCOLS,
    StartTlsMachine,
    detect_protocol,
    make_machine,
)
from certmatch.core.text import printable
from certmatch.proxy import close_race
from certmatch.proxy.plaintext_port import (
    SERVER_FIRST_KEPT,
    TlsClientOnPlaintextPort,
    starts_a_tls_handshake,
)
from certmatch.proxy.starttls_hooks import (
    StartTlsData,
    StarttlsHandshakeTimeoutHook,
    StarttlsPlaintextEndHook,
    StarttlsStartHook,
    StarttlsUpgradeHook,
)
from certmatch.proxy.tcp_relay import CloseOrderTCPLayer

logger = logging.getLogger("certmatch")

# Builds the layer that takes over once the server accepted the upgrade, instead of
# mitmproxy's TLS layers (observe mode): (context, protocol, the plaintext phase's facts).
type TlsChild = Callable[[Context, str, StartTlsFacts], layer.Layer]

MODE_CHOICES = ("auto", *[p for p in STARTTLS_PROTOCOLS if p != "submission"], "off")
DEFAULT_TIMEOUT_S = 30


class StartTlsLayer(layer.Layer):
    """Relays a STARTTLS protocol's plaintext phase, then hands over to mitmproxy's TLS layers.

    States, as in mitmproxy's own layers: ``start`` -> ``relay_plaintext`` ->
    ``relay_tls`` (the TLS layers below do the work) -> ``relay_established`` (both
    handshakes over: a bare pass-through) or ``done``. Every state takes every event that
    can still reach it: a timer armed in one state may fire in a later one, and a
    connection may close at any time.
    """

    child_layer: layer.Layer | None

    def __init__(
        self,
        context: Context,
        machine: StartTlsMachine,
        timeout: int = DEFAULT_TIMEOUT_S,
        *,
        tls_child: TlsChild | None = None,
    ) -> None:
        super().__init__(context)
        self.machine = machine
        self.tls_child = tls_child
        self.timeout = timeout
        self.child_layer = None
        self._client_tls: ClientTLSLayer | None = None
        self._timers: set[commands.RequestWakeup] = set()  # all this layer ever armed
        self._timer: commands.RequestWakeup | None = None  # the one that counts now
        self._timer_phase: str | None = None
        self._server_tls_started = False
        self._client_spoke = False
        self._client_hello_relayed = False
        self._server_first = b""  # the start of the server's first data (its greeting)

    def __repr__(self) -> str:
        return f"StartTlsLayer({self.machine.protocol}, {self.machine.phase})"

    # -- states --------------------------------------------------------------------

    @expect(events.Start)
    def start(self, _: events.Event) -> layer.CommandGenerator[None]:
        machine = self.machine
        # Blocking: the capture addon stops its own pre-handshake clock before this layer's runs.
        yield StarttlsStartHook(StartTlsData(self.context, machine.protocol, machine.facts))
        server = self.context.server
        if server.timestamp_start is None:
            err = yield commands.OpenConnection(server)
            if err:
                yield from self._give_up(f"cannot connect to the server: {err}")
                return
        self._handle_event = self.relay_plaintext
        if self.machine.waiting_for_server:
            yield from self._arm_timer()

    _handle_event = start

    @expect(events.DataReceived, events.ConnectionClosed, events.Wakeup)
    def relay_plaintext(self, event: events.Event) -> layer.CommandGenerator[None]:
        machine = self.machine
        if isinstance(event, events.Wakeup):
            if event.command is self._timer and machine.phase == self._timer_phase:
                yield from self._give_up(
                    f"the server sent no {self._awaited()} within {self.timeout} s"
                )
            return
        assert isinstance(event, events.ConnectionEvent)
        by_server = event.connection == self.context.server
        if isinstance(event, events.DataReceived):
            before = machine.phase
            if by_server:
                if not self._server_first:
                    self._server_first = event.data[:SERVER_FIRST_KEPT]
                relay = machine.server_data(event.data)
            else:
                if not self._client_spoke and starts_a_tls_handshake(event.data):
                    yield from self._tls_client(event.data)
                    return
                self._client_spoke = True
                relay = machine.client_data(event.data)
            if relay.to_server:
                yield commands.SendData(self.context.server, relay.to_server)
            if relay.to_client:
                yield commands.SendData(self.context.client, relay.to_client)
            if machine.failed:
                yield from self._give_up(machine.error or "the server's reply is not understood")
            elif machine.accepted:
                yield from self._upgrade()
            elif machine.phase != before and machine.waiting_for_server:
                yield from self._arm_timer()
            return
        if not by_server and not self._client_spoke:
            # A port probe or a client that gave up at once: recorded as such.
            yield from self._end_plaintext(None, client_silent=True)
            return
        if not by_server:
            machine.client_left()
        who: Literal["server", "client"] = "server" if by_server else "client"
        error = None
        if machine.waiting_for_server:
            error = f"the {who} closed the connection while the {self._awaited()} was due"
        elif by_server and machine.phase == PLAINTEXT and not machine.client_said_goodbye:
            # Not after the client's QUIT or LOGOUT: the server ended a session the client
            # had not finished, before the upgrade was asked for.
            after = "after its greeting, " if machine.server_speaks_first else ""
            error = (
                f"the server closed the connection {after}before the client asked for "
                f"{machine.upgrade_command}"
            )
        yield from self._end_plaintext(error, failed_side=who)

    @expect(events.ConnectionEvent, events.CommandCompleted, events.MessageInjected)
    def relay_tls(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Wakeup) and event.command in self._timers:
            if event.command is self._timer:
                yield from self._handshake_deadline()
            return  # a timer of the plaintext phase: never the TLS layers' business
        if (
            isinstance(event, events.DataReceived)
            and event.connection == self.context.server
            and not self._server_tls_started
            and self.tls_child is None
        ):
            # The server spoke after its positive reply but before our ClientHello:
            # never TLS, so never relayed into the session.
            self.machine.late_server_bytes(len(event.data))
            yield commands.Log(
                f"certmatch: the server sent {len(event.data)} plaintext byte(s) after "
                f"accepting {self.machine.upgrade_command}; dropped.",
                logging.WARNING,
            )
            return
        yield from self._to_child(event)

    @expect(events.ConnectionEvent, events.CommandCompleted, events.MessageInjected)
    def done(self, _: events.Event) -> layer.CommandGenerator[None]:
        yield from ()

    # -- plaintext -----------------------------------------------------------------

    def _awaited(self) -> str:
        if self.machine.phase == GREETING:
            return "greeting"
        return f"reply to {self.machine.upgrade_command}"

    def _arm_timer(self) -> layer.CommandGenerator[None]:
        self._timer = commands.RequestWakeup(self.timeout)
        self._timer_phase = self.machine.phase
        self._timers.add(self._timer)
        yield self._timer

    def _give_up(self, error: str) -> layer.CommandGenerator[None]:
        self.machine.broke_off(error)
        yield commands.Log(
            f"certmatch: {self.machine.protocol} STARTTLS stopped in phase "
            f"{self.machine.phase!r}: {printable(error)}; closing the client connection.",
            logging.WARNING,
        )
        yield from self._end_plaintext(error)

    def _end_plaintext(
        self,
        error: str | None,
        *,
        client_silent: bool = False,
        failed_side: Literal["server", "client"] = "server",
    ) -> layer.CommandGenerator[None]:
        self._handle_event = self.done
        machine = self.machine
        yield commands.Log(
            f"certmatch: {machine.protocol} connection ended without TLS in phase "
            f"{machine.facts.phase}" + (f": {printable(error)}" if error else ""),
            logging.DEBUG,
        )
        yield StarttlsPlaintextEndHook(
            StartTlsData(
                self.context,
                machine.protocol,
                machine.facts,
                error,
                failed_side,
                client_silent,
            )
        )
        yield from self._close_both()

    def _close_both(self) -> layer.CommandGenerator[None]:
        # Not only ``connected`` (fully open): a side whose peer already half-closed still has
        # its own half to close, or it lingers in CLOSE-WAIT.
        for conn in (self.context.server, self.context.client):
            if conn.state is not ConnectionState.CLOSED:
                yield commands.CloseConnection(conn)

    # -- a TLS client on this STARTTLS port --------------------------------------------

    def _tls_client(self, data: bytes) -> layer.CommandGenerator[None]:
        """The client answered the greeting with a TLS handshake: it is set up for implicit
        TLS here. The layer that reads its ClientHello and records it takes over."""
        self._client_spoke = True
        self._timer = None  # the plaintext phase's timers now stop nothing
        self.child_layer = TlsClientOnPlaintextPort(
            self.context,
            self.timeout,
            protocol=self.machine.protocol,
            server_first=self._server_first,
            announce=False,
        )
        self._handle_event = self.relay_tls_client
        yield from self.relay_tls_client(events.Start())
        yield from self.relay_tls_client(events.DataReceived(self.context.client, data))

    def relay_tls_client(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Wakeup) and event.command in self._timers:
            return  # a timer of the plaintext phase
        assert self.child_layer is not None
        yield from self.child_layer.handle_event(event)

    # -- upgrade -------------------------------------------------------------------

    def _upgrade(self) -> layer.CommandGenerator[None]:
        machine = self.machine
        machine.facts.phase = HANDSHAKE
        yield commands.Log(
            "certmatch: "
            f"{machine.protocol} STARTTLS accepted ({printable(str(machine.facts.server_reply))})",
            logging.DEBUG,
        )
        # Blocking: the addons know of the upgrade before the ClientHello is read.
        yield StarttlsUpgradeHook(StartTlsData(self.context, machine.protocol, machine.facts))
        if self.tls_child is not None:
            # Observe mode: the TLS is relayed, not terminated; no handshake deadline either
            # (the client and server keep their own), and the plaintext phase's timer, when
            # it fires, finds nothing to stop.
            self._timer = None
            self.child_layer = self.tls_child(self.context, machine.protocol, machine.facts)
            self._handle_event = self.relay_tls
            yield from self._to_child(events.Start())
            return
        # Layer.__init__ appends each to context.layers: ClientTLSLayer finds the
        # ServerTLSLayer right above it and so waits for the client's ClientHello
        # before the upstream handshake, as for implicit TLS.
        server_tls = ServerTLSLayer(self.context)
        client_tls = ClientTLSLayer(self.context)
        server_tls.child_layer = client_tls
        client_tls.child_layer = BoundedTCPLayer(self.context)
        self._client_tls = client_tls
        self.child_layer = server_tls
        self._handle_event = self.relay_tls
        yield from self._to_child(events.Start())
        yield from self._arm_timer()

    def _to_child(self, event: events.Event) -> layer.CommandGenerator[None]:
        assert self.child_layer is not None
        if (
            self.tls_child is not None
            and isinstance(event, events.DataReceived)
            and event.connection == self.context.server
            and not self._server_tls_started
            and not self._client_hello_relayed
        ):
            # Observe mode relays every byte; plaintext the server sent after accepting, before
            # the client's ClientHello, is still the injection the STARTTLS finding names.
            self.machine.late_server_bytes(len(event.data))
        if isinstance(event, events.DataReceived) and event.connection == self.context.client:
            self._client_hello_relayed = True
        for command in self.child_layer.handle_event(event):
            if isinstance(command, commands.SendData) and command.connection == self.context.server:
                self._server_tls_started = True
            yield command
        if self._handshakes_over():
            self._handle_event = self.relay_established

    def _handshakes_over(self) -> bool:
        """Nothing left for this layer to watch: from now on the TLS layers below see every
        event as they would under mitmproxy's own ``NextLayer``."""
        if not (self._server_tls_started and self._client_hello_relayed):
            return False  # the late-bytes checks above still apply
        if self.tls_child is not None:
            return True  # observe mode arms no handshake deadline
        return self.context.client.tls_established and self.context.server.tls_established

    def relay_established(self, event: events.Event) -> layer.CommandGenerator[None]:
        """The relay after both handshakes: hands each event straight to the TLS layers (as
        mitmproxy's ``NextLayer`` does once it has chosen), which keeps a long session's
        bulk as cheap per chunk as stock mitmproxy's. Only this layer's own timers stop here:
        the handshake deadline, now moot, and any of the plaintext phase."""
        if isinstance(event, events.Wakeup) and event.command in self._timers:
            return _no_commands()
        assert self.child_layer is not None
        return self.child_layer.handle_event(event)

    def _handshake_deadline(self) -> layer.CommandGenerator[None]:
        if self.context.client.tls_established and self.context.server.tls_established:
            return
        client_hello_seen = self._client_tls is not None and self._client_tls.client_hello_parsed
        accepted = f"after the server accepted {self.machine.upgrade_command}"
        side: Literal["server", "client"]
        if not client_hello_seen:
            side = "client"
            error = f"the client sent no TLS ClientHello within {self.timeout} s {accepted}"
        elif not self.context.server.tls_established:
            side = "server"
            error = (
                f"the server did not complete the TLS handshake within {self.timeout} s after it "
                f"accepted {self.machine.upgrade_command}"
            )
        else:
            side = "client"
            error = (
                f"the client did not finish its TLS handshake within {self.timeout} s {accepted}"
            )
        self.machine.broke_off(error)
        yield commands.Log(
            f"certmatch: {printable(error)}; closing the connection.", logging.WARNING
        )
        if client_hello_seen:
            # The capture addon's TLS hooks saw this session; it notes the timeout and
            # records the session when the connection closes.
            yield StarttlsHandshakeTimeoutHook(
                StartTlsData(self.context, self.machine.protocol, self.machine.facts, error, side)
            )
            self._handle_event = self.done
            yield from self._close_both()
        else:
            yield from self._end_plaintext(error, failed_side=side)


def _no_commands() -> layer.CommandGenerator[None]:
    yield from ()


class BoundedTCPLayer(CloseOrderTCPLayer):
    """The relay after a STARTTLS handshake: keeps at most the latest two messages in the flow.

    mitmproxy's ``TCPLayer`` appends every chunk to ``flow.messages`` for the session's whole
    life; the ``tcp_message`` hook (the capture addon's) reads only the latest one, so the
    older ones are dropped before the next is appended and memory stays flat however long
    the session lasts.
    """

    def relay_messages(self, event: events.Event) -> layer.CommandGenerator[None]:
        # Trimmed before the next message is appended rather than after each relay (no
        # generator of its own around mitmproxy's on every chunk): a hook still finds the
        # message before the latest too, and at most two are kept.
        flow: tcp.TCPFlow | None = self.flow
        if flow is not None and len(flow.messages) > 1:
            del flow.messages[:-1]
        return super().relay_messages(event)


class StartTlsAddon:
    """Chooses :class:`StartTlsLayer` for plaintext STARTTLS connections."""

    def load(self, loader: Loader) -> None:
        close_race.install()  # closing both sides here must not leave one in CLOSE-WAIT
        loader.add_option(
            "certmatch_starttls",
            str,
            "auto",
            "STARTTLS interception: 'auto' recognises SMTP, IMAP, POP3 and NNTP by the server's "
            "greeting and LDAP by the client's first message; a protocol name treats every "
            "plaintext connection as that protocol; 'off' leaves plaintext connections alone.",
            choices=MODE_CHOICES,
        )
        loader.add_option(
            "certmatch_starttls_timeout",
            int,
            DEFAULT_TIMEOUT_S,
            "Whole seconds to wait for a server's greeting, its reply to STARTTLS, and the "
            "TLS handshakes after it; then the connection is closed and the error recorded.",
        )

    def configure(self, updated: set[str]) -> None:
        if "certmatch_starttls_timeout" in updated and ctx.options.certmatch_starttls_timeout < 1:
            raise exceptions.OptionsError(
                "certmatch_starttls_timeout: give a whole number of seconds, at least 1"
            )

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        try:
            self._choose(nextlayer)
        except Exception as exc:  # noqa: BLE001 - a bug here must not cost the connection
            logger.error(
                "certmatch: internal error choosing the STARTTLS layer "
                f"({type(exc).__name__}: {printable(str(exc))}); "
                "this connection is relayed without STARTTLS interception."
            )

    def _choose(self, nextlayer: layer.NextLayer) -> None:
        mode = ctx.options.certmatch_starttls
        if "certmatch_side_handshake_ttl" in ctx.options:
            return  # observe mode: its addon chooses the STARTTLS layer with its own relay
        context = nextlayer.context
        # Another addon (mitmproxy's own next_layer) may already have chosen; its
        # layers were appended to context.layers and are removed if we take over.
        chosen = nextlayer.layer
        parents = context.layers
        if chosen is not None and chosen in parents:
            parents = parents[: parents.index(chosen)]
        if mode == "off":
            return
        if _tls_client_on_reverse_tcp(context, parents, nextlayer.data_client()):
            # mitmproxy would end the client's TLS here and speak plaintext to the server.
            del context.layers[len(parents) :]
            context.client.tls = context.server.tls = False  # set by its TLS layers, if chosen
            nextlayer.layer = TlsClientOnPlaintextPort(
                context, ctx.options.certmatch_starttls_timeout
            )
            return
        if not _plaintext_tcp_to_known_server(context, parents):
            return
        port = context.server.address[1] if context.server.address else None
        protocol = detect_protocol(port, nextlayer.data_server(), nextlayer.data_client(), mode)
        if protocol is None:
            return
        del context.layers[len(parents) :]
        nextlayer.layer = None
        if protocol == NEEDS_MORE:
            return  # asked again when more bytes arrive
        nextlayer.layer = StartTlsLayer(
            context, make_machine(protocol), ctx.options.certmatch_starttls_timeout
        )


def _tls_client_on_reverse_tcp(
    context: Context, parents: list[layer.Layer], client_data: bytes
) -> bool:
    """A client that starts a TLS handshake in ``--mode reverse:tcp://``, where the server is
    to speak plaintext first (a STARTTLS port): implicit TLS on the wrong port, or a proxy
    pointed at an implicit-TLS server with the wrong scheme. (In the other modes mitmproxy
    speaks TLS to the server too, and the capture addon records what the server answers.)"""
    if context.client.transport_protocol != "tcp" or not parents:
        return False
    spec = context.client.proxy_mode
    return (
        isinstance(parents[-1], modes.ReverseProxy)
        and isinstance(spec, mode_specs.ReverseMode)
        and spec.scheme == "tcp"
        and starts_a_tls_handshake(client_data)
    )


def _plaintext_tcp_to_known_server(context: Context, parents: list[layer.Layer]) -> bool:
    """True for a TCP connection with a known destination that is not inside TLS or HTTP."""
    if context.client.transport_protocol != "tcp" or context.client.tls or context.server.tls:
        return False
    if context.server.address is None or not parents:
        return False
    top = parents[-1]
    if isinstance(top, modes.ReverseProxy):
        spec = context.client.proxy_mode
        return isinstance(spec, mode_specs.ReverseMode) and spec.scheme == "tcp"
    if isinstance(top, (modes.Socks5Proxy, modes.TransparentProxy)):
        return True
    # Regular mode: the tunnel after an HTTP CONNECT.
    return (
        isinstance(parents[0], modes.HttpProxy)
        and any(isinstance(p, HttpLayer) for p in parents)
        and isinstance(top, HttpStream)
    )


addons = [StartTlsAddon()]
