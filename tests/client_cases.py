"""The real-client matrix of issue 9: the cases, the clients, and what each client must decide.

Seven cases, each one certificate mistake (or none), minted under the test root with
certmatch.lab.pki and dated from now, so nothing depends on today's date. A server that
selects its certificate by SNI (dovecot, aiosmtpd) serves each case's certificate for the
case's server name; nnrpd and slapd, which cannot, get one instance per certificate.

The clients (certmatch.lab.clients) run in the (protocol, TLS) pairs of ``COMBOS``: every
client once with implicit TLS and once with STARTTLS.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from servers import CertFiles, CertSpec, mint_all

from certmatch.lab.clients import CLIENTS, Decision
from certmatch.lab.pki import make_ca

SERVICE_NAMES = {
    "imap": "imap.example.test",
    "pop3": "pop.example.test",
    "smtp": "smtp.example.test",
    "nntp": "news.example.test",
    "ldap": "ldap.example.test",
}
DEFAULT_CERT = CertSpec(cn="mail.example.test", dns=("mail.example.test", *SERVICE_NAMES.values()))


@dataclass(frozen=True)
class ClientCase:
    """One way a client's configured name, its trust and the server's certificate can meet."""

    name: str
    server_name: str | None  # the client's configured name; None: the protocol's service name
    cert: CertSpec  # what the server presents for that name
    kind: str  # "ok", or what a checking client objects to: name, expired, self-signed, issuer
    cause: str | None  # the certificate's own cause in certmatch (None: it matches)
    trusts_lab_ca: bool = True  # False: the client trusts an unrelated CA only
    description: str = ""

    def name_for(self, protocol: str) -> str:
        return self.server_name or SERVICE_NAMES[protocol]


def _dated(days_from_now_start: int, days_from_now_end: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return now + dt.timedelta(days=days_from_now_start), now + dt.timedelta(days=days_from_now_end)


def cases() -> tuple[ClientCase, ...]:
    """The seven cases; the expired certificate ended yesterday (its dates derive from now)."""
    expired_from, expired_until = _dated(-30, -1)
    return (
        ClientCase(
            "good", None, DEFAULT_CERT, "ok", None, description="the name is on the certificate"
        ),
        ClientCase(
            "wrong-host",
            "wrong.example.test",
            CertSpec(cn="other.example.net", dns=("other.example.net",)),
            "name",
            "name-not-in-certificate",
            description="the certificate is for another host",
        ),
        ClientCase(
            "ip-address",
            "127.0.0.1",
            DEFAULT_CERT,
            "name",
            "ip-not-in-certificate",
            description="the client is configured with an IP address the certificate lacks",
        ),
        ClientCase(
            "wildcard-too-deep",
            "a.b.example.test",
            CertSpec(cn=None, dns=("*.example.test",)),
            "name",
            "wildcard-too-deep",
            description="*.example.test covers one label, not a.b",
        ),
        ClientCase(
            "expired",
            "expired.example.test",
            CertSpec(
                cn="expired.example.test",
                dns=("expired.example.test",),
                not_before=expired_from,
                not_after=expired_until,
            ),
            "expired",
            "expired",
            description="the certificate's validity ended yesterday",
        ),
        ClientCase(
            "self-signed",
            "selfsigned.example.test",
            CertSpec(cn="selfsigned.example.test", dns=("selfsigned.example.test",), signer="self"),
            "self-signed",
            "self-signed",
            description="the name matches; nobody vouches for the certificate",
        ),
        ClientCase(
            "untrusted-ca",
            None,
            DEFAULT_CERT,
            "issuer",
            "proxy-ca-not-trusted",
            trusts_lab_ca=False,
            description="the certificate is right but the client does not trust its CA "
            "(through the proxy: the proxy's CA)",
        ),
    )


CASE_NAMES = tuple(c.name for c in cases())

# (client, protocol, tls): each client with implicit TLS and with STARTTLS.
COMBOS: tuple[tuple[str, str, str], ...] = (
    ("gnutls-cli", "imap", "implicit"),
    ("gnutls-cli", "smtp", "starttls"),
    ("openssl-s_client", "imap", "implicit"),
    ("openssl-s_client", "smtp", "starttls"),
    ("fetchmail", "pop3", "implicit"),
    ("fetchmail", "imap", "starttls"),
    ("mbsync", "imap", "implicit"),
    ("mbsync", "imap", "starttls"),
    ("swaks", "smtp", "implicit"),
    ("swaks", "smtp", "starttls"),
    ("python-stdlib", "imap", "implicit"),
    ("python-stdlib", "pop3", "starttls"),
    ("python-stdlib", "smtp", "starttls"),
    ("python-stdlib", "nntp", "implicit"),
    # GnuTLS clients that check after the handshake and close without an alert (issue 9, 2).
    ("neomutt", "imap", "implicit"),
    ("neomutt", "imap", "starttls"),
    ("msmtp", "smtp", "implicit"),
    ("msmtp", "smtp", "starttls"),
    ("ldapsearch", "ldap", "implicit"),
    ("ldapsearch", "ldap", "starttls"),
)


def expected_decision(client: str, case: ClientCase) -> Decision:
    """What the client decides on its own: it accepts only the good case, except that a client
    that never checks names (swaks) accepts every case whose only fault is the name."""
    if case.kind == "ok":
        return Decision.ACCEPTED
    if case.kind == "name" and not CLIENTS[client].checks_host_name:
        return Decision.ACCEPTED
    return Decision.REFUSED


def expected_verdict(case: ClientCase) -> str:
    """certmatch's verdict on the session, whatever the client decided: a wrong name is a
    mismatch, a wrong date or issuer untrusted."""
    if case.kind == "ok":
        return "match"
    return "mismatch" if case.kind == "name" else "untrusted"


# The words each client refuses with, by what it objects to (a regular expression each).
REFUSAL_WORDS: dict[str, dict[str, str]] = {
    "gnutls-cli": {
        "name": r"The name in the certificate does not match the expected",
        "expired": r"The certificate chain uses expired certificate",
        "self-signed": r"The certificate issuer is unknown",
        "issuer": r"The certificate issuer is unknown",
    },
    "openssl-s_client": {
        "name": r"verify error:num=62:hostname mismatch|verify error:num=64:IP address mismatch",
        "expired": r"verify error:num=10:certificate has expired",
        "self-signed": r"verify error:num=18:self-signed certificate",
        "issuer": r"verify error:num=20:unable to get local issuer certificate",
    },
    "fetchmail": {
        "name": r"Server certificate verification error: hostname mismatch",
        "expired": r"Server certificate verification error: certificate has expired",
        "self-signed": r"Server certificate verification error: self-signed certificate",
        "issuer": r"Server certificate verification error: unable to get local issuer certificate",
    },
    "mbsync": {
        # mbsync matches names itself: DNS names of the subjectAltName, then the CN; a wildcard
        # certificate without a CN ends in "cannot get certificate common name".
        "name": r"certificate owner does not match hostname|cannot get certificate common name",
        "expired": r"certificate has expired",
        "self-signed": r"self-signed certificate",
        "issuer": r"unable to get local issuer certificate",
    },
    "swaks": {
        "expired": r"TLS startup failed .*certificate verify failed",
        "self-signed": r"TLS startup failed .*certificate verify failed",
        "issuer": r"TLS startup failed .*certificate verify failed",
    },
    "msmtp": {
        "name": r"TLS certificate verification failed: .*The name in the certificate does not "
        r"match the expected",
        "expired": r"TLS certificate verification failed: .*uses expired certificate",
        "self-signed": r"TLS certificate verification failed: .*The certificate issuer is unknown",
        "issuer": r"TLS certificate verification failed: .*The certificate issuer is unknown",
    },
    "ldapsearch": {
        # OpenLDAP's own name check (subjectAltName, then the CN) and GnuTLS's status bits:
        # 0x402 is INVALID | EXPIRED, 0x42 INVALID | SIGNER_NOT_FOUND.
        "name": r"TLS: hostname \(.*\) does not match common name in certificate|"
        r"TLS: unable to get common name from peer certificate",
        "expired": r"TLS: peer cert untrusted or revoked \(0x402\)",
        "self-signed": r"TLS: peer cert untrusted or revoked \(0x42\)",
        "issuer": r"TLS: peer cert untrusted or revoked \(0x42\)",
    },
    "neomutt": {
        # The certificate dialog it shows instead of going on; untrusted has no WARNING line.
        "name": r"WARNING: Server hostname does not match certificate",
        "expired": r"WARNING: Server certificate has expired",
        "self-signed": r"^SSL Certificate check \(certificate 1 of 1 in chain\)$",
        "issuer": r"^SSL Certificate check \(certificate 1 of \d in chain\)$",
    },
    "python-stdlib": {
        "name": r"certificate verify failed: (Hostname|IP address) mismatch",
        "expired": r"certificate verify failed: certificate has expired",
        "self-signed": r"certificate verify failed: self-signed certificate",
        "issuer": r"certificate verify failed: unable to get local issuer certificate",
    },
}


@dataclass(frozen=True)
class CasePki:
    """Every case's certificate under one root, and an unrelated CA nobody here issues from."""

    root_ca: Path
    unrelated_ca: Path
    default: CertFiles
    by_case: dict[str, CertFiles]  # case name -> the certificate served for its name
    sni: dict[str, CertFiles]  # server name -> certificate, for the SNI-selecting servers

    def cafile(self, case: ClientCase) -> Path:
        """The CA a client trusts when it talks to the real server directly."""
        return self.root_ca if case.trusts_lab_ca else self.unrelated_ca


def mint_case_pki(directory: Path) -> CasePki:
    all_cases = cases()
    specs = {"default": DEFAULT_CERT} | {
        c.name: c.cert for c in all_cases if c.cert != DEFAULT_CERT
    }
    minted = mint_all(specs, directory)
    unrelated = directory / "unrelated-ca.pem"
    unrelated.write_bytes(make_ca("certmatch Unrelated CA").cert_pem())
    default = minted.certs["default"]
    by_case = {c.name: minted.certs.get(c.name, default) for c in all_cases}
    sni = {
        c.server_name: minted.certs[c.name]
        for c in all_cases
        if c.server_name and c.name in minted.certs
    }
    return CasePki(minted.root_ca, unrelated, default, by_case, sni)
