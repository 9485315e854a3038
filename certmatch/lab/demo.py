"""The demo: embedded mail servers with typical certificate mistakes, behind the proxy.

The demo needs nothing but this package: it mints a throwaway demo CA and
one certificate set per scenario, starts small embedded servers on loopback
(:mod:`certmatch.lab.mailservers`), starts mitmproxy with the capture addon in
front of them, drives Python's own protocol clients (imaplib, poplib,
smtplib, ldap3) through the proxy, and returns what happened
(:class:`DemoResult`: the recording, the demo CA, what each client saw).
Showing it (the TUI, or the ``check`` report) is the ``certmatch demo``
command's job (:mod:`certmatch.cli.demo`). Every server has one
misconfiguration from the cause catalogue except one, which is correct.

The demo clients trust the proxy's CA but, unlike a strict client, do not
check the host name themselves: so each session completes its short
dialogue, and the report says what a strict client would have refused and
why.

mitmproxy is imported lazily, inside the proxy thread, and only through the proxy
package's public entry points (:mod:`certmatch.proxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import imaplib
import importlib.util
import poplib
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from certmatch.core.judge import Judge
from certmatch.core.recording import RecordingError, read_recording
from certmatch.core.trust import TrustStore
from certmatch.lab import pki
from certmatch.lab.mailservers import MESSAGE, CertificateSet, PemIdentity, ServerGroup, ServerSpec

DEMO_USER, DEMO_PASSWORD = "demo", "demo-password-never-recorded"


# -- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One embedded server, the name its client is configured with, and what certmatch should find."""

    name: str
    protocol: str  # imap, pop3, smtp, submission, ldap
    tls: str  # implicit or starttls
    client_host: str  # the server name configured in the client
    expected_cause: str | None  # the primary cause the recording must show (None: a clean match)
    story: str
    certificates: Callable[[DemoPki], CertificateSet]
    send_sni: bool = True


@dataclass
class DemoPki:
    """The demo's throwaway CA (root and intermediate) and a helper to issue leaves under it."""

    root: pki.Issued
    intermediate: pki.Issued

    @classmethod
    def mint(cls) -> DemoPki:
        root = pki.make_ca("certmatch Demo Root")
        return cls(root, pki.make_ca("certmatch Demo Intermediate", parent=root))

    def leaf(self, *, send_intermediate: bool = True, **names: Any) -> PemIdentity:
        if "cn" not in names and names.get("dns"):
            names["cn"] = names["dns"][0]  # as most CAs do; a readable subject in reports
        issued = pki.issue_leaf(self.intermediate, **names)
        chain = issued.chain_pem() if send_intermediate else issued.cert_pem()
        return PemIdentity(chain, issued.key_pem())

    def single(self, **names: Any) -> CertificateSet:
        return CertificateSet(self.leaf(**names))


def _expired(p: DemoPki) -> CertificateSet:
    return p.single(
        dns=["pop.example.net"],
        not_before=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2022, 1, 1, tzinfo=dt.UTC),
    )


def _sni_default(p: DemoPki) -> CertificateSet:
    return CertificateSet(
        p.leaf(dns=["mail.example.net"]), {"pop.example.net": p.leaf(dns=["pop.example.net"])}
    )


IMPLICIT_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "imaps-correct",
        "imap",
        "implicit",
        "imap.example.net",
        None,
        "IMAPS, correctly configured: the certificate names imap.example.net.",
        lambda p: p.single(dns=["imap.example.net"]),
    ),
    Scenario(
        "pop3s-no-sni",
        "pop3",
        "implicit",
        "pop.example.net",
        "no-sni-default-certificate",
        "POP3S: the client sends no SNI, so the server sends its default certificate "
        "(mail.example.net); asked by name it would have sent pop.example.net's.",
        _sni_default,
        send_sni=False,
    ),
    Scenario(
        "smtps-mail-domain",
        "smtp",
        "implicit",
        "example.net",
        "mail-domain-not-server",
        "SMTPS: the client is configured with the mail domain example.net; the certificate "
        "names the server, smtp.example.net.",
        lambda p: p.single(dns=["smtp.example.net"]),
    ),
    Scenario(
        "ldaps-wildcard",
        "ldap",
        "implicit",
        "ldap.corp.example.net",
        "wildcard-too-deep",
        "LDAPS: *.example.net does not cover ldap.corp.example.net (one label only).",
        lambda p: p.single(dns=["*.example.net"]),
    ),
)

