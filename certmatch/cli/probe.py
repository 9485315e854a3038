"""``certmatch probe HOST[:PORT]``: what would a client configured with this name see?

It connects the way a mail client would (implicit TLS, or the protocol's STARTTLS dialogue,
chosen by port or ``--starttls``), handshakes with SNI and without, asks DNS about the name
(``--resolver``, repeatable), records each handshake in the recording format, and prints the
same diagnosis as ``certmatch check`` (``--json``: the same document), with whether the two
certificates differ and what DNS says. Exit statuses are ``check``'s.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import certmatch
from certmatch.cli import check, common
from certmatch.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Commands,
    UsageError,
    add_trust_options,
)
from certmatch.core import report
from certmatch.core.certificates import parse_chain
from certmatch.core.dns_facts import DnsFacts
from certmatch.core.dns_rules import dns_findings, dns_summary, srv_ids_of
from certmatch.core.facts import SessionFacts
from certmatch.core.identity import PresentedIdentifiers, is_ip_address
from certmatch.core.probe_plan import BOTH, STARTTLS_CHOICES, parse_target
from certmatch.core.recording import RecordingWriter
from certmatch.core.text import printable
from certmatch.core.trust import TrustStore

if TYPE_CHECKING:
    from certmatch.net.dns import DnsLookup
    from certmatch.net.endpoint import EndpointResult


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "probe",
        help="connect to a server as a mail client would and judge its certificate",
        description="Connect to HOST[:PORT] the way a mail client would (implicit TLS, or the "
        "protocol's STARTTLS dialogue), handshake with SNI and without, ask DNS about the name, "
        "and print the same diagnosis as 'check'. Exit 0 when nothing fails, 1 when a "
        "handshake fails, 2 on usage errors or a name with no address.",
    )
    parser.add_argument("target", metavar="HOST[:PORT]", help="the server, as a client names it")
    parser.add_argument(
        "--starttls",
        choices=STARTTLS_CHOICES,
        default="auto",
        help="the plaintext dialogue before TLS (default: auto, by port; 'none': implicit TLS)",
    )
    sni = parser.add_mutually_exclusive_group()
    sni.add_argument(
        "--sni",
        metavar="NAME",
        help="send NAME as SNI, one handshake (default: "
        "two handshakes, with the host as SNI and without SNI)",
    )
    sni.add_argument("--no-sni", action="store_true", help="one handshake, without SNI")
    parser.add_argument(
        "--connect",
        metavar="IP",
        help="connect to IP instead of resolving HOST (no DNS is asked unless --resolver is given)",
    )
    parser.add_argument(
        "--resolver",
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="ask this DNS resolver (repeatable; IPv6 as [::1]:53); default: the system's",
    )
    parser.add_argument("--no-dns", action="store_true", help="ask DNS nothing")
    parser.add_argument("--record", metavar="FILE", help="append the handshakes to a recording")
    parser.add_argument("--json", action="store_true", help="print check --json's document")
    parser.add_argument(
        "-v", "--explain", action="store_true", help="print why, the fix and the citations"
    )
    parser.add_argument("--fail-on", metavar="CAUSES", default=None, help="as for check")
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="bound on each handshake (default 5) and each DNS question (at most 2)",
    )
    add_trust_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # asyncio and dnspython are loaded only for this command, so check starts fast
    import asyncio

    from certmatch.net.dns import parse_resolver
    from certmatch.net.endpoint import probe_endpoint

    fail_on = check._fail_on(args.fail_on)
    try:
        target = parse_target(args.target)
        resolvers = [parse_resolver(r) for r in args.resolver]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.connect is not None and not is_ip_address(args.connect):
        raise UsageError(f"--connect {args.connect!r}: give an IP address (the name is HOST)")
    if not 0 < args.timeout <= 120:
        raise UsageError("--timeout: give a number of seconds from 0 to 120")
    store = _trust(args)
    lookup = _lookup(args, resolvers)
    sni = args.sni if args.sni else (None if args.no_sni else BOTH)
    result = asyncio.run(
        probe_endpoint(
            target,
            starttls=args.starttls,
            sni=sni,
            connect=args.connect,
            lookup=lookup,
            timeout=args.timeout,
        )
    )
    if result.error:
        print(f"certmatch: {printable(result.error)}", file=sys.stderr)
        return EXIT_USAGE
    if args.record:
        with RecordingWriter(args.record, tool_version=certmatch.__version__) as writer:
            for session in result.sessions:
                writer.write(with_dns(session, result.dns))
    if not args.json and all(s.server_error for s in result.sessions):
        errors = list(dict.fromkeys(s.server_error for s in result.sessions if s.server_error))
        print(f"certmatch: {target}: {printable(errors[0])}", file=sys.stderr)
        return EXIT_FAILED
    status = judge(result, store, json_output=args.json, explain=args.explain, fail_on=fail_on)
    if not args.json:
        for line in evidence_lines(result):
            print(line)
    return status


def _trust(args: argparse.Namespace) -> Any:
    """The trust ``check`` would use for the same options: its own loader where the CLI has
    one (``common.load_trust``, which names each root's origin), else the store."""
    load = getattr(common, "load_trust", None)
    if load is not None:
        return load(args)
    return TrustStore.load(args.ca_file, use_system=not args.no_system_store)


def _lookup(args: argparse.Namespace, resolvers: list[Any]) -> DnsLookup | None:
    if args.no_dns or (args.connect is not None and not resolvers):
        return None
    from certmatch.net.dns import DnsLookup

    return DnsLookup(resolvers or None, timeout=min(args.timeout, 2.0))


def judge(
    result: EndpointResult,
    store: Any,
    *,
    json_output: bool,
    explain: bool,
    fail_on: set[str] | None,
) -> int:
    """Judge the endpoint's sessions exactly as ``check`` judges a recording of them."""
    with tempfile.TemporaryDirectory(prefix="certmatch-probe-") as tmp:
        path = Path(tmp) / f"probe-{_file_name(str(result.target))}.jsonl"
        with RecordingWriter(path, tool_version=certmatch.__version__) as writer:
            for session in result.sessions:
                writer.write(with_dns(session, result.dns))
        return check.check(
            [path],
            store,
            json_output=json_output,
            explain=explain,
            fail_on=fail_on,
            colour=not json_output and check.stdout_wants_colour(),
        )


def evidence_lines(result: EndpointResult) -> list[str]:
    """What ``check`` does not show (yet): the two certificates compared, and DNS."""
    lines = []
    comparison = compare_certificates(result)
    if comparison:
        lines.append(f"SNI: {comparison}")
    for line in dns_summary(result.dns, result.requested_host):
        lines.append(f"DNS: {printable(line)}")
    for rule, detail in probe_dns_findings(result).items():
        lines.append(f"DNS: {rule}: {printable(detail)}")
    return lines


def compare_certificates(result: EndpointResult) -> str | None:
    """Whether the handshakes with and without SNI got the same certificate, in one sentence."""
    named, bare = result.with_sni(), result.without_sni()
    if named is None or bare is None or not named.chain or not bare.chain:
        return None
    if named.chain[0] == bare.chain[0]:
        return (
            f"with SNI {named.sni} and without SNI the server sends the same certificate "
            f"(SHA-256 {_fingerprint(named.chain[0])})"
        )
    return (
        f"the certificates differ: with SNI {named.sni} the server sends one for "
        f"{_names(named.chain)} (SHA-256 {_fingerprint(named.chain[0])}); without SNI, one for "
        f"{_names(bare.chain)} (SHA-256 {_fingerprint(bare.chain[0])})"
    )


def probe_dns_findings(result: EndpointResult) -> dict[str, str]:
    """The DNS rules that hold for the first handshake that got a certificate."""
    session = next((s for s in result.sessions if s.chain), None)
    if session is None or result.dns is None:
        return {}
    leaf = parse_chain(session.chain).leaf
    if leaf is None:
        return {}
    try:
        presented = PresentedIdentifiers.from_certificate(leaf)
    except ValueError:
        return {}
    found = dns_findings(
        result.requested_host,
        result.ip,
        result.dns,
        presented,
        protocol=result.plan.protocol,
        srv_ids=srv_ids_of(leaf),
    )
    return {str(rule): detail for rule, detail in found.items()}


class _SessionWithDns(SessionFacts):
    """A session whose recorded line also carries its DNS facts under ``"dns"`` (a reader
    that does not know the field ignores it, as the format allows)."""

    dns: DnsFacts | None = None

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.dns is not None:
            data["dns"] = self.dns.to_json()
        return data


def with_dns(session: SessionFacts, dns: DnsFacts | None) -> SessionFacts:
    if dns is None:
        return session
    copy = _SessionWithDns(
        **{f.name: getattr(session, f.name) for f in dataclasses.fields(SessionFacts)}
    )
    copy.dns = dns
    return copy


def _names(chain: Sequence[str]) -> str:
    leaf = parse_chain(chain).leaf
    if leaf is None:
        return "(an unreadable certificate)"
    try:
        ids = PresentedIdentifiers.from_certificate(leaf)
    except ValueError:
        return "(unreadable names)"
    return report.shown_names(list(ids.dns_names or ids.common_names)) or "no names"


def _fingerprint(b64: str) -> str:
    return hashlib.sha256(base64.b64decode(b64)).hexdigest()[:16]


def _file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)[:80]
