"""Which names a mail client could be configured with, for each service of a mail domain.

Pure: from a domain's DNS facts (:class:`~certmatch.core.dns_facts.DnsFacts`) and the
services asked about, :func:`candidates` lists every (service, name, port) worth a
handshake, each with where the name came from; :func:`recommend` picks, per service, the
name to configure: the first that matched, SRV targets first (RFC 6186 §3.4: lowest priority
first), then the autoconfig file's server, then (for SMTP and submission) the MX hosts, then the
usual names (``imap.``, ``pop.``, ``smtp.``, ``mail.``), then names DNS gives for other
services, then the domain itself. :mod:`certmatch.net.discovery` does the handshakes.
"""

from __future__ import annotations

from dataclasses import dataclass

from certmatch.core.dns_facts import DnsFacts


@dataclass(frozen=True)
class MailService:
    """A service a mail client is configured for: its protocol, standard port (RFC 6186 §3,
    RFC 8314 §5.1), STARTTLS dialogue (None: implicit TLS) and SRV service label."""

    name: str
    protocol: str
    port: int
    starttls: str | None
    srv: str | None
    usual: tuple[str, ...]  # the first labels clients and people guess for it


SERVICES: dict[str, MailService] = {
    s.name: s
    for s in (
        MailService("imaps", "imap", 993, None, "_imaps._tcp", ("imap", "mail")),
        MailService("imap", "imap", 143, "imap", "_imap._tcp", ("imap", "mail")),
        MailService("pop3s", "pop3", 995, None, "_pop3s._tcp", ("pop", "pop3", "mail")),
        MailService("pop3", "pop3", 110, "pop3", "_pop3._tcp", ("pop", "pop3", "mail")),
        MailService("submissions", "submission", 465, None, "_submissions._tcp", ("smtp", "mail")),
        MailService(
            "submission", "submission", 587, "submission", "_submission._tcp", ("smtp", "mail")
        ),
        MailService("smtp", "smtp", 25, "smtp", None, ("smtp", "mail", "mx")),
        MailService("ldaps", "ldap", 636, None, None, ("ldap",)),
        MailService("ldap", "ldap", 389, "ldap", None, ("ldap",)),
        MailService("nntps", "nntp", 563, None, None, ("news", "nntp")),
        MailService("nntp", "nntp", 119, "nntp", None, ("news", "nntp")),
    )
}
DEFAULT_SERVICES: tuple[str, ...] = (
    "imaps",
    "imap",
    "pop3s",
    "pop3",
    "submissions",
    "submission",
    "smtp",
)

# Where a candidate name came from, best first: the order recommend() prefers them in.
SRV, MX, AUTOCONFIG, USUAL, DOMAIN = "srv", "mx", "autoconfig", "usual", "domain"
_SOURCE_RANK = {SRV: 0, AUTOCONFIG: 1, MX: 2, USUAL: 3, DOMAIN: 5}
_ELSEWHERE = 4  # a name DNS gives for another service (an MX host for IMAP, say)


_MX_PROTOCOLS = ("smtp", "submission")


@dataclass(frozen=True)
class Candidate:
    """One name to try for one service, on one port, and why it is a candidate."""

    service: str
    name: str
    port: int
    source: str  # SRV, MX, AUTOCONFIG, USUAL or DOMAIN
    evidence: str  # e.g. "SRV _imaps._tcp.example.com", "MX example.com", "usual name"
    rank: tuple[int, int] = (0, 0)  # the order recommend() prefers: source, then position

    def __str__(self) -> str:
        return f"{self.name} ({self.evidence})"


@dataclass(frozen=True)
class AutoconfigServer:
    """A server named by a Thunderbird-style autoconfig file (``config-v1.1.xml``)."""

    service: str  # a SERVICES key
    name: str
    port: int


def parse_services(text: str) -> tuple[str, ...]:
    """``imaps,submission`` (or ``all``) as service names; ValueError naming the unknown."""
    if text.strip() == "all":
        return tuple(SERVICES)
    names = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    unknown = [n for n in names if n not in SERVICES]
    if unknown or not names:
        raise ValueError(
            f"--services: unknown service(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(SERVICES)}, or all"
        )
    return names


def candidates(
    domain: str,
    facts: DnsFacts | None,
    services: tuple[str, ...] = DEFAULT_SERVICES,
    *,
    ports: dict[str, int] | None = None,
    autoconfig: tuple[AutoconfigServer, ...] = (),
) -> list[Candidate]:
    """Every (service, name, port) to try, in the order :func:`recommend` prefers them.

    Each service gets its SRV targets (on the SRV port; a "." target is left out: the
    domain says the service is not offered), then the autoconfig file's server, the MX
    hosts, the usual names and the domain itself, on the service's port (``ports``
    overrides a service's standard port). Every name any source gave is tried for every
    service, so the table shows what each candidate would get.
    """
    domain = domain.lower().rstrip(".")
    ports = ports or {}
    pool: list[tuple[str, str, str]] = []  # (name, source, evidence)
    per_service: dict[str, list[Candidate]] = {s: [] for s in services}
    for name in services:
        service = SERVICES[name]
        if facts is not None and service.srv:
            for position, record in enumerate(facts.srv(service.srv)):
                if record.target:
                    per_service[name].append(
                        Candidate(
                            name,
                            record.target.lower(),
                            record.port,
                            SRV,
                            f"SRV {record.owner}",
                            (_SOURCE_RANK[SRV], position),
                        )
                    )
                    pool.append((record.target.lower(), SRV, f"SRV target for {record.owner}"))
    for server in autoconfig:
        pool.append((server.name.lower(), AUTOCONFIG, "autoconfig"))
        if server.service in per_service:
            per_service[server.service].append(
                Candidate(
                    server.service,
                    server.name.lower(),
                    server.port,
                    AUTOCONFIG,
                    "autoconfig",
                    (_SOURCE_RANK[AUTOCONFIG], 0),
                )
            )
    if facts is not None:
        for mx in facts.mx():
            pool.append((mx.exchange.lower(), MX, f"MX {domain}"))
    usual = dict.fromkeys(label for s in services for label in SERVICES[s].usual)
    for label in usual:
        pool.append((f"{label}.{domain}", USUAL, f"usual name ({label}.)"))
    pool.append((domain, DOMAIN, "the mail domain"))

    for name in services:
        service = SERVICES[name]
        port = ports.get(name, service.port)
        listed = per_service[name]
        seen = {c.name for c in listed}
        for position, (host, source, evidence) in enumerate(pool):
            if host in seen:
                continue
            seen.add(host)
            # a name DNS gives for another service (an SRV target, an MX host for IMAP), or
            # another service's usual name, comes after this service's usual names
            elsewhere = (
                source == SRV
                or (source == MX and service.protocol not in _MX_PROTOCOLS)
                or (source == USUAL and host.split(".", 1)[0] not in service.usual)
            )
            rank = (_ELSEWHERE if elsewhere else _SOURCE_RANK[source], position)
            listed.append(Candidate(name, host, port, source, evidence, rank))
    return [c for name in services for c in sorted(per_service[name], key=lambda c: c.rank)]


def recommend(outcomes: list[tuple[Candidate, bool]]) -> dict[str, Candidate | None]:
    """Per service, the best candidate that worked (``True``: reached, and nothing failed),
    or None when none did."""
    best: dict[str, Candidate | None] = {}
    for candidate, worked in sorted(outcomes, key=lambda o: (o[0].service, o[0].rank)):
        best.setdefault(candidate.service, None)
        if worked and best[candidate.service] is None:
            best[candidate.service] = candidate
    return best