STARTTLS_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "imap-starttls-wrong-name",
        "imap",
        "starttls",
        "imap.example.net",
        "name-not-in-certificate",
        "IMAP STARTTLS: the certificate was issued for another host, mail.example.com "
        "(the classic KB Q198564 mismatch).",
        lambda p: p.single(cn="mail.example.com", dns=["mail.example.com"]),
    ),
    Scenario(
        "pop3-starttls-expired",
        "pop3",
        "starttls",
        "pop.example.net",
        "expired",
        "POP3 STLS: the name is right but the certificate expired on 2022-01-01.",
        _expired,
    ),
    Scenario(
        "submission-missing-intermediate",
        "submission",
        "starttls",
        "smtp.example.net",
        "missing-intermediate",
        "Submission STARTTLS: the server sends its leaf without the intermediate certificate.",
        lambda p: CertificateSet(p.leaf(dns=["smtp.example.net"], send_intermediate=False)),
    ),
    Scenario(
        "ldap-starttls-cn-only",
        "ldap",
        "starttls",
        "ldap.example.net",
        "cn-only-legacy",
        "LDAP StartTLS: the certificate names the host only in its Common Name, with no SAN.",
        lambda p: p.single(cn="ldap.example.net"),
    ),
)


def starttls_available() -> bool:
    """True when the proxy's STARTTLS layer (``certmatch.proxy.StartTlsAddon``) is importable."""
    try:
        from certmatch.proxy import StartTlsAddon  # noqa: F401
    except Exception:  # noqa: BLE001 - a half-installed layer: run the implicit-TLS demo only
        return False
    return True


def demo_scenarios(*, starttls: bool | None = None) -> tuple[Scenario, ...]:
    """The scenarios the demo runs: implicit TLS always, STARTTLS when the proxy layer exists."""
    with_starttls = starttls_available() if starttls is None else starttls
    scenarios = IMPLICIT_SCENARIOS + (STARTTLS_SCENARIOS if with_starttls else ())
    if importlib.util.find_spec("ldap3") is None:
        scenarios = tuple(s for s in scenarios if s.protocol != "ldap")
    return scenarios


# -- the demo run --------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What one demo run produced."""

    recording: Path
    ca_file: Path
    scenarios: tuple[Scenario, ...]
    client_errors: dict[str, str] = field(default_factory=dict)  # scenario -> what the client saw

    def problems(self) -> list[str]:
        """Where the recording disagrees with the scenarios (empty when the demo worked)."""
        judge = Judge(TrustStore.load([self.ca_file], use_system=False))
        sessions = read_recording(self.recording).sessions
        found: dict[tuple[str, str], str | None] = {}
        for session in sessions:
            d = judge.diagnose(session)
            found[(session.requested_host or "", session.tls_kind)] = (
                d.primary.id if d.primary else None
            )
        problems = []
        for scenario in self.scenarios:
            key = (scenario.client_host, scenario.tls)
            if key not in found:
                problems.append(f"{scenario.name}: no session was recorded")
            elif found[key] != scenario.expected_cause:
                problems.append(
                    f"{scenario.name}: expected {scenario.expected_cause or 'a clean match'}, "
                    f"recorded {found[key] or 'a clean match'}"
                )
        return problems


def record_demo(work: Path, recording: Path, *, starttls: bool | None = None) -> DemoResult:
    """Run every scenario once through the proxy and write the recording; returns when all is stopped."""
    scenarios = demo_scenarios(starttls=starttls)
    demo_pki = DemoPki.mint()
    ca_file = work / "demo-ca.pem"
    ca_file.write_bytes(demo_pki.root.cert_pem())
    specs = [
        ServerSpec(
            s.protocol, s.tls, s.certificates(demo_pki), label=s.name, hostname=s.client_host
        )
        for s in scenarios
    ]
    no_sni_hosts = {s.client_host for s in scenarios if not s.send_sni}
    if len(no_sni_hosts) > 1:
        raise ValueError("the proxy's --host option names one host for all no-SNI sessions")
    result = DemoResult(recording, ca_file, scenarios)
    with ServerGroup(specs) as servers:
        modes = [
            f"reverse:{'tls' if s.tls == 'implicit' else 'tcp'}://{srv.host}:{srv.port}@{_free_port()}"
            for s, srv in zip(scenarios, servers, strict=True)
        ]
        with _InProcessProxy(
            work / "mitmproxy",
            modes,
            record=recording,
            ca_file=ca_file,
            host=next(iter(no_sni_hosts), ""),
            starttls=any(s.tls == "starttls" for s in scenarios),
        ) as proxy:
            for scenario, mode in zip(scenarios, modes, strict=True):
                port = int(mode.rsplit("@", 1)[1])
                try:
                    _drive_client(scenario, ("127.0.0.1", port), proxy.ca_file)
                except Exception as exc:  # noqa: BLE001 - shown to the user, the demo goes on
                    result.client_errors[scenario.name] = f"{type(exc).__name__}: {exc}"
            proxy.wait_for_sessions(len(scenarios))
    return result


