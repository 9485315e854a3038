"""The STARTTLS layer once both handshakes are over: a bare pass-through to the TLS layers.

After the upgrade the layer watches for plaintext the server slips in before the TLS
starts and bounds the handshakes with a deadline; once both handshakes are done neither
can happen, and the layer hands every event straight to the TLS layers below (as
mitmproxy's ``NextLayer`` does), so a long session relays each chunk as cheaply as stock
mitmproxy. Only its own timers stop at it. Sans-io first, then a real session's bulk
through ``certmatch``'s capture to a real dovecot.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers.tcp import TcpMessageHook
from proxy_fixtures import inprocess_proxy
from servers.clients import LoopbackIMAP4
from test_starttls_layer import CONVERSATIONS, Playbook, closed, replay, sent, start, wakeups

from certmatch.proxy.capture import CertmatchCapture
from certmatch.proxy.starttls_layer import BoundedTCPLayer, StartTlsAddon, StartTlsLayer
from certmatch.proxy.tcp_relay import FIRST_CLOSE


def upgraded(protocol: str) -> tuple[Playbook, StartTlsLayer, BoundedTCPLayer]:
    """A layer past the server's positive reply, with a started relay standing in for the
    TLS layers (which hand every event down to it once both handshakes are done)."""
    port, turns, reply = CONVERSATIONS[protocol]
    playbook, context, _ = start(protocol, port)
    replay(playbook, context, turns)
    playbook(events.DataReceived(context.server, reply))
    relay = BoundedTCPLayer(context)
    [hook] = list(relay.handle_event(events.Start()))
    assert list(relay.handle_event(events.HookCompleted(hook))) == []  # tcp_start answered
    playbook.layer.child_layer = relay
    playbook.layer._server_tls_started = True  # the ClientHello went upstream
    return playbook, playbook.layer, relay


def relayed_through_hooks(out: list[commands.Command]) -> list[bytes]:
    """The chunks the relay announced with ``tcp_message``, as the hook saw them."""
    return [c.flow.messages[-1].content for c in out if isinstance(c, TcpMessageHook)]


@pytest.mark.pure
@pytest.mark.parametrize("protocol", sorted(CONVERSATIONS))
def test_once_both_handshakes_are_done_events_go_straight_to_the_tls_layers(
    protocol: str,
) -> None:
    playbook, layer_, relay = upgraded(protocol)
    context = layer_.context
    context.server.timestamp_tls_setup = 2.0
    out = playbook(events.DataReceived(context.client, b"a NOOP\r\n"))
    assert layer_._handle_event == layer_.relay_tls  # the client's handshake is not done yet
    assert sent(out, context.server) == b"a NOOP\r\n"
    context.client.timestamp_tls_setup = 2.1
    out = playbook(events.DataReceived(context.server, b"a OK NOOP done\r\n"))
    assert sent(out, context.client) == b"a OK NOOP done\r\n"
    assert layer_._handle_event == layer_.relay_established

    chunks = [bytes([65 + i % 26]) * (1000 + i) for i in range(40)]
    for i, chunk in enumerate(chunks):
        source, target = (
            (context.server, context.client) if i % 2 else (context.client, context.server)
        )
        out = playbook(events.DataReceived(source, chunk))
        assert sent(out, target) == chunk  # unchanged, to the other side only
        assert sent(out, source) == b""
        assert relayed_through_hooks(out) == [chunk]  # tcp_message saw this chunk as the latest
        assert relay.flow is not None and len(relay.flow.messages) <= 2  # memory stays flat
    assert layer_.machine.facts.injection is None


@pytest.mark.pure
def test_after_the_handshakes_this_layers_timers_stop_here_and_nothing_closes() -> None:
    """Every timer the layer armed (greeting, reply, handshake deadline) may still fire
    during a long session; none may reach the TCP relay, which would crash on a Wakeup."""
    playbook, layer_, _ = upgraded("imap")
    context = layer_.context
    context.server.timestamp_tls_setup = context.client.timestamp_tls_setup = 2.0
    playbook(events.DataReceived(context.client, b"a NOOP\r\n"))
    assert layer_._handle_event == layer_.relay_established
    timers = wakeups(playbook.transcript)
    assert len(timers) >= 2  # the greeting's or reply's, and the handshake deadline
    for timer in timers:
        assert playbook(events.Wakeup(timer)) == []
    assert closed(playbook.transcript) == set()
    out = playbook(events.DataReceived(context.server, b"* 1 EXISTS\r\n"))
    assert sent(out, context.client) == b"* 1 EXISTS\r\n"


@pytest.mark.pure
def test_a_wakeup_the_tls_layers_asked_for_reaches_them() -> None:
    playbook, layer_, _ = upgraded("smtp")
    context = layer_.context
    context.server.timestamp_tls_setup = context.client.timestamp_tls_setup = 2.0
    playbook(events.DataReceived(context.client, b"NOOP\r\n"))
    seen: list[events.Event] = []

    class Child(layer.Layer):
        def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
            seen.append(event)
            yield from ()

    layer_.child_layer = Child(context)
    theirs = events.Wakeup(commands.RequestWakeup(1))
    assert playbook(theirs) == []
    assert seen == [theirs]


@pytest.mark.pure
def test_the_first_close_is_noted_and_the_other_side_half_closed() -> None:
    playbook, layer_, relay = upgraded("pop3")
    context = layer_.context
    context.server.timestamp_tls_setup = context.client.timestamp_tls_setup = 2.0
    playbook(events.DataReceived(context.client, b"STAT\r\n"))
    assert layer_._handle_event == layer_.relay_established
    out = playbook(events.ConnectionClosed(context.server))
    [half] = [c for c in out if isinstance(c, commands.CloseTcpConnection)]
    assert half.connection is context.client and half.half_close
    assert relay.flow is not None and relay.flow.metadata[FIRST_CLOSE][0] == "server"


@pytest.mark.pure
def test_until_the_client_finished_its_handshake_the_deadline_still_counts() -> None:
    playbook, layer_, _ = upgraded("imap")
    context = layer_.context
    context.server.timestamp_tls_setup = 2.0  # the server's handshake done, the client's not
    playbook(events.DataReceived(context.client, b"partial handshake"))
    assert layer_._handle_event == layer_.relay_tls
    deadline = wakeups(playbook.transcript)[-1]
    assert closed(playbook(events.Wakeup(deadline))) == {"client", "server"}


# -- a real session's bulk ------------------------------------------------------------------


class LayerWatch:
    """Keeps the STARTTLS layers the addon before it chose (``next_layer`` runs in order)."""

    def __init__(self) -> None:
        self.layers: list[StartTlsLayer] = []

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        if isinstance(nextlayer.layer, StartTlsLayer):
            self.layers.append(nextlayer.layer)


def test_a_starttls_bulk_upload_and_download_arrive_whole(tmp_path: Path, dovecot, pki) -> None:
    size = 3_000_000
    line = b"certmatch relays this line after the STARTTLS handshakes, unchanged 0123456\r\n"
    body = (line * (size // len(line) + 1))[:size]
    message = b"Subject: bulk\r\n\r\n" + body
    watch = LayerWatch()
    with inprocess_proxy(
        tmp_path,
        f"reverse:tcp://127.0.0.1:{dovecot.imap_port}",
        addon=CertmatchCapture(),
        extra_addons=(StartTlsAddon(), watch),
        ca_file=[str(pki.root_ca)],
    ) as proxy:
        client = LoopbackIMAP4("imap.example.test", proxy.port)
        client.starttls(ssl.create_default_context(cafile=str(proxy.ca_file)))
        client.login(dovecot.user, dovecot.password)
        client.select("INBOX")
        typ, data = client.append("INBOX", "", None, message)
        assert typ == "OK"
        uid = re.search(rb"APPENDUID \d+ (\d+)", data[-1] or b"")
        assert uid is not None
        typ, fetched = client.uid("FETCH", uid.group(1).decode(), "(BODY.PEEK[])")
        assert typ == "OK"
        got = fetched[0]
        assert isinstance(got, tuple) and got[1] == message
        client.uid("STORE", uid.group(1).decode(), "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
        [starttls_layer] = watch.layers
        assert starttls_layer._handle_event == starttls_layer.relay_established
        client.logout()
        [session] = proxy.sessions(1, timeout=10)
    assert session.starttls is not None and session.starttls.injection is None
    assert session.client_decision == "went-on"
