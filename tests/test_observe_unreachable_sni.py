"""Observe mode, reverse to implicit TLS, server unreachable: the record keeps the SNI the
client sent (it used to say ``sni=-``: the ClientHello was never read once the eager connect
to the server had failed)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from mitmproxy import options as mitmproxy_options
from test_observe_bad_input import observing, read_all, real_client_hello

from certmatch.core.judge import Judge
from certmatch.core.trust import TrustStore
from certmatch.proxy.observe import _connect_after_the_client_hello

GOOD = "imap.example.test"


def _dead_port() -> int:
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    return port


def test_an_unreachable_server_records_the_clients_sni(tmp_path: Path, pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.root_ca))
    with observing(tmp_path, _dead_port(), pki) as proxy:
        with (
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock,
            pytest.raises((ssl.SSLError, OSError)),
        ):
            context.wrap_socket(sock, server_hostname=GOOD)  # a real client, closed on
        [session] = proxy.sessions(1, timeout=10)
    assert session.sni == GOOD and session.requested_host == GOOD
    assert session.requested_host_source == "sni"
    assert session.upstream_sni is None  # nothing went upstream
    assert "TLSv1.3" in session.client_tls_versions
    assert (session.server_error or "").startswith("cannot connect")
    diagnosis = Judge(TrustStore.load([pki.root_ca])).diagnose(session)
    assert diagnosis.verdict == "error" and diagnosis.primary.id == "upstream-unreachable"


def test_a_second_client_hello_never_reaches_a_server_that_came_back(tmp_path: Path, pki) -> None:
    """The unreachable session's bytes are read, never sent anywhere, and the connection is
    closed at once, as before."""
    with observing(tmp_path, _dead_port(), pki) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(real_client_hello("other.example.test"))
            assert read_all(sock) == b""
        [session] = proxy.sessions(1, timeout=10)
    assert session.sni == "other.example.test"
    assert session.client_decision is None  # the proxy closed it: no decision of the client's


@pytest.mark.pure
@pytest.mark.parametrize(
    ("modes", "strategy"),
    [
        (["reverse:tls://mail.example.test:993"], "lazy"),  # the client speaks first
        (["reverse:tcp://mail.example.test:587"], "eager"),  # STARTTLS: the server does
        (["transparent"], "eager"),
        (["socks5"], "eager"),
        (["reverse:tls://a.example.test:993", "socks5"], "eager"),
    ],
)
def test_only_reverse_to_implicit_tls_connects_after_the_client_hello(modes, strategy) -> None:
    opts = mitmproxy_options.Options(mode=modes)
    opts.add_option("connection_strategy", str, "eager", "as mitmproxy's proxyserver adds it")
    _connect_after_the_client_hello(opts)
    assert opts.connection_strategy == strategy
