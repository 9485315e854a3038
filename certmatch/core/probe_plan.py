"""Where and how ``certmatch probe`` connects: the target ``HOST[:PORT]``, the port and the
STARTTLS dialogue, chosen by port (:data:`~certmatch.core.protocols.PORTS`) or by
``--starttls``. Pure: parsing and choosing only; :mod:`certmatch.net.endpoint` connects.
"""

from __future__ import annotations

from dataclasses import dataclass

from certmatch.core.protocols import PORTS, STARTTLS_PROTOCOLS, is_starttls_port, protocol_from_port

# --starttls: by port, a protocol's dialogue (smtp covers submission), or implicit TLS.
STARTTLS_CHOICES: tuple[str, ...] = (
    "auto",
    *(p for p in STARTTLS_PROTOCOLS if p != "submission"),
    "none",
)

# The port a target without one gets, by --starttls: implicit-TLS IMAP unless a STARTTLS
# protocol is named, then that protocol's STARTTLS port (submission for smtp).
DEFAULT_PORTS = {
    "auto": 993,
    "none": 993,
    "smtp": 587,
    "imap": 143,
    "pop3": 110,
    "ldap": 389,
    "nntp": 119,
}

BOTH = "both"  # the default SNI mode: one handshake with SNI, one without


@dataclass(frozen=True)
class Target:
    """``HOST[:PORT]`` as given (an IPv6 address in brackets: ``[::1]:993``)."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_target(text: str) -> Target:
    """Read ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address; ValueError with a
    sentence when it is none of those."""
    given = text.strip()
    if not given:
        raise ValueError("an empty target: give HOST or HOST:PORT")
    host, port_text = given, ""
    if given.startswith("["):
        end = given.find("]")
        if end < 0 or (given[end + 1 :] and not given[end + 1 :].startswith(":")):
            raise ValueError(f"{text!r}: write an IPv6 target as [ADDRESS]:PORT")
        host, port_text = given[1:end], given[end + 2 :]
    elif given.count(":") == 1:
        host, _, port_text = given.partition(":")
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    host = host.rstrip(".") if host not in (".",) else host
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"{text!r}: not a host name or address")
    return Target(host, int(port_text) if port_text else None)


@dataclass(frozen=True)
class Plan:
    """Where and how to connect: the port, the protocol, and the STARTTLS dialogue (None:
    implicit TLS)."""

    port: int
    protocol: str
    starttls: str | None

    @property
    def tls_kind(self) -> str:
        return "starttls" if self.starttls else "implicit"


def plan_for(target: Target, starttls: str = "auto") -> Plan:
    """The port (the target's, or the default for ``starttls``) and the dialogue to speak."""
    if starttls not in STARTTLS_CHOICES:
        raise ValueError(f"--starttls {starttls!r}: choose one of {', '.join(STARTTLS_CHOICES)}")
    port = target.port or DEFAULT_PORTS[starttls]
    by_port = protocol_from_port(port)
    if starttls == "auto":
        return Plan(port, by_port, by_port if is_starttls_port(by_port, port) else None)
    if starttls == "none":
        return Plan(port, by_port, None)
    protocol = starttls
    if starttls == "smtp" and port in PORTS["submission"].all:
        protocol = "submission"
    return Plan(port, protocol, protocol)
