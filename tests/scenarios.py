"""The scenario table: one source of truth for the test servers and the tests.

Each scenario is a name a client asks for, the certificate an SNI-capable
server presents for it, and the cause certmatch should report (``None`` when
the certificate matches). Servers that select certificates by SNI (dovecot,
aiosmtpd) get one ``local_name``/SNI entry per scenario whose certificate is
not the default; every other name, and a ClientHello without SNI, gets the
default certificate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from servers.certs import CertFiles, CertSpec, MintedPki, mint_all

DEFAULT_CERT = CertSpec(
    cn="mail.example.test",
    dns=tuple(f"{label}.example.test" for label in ("mail", "imap", "pop", "smtp", "ldap", "news")),
)

# Host names that the default certificate covers, per protocol: the "correct"
# name a client of each protocol asks for.
SERVICE_NAMES: dict[str, str] = {
    "imap": "imap.example.test",
    "pop3": "pop.example.test",
    "smtp": "smtp.example.test",
    "submission": "smtp.example.test",
    "ldap": "ldap.example.test",
    "nntp": "news.example.test",
}


@dataclass(frozen=True)
class Scenario:
    """One way a client's requested name and a server's certificate can (mis)match."""

    name: str
    server_name: str  # the name the client asks for; with SNI it selects ``cert``
    cert: CertSpec  # what an SNI-capable server presents when asked for server_name with SNI
    expected_cause: str | None  # certmatch cause id, None when the certificate matches
    description: str
    client_sends_sni: bool = True  # False: the client asks for server_name but sends no SNI

    @property
    def presented(self) -> CertSpec:
        """The certificate the client of this scenario actually receives."""
        return self.cert if self.client_sends_sni else DEFAULT_CERT

    @property
    def has_own_cert(self) -> bool:
        """True when servers need an SNI entry (a non-default certificate) for server_name."""
        return self.cert != DEFAULT_CERT

    def name_for(self, protocol: str) -> str:
        """The name to ask for: the per-protocol service name for "correct", else server_name."""
        if self.name == "correct":
            return SERVICE_NAMES.get(protocol, self.server_name)
        return self.server_name


_WILDCARD = CertSpec(cn=None, dns=("*.example.test",))

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "correct",
        "mail.example.test",
        DEFAULT_CERT,
        None,
        "The client asks for a name in the default certificate's SAN (imap/pop/smtp/"
        "ldap/news/mail.example.test); the certificate matches.",
    ),
    Scenario(
        "wrong-host",
        "wrong.example.test",
        CertSpec(cn="other.example.net", dns=("other.example.net",)),
        "name-not-in-certificate",
        "The server presents a certificate for another host entirely.",
    ),
    Scenario(
        "cn-only",
        "cnonly.example.test",
        CertSpec(cn="cnonly.example.test"),
        "cn-only-legacy",
        "The name is only in the subject CN; the certificate has no SAN.",
    ),
    Scenario(
        "cn-beside-san",
        "cnsan.example.test",
        CertSpec(cn="cnsan.example.test", dns=("other.example.test",)),
        "cn-ignored-san-present",
        "The name is in the CN, but a SAN is present and lacks it, so the CN is ignored.",
    ),
    Scenario(
        "wildcard-too-deep",
        "a.b.example.test",
        _WILDCARD,
        "wildcard-too-deep",
        "*.example.test covers exactly one label, not a.b.example.test.",
    ),
    Scenario(
        "wildcard-apex",
        "example.test",
        _WILDCARD,
        "wildcard-apex",
        "*.example.test does not cover the apex example.test.",
    ),
    Scenario(
        "expired",
        "expired.example.test",
        CertSpec(
            cn="expired.example.test",
            dns=("expired.example.test",),
            not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
        ),
        "expired",
        "The name matches, but the certificate expired on 2021-01-01.",
    ),
    Scenario(
        "self-signed",
        "selfsigned.example.test",
        CertSpec(cn="selfsigned.example.test", dns=("selfsigned.example.test",), signer="self"),
        "self-signed",
        "The name matches, but the certificate is self-signed.",
    ),
    Scenario(
        "missing-intermediate",
        "nointer.example.test",
        CertSpec(cn="nointer.example.test", dns=("nointer.example.test",), send_intermediate=False),
        "missing-intermediate",
        "The name matches and the intermediate signed it, but the server sends the leaf alone.",
    ),
    Scenario(
        "alt",
        "alt.example.test",
        CertSpec(cn="alt.example.test", dns=("alt.example.test",)),
        "no-sni-default-certificate",
        "The client asks for alt.example.test without SNI and gets the default certificate; "
        "with SNI it would have received the matching alt certificate.",
        client_sends_sni=False,
    ),
    Scenario(
        "ip-literal",
        "127.0.0.1",
        DEFAULT_CERT,
        "ip-not-in-certificate",
        "The client dials 127.0.0.1 (an IP literal, so no SNI); the default certificate "
        "has no IP SAN.",
        client_sends_sni=False,
    ),
)

SCENARIOS_BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}


def scenario(name: str) -> Scenario:
    """The scenario called ``name``; a KeyError lists the known names."""
    try:
        return SCENARIOS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(SCENARIOS_BY_NAME)}") from None


def sni_scenarios() -> tuple[Scenario, ...]:
    """Scenarios whose server_name selects a non-default certificate on SNI-capable servers."""
    return tuple(s for s in SCENARIOS if s.has_own_cert)


@dataclass(frozen=True)
class ScenarioPki:
    """The minted certificates of every scenario (what the ``pki`` fixture yields)."""

    minted: MintedPki
    default: CertFiles  # no SNI or an unknown name
    by_scenario: dict[str, CertFiles]  # scenario name -> certificate its server_name selects
    sni: dict[str, CertFiles]  # server_name -> certificate, only names with their own certificate

    @property
    def root_ca(self) -> Path:
        """PEM of the root CA: the trust anchor for clients and certmatch."""
        return self.minted.root_ca

    @property
    def intermediate_ca(self) -> Path:
        return self.minted.intermediate_ca

    def for_scenario(self, name: str) -> CertFiles:
        """The certificate a server selects for the scenario's server_name sent as SNI."""
        scenario(name)  # a clear KeyError for unknown names
        return self.by_scenario[name]

    def presented(self, name: str) -> CertFiles:
        """The certificate the scenario's client actually receives (default when it sends no SNI)."""
        return self.for_scenario(name) if scenario(name).client_sends_sni else self.default


def mint_scenario_pki(directory: Path) -> ScenarioPki:
    """Mint the default certificate and one certificate per scenario that has its own."""
    specs = {"default": DEFAULT_CERT} | {s.name: s.cert for s in sni_scenarios()}
    minted = mint_all(specs, directory)
    default = minted.certs["default"]
    by_scenario = {s.name: minted.certs[s.name] if s.has_own_cert else default for s in SCENARIOS}
    sni = {s.server_name: minted.certs[s.name] for s in sni_scenarios()}
    return ScenarioPki(minted, default, by_scenario, sni)
