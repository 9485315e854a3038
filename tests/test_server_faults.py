"""Server faults and sessions that used to leave no record or a wrong one (issue 13, §4 and §5).

Each fault is named by its phase and its side: a server that closes during the TLS handshake,
one that closes after its greeting or while its reply to STARTTLS is due, one that never
greets, one that accepts STARTTLS and never answers the handshake; a client that pipelines
after STARTTLS and hangs up; a forward-proxy client that never sends its SOCKS5 or CONNECT
request. Real servers (dovecot) where they can show it; where a real server cannot misbehave
so, a few lines of socket code stand in for it. The clients are ``openssl s_client``,
Python's ssl and, where a real client cannot misbehave so, a bare socket.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from proxy_fixtures import RunningProxy, free_port, inprocess_proxy, mitmdump_process, venv_bin
from scenarios import SERVICE_NAMES, ScenarioPki
from servers import DovecotServer

from certmatch.core.facts import SessionFacts
from certmatch.core.recording import read_recording
from certmatch.proxy.starttls_layer import StartTlsAddon

pytestmark = pytest.mark.timeout(90)

IMAP, SMTP = SERVICE_NAMES["imap"], SERVICE_NAMES["smtp"]
BOUND_S = 2  # the handshake and STARTTLS timeouts of these tests
SLACK_S = 5  # a busy machine's allowance on top of a bound


# -- the stand-ins -------------------------------------------------------------------------


@contextlib.contextmanager
def fake_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on loopback running ``handle`` per connection, each in its own thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def one(conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn, contextlib.suppress(OSError):
            handle(conn)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

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


def until_eof(conn: socket.socket) -> None:
    """Read until the peer closes (the proxy giving up), dropping what arrives."""
    while conn.recv(4096):
        pass


def smtp_greeting_and_ehlo(conn: socket.socket) -> None:
    conn.sendall(b"220 smtp.example.test ESMTP stand-in\r\n")
    read_line(conn)  # EHLO
    conn.sendall(b"250-smtp.example.test\r\n250 STARTTLS\r\n")


# -- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def proxy(tmp: Path, mode: str, pki: ScenarioPki, **settings: object) -> Iterator[RunningProxy]:
    """The proxy with both addons and short timeouts, in a thread."""
    settings = {"starttls_timeout": BOUND_S, "handshake_timeout": BOUND_S, **settings}
    with inprocess_proxy(
        tmp, mode, extra_addons=(StartTlsAddon(),), ca_file=[str(pki.root_ca)], **settings
    ) as running:
        yield running


def all_sessions(record: Path) -> list[SessionFacts]:
    """Every session in the recording (read once the proxy has stopped)."""
    return read_recording(record).sessions


def checked(record: Path) -> list[tuple[str, list[str]]]:
    """``certmatch check --json`` on a recording: each session's verdict and causes."""
    done = subprocess.run(
        [venv_bin("certmatch"), "check", "--json", str(record)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    return [(s["verdict"], s["causes"]) for s in json.loads(done.stdout)["sessions"]]


def s_client_starttls(port: int, protocol: str, name: str) -> tuple[float, str]:
    """``openssl s_client -starttls``: seconds until it ends, and what it printed."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", protocol]
            + ["-servername", name],
            input=b"",
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as held:
        printed = (held.stdout or b"") + (held.stderr or b"")
        pytest.fail(f"the proxy held s_client for 60 s; it printed: {printed[-2000:]!r}")
    return time.monotonic() - started, (done.stdout + done.stderr).decode(errors="replace")


def tls_client(port: int, name: str, cafile: Path) -> float:
    """Python's ssl against the proxy: seconds until the handshake failed."""
    context = ssl.create_default_context(cafile=str(cafile))
    started = time.monotonic()
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)),
    ):
        raw.settimeout(30)
        context.wrap_socket(raw, server_hostname=name)
    return time.monotonic() - started


def closed_after(sock: socket.socket, limit: float = 60) -> float:
    """Seconds until the peer closes ``sock``."""
    started = time.monotonic()
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionError):
        until_eof(sock)
    return time.monotonic() - started


# -- §5: each server fault named by its phase ------------------------------------------------


