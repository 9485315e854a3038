"""The ``certmatch`` command line.

This is the one module of the package that wires things together; it
imports mitmproxy (for ``proxy``) and the TUI only inside the commands
that need them, so ``check`` starts fast and the domain stays free of both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import certmatch
from certmatch.core import causes as catalogue
from certmatch.core.diagnosis import Diagnosis, diagnose
from certmatch.core.recording import LineProblem, RecordingError, expand_paths, iter_recording
from certmatch.core.trust import TrustStore, TrustStoreError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_SYMBOLS = {"match": "✓", "legacy-match": "~", "mismatch": "✗", "untrusted": "!", "error": "?"}
_COLOURS = {"match": "32", "legacy-match": "33", "mismatch": "31", "untrusted": "35", "error": "31"}


class UsageError(Exception):
    """A problem with what the user typed or gave us; printed as one line, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except (UsageError, RecordingError, TrustStoreError) as exc:
        print(f"certmatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certmatch",
        description=(
            "Record the TLS handshakes between a mail client and its server, and explain why the "
            "server's certificate does not match the name the client asked for."
        ),
    )
    parser.add_argument("--version", action="version", version=f"certmatch {certmatch.__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="judge the sessions in recordings",
        description="Print one line per recorded session (requested host, presented names, "
        "verdict, primary cause) and a summary. Exit 0 when nothing fails, 1 when sessions fail, "
        "2 on usage or input errors.",
    )
    check.add_argument(
        "paths", nargs="+", metavar="FILE", help="recording files or directories of *.jsonl"
    )
    check.add_argument("--json", action="store_true", help="print one JSON document for scripts")
    check.add_argument(
        "--fail-on",
        metavar="CAUSES",
        default=None,
        help="comma-separated cause ids that make the exit status 1, or 'any' for any cause at "
        "all (warnings included); default: any failing session",
    )
    check.add_argument(
        "-v",
        "--explain",
        action="store_true",
        help="print the explanation, fix and citations under each failing session",
    )
    _add_trust_options(check)
    check.set_defaults(run=run_check)

    proxy = commands.add_parser(
        "proxy",
        help="run mitmproxy with the certmatch addon and record every TLS session",
        description="Run mitmproxy (mitmdump) with the certmatch capture addon. The client talks to "
        "the proxy; the proxy talks to the server exactly as the client asked (same SNI, or none) "
        "and records what the server presented.",
    )
    proxy.add_argument(
        "--mode",
        required=True,
        action="append",
        help="mitmproxy mode spec, e.g. reverse:tls://mail.example.com:993, socks5, regular "
        "(repeat for several listeners)",
    )
    proxy.add_argument(
        "--record", required=True, metavar="FILE", help="recording file to append to"
    )
    proxy.add_argument(
        "--listen-host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, loopback only)",
    )
    proxy.add_argument(
        "--listen-port", type=int, default=None, help="port to bind (default: mitmproxy's, 8080)"
    )
    proxy.add_argument(
        "--on-mismatch",
        choices=("pass", "block"),
        default="pass",
        help="'pass' (default) lets a failing session continue so you can watch it; 'block' closes it",
    )
    proxy.add_argument(
        "--host",
        default="",
        metavar="NAME",
        help="the server name the client is configured with, when it sends no SNI",
    )
    proxy.add_argument(
        "--confdir", default=None, help="mitmproxy configuration directory (its CA lives there)"
    )
    proxy.add_argument(
        "--no-sni-probe", action="store_true", help="never ask the server again with SNI"
    )
    proxy.add_argument(
        "--tui",
        action="store_true",
        help="show the sessions live in the terminal UI (the proxy's own log goes to FILE.proxy.log)",
    )
    proxy.add_argument(
        "--ca-file",
        action="append",
        default=[],
        metavar="PEM",
        help="extra CA certificates to trust (repeatable)",
    )
    proxy.add_argument(
        "mitmproxy_args",
        nargs=argparse.REMAINDER,
        help="after --, further options passed to mitmdump",
    )
    proxy.set_defaults(run=run_proxy)

    view = commands.add_parser(
        "view",
        help="browse recordings in the terminal UI",
        description="Open the TUI on recordings: failing sessions first (a: all), each with its "
        "cause, evidence, chain, fix and citations.",
    )
    view.add_argument(
        "paths", nargs="+", metavar="FILE", help="recording files or directories of *.jsonl"
    )
    view.add_argument(
        "--follow", action="store_true", help="keep reading sessions as they are appended"
    )
    view.add_argument(
        "--all",
        dest="show_all",
        action="store_true",
        help="show every session, not only failing ones",
    )
    _add_trust_options(view)
    view.set_defaults(run=run_view)

    demo = commands.add_parser(
        "demo",
        help="watch certmatch diagnose embedded mail servers with typical certificate mistakes",
        description="Start small IMAP, POP3, SMTP and LDAP servers on loopback (implicit TLS, and "
        "STARTTLS), each but one with a certificate mistake from the cause catalogue, behind the "
        "certmatch proxy; drive Python's own mail clients through it; then open the TUI on the "
        "recording (or print the check report with --no-tui). Nothing is left running afterwards.",
    )
    demo.add_argument(
        "--no-tui", action="store_true", help="print the check report instead of opening the TUI"
    )
    demo.add_argument(
        "--record",
        metavar="FILE",
        default=None,
        help="write the recording to FILE (must not exist yet)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's working directory (demo CA, certificates, recording)",
    )
    demo.set_defaults(run=run_demo_command)

    replay = commands.add_parser(
        "replay",
        help="serve the recorded servers offline, for a client under test",
        description="For each recorded server, listen on loopback and present certificate chains of "
        "the same shape (names, dates, chain length and order, self-signedness), re-signed by a "
        "local replay CA, speaking the recorded protocol through the handshake (STARTTLS "
        "included). The client's SNI selects the certificate, as on the original. Prints the "
        "endpoints and the CA file to trust; Ctrl-C stops.",
    )
    replay.add_argument(
        "paths", nargs="+", metavar="FILE", help="recording files or directories of *.jsonl"
    )
    replay.add_argument(
        "--json", action="store_true", help="print the endpoints as one JSON document"
    )
    replay.add_argument(
        "--listen-host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, loopback only)",
    )
    _add_trust_options(replay)  # which issuers the original chains were trusted by, as for check
    replay.set_defaults(run=run_replay_command)
    return parser


