"""Facts about one TLS handshake, as the proxy saw them.

A session holds facts only, never verdicts: verdicts are derived when a
recording is read, so an old recording is judged by today's rules.
Absent values are ``None`` (JSON ``null``): "the client sent no SNI" is
``sni=None``, never ``""``.

The fields a verdict and its causes are computed from are declared here,
once, with field metadata (:data:`VERDICT`, :data:`CAPTURE_TIME`); everything else only fills in the prose.
:data:`VERDICT_FIELDS` lists them and :func:`verdict_part` keeps only them,
so the judge (:mod:`certmatch.core.judge`) decides from exactly what its
cache key holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from certmatch.core.dns_facts import DnsFacts

FORMAT_NAME = "certmatch-recording"
FORMAT_VERSION = 1

Protocol = Literal["imap", "pop3", "smtp", "submission", "ldap", "nntp", "unknown"]
PROTOCOLS: tuple[str, ...] = ("imap", "pop3", "smtp", "submission", "ldap", "nntp", "unknown")

TlsKind = Literal["implicit", "starttls"]

HostSource = Literal["sni", "socks5", "http-connect", "reverse-target", "option", "unknown"]
HOST_SOURCES: tuple[str, ...] = (
    "sni",
    "socks5",
    "http-connect",
    "reverse-target",
    "option",
    "unknown",
)

# What certificate the client was shown (``SessionFacts.presented``): certmatch's copy of the
# server leaf's names and dates, or stock mitmproxy's substitute.
# "real" is observe mode: the proxy relays the handshake, so the client saw the server's own chain.
Presented = Literal["mirror", "substitute", "real"]
PRESENTED: tuple[str, ...] = ("mirror", "substitute", "real")

# Where the recorded chain came from (``SessionFacts.chain_source``):
# proxy           the proxy's own upstream handshake (reverse, socks5, regular modes);
# wire            read from the relayed server Certificate message (observe mode, TLS <= 1.2);
# side-handshake  a separate handshake to the same server with the client's SNI and versions
#                 (observe mode, TLS 1.3, where the certificate is encrypted);
# resumed         the relayed handshake resumed a session and carried no certificate; the
#                 chain is the cached or side-handshake one.
ChainSource = Literal["proxy", "wire", "side-handshake", "resumed"]
CHAIN_SOURCES: tuple[str, ...] = ("proxy", "wire", "side-handshake", "resumed")

# Why the proxy sent no SNI upstream although the client sent one (``upstream_sni_reason``).
UpstreamSniReason = Literal["ip-literal", "not-encodable"]
UPSTREAM_SNI_REASONS: tuple[str, ...] = ("ip-literal", "not-encodable")

# What the client did after it was shown a certificate (``SessionFacts.client_decision``):
# went-on            it sent application data after the handshake;
# closed-after-handshake
#                    the handshake completed and it closed without sending application data
#                    (a close_notify alone counts as nothing); for implicit TLS on a
#                    server-first protocol, after the greeting; after STARTTLS, no command;
# alert              it sent a TLS alert (``client_alert``, ``client_alert_code``);
# closed-during-handshake
#                    it closed mid-handshake without an alert;
# closed-before-handshake
#                    the connection closed before any byte: a port check or health probe.
ClientDecision = Literal[
    "went-on", "closed-after-handshake", "alert", "closed-during-handshake",
    "closed-before-handshake",
]  # fmt: skip
CLIENT_DECISIONS: tuple[str, ...] = (
    "went-on",
    "closed-after-handshake",
    "alert",
    "closed-during-handshake",
    "closed-before-handshake",
)

# Field metadata of the facts a verdict and its causes depend on: by their value, or
# (the capture time) only through where they fall among the certificates' validity periods.
VERDICT = {"verdict": "value"}
CAPTURE_TIME = {"verdict": "capture-time"}


@dataclass
class SniProbe:
    """A second handshake the proxy made itself, with SNI, when the client sent none.

    It answers "would the server have sent a matching certificate if the
    client had asked by name?"
    """

    sni: str
    chain: list[str] = field(default_factory=list)  # base64 DER, leaf first
    error: str | None = None


@dataclass
class StartTlsFacts:
    """What happened in the plaintext phase before a STARTTLS upgrade."""

    server_offered: bool | None = None
    client_requested: bool | None = None
    server_reply: str | None = None
    plaintext_auth: str | None = None  # the command name only, never the credential
    injection: str | None = None  # which side sent bytes it should not have, and how many
    phase: str | None = None  # how far the upgrade got when it stopped


@dataclass
class SessionFacts:
    """One TLS handshake: what the client asked for and what the server presented."""

    id: str
    started: str = field(metadata=CAPTURE_TIME)  # ISO 8601, UTC
    client_address: str | None = None  # "ip:port"
    proxy_mode: str | None = None  # mitmproxy mode spec, e.g. "reverse:tls://host:993"
    protocol: str = "unknown"
    tls_kind: str = "implicit"
    requested_host: str | None = field(default=None, metadata=VERDICT)
    # whether the name came from the client or the user, or was assumed (requested-host-assumed)
    requested_host_source: str = field(default="unknown", metadata=VERDICT)
    # exactly what the client sent; None = no SNI extension
    sni: str | None = field(default=None, metadata=VERDICT)
    client_tls_versions: list[str] = field(default_factory=list)
    client_alpn: list[str] = field(default_factory=list)
    # the ClientHello's signature_algorithms, by RFC 8446 §4.2.3 name; None = not read
    client_signature_algorithms: list[str] | None = None
    server_address: str | None = None  # "host:port" as the proxy dialled it
    server_ip: str | None = None  # the address it resolved to
    upstream_sni: str | None = None  # what the proxy itself sent upstream
    # why that is none although the client sent SNI (UPSTREAM_SNI_REASONS); None otherwise
    upstream_sni_reason: str | None = None
    tls_version: str | None = None
    cipher: str | None = None
    chain: list[str] = field(default_factory=list, metadata=VERDICT)  # base64 DER, leaf first
    # where the chain came from (CHAIN_SOURCES); None = the proxy's own handshake (older lines)
    chain_source: str | None = field(default=None, metadata=VERDICT)
    # upstream connect or handshake error
    server_error: str | None = field(default=None, metadata=VERDICT)
    # client-side handshake error (e.g. it refused our CA)
    client_error: str | None = field(default=None, metadata=VERDICT)
    # the certificate the client was shown (PRESENTED); None = none at all, or an older recording
    presented: str | None = field(default=None, metadata=VERDICT)
    # what the client did with it (CLIENT_DECISIONS); None = unknown (an older recording, or
    # the proxy stopped first)
    client_decision: str | None = field(default=None, metadata=VERDICT)
    # the alert the client sent, by its name in RFC 8446 §6 / RFC 5246 §7.2 ("unknown_ca")
    client_alert: str | None = field(default=None, metadata=VERDICT)
    client_alert_code: int | None = None  # the alert's number (48 for unknown_ca)
    # seconds from the end of the handshake (or the greeting) to the client's close, to the
    # millisecond; never a verdict field, so sessions that differ only in it share a judgement
    client_waited: float | None = None
    action: str | None = None  # "pass" or "block": what the proxy did with the session
    sni_probe: SniProbe | None = field(default=None, metadata=VERDICT)
    starttls: StartTlsFacts | None = field(default=None, metadata=VERDICT)
    # what DNS said about the names (the judge reads only its verdict_view()); None = not
    # looked up
    dns: DnsFacts | None = field(default=None, metadata=VERDICT)
    notes: list[str] = field(default_factory=list)  # internal problems recorded, not raised

    def to_json(self) -> dict[str, Any]:
        """The session as a plain dict for one JSON line, with no empty optional parts."""
        data = dataclasses.asdict(self)
        for name in OPTIONAL_FIELDS:
            if data[name] is None:
                del data[name]
        if self.dns is not None:
            data["dns"] = self.dns.to_json()
        data["type"] = "session"
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionFacts:
        """Build facts from a dict that has already passed schema validation."""
        kwargs = {k: v for k, v in data.items() if k in _SESSION_FIELDS}
        if kwargs.get("sni_probe") is not None:
            kwargs["sni_probe"] = SniProbe(**kwargs["sni_probe"])
        if kwargs.get("starttls") is not None:
            kwargs["starttls"] = StartTlsFacts(**kwargs["starttls"])
        if kwargs.get("dns") is not None:
            kwargs["dns"] = DnsFacts.from_json(kwargs["dns"])
        return cls(**kwargs)

    @classmethod
    def from_line(cls, data: dict[str, Any]) -> SessionFacts:
        """:meth:`from_json` for a freshly parsed recording line that passed the schema (which
        names every field but the optional ones), taking ``data`` over as the session's
        own attributes: ``__init__`` would only copy them and fill defaults. Anything unusual
        goes to from_json."""
        if data.keys() != _LINE_KEYS:
            data = {**_ABSENT_OPTIONAL, **data}  # one merge, not a setdefault per field
            if data.keys() != _LINE_KEYS:
                return cls.from_json(data)
        del data["type"]
        probe = data["sni_probe"]
        if probe is not None:
            data["sni_probe"] = SniProbe(**probe)
        starttls = data["starttls"]
        if starttls is not None:
            data["starttls"] = StartTlsFacts(**starttls)
        dns = data["dns"]
        if dns is not None:
            data["dns"] = DnsFacts.from_json(dns)
        facts = cls.__new__(cls)
        facts.__dict__ = data
        return facts


# The fields a line leaves out when they are None (an older recording has none of them).
OPTIONAL_FIELDS: tuple[str, ...] = (
    "sni_probe",
    "starttls",
    "presented",
    "client_decision",
    "client_alert",
    "client_alert_code",
    "client_waited",
    "dns",
    "upstream_sni_reason",
    "client_signature_algorithms",
    "chain_source",
)
_SESSION_FIELDS = frozenset(f.name for f in dataclasses.fields(SessionFacts))
_ABSENT_OPTIONAL: dict[str, None] = dict.fromkeys(OPTIONAL_FIELDS)
_LINE_KEYS = _SESSION_FIELDS | {"type"}

# The fields the verdict and its causes depend on, in declaration order.
VERDICT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(SessionFacts) if "verdict" in f.metadata
)
# The one field that bears on the verdict only through certificate validity.
CAPTURE_TIME_FIELD = next(
    f.name for f in dataclasses.fields(SessionFacts) if f.metadata.get("verdict") == "capture-time"
)


def verdict_part(facts: SessionFacts) -> SessionFacts:
    """A copy of ``facts`` that keeps only the verdict fields (the others are reset).

    Deciding from this copy guarantees that nothing else can change a verdict,
    so a cache keyed on the verdict fields cannot drift from the decision.
    """
    part = SessionFacts(id="", **{name: getattr(facts, name) for name in VERDICT_FIELDS})
    if part.dns is not None:
        # The DNS rules read what the resolvers said (not when, nor the TTLs), and the
        # protocol, for which SRV services apply; the judge's key holds both only then.
        part.dns = part.dns.verdict_view()
        part.protocol = facts.protocol
    return part


@dataclass
class RecordingHeader:
    """The first line of every recording."""

    tool_version: str
    created: str
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    # PEM texts of the extra CA certificates the proxy judged with (they are public), one
    # certificate each: check, view and replay trust them for this file's sessions only
    ca_certificates: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"type": "header", **dataclasses.asdict(self)}