def test_a_server_closing_during_the_tls_handshake_is_a_tls_failure(tmp_path, pki):
    """Was ``upstream-unreachable`` ("could not connect"): the server had accepted."""

    def closes_on_client_hello(conn: socket.socket) -> None:
        conn.recv(4096)

    with (
        fake_server(closes_on_client_hello) as port,
        proxy(tmp_path, f"reverse:tls://127.0.0.1:{port}", pki) as running,
    ):
        tls_client(running.port, IMAP, running.ca_file)
    [session] = all_sessions(running.record)
    assert session.server_error == (
        "the server closed the connection during the TLS handshake, before sending a certificate"
    )
    assert checked(running.record) == [("error", ["upstream-tls-failed"])]


def test_a_server_closing_during_the_handshake_after_starttls(tmp_path, pki):
    def closes_on_client_hello(conn: socket.socket) -> None:
        smtp_greeting_and_ehlo(conn)
        read_line(conn)  # STARTTLS
        conn.sendall(b"220 go ahead\r\n")
        conn.recv(4096)  # the ClientHello

    with (
        fake_server(closes_on_client_hello) as port,
        proxy(tmp_path, f"reverse:tcp://127.0.0.1:{port}", pki) as running,
    ):
        s_client_starttls(running.port, "smtp", SMTP)
    [session] = all_sessions(running.record)
    assert session.starttls is not None and session.starttls.phase == "handshake"
    assert session.server_error == (
        "the server closed the connection during the TLS handshake after accepting STARTTLS, "
        "before sending a certificate"
    )
    assert checked(running.record) == [("error", ["upstream-tls-failed"])]


def test_a_server_silent_after_accepting_starttls_is_a_timeout_with_its_error(tmp_path, pki):
    """Was recorded with ``server_error: null`` (so "could not connect")."""

    def silent_after_220(conn: socket.socket) -> None:
        smtp_greeting_and_ehlo(conn)
        read_line(conn)  # STARTTLS
        conn.sendall(b"220 go ahead\r\n")
        until_eof(conn)

    with (
        fake_server(silent_after_220) as port,
        proxy(tmp_path, f"reverse:tcp://127.0.0.1:{port}", pki) as running,
    ):
        took, _ = s_client_starttls(running.port, "smtp", SMTP)
    [session] = all_sessions(running.record)
    assert took < BOUND_S + SLACK_S
    assert session.server_error == (
        "timeout: the server did not complete the TLS handshake within 2 s after it accepted "
        "STARTTLS (certmatch_starttls_timeout=2)"
    )
    assert session.sni == SMTP  # the ClientHello's facts are kept
    assert checked(running.record) == [("error", ["upstream-tls-failed"])]


def test_a_server_closing_while_its_reply_to_starttls_is_due(tmp_path, pki):
    def closes_instead_of_replying(conn: socket.socket) -> None:
        smtp_greeting_and_ehlo(conn)
        read_line(conn)  # STARTTLS

    with (
        fake_server(closes_instead_of_replying) as port,
        proxy(tmp_path, f"reverse:tcp://127.0.0.1:{port}", pki) as running,
    ):
        s_client_starttls(running.port, "smtp", SMTP)
    [session] = all_sessions(running.record)
    assert session.starttls is not None and session.starttls.phase == "requested"
    assert session.server_error == (
        "the server closed the connection while the reply to STARTTLS was due"
    )
    assert session.client_error is None
    assert checked(running.record) == [("error", ["upstream-starttls-failed"])]


def test_a_server_closing_right_after_its_greeting(tmp_path, pki):
    def greets_and_closes(conn: socket.socket) -> None:
        conn.sendall(b"220 smtp.example.test ESMTP stand-in\r\n")

    with (
        fake_server(greets_and_closes) as port,
        proxy(tmp_path, f"reverse:tcp://127.0.0.1:{port}", pki) as running,
    ):
        released = _s_client_released(running.port)
    [session] = all_sessions(running.record)
    assert session.starttls is not None and session.starttls.phase == "plaintext"
    assert session.server_error == (
        "the server closed the connection after its greeting, before the client asked for STARTTLS"
    )
    # Not starttls-not-requested: the client had no chance to ask.
    assert checked(running.record) == [("error", ["upstream-starttls-failed"])]
    assert released, "the proxy held s_client after the server closed"


