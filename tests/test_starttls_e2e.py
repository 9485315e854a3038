"""STARTTLS end to end: real servers, real clients, through mitmproxy with both certmatch addons.

dovecot (IMAP, POP3), aiosmtpd (submission) and slapd (LDAP) are the real
servers; imaplib, poplib, smtplib, ldap3, curl and ``openssl s_client`` the
real clients. Servers that misbehave on purpose (silent, garbage, closing,
injecting) cannot be made from real ones, so a few lines of socket code
stand in for them. NNTP, with INN's nnrpd, is in tests/test_nntp_e2e.py.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import logging
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ldap3
import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from proxy_fixtures import (
    REPO,
    RunningProxy,
    free_port,
    inprocess_proxy,
    mitmdump_process,
    stock_command,
)
from scenarios import SERVICE_NAMES, ScenarioPki, scenario
from servers import DovecotServer, SlapdServer, SmtpServer
from servers.clients import LoopbackIMAP4, LoopbackPOP3, LoopbackSMTP, s_client, verifying_context

from certmatch.core.diagnosis import diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.recording import read_recording
from certmatch.core.starttls_findings import starttls_findings
from certmatch.core.trust import TrustStore
from certmatch.proxy.starttls_layer import StartTlsAddon

IMAP, POP, SMTP, LDAP = (SERVICE_NAMES[p] for p in ("imap", "pop3", "smtp", "ldap"))
WRONG = scenario("wrong-host").server_name


@contextlib.contextmanager
def starttls_proxy(
    tmp: Path, mode: str, pki: ScenarioPki, **settings: object
) -> Iterator[RunningProxy]:
    """mitmproxy in a thread with the capture and STARTTLS addons, on a free port."""
    with inprocess_proxy(
        tmp,
        mode,
        extra_addons=(StartTlsAddon(),),
        ca_file=[str(pki.root_ca)],
        **{k.removeprefix("certmatch_"): v for k, v in settings.items()},
    ) as proxy:
        yield proxy


def reverse(port: int) -> str:
    return f"reverse:tcp://127.0.0.1:{port}"


def judged(session: SessionFacts, pki: ScenarioPki) -> tuple[str, tuple[str, ...]]:
    verdict = diagnose(session, TrustStore.load([pki.root_ca], use_system=False))
    return verdict.verdict, verdict.cause_ids


def only_session(proxy: RunningProxy) -> SessionFacts:
    sessions = proxy.sessions(1)
    assert len(sessions) == 1, sessions
    return sessions[0]


def recorded_error(session: SessionFacts) -> str:
    """The error the layer recorded for a session that never reached TLS."""
    assert session.starttls is not None
    return session.server_error or ""


# -- correct certificate: match, body byte for byte ------------------------------------


def test_imaplib_starttls_fetches_the_message_byte_for_byte(
    tmp_path: Path, pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    with starttls_proxy(tmp_path, reverse(dovecot.imap_port), pki) as proxy:
        with LoopbackIMAP4(IMAP, proxy.port) as imap:
            assert "STARTTLS" in imap.capabilities
            imap.starttls(verifying_context(proxy.ca_file))
            imap.login(dovecot.user, dovecot.password)
            imap.select("INBOX", readonly=True)
            _, data = imap.fetch("1", "(BODY.PEEK[])")
        session = only_session(proxy)
    assert data[0][1] == dovecot.known_message  # type: ignore[index]
    assert (session.protocol, session.tls_kind, session.sni, session.upstream_sni) == (
        "imap",
        "starttls",
        IMAP,
        IMAP,
    )
    st = session.starttls
    assert st is not None
    assert (st.server_offered, st.client_requested, st.plaintext_auth, st.injection) == (
        True,
        True,
        None,
        None,
    )
    assert st.server_reply and " OK " in st.server_reply
    assert judged(session, pki) == ("match", ())
    assert starttls_findings(session) == {}


def test_poplib_stls_retrieves_the_message(
    tmp_path: Path, pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    with starttls_proxy(tmp_path, reverse(dovecot.pop3_port), pki) as proxy:
        pop = LoopbackPOP3(POP, proxy.port)
        pop.stls(verifying_context(proxy.ca_file))
        pop.user(dovecot.user)
        pop.pass_(dovecot.password)
        _, lines, _ = pop.retr(1)
        pop.quit()
        session = only_session(proxy)
    assert b"\r\n".join(lines) + b"\r\n" == dovecot.known_message
    assert session.protocol == "pop3" and session.starttls is not None
    assert session.starttls.server_reply and session.starttls.server_reply.startswith("+OK")
    assert judged(session, pki) == ("match", ())


def test_smtplib_submission_delivers_through_the_upgrade(
    tmp_path: Path, pki: ScenarioPki, smtp_server: SmtpServer
) -> None:
    before = len(smtp_server.messages)
    body = b"Subject: via certmatch\r\n\r\nline one\r\n..dot line\r\n"
    with starttls_proxy(tmp_path, reverse(smtp_server.submission_port), pki) as proxy:
        with LoopbackSMTP(SMTP, proxy.port) as smtp:
            smtp.starttls(context=verifying_context(proxy.ca_file))
            smtp.login(smtp_server.user, smtp_server.password)
            smtp.sendmail("a@example.test", ["b@example.test"], body)
        session = only_session(proxy)
    [message] = smtp_server.messages[before:]
    assert message.authenticated_as == "test"
    assert message.content == body  # byte for byte, dot-stuffing undone by the server
    assert session.starttls is not None and session.starttls.server_reply.startswith("220")  # type: ignore[union-attr]
    assert session.starttls.plaintext_auth is None  # AUTH came after TLS
    assert judged(session, pki) == ("match", ())


def test_ldap3_starttls_finds_the_entry(
    tmp_path: Path, pki: ScenarioPki, slapd_factory: Callable[[str], SlapdServer]
) -> None:
    slapd = slapd_factory("correct")
    with starttls_proxy(tmp_path, reverse(slapd.ldap_port), pki) as proxy:
        tls = ldap3.Tls(
            ca_certs_file=str(proxy.ca_file),
            validate=ssl.CERT_REQUIRED,
            valid_names=[LDAP],
            sni=LDAP,
        )
        server = ldap3.Server("127.0.0.1", port=proxy.port, tls=tls, get_info=ldap3.NONE)
        conn = ldap3.Connection(
            server, slapd.root_dn, slapd.root_password, auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND
        )
        try:
            conn.search(slapd.suffix, "(uid=test)", attributes=["mail"])
            found = [(e.entry_dn, e.mail.value) for e in conn.entries]
        finally:
            conn.unbind()
        session = only_session(proxy)
    assert found == [(slapd.entry_dn, slapd.entry_mail)]
    assert session.protocol == "ldap" and session.starttls is not None
    assert session.starttls.server_reply == "resultCode 0 (success)"
    assert judged(session, pki) == ("match", ())


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_curl_ssl_reqd_through_the_upgrade(
    protocol: str, tmp_path: Path, pki: ScenarioPki, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    port = {
        "imap": dovecot.imap_port,
        "pop3": dovecot.pop3_port,
        "smtp": smtp_server.submission_port,
    }[protocol]
    name = SERVICE_NAMES[protocol]
    before = len(smtp_server.messages)
    with starttls_proxy(tmp_path, reverse(port), pki) as proxy:
        url = {
            "imap": f"imap://{name}:{port}/INBOX/;UID=1",
            "pop3": f"pop3://{name}:{port}/1",
            "smtp": f"smtp://{name}:{port}",
        }[protocol]
        argv = [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--ssl-reqd",
            "--connect-to",
            f"{name}:{port}:127.0.0.1:{proxy.port}",
            "--cacert",
            str(proxy.ca_file),
            "--user",
            "test:secret",
            url,
        ]
        if protocol == "smtp":
            argv += ["--mail-from", "a@example.test", "--mail-rcpt", "c@example.test", "-T", "-"]
        done = subprocess.run(
            argv,
            input=b"Subject: curl\r\n\r\nby curl\r\n",
            capture_output=True,
            timeout=20,
            check=False,
        )
        session = only_session(proxy)
    assert done.returncode == 0, done.stderr
    if protocol == "smtp":
        assert b"by curl" in smtp_server.messages[before].content
    else:
        assert done.stdout == dovecot.known_message
    assert (session.tls_kind, session.sni) == ("starttls", name)
    assert judged(session, pki) == ("match", ())


# -- wrong host: mismatch with its cause, per protocol --------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp", "ldap"])
def test_s_client_starttls_wrong_host_is_a_mismatch(
    protocol: str,
    tmp_path: Path,
    pki: ScenarioPki,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    slapd_factory: Callable[[str], SlapdServer],
) -> None:
    port = {
        "imap": dovecot.imap_port,
        "pop3": dovecot.pop3_port,
        "smtp": smtp_server.submission_port,
    }.get(protocol)
    if protocol == "ldap":
        port = slapd_factory("wrong-host").ldap_port
    with starttls_proxy(tmp_path, reverse(port), pki) as proxy:  # type: ignore[arg-type]
        seen = s_client(proxy.port, servername=WRONG, starttls=protocol)
        session = only_session(proxy)
    assert seen.chain, seen.output  # the client got the proxy's certificate: pass mode
    assert (session.protocol, session.tls_kind, session.sni) == (
        "smtp" if protocol == "smtp" else protocol,
        "starttls",
        WRONG,
    )
    assert session.starttls is not None and session.starttls.client_requested is True
    verdict, causes = judged(session, pki)
    assert verdict == "mismatch" and causes[0] == "name-not-in-certificate"


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_no_sni_over_starttls_is_proven_by_a_starttls_probe(
    protocol: str,
    tmp_path: Path,
    pki: ScenarioPki,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
) -> None:
    """A client configured with alt.example.test sends no SNI after STARTTLS: the server's
    default certificate comes back; the proxy's probe, speaking the same STARTTLS dialogue
    with SNI, gets alt's certificate, which proves the cause."""
    port = {
        "imap": dovecot.imap_port,
        "pop3": dovecot.pop3_port,
        "smtp": smtp_server.submission_port,
    }[protocol]
    alt = scenario("alt")
    with starttls_proxy(tmp_path, reverse(port), pki, certmatch_host=alt.server_name) as proxy:
        s_client(proxy.port, servername=None, starttls=protocol)
        session = only_session(proxy)
    assert session.sni is None and session.upstream_sni is None
    assert session.sni_probe is not None and session.sni_probe.error is None, session.sni_probe
    probe_leaf = x509.load_der_x509_certificate(base64.b64decode(session.sni_probe.chain[0]))
    assert probe_leaf == pki.for_scenario("alt").leaf
    verdict, causes = judged(session, pki)
    assert verdict == "mismatch" and causes[0] == "no-sni-default-certificate"


