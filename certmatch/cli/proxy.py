"""``certmatch proxy``: mitmdump with the certmatch addons, recording every TLS session.

mitmproxy is imported inside the command only; with ``--tui`` the proxy runs in a child
process and the TUI follows its recording here.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import certmatch
from certmatch.cli.common import EXIT_OK, EXIT_USAGE, Commands, UsageError
from certmatch.core.trust import TrustStore


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "proxy",
        help="run mitmproxy with the certmatch addon and record every TLS session",
        description="Run mitmproxy (mitmdump) with the certmatch capture addon. The client talks to "
        "the proxy; the proxy talks to the server exactly as the client asked (same SNI, or none) "
        "and records what the server presented. With --observe it terminates no TLS: it relays "
        "the client's own handshake unchanged and records what it reads from it.",
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
        "--present",
        choices=("mirror", "substitute"),
        default=None,
        help="the certificate the client is shown: 'mirror' (default) copies the server's names, "
        "dates, key type and chain shape, so the client decides on the real certificate; "
        "'substitute' is mitmproxy's own, which names whatever the client asked for",
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
        "--resolver",
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="a DNS resolver to ask about each session's names, IPv6 as [::1]:53; repeat it "
        "for several (two that answer differently show split horizon). Default: the "
        "system's resolvers, and none for --mode reverse to an IP address",
    )
    parser.add_argument(
        "--no-dns",
        action="store_true",
        help="ask DNS nothing (by default the proxy asks in the background and records the "
        "answers with each session; the mail session never waits for them)",
    )
    parser.add_argument(
        "--starttls",
        choices=STARTTLS_CHOICES,
        default="auto",
        help="STARTTLS interception: 'auto' (default) recognises SMTP, IMAP, POP3, NNTP and LDAP; "
        "a protocol name treats every plaintext connection as that protocol; 'off' leaves "
        "plaintext connections alone",
    )
    parser.add_argument(
        "--starttls-timeout",
        type=whole_seconds,
        default=30,
        metavar="SECONDS",
        help="whole seconds to wait for a server's greeting, its reply to STARTTLS and the "
        "handshakes after it (default: 30)",
    )
    parser.add_argument(
        "--observe",
        action="store_true",
        help="watch without intercepting: relay every TLS byte unchanged (nothing to install "
        "in the client), read the server's chain from the wire (TLS 1.2) or from a side "
        "handshake (TLS 1.3), and the client's decision from the records it sends",
    )
    parser.add_argument(
        "--side-handshake-timeout",
        type=whole_seconds,
        default=None,
        metavar="SECONDS",
        help="with --observe: whole seconds a side handshake may take (default: 5)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=whole_seconds,
        default=15,
        metavar="SECONDS",
        help="whole seconds a connection may stand still before its TLS handshake is done (a "
        "client that sends no ClientHello or no SOCKS5/CONNECT request, a server that never "
        "answers); then it is recorded and closed (default: 15, never longer than "
        "--starttls-timeout)",
    )
    parser.add_argument(
        "--listen-backlog",
        type=int,
        default=4096,
        metavar="N",
        help="connections the kernel may queue for the proxy to accept (default: 4096, capped "
        "by net.core.somaxconn; mitmproxy's own is 100, which a burst of clients overflows)",
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


# certmatch.proxy.starttls_layer.MODE_CHOICES, without importing mitmproxy to build the parser.
STARTTLS_CHOICES = ("auto", "smtp", "imap", "pop3", "ldap", "nntp", "off")


def whole_seconds(text: str) -> int:
    """A timeout as mitmproxy's ``--set`` takes it: a whole number of seconds, at least 1."""
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of seconds (e.g. 30)"
        ) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError("give at least 1 second")
    return seconds