def _add_trust_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca-file",
        action="append",
        default=[],
        metavar="PEM",
        help="extra CA certificates to trust when judging chains (repeatable)",
    )
    parser.add_argument(
        "--no-system-store", action="store_true", help="trust only the --ca-file certificates"
    )


def _fail_on(spec: str | None) -> set[str] | None:
    if spec is None:
        return None
    if spec.strip() == "any":
        return {"any"}
    ids = {part.strip() for part in spec.split(",") if part.strip()}
    unknown = sorted(ids - set(catalogue.CAUSES))
    if unknown:
        raise UsageError(
            f"--fail-on: unknown cause id(s) {', '.join(unknown)}. "
            f"Known ids: {', '.join(catalogue.CAUSES)}."
        )
    return ids


def _is_failure(d: Diagnosis, fail_on: set[str] | None) -> bool:
    if fail_on is None:
        return d.failed
    if "any" in fail_on:
        return d.failed or bool(d.findings)
    return bool(fail_on.intersection(d.cause_ids))


def run_check(args: argparse.Namespace) -> int:
    fail_on = _fail_on(args.fail_on)
    store = TrustStore.load(args.ca_file, use_system=not args.no_system_store)
    paths = expand_paths(args.paths)
    if not paths:
        raise UsageError(f"no recordings (*.jsonl) found in {', '.join(args.paths)}")
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ and not args.json

    verdicts: Counter[str] = Counter()
    primaries: Counter[str] = Counter()
    failures = 0
    input_errors = 0
    json_sessions: list[dict] = []
    json_problems: list[str] = []
    for path in paths:
        for item in iter_recording(path):
            if isinstance(item, LineProblem):
                partial = item.truncated  # a killed proxy's last line: expected, not an error
                if not partial:
                    input_errors += 1
                json_problems.append(str(item))
                label = "warning" if partial else "error"
                print(f"certmatch: {label}: {item}", file=sys.stderr)
                continue
            d = diagnose(item, store)
            verdicts[d.verdict] += 1
            if d.primary:
                primaries[d.primary.id] += 1
            failed = _is_failure(d, fail_on)
            failures += failed
            if args.json:
                entry = d.to_json()
                entry["recording"] = str(path)
                json_sessions.append(entry)
            else:
                print(_session_line(d, colour))
                if args.explain and (failed or d.findings):
                    print(_explain(d))

    total = sum(verdicts.values())
    if args.json:
        json.dump(
            {
                "sessions": json_sessions,
                "summary": {
                    "sessions": total,
                    "failed": failures,
                    "verdicts": dict(verdicts),
                    "primary_causes": dict(primaries),
                },
                "problems": json_problems,
            },
            sys.stdout,
            indent=2,
            ensure_ascii=False,
        )
        print()
    else:
        print(_summary(total, failures, verdicts, primaries))
    if input_errors:
        return EXIT_USAGE
    return EXIT_FAILED if failures else EXIT_OK


def _session_line(d: Diagnosis, colour: bool) -> str:
    f = d.facts
    when = f.started[:19].replace("T", " ")
    sni = f.sni if f.sni is not None else "-"
    names = ", ".join(d.presented_names) or "(no certificate)"
    if len(names) > 48:
        names = names[:45] + "..."
    verdict = f"{_SYMBOLS[d.verdict]} {d.verdict}"
    if colour:
        verdict = f"\033[{_COLOURS[d.verdict]}m{verdict}\033[0m"
    cause = d.primary.id if d.primary else ""
    host = f"{f.requested_host or '?'} ({f.requested_host_source})"
    return f"{when}  {f.protocol:<10} {host:<40} sni={sni:<24} -> {names:<48} {verdict:<14} {cause}"