def test_block_mode_closes_a_wrong_host_client(
    tmp_path: Path, pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    with starttls_proxy(
        tmp_path, reverse(dovecot.imap_port), pki, certmatch_on_mismatch="block"
    ) as proxy:
        imap = LoopbackIMAP4(WRONG, proxy.port)
        with pytest.raises((ssl.SSLError, OSError)):
            imap.starttls(verifying_context(proxy.ca_file))
        session = only_session(proxy)
    assert session.action == "block" and session.tls_kind == "starttls"


# -- proxy modes ------------------------------------------------------------------------


def tunnel(proxy_port: int, mode: str, host: str, port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy_port), 5)
    if mode == "socks5":
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        name = host.encode()
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
        assert sock.recv(10)[1] == 0
    else:
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert b" 200 " in head, head
    return sock


@pytest.mark.parametrize("mode", ["socks5", "regular"])
def test_socks5_and_http_connect_modes(
    mode: str, tmp_path: Path, pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    with starttls_proxy(tmp_path, mode, pki) as proxy:

        class TunnelledIMAP4(imaplib.IMAP4):
            def _create_socket(self, timeout: float | None) -> socket.socket:
                return tunnel(proxy.port, mode, "127.0.0.1", dovecot.imap_port)

        with TunnelledIMAP4(IMAP, dovecot.imap_port) as imap:
            imap.starttls(verifying_context(proxy.ca_file))
            imap.login(dovecot.user, dovecot.password)
            imap.select("INBOX", readonly=True)
            _, data = imap.fetch("1", "(BODY.PEEK[])")
        session = only_session(proxy)
    assert data[0][1] == dovecot.known_message  # type: ignore[index]
    assert (session.tls_kind, session.sni, session.requested_host_source) == (
        "starttls",
        IMAP,
        "sni",
    )
    assert judged(session, pki) == ("match", ())


# -- STARTTLS-specific causes ------------------------------------------------------------


def test_plaintext_pop3_login_is_a_plaintext_auth_finding(
    tmp_path: Path, pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    with starttls_proxy(tmp_path, reverse(dovecot.pop3_port), pki) as proxy:
        pop = LoopbackPOP3(POP, proxy.port)
        pop.user(dovecot.user)
        pop.pass_(dovecot.password)
        pop.quit()
        session = only_session(proxy)
    assert session.tls_kind == "starttls" and session.chain == []
    assert session.starttls is not None and session.starttls.plaintext_auth == "USER, PASS"
    found = starttls_findings(session)
    assert list(found) == ["plaintext-auth", "starttls-not-requested"]
    assert judged(session, pki) == ("error", ("plaintext-auth", "starttls-not-requested"))
    assert dovecot.password not in repr(session)


def test_a_server_without_starttls_is_not_offered_and_refuses(
    tmp_path: Path, pki: ScenarioPki
) -> None:
    class Sink:
        async def handle_DATA(self, *args: object) -> str:
            return "250 OK"

    port = free_port()
    plain = Controller(Sink(), hostname="127.0.0.1", port=port)
    plain.start()
    try:
        with starttls_proxy(tmp_path, reverse(port), pki) as proxy:
            with LoopbackSMTP(SMTP, proxy.port) as smtp:
                smtp.ehlo()
                assert not smtp.has_extn("starttls")
                code, _ = smtp.docmd("STARTTLS")
            session = only_session(proxy)
    finally:
        plain.stop()
    assert code >= 400
    st = session.starttls
    assert st is not None and (st.server_offered, st.client_requested, st.phase) == (
        False,
        True,
        "refused",
    )
    found = starttls_findings(session)
    assert sorted(found) == ["starttls-not-offered", "starttls-refused"]
    assert str(code) in found["starttls-refused"]


def test_commands_pipelined_after_starttls_never_reach_the_server(
    tmp_path: Path, pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    with starttls_proxy(tmp_path, reverse(dovecot.imap_port), pki) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as raw:
            reader = raw.makefile("rb")
            assert reader.readline().startswith(b"* OK")
            raw.sendall(b"a STARTTLS\r\nb NOOP\r\n")
            assert reader.readline().startswith(b"a OK")
            tls = verifying_context(proxy.ca_file).wrap_socket(raw, server_hostname=IMAP)
            tls.sendall(b"c NOOP\r\n")
            first = tls.makefile("rb").readline()
            tls.close()
        session = only_session(proxy)
    assert first.startswith(b"c OK")  # no answer to the smuggled "b NOOP"
    assert session.starttls is not None
    assert session.starttls.injection == (
        "the client sent 8 byte(s) after its STARTTLS request, before the server's reply"
    )
    assert "starttls-injection" in starttls_findings(session)


# -- misbehaving stand-in servers ---------------------------------------------------------


@contextlib.contextmanager
def fake_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection-at-a-time TCP server on loopback running ``handle`` per connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so that the loop sees ``stop`` soon
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn, contextlib.suppress(OSError, ssl.SSLError):
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def read_line(conn: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def smtp_until_starttls(conn: socket.socket) -> None:
    conn.sendall(b"220 smtp.example.test ESMTP fake\r\n")
    read_line(conn)  # EHLO
    conn.sendall(b"250-smtp.example.test\r\n250 STARTTLS\r\n")
    read_line(conn)  # STARTTLS


def test_server_bytes_after_its_220_are_dropped_and_recorded(
    tmp_path: Path, pki: ScenarioPki
) -> None:
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki.default.chain, pki.default.key)

    def injecting(conn: socket.socket) -> None:
        smtp_until_starttls(conn)
        conn.sendall(b"220 go ahead\r\n250 injected\r\n")
        with server_tls.wrap_socket(conn, server_side=True) as tls:
            line = read_line(tls)  # EHLO after TLS
            tls.sendall(
                b"250 smtp.example.test\r\n" if line.upper().startswith(b"EHLO") else b"500\r\n"
            )
            read_line(tls)

    with fake_server(injecting) as port, starttls_proxy(tmp_path, reverse(port), pki) as proxy:
        with LoopbackSMTP(SMTP, proxy.port) as smtp:
            smtp.starttls(context=verifying_context(proxy.ca_file))
            code, _ = smtp.ehlo()
        session = only_session(proxy)
    assert code == 250  # the injected "250" was not taken as the reply to EHLO over TLS
    assert session.starttls is not None
    assert session.starttls.injection == (
        "the server sent 14 byte(s) after its positive STARTTLS reply, before the TLS handshake"
    )
    assert judged(session, pki) == ("match", ("starttls-injection",))


@pytest.mark.parametrize(
    ("behaviour", "phase", "error"),
    [
        ("silent", "requested", "the server sent no reply to STARTTLS within 1 s"),
        ("garbage", "failed", "which is not an SMTP reply"),
        (
            "close",
            "requested",
            "the server closed the connection while the reply to STARTTLS was due",
        ),
    ],
)
def test_a_broken_upgrade_is_recorded_and_the_proxy_stays_up(
    behaviour: str, phase: str, error: str, tmp_path: Path, pki: ScenarioPki
) -> None:
    def broken(conn: socket.socket) -> None:
        smtp_until_starttls(conn)
        if behaviour == "garbage":
            conn.sendall(b"\x00\x01 what?\r\n")
        elif behaviour == "silent":
            conn.recv(1)  # returns when the proxy gives up and closes

    with (
        fake_server(broken) as port,
        starttls_proxy(tmp_path, reverse(port), pki, certmatch_starttls_timeout=1) as proxy,
    ):
        started = time.monotonic()
        with LoopbackSMTP(SMTP, proxy.port) as smtp, pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.starttls(context=verifying_context(proxy.ca_file))
        elapsed = time.monotonic() - started
        session = only_session(proxy)
        # The proxy still serves the next client.
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as again:
            assert again.makefile("rb").readline().startswith(b"220 ")
    assert elapsed < 3
    assert session.starttls is not None and session.starttls.phase.startswith(phase)  # type: ignore[union-attr]
    assert error in recorded_error(session)


# -- a session held open past the timeouts -----------------------------------------------


@pytest.mark.parametrize("loaded", ["mitmdump -s", "in-process"])
def test_a_starttls_session_held_past_the_timeout_does_not_crash_the_proxy(
    loaded: str,
    tmp_path: Path,
    pki: ScenarioPki,
    dovecot: DovecotServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 9: the greeting and reply timers fired into mitmproxy's TCPLayer once TLS was up
    ("mitmproxy has crashed! AssertionError: Unexpected event type at TCPLayer.relay_messages
    ... got Wakeup"), 30 s into every STARTTLS session still open. With a 1 s timeout, set
    by ``--set`` as the README shows, the session outlives all three timers of the layer.

    Loaded both ways the README and the demo load the addons, so the STARTTLS hooks are
    seen to reach the capture addon in a real mitmdump and in-process."""
    caplog.set_level(logging.INFO)
    with held_open_proxy(loaded, tmp_path, pki, reverse(dovecot.imap_port)) as (port, ca, log):
        with LoopbackIMAP4(IMAP, port) as imap:
            imap.starttls(verifying_context(ca))
            imap.login(dovecot.user, dovecot.password)
            imap.select("INBOX", readonly=True)
            time.sleep(2.5)  # past the greeting, reply and handshake timers (1 s each)
            _, data = imap.fetch("1", "(BODY.PEEK[])")
            imap.logout()
        sessions = wait_for_sessions(tmp_path / "session.jsonl")
        proxy_log = log() + caplog.text
    assert data[0][1] == dovecot.known_message  # type: ignore[index]
    assert "has crashed" not in proxy_log and "Unexpected event" not in proxy_log, proxy_log
    [session] = sessions
    assert (session.tls_kind, session.protocol, session.sni) == ("starttls", "imap", IMAP)
    assert session.starttls is not None and session.starttls.server_reply
    assert judged(session, pki) == ("match", ())


@contextlib.contextmanager
def held_open_proxy(
    loaded: str, tmp: Path, pki: ScenarioPki, mode: str
) -> Iterator[tuple[int, Path, Callable[[], str]]]:
    """The proxy with a 1 s STARTTLS timeout: (port, its CA file, a reader of its log)."""
    if loaded == "in-process":
        with starttls_proxy(tmp, mode, pki, certmatch_starttls_timeout=1) as proxy:
            yield proxy.port, proxy.ca_file, lambda: ""
        return
    port = free_port()
    argv = stock_command(
        "mitmdump",
        port=port,
        mode=mode,
        confdir=tmp / "conf",
        record=tmp / "session.jsonl",
        ca_file=pki.root_ca,
    )
    argv += ["-s", str(REPO / "addons" / "starttls.py")]
    argv += ["--set", "certmatch_starttls_timeout=1"]
    with mitmdump_process(tmp, argv, port=port):
        yield port, tmp / "conf" / "mitmproxy-ca-cert.pem", (tmp / "proxy.log").read_text


def wait_for_sessions(record: Path, expected: int = 1, timeout: float = 5.0) -> list[SessionFacts]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # (the file exists a moment before its header is written)
        started = record.exists() and record.stat().st_size > 0
        if started and len(read_recording(record).sessions) >= expected:
            break
        time.sleep(0.05)
    return read_recording(record).sessions if record.exists() else []