# -- protocol clients -------------------------------------------------------------------------------


def _client_context(proxy_ca: Path) -> ssl.SSLContext:
    """Trusts the proxy's CA; leaves the host name to certmatch's judgement (see module doc)."""
    context = ssl.create_default_context(cafile=str(proxy_ca))
    context.check_hostname = False
    return context


class _RoutedIMAP4(imaplib.IMAP4):
    """imaplib configured with a host name but connected to a given address (curl's --connect-to)."""

    def __init__(self, host: str, address: tuple[str, int], **kw: Any) -> None:
        self._address = address
        super().__init__(host, address[1], **kw)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(self._address, timeout)


class _RoutedIMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, host: str, address: tuple[str, int], *, sni: bool, **kw: Any) -> None:
        self._address, self._sni = address, sni
        super().__init__(host, address[1], **kw)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection(self._address, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host if self._sni else None)


class _RoutedPOP3(poplib.POP3):
    def __init__(self, host: str, address: tuple[str, int], **kw: Any) -> None:
        self._address = address
        super().__init__(host, address[1], **kw)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(self._address, timeout)


class _RoutedPOP3_SSL(poplib.POP3_SSL):
    def __init__(self, host: str, address: tuple[str, int], *, sni: bool, **kw: Any) -> None:
        self._address, self._sni = address, sni
        super().__init__(host, address[1], **kw)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection(self._address, timeout)
        context: ssl.SSLContext = self.context  # type: ignore[attr-defined]  # set by POP3_SSL
        return context.wrap_socket(sock, server_hostname=self.host if self._sni else None)


