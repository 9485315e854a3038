"""Relays that keep nothing per message: observe mode keeps no flow at all, and the capture's
relay after a STARTTLS upgrade keeps only the latest message (mitmproxy's TCPLayer appends
every chunk to ``flow.messages`` for the session's whole life)."""

from __future__ import annotations

import ssl
from pathlib import Path

from proxy_fixtures import inprocess_proxy
from servers.clients import LoopbackIMAP4, LoopbackIMAP4_SSL

from certmatch.proxy.capture import CertmatchCapture
from certmatch.proxy.observe import ObserveAddon
from certmatch.proxy.starttls_layer import StartTlsAddon

ROUND_TRIPS = 300


class Decided:
    """Keeps the data of the observe_decided hooks."""

    def __init__(self) -> None:
        self.seen: list = []

    def observe_decided(self, data) -> None:
        self.seen.append(data)


class FlowWatch:
    """Counts TCP flow messages and the longest message list any flow held."""

    def __init__(self) -> None:
        self.messages = 0
        self.longest = 0

    def tcp_message(self, flow) -> None:
        self.messages += 1
        self.longest = max(self.longest, len(flow.messages))


def test_observe_keeps_no_flow_and_stops_reading(tmp_path: Path, dovecot, pki) -> None:
    watch, addon, decided = FlowWatch(), ObserveAddon(), Decided()
    mode = f"reverse:tls://{dovecot.host}:{dovecot.imaps_port}"
    with inprocess_proxy(
        tmp_path,
        mode,
        addon=addon,  # type: ignore[arg-type]
        extra_addons=(StartTlsAddon(), watch, decided),
        ca_file=[str(pki.root_ca)],
    ) as proxy:
        client = LoopbackIMAP4_SSL(
            "imap.example.test",
            proxy.port,
            ssl_context=ssl.create_default_context(cafile=str(pki.root_ca)),
        )
        for _ in range(ROUND_TRIPS):
            client.noop()
        [data] = decided.seen  # one hook, while the session was open
        wire = data.wire
        assert not data.ended
        client.logout()
        [session] = proxy.sessions(1, timeout=10)
    assert addon.sessions == {}  # written and forgotten
    assert watch.messages == 0  # no flow: nothing appended anywhere
    assert session.client_decision == "went-on"
    # Reading stopped once the client went on: a handful of records, not ROUND_TRIPS.
    assert wire.client_records_total < 10


def test_post_starttls_relay_keeps_only_the_latest_message(tmp_path: Path, dovecot, pki) -> None:
    watch = FlowWatch()
    with inprocess_proxy(
        tmp_path,
        f"reverse:tcp://127.0.0.1:{dovecot.imap_port}",
        addon=CertmatchCapture(),
        extra_addons=(StartTlsAddon(), watch),
        ca_file=[str(pki.root_ca)],
    ) as proxy:
        client = LoopbackIMAP4("imap.example.test", proxy.port)
        client.starttls(ssl.create_default_context(cafile=str(proxy.ca_file)))
        for _ in range(ROUND_TRIPS):
            client.noop()
        client.logout()
        proxy.sessions(1, timeout=10)
    assert watch.messages >= 2 * ROUND_TRIPS  # every command and reply went through the hook
    assert watch.longest <= 2  # the latest and the one before it, never the session
