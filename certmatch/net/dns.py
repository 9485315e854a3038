"""Asking DNS about a session's names, with dnspython, asynchronously and cached.

:class:`DnsLookup` puts each question to every resolver it was given (``--resolver
IP[:PORT]``, repeatable; a second resolver is how split horizon shows), each with a bound
on its time, and keeps the answers for their TTL. :meth:`DnsLookup.gather` collects what
:class:`~certmatch.core.dns_facts.DnsFacts` holds for one session: the requested host's
CNAME chain and A/AAAA addresses, the PTR of the server's address and, for a mail domain,
its MX and the mail SRV records of RFC 6186 and RFC 8314.

Nothing here raises for an answer it did not get: a timeout, NXDOMAIN or a refusal is
recorded in the answer's ``error``. The system's hosts file is never read: DNS is asked,
so an address that came from a hosts-file entry shows up as not among DNS's answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from certmatch.core.dns_facts import (
    MAIL_SRV_SERVICES,
    NO_DATA,
    NXDOMAIN,
    SERVFAIL,
    TIMEOUT,
    DnsAnswer,
    DnsFacts,
    reverse_name,
)
from certmatch.core.identity import is_ip_address, registrable_domain

DEFAULT_TIMEOUT = 2.0  # seconds for one question to one resolver
NEGATIVE_TTL = 30  # seconds a "no such name" or "no data" answer is kept at most
CACHE_SIZE = 4096  # questions kept


@dataclass(frozen=True)
class Resolver:
    """A DNS resolver's address and port."""

    ip: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


def parse_resolver(text: str) -> Resolver:
    """``IP``, ``IP:PORT``, ``[IPv6]`` or ``[IPv6]:PORT`` as a :class:`Resolver`.

    Raises ValueError with a sentence saying what is wrong; a bare IPv6 address without
    brackets is taken whole (it has no port).
    """
    given = text.strip()
    port = 53
    host = given
    if given.startswith("["):
        end = given.find("]")
        if end < 0:
            raise ValueError(f"--resolver {text!r}: an IPv6 address opened with [ has no ]")
        host, rest = given[1:end], given[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"--resolver {text!r}: expected :PORT after ]")
            port = _port(text, rest[1:])
    elif given.count(":") == 1:
        host, _, port_text = given.partition(":")
        port = _port(text, port_text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"--resolver {text!r}: {host!r} is not an IP address (give the resolver's address, "
            "e.g. 127.0.0.1:5353 or [::1]:53)"
        ) from None
    return Resolver(str(ip), port)


def _port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--resolver {text!r}: the port must be a number from 1 to 65535")
    return int(port_text)


def system_resolvers() -> list[Resolver]:
    """The resolvers the system is configured with (``/etc/resolv.conf``), or none."""
    try:
        configured = dns.resolver.Resolver(configure=True)
    except (dns.resolver.NoResolverConfiguration, OSError):
        return []
    found = []
    for server in configured.nameservers:
        address = str(server)
        if is_ip_address(address):
            found.append(Resolver(address, int(configured.port)))
    return found


