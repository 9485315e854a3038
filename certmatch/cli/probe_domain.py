"""``certmatch probe --mail-domain DOMAIN``: one table of which name to configure per service.

For each service (IMAP, POP3, submission, SMTP; LDAP and NNTP when asked) it tries every
candidate name (SRV targets, the autoconfig file's servers, MX hosts, the usual names, the
domain itself) the way a client configured with that name would, judges each handshake as
``check`` judges it with the DNS facts about the name (so a CNAME alias or an SRV target
the certificate does not name is one of its causes, in the causes' order), and names the
server to configure. Exit 0 when every service
that answered on some name has a name that works, 1 otherwise, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING, Any

import certmatch
from certmatch.cli.common import EXIT_FAILED, EXIT_OK, UsageError, load_trust, recorded_ca_pems
from certmatch.core import report
from certmatch.core.discovery import SERVICES, Candidate, parse_services, recommend
from certmatch.core.dns_rules import DnsRule, dns_summary
from certmatch.core.judge import Judge
from certmatch.core.recording import RecordingWriter
from certmatch.core.text import printable

if TYPE_CHECKING:
    from certmatch.net.discovery import Attempt, Discovery
    from certmatch.net.dns import DnsLookup


def run_domain(args: argparse.Namespace, lookup: DnsLookup | None) -> int:
    import asyncio

    from certmatch.net.discovery import discover

    try:
        services = parse_services(args.services)
        ports = _ports(args.port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    domain = args.mail_domain.strip().rstrip(".").lower()
    if not domain or "." not in domain or any(c.isspace() or c in "/@:" for c in domain):
        raise UsageError(f"--mail-domain {args.mail_domain!r}: give a domain such as example.com")
    found = asyncio.run(
        discover(
            domain,
            lookup=lookup,
            services=services,
            ports=ports,
            autoconfig_url=args.autoconfig,
            timeout=args.timeout,
        )
    )
    if args.record:
        with RecordingWriter(
            args.record,
            tool_version=certmatch.__version__,
            ca_certificates=recorded_ca_pems(args.ca_file),
        ) as writer:
            for attempt in found.attempts:
                if attempt.session is not None:
                    writer.write(dataclasses.replace(attempt.session, dns=attempt.dns))
    store, _ = load_trust(args).store_for(())  # check's trust: system store and --ca-file
    judge = Judge(store)  # one judge: a situation seen again is decided once
    rows = [_Row.of(a, judge) for a in found.attempts]
    best = recommend([(r.attempt.candidate, r.worked) for r in rows])
    if args.json:
        print(json.dumps(_document(found, rows, best), indent=2, ensure_ascii=True))
    else:
        for line in table(found, rows, best):
            print(line)
    answered = {r.attempt.candidate.service for r in rows if r.reached}
    return EXIT_FAILED if any(best.get(s) is None for s in answered) else EXIT_OK


class _Row:
    """A candidate's outcome: verdict, causes (DNS's among them), whether it works."""

    def __init__(
        self,
        attempt: Attempt,
        verdict: str,
        causes: tuple[str, ...],
        failed: bool,
        notes: dict[str, str],
    ) -> None:
        self.attempt = attempt
        self.verdict = verdict
        self.causes = causes
        self.failed = failed
        self.notes = notes  # the DNS causes' details, for --json

    @property
    def reached(self) -> bool:
        return self.attempt.session is not None and bool(self.attempt.session.chain)

    @property
    def worked(self) -> bool:
        return self.reached and not self.failed

    @classmethod
    def of(cls, attempt: Attempt, judge: Judge) -> _Row:
        """The candidate judged as ``check`` judges its recorded session: with the DNS facts
        about its name, so DNS causes take their place among the others."""
        session = attempt.session
        if session is None:
            return cls(attempt, "error", (), True, {})
        facts = dataclasses.replace(session, dns=attempt.dns)
        judgement = judge.judgement(facts)
        notes = {}
        if attempt.dns is not None and any(c in _DNS_CAUSES for c in judgement.causes):
            found = judge.decision(facts).found
            notes = {c: detail for c, (detail, _) in found.items() if c in _DNS_CAUSES}
        return cls(attempt, judgement.verdict, judgement.causes, judgement.failed, notes)


_DNS_CAUSES = frozenset(str(rule) for rule in DnsRule)


def table(found: Discovery, rows: list[_Row], best: dict[str, Candidate | None]) -> list[str]:
    """The report: the domain's DNS, then per service the name to configure and every row."""
    lines = [f"Mail domain {found.domain}"]
    for line in dns_summary(found.dns)[len(found.dns.resolvers) if found.dns else 0 :]:
        lines.append(f"  DNS: {printable(line)}")
    if found.dns is None:
        lines.append("  DNS: not asked (--no-dns, or --connect without --resolver)")
    if found.autoconfig_error:
        lines.append(f"  autoconfig: {printable(found.autoconfig_error)}")
    for server in found.autoconfig:
        lines.append(f"  autoconfig: {server.service} → {server.name}:{server.port}")
    width = max((len(_where(r.attempt.candidate)) for r in rows), default=20)
    for service in dict.fromkeys(r.attempt.candidate.service for r in rows):
        choice = best.get(service)
        spec = SERVICES[service]
        kind = f"STARTTLS {spec.starttls}" if spec.starttls else "implicit TLS"
        if choice is not None:
            head = f"configure {choice.name}, port {choice.port} ({choice.evidence})"
        elif any(r.reached for r in rows if r.attempt.candidate.service == service):
            head = "no candidate name works: every certificate fails for the name asked"
        else:
            head = "no server answered on any candidate name"
        lines.append("")
        lines.append(f"{service} ({kind}): {printable(head)}")
        for row in rows:
            if row.attempt.candidate.service != service:
                continue
            lines.append("  " + _row_text(row, width))
    return lines


