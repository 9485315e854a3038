"""Reading TLS from relayed bytes (certmatch.core.tls_wire) and the client's decision from them
(certmatch.core.observed_decision).

The handshakes are real: OpenSSL on both sides through memory BIOs (no socket), the client
verifying the server's name against its own CA, so the records are exactly what a relay
would see. Hand-made bytes only for what a real stack will not send (an SSLv2 hello, junk,
a 1 MB Certificate).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certmatch.core import tls_wire
from certmatch.core.observed_decision import (
    ALERT_RECORD_MAX,
    FINISHED_RECORD_MIN,
    observed_decision,
)
from certmatch.core.tls_wire import WireSession
from certmatch.lab import pki

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = pki.make_ca("Wire Root")
    leaf = pki.issue_leaf(root, dns=["imap.example.test"])
    directory = tmp_path_factory.mktemp("wire")
    paths = leaf.write(directory, "leaf")
    (directory / "root.pem").write_bytes(root.cert_pem())
    return {"chain": paths["chain"], "key": paths["key"], "root": directory / "root.pem"}


@dataclass
class Pair:
    """A client and a server SSLObject joined by memory BIOs; every byte is also fed to a
    WireSession in the order a relay would relay it."""

    client: ssl.SSLObject
    server: ssl.SSLObject
    c_in: ssl.MemoryBIO
    c_out: ssl.MemoryBIO
    s_in: ssl.MemoryBIO
    s_out: ssl.MemoryBIO
    wire: WireSession = field(default_factory=WireSession)
    chunk: int | None = None  # feed the wire this many bytes at a time

    def _feed(self, data: bytes, from_client: bool) -> None:
        step = self.chunk or len(data) or 1
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            (self.wire.client_data if from_client else self.wire.server_data)(piece)

    def flush(self) -> None:
        if data := self.c_out.read():
            self._feed(data, True)
            self.s_in.write(data)
        if data := self.s_out.read():
            self._feed(data, False)
            self.c_in.write(data)

    def handshake(self) -> Exception | None:
        """Run both handshakes; the client's error, if it refused."""
        client_done = server_done = False
        for _ in range(20):
            if not client_done:
                try:
                    self.client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    self.flush()
                    return exc
            self.flush()
            if not server_done:
                try:
                    self.server.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    server_done = True
            self.flush()
            if client_done and server_done:
                return None
        raise AssertionError("handshake did not finish")

    def client_sends(self, data: bytes) -> None:
        self.client.write(data)
        self.flush()


def make_pair(
    certs: dict[str, Path], name: str, version: ssl.TLSVersion, chunk: int | None = None
) -> Pair:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs["chain"], certs["key"])
    server_ctx.maximum_version = version
    server_ctx.set_alpn_protocols(["imap"])
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(certs["root"])
    client_ctx.maximum_version = version
    client_ctx.set_alpn_protocols(["imap", "x-other"])
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    return Pair(client, server, c_in, c_out, s_in, s_out, chunk=chunk)


TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_tls12_good_name_chain_from_the_wire_and_went_on(certs, chunk) -> None:
    pair = make_pair(certs, "imap.example.test", TLS12, chunk=chunk)
    assert pair.handshake() is None
    wire = pair.wire
    hello = wire.client_hello
    assert hello is not None and hello.sni == "imap.example.test"
    assert hello.alpn == ["imap", "x-other"]
    assert hello.signature_algorithms and "rsa_pss_rsae_sha256" in hello.signature_algorithms
    assert "TLSv1.2" in hello.versions
    assert wire.server_hello is not None and wire.server_hello.version == "TLSv1.2"
    assert wire.phase == tls_wire.PHASE_SERVER_DONE
    assert len(wire.chain) == 1 and not wire.chain_truncated
    assert wire.chain[0] == pair.client.getpeercert(binary_form=True)
    assert not wire.resumed
    # Handshake done, nothing sent yet: no decision until it acts or closes.
    assert observed_decision(wire, client_spoke=True).decision is None
    pair.client_sends(b"a1 LOGOUT\r\n")
    decided = observed_decision(wire, client_spoke=True)
    assert decided.decision == "went-on" and decided.final