def run(args: argparse.Namespace) -> int:
    try:
        from mitmproxy.proxy.mode_specs import ProxyMode
    except ImportError as exc:  # pragma: no cover - mitmproxy is a dependency
        raise UsageError(f"mitmproxy is not installed ({exc}); reinstall certmatch") from None

    modes = []
    for spec in args.mode:
        try:
            mode = ProxyMode.parse(spec)
        except ValueError as exc:
            raise UsageError(
                f"--mode {spec}: {str(exc).rstrip('.')}; use e.g. "
                "reverse:tls://mail.example.com:993, reverse:tcp://mail.example.com:587 "
                "(STARTTLS), socks5 or regular"
            ) from None
        scheme = getattr(mode, "scheme", None)  # a ReverseMode's
        if mode.type_name == "reverse" and scheme not in ("tls", "tcp"):
            # Without a scheme mitmproxy reverse-proxies HTTPS: it would parse mail as HTTP
            # and, with --observe, still terminate TLS.
            raise UsageError(
                f"--mode {spec}: a mail server needs reverse:tls://HOST:PORT (implicit TLS) or "
                "reverse:tcp://HOST:PORT (plaintext and STARTTLS); "
                f"'{scheme}' is mitmproxy's {str(scheme).upper()} reverse proxy"
            )
        modes.append(mode)
    if args.listen_port is not None and not 0 <= args.listen_port <= 65535:
        raise UsageError(f"--listen-port {args.listen_port}: give a port from 1 to 65535")
    if args.observe and args.present is not None:
        raise UsageError(
            "--observe shows the client the server's own certificate, so --present does not "
            "apply; drop --present, or drop --observe to intercept"
        )
    args.present = args.present or "mirror"
    record = Path(args.record)
    if record.exists() and record.is_dir():
        raise UsageError(
            f"--record {record}: is a directory; give a file name such as {record}/session.jsonl"
        )
    if not record.parent.is_dir():
        raise UsageError(
            f"--record {record}: the directory {record.parent} does not exist; create it "
            "first, or give a path in an existing directory"
        )
    for ca in args.ca_file:
        TrustStore.load([ca], use_system=False)  # a clear error now, not from inside mitmproxy
    if record.exists() and record.stat().st_size > 0:
        _check_appendable(record, args.ca_file)
    if not args.observe and args.side_handshake_timeout is not None:
        raise UsageError(
            "--side-handshake-timeout applies only with --observe (the intercepting proxy "
            "makes no side handshakes); drop it, or add --observe"
        )
    for mode in modes:
        _check_port_free(mode, args.listen_host, args.listen_port)
    for resolver in args.resolver:
        from certmatch.net.dns import parse_resolver

        try:
            parse_resolver(resolver)  # a clear error now, not from inside mitmproxy
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.observe and args.on_mismatch == "block":
        raise UsageError(
            "--observe relays the client's own TLS and cannot block a session; "
            "drop --on-mismatch block, or drop --observe to intercept"
        )
    if warning := shared_file_warning(record):
        print(warning, file=sys.stderr)
    if args.tui:
        return _run_with_tui(args)
    _run_mitmdump(mitmdump_args(args), ListenBanner(record))
    return EXIT_OK


def _check_appendable(record: Path, ca_files: Sequence[str]) -> None:
    """Refuse now, in one line, a recording the proxy would refuse to append to once
    mitmproxy has started (someone else's file, or one judged with other CAs)."""
    from certmatch.core.recording import RecordingError, RecordingWriter

    pems = [Path(path).read_text(encoding="ascii", errors="replace") for path in ca_files]
    try:
        RecordingWriter(record, tool_version=certmatch.__version__, ca_certificates=pems).close()
    except RecordingError as exc:
        raise UsageError(f"--record {exc}") from None


