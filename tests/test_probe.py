"""The SNI probe against real servers: implicit TLS and each STARTTLS dialogue, and its failures."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading

from cryptography import x509
from proxy_fixtures import free_port

from certmatch.net.probe import probe_with_sni


def _leaf(probe) -> x509.Certificate:
    assert probe.error is None, probe.error
    return x509.load_der_x509_certificate(base64.b64decode(probe.chain[0]))


def probe(port: int, sni: str, starttls: str | None = None, timeout: float = 3.0):
    return asyncio.run(probe_with_sni("127.0.0.1", port, sni, starttls=starttls, timeout=timeout))


def test_implicit_tls_selects_by_sni(dovecot, pki):
    assert _leaf(probe(dovecot.imaps_port, "alt.example.test")) == pki.for_scenario("alt").leaf
    assert _leaf(probe(dovecot.imaps_port, "unknown.example.test")) == pki.default.leaf


def test_starttls_dialogues(dovecot, smtp_server, slapd_factory, nntp_factory, pki):
    alt = pki.for_scenario("alt").leaf
    assert _leaf(probe(dovecot.imap_port, "alt.example.test", "imap")) == alt
    assert _leaf(probe(dovecot.pop3_port, "alt.example.test", "pop3")) == alt
    assert _leaf(probe(smtp_server.submission_port, "alt.example.test", "submission")) == alt
    slapd = slapd_factory("wrong-host")
    assert _leaf(probe(slapd.ldap_port, "ldap.example.test", "ldap")) == slapd.cert.leaf
    nnrpd = nntp_factory("correct")
    assert _leaf(probe(nnrpd.nntp_port, "news.example.test", "nntp")) == nnrpd.cert.leaf


def test_failures_are_recorded_not_raised():
    closed = free_port()
    assert "ConnectionRefusedError" in probe(closed, "x.example.test").error

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def refuse_starttls() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 smtp.example.test ESMTP\r\n")
            conn.recv(100)
            conn.sendall(b"250 smtp.example.test\r\n")
            conn.recv(100)
            conn.sendall(b"454 4.7.0 TLS not available\r\n")

    threading.Thread(target=refuse_starttls, daemon=True).start()
    refused = probe(port, "smtp.example.test", "smtp")
    assert refused.chain == [] and "454 4.7.0 TLS not available" in refused.error

    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    silent = probe(port, "smtp.example.test", "smtp", timeout=0.5)  # accepted, never answered
    assert silent.chain == [] and "within 0.5 s" in silent.error
    for conn in held:
        conn.close()
    listener.close()


def _one_connection_server(handle) -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                handle(conn)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_a_server_that_talks_forever_is_cut_off_at_the_deadline():
    import time

    def chatter(conn: socket.socket) -> None:
        conn.sendall(b"* OK ready\r\n")
        conn.recv(100)
        for _ in range(200):
            conn.sendall(b"* untagged noise\r\n")
            time.sleep(0.05)

    listener, port = _one_connection_server(chatter)
    started = time.monotonic()
    result = probe(port, "imap.example.test", "imap", timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert result.chain == [] and "within 0.5 s" in result.error
    listener.close()


def test_a_truncated_ldap_reply_is_an_error_not_an_exception():
    def short_reply(conn: socket.socket) -> None:
        conn.recv(100)
        conn.sendall(b"\x30\x05\x02\x01\x01\x0a\x01")  # claims 5 bytes, ends before the code
        conn.recv(100)

    listener, port = _one_connection_server(short_reply)
    result = probe(port, "ldap.example.test", "ldap", timeout=1.0)
    assert result.chain == [] and result.error
    listener.close()