def test_tls12_wrong_name_is_a_cleartext_alert_named(certs) -> None:
    pair = make_pair(certs, "wrong.example.test", TLS12)
    error = pair.handshake()
    assert isinstance(error, ssl.SSLCertVerificationError)
    decided = observed_decision(pair.wire, client_spoke=True)
    assert decided.decision == "alert" and decided.final
    assert decided.alert_code in (42, 46, 48)  # OpenSSL: bad_certificate for a name mismatch
    assert pair.wire.chain  # read before the client refused it


def test_tls13_good_name_finished_then_data(certs) -> None:
    pair = make_pair(certs, "imap.example.test", TLS13)
    assert pair.handshake() is None
    wire = pair.wire
    assert wire.tls13 and wire.phase == tls_wire.PHASE_ENCRYPTED
    assert wire.chain == []  # encrypted: a side handshake must fetch it
    encrypted = [n for t, n in wire.client_records if t == tls_wire.APPLICATION_DATA]
    assert encrypted and encrypted[0] >= FINISHED_RECORD_MIN
    decided = observed_decision(wire, client_spoke=True)
    assert decided.decision is None and decided.handshake_done
    pair.client_sends(b"a1 CAPABILITY\r\n")
    assert observed_decision(wire, client_spoke=True).decision == "went-on"


def test_tls13_wrong_name_openssl_alerts_in_clear(certs) -> None:
    """OpenSSL has not installed its handshake write keys when it refuses the server's
    certificate, so even in TLS 1.3 its alert is a 2-byte cleartext record, and named."""
    pair = make_pair(certs, "wrong.example.test", TLS13)
    assert isinstance(pair.handshake(), ssl.SSLCertVerificationError)
    assert pair.wire.client_records == [(tls_wire.ALERT, 2)]
    decided = observed_decision(pair.wire, client_spoke=True)
    assert decided.decision == "alert" and decided.alert_code == 42 and decided.final


def tls13_wire(client_records: list[tuple[int, int]]) -> WireSession:
    """A TLS 1.3 session after the ServerHello, with these client records (type, length)."""
    wire = WireSession()
    wire.client_data(record(22, handshake_message(1, client_hello_body(b"a.example"))))
    versions = b"\x00\x2b\x00\x02\x03\x04"
    hello = b"\x03\x03" + bytes(32) + b"\x00\x13\x01\x00" + len(versions).to_bytes(2) + versions
    wire.server_data(record(22, handshake_message(tls_wire.SERVER_HELLO, hello)))
    assert wire.tls13
    for content_type, length in client_records:
        wire.client_data(record(content_type, bytes(length)))
    return wire


@pytest.mark.parametrize(
    ("records", "closed", "expected"),
    [
        # An encrypted alert (2 + 1 + 16 bytes) instead of Finished: refused.
        ([(20, 1), (23, 19)], None, "alert"),
        ([(23, 19)], None, "alert"),
        # CCM_8's 8-byte tag makes the alert 11 bytes.
        ([(23, 11)], None, "alert"),
        # Finished (4 + 32 + 1 + 16 = 53, or 69 with SHA-384), then data: went on.
        ([(20, 1), (23, 53), (23, 40)], None, "went-on"),
        ([(23, 69), (23, 100)], None, "went-on"),
        # Finished then a 19-byte record (a close_notify, or 2 bytes of data): not going on.
        ([(23, 53), (23, 19)], None, None),
        ([(23, 53), (23, 19)], "client", "closed-after-handshake"),
        # The server answered the client's close_notify before the client's FIN arrived.
        ([(23, 53), (23, 19)], "server", "closed-after-handshake"),
        ([(23, 53)], "server", None),
        # An empty client Certificate (25 bytes) decides nothing; the next record does.
        ([(23, 25), (23, 19)], None, "alert"),
        ([(23, 25), (23, 53), (23, 30)], None, "went-on"),
        # Closed with no record after the ServerHello.
        ([], "client", "closed-during-handshake"),
        ([], "server", None),
    ],
)
def test_tls13_decision_rule_from_record_lengths(records, closed, expected) -> None:
    assert ALERT_RECORD_MAX == 19 and FINISHED_RECORD_MIN == 45
    decided = observed_decision(tls13_wire(records), client_spoke=True, closed_first=closed)
    assert decided.decision == expected
    if expected == "alert":
        assert decided.alert_code is None  # encrypted: not named


