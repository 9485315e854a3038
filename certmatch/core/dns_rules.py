"""What DNS shows about a name mismatch: pure rules over a session's DNS facts.

Microsoft KB Q198564 says three names must line up: the server name configured in the
client, the host name registered in DNS, and the name in the certificate. The identity rules
(:mod:`certmatch.core.identity`) compare the first and the third; these rules bring in the
second, from :class:`~certmatch.core.dns_facts.DnsFacts`:

- :attr:`DnsRule.CNAME_ALIAS`: the client uses an alias; the certificate names the canonical
  name only.
- :attr:`DnsRule.DNS_POINTS_ELSEWHERE`: the server reached is at no address DNS gives.
- :attr:`DnsRule.SPLIT_HORIZON`: two resolvers answer differently, and the certificate covers
  only one side's names.
- :attr:`DnsRule.SRV_TARGET_NOT_IN_CERTIFICATE` and :attr:`DnsRule.SRV_ID_ONLY`: what the mail
  domain's SRV records (RFC 6186) mean for the names a client checks.

Which name a client checks, as the standards say it (read in the RFC text, see each rule):
the name it was configured with (the *source domain*), never one it derived from DNS. RFC
6125 §6.2.1: "Each reference identifier in the list SHOULD be based on the source domain and
SHOULD NOT be based on a derived domain (e.g., a host name or domain name discovered through
DNS resolution of the source domain)"; §1.8 defines a derived domain as one "derived from the
source domain in an automated fashion (e.g., by means of a DNS SRV lookup)". For mail, RFC 2595
§2.4 (quoted in RFC 6125 Appendix B.1) says "CNAME canonicalization is not done", and RFC 7817
§3 keeps that: the reference identifiers are the domain of the user's email address and the
host name the client used to open the connection "(without CNAME canonicalization)"; a client
that finds its server by RFC 6186 SRV records "MUST also use the domain portion of the user's
email address as another 'reference identifier' to compare against an SRV-ID". RFC 6125
§6.2.2's example is exactly that: a mail client reaching IMAPS at example.net (resolved as
mail.example.net) may hold an SRV-ID "_imaps.example.net", DNS-IDs "example.net" and
"mail.example.net", and CN-IDs of both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from certmatch.core.dns_facts import (
    MAIL_SRV_SERVICES,
    NO_DATA,
    NXDOMAIN,
    DnsFacts,
    SrvRecord,
    same_address,
)
from certmatch.core.identity import PresentedIdentifiers, check_identity, is_ip_address

# RFC 4985 §2: id-on-dnsSRV, the otherName form of an SRV-ID ("_Service.Name").
SRV_NAME_OID = ObjectIdentifier("1.3.6.1.5.5.7.8.7")

# The SRV services a client of each protocol looks up (RFC 6186 §3, RFC 8314 §5.1).
SERVICES_OF: dict[str, tuple[str, ...]] = {
    protocol: tuple(s for s, (p, _) in MAIL_SRV_SERVICES.items() if p == protocol)
    for protocol in ("imap", "pop3", "submission")
}
SERVICES_OF["smtp"] = SERVICES_OF["submission"]


class DnsRule(StrEnum):
    """What DNS shows about a session; each value is the cause id proposed for it.

    Each member says which section it rests on and, last, the function that finds it.
    """

    CNAME_ALIAS = "cname-alias"
    """The requested host is a CNAME alias, and the certificate names a name further down the
    chain but not the alias. Clients compare the name they were configured with; CNAME
    canonicalization is not done (RFC 2595 §2.4 as quoted in RFC 6125 Appendix B.1; RFC 7817
    §3 (b); RFC 6125 §6.2.1: no reference identifier from a derived domain).
    Found in ``_cname_alias``."""
    DNS_POINTS_ELSEWHERE = "dns-points-elsewhere"
    """The server's address is among no answer from any resolver asked (all of a round-robin
    set count): something other than DNS chose it (Microsoft KB Q198564: the certificate name
    must be the host name registered in DNS). Found in ``_dns_points_elsewhere``."""
    SPLIT_HORIZON = "split-horizon"
    """Resolvers answer differently for the requested host, and the certificate covers the
    names of one side's answer only (RFC 6125 §6.2.1: the client checks its source domain,
    whatever the resolver it asks derives from it). Found in ``_split_horizon``."""
    SRV_TARGET_NOT_IN_CERTIFICATE = "srv-target-not-in-certificate"
    """The client asked for the target of the mail domain's SRV record for this service, and
    the certificate names neither that target (the host the client opened the connection to,
    RFC 7817 §3 (b)) nor the mail domain (DNS-ID, RFC 7817 §3 (a)) nor the SRV-ID of the
    service at the mail domain (RFC 7817 §3, RFC 6125 §6.5.1). Found in ``_srv_target``."""
    SRV_ID_ONLY = "srv-id-only"
    """The client asked for the mail domain; the certificate names it only as an SRV-ID for
    this service (RFC 4985). An SRV-aware client accepts it (RFC 7817 §3; RFC 6125 §6.2.2,
    §6.5.1); one configured by hand compares DNS-IDs and rejects it (RFC 6125 §6.2.1: which
    identifier types a client checks is local policy). Found in ``_srv_id_only``."""


@dataclass(frozen=True)
class SuggestedServer:
    """A server name DNS points mail clients to for a service, and the record that does."""

    name: str
    evidence: str  # e.g. "SRV _imaps._tcp.example.com" or "MX example.com"
    port: int | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.evidence})"


Covers = Callable[[str], bool]


def dns_findings(
    requested: str | None,
    server_ip: str | None,
    facts: DnsFacts | None,
    presented: PresentedIdentifiers | None,
    *,
    protocol: str = "unknown",
    srv_ids: tuple[str, ...] = (),
    covers: Covers | None = None,
) -> dict[DnsRule, str]:
    """The DNS rules that hold for a session: rule -> one-sentence detail with its names.

    ``requested`` is the name the client asked for, ``server_ip`` the address reached,
    ``presented`` the leaf's identifiers and ``srv_ids`` its SRV-IDs (:func:`srv_ids_of`).
    ``covers(name)`` says whether the certificate is valid for a name; by default the
    identity rules decide (a legacy CN match counts, as RFC 7817 §3 rule 4 allows CN-IDs).
    Nothing is found without facts, or for a requested IP address.
    """
    if facts is None or not requested or is_ip_address(requested):
        return {}
    if covers is None:
        if presented is None:
            covers = _nothing
        else:
            shown = presented

            def covers(name: str) -> bool:
                return check_identity(name, shown).verdict != "mismatch"

    found: dict[DnsRule, str] = {}
    for rule, detail in (
        (DnsRule.CNAME_ALIAS, _cname_alias(requested, facts, covers)),
        (DnsRule.DNS_POINTS_ELSEWHERE, _dns_points_elsewhere(requested, server_ip, facts)),
        (DnsRule.SPLIT_HORIZON, _split_horizon(requested, server_ip, facts, covers)),
        (
            DnsRule.SRV_TARGET_NOT_IN_CERTIFICATE,
            _srv_target(requested, protocol, facts, covers, srv_ids),
        ),
        (DnsRule.SRV_ID_ONLY, _srv_id_only(requested, protocol, facts, covers, srv_ids)),
    ):
        if detail:
            found[rule] = detail
    return found


# --- the rules ------------------------------------------------------------------------------


def _cname_alias(requested: str, facts: DnsFacts, covers: Covers) -> str | None:
    """The alias fails and a name further down its CNAME chain is covered."""
    if covers(requested):
        return None
    for resolver in facts.resolvers:
        chain = facts.cname_chain(resolver, requested)
        named = [name for name in chain[1:] if covers(name)]
        if named:
            return (
                f"{requested} is an alias: DNS ({resolver}) answers {_arrows(chain)}. The "
                f"certificate names {named[-1]}, the name the alias leads to, not {requested}; "
                f"a client checks the name it was configured with and does not follow the CNAME."
            )
    return None


def _dns_points_elsewhere(requested: str, server_ip: str | None, facts: DnsFacts) -> str | None:
    """The address reached is in no resolver's answer (round-robin safe: every answer counts)."""
    if not server_ip or not is_ip_address(server_ip):
        return None
    decided = [r for r in facts.resolvers if facts.addresses(r) or facts.host_error(r) == NXDOMAIN]
    if not decided:  # no resolver gave a usable answer: nothing to compare with
        return None
    if any(same_address(server_ip, a) for r in decided for a in facts.addresses(r)):
        return None
    answers = "; ".join(f"{r}: {_addresses_text(facts, r)}" for r in decided)
    return (
        f"The server reached, {server_ip}, is not among the addresses DNS gives for {requested} "
        f"({answers}). Something other than DNS chose that address."
    )


