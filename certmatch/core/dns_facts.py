"""What DNS said about a session's names: the second of the three names (Microsoft KB Q198564).

Facts only, as the resolvers answered them, each answer with the resolver that gave it and
its TTL: the requested host's CNAME chain and addresses, the PTR of the server's address,
and for a mail domain its MX and the SRV records of RFC 6186 and RFC 8314. Nothing here
looks anything up (:mod:`certmatch.net.dns` does); the rules that read these facts are in
:mod:`certmatch.core.dns_rules`.

A failed look-up is an answer too: its ``error`` is one of :data:`ERRORS` (or a short
text for anything else), and its ``data`` is empty.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import operator
from dataclasses import dataclass, field
from typing import Any

# The record types gathered, in the order they are shown.
RECORD_TYPES: tuple[str, ...] = ("CNAME", "A", "AAAA", "PTR", "MX", "SRV")

# Why a look-up gave no data, as recorded in ``DnsAnswer.error``.
NXDOMAIN = "nxdomain"  # the name does not exist (RFC 8020: nor any name below it)
NO_DATA = "no-data"  # the name exists, but has no record of this type
TIMEOUT = "timeout"  # no answer within the time allowed
SERVFAIL = "servfail"  # the resolver could not answer (or refused)
ERRORS: tuple[str, ...] = (NXDOMAIN, NO_DATA, TIMEOUT, SERVFAIL)

# The mail services located by SRV records: RFC 6186 §3 (_submission, _imap(s), _pop3(s))
# and RFC 8314 §5.1 (_submissions), with the protocol certmatch names each one and the
# port it is usually found on.
MAIL_SRV_SERVICES: dict[str, tuple[str, int]] = {
    "_imaps._tcp": ("imap", 993),
    "_imap._tcp": ("imap", 143),
    "_pop3s._tcp": ("pop3", 995),
    "_pop3._tcp": ("pop3", 110),
    "_submissions._tcp": ("submission", 465),
    "_submission._tcp": ("submission", 587),
}


@dataclass(frozen=True)
class DnsAnswer:
    """One question (``name``, ``type``) put to one resolver, and what it answered.

    ``data`` holds each record's data in presentation form without the final dot (an
    address; a CNAME or PTR target; ``"10 mail.example.com"`` for MX; ``"0 1 993
    imap.example.com"`` for SRV). ``ttl`` is the answer's TTL in seconds.
    """

    name: str
    type: str
    resolver: str  # "127.0.0.1:53", "[::1]:5353", or "system" for the system's resolver
    data: tuple[str, ...] = ()
    ttl: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "resolver": self.resolver,
            "data": list(self.data),
            "ttl": self.ttl,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DnsAnswer:
        if data.keys() == _ANSWER_KEYS:  # every field, as a writer writes them: taken over
            answer = object.__new__(cls)
            answer.__dict__.update(data, data=tuple(data["data"] or ()))
            return answer
        kwargs = {k: v for k, v in data.items() if k in _ANSWER_KEYS}
        kwargs["data"] = tuple(kwargs.get("data") or ())
        return cls(**kwargs)


@dataclass(frozen=True)
class MxRecord:
    preference: int
    exchange: str


@dataclass(frozen=True)
class SrvRecord:
    """One SRV record of ``service`` (e.g. ``_imaps._tcp``) for ``domain`` (RFC 2782)."""

    service: str
    domain: str
    priority: int
    weight: int
    port: int
    target: str  # "" for the "." target: the service is decidedly not available (RFC 2782)

    @property
    def owner(self) -> str:
        return f"{self.service}.{self.domain}"

    @property
    def protocol(self) -> str:
        return MAIL_SRV_SERVICES.get(self.service, ("unknown", 0))[0]


@dataclass
class DnsFacts:
    """Everything the resolvers said about one session's names.

    ``host`` is the requested host looked up (CNAME, A, AAAA); ``server_ip`` the address
    whose PTR was asked; ``mail_domain`` the domain whose MX and SRV records were asked,
    or None when there was none to ask about. ``resolvers`` lists every resolver asked,
    in the order given, even one that never answered.
    """

    host: str
    resolvers: list[str] = field(default_factory=list)
    server_ip: str | None = None
    mail_domain: str | None = None
    answers: list[DnsAnswer] = field(default_factory=list)
    started: str | None = None  # ISO 8601, UTC: when the look-ups began
    elapsed: float | None = None  # seconds all of them took

    # -- reading the answers -----------------------------------------------------------

    def answers_for(self, name: str, rtype: str, resolver: str | None = None) -> list[DnsAnswer]:
        key = _name_key(name)
        return [
            a
            for a in self.answers
            if a.type == rtype
            and _name_key(a.name) == key
            and (resolver is None or a.resolver == resolver)
        ]

    def cname_chain(self, resolver: str, name: str | None = None) -> list[str]:
        """The names from ``name`` (default: ``host``) along its CNAMEs, as ``resolver`` answered;
        the first is ``name`` itself, the last the canonical name. A loop ends the chain."""
        chain = [_shown(name or self.host)]
        seen = {_name_key(chain[0])}
        while True:
            step = [a for a in self.answers_for(chain[-1], "CNAME", resolver) if a.data]
            if not step:
                return chain
            target = _shown(step[0].data[0])
            if _name_key(target) in seen:
                return chain
            seen.add(_name_key(target))
            chain.append(target)

    def addresses(self, resolver: str) -> tuple[str, ...]:
        """The A and AAAA addresses ``resolver`` gave for ``host``, at the end of its chain."""
        canonical = self.cname_chain(resolver)[-1]
        found: list[str] = []
        for rtype in ("A", "AAAA"):
            for answer in self.answers_for(canonical, rtype, resolver):
                found += [a for a in answer.data if a not in found]
        return tuple(found)

    def host_error(self, resolver: str) -> str | None:
        """Why ``resolver`` gave no address for ``host`` (its first error), or None."""
        if self.addresses(resolver):
            return None
        canonical = self.cname_chain(resolver)[-1]
        for rtype in ("A", "AAAA", "CNAME"):
            for answer in self.answers_for(canonical, rtype, resolver):
                if answer.error and answer.error != NO_DATA:
                    return answer.error
        return NO_DATA if self.answers_for(canonical, "A", resolver) else None

    def all_addresses(self) -> frozenset[str]:
        """Every address any resolver gave for ``host`` (normalised text)."""
        return frozenset(_ip_key(a) for r in self.resolvers for a in self.addresses(r))

    def ptr_names(self) -> tuple[str, ...]:
        names: list[str] = []
        if self.server_ip is None:
            return ()
        for answer in self.answers_for(reverse_name(self.server_ip), "PTR"):
            names += [_shown(n) for n in answer.data if _shown(n) not in names]
        return tuple(names)

    def mx(self) -> tuple[MxRecord, ...]:
        """The mail domain's MX records from every resolver, most preferred first."""
        if self.mail_domain is None:
            return ()
        records: set[MxRecord] = set()
        for answer in self.answers_for(self.mail_domain, "MX"):
            for text in answer.data:
                parsed = _parse_mx(text)
                if parsed is not None:
                    records.add(parsed)
        return tuple(sorted(records, key=lambda r: (r.preference, r.exchange)))

    def srv(self, service: str | None = None) -> tuple[SrvRecord, ...]:
        """The mail domain's SRV records (of ``service`` only, if given) from every resolver,
        in RFC 2782 order: lowest priority first, then highest weight."""
        if self.mail_domain is None:
            return ()
        records: set[SrvRecord] = set()
        services = (service,) if service else tuple(MAIL_SRV_SERVICES)
        for svc in services:
            for answer in self.answers_for(f"{svc}.{self.mail_domain}", "SRV"):
                for text in answer.data:
                    parsed = _parse_srv(svc, self.mail_domain, text)
                    if parsed is not None:
                        records.add(parsed)
        return tuple(sorted(records, key=lambda r: (r.priority, -r.weight, r.service, r.target)))

    def verdict_view(self) -> DnsFacts:
        """A copy with only what the rules read: no timing, no TTLs, answers sorted. Two
        sessions whose DNS said the same thing get equal views, so a judge can key its cache
        on it (the rules of :mod:`certmatch.core.dns_rules` read nothing else)."""
        answers = sorted(
            {dataclasses.replace(a, ttl=None) for a in self.answers},
            key=lambda a: (a.resolver, a.name.lower(), a.type, a.data, a.error or ""),
        )
        return DnsFacts(
            host=self.host,
            resolvers=list(self.resolvers),
            server_ip=self.server_ip,
            mail_domain=self.mail_domain,
            answers=answers,
        )

    # -- JSON ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "resolvers": list(self.resolvers),
            "server_ip": self.server_ip,
            "mail_domain": self.mail_domain,
            "answers": [a.to_json() for a in self.answers],
            "started": self.started,
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DnsFacts:
        kwargs = {k: v for k, v in data.items() if k in _FACTS_KEYS}
        kwargs["answers"] = list(map(DnsAnswer.from_json, kwargs.get("answers") or ()))
        kwargs["resolvers"] = list(kwargs.get("resolvers") or ())
        return cls(**kwargs)

    def verdict_key(self) -> tuple[Any, ...]:
        """What :meth:`verdict_view` keeps, cheaply, as nested tuples: equal keys mean equal
        views (the same answers in the same order, TTLs aside; answers in another order give
        another key, never a wrong one), so a cache can be keyed on it without building the
        view."""
        return (
            self.host,
            self.server_ip,
            self.mail_domain,
            tuple(self.resolvers),
            tuple(map(_ANSWER_VERDICT_PART, self.answers)),
        )