def test_tls13_close_after_handshake_without_data(certs) -> None:
    pair = make_pair(certs, "imap.example.test", TLS13)
    assert pair.handshake() is None
    decided = observed_decision(pair.wire, client_spoke=True, closed_first="client")
    assert decided.decision == "closed-after-handshake"
    # The server closing first tells nothing about the client.
    assert observed_decision(pair.wire, client_spoke=True, closed_first="server").decision is None


def test_tls13_close_notify_is_not_going_on(certs) -> None:
    pair = make_pair(certs, "imap.example.test", TLS13)
    assert pair.handshake() is None
    try:
        pair.client.unwrap()
    except ssl.SSLWantReadError:
        pass
    pair.flush()
    assert observed_decision(pair.wire, client_spoke=True).decision is None
    closed = observed_decision(pair.wire, client_spoke=True, closed_first="client")
    assert closed.decision == "closed-after-handshake"


def test_client_closed_mid_handshake(certs) -> None:
    pair = make_pair(certs, "imap.example.test", TLS12)
    try:
        pair.client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    pair.flush()
    assert pair.wire.phase == tls_wire.PHASE_CLIENT_HELLO
    decided = observed_decision(pair.wire, client_spoke=True, closed_first="client")
    assert decided.decision == "closed-during-handshake"


def test_closed_before_any_byte() -> None:
    decided = observed_decision(WireSession(), client_spoke=False, closed_first="client")
    assert decided.decision == "closed-before-handshake"


# -- hand-made bytes: what real stacks will not send ------------------------------------


def record(content_type: int, body: bytes, version: bytes = b"\x03\x03") -> bytes:
    return bytes([content_type]) + version + len(body).to_bytes(2) + body


def handshake_message(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3) + body


def client_hello_body(sni: bytes | None) -> bytes:
    extensions = b""
    if sni is not None:
        entry = b"\x00" + len(sni).to_bytes(2) + sni
        ext = len(entry).to_bytes(2) + entry
        extensions += b"\x00\x00" + len(ext).to_bytes(2) + ext
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    return body + len(extensions).to_bytes(2) + extensions


def server_hello_body() -> bytes:
    return b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x2f" + b"\x00"


def test_client_hello_split_over_records_keeps_the_sni_exactly() -> None:
    message = handshake_message(tls_wire.CLIENT_HELLO, client_hello_body(b"Mail.Example.TEST."))
    wire = WireSession()
    for i in range(0, len(message), 10):  # one record per 10 bytes
        wire.client_data(record(tls_wire.HANDSHAKE, message[i : i + 10], b"\x03\x01"))
    assert wire.client_hello is not None and wire.client_hello.sni == "Mail.Example.TEST."
    assert wire.client_hello.signature_algorithms is None  # none sent, none invented


def test_no_sni_is_none() -> None:
    wire = WireSession()
    wire.client_data(record(22, handshake_message(1, client_hello_body(None))))
    assert wire.client_hello is not None and wire.client_hello.sni is None


def test_sslv2_hello_is_recognised_and_left_alone() -> None:
    v2 = bytes([0x80, 0x2E, 0x01, 0x03, 0x01]) + bytes(43)
    assert tls_wire.starts_like_sslv2_hello(v2)
    assert tls_wire.starts_like_sslv2_hello(bytes([0x80, 0x2E, 0x01, 0x00, 0x02]))  # SSL 2.0
    assert not tls_wire.starts_like_sslv2_hello(b"\x16\x03\x01\x02\x00")
    wire = WireSession()
    wire.client_data(v2)
    assert wire.phase == tls_wire.PHASE_SSLV2 and wire.finished
    assert wire.client_hello is None


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\n\r\n", b"a1 LOGIN x y\r\n", b"\x16\x07xx"])
def test_non_tls_bytes_stop_the_reading(junk: bytes) -> None:
    wire = WireSession()
    wire.client_data(junk)
    wire.client_data(b"more" * 1000)
    assert wire.finished and wire.error
    assert wire.phase in (tls_wire.PHASE_NOT_TLS, tls_wire.PHASE_START)


def test_a_record_longer_than_tls_allows_stops_the_reading() -> None:
    wire = WireSession()
    wire.client_data(b"\x16\x03\x01\x48\x01")  # 2^14 + 2049
    assert wire.finished and "longer than TLS allows" in (wire.error or "")


