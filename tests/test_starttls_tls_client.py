"""A TLS client on a STARTTLS port when the server's greeting wins the race.

In ``reverse:tcp://`` (and transparent) mode the proxy connects to the server at once, so a
client set up for implicit TLS may see the server's plaintext greeting before its ClientHello
leaves. The STARTTLS layer then took the ClientHello for an IMAP command, and the session was
recorded as ``starttls-not-requested`` ("everything the client sent ... crossed the network
unencrypted"), which was untrue: the client sent a ClientHello and nothing else. It is now
recorded as when the ClientHello comes first: ``upstream-tls-failed``, "the server speaks
plaintext here, not TLS", with the SNI, requested host and TLS versions of the ClientHello.

When the ClientHello comes first, ``reverse:tcp://`` used to end the client's TLS at the proxy
(mitmproxy's choice for that mode) and the capture addon recorded ``upstream-unreachable``
("certmatch could not connect"), untrue as well: it is now recorded the same way.

Real dovecot on its STARTTLS port; the client is Python's ssl (OpenSSL), which reads the
greeting before it starts its handshake when the greeting is to come first, so the race is
decided on purpose.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_fixtures import RunningProxy, free_port, inprocess_proxy, mitmdump_process, venv_bin
from servers.clients import LoopbackIMAP4
from test_observe_bad_input import real_client_hello

from certmatch.core.diagnosis import Diagnosis, diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore
from certmatch.proxy.observe import ObserveAddon
from certmatch.proxy.plaintext_port import PLAINTEXT_ANSWER
from certmatch.proxy.starttls_layer import StartTlsAddon

pytestmark = pytest.mark.timeout(90)

ASKED = "imap.example.test"
PLAINTEXT_HERE = "the server speaks plaintext here, not TLS: its first bytes were '* OK"


@contextlib.contextmanager
def proxy_to(tmp: Path, mode: str, pki, how: str, **options: object) -> Iterator[RunningProxy]:
    """The capture (``intercept``) or observe addon, with the STARTTLS layer."""
    addon = {"addon": ObserveAddon()} if how == "observe" else {}
    with inprocess_proxy(
        tmp,
        mode,
        extra_addons=(StartTlsAddon(),),
        ca_file=[str(pki.root_ca)],
        **addon,  # type: ignore[arg-type]
        **options,
    ) as proxy:
        yield proxy


def greeting_then_client_hello(port: int, pki) -> bytes:
    """Connect, read the server's greeting, then start a TLS handshake as an implicit-TLS
    client does; returns the greeting."""
    context = ssl.create_default_context(cafile=str(pki.root_ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        greeting = sock.recv(4096)
        with contextlib.suppress(ssl.SSLError, OSError):
            context.wrap_socket(sock, server_hostname=ASKED)
    return greeting


def judged(session: SessionFacts, pki) -> Diagnosis:
    return diagnose(session, TrustStore.load([pki.root_ca], use_system=False))


def assert_recorded_as_a_tls_client_on_a_plaintext_port(session: SessionFacts, pki) -> None:
    assert (session.sni, session.requested_host, session.requested_host_source) == (
        ASKED,
        ASKED,
        "sni",
    )
    assert "TLSv1.3" in session.client_tls_versions  # read from the ClientHello
    assert session.tls_kind == "implicit" and session.starttls is None
    assert (session.server_error or "").startswith(PLAINTEXT_HERE)
    assert session.client_error is None
    diagnosis = judged(session, pki)
    assert diagnosis.verdict == "error"
    assert diagnosis.cause_ids == ("upstream-tls-failed",)
    assert "starttls-not-requested" not in diagnosis.cause_ids
    assert "implicit-TLS port" in diagnosis.primary.explanation  # what to change
    assert "unencrypted" not in diagnosis.primary.explanation


@pytest.mark.parametrize("how", ["intercept", "observe"])
def test_a_client_hello_after_the_greeting_is_a_tls_client_on_a_plaintext_port(
    tmp_path, dovecot, pki, how
) -> None:
    mode = f"reverse:tcp://127.0.0.1:{dovecot.imap_port}"
    with proxy_to(tmp_path, mode, pki, how) as proxy:
        greeting = greeting_then_client_hello(proxy.port, pki)
        [session] = proxy.sessions(1, timeout=10)
        # The proxy goes on: a STARTTLS client after it is served as ever.
        trusting = ssl.create_default_context(cafile=str(pki.root_ca))  # observed: the real
        trusting.load_verify_locations(cafile=str(proxy.ca_file))  # intercepted: the proxy's
        imap = LoopbackIMAP4(ASKED, proxy.port)
        imap.starttls(trusting)
        imap.logout()
        upgraded = proxy.sessions(2, timeout=10)[1]
    assert greeting.startswith(b"* OK")  # the greeting did come first
    assert session.protocol == "imap"
    assert_recorded_as_a_tls_client_on_a_plaintext_port(session, pki)
    assert any("certmatch relayed what the client sent" in n for n in session.notes)
    if how == "observe":
        assert session.presented == "real" and session.upstream_sni == ASKED
    assert upgraded.tls_kind == "starttls" and upgraded.sni == ASKED


def test_both_orders_give_the_same_record(tmp_path, dovecot, pki) -> None:
    """Observe mode, where the order can be set: ``reverse:tls://`` reads the ClientHello
    before it connects (the ClientHello first); ``reverse:tcp://`` with a client that waits
    for the greeting (the greeting first)."""
    records = []
    for scheme in ("tls", "tcp"):
        mode = f"reverse:{scheme}://127.0.0.1:{dovecot.imap_port}"
        with proxy_to(tmp_path / scheme, mode, pki, "observe") as proxy:
            if scheme == "tls":
                context = ssl.create_default_context(cafile=str(pki.root_ca))
                with (
                    socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock,
                    contextlib.suppress(ssl.SSLError, OSError),
                ):
                    context.wrap_socket(sock, server_hostname=ASKED)
            else:
                greeting_then_client_hello(proxy.port, pki)
            [session] = proxy.sessions(1, timeout=10)
        assert_recorded_as_a_tls_client_on_a_plaintext_port(session, pki)
        records.append(session)
    hello_first, greeting_first = records
    assert hello_first.server_error == greeting_first.server_error
    assert (
        judged(hello_first, pki).primary.explanation
        == judged(greeting_first, pki).primary.explanation
    )


def test_a_client_hello_split_over_segments_after_the_greeting_keeps_its_sni(
    tmp_path, dovecot, pki
) -> None:
    hello = real_client_hello(ASKED)
    mode = f"reverse:tcp://127.0.0.1:{dovecot.imap_port}"
    with proxy_to(tmp_path, mode, pki, "intercept") as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert sock.recv(4096).startswith(b"* OK")
            for part in (hello[:3], hello[3:60], hello[60:]):
                sock.sendall(part)
                time.sleep(0.1)  # each its own segment, read on its own
            sock.settimeout(10)
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass  # until the proxy closes
        [session] = proxy.sessions(1, timeout=10)
    assert session.sni == ASKED and session.requested_host_source == "sni"
    assert (session.server_error or "").startswith(PLAINTEXT_HERE)


def test_a_client_that_stops_mid_client_hello_is_not_waited_for_past_the_timeout(
    tmp_path, dovecot, pki
) -> None:
    hello = real_client_hello(ASKED)
    mode = f"reverse:tcp://127.0.0.1:{dovecot.imap_port}"
    with proxy_to(tmp_path, mode, pki, "intercept", starttls_timeout=1) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            assert sock.recv(4096).startswith(b"* OK")
            sock.sendall(hello[:40])  # and nothing more
            sent = time.monotonic()
            sock.settimeout(10)
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass  # whatever dovecot answers the 40 bytes, relayed; then the close
            waited = time.monotonic() - sent
        [session] = proxy.sessions(1, timeout=10)
    assert waited < 8  # closed by the proxy after certmatch_starttls_timeout=1, not by us
    assert session.sni is None and session.requested_host_source == "reverse-target"
    assert (session.server_error or "").startswith(PLAINTEXT_HERE)
    assert "the client stopped before the end of its ClientHello" in session.notes
    assert "starttls-not-requested" not in judged(session, pki).cause_ids


def client_hello_at_once(port: int, pki) -> None:
    """A TLS client that starts its handshake as soon as it is connected: its ClientHello
    waits in the proxy's socket before the proxy has even dialled the server."""
    context = ssl.create_default_context(cafile=str(pki.root_ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        contextlib.suppress(ssl.SSLError, OSError),
    ):
        context.wrap_socket(sock, server_hostname=ASKED)


def test_intercepting_a_client_hello_before_the_greeting_gives_the_same_record(
    tmp_path, dovecot, pki
) -> None:
    mode = f"reverse:tcp://127.0.0.1:{dovecot.imap_port}"
    with proxy_to(tmp_path, mode, pki, "intercept") as proxy:
        client_hello_at_once(proxy.port, pki)
        [session] = proxy.sessions(1, timeout=10)
    assert_recorded_as_a_tls_client_on_a_plaintext_port(session, pki)
    assert session.protocol == "imap"  # named by the greeting (dovecot's port is not 143)
    assert session.action is None  # nothing was shown to the client: no certificate of ours


def test_reverse_tcp_to_an_implicit_tls_server_says_which_mode_to_use(
    tmp_path, dovecot, pki
) -> None:
    """The client's ClientHello goes to dovecot's IMAPS port, which answers with TLS: the
    proxy was started with the wrong scheme, and the record says so."""
    mode = f"reverse:tcp://127.0.0.1:{dovecot.imaps_port}"
    with proxy_to(tmp_path, mode, pki, "intercept") as proxy:
        client_hello_at_once(proxy.port, pki)
        [session] = proxy.sessions(1, timeout=10)
    assert session.sni == ASKED and session.requested_host_source == "sni"
    error = session.server_error or ""
    assert error.startswith("the server answered the client's ClientHello with TLS")
    assert "--mode reverse:tls://" in error
    diagnosis = judged(session, pki)
    assert diagnosis.verdict == "error" and diagnosis.cause_ids == ("upstream-tls-failed",)


@pytest.mark.parametrize("order", ["greeting first", "client hello first"])
def test_the_certmatch_proxy_command_records_both_orders_alike(
    tmp_path, dovecot, pki, order
) -> None:
    """The real command: its addons load as scripts, whose hooks run before mitmproxy's own."""
    listen = free_port()
    argv = [
        venv_bin("certmatch"),
        "proxy",
        "--mode",
        f"reverse:tcp://127.0.0.1:{dovecot.imap_port}",
        "--listen-port",
        str(listen),
        "--record",
        str(tmp_path / "rec.jsonl"),
        "--confdir",
        str(tmp_path / "conf"),
        "--no-dns",
    ]
    with mitmdump_process(tmp_path, argv, port=listen):
        if order == "greeting first":
            assert greeting_then_client_hello(listen, pki).startswith(b"* OK")
        else:
            client_hello_at_once(listen, pki)
        deadline = time.monotonic() + 10
        while not (sessions := _recorded(tmp_path / "rec.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(sessions) == 1, (tmp_path / "proxy.log").read_text(errors="replace")
    assert_recorded_as_a_tls_client_on_a_plaintext_port(sessions[0], pki)


def _recorded(path: Path) -> list[SessionFacts]:
    return read_recording(path).sessions if path.exists() else []


def _through_socks5(port: int, destination: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(
        b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", destination)
    )
    assert sock.recv(10)[:2] == b"\x05\x00"
    return sock


@pytest.mark.parametrize("mode", ["reverse:tls", "socks5"])
def test_intercepting_where_mitmproxy_speaks_tls_to_a_plaintext_port(
    tmp_path, dovecot, pki, mode
) -> None:
    """reverse:tls:// and the forward modes (transparent alike): mitmproxy's own TLS layer
    reads the greeting, and its words ('The remote server does not speak TLS.') become the
    same sentence, without the greeting it did not keep."""
    spec = f"reverse:tls://127.0.0.1:{dovecot.imap_port}" if mode == "reverse:tls" else mode
    context = ssl.create_default_context(cafile=str(pki.root_ca))
    with proxy_to(tmp_path, spec, pki, "intercept") as proxy:
        if mode == "socks5":
            sock = _through_socks5(proxy.port, dovecot.imap_port)
        else:
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with sock, contextlib.suppress(ssl.SSLError, OSError):
            context.wrap_socket(sock, server_hostname=ASKED)
        [session] = proxy.sessions(1, timeout=10)
    assert session.sni == ASKED and session.requested_host_source == "sni"
    assert session.server_error == PLAINTEXT_ANSWER
    diagnosis = judged(session, pki)
    assert diagnosis.cause_ids == ("upstream-tls-failed",)
    assert "implicit-TLS port" in diagnosis.primary.explanation