def _split_horizon(
    requested: str, server_ip: str | None, facts: DnsFacts, covers: Covers
) -> str | None:
    """Resolvers disagree, and the certificate covers one side's names and not another's."""
    views = {}
    for resolver in facts.resolvers:
        addresses = frozenset(facts.addresses(resolver))
        error = facts.host_error(resolver)
        if not addresses and error not in (NXDOMAIN, NO_DATA):
            continue  # a resolver that did not answer has no side
        chain = tuple(n.lower() for n in facts.cname_chain(resolver, requested))
        views[resolver] = (chain, addresses)
    if len(set(views.values())) < 2:
        return None
    covered = {r: [n for n in chain if covers(n)] for r, (chain, _) in views.items()}
    inside = [r for r in views if covered[r]]
    outside = [r for r in views if not covered[r]]
    if not inside or not outside:
        return None
    sides = "; ".join(
        f"{r} answers {_arrows(list(views[r][0]))} → {_addresses_text(facts, r)}" for r in views
    )
    reached = ""
    if server_ip:
        holders = [r for r in views if any(same_address(server_ip, a) for a in views[r][1])]
        if holders:
            verb = "answers" if len(holders) == 1 else "answer"
            reached = f" The server reached, {server_ip}, is what {' and '.join(holders)} {verb}."
    return (
        f"Resolvers answer differently for {requested}: {sides}. The certificate covers "
        f"{covered[inside[0]][-1]}, a name only {', '.join(inside)} leads to; a client that asks "
        f"{', '.join(outside)} checks names the certificate does not cover.{reached}"
    )