class _RoutedSMTP(smtplib.SMTP):
    def __init__(self, host: str, address: tuple[str, int], **kw: Any) -> None:
        self._address = address
        super().__init__(host, address[1], **kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection(self._address, timeout)


class _RoutedSMTP_SSL(smtplib.SMTP_SSL):
    def __init__(self, host: str, address: tuple[str, int], *, sni: bool, **kw: Any) -> None:
        self._address, self._sni = address, sni
        super().__init__(host, address[1], **kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection(self._address, timeout)  # ``host`` is only the SNI name
        return self.context.wrap_socket(sock, server_hostname=host if self._sni else None)


def _drive_client(scenario: Scenario, address: tuple[str, int], proxy_ca: Path) -> None:
    """One short, real session of the scenario's protocol through the proxy."""
    context = _client_context(proxy_ca)
    host, sni, timeout = scenario.client_host, scenario.send_sni, 15
    if scenario.protocol == "imap":
        if scenario.tls == "implicit":
            imap: imaplib.IMAP4 = _RoutedIMAP4_SSL(
                host, address, sni=sni, ssl_context=context, timeout=timeout
            )
        else:
            imap = _RoutedIMAP4(host, address, timeout=timeout)
            imap.starttls(ssl_context=context)
        imap.login(DEMO_USER, DEMO_PASSWORD)
        imap.select("INBOX")
        _typ, data = imap.fetch("1", "(RFC822)")
        imap.logout()
        _expect_message(data[0][1] if data and isinstance(data[0], tuple) else b"")
    elif scenario.protocol == "pop3":
        if scenario.tls == "implicit":
            pop: poplib.POP3 = _RoutedPOP3_SSL(
                host, address, sni=sni, context=context, timeout=timeout
            )
        else:
            pop = _RoutedPOP3(host, address, timeout=timeout)
            pop.stls(context=context)
        pop.user(DEMO_USER)
        pop.pass_(DEMO_PASSWORD)
        pop.stat()
        _resp, lines, _octets = pop.retr(1)
        pop.quit()
        _expect_message(b"\r\n".join(lines) + b"\r\n")
    elif scenario.protocol in ("smtp", "submission"):
        if scenario.tls == "implicit":
            smtp: smtplib.SMTP = _RoutedSMTP_SSL(
                host, address, sni=sni, context=context, timeout=timeout
            )
        else:
            smtp = _RoutedSMTP(host, address, timeout=timeout)
            smtp.starttls(context=context)
        smtp.login(DEMO_USER, DEMO_PASSWORD)
        smtp.sendmail("sender@example.test", ["demo@example.test"], MESSAGE)
        smtp.quit()
    elif scenario.protocol == "ldap":
        _ldap_session(scenario, address, proxy_ca)
    else:  # pragma: no cover - scenarios are defined above
        raise ValueError(f"no demo client for {scenario.protocol}")


def _expect_message(body: bytes) -> None:
    if body != MESSAGE:
        raise RuntimeError(
            f"the fetched message arrived altered ({len(body)} bytes, expected {len(MESSAGE)})"
        )


def _ldap_session(scenario: Scenario, address: tuple[str, int], proxy_ca: Path) -> None:
    import ldap3  # type: ignore[import-untyped]

    class ChainOnlyTls(ldap3.Tls):  # type: ignore[misc]
        """ldap3 checks the name against the address it dialled; leave names to certmatch."""

        def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
            super().wrap_socket(connection, do_handshake=False)
            if do_handshake:
                connection.socket.do_handshake()

    tls = ChainOnlyTls(
        validate=ssl.CERT_REQUIRED,
        ca_certs_file=str(proxy_ca),
        sni=scenario.client_host if scenario.send_sni else None,
    )
    implicit = scenario.tls == "implicit"
    server = ldap3.Server(
        address[0],
        port=address[1],
        use_ssl=implicit,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=15,
    )
    dn = "uid=demo,dc=example,dc=net"
    conn = ldap3.Connection(
        server,
        dn,
        DEMO_PASSWORD,
        receive_timeout=15,
        auto_bind=ldap3.AUTO_BIND_NO_TLS if implicit else ldap3.AUTO_BIND_TLS_BEFORE_BIND,
    )
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["cn", "mail"])
    entries = len(conn.entries)
    conn.unbind()
    if entries != 1:
        raise RuntimeError(f"the LDAP search returned {entries} entries, expected 1")


# -- mitmproxy, in this process -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# On a loaded machine mitmproxy can take many seconds to import and bind.
_PROXY_START_TIMEOUT = 60.0


class _InProcessProxy:
    """mitmproxy with the capture (and, if asked, STARTTLS) addon on its own loop in a thread."""

    def __init__(
        self,
        confdir: Path,
        modes: list[str],
        *,
        record: Path,
        ca_file: Path,
        host: str,
        starttls: bool,
    ) -> None:
        self.confdir = confdir
        self.modes = modes
        self.record = record
        self.options = {
            "certmatch_record": str(record),
            "certmatch_ca_file": [str(ca_file)],
            "certmatch_host": host,
            "certmatch_on_mismatch": "pass",
        }
        self.starttls = starttls
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {}
        self._ready = threading.Event()

    @property
    def ca_file(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="certmatch-demo-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(_PROXY_START_TIMEOUT + 5) or "error" in self._state:
            self.__exit__(None, None, None)
            raise RuntimeError(f"mitmproxy did not start: {self._state.get('error', 'timed out')}")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, master = self._state.get("loop"), self._state.get("master")
        if loop is not None and master is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(master.shutdown)
        if self._thread is not None:
            self._thread.join(20)

    def wait_for_sessions(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RecordingError):
                if self.record.exists() and len(read_recording(self.record).sessions) >= count:
                    return
            time.sleep(0.05)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._state["error"] = f"{type(exc).__name__}: {exc}"
            self._ready.set()

    async def _main(self) -> None:
        from mitmproxy import options
        from mitmproxy.tools.dump import DumpMaster

        from certmatch.proxy import CertmatchCapture, StartTlsAddon

        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_cancellations)
        opts = options.Options(mode=self.modes, listen_host="127.0.0.1", confdir=str(self.confdir))
        master = DumpMaster(opts, with_termlog=False, with_dumper=False)
        capture = CertmatchCapture()
        master.addons.add(capture)
        if self.starttls:
            master.addons.add(StartTlsAddon())
        opts.update(**self.options)
        self._state.update(loop=loop, master=master)
        task = asyncio.create_task(master.run())
        proxyserver = master.addons.get("proxyserver")
        deadline = time.monotonic() + _PROXY_START_TIMEOUT
        while not self._listening(proxyserver):
            if task.done():
                task.result()  # raises what stopped mitmproxy
            if time.monotonic() > deadline:
                master.shutdown()
                raise TimeoutError(f"not listening after {_PROXY_START_TIMEOUT:.0f} s")
            await asyncio.sleep(0.01)
        self._ready.set()
        await task

    def _listening(self, proxyserver: Any) -> bool:
        """Every mode has its listener, and the CA the clients are to trust is written."""
        servers = list(proxyserver.servers)
        return (
            len(servers) == len(self.modes)
            and all(s.listen_addrs for s in servers)
            and self.ca_file.exists()
        )


def _quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)