def test_a_client_hanging_up_as_the_server_closes_is_never_held(tmp_path, pki):
    """The server greets and closes while s_client is ending too. mitmproxy cancelled the
    client's reader while its end-of-file waited to be delivered and never closed the socket
    (CLOSE-WAIT, s_client held): about once in fifteen tries before certmatch.proxy.close_race.
    """

    def greets_and_closes(conn: socket.socket) -> None:
        conn.sendall(b"220 smtp.example.test ESMTP stand-in\r\n")

    held = 0
    for attempt in range(20):
        work = tmp_path / str(attempt)
        work.mkdir()
        with (
            fake_server(greets_and_closes) as port,
            proxy(work, f"reverse:tcp://127.0.0.1:{port}", pki) as running,
        ):
            held += not _s_client_released(running.port)
    assert held == 0, f"s_client held in {held} of 20 sessions"


def _s_client_released(port: int) -> bool:
    """Whether ``s_client -starttls smtp`` was let go within 8 s."""
    try:
        subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp"]
            + ["-servername", SMTP],
            input=b"",
            capture_output=True,
            timeout=8,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_real_server_closing_after_logout_is_no_fault(tmp_path, pki, dovecot: DovecotServer):
    """The same close after the client's LOGOUT is the normal end of a session."""
    with (
        proxy(tmp_path, f"reverse:tcp://127.0.0.1:{dovecot.imap_port}", pki) as running,
        socket.create_connection(("127.0.0.1", running.port), 10) as raw,
    ):
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        raw.sendall(b"a LOGOUT\r\n")
        until_eof(raw)
    [session] = all_sessions(running.record)
    assert session.server_error is None
    assert checked(running.record) == [("error", ["starttls-not-requested"])]


# -- §4: sessions that left no record -------------------------------------------------------


@pytest.mark.parametrize("client", ["openssl s_client", "bare socket"])
def test_a_server_that_never_greets_is_recorded_within_the_starttls_timeout(
    client: str, tmp_path, pki
):
    """Was: no record, and the client held for its own timeout (40 s against a documented
    30 s). The proxy is told the protocol (``--starttls smtp``): a silent server names none."""
    with (
        fake_server(until_eof) as port,
        proxy(tmp_path, f"reverse:tcp://127.0.0.1:{port}", pki, starttls="smtp") as running,
    ):
        if client == "openssl s_client":
            took, _ = s_client_starttls(running.port, "smtp", SMTP)
        else:
            with socket.create_connection(("127.0.0.1", running.port)) as raw:
                took = closed_after(raw)
    [session] = all_sessions(running.record)
    assert BOUND_S - 0.5 <= took < BOUND_S + SLACK_S
    assert (session.protocol, session.tls_kind) == ("smtp", "starttls")
    assert session.starttls is not None and session.starttls.phase == "greeting"
    assert session.server_error == "timeout: the server sent no greeting within 2 s"
    assert session.client_decision is None  # the proxy closed it, the client decided nothing
    assert checked(running.record) == [("error", ["upstream-starttls-failed"])]


def test_with_no_protocol_known_a_silent_pair_is_recorded_within_the_starttls_timeout(
    tmp_path, pki
):
    """Auto mode, a port no protocol is known for, nobody speaks: the proxy cannot tell a
    server that never greets from a client that never sends its ClientHello, and says so."""
    with (
        fake_server(until_eof) as port,
        proxy(tmp_path, f"reverse:tcp://127.0.0.1:{port}", pki, starttls_timeout=3) as running,
        socket.create_connection(("127.0.0.1", running.port)) as raw,
    ):
        took = closed_after(raw)
    [session] = all_sessions(running.record)
    assert 3 - 0.5 <= took < 3 + SLACK_S  # the greeting's wait, not the 2 s handshake bound
    assert session.client_error == (
        "timeout: the client sent no TLS ClientHello within 3 s (and the server no greeting)"
    )
    assert checked(running.record) == [("error", ["client-stopped-before-handshake"])]


@pytest.mark.parametrize("when", ["after the server's reply", "at once"])
def test_a_client_pipelining_after_starttls_then_hanging_up_is_recorded_with_the_injection(
    when: str, tmp_path, pki, dovecot: DovecotServer
):
    """Was: no record, so the injection finding was lost. A real client does not misbehave
    so; a bare socket does, against dovecot."""
    with proxy(tmp_path, f"reverse:tcp://127.0.0.1:{dovecot.imap_port}", pki) as running:
        with socket.create_connection(("127.0.0.1", running.port), 10) as raw:
            reader = raw.makefile("rb")
            assert reader.readline().startswith(b"* OK")
            raw.sendall(b"a STARTTLS\r\nb NOOP\r\n")
            if when == "after the server's reply":
                assert reader.readline().startswith(b"a OK")
        deadline = time.monotonic() + 10
        while not running.sessions(1, timeout=0.2) and time.monotonic() < deadline:
            pass
    [session] = all_sessions(running.record)
    assert (session.protocol, session.tls_kind) == ("imap", "starttls")
    assert session.starttls is not None
    assert session.starttls.injection == (
        "the client sent 8 byte(s) after its STARTTLS request, before the server's reply"
    )
    [(verdict, causes)] = checked(running.record)
    assert (verdict, causes[0]) == ("error", "starttls-injection")
    assert set(causes) <= {"starttls-injection", "client-stopped-before-handshake"}


