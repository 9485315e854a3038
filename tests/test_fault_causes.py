"""Each server or client fault before a certificate is judged by its phase and side (issue 13
§5): a STARTTLS exchange the server broke off is not a TLS failure nor "could not connect",
a server closing mid-handshake is a TLS failure, a client that stopped is never the server's
fault. The facts are as the proxy records them (tests/test_server_faults.py records them)."""

from __future__ import annotations

import pytest

from certmatch.core.diagnosis import diagnose
from certmatch.core.facts import SessionFacts, StartTlsFacts
from certmatch.core.trust import TrustStore

pytestmark = pytest.mark.pure

STORE = TrustStore((), ())


def session(
    *,
    starttls: StartTlsFacts | None = None,
    server_error: str | None = None,
    client_error: str | None = None,
) -> SessionFacts:
    return SessionFacts(
        id="s",
        started="2026-01-01T00:00:00+00:00",
        protocol="smtp" if starttls else "imap",
        tls_kind="starttls" if starttls else "implicit",
        requested_host="mail.example.test",
        server_address="192.0.2.1:587",
        starttls=starttls,
        server_error=server_error,
        client_error=client_error,
    )


@pytest.mark.parametrize(
    ("phase", "offered", "requested", "error"),
    [
        ("greeting", None, None, "timeout: the server sent no greeting within 30 s"),
        (
            "plaintext",
            None,
            None,
            (
                "the server closed the connection after its greeting, before the client asked for "
                "STARTTLS"
            ),
        ),
        (
            "requested",
            True,
            True,
            "the server closed the connection while the reply to STARTTLS was due",
        ),
        ("requested", True, True, "the server sent no reply to STARTTLS within 30 s"),
        ("failed", None, None, "the server's greeting '\\x00' is not an SMTP reply"),
    ],
)
def test_a_starttls_exchange_the_server_broke_off(phase, offered, requested, error) -> None:
    facts = session(
        starttls=StartTlsFacts(server_offered=offered, client_requested=requested, phase=phase),
        server_error=error,
    )
    d = diagnose(facts, STORE)
    # Never upstream-tls-failed (no handshake began), never starttls-not-requested (the
    # client had no chance to ask), never upstream-unreachable (the server was reached).
    assert (d.verdict, d.cause_ids, d.failed) == ("error", ("upstream-starttls-failed",), True)
    assert error in d.findings[0].explanation


def test_a_starttls_server_that_cannot_be_reached_is_still_unreachable() -> None:
    facts = session(
        starttls=StartTlsFacts(phase="plaintext"),
        server_error="cannot connect to the server: Connection refused",
    )
    assert diagnose(facts, STORE).cause_ids == ("upstream-unreachable",)


@pytest.mark.parametrize(
    ("starttls", "error"),
    [
        (
            None,
            (
                "the server closed the connection during the TLS handshake, before sending a "
                "certificate"
            ),
        ),
        (
            StartTlsFacts(server_offered=True, client_requested=True, phase="handshake"),
            (
                "timeout: the server did not complete the TLS handshake within 30 s after it "
                "accepted STARTTLS (certmatch_starttls_timeout=30)"
            ),
        ),
    ],
)
def test_a_server_that_failed_its_tls_handshake(starttls, error) -> None:
    d = diagnose(session(starttls=starttls, server_error=error), STORE)
    assert d.cause_ids == ("upstream-tls-failed",)


@pytest.mark.parametrize(
    ("starttls", "error", "causes"),
    [
        (None, "timeout: the client sent no SOCKS5 request within 15 s", ()),
        (None, "timeout: the client sent no TLS ClientHello within 15 s", ()),
        (
            StartTlsFacts(server_offered=True, client_requested=True, phase="requested"),
            "the client closed the connection while the reply to STARTTLS was due",
            (),
        ),
        (
            StartTlsFacts(
                server_offered=True,
                client_requested=True,
                phase="handshake",
                injection="the client sent 8 byte(s) after its STARTTLS request, before the "
                "server's reply",
            ),
            (
                "the client closed the connection after the server accepted STARTTLS, before its "
                "TLS ClientHello"
            ),
            ("starttls-injection",),
        ),
    ],
)
def test_a_client_that_stopped_is_never_the_servers_fault(starttls, error, causes) -> None:
    d = diagnose(session(starttls=starttls, client_error=error), STORE)
    assert d.cause_ids == (*causes, "client-stopped-before-handshake")
    assert d.failed is bool(causes)  # a warning alone fails nothing; an injection does
    assert error in d.findings[-1].explanation


def test_a_refusal_is_still_a_refusal() -> None:
    facts = session(
        starttls=StartTlsFacts(
            server_offered=True, client_requested=True, server_reply="454 no TLS", phase="refused"
        )
    )
    assert diagnose(facts, STORE).cause_ids == ("starttls-refused",)