def _row_text(row: _Row, width: int) -> str:
    candidate = row.attempt.candidate
    label = report.verdict_label(row.verdict) if row.reached else "? no TLS"
    where = _where(candidate).ljust(width)
    if row.attempt.error:
        outcome = row.attempt.error
    elif row.attempt.session is not None and row.attempt.session.server_error:
        outcome = row.attempt.session.server_error
    else:
        outcome = ", ".join(row.causes) if row.causes else "works"
    return printable(f"{label:<16} {where}  {candidate.evidence:<44} {outcome}")


def _where(candidate: Candidate) -> str:
    return f"{candidate.name}:{candidate.port}"


def _document(
    found: Discovery, rows: list[_Row], best: dict[str, Candidate | None]
) -> dict[str, Any]:
    services = []
    for service in dict.fromkeys(r.attempt.candidate.service for r in rows):
        choice = best.get(service)
        services.append(
            {
                "service": service,
                "protocol": SERVICES[service].protocol,
                "configure": None
                if choice is None
                else {"name": choice.name, "port": choice.port, "evidence": choice.evidence},
                "candidates": [
                    {
                        "name": r.attempt.candidate.name,
                        "port": r.attempt.candidate.port,
                        "source": r.attempt.candidate.source,
                        "evidence": r.attempt.candidate.evidence,
                        "address": r.attempt.ip,
                        "verdict": r.verdict,
                        "causes": list(r.causes),
                        "works": r.worked,
                        "error": r.attempt.error
                        or (r.attempt.session.server_error if r.attempt.session else None),
                        "dns": r.notes,
                    }
                    for r in rows
                    if r.attempt.candidate.service == service
                ],
            }
        )
    return {
        "mail_domain": found.domain,
        "dns": found.dns.to_json() if found.dns else None,
        "autoconfig": [vars(s) for s in found.autoconfig],
        "services": services,
    }


def _ports(specs: list[str]) -> dict[str, int]:
    ports = {}
    for spec in specs:
        name, _, port = spec.partition("=")
        name = name.strip().lower()
        if name not in SERVICES or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"--port {spec!r}: write SERVICE=PORT with a service of {', '.join(SERVICES)}"
            )
        ports[name] = int(port)
    return ports
