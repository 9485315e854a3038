"""A real DNS server on loopback for tests and the demo: dnsmasq, from a zone given in Python.

:class:`Zone` lists the records (addresses, CNAMEs, MX, SRV, PTR); :func:`start_dnsmasq`
runs ``dnsmasq --no-daemon`` on 127.0.0.1 and a free port with nothing but those records
(``--conf-file=/dev/null --no-resolv --no-hosts``), authoritative for the zone's domains
(``--local``), so every other name under them is NXDOMAIN and nothing is forwarded. Two
servers with different zones are two resolvers answering differently: split horizon.

dnsmasq comes from Debian's ``dnsmasq-base`` package (``/usr/sbin/dnsmasq``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from certmatch.core.dns_facts import reverse_name
from certmatch.core.identity import registrable_domain

DNSMASQ = "/usr/sbin/dnsmasq"
START_TIMEOUT_S = 10.0


class DnsServerError(RuntimeError):
    """dnsmasq is missing or did not start; the message says which, and what to do."""


@dataclass
class Zone:
    """The records one DNS server answers with.

    ``hosts``: name → addresses (A and AAAA; dnsmasq also answers their PTR).
    ``cnames``: alias → target (dnsmasq answers a CNAME only for a target it knows).
    ``mx``: (domain, exchange, preference). ``srv``: (owner such as
    ``_imaps._tcp.example.test``, target, port, priority, weight); a target of ``""`` is
    the "." of RFC 2782 (not available). ``ptr``: address → name, overriding the
    automatic PTR of ``hosts``. ``ttl``: the TTL of every answer.
    """

    hosts: dict[str, list[str]] = field(default_factory=dict)
    cnames: dict[str, str] = field(default_factory=dict)
    mx: list[tuple[str, str, int]] = field(default_factory=list)
    srv: list[tuple[str, str, int, int, int]] = field(default_factory=list)
    ptr: dict[str, str] = field(default_factory=dict)
    ttl: int = 60
    local_domains: list[str] = field(default_factory=list)  # default: the names' domains

    def arguments(self) -> list[str]:
        """dnsmasq's options for these records."""
        args = [f"--local-ttl={self.ttl}"]
        for name, addresses in self.hosts.items():
            args.append(f"--host-record={name},{','.join(addresses)},{self.ttl}")
        for alias, target in self.cnames.items():
            args.append(f"--cname={alias},{target},{self.ttl}")
        for domain, exchange, preference in self.mx:
            args.append(f"--mx-host={domain},{exchange},{preference}")
        for owner, target, port, priority, weight in self.srv:
            if target:
                args.append(f"--srv-host={owner},{target},{port},{priority},{weight}")
            else:
                args.append(f"--srv-host={owner}")  # dnsmasq answers "." for a bare owner
        for address, name in self.ptr.items():
            args.append(f"--ptr-record={reverse_name(address)},{name}")
        for domain in self.domains():
            args.append(f"--local=/{domain}/")
        return args

    def domains(self) -> list[str]:
        if self.local_domains:
            return list(self.local_domains)
        names = [*self.hosts, *self.cnames, *(m[0] for m in self.mx)]
        names += [s[0].split(".", 2)[-1] for s in self.srv]
        found: list[str] = []
        for name in names:
            domain = registrable_domain(name)
            if domain and domain not in found:
                found.append(domain)
        return found


class DnsServer:
    """A running dnsmasq; :meth:`stop` ends it (:func:`dnsmasq` does, on leaving its block)."""

    def __init__(self, zone: Zone, port: int, process: subprocess.Popen[bytes], log: Path):
        self.zone = zone
        self.host = "127.0.0.1"
        self.port = port
        self.process = process
        self.log_path = log

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as ``--resolver`` takes it."""
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_dnsmasq(zone: Zone, log_dir: Path, *, attempts: int = 3) -> DnsServer:
    """Start dnsmasq on 127.0.0.1 and a free port serving ``zone``; wait until it answers.

    Raises DnsServerError when dnsmasq is not installed or does not start.
    """
    binary = shutil.which("dnsmasq") or (DNSMASQ if Path(DNSMASQ).exists() else None)
    if binary is None:
        raise DnsServerError(
            "dnsmasq is not installed; install Debian's dnsmasq-base package "
            "(sudo apt-get install dnsmasq-base)"
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    last = ""
    for _ in range(attempts):  # another process may take the free port first
        port = _free_port()
        log = log_dir / f"dnsmasq-{port}.log"
        command = [
            binary,
            "--no-daemon",
            "--conf-file=/dev/null",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--log-queries",
            "--user=root",
            "--pid-file=",
            *zone.arguments(),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        server = DnsServer(zone, port, process, log)
        if _answers(server):
            return server
        server.stop()
        last = log.read_text(errors="replace")[-2000:]
    raise DnsServerError(f"dnsmasq did not start on 127.0.0.1; its log ends:\n{last}")


@contextlib.contextmanager
def dnsmasq(zone: Zone, log_dir: Path) -> Iterator[DnsServer]:
    """``with dnsmasq(zone, dir) as server:`` a running server, stopped on exit."""
    server = start_dnsmasq(zone, log_dir)
    try:
        yield server
    finally:
        server.stop()


def _answers(server: DnsServer) -> bool:
    """Wait until ``server`` answers a question (any answer), or it exits, or time runs out."""
    query = dns.message.make_query("certmatch-ready.invalid", "A")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            response = dns.query.udp(query, server.host, port=server.port, timeout=0.2)
        except (dns.exception.Timeout, OSError):
            continue
        return response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED)
    return False


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise DnsServerError("no free port on 127.0.0.1 for dnsmasq")