_ANSWER_KEYS = frozenset(f.name for f in dataclasses.fields(DnsAnswer))
# What the rules read of an answer: all but its TTL.
_ANSWER_VERDICT_PART = operator.attrgetter(
    *(f.name for f in dataclasses.fields(DnsAnswer) if f.name != "ttl")
)
_FACTS_KEYS = frozenset(f.name for f in dataclasses.fields(DnsFacts))


def reverse_name(ip: str) -> str:
    """The in-addr.arpa / ip6.arpa name whose PTR record names ``ip`` (RFC 1035 §3.5,
    RFC 3596 §2.5), without the final dot."""
    return ipaddress.ip_address(ip).reverse_pointer


def same_address(a: str, b: str) -> bool:
    """True when two address texts name one address (IPv4-mapped IPv6 counts as IPv4)."""
    return _ip_key(a) == _ip_key(b)


def _ip_key(text: str) -> str:
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _shown(name: str) -> str:
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def _name_key(name: str) -> str:
    return _shown(name).lower()


def _parse_mx(text: str) -> MxRecord | None:
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit():
        return None
    return MxRecord(int(parts[0]), _shown(parts[1]))


def _parse_srv(service: str, domain: str, text: str) -> SrvRecord | None:
    parts = text.split()
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    target = "" if parts[3] == "." else _shown(parts[3])
    return SrvRecord(service, domain, int(parts[0]), int(parts[1]), int(parts[2]), target)
