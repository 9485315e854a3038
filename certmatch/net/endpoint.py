"""Probe one endpoint as a mail client would: find its address, handshake with and without
SNI, gather the DNS evidence, and record each handshake as session facts.

The facts are the recording format's (:class:`~certmatch.core.facts.SessionFacts`), with
``requested_host_source="option"``: the name is the one the user gave, standing for the
name a client would be configured with. The handshake without SNI carries the one with SNI
as its ``sni_probe``, so ``no-sni-default-certificate`` has direct evidence.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from certmatch.core.dns_facts import DnsFacts, reverse_name
from certmatch.core.facts import SessionFacts, SniProbe
from certmatch.core.identity import is_ip_address
from certmatch.core.probe_plan import BOTH, Plan, Target, plan_for
from certmatch.net.handshake import Handshake, handshake

if TYPE_CHECKING:  # the resolver (dnspython) is loaded only by those who ask DNS
    from certmatch.net.dns import DnsLookup


@dataclass
class EndpointResult:
    """One endpoint probed: its sessions (one per handshake), the DNS facts, or why neither."""

    target: Target
    plan: Plan
    requested_host: str
    ip: str | None = None
    sessions: list[SessionFacts] = field(default_factory=list)
    handshakes: list[Handshake] = field(default_factory=list)
    dns: DnsFacts | None = None
    error: str | None = None  # the endpoint could not be tried at all (no address)

    def with_sni(self) -> Handshake | None:
        return next((h for h in self.handshakes if h.sni is not None), None)

    def without_sni(self) -> Handshake | None:
        return next((h for h in self.handshakes if h.sni is None), None)


async def probe_endpoint(
    target: Target,
    *,
    starttls: str = "auto",
    sni: str | None = BOTH,
    connect: str | None = None,
    lookup: DnsLookup | None = None,
    timeout: float = 5.0,
) -> EndpointResult:
    """Handshake with ``target`` as a client would, and gather DNS with ``lookup`` (None: no DNS).

    ``sni``: :data:`BOTH` (one handshake with the host as SNI, one without), a name (one
    handshake with that SNI; the name is then the requested host), or None (without SNI
    only). ``connect``: the address to use instead of resolving the host. An IP address as
    host gets no SNI (RFC 6066 §3 allows none) unless a name is given.
    """
    plan = plan_for(target, starttls)
    requested = sni if sni not in (None, BOTH) else target.host
    result = EndpointResult(target, plan, requested)
    names: list[str | None]
    if sni == BOTH:
        names = [None] if is_ip_address(target.host) else [target.host, None]
    else:
        names = [sni]

    dns_task: asyncio.Task[DnsFacts] | None = None
    ip = connect or (target.host if is_ip_address(target.host) else None)
    if lookup is not None and lookup.resolvers:
        dns_task = asyncio.create_task(lookup.gather(target.host, server_ip=ip))
    if ip is None:
        ip, result.error = await _address_of(target.host, dns_task, lookup)
        if ip is None:
            result.dns = await dns_task if dns_task else None
            return result
    result.ip = ip
    shakes = await asyncio.gather(
        *(
            handshake(ip, plan.port, sni=name, starttls=plan.starttls, timeout=timeout)
            for name in names
        )
    )
    result.handshakes = list(shakes)
    if dns_task is not None:
        result.dns = await dns_task
        if result.dns.server_ip is None and lookup is not None:
            await _add_ptr(result.dns, ip, lookup)
    result.sessions = [_session(result, h) for h in shakes]
    return result


async def _system_address(host: str) -> str | None:
    """The first address the system resolver gives (the hosts file included), or None."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return None
    return str(infos[0][4][0]) if infos else None


async def _address_of(
    host: str, dns_task: asyncio.Task[DnsFacts] | None, lookup: DnsLookup | None
) -> tuple[str | None, str | None]:
    """The address a client would connect to: the first resolver's first answer when
    resolvers were given, the system's (hosts file included) otherwise; or why there is none."""
    if dns_task is not None and lookup is not None:
        facts = await dns_task
        for resolver in facts.resolvers:
            addresses = facts.addresses(resolver)
            if addresses:
                return addresses[0], None
        errors = ", ".join(f"{r}: {facts.host_error(r) or 'no answer'}" for r in facts.resolvers)
        local = await _system_address(host)
        if local is not None:  # the hosts file, which a client on this machine would read
            return None, (
                f"{host} has no address in DNS ({errors}), but this machine's resolver (its "
                f"hosts file) gives {local}; to probe that address, add --connect {local}"
            )
        return None, (
            f"{host} has no address in DNS ({errors}); check the name, or give the address "
            "with --connect"
        )
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return None, (
            f"{host} cannot be resolved ({exc.args[-1] if exc.args else exc}); check the name, "
            "or give the address with --connect"
        )
    return str(infos[0][4][0]), None


async def _add_ptr(facts: DnsFacts, ip: str, lookup: DnsLookup) -> None:
    """Ask every resolver for the PTR of ``ip``, once the address is known."""
    answers = await asyncio.gather(
        *(lookup.query(reverse_name(ip), "PTR", r) for r in lookup.resolvers)
    )
    facts.server_ip = ip
    facts.answers += [a for batch in answers for a in batch if a not in facts.answers]


def _session(result: EndpointResult, shake: Handshake) -> SessionFacts:
    facts = session_facts(
        shake, requested_host=result.requested_host, plan=result.plan, host=result.target.host
    )
    other = result.with_sni()
    if shake.sni is None and other is not None and other is not shake:
        facts.sni_probe = SniProbe(sni=other.sni or "", chain=list(other.chain), error=other.error)
    return facts


def session_facts(shake: Handshake, *, requested_host: str, plan: Plan, host: str) -> SessionFacts:
    """One handshake as recorded session facts, the name given by the user (``option``)."""
    return SessionFacts(
        id=uuid.uuid4().hex,
        started=shake.started,
        client_address=shake.local_address,
        protocol=plan.protocol,
        tls_kind=plan.tls_kind,
        requested_host=requested_host,
        requested_host_source="option",
        sni=shake.sni,
        server_address=f"{host}:{plan.port}",
        server_ip=shake.ip,
        upstream_sni=shake.sni,
        tls_version=shake.tls_version,
        cipher=shake.cipher,
        chain=list(shake.chain),
        server_error=shake.error,
        starttls=shake.starttls,
    )