def _srv_target(
    requested: str, protocol: str, facts: DnsFacts, covers: Covers, srv_ids: tuple[str, ...]
) -> str | None:
    """The requested host is an SRV target for the service, and the certificate names none of
    the names an SRV-aware client may check."""
    domain = facts.mail_domain
    if domain is None:
        return None
    for record in _service_records(facts, protocol):
        if not record.target or record.target.lower() != requested.lower().rstrip("."):
            continue
        if covers(record.target) or covers(domain) or srv_id_covers(srv_ids, record):
            return None
        return (
            f"The SRV record {record.owner} points mail clients to {record.target}:{record.port}. "
            f"A client that found the server this way checks the certificate against the mail "
            f"domain {domain} (as a DNS-ID, or as the SRV-ID {_srv_id(record)}) and may accept "
            f"{record.target}, the host it connected to; the certificate names none of them."
        )
    return None


def _srv_id_only(
    requested: str, protocol: str, facts: DnsFacts, covers: Covers, srv_ids: tuple[str, ...]
) -> str | None:
    """The requested host is the mail domain, named only by an SRV-ID for the service."""
    domain = facts.mail_domain
    if domain is None or domain.lower() != requested.lower().rstrip(".") or covers(domain):
        return None
    for service in SERVICES_OF.get(protocol, ()):
        record = SrvRecord(service, domain, 0, 0, 0, "")
        if srv_id_covers(srv_ids, record):
            return (
                f"The certificate names {domain} only as the SRV-ID {_srv_id(record)}: a client "
                f"that finds its server through the SRV records of {domain} accepts it, and a "
                f"client configured by hand with {domain} compares DNS-IDs and rejects it."
            )
    return None


# --- helpers for callers ---------------------------------------------------------------------


def servers_for(
    facts: DnsFacts | None, protocol: str, covers: Covers | None = None
) -> list[SuggestedServer]:
    """The servers DNS names for the mail domain's ``protocol`` service: the SRV targets of
    its services (RFC 6186 order), then for SMTP the MX hosts; with ``covers``, only those the
    certificate is valid for. For a protocol certmatch could not tell (``"unknown"``, a port
    of no standard service) every mail service's, each named by its record. For
    ``mail-domain-not-server``'s "configure … (SRV …)" (:func:`suggested_servers`)."""
    if facts is None or facts.mail_domain is None:
        return []
    found: list[SuggestedServer] = []
    records = facts.srv() if protocol == "unknown" else _service_records(facts, protocol)
    for record in records:
        if record.target and (covers is None or covers(record.target)):
            found.append(SuggestedServer(record.target, f"SRV {record.owner}", record.port))
    if protocol in ("smtp", "submission", "unknown"):
        for mx in facts.mx():
            if covers is None or covers(mx.exchange):
                found.append(SuggestedServer(mx.exchange, f"MX {facts.mail_domain}"))
    unique: list[SuggestedServer] = []
    for server in found:
        if all(server.name.lower() != u.name.lower() for u in unique):
            unique.append(server)
    return unique


