"""``probe --mail-domain``: find a mail domain's servers and handshake with every candidate.

The domain's SRV and MX records come from :meth:`DnsLookup.gather`; the candidates from
:func:`certmatch.core.discovery.candidates`; an optional Thunderbird-style autoconfig file
is read over HTTP (:func:`fetch_autoconfig`). Every candidate gets one handshake the way a
client configured with that name makes it (SNI = the name), all at once, at most
``concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from dataclasses import dataclass, field
from xml.etree import ElementTree

from certmatch.core.discovery import (
    SERVICES,
    AutoconfigServer,
    Candidate,
    candidates,
)
from certmatch.core.dns_facts import DnsAnswer, DnsFacts
from certmatch.core.facts import SessionFacts
from certmatch.core.probe_plan import Plan
from certmatch.net.dns import DnsLookup
from certmatch.net.endpoint import session_facts
from certmatch.net.handshake import handshake

MAX_AUTOCONFIG_BYTES = 256 * 1024


@dataclass
class Attempt:
    """One candidate tried: the address used, the session recorded, and the name's DNS."""

    candidate: Candidate
    ip: str | None = None
    session: SessionFacts | None = None
    dns: DnsFacts | None = None
    error: str | None = None  # why no handshake was made (no address)


@dataclass
class Discovery:
    domain: str
    dns: DnsFacts | None
    attempts: list[Attempt] = field(default_factory=list)
    autoconfig: tuple[AutoconfigServer, ...] = ()
    autoconfig_error: str | None = None


async def discover(
    domain: str,
    *,
    lookup: DnsLookup | None,
    services: tuple[str, ...],
    ports: dict[str, int] | None = None,
    autoconfig_url: str | None = None,
    timeout: float = 5.0,
    concurrency: int = 64,
) -> Discovery:
    """Gather the domain's DNS, list the candidates, and handshake with each."""
    domain = domain.lower().rstrip(".")
    facts = None
    if lookup is not None and lookup.resolvers:
        facts = await lookup.gather(domain, mail_domain=domain)
    found = Discovery(domain, facts)
    if autoconfig_url:
        found.autoconfig, found.autoconfig_error = await fetch_autoconfig(
            autoconfig_url, domain, timeout=timeout
        )
    listed = candidates(domain, facts, services, ports=ports, autoconfig=found.autoconfig)
    names = list(dict.fromkeys(c.name for c in listed))
    addresses = dict(
        zip(names, await asyncio.gather(*(_address(n, lookup) for n in names)), strict=True)
    )
    gate = asyncio.Semaphore(concurrency)

    async def attempt(candidate: Candidate) -> Attempt:
        ip, answers, error = addresses[candidate.name]
        name_facts = _facts_for(candidate.name, ip, answers, facts, lookup)
        if ip is None:
            return Attempt(candidate, dns=name_facts, error=error)
        service = SERVICES[candidate.service]
        plan = Plan(candidate.port, service.protocol, service.starttls)
        async with gate:
            shake = await handshake(
                ip, candidate.port, sni=candidate.name, starttls=service.starttls, timeout=timeout
            )
        session = session_facts(
            shake, requested_host=candidate.name, plan=plan, host=candidate.name
        )
        return Attempt(candidate, ip, session, name_facts)

    found.attempts = list(await asyncio.gather(*(attempt(c) for c in listed)))
    return found


async def _address(
    name: str, lookup: DnsLookup | None
) -> tuple[str | None, list[DnsAnswer], str | None]:
    """The first address of ``name`` (first resolver first), its answers, or why none."""
    if lookup is not None and lookup.resolvers:
        batches = await asyncio.gather(
            *(lookup.query(name, t, r) for r in lookup.resolvers for t in ("A", "AAAA"))
        )
        answers = [a for batch in batches for a in batch]
        for answer in answers:
            if answer.type in ("A", "AAAA") and answer.data:
                return answer.data[0], answers, None
        errors = sorted({a.error for a in answers if a.error})
        return None, answers, f"no address in DNS ({', '.join(errors) or 'no answer'})"
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return None, [], f"cannot be resolved ({exc.args[-1] if exc.args else exc})"
    return str(infos[0][4][0]), [], None


