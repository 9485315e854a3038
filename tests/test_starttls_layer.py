"""The STARTTLS layer, sans-io: events in, commands out, per protocol, no sockets.

mitmproxy's own Playbook is not shipped in its wheel, so :class:`Playbook`
below is a small stand-in: it feeds one event at a time and answers
blocking commands (hooks, OpenConnection) at once, the way the proxy
server would, keeping the transcript for assertions. What the layer reports
arrives as its two hooks, ``starttls_upgrade`` and ``starttls_plaintext_end``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import mitmproxy.hooks
import pytest
from mitmproxy import connection
from mitmproxy.options import Options
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import ClientTLSLayer, ServerTLSLayer, TCPLayer
from mitmproxy.proxy.layers.tls import TlsClienthelloHook, TlsStartServerHook
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons

from certmatch.core.facts import StartTlsFacts
from certmatch.core.starttls import make_machine
from certmatch.proxy.starttls_hooks import (
    StartTlsData,
    StarttlsPlaintextEndHook,
    StarttlsStartHook,
    StarttlsUpgradeHook,
)
from certmatch.proxy.starttls_layer import StartTlsLayer

OPEN = connection.ConnectionState.OPEN
CLOSED = connection.ConnectionState.CLOSED


# -- the harness -----------------------------------------------------------------------


@dataclass
class Recorded:
    protocol: str
    facts: StartTlsFacts
    error: str | None = None
    upgraded: bool = False
    client_silent: bool = False
    failed_side: str = "server"


@dataclass
class FakeRecorder:
    """Stands in for the capture addon; keeps what the layer's hooks reported."""

    upgrades: list[Recorded] = field(default_factory=list)
    without_tls: list[Recorded] = field(default_factory=list)

    def starttls_upgrade(self, hook: commands.StartHook) -> None:
        assert isinstance(hook, StarttlsUpgradeHook)
        (data,) = hook.args()  # one data object, as mitmproxy's handle_hook requires
        self.upgrades.append(Recorded(data.protocol, data.facts, data.error, upgraded=True))

    def starttls_plaintext_end(self, hook: commands.StartHook) -> None:
        assert isinstance(hook, StarttlsPlaintextEndHook)
        (data,) = hook.args()
        self.without_tls.append(
            Recorded(
                data.protocol,
                data.facts,
                data.error,
                client_silent=data.client_silent,
                failed_side=data.failed_side,
            )
        )


class Playbook:
    """Feeds events to a layer and answers its blocking commands like the proxy server does."""

    def __init__(
        self,
        layer: StartTlsLayer,
        *,
        connect_error: str | None = None,
        hooks: dict[type, Callable[[commands.StartHook], None]] | None = None,
    ) -> None:
        self.layer = layer
        self.connect_error = connect_error
        self.hooks = hooks or {}
        self.transcript: list[commands.Command] = []

    def __call__(self, event: events.Event) -> list[commands.Command]:
        out: list[commands.Command] = []
        queue: list[events.Event] = [event]
        while queue:
            for command in self.layer.handle_event(queue.pop(0)):
                out.append(command)
                reply = self._answer(command)
                if reply is not None:
                    queue.insert(0, reply)
        self.transcript += out
        return out

    def _answer(self, command: commands.Command) -> events.Event | None:
        if isinstance(command, commands.OpenConnection):
            if self.connect_error is None:
                command.connection.state = OPEN
                command.connection.timestamp_start = 1.0
                command.connection.peername = command.connection.address
            return events.OpenConnectionCompleted(command, self.connect_error)
        if isinstance(command, commands.StartHook):
            handler = self.hooks.get(type(command))
            if handler is not None:
                handler(command)
            return events.HookCompleted(command)
        if isinstance(command, commands.CloseConnection):
            command.connection.state = CLOSED
        return None


def sent(out: list[commands.Command], conn: connection.Connection) -> bytes:
    return b"".join(
        c.data for c in out if isinstance(c, commands.SendData) and c.connection is conn
    )


def closed(out: list[commands.Command]) -> set[str]:
    return {
        "client" if isinstance(c.connection, connection.Client) else "server"
        for c in out
        if isinstance(c, commands.CloseConnection)
    }


def wakeups(out: list[commands.Command]) -> list[commands.RequestWakeup]:
    return [c for c in out if isinstance(c, commands.RequestWakeup)]