def suggested_servers(facts: DnsFacts | None, protocol: str, covers: Covers) -> str:
    """The servers to configure instead of the mail domain, with the record that names each
    (``"imap.example.com (SRV _imaps._tcp.example.com)"``), comma-separated: the ones of
    :func:`servers_for` the certificate is valid for; "" when DNS names none."""
    return ", ".join(str(s) for s in servers_for(facts, protocol, covers))


def srv_ids_of(certificate: x509.Certificate) -> tuple[str, ...]:
    """The SRV-IDs (RFC 4985 SRVName otherNames, ``_Service.Name``) in ``certificate``'s SAN.

    A value that cannot be read is left out; so is everything when the SAN cannot be parsed.
    """
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return ()
    names = []
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id != SRV_NAME_OID:
            continue
        value = _der_string(other.value)
        if value:
            names.append(value)
    return tuple(names)


def srv_id_covers(srv_ids: tuple[str, ...], record: SrvRecord) -> bool:
    """True when an SRV-ID names ``record``'s service at its domain: the service label
    case-insensitively, without its "_" (RFC 6125 §6.5.1), and the domain as a DNS name."""
    wanted_service = record.service.split(".")[0].lstrip("_").lower()
    wanted_domain = record.domain.lower().rstrip(".")
    for srv_id in srv_ids:
        service, _, domain = srv_id.partition(".")
        if (
            service.lstrip("_").lower() == wanted_service
            and domain.lower().rstrip(".") == wanted_domain
        ):
            return True
    return False


def dns_summary(facts: DnsFacts | None, host: str | None = None) -> list[str]:
    """One line per resolver: the host's CNAME chain and addresses with their TTL, then the
    PTR of the server address, and the mail domain's SRV and MX records. For reports."""
    if facts is None:
        return []
    name = host or facts.host
    lines = []
    for resolver in facts.resolvers:
        chain = facts.cname_chain(resolver, name)
        ttl = [a.ttl for a in facts.answers if a.resolver == resolver and a.ttl is not None]
        ttl_text = f", TTL {min(ttl)} s" if ttl else ""
        lines.append(
            f"{_arrows(chain)} → {_addresses_text(facts, resolver)} ({resolver}{ttl_text})"
        )
    if facts.server_ip:
        ptr = facts.ptr_names()
        lines.append(f"PTR {facts.server_ip} → {', '.join(ptr) if ptr else 'none'}")
    for record in facts.srv():
        target = f"{record.target}:{record.port}" if record.target else ". (not available)"
        lines.append(f"SRV {record.owner} → {target} (priority {record.priority})")
    for mx in facts.mx():
        lines.append(f"MX {facts.mail_domain} → {mx.exchange} (preference {mx.preference})")
    return lines


def _service_records(facts: DnsFacts, protocol: str) -> list[SrvRecord]:
    services = SERVICES_OF.get(protocol, ())
    return [r for r in facts.srv() if r.service in services]


def _srv_id(record: SrvRecord) -> str:
    return f"_{record.service.split('.')[0].lstrip('_')}.{record.domain}"


def _arrows(chain: list[str]) -> str:
    return " → CNAME ".join(chain)


def _addresses_text(facts: DnsFacts, resolver: str) -> str:
    addresses = facts.addresses(resolver)
    if addresses:
        return ", ".join(addresses)
    error = facts.host_error(resolver)
    return {NXDOMAIN: "no such name (NXDOMAIN)", NO_DATA: "no address"}.get(
        error or "", f"no answer ({error})" if error else "no answer"
    )


def _der_string(value: bytes) -> str | None:
    """The text of a DER IA5String (RFC 4985) or UTF8String (as some tools write it)."""
    if len(value) < 2 or value[0] not in (0x16, 0x0C):
        return None
    length = value[1]
    start = 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 2 or len(value) < 2 + count:
            return None
        length = int.from_bytes(value[2 : 2 + count], "big")
        start = 2 + count
    body = value[start : start + length]
    if len(body) != length:
        return None
    return body.decode("utf-8", "backslashreplace")


def _nothing(name: str) -> bool:
    return False
