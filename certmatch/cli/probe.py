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
    recorded_ca_pems,
)
from certmatch.core import report
from certmatch.core.certificates import parse_chain
from certmatch.core.discovery import DEFAULT_SERVICES
from certmatch.core.dns_rules import DnsRule, dns_summary
from certmatch.core.identity import PresentedIdentifiers, is_ip_address
from certmatch.core.judge import Judge
from certmatch.core.probe_plan import BOTH, STARTTLS_CHOICES, Target, parse_target
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
    parser.add_argument(
        "target", nargs="?", metavar="HOST[:PORT]", help="the server, as a client names it"
    )
    parser.add_argument(
        "--mail-domain",
        metavar="DOMAIN",
        help="find the domain's servers (SRV, MX, the usual names, --autoconfig) and print which "
        "name to configure for each service, and what every other candidate gets",
    )
    parser.add_argument(
        "--services",
        default=",".join(DEFAULT_SERVICES),
        metavar="LIST",
        help="with --mail-domain: the services to try (default: %(default)s; also ldaps, ldap, "
        "nntps, nntp, or all)",
    )
    parser.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="SERVICE=PORT",
        help="with --mail-domain: try SERVICE on PORT instead of its standard port (repeatable)",
    )
    parser.add_argument(
        "--autoconfig",
        metavar="URL",
        help="with --mail-domain: also read a Thunderbird autoconfig file (http://...)",
    )
    parser.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="probe every HOST[:PORT] listed in FILE (one a line, # comments), concurrently",
    )
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
    add_trust_options(parser, recorded=False)  # a probe reads no recording
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # asyncio and dnspython are loaded only for this command, so check starts fast
    import asyncio

    from certmatch.net.dns import parse_resolver
    from certmatch.net.endpoint import probe_endpoint

    fail_on = check._fail_on(args.fail_on)
    given = [args.target is not None, args.mail_domain is not None, args.file is not None]
    if sum(given) != 1:
        raise UsageError("give one of HOST[:PORT], --mail-domain DOMAIN or -f FILE")
    try:
        resolvers = [parse_resolver(r) for r in args.resolver]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.connect is not None and not is_ip_address(args.connect):
        raise UsageError(f"--connect {args.connect!r}: give an IP address (the name is HOST)")
    if not 0 < args.timeout <= 120:
        raise UsageError("--timeout: give a number of seconds above 0, at most 120")
    store = common.load_trust(args)  # check's own trust, so anchors are named alike
    lookup = _lookup(args, resolvers)
    if args.mail_domain is not None:
        from certmatch.cli.probe_domain import run_domain

        return run_domain(args, lookup)
    if args.file is not None:
        return _run_file(args, lookup, store, fail_on)
    try:
        target = parse_target(args.target)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
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
        with RecordingWriter(
            args.record,
            tool_version=certmatch.__version__,
            ca_certificates=recorded_ca_pems(args.ca_file),
        ) as writer:
            for session in result.sessions:
                writer.write(dataclasses.replace(session, dns=result.dns))
    if not args.json and all(s.server_error for s in result.sessions):
        errors = list(dict.fromkeys(s.server_error for s in result.sessions if s.server_error))
        print(f"certmatch: {target}: {printable(errors[0])}", file=sys.stderr)
        return EXIT_FAILED
    status = judge(result, store, json_output=args.json, explain=args.explain, fail_on=fail_on)
    if not args.json:
        for line in evidence_lines(result, None if args.explain else store.store_for(())[0]):
            print(line)
    return status


def _run_file(
    args: argparse.Namespace, lookup: DnsLookup | None, store: Any, fail_on: set[str] | None
) -> int:
    """Probe every target in ``args.file`` at once (64 at a time) and judge them together."""
    import asyncio

    targets = read_targets(args.file)
    sni = args.sni if args.sni else (None if args.no_sni else BOTH)
    results = asyncio.run(
        probe_many(
            targets,
            lookup,
            starttls=args.starttls,
            sni=sni,
            connect=args.connect,
            timeout=args.timeout,
            progress=sys.stderr.isatty() and not args.json,
        )
    )
    errors = [r for r in results if r.error]
    for result in errors:
        print(f"certmatch: {result.target}: {printable(result.error or '')}", file=sys.stderr)
    probed = [r for r in results if not r.error]
    if args.record:
        with RecordingWriter(
            args.record,
            tool_version=certmatch.__version__,
            ca_certificates=recorded_ca_pems(args.ca_file),
        ) as writer:
            for result in probed:
                for session in result.sessions:
                    writer.write(dataclasses.replace(session, dns=result.dns))
    status = judge_all(probed, store, json_output=args.json, explain=args.explain, fail_on=fail_on)
    return EXIT_USAGE if errors else status