def _explain(d: Diagnosis) -> str:
    lines = []
    for finding in d.findings:
        lines.append(f"    [{finding.id}] {finding.cause.title}")
        lines.append(f"      why: {finding.explanation}")
        lines.append(f"      fix: {finding.fix}")
        if finding.cause.citations:
            lines.append("      see: " + "; ".join(str(c) for c in finding.cause.citations))
    return "\n".join(lines)


def _summary(total: int, failures: int, verdicts: Counter[str], primaries: Counter[str]) -> str:
    if total == 0:
        return "No sessions recorded."
    parts = ", ".join(f"{n} {v}" for v, n in verdicts.most_common())
    text = f"{total} session{'s' if total != 1 else ''}: {parts}; {failures} failing."
    if primaries:
        text += "\nPrimary causes: " + ", ".join(f"{c} x{n}" for c, n in primaries.most_common())
    return text


def run_view(args: argparse.Namespace) -> int:
    from certmatch.tui.app import run_view as tui_run_view

    return tui_run_view(
        args.paths,
        follow=args.follow,
        show_all=args.show_all,
        ca_files=args.ca_file,
        use_system_store=not args.no_system_store,
    )


def _run_proxy_with_tui(args: argparse.Namespace) -> int:
    """The proxy in a child process, logging to a file; the TUI follows its recording here."""
    import subprocess

    from certmatch.tui.app import run_view as tui_run_view

    record = Path(args.record)
    log_path = record.with_name(record.name + ".proxy.log")
    child_argv = [sys.executable, "-m", "certmatch", *[a for a in args.argv if a != "--tui"]]
    with log_path.open("ab") as log:
        child = subprocess.Popen(child_argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            # The proxy creates the recording (with its header) once it is up.
            deadline = time.monotonic() + 30
            while not record.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not record.exists():
                print(
                    f"certmatch: the proxy did not start (exit {child.poll()}); see {log_path}",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            code = tui_run_view([str(record)], follow=True, show_all=True, ca_files=args.ca_file)
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if child.returncode not in (0, -15) and code == EXIT_OK:
        print(
            f"certmatch: the proxy stopped with exit {child.returncode}; see {log_path}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return code


def run_proxy(args: argparse.Namespace) -> int:
    try:
        from mitmproxy.tools.main import mitmdump
    except ImportError as exc:  # pragma: no cover - mitmproxy is a dependency
        raise UsageError(f"mitmproxy is not installed ({exc}); reinstall certmatch") from None
    from mitmproxy.proxy.mode_specs import ProxyMode

    for spec in args.mode:
        try:
            ProxyMode.parse(spec)
        except ValueError as exc:
            raise UsageError(
                f"--mode {spec}: {exc}; use e.g. reverse:tls://mail.example.com:993, "
                "reverse:tcp://mail.example.com:587 (STARTTLS), socks5 or regular"
            ) from None
    record = Path(args.record)
    if record.exists() and record.is_dir():
        raise UsageError(
            f"--record {record}: is a directory; give a file name such as {record}/session.jsonl"
        )
    for ca in args.ca_file:
        TrustStore.load([ca], use_system=False)  # a clear error now, not from inside mitmproxy
    if args.tui:
        return _run_proxy_with_tui(args)
    addon = resources.files("certmatch.proxy.scripts").joinpath("capture.py")
    mitm_args: list[str] = []
    for mode in args.mode:
        mitm_args += ["--mode", mode]
    mitm_args += ["--listen-host", args.listen_host]
    if args.listen_port is not None:
        mitm_args += ["--listen-port", str(args.listen_port)]
    if args.confdir:
        mitm_args += ["--set", f"confdir={args.confdir}"]
    mitm_args += [
        "-s",
        str(addon),
        "-s",
        str(resources.files("certmatch.proxy.scripts").joinpath("starttls.py")),
        "--set",
        f"certmatch_record={record}",
        "--set",
        f"certmatch_on_mismatch={args.on_mismatch}",
        "--set",
        "flow_detail=0",  # never print message contents
    ]
    if args.host:
        mitm_args += ["--set", f"certmatch_host={args.host}"]
    if args.no_sni_probe:
        mitm_args += ["--set", "certmatch_sni_probe=false"]
    for ca in args.ca_file:
        mitm_args += ["--set", f"certmatch_ca_file={ca}"]
    extra = list(args.mitmproxy_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    mitm_args += extra
    print(
        f"certmatch {certmatch.__version__}: proxy on {args.listen_host}:{args.listen_port or 8080} "
        f"({', '.join(args.mode)}), recording to {record}. Ctrl-C to stop.",
        file=sys.stderr,
    )
    return mitmdump(mitm_args) or EXIT_OK


def run_demo_command(args: argparse.Namespace) -> int:
    from certmatch.lab.demo import run_demo

    record = Path(args.record) if args.record else None
    return run_demo(tui=not args.no_tui, record=record, keep=args.keep)


def run_replay_command(args: argparse.Namespace) -> int:
    from certmatch.lab.demo import run_replay

    return run_replay(
        args.paths,
        json_output=args.json,
        listen_host=args.listen_host,
        ca_files=args.ca_file,
        use_system_store=not args.no_system_store,
    )


if __name__ == "__main__":
    sys.exit(main())