class DnsLookup:
    """Asks ``resolvers`` (default: the system's) with ``timeout`` seconds per question,
    keeping each answer for its TTL (negative answers for at most :data:`NEGATIVE_TTL`)."""

    def __init__(
        self,
        resolvers: Sequence[Resolver] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.resolvers = list(resolvers) if resolvers else system_resolvers()
        self.timeout = timeout
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, list[DnsAnswer]]] = (
            OrderedDict()
        )
        self._cache_size = cache_size
        self._pending: dict[tuple[str, str, str], asyncio.Future[list[DnsAnswer]]] = {}

    # -- one question --------------------------------------------------------------------

    async def query(self, name: str, rtype: str, resolver: Resolver) -> list[DnsAnswer]:
        """The answers to (``name``, ``rtype``) from ``resolver``: the CNAMEs it followed,
        then the records (or the error) at the end of the chain. Never raises."""
        key = (str(resolver), name.lower().rstrip("."), rtype)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        pending = self._pending.get(key)
        if pending is not None:  # the same question is already on its way: share its answer
            return await asyncio.shield(pending)
        future: asyncio.Future[list[DnsAnswer]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answers, ttl = await self._ask(name, rtype, resolver)
            if ttl is not None and ttl > 0:
                self._remember(key, answers, now + ttl)
            future.set_result(answers)
            return answers
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._pending[key]

    def _remember(self, key: tuple[str, str, str], answers: list[DnsAnswer], until: float) -> None:
        self._cache[key] = (until, answers)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _ask(
        self, name: str, rtype: str, resolver: Resolver
    ) -> tuple[list[DnsAnswer], int | None]:
        label = str(resolver)
        shown = name.rstrip(".")
        try:
            qname = dns.name.from_text(shown)
            rdtype = dns.rdatatype.from_text(rtype)
        except (dns.exception.DNSException, ValueError) as exc:
            return [DnsAnswer(shown, rtype, label, error=f"not a DNS name ({exc})")], None
        query = dns.message.make_query(qname, rdtype)
        try:
            response, _ = await asyncio.wait_for(
                dns.asyncquery.udp_with_fallback(
                    query, resolver.ip, timeout=self.timeout, port=resolver.port
                ),
                self.timeout + 0.5,
            )
        except (TimeoutError, dns.exception.Timeout):
            return [DnsAnswer(shown, rtype, label, error=TIMEOUT)], None
        except (OSError, dns.exception.DNSException, EOFError) as exc:
            return [DnsAnswer(shown, rtype, label, error=_short(exc))], None
        return _read_response(response, qname, rdtype, label)

    # -- everything about a session -------------------------------------------------------

    async def gather(
        self,
        host: str,
        *,
        server_ip: str | None = None,
        mail_domain: str | None | bool = True,
    ) -> DnsFacts:
        """Ask every resolver about ``host``, ``server_ip`` and the mail domain, at once.

        ``mail_domain``: a domain to ask MX and SRV about, False for none, or True (the
        default) to choose: ``host`` itself when it has MX or mail SRV records, else its
        registrable domain (public suffix list). Takes about one :attr:`timeout` at most.
        """
        started = datetime.now(UTC).isoformat(timespec="seconds")
        clock = time.monotonic()
        name = host.rstrip(".")
        candidates = _mail_domain_candidates(name, mail_domain)
        # The jobs of each mail-domain candidate are kept apart (key: the candidate), so only
        # the chosen one's answers are kept; the host's and the address's are under None.
        jobs: dict[str | None, list[asyncio.Task[list[DnsAnswer]]]] = {}
        async with asyncio.TaskGroup() as group:

            def ask(qname: str, rtype: str, domain: str | None = None) -> None:
                for resolver in self.resolvers:
                    task = group.create_task(self.query(qname, rtype, resolver))
                    jobs.setdefault(domain, []).append(task)

            if not is_ip_address(name):
                ask(name, "A")
                ask(name, "AAAA")
            if server_ip is not None and is_ip_address(server_ip):
                ask(reverse_name(server_ip), "PTR")
            for domain in candidates:
                ask(domain, "MX", domain)
                for service in MAIL_SRV_SERVICES:
                    ask(f"{service}.{domain}", "SRV", domain)
        by_domain = {key: [a for job in tasks for a in job.result()] for key, tasks in jobs.items()}
        chosen = _choose_mail_domain(candidates, by_domain)
        answers = _unique([*by_domain.get(None, ()), *by_domain.get(chosen, ())])
        return DnsFacts(
            host=name,
            resolvers=[str(r) for r in self.resolvers],
            server_ip=server_ip,
            mail_domain=chosen,
            answers=answers,
            started=started,
            elapsed=round(time.monotonic() - clock, 4),
        )


def _read_response(
    response: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, label: str
) -> tuple[list[DnsAnswer], int | None]:
    """The CNAME steps and the final records in ``response``, and how long to keep them."""
    rtype = dns.rdatatype.to_text(rdtype)
    answers: list[DnsAnswer] = []
    ttls: list[int] = []
    current = qname
    for _ in range(16):  # a CNAME chain longer than this is a loop or an attack
        cname = response.get_rrset(response.answer, current, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None or rdtype == dns.rdatatype.CNAME:
            break
        target = cname[0].target  # type: ignore[attr-defined]
        answers.append(DnsAnswer(_text(current), "CNAME", label, (_text(target),), cname.ttl))
        ttls.append(cname.ttl)
        current = target
    rcode = response.rcode()
    final = response.get_rrset(response.answer, current, dns.rdataclass.IN, rdtype)
    if final is not None:
        data = tuple(sorted({_rdata_text(rd) for rd in final}))
        answers.append(DnsAnswer(_text(current), rtype, label, data, final.ttl))
        ttls.append(final.ttl)
        return answers, min(ttls)
    if rcode == dns.rcode.NXDOMAIN:
        error = NXDOMAIN
    elif rcode == dns.rcode.NOERROR:
        error = NO_DATA
    else:
        error = (
            SERVFAIL
            if rcode in (dns.rcode.SERVFAIL, dns.rcode.REFUSED)
            else dns.rcode.to_text(rcode).lower()
        )
    answers.append(DnsAnswer(_text(current), rtype, label, error=error))
    if error in (NXDOMAIN, NO_DATA):
        return answers, min([NEGATIVE_TTL, *ttls, *_soa_minimum(response)])
    return answers, None


def _soa_minimum(response: dns.message.Message) -> list[int]:
    """The negative-caching TTL of RFC 2308 §5, from the SOA in the authority section."""
    return [
        min(rrset.ttl, rrset[0].minimum)  # type: ignore[attr-defined]
        for rrset in response.authority
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset)
    ]


def _rdata_text(rdata: object) -> str:
    text = str(rdata.to_text())  # type: ignore[attr-defined]
    # "name." loses its final dot; a lone "." (the root: SRV's "not available") stays
    return text[:-1] if text.endswith(".") and not text.endswith(" .") and text != "." else text


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _unique(answers: Iterable[DnsAnswer]) -> list[DnsAnswer]:
    seen: set[DnsAnswer] = set()
    out = []
    for answer in answers:
        if answer not in seen:
            seen.add(answer)
            out.append(answer)
    return out


def _mail_domain_candidates(host: str, mail_domain: str | None | bool) -> list[str]:
    if mail_domain is False or mail_domain is None:
        return []
    if isinstance(mail_domain, str):
        return [mail_domain.rstrip(".")]
    if is_ip_address(host):
        return []
    candidates = [host]
    domain = registrable_domain(host)
    if domain and domain.lower() != host.lower():
        candidates.append(domain)
    return candidates


def _choose_mail_domain(
    candidates: list[str], answers: dict[str | None, list[DnsAnswer]]
) -> str | None:
    """The first candidate with MX or mail SRV data, else the last (the registrable domain)."""
    for candidate in candidates:
        if any(a.data for a in answers.get(candidate, ()) if a.type in ("MX", "SRV")):
            return candidate
    return candidates[-1] if candidates else None
