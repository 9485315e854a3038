"""A TLS client on a port where the server speaks plaintext first (a STARTTLS port).

The client is set up for implicit TLS where the server greets in plaintext (IMAP's ``* OK``,
SMTP's ``220``), whichever of the two spoke first on the wire: a ClientHello answered by a
greeting, or a greeting answered by a ClientHello. Both are recorded alike, as
``certmatch probe`` reports such a port: the server speaks plaintext here, and what to
change.
"""

from __future__ import annotations

from certmatch.core import tls_wire
from certmatch.core.facts import SessionFacts
from certmatch.proxy.connection_facts import new_facts
from certmatch.proxy.starttls_hooks import StartTlsData

GREETING_SHOWN = 80  # characters of the greeting quoted in the record
SERVER_FIRST_KEPT = 512  # bytes of the server's first data kept to quote its greeting


def protocol_name(protocol: str) -> str:
    """The protocol as its users name it: ``IMAP``; submission is SMTP."""
    return "SMTP" if protocol == "submission" else protocol.upper()


def plaintext_server(first: bytes) -> str | None:
    """What to record when a server's first bytes, where a TLS ServerHello was due, are a
    line of text (an SMTP, IMAP, POP3 or NNTP greeting): the server speaks plaintext on this
    port, as ``certmatch probe`` says of it. None for anything else."""
    if not first or first[0] in (tls_wire.HANDSHAKE, tls_wire.ALERT):
        return None
    line = first.split(b"\n", 1)[0].rstrip(b"\r")
    if not line or not all(0x20 <= byte < 0x7F or byte == 0x09 for byte in line):
        return None
    text = line.decode("ascii")
    if len(text) > GREETING_SHOWN:
        text = text[: GREETING_SHOWN - 3] + "..."
    return (
        f"the server speaks plaintext here, not TLS: its first bytes were {text!r}, as on a "
        "STARTTLS or plaintext port. Point the client at the server's implicit-TLS port "
        "(993, 995, 465), or set it to use STARTTLS on this one"
    )


def client_hello_after_greeting(protocol: str, server_first: bytes) -> str:
    """What to record when the client answered the server's plaintext greeting with a TLS
    ClientHello: the same words as for the other order (:func:`plaintext_server`), or, with no
    greeting line to quote, the protocol the server speaks here."""
    return plaintext_server(server_first) or (
        f"the server speaks {protocol_name(protocol)} in plaintext here, not TLS, and the client "
        "started a TLS handshake, as a client set up for implicit TLS does on a STARTTLS or "
        "plaintext port. Point the client at the server's implicit-TLS port (993, 995, 465), "
        "or set it to use STARTTLS on this one"
    )


def implicit_tls_on_plaintext_port(data: StartTlsData, configured_host: str) -> SessionFacts:
    """The facts of a client that answered the server's plaintext greeting with a TLS
    ClientHello (set up for implicit TLS on a STARTTLS port): an implicit TLS session that
    never got a TLS answer, asking for what its ClientHello asked for. Its plaintext phase
    is left out: the client never meant to speak the protocol and sent nothing in plaintext."""
    assert data.client_tls is not None
    context = data.context
    hello = data.client_tls.client_hello
    facts = new_facts(context.client, context.server, hello.sni if hello else None, configured_host)
    if hello is not None:
        facts.client_alpn = list(hello.alpn)
        facts.client_tls_versions = list(hello.versions)
        facts.client_signature_algorithms = (
            list(hello.signature_algorithms) if hello.signature_algorithms is not None else None
        )
    else:
        facts.notes.append("the client stopped before the end of its ClientHello")
    if context.server.peername:
        facts.server_ip = context.server.peername[0]
    facts.notes.append(
        f"the client answered the server's {protocol_name(data.protocol)} greeting with a TLS "
        "ClientHello; certmatch relayed it and closed the connection"
    )
    return facts
