"""Observe mode on bad input: each session is recorded with the phase it reached, and the relay
never stalls, reorders or drops a byte.

Fake servers only where a real one cannot misbehave this way (a 1 MB Certificate, a reset
mid-handshake, a side handshake that hangs); the split ClientHello goes to real dovecot.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from proxy_fixtures import RunningProxy, inprocess_proxy

from certmatch.core.judge import Judge
from certmatch.core.trust import TrustStore
from certmatch.proxy.observe import ObserveAddon
from certmatch.proxy.starttls_layer import StartTlsAddon

GOOD = "imap.example.test"


class FakeServer:
    """A TCP server on loopback running ``handler(conn, index)`` per connection in a thread."""

    def __init__(self, handler: Callable[[socket.socket, int], None]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._run, args=(conn, index), daemon=True).start()

    def _run(self, conn: socket.socket, index: int) -> None:
        with contextlib.suppress(OSError), conn:
            self.handler(conn, index)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def fake_server(handler: Callable[[socket.socket, int], None]) -> Iterator[FakeServer]:
    server = FakeServer(handler)
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def observing(tmp: Path, port: int, pki, **options: object) -> Iterator[RunningProxy]:
    with inprocess_proxy(
        tmp,
        f"reverse:tls://127.0.0.1:{port}",
        addon=ObserveAddon(),  # type: ignore[arg-type]
        extra_addons=(StartTlsAddon(),),
        ca_file=[str(pki.root_ca)],
        **options,
    ) as proxy:
        yield proxy


def read_all(conn: socket.socket, timeout: float = 5.0) -> bytes:
    conn.settimeout(timeout)
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def real_client_hello(name: str, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def notes(session) -> str:
    return " | ".join(session.notes)


# -- a ClientHello split over TCP segments, to real dovecot -----------------------------------


def test_client_hello_split_over_segments(tmp_path: Path, dovecot, pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.root_ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=GOOD)
    with observing(tmp_path, dovecot.imaps_port, pki) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock:
            first = True
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pass
                data = outgoing.read()
                if first:
                    for i in range(0, len(data), 7):  # one segment per 7 bytes
                        sock.sendall(data[i : i + 7])
                        time.sleep(0.002)
                    first = False
                elif data:
                    sock.sendall(data)
                incoming.write(sock.recv(65536))
            sock.sendall(outgoing.read())
            tls.write(b"a LOGOUT\r\n")
            sock.sendall(outgoing.read())
            time.sleep(0.2)
        [session] = proxy.sessions(1, timeout=10)
    assert session.sni == GOOD
    assert session.chain_source == "wire" and session.chain
    assert session.client_decision == "went-on"
    assert Judge(TrustStore.load([pki.root_ca])).diagnose(session).verdict == "match"


# -- bytes that are not TLS, and an SSLv2-compatible hello: relayed exactly ------------------

SERVER_REPLY = os.urandom(200_000)


def _echo_reply(conn: socket.socket, _: int) -> None:
    """Reads what the client sends until it half-closes, then answers with SERVER_REPLY."""
    FakeServerState.got.append(read_all(conn))
    conn.sendall(SERVER_REPLY)


class FakeServerState:
    got: ClassVar[list[bytes]] = []


@pytest.mark.parametrize(
    ("first", "phase"),
    [
        (b"a1 LOGIN user pass\r\n", "not-tls"),
        (bytes([0x80, 0x2E, 0x01, 0x03, 0x01]) + bytes(43), "sslv2-hello"),
    ],
    ids=["plaintext", "sslv2-hello"],
)
def test_non_tls_bytes_are_relayed_exactly_and_recorded(
    tmp_path: Path, pki, first: bytes, phase: str
) -> None:
    FakeServerState.got = []
    sent = first + os.urandom(300_000)
    with fake_server(_echo_reply) as server, observing(tmp_path, server.port, pki) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with sock:
            sock.sendall(sent)
            sock.shutdown(socket.SHUT_WR)
            received = read_all(sock)
        [session] = proxy.sessions(1, timeout=10)
    assert FakeServerState.got == [sent]
    assert received == SERVER_REPLY
    assert f"phase {phase}" in notes(session)
    assert session.client_decision is None


# -- a 1 MB Certificate from a misbehaving server --------------------------------------------


def _record(content_type: int, body: bytes) -> bytes:
    return bytes([content_type, 3, 3]) + struct.pack(">H", len(body)) + body


def _handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def huge_certificate_flight(leaf_der: bytes) -> bytes:
    hello = b"\x03\x03" + bytes(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
    filler = os.urandom(1024 * 1024)
    entries = len(leaf_der).to_bytes(3, "big") + leaf_der + len(filler).to_bytes(3, "big") + filler
    messages = (
        _handshake(2, hello)
        + _handshake(11, len(entries).to_bytes(3, "big") + entries)
        + _handshake(14, b"")
    )
    return b"".join(_record(22, messages[i : i + 2**14]) for i in range(0, len(messages), 2**14))


def test_one_megabyte_certificate_is_relayed_and_read_bounded(tmp_path: Path, pki) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = pki.for_scenario("correct").leaf.public_bytes(Encoding.DER)
    flight = huge_certificate_flight(leaf)

    def server(conn: socket.socket, _: int) -> None:
        conn.recv(65536)  # the ClientHello
        conn.sendall(flight)
        conn.shutdown(socket.SHUT_WR)
        read_all(conn)

    hello = real_client_hello(GOOD)
    with fake_server(server) as fake, observing(tmp_path, fake.port, pki) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with sock:
            sock.sendall(hello)
            received = read_exactly(sock, len(flight))
            sock.close()
        [session] = proxy.sessions(1, timeout=10)
    assert received == flight
    assert session.chain_source == "wire"
    assert len(session.chain) == 1  # the leaf; the 1 MB second entry is past the prefix
    assert "only its first 65536 were read" in notes(session)
    assert session.client_decision is None  # the server closed first: nothing to tell


# -- a server reset mid-handshake ------------------------------------------------------------


def test_server_reset_mid_handshake(tmp_path: Path, pki) -> None:
    def server(conn: socket.socket, _: int) -> None:
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with fake_server(server) as fake, observing(tmp_path, fake.port, pki) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with sock:
            sock.sendall(real_client_hello(GOOD))
            assert read_all(sock) == b""
        [session] = proxy.sessions(1, timeout=10)
    assert session.sni == GOOD
    assert "the server closed the connection during the handshake (phase client-hello)" in (
        session.server_error or ""
    )
    assert "phase client-hello" in notes(session)
    assert session.client_decision is None


# -- a side handshake that hangs never delays the relayed session -----------------------------


def test_side_handshake_timeout_does_not_delay_the_session(tmp_path: Path, pki) -> None:
    served = pki.for_scenario("correct")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(served.chain, served.key)
    context.minimum_version = ssl.TLSVersion.TLSv1_3

    def server(conn: socket.socket, index: int) -> None:
        if index > 0:
            time.sleep(4)  # the side handshake: accepted, never answered
            return
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"* OK fake IMAP ready\r\n")
            tls.recv(1024)
            tls.sendall(b"* BYE\r\na OK LOGOUT\r\n")

    client_context = ssl.create_default_context(cafile=str(pki.root_ca))
    with (
        fake_server(server) as fake,
        observing(tmp_path, fake.port, pki, side_handshake_timeout=1) as proxy,
    ):
        start = time.monotonic()
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with client_context.wrap_socket(raw, server_hostname=GOOD) as tls:
            assert tls.recv(1024).startswith(b"* OK")
            tls.sendall(b"a LOGOUT\r\n")
            assert b"BYE" in tls.recv(1024)
        elapsed = time.monotonic() - start
        [session] = proxy.sessions(1, timeout=10)
    assert elapsed < 0.9, elapsed  # the 1 s side-handshake timeout did not hold it up
    assert session.client_decision == "went-on"
    assert session.chain_source == "side-handshake" and session.chain == []
    assert "side handshake" in (session.server_error or "")
    assert "within 1 s" in (session.server_error or "")
    # A warning of its own, not a TLS failure of the server the client itself got on with.
    diagnosis = Judge(TrustStore.load([str(pki.root_ca)], use_system=False)).diagnose(session)
    assert diagnosis.verdict == "error" and diagnosis.cause_ids == ("side-handshake-failed",)
    [finding] = diagnosis.findings
    assert finding.cause.severity == "warning" and "within 1 s" in finding.explanation
    if keep := os.environ.get("CERTMATCH_KEEP_RECORDING"):
        Path(keep).write_bytes(proxy.record.read_bytes())  # how the sample recording was made


# -- connections that never reach a layer ---------------------------------------------------


def test_a_port_check_and_an_unreachable_server_leave_a_record(
    tmp_path: Path, dovecot, pki
) -> None:
    with observing(tmp_path, dovecot.imaps_port, pki) as proxy:
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5).close()
        [probe] = proxy.sessions(1, timeout=10)
    assert probe.client_decision == "closed-before-handshake"
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    with observing(tmp_path / "dead", port, pki) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(real_client_hello(GOOD))
            assert read_all(sock) == b""
        [unreachable] = proxy.sessions(1, timeout=10)
    assert (unreachable.server_error or "").startswith("cannot connect")
    verdict = Judge(TrustStore.load([pki.root_ca])).diagnose(unreachable)
    assert verdict.verdict == "error" and verdict.primary.id == "upstream-unreachable"


def test_a_client_alert_before_any_certificate_is_recorded(tmp_path: Path, pki) -> None:
    """A TLS 1.2 server that answers with a ServerHello the client rejects (a cipher suite it
    never offered): the client alerts before any Certificate, and the session is still
    written, with its decision and why there is no chain."""
    bogus_hello = _handshake(2, b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x37" + b"\x00")

    def server(conn: socket.socket, _: int) -> None:
        conn.recv(65536)
        conn.sendall(_record(22, bogus_hello))
        read_all(conn, timeout=3)

    context = ssl.create_default_context(cafile=str(pki.root_ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with fake_server(server) as fake, observing(tmp_path, fake.port, pki) as proxy:
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname=GOOD)
        raw.close()
        [session] = proxy.sessions(1, timeout=10)
    assert session.client_decision == "alert" and session.client_alert is not None
    assert session.chain == []
    assert "phase server-hello" in (session.server_error or "")


# -- STARTTLS: plaintext the server sends after accepting, before the handshake -------------


def test_starttls_injection_is_recorded_in_observe_mode(tmp_path: Path, pki) -> None:
    """The server answers STARTTLS with its 220 and 14 more plaintext bytes. Observe mode
    relays them and records the injection as the intercepting proxy does (starttls-injection)."""
    import smtplib

    from test_starttls_e2e import read_line, smtp_until_starttls

    served = pki.for_scenario("correct")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(served.chain, served.key)

    def injecting(conn: socket.socket, _: int) -> None:
        smtp_until_starttls(conn)
        conn.sendall(b"220 go ahead\r\n250 injected\r\n")
        with server_tls.wrap_socket(conn, server_side=True) as tls:
            read_line(tls)
            tls.sendall(b"250 smtp.example.test\r\n")
            read_line(tls)

    with (
        fake_server(injecting) as fake,
        inprocess_proxy(
            tmp_path,
            f"reverse:tcp://127.0.0.1:{fake.port}",
            addon=ObserveAddon(),  # type: ignore[arg-type]
            extra_addons=(StartTlsAddon(),),
            ca_file=[str(pki.root_ca)],
        ) as proxy,
    ):
        with contextlib.suppress(smtplib.SMTPException, ssl.SSLError, OSError):
            client = smtplib.SMTP("127.0.0.1", proxy.port, timeout=5)
            client.starttls(context=ssl.create_default_context(cafile=str(pki.root_ca)))
            client.ehlo()
            client.close()
        [session] = proxy.sessions(1, timeout=10)
    assert session.starttls is not None
    assert session.starttls.injection == (
        "the server sent 14 byte(s) after its positive STARTTLS reply, before the TLS handshake"
    )
    verdict = Judge(TrustStore.load([pki.root_ca])).diagnose(session)
    assert "starttls-injection" in verdict.cause_ids
    # Observe mode alters nothing: the client got the injected bytes too, and Python's ssl
    # aborted its handshake on them with an alert (the intercepting proxy drops them).
    assert session.client_decision == "alert"