def read_targets(path: str) -> list[Target]:
    """The targets listed in ``path``, one ``HOST[:PORT]`` a line; blank lines and ``#``
    comments skipped. A bad line is a usage error naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"-f {path}: cannot read it ({exc.strerror or exc})") from None
    targets = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            targets.append(parse_target(entry))
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
    if not targets:
        raise UsageError(f"-f {path}: no targets in it (one HOST[:PORT] a line)")
    return targets


async def probe_many(
    targets: Sequence[Target],
    lookup: DnsLookup | None,
    *,
    concurrency: int = 64,
    progress: bool = False,
    **options: Any,
) -> list[EndpointResult]:
    """:func:`probe_endpoint` for every target, ``concurrency`` at a time, in the given order;
    a Rich progress bar on stderr when ``progress``."""
    import asyncio

    from certmatch.net.endpoint import probe_endpoint

    gate = asyncio.Semaphore(concurrency)
    bar = _Progress(len(targets)) if progress else None

    async def one(target: Target) -> EndpointResult:
        async with gate:
            result = await probe_endpoint(target, lookup=lookup, **options)
        if bar is not None:
            bar.advance(str(target))
        return result

    try:
        return list(await asyncio.gather(*(one(t) for t in targets)))
    finally:
        if bar is not None:
            bar.stop()


class _Progress:
    """A Rich progress bar on stderr (only on a terminal)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("probing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("", total=total)
        self.progress.start()

    def advance(self, description: str) -> None:
        self.progress.update(self.task, advance=1, description=description)

    def stop(self) -> None:
        self.progress.stop()


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
    return judge_all([result], store, json_output=json_output, explain=explain, fail_on=fail_on)


def judge_all(
    results: Sequence[EndpointResult],
    store: Any,
    *,
    json_output: bool,
    explain: bool,
    fail_on: set[str] | None,
) -> int:
    """Judge every result's sessions with ``check``, from one recording of them."""
    name = _file_name(str(results[0].target)) if len(results) == 1 else "targets"
    with tempfile.TemporaryDirectory(prefix="certmatch-probe-") as tmp:
        path = Path(tmp) / f"probe-{name}.jsonl"
        with RecordingWriter(path, tool_version=certmatch.__version__) as writer:
            for result in results:
                for session in result.sessions:
                    writer.write(dataclasses.replace(session, dns=result.dns))
        return check.check(
            [path],
            store,
            json_output=json_output,
            explain=explain,
            fail_on=fail_on,
            colour=not json_output and check.stdout_wants_colour(),
        )


def evidence_lines(result: EndpointResult, store: TrustStore | None = None) -> list[str]:
    """What ``check``'s lines do not show: the two certificates compared, what DNS said,
    and, judged against ``store``, each DNS cause no session line names as its primary
    cause, once, with its detail (None: none, as ``--explain`` has explained them all)."""
    lines = []
    comparison = compare_certificates(result)
    if comparison:
        lines.append(f"SNI: {comparison}")
    for line in dns_summary(result.dns, result.requested_host):
        lines.append(f"DNS: {printable(line)}")
    if store is not None:
        for cause, detail in unshown_dns_causes(result, store).items():
            lines.append(f"DNS: {cause}: {printable(detail)}")
    return lines


def unshown_dns_causes(result: EndpointResult, store: TrustStore) -> dict[str, str]:
    """The DNS causes of the result's sessions (judged with its DNS facts, as ``check``
    judges them) that are no session's primary cause: cause id -> its detail."""
    if result.dns is None:
        return {}
    judge = Judge(store)
    primaries: set[str] = set()
    details: dict[str, str] = {}
    for session in result.sessions:
        decision = judge.decision(dataclasses.replace(session, dns=result.dns))
        primaries.update(decision.cause_ids[:1])
        for cause, (detail, _pattern) in decision.found.items():
            if cause in _DNS_CAUSES:
                details.setdefault(cause, detail)
    return {cause: detail for cause, detail in details.items() if cause not in primaries}


_DNS_CAUSES = frozenset(str(rule) for rule in DnsRule)


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