def test_one_megabyte_certificate_keeps_a_bounded_prefix(certs) -> None:
    leaf = certs["chain"].read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(leaf).public_bytes(Encoding.DER)
    filler = bytes(1024 * 1024)
    entries = len(der).to_bytes(3) + der + len(filler).to_bytes(3) + filler
    body = len(entries).to_bytes(3) + entries
    message = handshake_message(tls_wire.CERTIFICATE, body)
    wire = WireSession()
    wire.client_data(record(22, handshake_message(1, client_hello_body(b"a.example"))))
    wire.server_data(record(22, handshake_message(tls_wire.SERVER_HELLO, server_hello_body())))
    for i in range(0, len(message), 2**14):
        wire.server_data(record(22, message[i : i + 2**14]))
        assert len(wire._server._hs) <= tls_wire.MAX_HANDSHAKE_PREFIX  # bounded throughout
    assert wire.phase == tls_wire.PHASE_CERTIFICATE
    assert wire.chain == [der] and wire.chain_truncated
    assert wire.certificate_length == len(body)
    wire.server_data(record(22, handshake_message(tls_wire.SERVER_HELLO_DONE, b"")))
    assert wire.phase == tls_wire.PHASE_SERVER_DONE


def test_signature_scheme_names() -> None:
    assert tls_wire.signature_scheme_name(0x0804) == "rsa_pss_rsae_sha256"
    assert tls_wire.signature_scheme_name(0x0403) == "ecdsa_secp256r1_sha256"
    assert tls_wire.signature_scheme_name(0x0302) == "0x0302"


def test_a_client_that_leaves_tls_after_the_handshake_closed_it(certs) -> None:
    """OpenLDAP's ldapsearch refuses after StartTLS by sending its UnbindRequest in clear."""
    pair = make_pair(certs, "imap.example.test", TLS13)
    assert pair.handshake() is None
    pair.wire.client_data(bytes.fromhex("30050201024200"))
    decided = observed_decision(pair.wire, client_spoke=True)
    assert pair.wire.client_left_tls and pair.wire.finished
    assert decided.decision == "closed-after-handshake" and decided.final


def test_hello_retry_request_then_the_real_server_hello() -> None:
    """RFC 8446 §4.1.4: after a HelloRetryRequest (and the compatibility CCS both sides may
    send, §D.4) the client sends a second ClientHello and the server its ServerHello, in
    clear; the decision is read from the records after that ServerHello."""
    versions = b"\x00\x2b\x00\x02\x03\x04"
    extensions = len(versions).to_bytes(2) + versions

    def hello(random: bytes) -> bytes:
        body = b"\x03\x03" + random + b"\x00\x13\x01\x00" + extensions
        return record(22, handshake_message(tls_wire.SERVER_HELLO, body))

    wire = WireSession()
    wire.client_data(record(22, handshake_message(1, client_hello_body(b"a.example"))))
    wire.server_data(hello(tls_wire.HELLO_RETRY_RANDOM) + record(20, b"\x01"))
    assert wire.hello_retry and wire.server_hello and wire.server_hello.hello_retry
    wire.client_data(
        record(20, b"\x01") + record(22, handshake_message(1, client_hello_body(b"a.example")))
    )
    wire.server_data(hello(bytes(range(32))) + record(23, bytes(100)))
    assert wire.server_hello is not None and not wire.server_hello.hello_retry
    assert wire.tls13 and wire.phase == tls_wire.PHASE_ENCRYPTED
    wire.client_data(record(23, bytes(53)) + record(23, bytes(40)))
    assert observed_decision(wire, client_spoke=True).decision == "went-on"
    wire2 = WireSession()
    wire2.client_data(record(22, handshake_message(1, client_hello_body(b"a.example"))))
    wire2.server_data(hello(tls_wire.HELLO_RETRY_RANDOM) + record(20, b"\x01"))
    wire2.client_data(
        record(20, b"\x01") + record(22, handshake_message(1, client_hello_body(b"a.example")))
    )
    wire2.server_data(hello(bytes(range(32))))
    wire2.client_data(record(23, bytes(19)))
    assert observed_decision(wire2, client_spoke=True).decision == "alert"
