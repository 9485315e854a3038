"""Observe mode: watch a client's TLS without terminating it (``certmatch proxy --observe``).

Load it instead of the capture addon::

    mitmdump -s certmatch/proxy/scripts/observe.py -s certmatch/proxy/scripts/starttls.py \
        --mode reverse:tls://mail.example.com:993 --set certmatch_record=session.jsonl

:class:`ObserveLayer` is a sans-io layer in mitmproxy's own style (see ``proxy/layers/tcp.py``)
that relays every byte unchanged in both directions with ``SendData`` and no flow object, so
nothing of the session is kept. It sends each chunk on first, then reads a copy of it with
:class:`certmatch.core.tls_wire.WireSession` until the client's decision can no longer change;
after that it only relays. It reports through two hooks (names as mitmproxy derives them):

- ``observe_decided(ObserveData)`` once the client's decision
  (:mod:`certmatch.core.observed_decision`) can no longer change while both sides are open;
- ``observe_end(ObserveData)`` once both sides have closed, for every other connection.

Exactly one of them per connection: a hook pauses the connection until every addon has run.

:class:`ObserveAddon` turns them into recorded sessions: ``presented="real"`` (the client saw
the server's own chain), ``chain_source`` ``wire`` (TLS <= 1.2, read from the Certificate
message), ``side-handshake`` (TLS 1.3: fetched by :mod:`certmatch.net.side_handshake`,
never delaying the relay) or ``resumed`` (no certificate in the handshake; the cached or
side-handshake chain). STARTTLS connections go through :class:`StartTlsLayer`, which hands
the TLS phase to an :class:`ObserveLayer` instead of mitmproxy's TLS layers.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mitmproxy import connection, ctx, exceptions
from mitmproxy.addonmanager import Loader
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events, layer, mode_specs, server_hooks
from mitmproxy.proxy.commands import StartHook
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import HttpLayer, HttpStream
from mitmproxy.proxy.utils import expect

import certmatch
from certmatch.core import alerts, tls_wire
from certmatch.core.facts import SessionFacts, StartTlsFacts
from certmatch.core.judge import Judge
from certmatch.core.observed_decision import ObservedDecision, observed_decision
from certmatch.core.recording import RecordingError, RecordingWriter
from certmatch.core.starttls import NEEDS_MORE, detect_protocol, make_machine
from certmatch.core.text import printable
from certmatch.core.trust import TrustStore, TrustStoreError
from certmatch.net.side_handshake import SideHandshakes, SideResult
from certmatch.proxy.connection_facts import new_facts
from certmatch.proxy.plaintext_port import implicit_tls_on_plaintext_port, plaintext_server
from certmatch.proxy.redirect_loop import RedirectLoopGuard
from certmatch.proxy.session_log import ca_certificate_pems, log_verdict
from certmatch.proxy.starttls_hooks import StartTlsData
from certmatch.proxy.starttls_layer import DEFAULT_TIMEOUT_S, StartTlsLayer

logger = logging.getLogger("certmatch")


@dataclass
class ObserveData:
    """One observed connection, as the layer saw it so far (shared with the addon)."""

    context: Context
    wire: tls_wire.WireSession = field(default_factory=tls_wire.WireSession)
    protocol: str | None = None  # known from the STARTTLS layer
    starttls: StartTlsFacts | None = None
    decision: ObservedDecision = field(default_factory=lambda: ObservedDecision(None))
    client_spoke: bool = False
    server_spoke: bool = False
    first_close: Literal["client", "server"] | None = None
    handshake_done_at: float | None = None  # monotonic: the client completed its handshake
    greeting_at: float | None = None  # the server's first bytes after that
    closed_at: float | None = None
    server_error: str | None = None
    ended: bool = False


@dataclass
class ObserveDecidedHook(StartHook):
    """The client's decision is final (it went on, alerted, or closed); the handshake's
    facts so far are in ``data.wire``."""

    data: ObserveData


@dataclass
class ObserveEndHook(StartHook):
    """The observed connection has ended on both sides."""

    data: ObserveData


class ObserveLayer(layer.Layer):
    """Relays a connection's bytes unchanged and reads the TLS in them; keeps no flow."""

    def __init__(
        self,
        context: Context,
        *,
        protocol: str | None = None,
        starttls: StartTlsFacts | None = None,
        client_first: bytes = b"",
    ) -> None:
        """``client_first``: what the client sent before this layer was chosen (its
        ClientHello), read only when the server cannot be reached: the record then still
        says what the client asked for. Otherwise those bytes come as events and are
        relayed."""
        super().__init__(context)
        self.data = ObserveData(context, protocol=protocol, starttls=starttls)
        self._client_first = client_first
        self._watching = True  # reading the bytes; False once nothing more can be learnt
        self._reported = False  # observe_decided was raised: no observe_end

    def __repr__(self) -> str:
        return f"ObserveLayer({self.data.wire.phase})"

    @expect(events.Start)
    def start(self, _: events.Event) -> layer.CommandGenerator[None]:
        server = self.context.server
        if server.timestamp_start is None:
            err = yield commands.OpenConnection(server)
            if err:
                self.data.server_error = f"cannot connect: {err}"
                if self._client_first:
                    self.data.client_spoke = True
                    self.data.wire.client_data(self._client_first)
                self._handle_event = self.done
                yield commands.CloseConnection(self.context.client)
                yield from self._end()
                return
        self._handle_event = self.relay

    _handle_event = start

    @expect(events.DataReceived, events.ConnectionClosed)
    def relay(self, event: events.Event) -> layer.CommandGenerator[None]:
        assert isinstance(event, events.ConnectionEvent)
        context = self.context
        from_client = event.connection == context.client
        if isinstance(event, events.DataReceived):
            # Relayed first and unchanged: reading never delays or alters a byte.
            yield commands.SendData(context.server if from_client else context.client, event.data)
            if self._watching:
                yield from self._read(event.data, from_client)
            return
        data = self.data
        if data.first_close is None:
            data.first_close = "client" if from_client else "server"
            data.closed_at = time.monotonic()
        if self._watching:
            yield from self._decide()
        all_done = not (
            (context.client.state & ConnectionState.CAN_READ)
            or (context.server.state & ConnectionState.CAN_READ)
        )
        if all_done:
            self._handle_event = self.done
            if context.server.state is not ConnectionState.CLOSED:
                yield commands.CloseConnection(context.server)
            if context.client.state is not ConnectionState.CLOSED:
                yield commands.CloseConnection(context.client)
            yield from self._end()
        else:
            send_to = context.server if from_client else context.client
            yield commands.CloseTcpConnection(send_to, half_close=True)

    @expect(events.DataReceived, events.ConnectionClosed)
    def done(self, _: events.Event) -> layer.CommandGenerator[None]:
        yield from ()

    def _read(self, chunk: bytes, from_client: bool) -> layer.CommandGenerator[None]:
        data = self.data
        if from_client:
            data.client_spoke = True
            data.wire.client_data(chunk)
        else:
            if data.handshake_done_at is not None and data.greeting_at is None:
                data.greeting_at = time.monotonic()
            if not data.server_spoke:
                data.server_spoke = True
                if data.server_error is None and data.wire.server_hello is None:
                    data.server_error = plaintext_server(chunk)
            data.wire.server_data(chunk)
        yield from self._decide()

    def _decide(self) -> layer.CommandGenerator[None]:
        # A hook pauses this connection's next event until every addon has run, and costs
        # CPU: there is one per connection, never in the handshake's path. observe_decided
        # while both sides are open (a session that goes on for hours is recorded now);
        # otherwise observe_end once both have closed.
        data = self.data
        decision = observed_decision(
            data.wire, client_spoke=data.client_spoke, closed_first=data.first_close
        )
        if decision.handshake_done and data.handshake_done_at is None:
            data.handshake_done_at = time.monotonic()
        data.decision = decision
        if decision.final or data.wire.finished:
            self._watching = False
            if decision.final and data.first_close is None:
                self._reported = True
                yield ObserveDecidedHook(data)

    def _end(self) -> layer.CommandGenerator[None]:
        data = self.data
        if data.ended:
            return
        data.ended = True
        if self._reported:
            return  # observe_decided told the addon all it records
        decision = data.decision
        if (
            data.first_close == "server"
            and decision.decision is None
            and not decision.handshake_done
            and data.wire.client_hello is not None
            and data.server_error is None
        ):
            data.server_error = (
                f"the server closed the connection during the handshake (phase {data.wire.phase})"
            )
        yield ObserveEndHook(data)