def make_context(port: int, *, server_connected: bool = True) -> Context:
    client = connection.Client(
        peername=("127.0.0.1", 50000),
        sockname=("127.0.0.1", port),
        timestamp_start=1.0,
        state=OPEN,
        proxy_mode=ProxyMode.parse(f"reverse:tcp://127.0.0.1:{port}"),
    )
    context = Context(client, Options())
    context.server = connection.Server(address=("127.0.0.1", port))
    if server_connected:
        context.server.state = OPEN
        context.server.timestamp_start = 1.0
        context.server.peername = ("127.0.0.1", port)
    return context


def client_hello(server_name: str | None) -> bytes:
    """A real ClientHello from Python's ssl module."""
    tls = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    wrapped = tls.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        wrapped.do_handshake()
    return outgoing.read()


def start(protocol: str, port: int, **kwargs: object) -> tuple[Playbook, Context, FakeRecorder]:
    context = make_context(port, server_connected=bool(kwargs.pop("server_connected", True)))
    recorder = FakeRecorder()
    hooks: dict[type, Callable[[commands.StartHook], None]] = {
        StarttlsUpgradeHook: recorder.starttls_upgrade,
        StarttlsPlaintextEndHook: recorder.starttls_plaintext_end,
    }
    hooks.update(kwargs.pop("hooks", {}))  # type: ignore[call-overload]
    layer = StartTlsLayer(context, make_machine(protocol), timeout=5)
    playbook = Playbook(layer, hooks=hooks, **kwargs)  # type: ignore[arg-type]
    playbook(events.Start())
    return playbook, context, recorder


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag, len(content)]) + content


LDAP_STARTTLS = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x77, tlv(0x80, b"1.3.6.1.4.1.1466.20037")))
LDAP_SUCCESS = tlv(
    0x30, tlv(0x02, b"\x01") + tlv(0x78, tlv(0x0A, b"\x00") + tlv(0x04, b"") + tlv(0x04, b""))
)