def _check_port_free(mode: Any, listen_host: str | None, listen_port: int | None) -> None:
    """A one-line error now for a port another program holds, rather than mitmproxy's log
    after it has started (its advice names its own --mode syntax)."""
    port = mode.listen_port(listen_port)
    if not port or mode.transport_protocol == "udp":
        return
    host = mode.listen_host(listen_host) or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"cannot listen on {format_address((host, port))}: another program listens "
                    "on that port; stop it, or give the proxy another port (--listen-port, or "
                    "@PORT in --mode)"
                ) from None
            if exc.errno == errno.EACCES:
                raise UsageError(
                    f"cannot listen on {format_address((host, port))}: ports below 1024 need "
                    "privileges; use a port above 1024 (--listen-port)"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(
                    f"cannot listen on {host}: no interface of this machine has that address; "
                    "use 127.0.0.1 or one of its own addresses (--listen-host)"
                ) from None


# --- files: owner-only ---------------------------------------------------------------------


def open_private(path: Path) -> IO[bytes]:
    """Open ``path`` for appending; a new file is owner-only (0600) whatever the umask.

    An existing file keeps its mode (see :func:`shared_file_warning`).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "ab")


def shared_file_warning(path: Path) -> str | None:
    """A warning when an existing file that certmatch appends to is readable by others.

    certmatch creates its files owner-only but never changes the mode of a file it did not
    create: that is its owner's choice, so it only says so.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode) or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return None
    who = "every user" if mode & stat.S_IROTH else "its group"
    return (
        f"certmatch: warning: {path} is readable by {who} (mode {stat.S_IMODE(mode):04o}); "
        f"certmatch keeps an existing file's mode: chmod 600 {path} to keep its sessions private"
    )


# --- the banner: where the proxy really listens ------------------------------------------

type Listener = tuple[str, Sequence[tuple[Any, ...]]]
"""One proxy mode's spec and the socket addresses its server is bound to."""


def format_address(address: tuple[Any, ...]) -> str:
    """``host:port``, an IPv6 host in brackets."""
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])  # an IPv6 scope (fe80::1%eth0) aside
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1)."""
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def listen_banner(listeners: Sequence[Listener], record: Path) -> str:
    """The startup line: every address really bound, by mode, and where sessions go."""
    where = "; ".join(
        f"{', '.join(format_address(a) for a in addresses) or 'no listening socket'} ({spec})"
        for spec, addresses in listeners
    )
    return (
        f"certmatch {certmatch.__version__}: proxy listening on {where or 'nothing'}, "
        f"recording to {record}. Ctrl-C to stop."
    )


def exposure_warning(listeners: Sequence[Listener]) -> str | None:
    """A plain warning when the proxy can be reached from other machines, else None."""
    exposed = [a for _, addresses in listeners for a in addresses if not is_loopback(str(a[0]))]
    if not exposed:
        return None
    shown = ", ".join(
        format_address(a) + (" (every interface)" if _is_wildcard(str(a[0])) else "")
        for a in exposed
    )
    return (
        f"certmatch: WARNING: the proxy listens on {shown}, not only on this machine. Anyone "
        "who can reach that port can use the proxy, and see the certificates of the servers "
        "behind it and the sessions in this recording. To keep it local, listen on 127.0.0.1 "
        "(--listen-host 127.0.0.1, or @127.0.0.1:PORT in --mode)."
    )


def _is_wildcard(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


class ListenBanner:
    """mitmproxy addon: once the proxy listens, print what is really bound (mitmproxy picks
    the port for ``:0`` and a mode's ``@host:port`` overrides ``--listen-host``), and warn
    when that is not loopback only.

    mitmproxy binds its servers, then sends ``running`` to its addons in chain order;
    :func:`_run_mitmdump` puts this one first, so the line is not held back by the others'
    ``running`` work (tlsconfig loads its CA again there).
    """

    def __init__(self, record: Path) -> None:
        self.record = record

    def running(self) -> None:
        from mitmproxy import ctx

        proxyserver = ctx.master.addons.get("proxyserver")
        servers = proxyserver.servers if proxyserver is not None else []
        listeners = [(server.mode.full_spec, list(server.listen_addrs)) for server in servers]
        print(listen_banner(listeners, self.record), file=sys.stderr, flush=True)
        if warning := exposure_warning(listeners):
            print(warning, file=sys.stderr, flush=True)


def _run_mitmdump(mitm_args: list[str], *addons: object) -> None:
    """Run mitmdump as ``mitmdump`` itself does, with ``addons`` first in its master's chain."""
    from mitmproxy.options import Options
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.dump import DumpMaster
    from mitmproxy.tools.main import run as run_master

    class CertmatchDumpMaster(DumpMaster):
        def __init__(self, options: Options, **kwargs: Any) -> None:
            super().__init__(options, **kwargs)
            self.addons.add(*addons)
            if addons:  # their hooks first: the banner prints as soon as the servers are bound
                chain = self.addons.chain
                chain[:] = [*chain[-len(addons) :], *chain[: -len(addons)]]

    def filter_options(parsed: argparse.Namespace) -> dict[str, str]:
        # As mitmdump: filter expressions after the options apply to what it shows and saves.
        if not parsed.filter_args:
            return {}
        expression = " ".join(parsed.filter_args)
        return dict.fromkeys(("save_stream_filter", "readfile_filter", "dumper_filter"), expression)

    run_master(CertmatchDumpMaster, cmdline.mitmdump, mitm_args, filter_options)


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
    if getattr(args, "observe", False):
        mitm_args += ["-s", str(scripts.joinpath("observe.py"))]
        if args.side_handshake_timeout is not None:
            mitm_args += [
                "--set",
                f"certmatch_side_handshake_timeout={args.side_handshake_timeout}",
            ]
    else:
        mitm_args += [
            "-s",
            str(scripts.joinpath("capture.py")),
            "--set",
            f"certmatch_present={args.present or 'mirror'}",
            "--set",
            f"certmatch_on_mismatch={args.on_mismatch}",
        ]
        if args.no_sni_probe:
            mitm_args += ["--set", "certmatch_sni_probe=false"]
        mitm_args += ["--set", f"certmatch_handshake_timeout={args.handshake_timeout}"]
        mitm_args += ["--set", f"certmatch_listen_backlog={args.listen_backlog}"]
        if args.no_dns:
            mitm_args += ["--set", "certmatch_dns=false"]
        for resolver in args.resolver:
            mitm_args += ["--set", f"certmatch_resolver={resolver}"]
    mitm_args += [
        "-s",
        str(scripts.joinpath("starttls.py")),
        "--set",
        f"certmatch_record={Path(args.record)}",
        "--set",
        f"certmatch_starttls={args.starttls}",
        "--set",
        f"certmatch_starttls_timeout={args.starttls_timeout}",
        "--set",
        "flow_detail=0",  # never print message contents
    ]
    if args.host:
        mitm_args += ["--set", f"certmatch_host={args.host}"]
    for ca in args.ca_file:
        mitm_args += ["--set", f"certmatch_ca_file={ca}"]
    extra = list(args.mitmproxy_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    return mitm_args + extra


def _run_with_tui(args: argparse.Namespace) -> int:
    """The proxy in a child process, logging to a file; the TUI follows its recording here.

    SIGTERM or SIGHUP (the terminal closed) stops the child at once, then the TUI, which
    restores the terminal on its way out; the process then exits 128 + the signal number.
    """
    import subprocess

    record = Path(args.record)
    log_path = record.with_name(record.name + ".proxy.log")
    if warning := shared_file_warning(log_path):
        print(warning, file=sys.stderr)
    child_argv = [sys.executable, "-m", "certmatch", *[a for a in args.argv if a != "--tui"]]
    with open_private(log_path) as log:
        log_start = log.seek(0, os.SEEK_END)  # this run's lines start here; older runs precede
        child = subprocess.Popen(
            child_argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - before any thread
        )
        # mitmproxy takes seconds to start on a busy machine: say so, not a blank terminal.
        print(
            f"certmatch: starting the proxy (its log: {log_path}); the live view opens once it "
            "listens…",
            file=sys.stderr,
            flush=True,
        )
        stop = StopRequest()
        stopped_first: int | None = None
        previous = _on_stop_signals(lambda: child.terminate(), stop)
        try:
            # Imported once the proxy is starting: the two take seconds each on a busy machine.
            from certmatch.tui.app import run_view
            from certmatch.tui.proxy_watch import LiveProxy, mitmproxy_ca_cert

            live = LiveProxy(
                child,
                log_path,
                modes=args.mode,
                ca_cert=mitmproxy_ca_cert(args.confdir),
                log_offset=log_start,
                stop_signal=lambda: stop.signum,
                observe=args.observe,
            )

            # The proxy creates the recording (with its header) once it is up.
            deadline = time.monotonic() + 30
            while not record.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if stop.signum is not None:
                return 128 + stop.signum
            if not record.exists():
                print(
                    f"certmatch: the proxy did not start (exit {child.poll()}); see {log_path}",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            live.wait_until_listening(30)  # the status then shows where it listens, or why not
            if stop.signum is not None:
                return 128 + stop.signum
            try:
                code = run_view(
                    [str(record)], follow=True, show_all=True, ca_files=args.ca_file, proxy=live
                )
            finally:
                stop.done()
            stopped_first = child.poll()  # the proxy's exit status if it stopped before the TUI
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if stop.signum is not None:
        return 128 + stop.signum
    if stopped_first is not None:
        print(
            f"certmatch: the proxy stopped by itself (exit {stopped_first}) before the TUI was "
            f"quit, so {record} ends there; its log says why: {log_path}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if child.returncode not in (0, -15) and code == EXIT_OK:
        print(
            f"certmatch: the proxy stopped with exit {child.returncode}; see {log_path}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return code


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """For the proxy child of ``proxy --tui``: SIGTERM when the TUI's process dies, even by
    SIGKILL (the out-of-memory killer), so no proxy is left listening and recording unseen.
    Linux only (prctl PR_SET_PDEATHSIG); elsewhere None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def arm() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os._exit(1)

    return arm


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
STOP_GRACE = 5.0  # seconds the TUI has to exit after a stop signal


@dataclass
class StopRequest:
    """The stop signal received, if any; the TUI polls it and exits 128 + the signal number."""

    signum: int | None = None
    grace: threading.Timer | None = None  # ends the process if the TUI does not exit in time

    def done(self) -> None:
        """The TUI has exited: no need to end the process any more."""
        if self.grace is not None:
            self.grace.cancel()


def _on_stop_signals(
    stop_child: Callable[[], None], request: StopRequest, *, grace: float | None = None
) -> dict[int, Any]:
    """Handle SIGTERM and SIGHUP: stop the child and note the signal in ``request``; returns
    the handlers they replace.

    The handler raises nothing: an exception raised inside Textual's message pump breaks its
    context reset on the way out and prints a traceback over the terminal. The TUI sees the
    request on its next proxy poll (every 0.25 s) and exits as on ``q``, which restores the
    terminal. A second signal gets the default handling again.

    If the TUI has not exited ``grace`` seconds later (``STOP_GRACE`` by default; 0: never),
    the process ends anyway (``request.done()`` once it exited calls that off): after
    SIGHUP the terminal is gone, and Textual's last writes to it can block for ever (seen: a
    closed tmux pane left the TUI and its reader running, the proxy stopped).
    """
    previous: dict[int, Any] = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def stop(signum: int, _frame: object) -> None:
        request.signum = signum
        stop_child()
        for other, handler in previous.items():
            signal.signal(other, handler)
        seconds = STOP_GRACE if grace is None else grace
        if seconds > 0:
            request.grace = threading.Timer(seconds, os._exit, args=(128 + signum,))
            request.grace.daemon = True
            request.grace.start()

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    return previous
