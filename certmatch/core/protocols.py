"""Recognise the mail protocol of a session from its port, greeting and ClientHello.

Pure functions over bytes and numbers, so the capture addon stays thin.
Only a protocol name ever leaves this module: greeting bytes are looked
at, never stored.
"""

from __future__ import annotations

import re

# Well-known ports, implicit TLS and STARTTLS alike (IANA service names).
PORT_PROTOCOLS: dict[int, str] = {
    993: "imap",
    143: "imap",
    995: "pop3",
    110: "pop3",
    465: "submission",
    587: "submission",
    25: "smtp",
    636: "ldap",
    389: "ldap",
    3269: "ldap",
    3268: "ldap",
    563: "nntp",
    119: "nntp",
    433: "nntp",
}

IMPLICIT_TLS_PORTS = frozenset({993, 995, 465, 636, 563, 3269})

_SMTP_GREETING = re.compile(rb"^220[ -][^\r\n]*", re.IGNORECASE)
_NNTP_GREETING = re.compile(rb"^20[01][ -]")


def protocol_from_port(port: int | None) -> str:
    """The protocol usually served on ``port``, or ``unknown``."""
    if port is None:
        return "unknown"
    return PORT_PROTOCOLS.get(port, "unknown")


def protocol_from_server_greeting(data: bytes) -> str:
    """The protocol whose server greeting ``data`` starts with, or ``unknown``."""
    head = data[:512]
    if head.startswith((b"* OK", b"* PREAUTH")):
        return "imap"
    if head.startswith(b"+OK"):
        return "pop3"
    if _NNTP_GREETING.match(head):
        return "nntp"
    match = _SMTP_GREETING.match(head)
    if match:
        line = match.group(0).upper()
        if b"FTP" in line:
            return "unknown"
        return "smtp"
    return "unknown"


def protocol_from_client_data(data: bytes) -> str:
    """The protocol of a client that speaks first; only LDAP (a BER SEQUENCE) is recognised."""
    if len(data) >= 2 and data[0] == 0x30:
        return "ldap"
    return "unknown"


def refine_protocol(by_port: str, greeting_guess: str) -> str:
    """Combine the port's protocol with what the traffic showed.

    The traffic wins when it is recognisable, except that an SMTP greeting
    on a submission port stays ``submission``.
    """
    if greeting_guess == "unknown":
        return by_port
    if greeting_guess == "smtp" and by_port == "submission":
        return "submission"
    return greeting_guess


_TLS_VERSION_NAMES = {
    0x0304: "TLSv1.3",
    0x0303: "TLSv1.2",
    0x0302: "TLSv1.1",
    0x0301: "TLSv1",
    0x0300: "SSLv3",
}
SUPPORTED_VERSIONS_EXTENSION = 43


def offered_tls_versions(
    extensions: list[tuple[int, bytes]], legacy_version: int | None
) -> list[str]:
    """TLS versions a ClientHello offers: its supported_versions extension, else its legacy version.

    GREASE values (RFC 8701) and unknown numbers are left out.
    """
    for ext_type, body in extensions:
        if ext_type != SUPPORTED_VERSIONS_EXTENSION or not body:
            continue
        length = body[0]
        raw = body[1 : 1 + length]
        versions = []
        for i in range(0, len(raw) - 1, 2):
            number = int.from_bytes(raw[i : i + 2], "big")
            if number in _TLS_VERSION_NAMES:
                versions.append(_TLS_VERSION_NAMES[number])
        return versions
    if legacy_version in _TLS_VERSION_NAMES:
        return [_TLS_VERSION_NAMES[legacy_version]]
    return []


SERVER_NAME_EXTENSION = 0


def server_name_from_extensions(extensions: list[tuple[int, bytes]]) -> str | None:
    """The host name in a ClientHello's server_name extension, exactly as sent (RFC 6066 §3).

    None when the extension is absent or carries no host_name entry. Bytes that
    are not UTF-8 are kept as backslash escapes rather than dropped.
    """
    for ext_type, body in extensions:
        if ext_type != SERVER_NAME_EXTENSION or len(body) < 2:
            continue
        end = min(len(body), 2 + int.from_bytes(body[0:2], "big"))
        position = 2
        while position + 3 <= end:
            name_type = body[position]
            length = int.from_bytes(body[position + 1 : position + 3], "big")
            name = body[position + 3 : position + 3 + length]
            if name_type == 0 and name:
                return name.decode("utf-8", "backslashreplace")
            position += 3 + length
    return None


def sendable_sni(name: str) -> bool:
    """True when mitmproxy can send ``name`` upstream as SNI (its IDNA codec accepts it)."""
    try:
        name.encode("idna")
    except UnicodeError:
        return False
    return True
