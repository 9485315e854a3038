"""The handshake timeout (issue 13): a silent client or a server that never answers the TLS
handshake no longer holds sockets for mitmproxy's 600 s idle timeout; the session is recorded
promptly with the phase it reached.

The silent server is a socket that accepts and never speaks: no real server misbehaves so on
purpose. The clients are a bare TCP socket (a port scanner, a stuck client) and Python's ssl.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from mitmproxy import connection, exceptions
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons
from proxy_fixtures import inprocess_proxy

from certmatch.proxy import handshake_timeout
from certmatch.proxy.capture import CertmatchCapture
from certmatch.proxy.starttls_layer import StartTlsAddon

pytestmark = pytest.mark.timeout(60)

BOUND_S = 2


@contextlib.contextmanager
def mute_server() -> Iterator[int]:
    """A TCP server that accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def closed_after(sock: socket.socket, limit: float = 30) -> float:
    """Seconds until the peer closes ``sock`` (reading and dropping anything it sends)."""
    started = time.monotonic()
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionError):
        while sock.recv(4096):
            pass
    return time.monotonic() - started


def test_a_client_that_sends_nothing_is_closed_and_recorded(tmp_path, dovecot, pki):
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(
        tmp_path, mode, ca_file=[str(pki.root_ca)], handshake_timeout=BOUND_S
    ) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as silent:
            held = closed_after(silent)
        (facts,) = proxy.sessions(1)
    assert BOUND_S - 0.5 <= held < BOUND_S + 5
    assert facts.client_decision is None  # the client decided nothing: the proxy closed it
    assert facts.chain == [] and facts.sni is None
    assert any(
        "no TLS handshake from the client within 2 s" in note
        and "certmatch_handshake_timeout=2" in note
        for note in facts.notes
    ), facts.notes


def test_a_server_that_never_answers_the_handshake(tmp_path, pki):
    with mute_server() as port:
        mode = f"reverse:tls://127.0.0.1:{port}"
        with inprocess_proxy(
            tmp_path, mode, ca_file=[str(pki.root_ca)], handshake_timeout=BOUND_S
        ) as proxy:
            context = ssl.create_default_context(cafile=str(proxy.ca_file))
            started = time.monotonic()
            with (
                socket.create_connection(("127.0.0.1", proxy.port)) as raw,
                pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)),
            ):
                raw.settimeout(30)
                context.wrap_socket(raw, server_hostname="imap.example.test")
            held = time.monotonic() - started
            (facts,) = proxy.sessions(1)
    assert held < BOUND_S + 5, "the client waited for mitmproxy's idle timeout"
    assert facts.sni == "imap.example.test"
    assert facts.server_error is not None
    assert facts.server_error.startswith(
        "timeout: the server accepted the connection but did "
        "not complete the TLS handshake within 2 s"
    )


def test_a_prompt_session_is_not_cut(tmp_path, dovecot, pki):
    """The bound is on the handshake only: a session that lasts longer goes on."""
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)], handshake_timeout=1) as proxy:
        context = ssl.create_default_context(cafile=str(proxy.ca_file))
        with (
            socket.create_connection(("127.0.0.1", proxy.port)) as raw,
            context.wrap_socket(raw, server_hostname="imap.example.test") as tls,
        ):
            tls.settimeout(10)
            assert tls.recv(1024).startswith(b"* OK")
            time.sleep(1.5)  # past the bound, idle after the handshake
            tls.sendall(b"a NOOP\r\n")
            assert b"a OK" in tls.recv(1024)
            tls.sendall(b"z LOGOUT\r\n")
        (facts,) = proxy.sessions(1)
    assert facts.client_decision == "went-on" and facts.server_error is None
    assert not any("certmatch closed" in note for note in facts.notes)


def test_the_bound_is_whole_seconds_at_least_one():
    addon = CertmatchCapture()
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError) as raised:
        tctx.configure(addon, certmatch_handshake_timeout=0)
    assert "at least 1" in str(raised.value)


def test_who_owes_the_first_byte_follows_the_mode_the_port_and_the_named_protocol():
    """A server greets first on a STARTTLS port (LDAP's client speaks first; an implicit-TLS
    port's client too), or for the protocol ``certmatch_starttls`` names; a forward proxy's
    client owes its request until it has named the server."""
    capture, starttls = CertmatchCapture(), StartTlsAddon()
    with taddons.context(capture, starttls) as tctx:

        def client(mode: str) -> connection.Client:
            return connection.Client(
                peername=("127.0.0.1", 50000),
                sockname=("127.0.0.1", 8080),
                timestamp_start=1.0,
                proxy_mode=ProxyMode.parse(mode),
            )

        def server(port: int) -> connection.Server:
            return connection.Server(address=("127.0.0.1", port))

        reverse = client("reverse:tcp://127.0.0.1:143")
        assert handshake_timeout.greeting_protocol(reverse, server(143)) == "imap"
        assert handshake_timeout.greeting_protocol(reverse, server(587)) == "submission"
        for port in (993, 389, 20000):
            assert handshake_timeout.greeting_protocol(reverse, server(port)) is None, port
        tctx.configure(starttls, certmatch_starttls="pop3")
        assert handshake_timeout.greeting_protocol(reverse, server(20000)) == "pop3"
        tctx.configure(starttls, certmatch_starttls_timeout=7)
        assert handshake_timeout.greeting_seconds() == 7
        tctx.configure(starttls, certmatch_starttls="off")
        assert handshake_timeout.greeting_seconds() is None  # nothing waits for a greeting

        socks, regular = client("socks5"), client("regular")
        assert handshake_timeout.request_awaited(socks, None) == "SOCKS5 request"
        assert handshake_timeout.request_awaited(regular, None) == "HTTP CONNECT request"
        assert handshake_timeout.request_awaited(socks, server(143)) is None  # named: tunnel
        assert handshake_timeout.request_awaited(reverse, None) is None