# -- the handshake timeout before a forward proxy's request ---------------------------------


@pytest.mark.parametrize(
    ("mode", "preamble", "awaited"),
    [
        ("socks5", b"", "SOCKS5 request"),
        ("socks5", b"\x05\x01\x00", "SOCKS5 request"),  # the greeting, then no request
        ("regular", b"", "HTTP CONNECT request"),
        ("regular", b"CONNECT imap.example.test:143 HTTP/1.1\r\n", "HTTP CONNECT request"),
    ],
)
def test_a_forward_proxy_client_that_never_sends_its_request_is_closed_and_recorded(
    mode: str, preamble: bytes, awaited: str, tmp_path, pki
):
    """Was: held for mitmproxy's 600 s idle timeout, then recorded as a probe."""
    with (
        proxy(tmp_path, mode, pki) as running,
        socket.create_connection(("127.0.0.1", running.port)) as raw,
    ):
        raw.sendall(preamble)
        took = closed_after(raw)
    [session] = all_sessions(running.record)
    assert BOUND_S - 0.5 <= took < BOUND_S + SLACK_S
    assert session.client_error == f"timeout: the client sent no {awaited} within 2 s"
    assert "certmatch closed the connection (certmatch_handshake_timeout=2)" in session.notes
    assert checked(running.record) == [("error", ["client-stopped-before-handshake"])]


def test_a_socks5_session_to_a_real_server_is_not_cut_by_the_request_bound(
    tmp_path, pki, dovecot: DovecotServer
):
    """The bound is on the wait for the request and the handshake, not on the session."""
    with (
        proxy(tmp_path, "socks5", pki, handshake_timeout=1, starttls_timeout=1) as running,
        socket.create_connection(("127.0.0.1", running.port), 10) as raw,
    ):
        raw.sendall(b"\x05\x01\x00")
        assert raw.recv(2) == b"\x05\x00"
        port = struct.pack("!H", dovecot.imaps_port)
        raw.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + port)
        assert raw.recv(10)[:2] == b"\x05\x00"
        context = ssl.create_default_context(cafile=str(running.ca_file))
        with context.wrap_socket(raw, server_hostname=IMAP) as tls:
            tls.settimeout(10)
            assert tls.recv(1024).startswith(b"* OK")
            time.sleep(1.5)  # idle past both bounds, after the handshake
            tls.sendall(b"a NOOP\r\n")
            assert b"a OK" in tls.recv(1024)
            tls.sendall(b"z LOGOUT\r\n")
    [session] = all_sessions(running.record)
    assert session.client_decision == "went-on" and session.client_error is None


def test_certmatch_proxy_records_a_server_that_never_greets_within_its_starttls_timeout(
    tmp_path, pki
):
    """The same through ``certmatch proxy`` and its documented options, as a user runs it."""
    port = free_port()
    record = tmp_path / "rec.jsonl"
    with fake_server(until_eof) as server_port:
        argv = [venv_bin("certmatch"), "proxy", "--mode", f"reverse:tcp://127.0.0.1:{server_port}"]
        argv += ["--listen-port", str(port), "--record", str(record), "--no-dns"]
        argv += ["--starttls", "imap", "--starttls-timeout", "2", "--handshake-timeout", "1"]
        argv += ["--confdir", str(tmp_path / "conf")]
        with mitmdump_process(tmp_path, argv, port=port):
            took, _ = s_client_starttls(port, "imap", IMAP)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(all_sessions(record)) < 1:
                time.sleep(0.05)
    assert 2 - 0.5 <= took < 2 + SLACK_S  # the greeting's wait, not the 1 s handshake bound
    [session] = all_sessions(record)
    assert session.starttls is not None and session.starttls.phase == "greeting"
    assert session.server_error == "timeout: the server sent no greeting within 2 s"
    assert checked(record) == [("error", ["upstream-starttls-failed"])]