# Per protocol: port, the plaintext conversation before the upgrade reply, the positive reply.
CONVERSATIONS: dict[str, tuple[int, list[tuple[str, bytes]], bytes]] = {
    "smtp": (
        587,
        [
            ("s", b"220 smtp.example.test ESMTP\r\n"),
            ("c", b"EHLO client\r\n"),
            ("s", b"250-smtp.example.test\r\n250 STARTTLS\r\n"),
            ("c", b"STARTTLS\r\n"),
        ],
        b"220 Ready to start TLS\r\n",
    ),
    "imap": (
        143,
        [("s", b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"), ("c", b"x1 STARTTLS\r\n")],
        b"x1 OK Begin TLS negotiation now\r\n",
    ),
    "pop3": (
        110,
        [
            ("s", b"+OK ready\r\n"),
            ("c", b"CAPA\r\n"),
            ("s", b"+OK\r\nSTLS\r\n.\r\n"),
            ("c", b"STLS\r\n"),
        ],
        b"+OK Begin TLS\r\n",
    ),
    "ldap": (389, [("c", LDAP_STARTTLS)], LDAP_SUCCESS),
    "nntp": (
        119,
        [
            ("s", b"200 news ready\r\n"),
            ("c", b"CAPABILITIES\r\n"),
            ("s", b"101 caps\r\nVERSION 2\r\nSTARTTLS\r\n.\r\n"),
            ("c", b"STARTTLS\r\n"),
        ],
        b"382 Continue with TLS negotiation\r\n",
    ),
}


def replay(playbook: Playbook, context: Context, turns: list[tuple[str, bytes]]) -> None:
    for side, data in turns:
        conn = context.client if side == "c" else context.server
        out = playbook(events.DataReceived(conn, data))
        other = context.server if side == "c" else context.client
        assert sent(out, other) == data, f"{side} bytes {data!r} not relayed unchanged"


# -- the upgrade ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(CONVERSATIONS))
def test_upgrade_hands_over_to_mitmproxys_tls_layers(protocol: str) -> None:
    port, turns, reply = CONVERSATIONS[protocol]
    seen_sni: list[str | None] = []

    def on_clienthello(hook: commands.StartHook) -> None:
        assert isinstance(hook, TlsClienthelloHook)
        seen_sni.append(hook.data.client_hello.sni)
        hook.data.establish_server_tls_first = True  # as the capture addon does

    playbook, context, recorder = start(protocol, port, hooks={TlsClienthelloHook: on_clienthello})
    replay(playbook, context, turns)
    assert recorder.upgrades == []
    out = playbook(events.DataReceived(context.server, reply))
    assert sent(out, context.client) == reply
    assert [r.facts.phase for r in recorder.upgrades] == ["handshake"]
    layer = playbook.layer
    assert isinstance(layer.child_layer, ServerTLSLayer)
    assert isinstance(layer.child_layer.child_layer, ClientTLSLayer)
    assert isinstance(layer.child_layer.child_layer.child_layer, TCPLayer)
    # The server handshake waits for the client's ClientHello, then uses its SNI.
    assert sent(out, context.server) == b""
    out = playbook(events.DataReceived(context.client, client_hello("mail.example.test")))
    assert seen_sni == ["mail.example.test"]
    assert any(isinstance(c, TlsStartServerHook) for c in out)
    assert recorder.without_tls == []


@pytest.mark.parametrize("protocol", sorted(CONVERSATIONS))
def test_a_reply_arriving_one_byte_at_a_time_upgrades_only_when_complete(protocol: str) -> None:
    port, turns, reply = CONVERSATIONS[protocol]
    playbook, context, recorder = start(protocol, port)
    replay(playbook, context, turns)
    relayed = b""
    for i in range(len(reply) - 1):
        relayed += sent(
            playbook(events.DataReceived(context.server, reply[i : i + 1])), context.client
        )
        assert playbook.layer.child_layer is None
    relayed += sent(playbook(events.DataReceived(context.server, reply[-1:])), context.client)
    assert relayed == reply
    assert playbook.layer.child_layer is not None and len(recorder.upgrades) == 1


@pytest.mark.parametrize("protocol", sorted(CONVERSATIONS))
def test_bytes_coalesced_with_the_reply_never_reach_tls(protocol: str) -> None:
    port, turns, reply = CONVERSATIONS[protocol]
    playbook, context, recorder = start(protocol, port)
    replay(playbook, context, turns)
    out = playbook(events.DataReceived(context.server, reply + b"250 injected\r\n"))
    assert sent(out, context.client) == reply
    # More plaintext from the server before the TLS handshake started: dropped too.
    out = playbook(events.DataReceived(context.server, b"more\r\n"))
    assert sent(out, context.client) == b"" and sent(out, context.server) == b""
    facts = recorder.upgrades[0].facts
    assert facts.injection == (
        f"the server sent 20 byte(s) after its positive "
        f"{playbook.layer.machine.upgrade_command} reply, before the TLS handshake"
    )


@pytest.mark.parametrize("protocol", sorted(CONVERSATIONS))
def test_client_bytes_pipelined_after_starttls_are_not_forwarded(protocol: str) -> None:
    port, turns, reply = CONVERSATIONS[protocol]
    playbook, context, recorder = start(protocol, port)
    *before, (_, request) = turns
    replay(playbook, context, before)
    out = playbook(events.DataReceived(context.client, request + b"NOOP\r\n"))
    assert sent(out, context.server) == request
    out = playbook(events.DataReceived(context.server, reply))
    assert sent(out, context.server) == b""
    assert "the client sent 6 byte(s)" in (recorder.upgrades[0].facts.injection or "")


# -- ending without TLS -------------------------------------------------------------------


def test_refused_upgrade_goes_on_in_plaintext_and_is_recorded_at_close() -> None:
    playbook, context, recorder = start("imap", 143)
    replay(
        playbook,
        context,
        [("s", b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"), ("c", b"a STARTTLS\r\n")],
    )
    out = playbook(events.DataReceived(context.client, b"b LOGOUT\r\n"))
    assert sent(out, context.server) == b""
    out = playbook(events.DataReceived(context.server, b"a NO [UNAVAILABLE] no TLS\r\n"))
    assert sent(out, context.client) == b"a NO [UNAVAILABLE] no TLS\r\n"
    assert sent(out, context.server) == b"b LOGOUT\r\n"
    out = playbook(events.ConnectionClosed(context.server))
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert (record.facts.phase, record.facts.server_reply, record.error) == (
        "refused",
        "a NO [UNAVAILABLE] no TLS",
        None,
    )
    assert recorder.upgrades == []


def test_a_silent_server_times_out_waiting_for_the_greeting() -> None:
    playbook, _, recorder = start("smtp", 25)
    [timer] = wakeups(playbook.transcript)
    assert timer.delay == 5.0
    out = playbook(events.Wakeup(timer))
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert record.facts.phase == "greeting"
    assert record.error == "the server sent no greeting within 5 s"


def test_a_server_that_never_answers_starttls_times_out_and_a_stale_timer_does_not() -> None:
    playbook, context, recorder = start("pop3", 110)
    [greeting_timer] = wakeups(playbook.transcript)
    replay(playbook, context, [("s", b"+OK hi\r\n")])
    assert playbook(events.Wakeup(greeting_timer)) == []  # the greeting came in time
    out = playbook(events.DataReceived(context.client, b"STLS\r\n"))
    [reply_timer] = wakeups(out)
    out = playbook(events.Wakeup(reply_timer))
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert (record.facts.phase, record.error) == (
        "requested",
        "the server sent no reply to STLS within 5 s",
    )
    # After giving up the layer ignores late events instead of raising.
    assert playbook(events.DataReceived(context.server, b"+OK late\r\n")) == []


def test_a_server_closing_mid_upgrade_is_an_error_with_the_phase() -> None:
    playbook, context, recorder = start("nntp", 119)
    replay(playbook, context, [("s", b"200 hi\r\n"), ("c", b"STARTTLS\r\n")])
    out = playbook(events.ConnectionClosed(context.server))
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert record.facts.phase == "requested"
    assert record.error == "the server closed the connection while the reply to STARTTLS was due"


def test_garbage_from_the_server_closes_the_client_with_a_reason() -> None:
    playbook, context, recorder = start("smtp", 25)
    out = playbook(events.DataReceived(context.server, b"\x00\x01binary\r\n"))
    assert sent(out, context.client) == b""
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert record.facts.phase == "failed"
    assert record.error and "not an SMTP reply" in record.error


def test_an_unreachable_server_is_recorded_and_the_client_closed() -> None:
    playbook, _, recorder = start(
        "ldap", 389, server_connected=False, connect_error="Connection refused"
    )
    assert any(isinstance(c, commands.OpenConnection) for c in playbook.transcript)
    assert closed(playbook.transcript) == {"client"}
    [record] = recorder.without_tls
    assert record.error == "cannot connect to the server: Connection refused"


def test_ldap_opens_the_server_connection_itself_when_none_is_open() -> None:
    playbook, context, recorder = start("ldap", 389, server_connected=False)
    assert context.server.connected
    assert wakeups(playbook.transcript) == []  # the client speaks first: nothing is due yet
    replay(playbook, context, CONVERSATIONS["ldap"][1])
    playbook(events.DataReceived(context.server, LDAP_SUCCESS))
    assert recorder.upgrades[0].facts.server_reply == "resultCode 0 (success)"


def test_a_client_that_never_starts_tls_is_closed_after_the_deadline() -> None:
    port, turns, reply = CONVERSATIONS["imap"]
    playbook, context, recorder = start("imap", port)
    replay(playbook, context, turns)
    out = playbook(events.DataReceived(context.server, reply))
    [deadline] = wakeups(out)
    out = playbook(events.Wakeup(deadline))
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert record.error == (
        "the client sent no TLS ClientHello within 5 s after the server accepted STARTTLS"
    )
    assert record.failed_side == "client"  # the server did its part: it is not its fault


def test_a_plaintext_session_without_upgrade_is_recorded_once_at_close() -> None:
    playbook, context, recorder = start("pop3", 110)
    replay(
        playbook,
        context,
        [
            ("s", b"+OK hi\r\n"),
            ("c", b"USER test\r\n"),
            ("s", b"+OK\r\n"),
            ("c", b"QUIT\r\n"),
            ("s", b"+OK bye\r\n"),
        ],
    )
    playbook(events.ConnectionClosed(context.server))
    playbook(events.ConnectionClosed(context.client))
    [record] = recorder.without_tls
    assert (record.facts.plaintext_auth, record.facts.client_requested, record.error) == (
        "USER",
        None,
        None,
    )


def test_a_client_that_closes_without_a_word_is_reported_once_as_silent() -> None:
    """A port probe or a health check: one record, saying the client never spoke (issue 9),
    never a server fault."""
    playbook, context, recorder = start("imap", 143)
    playbook(events.DataReceived(context.server, b"* OK hi\r\n"))
    out = playbook(events.ConnectionClosed(context.client))
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert (record.client_silent, record.error, record.upgraded) == (True, None, False)
    assert recorder.upgrades == []


@pytest.mark.parametrize(
    ("protocol", "greeting", "goodbye"),
    [
        ("smtp", b"220 smtp.example.test ESMTP\r\n", b"QUIT\r\n"),
        ("imap", b"* OK ready\r\n", b"a1 LOGOUT\r\n"),
        ("pop3", b"+OK ready\r\n", b"QUIT\r\n"),
        ("nntp", b"200 news ready\r\n", b"QUIT\r\n"),
    ],
)
def test_a_server_closing_after_its_greeting_is_its_fault_unless_the_client_said_goodbye(
    protocol: str, greeting: bytes, goodbye: bytes
) -> None:
    """Issue 13: a server that closed right after its greeting was recorded as a client that
    never asked for STARTTLS. The client had no chance to; after its QUIT or LOGOUT a close
    is the normal end."""
    port = CONVERSATIONS[protocol][0]
    playbook, context, recorder = start(protocol, port)
    replay(playbook, context, [("s", greeting)])
    out = playbook(events.ConnectionClosed(context.server))
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert (record.facts.phase, record.failed_side) == ("plaintext", "server")
    command = "STLS" if protocol == "pop3" else "STARTTLS"
    assert record.error == (
        f"the server closed the connection after its greeting, before the client asked for {command}"
    )

    playbook, context, recorder = start(protocol, port)
    replay(playbook, context, [("s", greeting), ("c", goodbye)])
    playbook(events.ConnectionClosed(context.server))
    [record] = recorder.without_tls
    assert record.error is None


def test_a_client_pipelining_after_starttls_then_hanging_up_keeps_the_injection() -> None:
    """Issue 13: the bytes a client sent after STARTTLS are the injection finding even when it
    hangs up before the server's reply; the record must keep it."""
    port, turns, _ = CONVERSATIONS["smtp"]
    playbook, context, recorder = start("smtp", port)
    replay(playbook, context, turns[:-1])
    out = playbook(events.DataReceived(context.client, b"STARTTLS\r\nMAIL FROM:<a@b>\r\n"))
    assert sent(out, context.server) == b"STARTTLS\r\n"
    out = playbook(events.ConnectionClosed(context.client))
    assert closed(out) == {"client", "server"}
    [record] = recorder.without_tls
    assert record.facts.injection == (
        "the client sent 17 byte(s) after its STARTTLS request, before the server's reply"
    )
    assert record.failed_side == "client"
    assert record.error == "the client closed the connection while the reply to STARTTLS was due"


def test_the_layer_announces_itself_before_arming_its_timer() -> None:
    """The capture addon stops its own pre-handshake clock when the layer takes over."""
    started: list[str] = []
    playbook, _, _ = start(
        "smtp", 25, hooks={StarttlsStartHook: lambda hook: started.append(hook.name)}
    )
    assert started == ["starttls_start"]
    hooks = [c for c in playbook.transcript if isinstance(c, commands.StartHook)]
    assert isinstance(hooks[0], StarttlsStartHook)
    assert len(wakeups(playbook.transcript)) == 1


def test_a_client_that_spoke_is_not_silent() -> None:
    playbook, context, recorder = start("pop3", 110)
    replay(playbook, context, [("s", b"+OK hi\r\n"), ("c", b"CAPA\r\n")])
    playbook(events.ConnectionClosed(context.client))
    [record] = recorder.without_tls
    assert record.client_silent is False


# -- timers armed in one state, firing in a later one -------------------------------------


@pytest.mark.parametrize("protocol", sorted(CONVERSATIONS))
def test_plaintext_timers_firing_after_the_upgrade_never_reach_the_tls_layers(
    protocol: str,
) -> None:
    """The crash of issue 9: "Unexpected event type at TCPLayer.relay_messages ... got Wakeup",
    30 s after every STARTTLS session still open. A stale greeting or reply timer must stop
    at this layer."""
    port, turns, reply = CONVERSATIONS[protocol]
    playbook, context, recorder = start(protocol, port)
    replay(playbook, context, turns)
    playbook(events.DataReceived(context.server, reply))
    *plaintext_timers, deadline = wakeups(playbook.transcript)
    assert plaintext_timers, "a reply was due at least once"
    # Once both handshakes are done, the TLS layers hand every event down to a TCPLayer
    # relaying messages; a started TCPLayer stands in for that stack here.
    relay = TCPLayer(context, ignore=True)
    assert list(relay.handle_event(events.Start())) == []
    playbook.layer.child_layer = relay
    playbook.layer._server_tls_started = True
    for timer in plaintext_timers:
        assert playbook(events.Wakeup(timer)) == []
    out = playbook(events.DataReceived(context.client, b"a NOOP\r\n"))
    assert sent(out, context.server) == b"a NOOP\r\n"
    assert closed(playbook.transcript) == set()
    assert recorder.without_tls == [] and len(recorder.upgrades) == 1
    # The handshake deadline is this layer's own too, and still counts.
    assert closed(playbook(events.Wakeup(deadline))) == {"client", "server"}


def test_timers_firing_after_the_layer_closed_the_connection_are_ignored() -> None:
    playbook, context, recorder = start("imap", 143)
    [greeting_timer] = wakeups(playbook.transcript)
    playbook(events.DataReceived(context.server, b"* OK hi\r\n"))
    playbook(events.DataReceived(context.client, b"a STARTTLS\r\n"))
    [reply_timer] = wakeups(playbook.transcript)[1:]
    playbook(events.ConnectionClosed(context.server))
    assert len(recorder.without_tls) == 1
    for timer in (greeting_timer, reply_timer):
        assert playbook(events.Wakeup(timer)) == []
    assert playbook(events.ConnectionClosed(context.client)) == []
    assert len(recorder.without_tls) == 1


def test_events_queued_behind_the_upgrade_hook_go_to_the_tls_layers() -> None:
    """The upgrade hook blocks the layer; a ClientHello arriving meanwhile is replayed to
    the TLS layers once every addon has seen the hook, never to the plaintext relay."""
    port, turns, reply = CONVERSATIONS["smtp"]
    playbook, context, _ = start("smtp", port)
    replay(playbook, context, turns)
    layer = playbook.layer
    out = list(layer.handle_event(events.DataReceived(context.server, reply)))
    [hook] = [c for c in out if isinstance(c, StarttlsUpgradeHook)]
    assert out[-1] is hook and layer.child_layer is None
    hello = client_hello("smtp.example.test")
    assert list(layer.handle_event(events.DataReceived(context.client, hello))) == []
    out = list(layer.handle_event(events.HookCompleted(hook)))
    assert isinstance(layer.child_layer, ServerTLSLayer)
    assert any(isinstance(c, TlsClienthelloHook) for c in out)
    assert layer.machine.facts.injection is None  # the ClientHello was not taken as plaintext


# -- the hooks, as mitmproxy dispatches them ------------------------------------------------


def test_the_hooks_are_registered_and_reach_an_addon_by_name() -> None:
    seen: list[tuple[str, StartTlsData]] = []

    class Watch:
        def starttls_upgrade(self, data: StartTlsData) -> None:
            seen.append(("starttls_upgrade", data))

        def starttls_plaintext_end(self, data: StartTlsData) -> None:
            seen.append(("starttls_plaintext_end", data))

    assert mitmproxy.hooks.all_hooks["starttls_upgrade"] is StarttlsUpgradeHook
    assert mitmproxy.hooks.all_hooks["starttls_plaintext_end"] is StarttlsPlaintextEndHook
    context = make_context(143)
    upgrade = StartTlsData(context, "imap", StartTlsFacts(phase="handshake"))
    ended = StartTlsData(context, "imap", StartTlsFacts(phase="refused"), "why")

    async def dispatch() -> None:
        with taddons.context(Watch()) as tctx:
            await tctx.master.addons.handle_lifecycle(StarttlsUpgradeHook(upgrade))
            await tctx.master.addons.handle_lifecycle(StarttlsPlaintextEndHook(ended))

    asyncio.run(dispatch())
    assert seen == [("starttls_upgrade", upgrade), ("starttls_plaintext_end", ended)]
