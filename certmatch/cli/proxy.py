"""``certmatch proxy``: mitmdump with the certmatch addons, recording every TLS session.

mitmproxy is imported inside the command only; with ``--tui`` the proxy runs in a child
process and the TUI follows its recording here.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import certmatch
from certmatch.cli.common import EXIT_OK, EXIT_USAGE, Commands, UsageError
from certmatch.core.trust import TrustStore


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "proxy",
        help="run mitmproxy with the certmatch addon and record every TLS session",
        description="Run mitmproxy (mitmdump) with the certmatch capture addon. The client talks to "
        "the proxy; the proxy talks to the server exactly as the client asked (same SNI, or none) "
        "and records what the server presented.",
    )
    parser.add_argument(
        "--mode",
        required=True,
        action="append",
        help="mitmproxy mode spec, e.g. reverse:tls://mail.example.com:993, socks5, regular "
        "(repeat for several listeners)",
    )
    parser.add_argument(
        "--record", required=True, metavar="FILE", help="recording file to append to"
    )
    parser.add_argument(
        "--listen-host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, loopback only)",
    )
    parser.add_argument(
        "--listen-port", type=int, default=None, help="port to bind (default: mitmproxy's, 8080)"
    )
    parser.add_argument(
        "--on-mismatch",
        choices=("pass", "block"),
        default="pass",
        help="'pass' (default) lets a failing session continue so you can watch it; 'block' closes it",
    )
    parser.add_argument(
        "--host",
        default="",
        metavar="NAME",
        help="the server name the client is configured with, when it sends no SNI",
    )
    parser.add_argument(
        "--confdir", default=None, help="mitmproxy configuration directory (its CA lives there)"
    )
    parser.add_argument(
        "--no-sni-probe", action="store_true", help="never ask the server again with SNI"
    )
    parser.add_argument(
        "--tui",
        action="store_true",
        help="show the sessions live in the terminal UI (the proxy's own log goes to FILE.proxy.log)",
    )
    parser.add_argument(
        "--ca-file",
        action="append",
        default=[],
        metavar="PEM",
        help="extra CA certificates to trust (repeatable)",
    )
    parser.add_argument(
        "mitmproxy_args",
        nargs=argparse.REMAINDER,
        help="after --, further options passed to mitmdump",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
        return _run_with_tui(args)
    print(
        f"certmatch {certmatch.__version__}: proxy on {args.listen_host}:{args.listen_port or 8080} "
        f"({', '.join(args.mode)}), recording to {record}. Ctrl-C to stop.",
        file=sys.stderr,
    )
    return mitmdump(mitmdump_args(args)) or EXIT_OK


def mitmdump_args(args: argparse.Namespace) -> list[str]:
    """mitmdump's command line: the modes, the two addon scripts and the certmatch options."""
    scripts = resources.files("certmatch.proxy.scripts")
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
        str(scripts.joinpath("capture.py")),
        "-s",
        str(scripts.joinpath("starttls.py")),
        "--set",
        f"certmatch_record={Path(args.record)}",
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
    return mitm_args + extra


def _run_with_tui(args: argparse.Namespace) -> int:
    """The proxy in a child process, logging to a file; the TUI follows its recording here."""
    import subprocess

    from certmatch.tui.app import run_view

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
            code = run_view([str(record)], follow=True, show_all=True, ca_files=args.ca_file)
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
