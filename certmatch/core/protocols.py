"""The mail protocols certmatch knows: their ports, their greetings, their ClientHellos.

One vocabulary for the capture addon (which labels a session) and the
STARTTLS detection (which picks a state machine). Pure functions over bytes
and numbers. Only a protocol name ever leaves this module: greeting bytes
are looked at, never stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from certmatch.core.ldap_ber import SEQUENCE


@dataclass(frozen=True)
class WellKnownPorts:
    """The ports IANA assigns a protocol: with TLS from the first byte, and with STARTTLS."""

    implicit_tls: frozenset[int]
    starttls: frozenset[int]

    @property
    def all(self) -> frozenset[int]:
        return self.implicit_tls | self.starttls


def _ports(implicit_tls: tuple[int, ...], starttls: tuple[int, ...]) -> WellKnownPorts:
    return WellKnownPorts(frozenset(implicit_tls), frozenset(starttls))


# Every protocol upgrades with STARTTLS (RFC 3207, RFC 8314, RFC 2595, RFC 4513, RFC 4642),
# in this order, which is the order the proxy's --set certmatch_starttls choices list them.
PORTS: dict[str, WellKnownPorts] = {
    "smtp": _ports(implicit_tls=(), starttls=(25,)),
    "submission": _ports(implicit_tls=(465,), starttls=(587,)),
    "imap": _ports(implicit_tls=(993,), starttls=(143,)),
    "pop3": _ports(implicit_tls=(995,), starttls=(110,)),
    "ldap": _ports(implicit_tls=(636, 3269), starttls=(389, 3268)),  # 3268/9: global catalog
    "nntp": _ports(implicit_tls=(563,), starttls=(119, 433)),
}

STARTTLS_PROTOCOLS: tuple[str, ...] = tuple(name for name, ports in PORTS.items() if ports.starttls)

_PROTOCOL_OF_PORT: dict[int, str] = {
    port: name for name, ports in PORTS.items() for port in ports.all
}

# A greeting is recognised by its first line, read case-insensitively.
_GREETINGS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("imap", re.compile(rb"\* (OK|PREAUTH)\b")),  # RFC 9051 §7.1
    ("pop3", re.compile(rb"\+OK")),  # RFC 1939 §4
    ("nntp", re.compile(rb"20[01][ -]")),  # RFC 3977 §5.1
    ("smtp", re.compile(rb"220[ -]")),  # RFC 5321 §4.2; FTP greets with 220 too
)


def protocol_from_port(port: int | None) -> str:
    """The protocol usually served on ``port``, implicit TLS or STARTTLS, or ``unknown``."""
    if port is None:
        return "unknown"
    return _PROTOCOL_OF_PORT.get(port, "unknown")


def is_starttls_port(protocol: str, port: int | None) -> bool:
    """True when ``port`` is where ``protocol`` is served in plaintext, to be upgraded."""
    return protocol in PORTS and port in PORTS[protocol].starttls


def protocol_from_server_greeting(data: bytes) -> str:
    """The protocol whose server greeting is the first line of ``data``, or ``unknown``.

    A line without its end is judged as far as it goes.
    """
    line = data.split(b"\n", 1)[0].upper()
    for protocol, greeting in _GREETINGS:
        if greeting.match(line):
            if protocol == "smtp" and b"FTP" in line:
                return "unknown"
            return protocol
    return "unknown"


def protocol_from_client_data(data: bytes) -> str:
    """The protocol of a client that speaks first; only LDAP (a BER SEQUENCE) is recognised."""
    if len(data) >= 2 and data[0] == SEQUENCE:
        return "ldap"
    return "unknown"


def refine_protocol(by_port: str, seen: str) -> str:
    """Combine the port's protocol with what the traffic showed.

    The traffic wins when it is recognisable, except that SMTP on a
    submission port stays ``submission``.
    """
    if seen == "unknown":
        return by_port
    if seen == "smtp" and by_port == "submission":
        return "submission"
    return seen


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