def _facts_for(
    name: str,
    ip: str | None,
    answers: list[DnsAnswer],
    domain_facts: DnsFacts | None,
    lookup: DnsLookup | None,
) -> DnsFacts | None:
    """The name's own DNS facts, with the domain's MX and SRV answers for the SRV rules."""
    if lookup is None or not lookup.resolvers:
        return None
    mail = [a for a in domain_facts.answers if a.type in ("MX", "SRV")] if domain_facts else []
    return DnsFacts(
        host=name,
        resolvers=[str(r) for r in lookup.resolvers],
        server_ip=ip,
        mail_domain=domain_facts.mail_domain if domain_facts else None,
        answers=[*answers, *mail],
    )


# --- Thunderbird-style autoconfig ------------------------------------------------------------

_SOCKET_TYPES = {"SSL": True, "STARTTLS": False}
_SERVICE_OF = {
    ("imap", True): "imaps",
    ("imap", False): "imap",
    ("pop3", True): "pop3s",
    ("pop3", False): "pop3",
    ("smtp", True): "submissions",
    ("smtp", False): "submission",
}


async def fetch_autoconfig(
    url: str, domain: str, *, timeout: float = 5.0
) -> tuple[tuple[AutoconfigServer, ...], str | None]:
    """Read a ``config-v1.1.xml`` over plain HTTP (``http://HOST[:PORT]/PATH``), as
    Thunderbird asks ``http://autoconfig.DOMAIN/mail/config-v1.1.xml``: its servers, or why
    none (one sentence). ``%EMAILDOMAIN%`` in the file stands for ``domain``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        return (), f"--autoconfig {url!r}: give an http:// URL"
    port = parsed.port or 80
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parsed.hostname, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.0\r\nHost: {parsed.netloc}\r\n"
                    "User-Agent: certmatch\r\n\r\n".encode("ascii", "replace")
                )
                await writer.drain()
                # Up to the server's close (HTTP/1.0), or just past the size limit: one
                # read() returns whatever has arrived, which may be the headers alone.
                raw = b""
                while len(raw) <= MAX_AUTOCONFIG_BYTES + 4096:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    raw += chunk
            finally:
                writer.close()
    except (TimeoutError, OSError) as exc:
        return (), f"autoconfig {url}: {type(exc).__name__} {exc}".strip()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        return (), f"autoconfig {url}: the server answered {head[:60]!r}"
    if len(body) > MAX_AUTOCONFIG_BYTES:
        return (), f"autoconfig {url}: the file is larger than {MAX_AUTOCONFIG_BYTES} bytes"
    return parse_autoconfig(body, domain)


def parse_autoconfig(body: bytes, domain: str) -> tuple[tuple[AutoconfigServer, ...], str | None]:
    """The incoming and outgoing servers of an autoconfig file, or why it cannot be read."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return (), "the autoconfig file declares a DTD or entities; not read"
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        return (), f"the autoconfig file is not XML ({exc})"
    servers: list[AutoconfigServer] = []
    for element in root.iter():
        if element.tag not in ("incomingServer", "outgoingServer"):
            continue
        kind = (element.get("type") or "").lower()
        host = (element.findtext("hostname") or "").strip().replace("%EMAILDOMAIN%", domain)
        port_text = (element.findtext("port") or "").strip()
        socket_type = (element.findtext("socketType") or "").strip().upper()
        implicit = _SOCKET_TYPES.get(socket_type)
        service = _SERVICE_OF.get((kind, implicit)) if implicit is not None else None
        if service and host and port_text.isdigit():
            servers.append(AutoconfigServer(service, host.lower(), int(port_text)))
    if not servers:
        return (), "the autoconfig file names no server with TLS (SSL or STARTTLS)"
    return tuple(dict.fromkeys(servers)), None
