"""Observe mode: a TLS client pointed at a port where the server speaks plaintext first (a
STARTTLS port) gets a record that says so, as ``certmatch probe`` does, not only that the
server "closed the connection during the handshake"."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from test_observe_bad_input import observing

from certmatch.core.judge import Judge
from certmatch.core.trust import TrustStore
from certmatch.proxy.plaintext_port import plaintext_server

GOOD = "imap.example.test"


def test_a_tls_client_on_dovecots_starttls_port_is_told_the_server_speaks_plaintext(
    tmp_path: Path, dovecot, pki
) -> None:
    context = ssl.create_default_context(cafile=str(pki.root_ca))
    with observing(tmp_path, dovecot.imap_port, pki) as proxy:
        with (
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock,
            pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"),  # the greeting
        ):
            context.wrap_socket(sock, server_hostname=GOOD)
        [session] = proxy.sessions(1, timeout=10)
    assert session.sni == GOOD and session.tls_kind == "implicit"
    error = session.server_error or ""
    assert error.startswith("the server speaks plaintext here, not TLS: its first bytes were '* OK")
    assert "STARTTLS" in error and "implicit-TLS port" in error
    diagnosis = Judge(TrustStore.load([pki.root_ca])).diagnose(session)
    assert diagnosis.verdict == "error" and diagnosis.primary.id == "upstream-tls-failed"
    assert "speaks plaintext here" in diagnosis.primary.explanation
    assert "closed the connection during the handshake" not in diagnosis.primary.explanation


@pytest.mark.pure
@pytest.mark.parametrize(
    "first",
    [
        b"\x16\x03\x03\x00\x31\x02",  # a ServerHello record
        b"\x15\x03\x03\x00\x02\x02\x28",  # an alert
        b"\x00\x01\xff binary",
        b"",
    ],
)
def test_only_a_line_of_text_is_taken_for_plaintext(first: bytes) -> None:
    assert plaintext_server(first) is None


@pytest.mark.pure
def test_a_long_greeting_is_shortened() -> None:
    text = plaintext_server(b"220 " + b"x" * 500 + b"\r\n250 more\r\n")
    assert text is not None and f"'220 {'x' * 73}...'" in text
