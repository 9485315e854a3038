"""The catalogue of causes: why a mail client rejects a server's certificate.

Each cause has a stable id (used in recordings' reports, ``--fail-on`` and
the TUI), a title, an explanation and a fix written as templates that the
diagnosis fills with one session's own names, and the standards it rests on.

Templates use these fields (all strings, always present):
``requested`` the name the client asked for, ``source`` where that name
came from, ``server`` the address dialled, ``names`` the identifiers the
certificate presents, ``sni`` what the client sent as SNI, ``detail`` the
rule-level reason from the identity or trust check, ``pattern`` the
offending certificate name (wildcard, NUL name) if any, ``probe_names``
the names on the certificate the server sends when asked by name,
``candidates`` certificate names a client could use instead, ``address_sni``
what the client's SNI (none, or an address) meant for a client that dialled an
address, ``ip_view`` what a client configured with the server's address would
see, ``refusal`` what the client did instead of going on (its alert, or how and when it
closed the connection), ``shown`` which certificate certmatch showed the client,
``refusal_fix`` what to do about a refusal given the causes beside it.

Each cause names what raises it (``raised_by``): identity rules, trust
problems, STARTTLS findings and the session rules of the diagnosis, all
enums whose members say which function decides them. Every rule is bound to
exactly one cause, and :func:`cause_of` is the one way from a rule to its
cause: from a cause id to the function that raises it is one hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from certmatch.core.dns_rules import DnsRule
from certmatch.core.identity import IdentityRule
from certmatch.core.session_rules import SessionRule
from certmatch.core.starttls_findings import StartTlsFinding
from certmatch.core.trust import TrustProblemId

Severity = Literal["security", "failure", "warning"]

# Anything that can raise a cause.
Rule = IdentityRule | TrustProblemId | StartTlsFinding | SessionRule | DnsRule
RULE_TYPES: tuple[type[Rule], ...] = (
    IdentityRule,
    TrustProblemId,
    StartTlsFinding,
    SessionRule,
    DnsRule,
)


@dataclass(frozen=True)
class Citation:
    """A standard or article a person can look up, e.g. ``RFC 6125 §6.4.3``."""

    source: str
    section: str = ""
    note: str = ""

    def __str__(self) -> str:
        text = f"{self.source} {self.section}".strip()
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Cause:
    """Why a client rejects a certificate, explained, with a fix and the standards cited."""

    id: str
    title: str
    severity: Severity
    explanation: str
    fix: str
    citations: tuple[Citation, ...]
    # The rules bound to this cause, the one that decides it first. An identity rule that
    # accepts names (exact, wildcard, ip-match) is bound to the cause of finding no match.
    raised_by: tuple[Rule, ...] = ()


KB_Q198564 = Citation(
    "Microsoft KB Q198564",
    "",
    "the certificate name must equal the host name in DNS and the server name in the client",
)
RFC7817 = Citation("RFC 7817", "§3", "mail clients check the server name as RFC 6125 §6 says")
RFC6125_DNS = Citation("RFC 6125", "§6.4.1", "DNS-ID matching")
RFC9525_DNS = Citation("RFC 9525", "§6.3", "DNS domain name matching")
RFC6125_WILDCARD = Citation("RFC 6125", "§6.4.3", "wildcard certificates")
RFC6125_CN = Citation("RFC 6125", "§6.4.4", "CN-ID only when there is no DNS-ID")
RFC9525_CHANGES = Citation("RFC 9525", "Appendix A", "CN-ID is no longer used")
RFC6066_SNI = Citation("RFC 6066", "§3", "Server Name Indication")
RFC6066_SNI_IP = Citation(
    "RFC 6066", "§3", "Literal IPv4 and IPv6 addresses are not permitted in HostName"
)
RFC9525_IP = Citation("RFC 9525", "§6.4", "IP address matching")
RFC9525_REFERENCE = Citation(
    "RFC 9525", "§6.1.1", "the reference identifier comes from the client's configuration"
)
RFC5280_VALIDITY = Citation("RFC 5280", "§4.1.2.5", "validity period")
RFC5280_PATH = Citation("RFC 5280", "§6.1", "certification path validation")
RFC8446_CERT = Citation("RFC 8446", "§4.4.2", "the server sends its chain, leaf first")
RFC5246_CERT = Citation("RFC 5246", "§7.4.2", "each certificate certifies the one before it")

RFC3207 = Citation("RFC 3207", "§4", "SMTP STARTTLS: the EHLO keyword and the 220 reply")
RFC2595_3 = Citation("RFC 2595", "§3", "IMAP STARTTLS")
RFC2595_4 = Citation("RFC 2595", "§4", "POP3 STLS")
RFC4513_3 = Citation("RFC 4513", "§3", "LDAP StartTLS operation")
RFC4642 = Citation("RFC 4642", "§2", "NNTP STARTTLS")
RFC3207_REPLY = Citation("RFC 3207", "§4", "the server answers STARTTLS with 220, 501 or 454")
# Read in RFC 5321's text (§4.1.1.10) and RFC 3501/9051's (§7.1.5), through the search tool.
RFC5321_QUIT = Citation(
    "RFC 5321",
    "§4.1.1.10",
    "the server must not close the connection until it has received and replied to QUIT",
)
RFC9051_BYE = Citation("RFC 9051", "§7.1.5", "an IMAP server says BYE before it closes")
RFC8314 = Citation(
    "RFC 8314", "§3", "prefer implicit TLS; clients must not send credentials in clear"
)
RFC8446_ALERTS = Citation(
    "RFC 8446", "§6.2", "error alerts: bad_certificate, certificate_unknown, unknown_ca, ..."
)
RFC5246_ALERTS = Citation("RFC 5246", "§7.2", "the TLS 1.2 alerts")
RFC8446_CLOSURE = Citation(
    "RFC 8446", "§6.1", "closure alerts: close_notify ends the connection, it refuses nothing"
)
# The DNS causes (issue 11). RFC 6125 and RFC 2595 (as RFC 6125 Appendix B.1 quotes it) were
# read in their text; RFC 7817 §3 only as quoted by a client's compliance catalogue.
RFC6125_SOURCE = Citation(
    "RFC 6125",
    "§6.2.1",
    "reference identifiers come from the source domain, not one derived from DNS",
)
RFC6125_LOCAL_POLICY = Citation(
    "RFC 6125", "§6.2.1", "which identifier types a client checks is local policy"
)
RFC2595_CNAME = Citation(
    "RFC 2595", "§2.4", "CNAME canonicalization is not done (quoted in RFC 6125 Appendix B.1)"
)
RFC7817_REFERENCES = Citation(
    "RFC 7817",
    "§3",
    "the email domain and the host used to open the connection, without CNAME canonicalization",
)
RFC6125_SRV = Citation(
    "RFC 6125", "§6.2.2", "an SRV-located mail server: SRV-ID _imaps.<domain> and DNS-IDs"
)
RFC6125_SRV_MATCH = Citation("RFC 6125", "§6.5.1", "matching an SRV-ID")
RFC4985 = Citation("RFC 4985", "§2", "the SRVName otherName (SRV-ID)")
RFC6186_LABELS = Citation("RFC 6186", "§3", "_imap, _imaps, _pop3, _pop3s, _submission")
MITMPROXY_CA = Citation("mitmproxy documentation", "", "About Certificates: installing the CA")

_CATALOGUE: tuple[Cause, ...] = (
    Cause(
        "nul-in-name",
        "A certificate name hides a NUL or control character",
        "security",
        "The certificate presented by {server} carries the name {pattern}. {detail} No "
        "legitimate CA issues such a name.",
        "Treat this session as an attack or a badly broken CA. Do not accept the certificate; find "
        "out who issued it and why it reached this client.",
        (
            Citation("CVE-2009-2408", "", "NUL in certificate names"),
            RFC6125_DNS,
            RFC9525_DNS,
        ),
        raised_by=(IdentityRule.NUL_IN_NAME,),
    ),
    Cause(
        "starttls-injection",
        "Bytes crossed the STARTTLS boundary",
        "security",
        "{detail} Anything sent in plaintext between the upgrade request and the TLS handshake "
        "can be injected by an attacker on the path; an implementation that buffers it and acts "
        "on it after the handshake treats attacker data as if it came over TLS. certmatch did "
        "not pass those bytes into the TLS session.",
        "Find which side sent the bytes. A client must wait for the server's reply after "
        "STARTTLS; a server must discard its plaintext input buffer when it switches to TLS. "
        "Update the software (this is the flaw class of CVE-2011-0411 and the 2021 'NO STARTTLS' "
        "study), or use implicit TLS (ports 465, 993, 995, 636, 563).",
        (
            Citation("CVE-2011-0411", "", "STARTTLS plaintext command injection"),
            Citation(
                "Poddebniak et al., USENIX Security 2021",
                "",
                "Why TLS is better without STARTTLS (NO STARTTLS)",
            ),
            RFC3207,
        ),
        raised_by=(StartTlsFinding.INJECTION,),
    ),
    Cause(
        "plaintext-auth",
        "Credentials were sent before TLS",
        "security",
        "{detail} Anyone on the path between the client and {server} could read them.",
        "Make the client require TLS before it authenticates (a 'STARTTLS required' or 'SSL/TLS' "
        "setting, not 'if available'), and make the server refuse authentication on an "
        "unencrypted connection. Change the password that was exposed.",
        (RFC8314, RFC2595_3, RFC2595_4, RFC3207),
        raised_by=(StartTlsFinding.PLAINTEXT_AUTH,),
    ),
    Cause(
        "starttls-not-offered",
        "The server does not offer STARTTLS",
        "failure",
        "{detail} A client that insists on TLS gives up here; one that does not carries on in "
        "plaintext, so certmatch saw no certificate at all.",
        "Enable STARTTLS on the server at {server} (give it a certificate and key), or configure "
        "the client with the server's implicit-TLS port. If the server does offer it elsewhere, "
        "something on the path may be stripping the capability.",
        (RFC3207, RFC2595_3, RFC2595_4, RFC4513_3, RFC4642),
        raised_by=(StartTlsFinding.NOT_OFFERED,),
    ),
    Cause(
        "starttls-refused",
        "The server refused the STARTTLS upgrade",
        "failure",
        "{detail} The session either ended or went on in plaintext, so certmatch saw no "
        "certificate.",
        "Check the server's TLS configuration at {server} (certificate and key readable, TLS "
        "enabled on this listener) and its log for why the upgrade failed.",
        (RFC3207, RFC2595_3, RFC2595_4, RFC4513_3, RFC4642),
        raised_by=(StartTlsFinding.REFUSED,),
    ),
    Cause(
        "starttls-not-requested",
        "The client did not ask for STARTTLS",
        "failure",
        "{detail} No certificate was exchanged, so there was nothing to match; everything the "
        "client sent, commands and any credentials, crossed the network unencrypted.",
        "Set the client's connection security to STARTTLS ('required', not 'if available'), or "
        "use the server's implicit-TLS port.",
        (RFC8314, RFC3207, RFC2595_3, RFC2595_4, RFC4513_3, RFC4642),
        raised_by=(StartTlsFinding.NOT_REQUESTED,),
    ),
    Cause(
        "invalid-reference",
        "The name the client asked for is not a valid host name",
        "failure",
        "The client asked for '{requested}', which is neither a host name nor an IP address: "
        "{detail} No certificate can match it.",
        "Configure the client with the server's plain host name: no port, no scheme, no spaces.",
        (RFC9525_DNS, Citation("RFC 1123", "§2.1", "host name syntax")),
        raised_by=(IdentityRule.INVALID_REFERENCE,),
    ),
    Cause(
        "upstream-unreachable",
        "The server could not be reached",
        "failure",
        "certmatch could not connect to {server} to fetch its certificate: {detail}",
        "Check the server address and port the client uses, that the name resolves, and that the "
        "server is running and reachable from the machine running certmatch.",
        (),
        raised_by=(SessionRule.UPSTREAM_UNREACHABLE,),
    ),
    Cause(
        "upstream-tls-failed",
        "The TLS handshake with the server failed",
        "failure",
        "The server at {server} accepted the connection but the TLS handshake with it failed "
        "before a certificate was received: {detail}",
        "Check that the port speaks implicit TLS (not STARTTLS or plaintext) and that the server "
        "and client share a TLS version and cipher. After an accepted STARTTLS, check that the "
        "server can load its certificate and key; its log says why it ended the handshake.",
        (Citation("RFC 8314", "§3", "implicit TLS for mail"),),
        raised_by=(
            SessionRule.UPSTREAM_TLS_FAILED,
            TrustProblemId.NO_CERTIFICATE,
        ),
    ),
    Cause(
        "upstream-starttls-failed",
        "The server broke off before the STARTTLS upgrade",
        "failure",
        "The server at {server} accepted the connection, but the plaintext phase of STARTTLS "
        "ended on its side before any TLS handshake began ({detail}). No certificate was "
        "exchanged, so there is nothing to match: the client saw a server that stopped "
        "answering or hung up, not a certificate it refused.",
        "Look in the server's log at {server} for why it stopped: a connection or rate limit, a "
        "greeting delay longer than clients wait, a crash, or a TLS setup it could not load "
        "(some servers close the connection instead of answering STARTTLS). A firewall or filter "
        "on the path can do the same: try a client on the server's own network.",
        (RFC5321_QUIT, RFC3207_REPLY, RFC9051_BYE),
        raised_by=(SessionRule.UPSTREAM_STARTTLS_FAILED,),
    ),
    Cause(
        "side-handshake-failed",
        "certmatch could not fetch the certificate the client was shown",
        "warning",
        "In observe mode certmatch relays the client's handshake without taking part in it. "
        "This one hid the server's certificate (TLS 1.3 encrypts it; a resumed session sends "
        "none), so certmatch opened a second handshake of its own to {server} to fetch it, "
        "and that failed: {detail}",
        "Nothing in the client's session is known to be wrong. To judge the certificate, check "
        "that the machine running certmatch may open a second connection to the server (a "
        "firewall or a per-address connection limit can refuse it), raise "
        "--side-handshake-timeout for a slow server, or run `certmatch probe` against the "
        "server with the client's name.",
        (
            Citation(
                "RFC 8446", "§1.2", "all handshake messages after the ServerHello are encrypted"
            ),
            Citation(
                "RFC 8446",
                "§2.2",
                "a resumed handshake authenticates by PSK, without a certificate",
            ),
        ),
        raised_by=(SessionRule.SIDE_HANDSHAKE_FAILED,),
    ),
    Cause(
        "client-closed-before-handshake",
        "The client closed the connection before the TLS handshake",
        "warning",
        "The client connected and closed the connection again without sending a byte, so no "
        "TLS handshake began and there is no certificate to judge. Port checks and load "
        "balancers' health probes connect like this; it says nothing about the server. {detail}",
        "Nothing to fix if this was a port check or a health probe. If a mail client did this, "
        "it gave up before TLS began: check that it is set up for implicit TLS on this port "
        "(not STARTTLS or plaintext), and look at its own log.",
        (Citation("RFC 8446", "§4.1.2", "a client's first TLS message is its ClientHello"),),
        raised_by=(SessionRule.CLIENT_CLOSED_BEFORE_HANDSHAKE,),
    ),
    Cause(
        "client-stopped-before-handshake",
        "The client stopped before the TLS handshake",
        "warning",
        "The client did not get as far as a TLS handshake ({detail}). There is no certificate "
        "to judge, and nothing here says anything about the server: port scanners, stuck "
        "clients and clients that gave up leave sessions like this.",
        "Nothing to fix if this was a scanner or a health check. If a mail client did this, look "
        "at its own log: it may expect another kind of port (implicit TLS, STARTTLS or "
        "plaintext), or, set to use a SOCKS5 or HTTP proxy, not speak to it as one.",
        (
            Citation("RFC 8446", "§4.1.2", "a client's first TLS message is its ClientHello"),
            Citation("RFC 1928", "§4", "the SOCKS5 client sends its request after the method"),
            Citation("RFC 9110", "§9.3.6", "CONNECT asks a proxy for a tunnel"),
        ),
        raised_by=(SessionRule.CLIENT_STOPPED_BEFORE_HANDSHAKE,),
    ),
    Cause(
        "malformed-certificate",
        "The server sent a certificate that cannot be parsed",
        "failure",
        "A certificate in the chain from {server} could not be parsed: {detail}",
        "Reissue or re-export the certificate; check the server's certificate file is PEM and "
        "complete.",
        (Citation("RFC 5280", "§4.1", "certificate structure"),),
        raised_by=(
            SessionRule.MALFORMED_CERTIFICATE,
            TrustProblemId.MALFORMED_CERTIFICATE,
        ),
    ),
    Cause(
        "no-sni-default-certificate",
        "The client sent no SNI, so the server sent its default certificate",
        "failure",
        "The client asked for {requested} ({source}) but sent no Server Name Indication. The "
        "server therefore could not tell which of its names was wanted and presented its default "
        "certificate, which names {names}. {probe_evidence}",
        "Make the client send SNI (a current client version does; check for a 'use SNI' setting, "
        "and use a host name, not an IP address), or make the server's default certificate "
        "cover {requested}.",
        (RFC6066_SNI, RFC7817, KB_Q198564),
        raised_by=(SessionRule.NO_SNI_DEFAULT_CERTIFICATE,),
    ),
    Cause(
        "ip-not-in-certificate",
        "The client used an IP address the certificate does not name",
        "failure",
        "The client connected to the IP address {requested} ({source}). An IP address is matched "
        "only against the certificate's iPAddress entries, octet for octet; an address written in "
        "the CN or as a DNS name does not count. The certificate names {names}. {address_sni}",
        "Configure the client with the server's host name{candidates_hint} instead of its address, "
        "or add IP:{requested} to the certificate's subjectAltName.",
        (
            RFC9525_IP,
            Citation("RFC 4513", "§3.1.3.2", "LDAP: IP address server identity"),
            RFC6066_SNI,
            KB_Q198564,
        ),
        raised_by=(
            IdentityRule.IP_MISMATCH,
            IdentityRule.IP_AS_DNS_NAME,
            IdentityRule.IP_IN_CN,
            IdentityRule.REFERENCE_IS_IP,
            IdentityRule.IP_MATCH,
        ),
    ),
    Cause(
        "mail-domain-not-server",
        "The client uses the mail domain, the certificate names the server",
        "failure",
        "The client asked for {requested}, which looks like the mail domain rather than a "
        "server's host name. The certificate names the server(s) {candidates}. Clients compare "
        "the name they were configured with; CNAME or MX indirection is not followed.",
        "Configure the client with the server host name {candidates} (what DNS points mail to), "
        "or add {requested} to the certificate's subjectAltName.",
        (RFC7817, Citation("RFC 6186", "§4", "SRV-located servers"), KB_Q198564),
        raised_by=(SessionRule.MAIL_DOMAIN_NOT_SERVER,),
    ),
    Cause(
        "wildcard-too-deep",
        "A wildcard covers one label only",
        "failure",
        "The client asked for {requested}. The certificate's wildcard {pattern} covers exactly one "
        "label, and {requested} has more than one label below it.",
        "Add {requested} to the certificate's subjectAltName (or a wildcard one level deeper), or "
        "configure the client with a name one label below the wildcard's domain.",
        (RFC6125_WILDCARD, RFC9525_DNS, Citation("RFC 4513", "§3.1.3.1"), RFC7817),
        raised_by=(IdentityRule.WILDCARD_TOO_DEEP,),
    ),
    Cause(
        "wildcard-apex",
        "A wildcard never covers its own domain",
        "failure",
        "The client asked for {requested}. The wildcard {pattern} covers names one label below "
        "{requested}, never {requested} itself. {detail}",
        "Add {requested} itself to the certificate's subjectAltName, or configure the client with "
        "the server's full host name (e.g. mail.{requested}).",
        (
            RFC6125_WILDCARD,
            Citation("RFC 2595", "§2.4", "'*.example.com' does not match 'example.com'"),
            RFC9525_DNS,
        ),
        raised_by=(IdentityRule.WILDCARD_APEX,),
    ),
    Cause(
        "wildcard-partial",
        "A partial-label wildcard is not honoured",
        "failure",
        "The certificate carries the partial wildcard {pattern}. {detail}",
        "Replace {pattern} with the full names or with a whole-label wildcard, and include "
        "{requested}.",
        (RFC9525_DNS, RFC7817, RFC6125_WILDCARD),
        raised_by=(
            IdentityRule.WILDCARD_PARTIAL,
            IdentityRule.WILDCARD_NOT_LEFTMOST,
        ),
    ),
    Cause(
        "wildcard-public-suffix",
        "A wildcard on a public suffix is never valid",
        "failure",
        "The certificate carries {pattern}, a wildcard directly on a public suffix. {detail}",
        "Obtain a certificate for {requested}; no client should accept this wildcard.",
        (RFC9525_DNS, RFC6125_WILDCARD),
        raised_by=(IdentityRule.WILDCARD_PUBLIC_SUFFIX,),
    ),
    Cause(
        "cn-ignored-san-present",
        "The name is in the CN, but the certificate has a subjectAltName without it",
        "failure",
        "The certificate's Common Name is {requested}, but the certificate also has a "
        "subjectAltName with DNS names ({names}). When DNS names are present, clients ignore the "
        "CN entirely, so {requested} is not covered.",
        "Reissue the certificate with {requested} in its subjectAltName (the CN, if any, should "
        "repeat one of the SAN names).",
        (RFC6125_CN, RFC9525_CHANGES, KB_Q198564),
        raised_by=(IdentityRule.CN_IGNORED_SAN_PRESENT,),
    ),
    Cause(
        "cn-only-legacy",
        "The name is only in the legacy Common Name",
        "failure",
        "The certificate has no subjectAltName and names {requested} only in its Common Name. "
        "RFC 7817 lets a mail client fall back to the CN in that case, so some mail clients accept "
        "it, but RFC 9525 dropped CN matching and modern TLS stacks (browsers, Python's ssl, "
        "recent clients) reject it.",
        "Reissue the certificate with a subjectAltName containing {requested}.",
        (RFC6125_CN, RFC7817, RFC9525_CHANGES),
        raised_by=(IdentityRule.CN_ONLY_LEGACY,),
    ),
    Cause(
        "idn-form",
        "Internationalised name in a different form",
        "warning",
        "The name {requested} and the certificate's names differ in their IDNA form (U-label "
        "versus A-label, 'xn--'). {detail} Matching must compare A-labels; clients that compare "
        "the raw strings fail.",
        "Configure the client with the A-label form of the name, and make sure the certificate "
        "carries the A-label form.",
        (
            Citation("RFC 6125", "§6.4.2", "internationalized domain names"),
            RFC9525_DNS,
            Citation("RFC 5891"),
        ),
        raised_by=(
            IdentityRule.IDN_FORM,
            IdentityRule.WILDCARD_IDN,
        ),
    ),
    Cause(
        "underscore-in-name",
        "The name holds an underscore",
        "warning",
        "The name {requested} matched the certificate, but it holds an underscore. {detail} "
        "A dNSName must follow the preferred name syntax (letters, digits, hyphens); OpenSSL "
        "and GnuTLS match it anyway, clients that follow RFC 5280 strictly do not.",
        "Prefer a host name without an underscore, and a certificate issued for it; public CAs "
        "no longer issue certificates for names with underscores.",
        (
            Citation("RFC 5280", "§4.2.1.6", "dNSName in the preferred name syntax"),
            Citation("RFC 1034", "§3.5", "preferred name syntax"),
        ),
        raised_by=(IdentityRule.UNDERSCORE_IN_NAME,),
    ),
    Cause(
        "trailing-dot",
        "The client's server name ends with a dot",
        "warning",
        "The client was configured with {requested}, with a trailing dot. Matching per RFC 6125 "
        "ignores it, but OpenSSL's host check (used by many mail clients) does not, and SNI must "
        "not carry it.",
        "Remove the trailing dot from the server name in the client's settings.",
        (RFC6066_SNI, RFC6125_DNS),
        raised_by=(IdentityRule.TRAILING_DOT,),
    ),
    Cause(
        "sni-ip-literal",
        "The client sent an IP address as SNI",
        "warning",
        "The client sent {sni} as its Server Name Indication. SNI carries a host name only: "
        "literal IPv4 and IPv6 addresses are not permitted in it. A server cannot choose a "
        "certificate by such a name, so it presents its default one, and some TLS stacks refuse "
        "to send or to accept it.",
        "Let the client send no SNI when it dials an address (current TLS libraries do so), or "
        "configure it with the server's host name{candidates_hint}, which it then sends as SNI.",
        (RFC6066_SNI_IP,),
        raised_by=(SessionRule.SNI_IP_LITERAL,),
    ),
    Cause(
        "srv-id-only",
        "The certificate names the mail domain only as an SRV-ID",
        "warning",
        "{detail}",
        "Add {requested} as a DNS name to the certificate's subjectAltName, so clients configured "
        "by hand accept it too, or configure clients through the SRV records.",
        (RFC4985, RFC6125_SRV_MATCH, RFC6125_LOCAL_POLICY, RFC7817_REFERENCES),
        raised_by=(DnsRule.SRV_ID_ONLY,),
    ),
    Cause(
        "dns-points-elsewhere",
        "The server reached is at an address DNS does not give for the name",
        "warning",
        "{detail} Possible reasons: a hosts-file entry on the client's machine (invisible to "
        "DNS), a stale record in a cache, or a transparent redirect (NAT, a proxy). The "
        "certificate was judged against {requested}, but it came from whatever server that "
        "address is.",
        "Find what sent the client to that address (the hosts file, a resolver cache, the "
        "network) and make it agree with DNS, or update DNS if the address is the right one.",
        (KB_Q198564,),  # "the host name registered in DNS": the second of the three names
        raised_by=(DnsRule.DNS_POINTS_ELSEWHERE,),
    ),
    Cause(
        "split-horizon",
        "Resolvers disagree, and the certificate fits only one side's answer",
        "failure",
        "{detail} A client checks {requested} whatever its resolver makes of it, so a "
        "certificate chosen for one view of DNS fails for clients that see the other.",
        "Give both views of DNS the same name for the server, or give the certificate every name "
        "clients are configured with ({requested}) on both sides.",
        (RFC6125_SOURCE, KB_Q198564),
        raised_by=(DnsRule.SPLIT_HORIZON,),
    ),
    Cause(
        "cname-alias",
        "The client uses a DNS alias; the certificate names only the canonical name",
        "failure",
        "The client asked for {requested}. {detail}",
        "Configure the client with the canonical name the certificate names, or add {requested} "
        "to the certificate's subjectAltName.",
        (RFC2595_CNAME, RFC7817_REFERENCES, RFC6125_SOURCE, KB_Q198564),
        raised_by=(DnsRule.CNAME_ALIAS,),
    ),
    Cause(
        "srv-target-not-in-certificate",
        "The mail domain's SRV record points to a server whose certificate names neither it nor "
        "the domain",
        "failure",
        "{detail} RFC 7817 has a client that found its server by SRV records check the mail "
        "domain (as a DNS-ID or SRV-ID) and the host it connected to.",
        "Put the SRV target's host name in the certificate's subjectAltName (or the mail domain, "
        "or an SRV-ID for the service), or point the SRV record at a host the certificate names.",
        (RFC7817_REFERENCES, RFC6125_SRV, RFC6125_SRV_MATCH, RFC6186_LABELS),
        raised_by=(DnsRule.SRV_TARGET_NOT_IN_CERTIFICATE,),
    ),
    Cause(
        "name-not-in-certificate",
        "The certificate does not name the server the client asked for",
        "failure",
        "The client asked for {requested} ({source}), but the certificate presented by {server} "
        "names only {names}. A mail client must find the name it was configured with among the "
        "certificate's names, so it warns that the certificate does not match the server's "
        "Internet address.",
        "Line up the three names: the server name in the mail client, the host name registered in "
        "DNS, and the name in the certificate. Either configure the client with one of {names}, "
        "or install a certificate whose subjectAltName includes {requested}.",
        (KB_Q198564, RFC7817, RFC6125_DNS, RFC9525_DNS),
        raised_by=(
            SessionRule.NAME_NOT_IN_CERTIFICATE,
            IdentityRule.DIFFERENT_NAME,
            IdentityRule.EXACT,
            IdentityRule.WILDCARD,
            IdentityRule.REFERENCE_IS_DNS,
            IdentityRule.INVALID_NAME,
        ),
    ),
    Cause(
        "missing-intermediate",
        "The server does not send its intermediate certificate",
        "failure",
        "The server sent the certificate for its own name but not the intermediate CA "
        "certificate that links it to a trusted root. {detail}",
        "Configure the server with the full chain file (its certificate followed by the "
        "intermediates), e.g. dovecot `ssl_cert = </path/fullchain.pem`.",
        (RFC8446_CERT, RFC5246_CERT, RFC5280_PATH),
        raised_by=(TrustProblemId.MISSING_INTERMEDIATE,),
    ),
    Cause(
        "self-signed",
        "The certificate is self-signed",
        "failure",
        "The certificate presented by {server} is signed by its own key, not by a CA the client "
        "trusts. {detail} Mail clients check names only after the chain validates.",
        "Install a certificate from a CA the clients trust. To judge names anyway, give certmatch "
        "the certificate with --ca-file.",
        (RFC5280_PATH, RFC7817),
        raised_by=(TrustProblemId.SELF_SIGNED,),
    ),
    Cause(
        "unknown-issuer",
        "The certificate's issuer is not trusted",
        "failure",
        "The chain from {server} ends at a CA that is not in the trust store. {detail}",
        "Use a certificate from a CA the clients trust, or, for a private CA, install its root on "
        "the clients (and give it to certmatch with --ca-file).",
        (RFC5280_PATH, RFC7817),
        raised_by=(TrustProblemId.UNKNOWN_ISSUER,),
    ),
    Cause(
        "unknown-critical-extension",
        "A certificate has a critical extension clients do not process",
        "failure",
        "A certificate on the chain from {server} carries an extension marked critical that "
        "clients do not recognise. {detail} A client must reject a certificate with such an "
        "extension, so it refuses the chain.",
        "Reissue the certificate without that extension, or with it marked non-critical; ask "
        "the CA which profile adds it.",
        (
            Citation("RFC 5280", "§4.2", "a critical extension that is not recognised fails"),
            Citation("RFC 5280", "§6.1.4", "(o) process any other critical extension"),
        ),
        raised_by=(TrustProblemId.UNKNOWN_CRITICAL_EXTENSION,),
    ),
    Cause(
        "not-a-ca",
        "A certificate that is not a CA signed another",
        "failure",
        "The chain from {server} passes through an issuer that is not a CA certificate. {detail} "
        "Path validation accepts an issuer only when its basicConstraints say cA TRUE and its "
        "keyUsage, if any, includes keyCertSign, so clients refuse the chain.",
        "Have the CA reissue the issuing certificate as a CA (basicConstraints critical with "
        "CA:TRUE, keyUsage keyCertSign, a subject that names it), or send the chain the CA "
        "publishes; a server certificate cannot issue others.",
        (
            Citation("RFC 5280", "§4.2.1.9", "basic constraints: cA, pathLenConstraint"),
            Citation("RFC 5280", "§6.1.4", "(k) a CA certificate, (n) keyCertSign if keyUsage"),
            Citation("RFC 5280", "§4.1.2.6", "a CA's subject is a non-empty name"),
        ),
        raised_by=(TrustProblemId.NOT_A_CA,),
    ),
    Cause(
        "path-length-exceeded",
        "More CAs below a CA than it allows",
        "failure",
        "The chain from {server} is longer than a CA on it allows. {detail} A CA's "
        "pathLenConstraint caps how many CA certificates may follow it (self-issued ones do not "
        "count), and clients refuse a longer path.",
        "Send a chain within the constraint (the intermediates the CA issued for this purpose); "
        "if the hierarchy itself is deeper than its root allows, the CA has to reissue.",
        (
            Citation("RFC 5280", "§4.2.1.9", "pathLenConstraint"),
            Citation("RFC 5280", "§6.1.4", "(l), (m) max_path_length"),
        ),
        raised_by=(TrustProblemId.PATH_LENGTH_EXCEEDED,),
    ),
    Cause(
        "name-constraints-violated",
        "A name lies outside what a CA may certify",
        "failure",
        "A CA on the chain from {server} is constrained to certain names, and a certificate below "
        "it carries a name outside them. {detail} Clients refuse such a chain.",
        "Get the certificate from a CA whose name constraints cover every name on it (or have "
        "the constraining CA widen them); a wildcard must not be able to reach an excluded name.",
        (
            Citation("RFC 5280", "§4.2.1.10", "name constraints"),
            Citation("RFC 5280", "§6.1.3", "(b) permitted subtrees, (c) excluded subtrees"),
            Citation("CVE-2025-61727", "", "an excluded name reached through a wildcard"),
        ),
        raised_by=(TrustProblemId.NAME_CONSTRAINTS_VIOLATED,),
    ),
    Cause(
        "wrong-extended-key-usage",
        "The certificate is not for TLS servers",
        "failure",
        "The certificate {server} presents may be used only for the purposes its extended key "
        "usage lists, and a mail client needs serverAuth. {detail}",
        "Reissue the certificate with serverAuth (id-kp-serverAuth) in its extended key usage; "
        "a client-authentication or e-mail certificate cannot serve a server.",
        (Citation("RFC 5280", "§4.2.1.12", "extended key usage"),),
        raised_by=(TrustProblemId.WRONG_EXTENDED_KEY_USAGE,),
    ),
    Cause(
        "weak-signature-algorithm",
        "A certificate is signed with MD5 or SHA-1",
        "failure",
        "A certificate on the chain from {server} is signed with a hash that collisions break. "
        "{detail} TLS 1.2 no longer allows MD5 or SHA-1 signatures, TLS 1.3 only as a last "
        "resort, and OpenSSL 3 refuses them at its default security level.",
        "Reissue the certificate (and any intermediate so signed) with SHA-256 or better.",
        (
            Citation("RFC 9155", "", "MD5 and SHA-1 signature hashes deprecated in TLS 1.2"),
            Citation("RFC 8446", "§4.2.3", "SHA-1 signature schemes are legacy only"),
        ),
        raised_by=(TrustProblemId.WEAK_SIGNATURE_ALGORITHM,),
    ),
    Cause(
        "chain-too-complex",
        "The chain is too long or tangled to search",
        "failure",
        "certmatch stopped searching the chain from {server} for a path to a trusted root. "
        "{detail} A client bounds its search as well, so it refuses such a chain, or stalls "
        "on it.",
        "Configure the server to send its own certificate and the intermediates that lead to "
        "one trusted root, each once, in order.",
        (RFC5280_PATH,),
        raised_by=(TrustProblemId.CHAIN_TOO_COMPLEX,),
    ),
    Cause(
        "wrong-order",
        "The chain is sent in the wrong order",
        "warning",
        "The server sent its certificates out of order. {detail}",
        "Put the server's own certificate first in its certificate file, followed by each "
        "intermediate in turn.",
        (RFC5246_CERT, RFC8446_CERT),
        raised_by=(TrustProblemId.WRONG_ORDER,),
    ),
    Cause(
        "expired",
        "The certificate has expired",
        "failure",
        "{detail} The session was recorded after that date.",
        "Renew the certificate and install it on the server. If the certificate is in fact "
        "current, check the clock of the machine that recorded the session.",
        (RFC5280_VALIDITY,),
        raised_by=(TrustProblemId.EXPIRED,),
    ),
    Cause(
        "not-yet-valid",
        "The certificate is not valid yet",
        "failure",
        "{detail} The session was recorded before that date.",
        "Check the clocks of the client and server machines; otherwise wait for the validity "
        "period or reissue the certificate with a correct start date.",
        (RFC5280_VALIDITY,),
        raised_by=(TrustProblemId.NOT_YET_VALID,),
    ),
    Cause(
        "proxy-ca-not-trusted",
        "The client refused certmatch's certificate, not the server's",
        "failure",
        "{refusal}, although certmatch judges the server's own certificate acceptable for the "
        "name the client asked for. So the refusal is about certmatch: the client does not "
        "trust certmatch's CA, which issued the certificate it was shown, or it pins the "
        "server's own certificate, which no copy can match. Either way it shows a certificate "
        "warning caused by certmatch, not by the server. {detail}",
        "Add certmatch's CA certificate (mitmproxy-ca-cert.pem in the proxy's configuration "
        "directory, ~/.mitmproxy by default) to the client's trusted certificates, then retry. "
        "If the client pins the server's certificate or keeps a saved exception for it "
        "(fetchmail's sslfingerprint, Thunderbird), remove the pin while testing through "
        "certmatch, or test it in observe mode instead.",
        (MITMPROXY_CA, RFC8446_ALERTS, RFC5246_ALERTS),
        raised_by=(SessionRule.PROXY_CA_NOT_TRUSTED,),
    ),
    Cause(
        "client-refused-certificate",
        "The client refused the certificate it was shown",
        "failure",
        "{refusal}, instead of going on with the session. {shown} {detail}",
        "{refusal_fix}",
        (RFC8446_ALERTS, RFC5246_ALERTS, RFC8446_CLOSURE, RFC7817),
        raised_by=(SessionRule.CLIENT_REFUSED_CERTIFICATE,),
    ),
    Cause(
        "requested-host-assumed",
        "The client sent no name; certmatch judged against an assumed one",
        "failure",
        "The client sent no server name (no SNI), so certmatch judged this session against "
        "{requested} ({source}), a name it assumed, not one the client asked for. The client "
        "itself checks the certificate against the server name in its own settings, which may "
        "be another name or an IP address, and may decide otherwise. {detail} {ip_view}",
        "Tell certmatch the server name from the client's settings: certmatch proxy --host NAME "
        "(or --set certmatch_host=NAME); if the client is configured with {requested}, pass "
        "--host {requested}. Or keep that server name in the client and make it resolve to the "
        "proxy (a hosts-file entry), so the client sends it as SNI.",
        (RFC6066_SNI, RFC9525_REFERENCE, RFC9525_IP, RFC7817),
        raised_by=(SessionRule.REQUESTED_HOST_ASSUMED,),
    ),
    Cause(
        "ca-profile-violation",
        "A certificate breaks RFC 5280's rules for the CA that issued it",
        "warning",
        "{detail} Path validation (RFC 5280 §6.1) does not check these rules, and mail clients "
        "built on OpenSSL or GnuTLS accept the chain, so this session is not failed for it. "
        "Stricter verifiers refuse some of these (OpenSSL's strict mode, which Python 3.13's "
        "default context turns on), so a client may start refusing after an upgrade.",
        "Ask whoever issued the certificate named above (your CA, or the tool that made a "
        "private CA) to reissue it following RFC 5280 §4, then install the new chain on "
        "{server}.",
        (Citation("RFC 5280", "§4", "the certificate profile a conforming CA issues to"),),
        raised_by=(TrustProblemId.CA_PROFILE_VIOLATION,),
    ),
)

CAUSES: dict[str, Cause] = {cause.id: cause for cause in _CATALOGUE}

# Rule -> its cause, keyed by type too: members of two enums may share a value.
_BY_RULE: dict[tuple[type, Rule], Cause] = {
    (type(rule), rule): cause for cause in _CATALOGUE for rule in cause.raised_by
}

# Which cause is primary when several hold: the order of the catalogue.
# Security first, then "no certificate at all", then name causes from the
# most specific to the generic, then trust and time, then the proxy's own, then the
# client's refusal, and last a name certmatch assumed: every cause of the certificate
# itself comes first.
PRIMARY_ORDER: tuple[str, ...] = tuple(cause.id for cause in _CATALOGUE)


def get(cause_id: str) -> Cause:
    """The cause with this id; KeyError names the known ids."""
    try:
        return CAUSES[cause_id]
    except KeyError:
        raise KeyError(f"unknown cause id {cause_id!r}; known: {', '.join(CAUSES)}") from None


def cause_of(rule: Rule) -> Cause:
    """The cause ``rule`` is bound to in the catalogue."""
    try:
        return _BY_RULE[(type(rule), rule)]
    except KeyError:
        raise KeyError(f"{type(rule).__name__}.{rule.name} is bound to no cause") from None
