"""DNS facts for the proxy's sessions: asked in the background, never in the way of the mail.

The capture addon starts a :class:`DnsJob` as soon as a session's requested host is known
(the client's SNI, or the configured host) and attaches its :class:`DnsFacts` to the
session just before the record is written. The mail session never waits for it: only
the record does, and for at most :attr:`SessionDns.wait` seconds from the job's start
(each question is bounded by :class:`~certmatch.net.dns.DnsLookup`'s own timeout, so a
look-up normally ends well within that). A question that timed out is recorded as an
answer with ``error: "timeout"``; a job that did not end in time leaves the session
without DNS facts and with a note saying so.

Sessions asking about the same host and server address share one look-up while it runs
and its result while its answers' TTLs last, so a burst of handshakes to one server asks
DNS once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from certmatch.core.dns_facts import NO_DATA, NXDOMAIN, DnsAnswer, DnsFacts, reverse_name
from certmatch.core.identity import is_ip_address
from certmatch.net.dns import DEFAULT_TIMEOUT, NEGATIVE_TTL, DnsLookup, Resolver, parse_resolver

WAIT_MARGIN_S = 1.0  # beyond one question's timeout, for the record to wait on a look-up
RESULTS_KEPT = 1024  # whole look-ups kept for their TTL


def parse_resolvers(values: Sequence[str]) -> list[Resolver]:
    """The ``certmatch_resolver`` option's values; ValueError names the bad one."""
    return [parse_resolver(value) for value in values]


def wants_dns(host: str | None, *, resolvers_given: bool, reverse_to_address: bool) -> bool:
    """Whether to ask DNS about ``host`` for a session.

    Never for no host or an IP address. A reverse proxy whose target is an IP address
    reached that address by its configuration, not by resolving the name (as ``certmatch
    probe --connect IP``): DNS is asked then only when resolvers were given.
    """
    if not host or not (resolvers_given or not reverse_to_address):
        return False
    return not is_ip_address(host)  # after the cheap tests: parsing a name as an IP is not


class DnsJob:
    """One session's look-up: the host's (shared) gather, plus PTR questions for a server
    address learnt after it started."""

    def __init__(
        self, owner: SessionDns, host: str, server_ip: str | None, task: asyncio.Future[DnsFacts]
    ) -> None:
        self.owner = owner
        self.host = host
        self.server_ip = server_ip
        self.task = task
        self.deadline = asyncio.get_running_loop().time() + owner.wait
        self.ptr: list[asyncio.Task[list[DnsAnswer]]] = []

    def learn_server_ip(self, server_ip: str | None) -> None:
        """Ask for the PTR of the server's address, once it is known."""
        if self.server_ip is not None or not server_ip or not is_ip_address(server_ip):
            return
        self.server_ip = server_ip
        lookup = self.owner.lookup
        self.ptr = [
            asyncio.ensure_future(lookup.query(reverse_name(server_ip), "PTR", resolver))
            for resolver in lookup.resolvers
        ]

    def done(self) -> bool:
        return self.task.done() and all(task.done() for task in self.ptr)

    async def wait(self) -> None:
        """Until the look-up ends or its time is up (never raises)."""
        remaining = self.deadline - asyncio.get_running_loop().time()
        jobs: list[asyncio.Future[Any]] = [self.task, *self.ptr]
        pending = [job for job in jobs if not job.done()]
        if pending and remaining > 0:
            await asyncio.wait(pending, timeout=remaining)

    def result(self) -> tuple[DnsFacts | None, str | None]:
        """The DNS facts gathered so far, and a note when they are missing or incomplete."""
        if not self.task.done():
            return None, (
                f"DNS: the look-up of {self.host} had not ended {self.owner.wait:g} s after it "
                "began; the session is recorded without DNS facts"
            )
        if self.task.cancelled() or self.task.exception() is not None:
            exc = None if self.task.cancelled() else self.task.exception()
            why = f"{type(exc).__name__}: {exc}" if exc is not None else "cancelled"
            return None, f"DNS: the look-up of {self.host} failed ({why})"
        facts = self.task.result()
        note = None
        if self.ptr:
            answers = list(facts.answers)
            for task in self.ptr:
                if task.done() and not task.cancelled() and task.exception() is None:
                    answers += [a for a in task.result() if a not in answers]
                else:
                    note = f"DNS: the PTR of {self.server_ip} had no answer in time"
            facts = dataclasses.replace(facts, server_ip=self.server_ip, answers=answers)
        return facts, note


class SessionDns:
    """One per capture addon: its resolvers, its question cache and its shared look-ups."""

    def __init__(self, resolvers: Sequence[Resolver] = (), *, timeout: float = DEFAULT_TIMEOUT):
        self.lookup = DnsLookup(list(resolvers) or None, timeout=timeout)
        self.resolvers_given = bool(resolvers)
        self.wait = timeout + WAIT_MARGIN_S
        self._running: dict[tuple[str, str | None], asyncio.Future[DnsFacts]] = {}
        self._kept: OrderedDict[tuple[str, str | None], tuple[float, DnsFacts]] = OrderedDict()

    def start(self, host: str, server_ip: str | None) -> DnsJob | None:
        """A job for ``host`` (and ``server_ip``'s PTR), shared with any other session asking
        the same; None when there is no resolver to ask."""
        if not self.lookup.resolvers:
            return None
        name = host.rstrip(".").lower()
        ip = server_ip if server_ip and is_ip_address(server_ip) else None
        key = (name, ip)
        loop = asyncio.get_running_loop()
        kept = self._kept.get(key)
        if kept is not None and kept[0] > time.monotonic():
            future: asyncio.Future[DnsFacts] = loop.create_future()
            future.set_result(kept[1])
            return DnsJob(self, host, ip, future)
        running = self._running.get(key)
        if running is None:
            running = loop.create_task(self.lookup.gather(host, server_ip=ip))
            self._running[key] = running
            running.add_done_callback(lambda task: self._finished(key, task))
        return DnsJob(self, host, ip, running)

    def _finished(self, key: tuple[str, str | None], task: asyncio.Future[DnsFacts]) -> None:
        self._running.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        facts = task.result()
        ttl = _keep_for(facts.answers)
        if ttl > 0:
            self._kept[key] = (time.monotonic() + ttl, facts)
            self._kept.move_to_end(key)
            while len(self._kept) > RESULTS_KEPT:
                self._kept.popitem(last=False)


def _keep_for(answers: Sequence[DnsAnswer]) -> float:
    """How long a whole look-up stays true: its shortest TTL; never, with an answer that
    failed (a timeout or a refusal is asked again next time)."""
    ttls = []
    for answer in answers:
        if answer.ttl is not None:
            ttls.append(answer.ttl)
        elif answer.error in (NXDOMAIN, NO_DATA):
            ttls.append(NEGATIVE_TTL)
        else:
            return 0
    return min(ttls, default=0)