# -- choosing the layer ------------------------------------------------------------------


def _observable(context: Context, parents: list[layer.Layer]) -> bool:
    """A TCP connection with a known destination, reached in a mode observe mode serves."""
    if context.client.transport_protocol != "tcp" or context.server.address is None:
        return False
    if not parents:
        return False
    top = parents[-1]
    if isinstance(top, modes.ReverseProxy):
        spec = context.client.proxy_mode
        return isinstance(spec, mode_specs.ReverseMode) and spec.scheme in ("tls", "tcp")
    if isinstance(top, (modes.Socks5Proxy, modes.TransparentProxy)):
        return True
    return (
        isinstance(parents[0], modes.HttpProxy)
        and any(isinstance(p, HttpLayer) for p in parents)
        and isinstance(top, HttpStream)
    )


# -- the addon -----------------------------------------------------------------------------


@dataclass
class _Bare:
    spoke: bool = False
    server: connection.Server | None = None
    error: str | None = None


@dataclass
class _Session:
    data: ObserveData
    facts: SessionFacts | None = None
    side: asyncio.Task[SideResult] | None = None
    side_shared: bool = False
    chain_ready: bool = False
    written: bool = False


class ObserveAddon:
    """Chooses :class:`ObserveLayer` for every observable connection and records what it saw."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.writer: RecordingWriter | None = None
        self.judge: Judge | None = None
        self.side_handshakes = SideHandshakes()
        self.sessions_written = 0
        # Client connections with no observed layer (yet): whether the client spoke, and why
        # the server could not be reached; recorded when they end without one.
        self._bare: dict[str, _Bare] = {}

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "certmatch_record", str, "", "Append one JSON line per TLS session to this file."
        )
        loader.add_option(
            "certmatch_ca_file",
            Sequence[str],
            [],
            "Extra CA certificates (PEM files) to trust when judging server chains.",
        )
        loader.add_option(
            "certmatch_host",
            str,
            "",
            "The server name the client is configured with, used when it sends no SNI.",
        )
        loader.add_option(
            "certmatch_side_handshake_timeout",
            int,
            5,
            "Whole seconds a side handshake (TLS 1.3 and resumed sessions) may take.",
        )
        loader.add_option(
            "certmatch_side_handshake_ttl",
            int,
            60,
            "Whole seconds a side handshake's chain is reused for the same server and SNI.",
        )

    def configure(self, updated: set[str]) -> None:
        options = ctx.options
        if (
            "certmatch_side_handshake_timeout" in updated
            or "certmatch_side_handshake_ttl" in updated
        ):
            if (
                options.certmatch_side_handshake_timeout < 1
                or options.certmatch_side_handshake_ttl < 0
            ):
                raise exceptions.OptionsError(
                    "certmatch_side_handshake_timeout: at least 1 second; "
                    "certmatch_side_handshake_ttl: 0 or more seconds"
                )
            self.side_handshakes = SideHandshakes(
                ttl=options.certmatch_side_handshake_ttl,
                timeout=options.certmatch_side_handshake_timeout,
            )
        if "mode" in updated or "connection_strategy" in updated:
            _connect_after_the_client_hello(options)
        if "certmatch_ca_file" in updated or self.judge is None:
            try:
                self.judge = Judge(TrustStore.load(options.certmatch_ca_file))
            except TrustStoreError as exc:
                raise exceptions.OptionsError(str(exc)) from None
        if "certmatch_record" in updated or (
            "certmatch_ca_file" in updated and self.writer is not None
        ):
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if options.certmatch_record:
                try:
                    self.writer = RecordingWriter(
                        options.certmatch_record,
                        tool_version=certmatch.__version__,
                        ca_certificates=ca_certificate_pems(options.certmatch_ca_file),
                    )
                except (RecordingError, OSError) as exc:
                    raise exceptions.OptionsError(f"certmatch_record: {exc}") from None
                logger.info(
                    "certmatch: observing; recording TLS sessions to "
                    f"{printable(options.certmatch_record)}"
                )

    def running(self) -> None:
        _connect_after_the_client_hello(ctx.options)  # options given before the addon loaded
        if ctx.master.addons.get("certmatchcapture") is not None:
            logger.error(
                "certmatch: the observe and capture addons are both loaded: load observe.py "
                "to relay without intercepting, or capture.py to intercept, not both. Stopping."
            )
            ctx.master.shutdown()

    def done(self) -> None:
        for session in list(self.sessions.values()):
            if session.facts is not None:
                session.facts.notes.append("the proxy stopped while the connection was open")
                self._write(session)
        self.sessions.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- choosing the layer ------------------------------------------------------------

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        try:
            self._choose(nextlayer)
        except Exception as exc:  # noqa: BLE001 - a bug here must not cost the connection
            logger.error(
                "certmatch: internal error choosing the observe layer "
                f"({type(exc).__name__}: {printable(str(exc))}); this connection is relayed "
                "by mitmproxy's own layers."
            )

    def _choose(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        chosen = nextlayer.layer
        parents = context.layers
        if chosen is not None and chosen in parents:
            parents = parents[: parents.index(chosen)]
        bare = self._bare.get(context.client.id)
        if bare is not None and nextlayer.data_client():
            bare.spoke = True
        if not _observable(context, parents):
            return
        client_data = nextlayer.data_client()
        server_data = nextlayer.data_server()
        new: layer.Layer
        if tls_wire.starts_like_tls(client_data) or tls_wire.starts_like_sslv2_hello(client_data):
            new = ObserveLayer(context, client_first=client_data)
        else:
            mode = getattr(ctx.options, "certmatch_starttls", "auto")
            port = context.server.address[1] if context.server.address else None
            protocol = None
            if mode != "off":
                protocol = detect_protocol(port, server_data, client_data, mode)
            if protocol == NEEDS_MORE:
                del context.layers[len(parents) :]
                nextlayer.layer = None
                return  # asked again when more bytes arrive
            if protocol is None:
                new = ObserveLayer(context)  # not TLS and no STARTTLS: relayed, recorded
            else:
                timeout = getattr(ctx.options, "certmatch_starttls_timeout", DEFAULT_TIMEOUT_S)
                new = StartTlsLayer(
                    context, make_machine(protocol), timeout, tls_child=_observe_after_upgrade
                )
        self._bare.pop(context.client.id, None)
        # mitmproxy's own next_layer may have chosen first: its TLS layers marked the
        # connections as TLS and appended themselves; observe mode terminates no TLS.
        del context.layers[len(parents) :]
        context.layers.append(new)
        context.client.tls = False
        context.server.tls = False
        nextlayer.layer = new

    # -- hooks from the layers ---------------------------------------------------------

    def observe_decided(self, data: ObserveData) -> None:
        try:
            self._update(data)
        except Exception as exc:  # noqa: BLE001 - the session must survive our bugs
            self._internal_error("observe_decided", data, exc)

    def observe_end(self, data: ObserveData) -> None:
        try:
            self._update(data)
            session = self.sessions.get(data.context.client.id)
            if session is None:
                return
            if session.facts is None:
                session.facts = self._new_facts(data)
                self._fill(session)
            if session.side is not None and not session.chain_ready:
                return  # written when the side handshake ends (bounded by its timeout)
            del self.sessions[data.context.client.id]
            self._write(session)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("observe_end", data, exc)

    # -- connections that never got a layer -----------------------------------------------

    def client_connected(self, client: connection.Client) -> None:
        self._bare[client.id] = _Bare()

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        bare = self._bare.get(data.client.id)
        if bare is not None:
            bare.server = data.server
            bare.error = f"cannot connect: {data.server.error or 'connection failed'}"

    def client_disconnected(self, client: connection.Client) -> None:
        """A port check, a health probe or an unreachable server: one record, as the capture
        addon leaves for every client connection."""
        try:
            bare = self._bare.pop(client.id, None)
            if bare is None or (not bare.error and bare.spoke):
                return  # observed (its layer records it), or not a TLS connection we watch
            server = bare.server or connection.Server(address=None)
            facts = new_facts(client, server, None, ctx.options.certmatch_host)
            if bare.error:
                facts.server_error = bare.error  # the proxy closed the client: no decision
            elif not bare.spoke:
                facts.client_decision = "closed-before-handshake"
            self._write(_Session(ObserveData(Context(client, ctx.options)), facts), observed=False)
        except Exception as exc:  # noqa: BLE001
            logger.error(f"certmatch: internal error recording a connection ({exc!r})")

    def starttls_upgrade(self, data: StartTlsData) -> None:
        pass  # the ObserveLayer stacked after the upgrade carries the STARTTLS facts

    def starttls_plaintext_end(self, data: StartTlsData) -> None:
        """A STARTTLS connection that never reached TLS: recorded as the capture addon does."""
        try:
            context = data.context
            if data.client_tls is not None:
                # A TLS client on this STARTTLS port: recorded as when its ClientHello comes
                # before the greeting (the server speaks plaintext here), which went upstream
                # unchanged.
                facts = implicit_tls_on_plaintext_port(data, ctx.options.certmatch_host)
                facts.presented = "real"
                facts.upstream_sni = facts.sni
            else:
                facts = new_facts(context.client, context.server, None, ctx.options.certmatch_host)
                facts.tls_kind = "starttls"
                facts.starttls = data.facts
            facts.protocol = data.protocol
            if data.failed_side == "client":  # whose doing it was, as the capture addon says
                facts.client_error = data.error
            else:
                facts.server_error = data.error
            if data.client_silent:
                facts.client_decision = "closed-before-handshake"
            facts.notes.append("observe mode: the connection never reached TLS")
            self._write(_Session(ObserveData(context), facts), observed=False)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("starttls_plaintext_end", data, exc)

    # -- internals ---------------------------------------------------------------------

    def _update(self, data: ObserveData) -> None:
        key = data.context.client.id
        session = self.sessions.get(key)
        if session is None:
            session = self.sessions[key] = _Session(data)
        if session.written:
            return
        wire = data.wire
        if session.facts is None and wire.client_hello is not None:
            session.facts = self._new_facts(data)
        if session.facts is None:
            return
        self._fill(session)
        facts = session.facts
        if not session.chain_ready and session.side is None and wire.server_hello is not None:
            if wire.server_hello.hello_retry and not wire.tls13:
                return
            if wire.tls13 or wire.resumed:
                facts.chain_source = "resumed" if wire.resumed else "side-handshake"
                self._start_side_handshake(session)
            elif wire.phase in (tls_wire.PHASE_CERTIFICATE, tls_wire.PHASE_SERVER_DONE):
                facts.chain = [base64.b64encode(c).decode("ascii") for c in wire.chain]
                facts.chain_source = "wire"
                session.chain_ready = True
                if wire.chain_truncated:
                    facts.notes.append(
                        f"the server's Certificate message is {wire.certificate_length} bytes; "
                        f"only its first {tls_wire.MAX_HANDSHAKE_PREFIX} were read, and the "
                        f"{len(wire.chain)} whole certificate(s) in them recorded"
                    )
        if data.decision.final and (session.side is None or session.chain_ready):
            # Final: the layer raises no observe_end after this (see ObserveLayer._end). A
            # handshake that stopped before any certificate is written without one.
            if not facts.chain and not facts.server_error and not session.chain_ready:
                facts.server_error = (
                    f"no certificate was relayed: the TLS handshake stopped in phase {wire.phase}"
                )
            self.sessions.pop(key, None)
            self._write(session)

    def _new_facts(self, data: ObserveData) -> SessionFacts:
        context = data.context
        hello = data.wire.client_hello
        sni = hello.sni if hello else None
        facts = new_facts(context.client, context.server, sni, ctx.options.certmatch_host)
        facts.presented = "real"
        if data.server_error is None or not data.server_error.startswith("cannot connect"):
            facts.upstream_sni = sni  # the client's own ClientHello went upstream unchanged
        if data.starttls is not None:
            facts.tls_kind = "starttls"
            facts.starttls = data.starttls
        if data.protocol:
            facts.protocol = data.protocol
        if hello is not None:
            facts.client_alpn = list(hello.alpn)
            facts.client_tls_versions = list(hello.versions)
            facts.client_signature_algorithms = (
                list(hello.signature_algorithms) if hello.signature_algorithms is not None else None
            )
        if context.server.peername:
            facts.server_ip = context.server.peername[0]
        return facts

    def _fill(self, session: _Session) -> None:
        """Copy what the layer learnt since into the facts."""
        data, facts = session.data, session.facts
        assert facts is not None
        wire = data.wire
        if wire.server_hello is not None and not wire.server_hello.hello_retry:
            facts.tls_version = wire.server_hello.version
        decision = data.decision
        facts.client_decision = decision.decision
        facts.client_alert_code = decision.alert_code
        facts.client_alert = (
            (alerts.name_of(decision.alert_code) or f"alert_{decision.alert_code}")
            if decision.alert_code is not None
            else None
        )
        if decision.decision == "closed-after-handshake" and data.closed_at is not None:
            since = data.greeting_at or data.handshake_done_at or data.closed_at
            facts.client_waited = round(max(data.closed_at - since, 0.0), 3)
        if data.server_error and not facts.server_error:
            facts.server_error = data.server_error
        if wire.error and not any(n.startswith("observe: ") for n in facts.notes):
            facts.notes.append(f"observe: {wire.error}; the rest was relayed unread")
        if data.ended:
            note = f"observe: the connection ended in phase {wire.phase}"
            if note not in facts.notes:
                facts.notes.append(note)
        if context_server := data.context.server.peername:
            facts.server_ip = context_server[0]

    def _start_side_handshake(self, session: _Session) -> None:
        data, facts = session.data, session.facts
        assert facts is not None
        server = data.context.server
        address = server.peername or server.address
        if address is None:
            facts.notes.append("no server address for a side handshake")
            session.chain_ready = True
            return
        hello = data.wire.client_hello
        task, shared = self.side_handshakes.get(
            address[0],
            address[1],
            sni=facts.sni,
            versions=list(hello.versions) if hello else [],
            alpn=list(hello.alpn) if hello else [],
            signature_algorithms=list(hello.signature_algorithms or []) if hello else [],
            starttls=facts.protocol if facts.tls_kind == "starttls" else None,
        )
        session.side, session.side_shared = task, shared
        task.add_done_callback(functools.partial(self._side_done, session))

    def _side_done(self, session: _Session, task: asyncio.Task[SideResult]) -> None:
        try:
            facts = session.facts
            assert facts is not None
            result = task.result()
            session.chain_ready = True
            facts.chain = list(result.chain)
            if session.side_shared:
                facts.notes.append(
                    "the chain is from a side handshake made for an earlier session to the same "
                    "server and SNI (reused for a short time)"
                )
            if result.error:
                facts.notes.append(f"side handshake: {result.error}")
                if not facts.chain:
                    facts.server_error = f"side handshake: {result.error}"
            elif (
                result.tls_version and facts.tls_version and result.tls_version != facts.tls_version
            ):
                facts.notes.append(
                    f"the side handshake negotiated {result.tls_version}, the client "
                    f"{facts.tls_version}"
                )
            if facts.client_signature_algorithms and not result.signature_algorithms_copied:
                facts.notes.append(
                    "the side handshake offered OpenSSL's default signature algorithms: it "
                    "knows none of the client's by name"
                )
            if facts.sni and result.sni_sent is None:
                facts.notes.append(
                    "the side handshake sent no SNI: the client's is an IP address, which "
                    "RFC 6066 §3 does not permit as SNI"
                )
            if session.data.ended or session.data.decision.final:
                self.sessions.pop(session.data.context.client.id, None)
                self._write(session)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("side handshake", session.data, exc)

    def _write(self, session: _Session, *, observed: bool = True) -> None:
        """Judge, log and write the session once; ``observed``: its facts are to be
        completed from what its layer saw (not for a connection that never had one)."""
        if session.written or session.facts is None:
            return
        session.written = True
        facts = session.facts
        if observed:
            self._fill(session)
        verdict = None
        try:
            assert self.judge is not None
            verdict = self.judge.judgement(facts)
        except Exception as exc:  # noqa: BLE001
            facts.notes.append(f"analysis failed: {type(exc).__name__}: {exc}")
        log_verdict(
            facts, verdict
        )  # a clean match only at termlog_verbosity=debug, as intercepting
        if self.writer is None:
            return
        try:
            self.writer.write(facts)
            self.sessions_written += 1
        except Exception as exc:  # noqa: BLE001 - a full disk must not break mail
            logger.error(
                f"certmatch: could not write session {printable(facts.id)} to the recording "
                f"({type(exc).__name__}: {printable(str(exc))}). Traffic continues; check "
                "the disk and the file."
            )

    def _internal_error(self, where: str, data: Any, exc: Exception) -> None:
        logger.error(
            f"certmatch: internal error in {where} ({type(exc).__name__}: "
            f"{printable(str(exc))}); the connection is still relayed unchanged."
        )
        session = self.sessions.get(data.context.client.id)
        if session is not None and session.facts is not None:
            session.facts.notes.append(f"internal error in {where}: {type(exc).__name__}: {exc}")


def _connect_after_the_client_hello(options: Any) -> None:
    """In reverse mode to implicit TLS (``reverse:tls://``), connect to the server once the
    client's first bytes are in (mitmproxy's ``connection_strategy=lazy``), not before: the
    client speaks first there, and an unreachable server's session then still records the
    SNI the client sent. Every other mode keeps mitmproxy's eager connect (a STARTTLS server
    speaks first; a SOCKS5 or CONNECT client is told whether the server was reached)."""
    try:
        specs = [mode_specs.ProxyMode.parse(mode) for mode in options.mode]
    except ValueError:
        return  # mitmproxy reports a bad mode itself
    if (
        options.connection_strategy == "eager"
        and specs
        and all(isinstance(s, mode_specs.ReverseMode) and s.scheme == "tls" for s in specs)
    ):
        options.update(connection_strategy="lazy")


def _observe_after_upgrade(context: Context, protocol: str, facts: StartTlsFacts) -> layer.Layer:
    """The layer a STARTTLS layer stacks once the server accepted the upgrade."""
    return ObserveLayer(context, protocol=protocol, starttls=facts)


# With the guard that ends a transparent-mode redirect loop (the rule also matching the
# proxy's own connection to the server).
addons = [ObserveAddon(), RedirectLoopGuard()]
