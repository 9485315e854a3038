"""TLS as seen on the wire by a relay: records and handshake messages, read from relayed bytes.

Observe mode (:mod:`certmatch.proxy.observe`) relays a client's bytes unchanged and feeds
copies of them here. :class:`WireSession` reads both directions of one connection and keeps
what certmatch records: the ClientHello (SNI exactly as sent, offered versions, ALPN,
signature_algorithms), the ServerHello (chosen version, resumption, HelloRetryRequest), the
server's Certificate message when it travels in clear (TLS 1.2 and below), cleartext alerts,
and the shape (content type and length) of the client's records after the ServerHello, from
which :mod:`certmatch.core.observed_decision` reads the client's decision.

Everything is bounded, whatever the peer sends:

- a record header is 5 bytes; record bodies other than handshake and cleartext alerts are
  skipped by counting, never buffered;
- handshake messages are reassembled across records (a ClientHello split over several
  records or TCP segments is read whole) up to :data:`MAX_HANDSHAKE_PREFIX` bytes; a longer
  message (a 1 MB Certificate) keeps that prefix, is marked truncated, and its rest is
  skipped;
- once the decision cannot change, :attr:`WireSession.finished` is set and the relay stops
  feeding bytes here.

Record layer: RFC 8446 §5.1 (and RFC 5246 §6.2.1); handshake framing: RFC 8446 §4; the
TLS <= 1.2 Certificate message: RFC 5246 §7.4.2; SSL 2.0-compatible ClientHello: RFC 5246
Appendix E.2. Bytes that start like none of these are "not TLS".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from certmatch.core import protocols

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
CONTENT_TYPES = frozenset({CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA})

CLIENT_HELLO = 1
SERVER_HELLO = 2
CERTIFICATE = 11
SERVER_HELLO_DONE = 14

# The longest record any version allows: TLS 1.2's TLSCiphertext, 2^14 + 2048 (RFC 5246
# §6.2.3); TLS 1.3 allows 2^14 + 256 (RFC 8446 §5.2).
MAX_RECORD_LENGTH = 2**14 + 2048
# The longest handshake message prefix kept: a certificate chain of ordinary size fits.
MAX_HANDSHAKE_PREFIX = 64 * 1024
# How many of the client's records after the ServerHello are kept for the decision.
MAX_CLIENT_RECORDS = 16

# RFC 8446 §4.1.3: a ServerHello whose random is SHA-256("HelloRetryRequest").
HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)
EXT_SERVER_NAME = 0
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SESSION_TICKET = 35
EXT_PRE_SHARED_KEY = 41
EXT_SUPPORTED_VERSIONS = 43

# RFC 8446 §4.2.3 SignatureScheme names; RFC 8446 keeps the TLS 1.2 (RFC 5246 §7.4.1.4.1)
# pairs it defines as legacy ones. Anything else is shown as its number (0x0303).
SIGNATURE_SCHEMES: dict[int, str] = {
    0x0401: "rsa_pkcs1_sha256",
    0x0501: "rsa_pkcs1_sha384",
    0x0601: "rsa_pkcs1_sha512",
    0x0403: "ecdsa_secp256r1_sha256",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519",
    0x0808: "ed448",
    0x0809: "rsa_pss_pss_sha256",
    0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512",
    0x0201: "rsa_pkcs1_sha1",
    0x0203: "ecdsa_sha1",
}

_VERSION_NAMES = {
    0x0304: "TLSv1.3",
    0x0303: "TLSv1.2",
    0x0302: "TLSv1.1",
    0x0301: "TLSv1",
    0x0300: "SSLv3",
}

# How far a connection got, in the order it gets there (recorded with the session).
PHASE_START = "start"
PHASE_CLIENT_HELLO = "client-hello"
PHASE_SERVER_HELLO = "server-hello"
PHASE_CERTIFICATE = "certificate"
PHASE_SERVER_DONE = "server-hello-done"  # TLS 1.2: the server's flight is complete
PHASE_ENCRYPTED = "encrypted-handshake"  # TLS 1.3: the rest of the handshake is encrypted
PHASE_NOT_TLS = "not-tls"
PHASE_SSLV2 = "sslv2-hello"


def signature_scheme_name(code: int) -> str:
    """The RFC 8446 §4.2.3 name of a SignatureScheme, or its number as ``0x....``."""
    return SIGNATURE_SCHEMES.get(code, f"0x{code:04x}")


def version_name(code: int | None) -> str | None:
    """``TLSv1.2`` for 0x0303; None for an unknown number."""
    return _VERSION_NAMES.get(code) if code is not None else None


def starts_like_tls(data: bytes) -> bool:
    """The bytes start like a TLS handshake record (type 22, version 3.x)."""
    return len(data) >= 1 and data[0] == HANDSHAKE and (len(data) < 2 or data[1] == 3)


def starts_like_sslv2_hello(data: bytes) -> bool:
    """The bytes start like an SSL 2.0 CLIENT-HELLO (RFC 5246 Appendix E.2): a 2-byte length
    with the high bit set, msg_type 1, then the version: 3.x for a TLS client's compatible
    hello, 0.2 for SSL 2.0 itself."""
    return (
        len(data) >= 3
        and data[0] & 0x80 != 0
        and data[2] == CLIENT_HELLO
        and (len(data) < 4 or data[3] in (0, 3))
    )


class WireError(ValueError):
    """A message that does not parse: its fields run past its end."""


class _Reader:
    """Bounds-checked reading of one message body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise WireError(f"needs {n} byte(s) at offset {self.pos}, has {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def parse_extensions(r: _Reader) -> list[tuple[int, bytes]]:
    """The extensions block that ends a hello (absent: none)."""
    if r.left == 0:
        return []
    block = _Reader(r.vector(2))
    found = []
    while block.left:
        ext_type = block.number(2)
        found.append((ext_type, block.vector(2)))
    return found


@dataclass(frozen=True)
class ClientHello:
    """What a ClientHello says (RFC 8446 §4.1.2)."""

    legacy_version: int
    session_id: bytes
    sni: str | None  # exactly as sent; None = no server_name extension
    versions: list[str]
    alpn: list[str]
    signature_algorithms: list[str] | None  # None = no extension
    session_ticket: bool  # a non-empty SessionTicket extension (RFC 5077 §3.2)
    psk: bool  # offers a pre_shared_key (TLS 1.3 resumption)


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello's body (after the 4-byte handshake header)."""
    r = _Reader(body)
    legacy_version = r.number(2)
    r.take(32)  # random
    session_id = r.vector(1)
    r.vector(2)  # cipher suites
    r.vector(1)  # compression methods
    extensions = parse_extensions(r)
    alpn: list[str] = []
    sigalgs: list[str] | None = None
    ticket = psk = False
    for ext_type, ext in extensions:
        if ext_type == EXT_ALPN and len(ext) >= 2:
            names = _Reader(_Reader(ext).vector(2))
            while names.left:
                alpn.append(names.vector(1).decode("ascii", "backslashreplace"))
        elif ext_type == EXT_SIGNATURE_ALGORITHMS and len(ext) >= 2:
            raw = _Reader(ext).vector(2)
            sigalgs = [
                signature_scheme_name(int.from_bytes(raw[i : i + 2], "big"))
                for i in range(0, len(raw) - 1, 2)
            ]
        elif ext_type == EXT_SESSION_TICKET and ext:
            ticket = True
        elif ext_type == EXT_PRE_SHARED_KEY:
            psk = True
    return ClientHello(
        legacy_version=legacy_version,
        session_id=session_id,
        sni=protocols.server_name_from_extensions(extensions),
        versions=protocols.offered_tls_versions(extensions, legacy_version),
        alpn=alpn,
        signature_algorithms=sigalgs,
        session_ticket=ticket,
        psk=psk,
    )


@dataclass(frozen=True)
class ServerHello:
    """What a ServerHello says (RFC 8446 §4.1.3)."""

    version: str | None  # the chosen version: supported_versions, else legacy_version
    session_id: bytes
    cipher_suite: int
    hello_retry: bool
    psk: bool  # TLS 1.3: the server accepted a pre_shared_key (a resumption)


def parse_server_hello(body: bytes) -> ServerHello:
    """Parse a ServerHello's body (after the 4-byte handshake header)."""
    r = _Reader(body)
    legacy_version = r.number(2)
    random = r.take(32)
    session_id = r.vector(1)
    cipher = r.number(2)
    r.take(1)  # compression
    version = legacy_version
    psk = False
    for ext_type, ext in parse_extensions(r):
        if ext_type == EXT_SUPPORTED_VERSIONS and len(ext) == 2:
            version = int.from_bytes(ext, "big")
        elif ext_type == EXT_PRE_SHARED_KEY:
            psk = True
    return ServerHello(
        version=version_name(version),
        session_id=session_id,
        cipher_suite=cipher,
        hello_retry=random == HELLO_RETRY_RANDOM,
        psk=psk,
    )


@dataclass(frozen=True)
class CertificateList:
    """The certificates of a TLS <= 1.2 Certificate message (RFC 5246 §7.4.2), DER, leaf
    first; ``truncated`` when the message was longer than the prefix read."""

    certificates: list[bytes]
    truncated: bool
    message_length: int


def parse_certificate_list(prefix: bytes, message_length: int) -> CertificateList:
    """The whole certificates within ``prefix`` of a Certificate message's body."""
    truncated = len(prefix) < message_length
    r = _Reader(prefix)
    certificates: list[bytes] = []
    if r.left < 3:
        return CertificateList(certificates, truncated, message_length)
    end = min(3 + r.number(3), len(prefix))
    while r.pos + 3 <= end:
        length = r.number(3)
        if r.pos + length > end:
            truncated = True
            break
        certificates.append(r.take(length))
    return CertificateList(certificates, truncated, message_length)


@dataclass(frozen=True)
class HandshakeMessage:
    """One handshake message: its type, its body (or the first bytes of it), its length."""

    msg_type: int
    body: bytes
    length: int

    @property
    def truncated(self) -> bool:
        return len(self.body) < self.length


@dataclass
class RecordStream:
    """One direction's record layer, fed in arbitrary slices.

    :meth:`feed` returns the records whose headers it read, as (content type, length), and
    the handshake messages completed, in order; cleartext handshake and alert bodies only
    are kept (bounded), the rest is skipped by counting. ``encrypted`` is set by the caller
    once this direction's handshake records are no longer readable.
    """

    encrypted: bool = False
    # TLS <= 1.2: a ChangeCipherSpec starts encryption. TLS 1.3's is a dummy for middleboxes
    # (RFC 8446 §D.4), which may come before the cleartext ServerHello or ClientHello that
    # follow a HelloRetryRequest.
    ccs_encrypts: bool = True
    error: str | None = None  # set once the bytes stop being TLS records; nothing more is read
    _header: bytearray = field(default_factory=bytearray)
    _type: int = 0
    _length: int = 0
    _left: int = 0  # bytes of the current record's body still to come
    _alert: bytearray = field(default_factory=bytearray)
    _hs: bytearray = field(default_factory=bytearray)  # the current handshake message, bounded
    _hs_type: int | None = None
    _hs_length: int = 0
    _hs_seen: int = 0  # body bytes of it seen (kept or not)
    _hs_head: bytearray = field(default_factory=bytearray)

    def feed(
        self, data: bytes
    ) -> tuple[list[tuple[int, int]], list[HandshakeMessage], list[tuple[int, int]]]:
        """Read ``data``: (records as (type, length), handshake messages, cleartext alerts as
        (level, description))."""
        records: list[tuple[int, int]] = []
        messages: list[HandshakeMessage] = []
        alerts: list[tuple[int, int]] = []
        pos, end = 0, len(data)
        while pos < end and self.error is None:
            if self._left == 0:
                need = 5 - len(self._header)
                self._header += data[pos : pos + need]
                pos += min(need, end - pos)
                if len(self._header) < 5:
                    break
                header = bytes(self._header)
                self._header.clear()
                content_type, major, length = header[0], header[1], int.from_bytes(header[3:5])
                if content_type not in CONTENT_TYPES or major != 3:
                    self.error = f"a record header {header.hex()} that is not TLS"
                    break
                if length > MAX_RECORD_LENGTH:
                    self.error = f"a record of {length} bytes, longer than TLS allows"
                    break
                self._type, self._left, self._length = content_type, length, length
                records.append((content_type, length))
                if content_type == CHANGE_CIPHER_SPEC and self.ccs_encrypts:
                    self.encrypted = True  # TLS <= 1.2: what follows is encrypted
                self._alert.clear()
                if length == 0:
                    continue
            take = min(self._left, end - pos)
            chunk = data[pos : pos + take]
            pos += take
            self._left -= take
            if self.encrypted and not (self._type == ALERT and self._length == 2):
                continue  # a 2-byte alert is in clear whatever came before: no AEAD is that short
            if self._type == HANDSHAKE:
                messages += self._handshake_bytes(chunk)
            elif self._type == ALERT:
                self._alert += chunk[: 2 - len(self._alert)]
                if self._left == 0 and len(self._alert) == 2:
                    alerts.append((self._alert[0], self._alert[1]))
        return records, messages, alerts

    def _handshake_bytes(self, chunk: bytes) -> list[HandshakeMessage]:
        done: list[HandshakeMessage] = []
        pos = 0
        while pos < len(chunk):
            if self._hs_type is None:
                need = 4 - len(self._hs_head)
                self._hs_head += chunk[pos : pos + need]
                pos += min(need, len(chunk) - pos)
                if len(self._hs_head) < 4:
                    break
                self._hs_type = self._hs_head[0]
                self._hs_length = int.from_bytes(self._hs_head[1:4])
                self._hs_head.clear()
                self._hs.clear()
                self._hs_seen = 0
            take = min(self._hs_length - self._hs_seen, len(chunk) - pos)
            room = MAX_HANDSHAKE_PREFIX - len(self._hs)
            if room > 0:
                self._hs += chunk[pos : pos + min(take, room)]
            self._hs_seen += take
            pos += take
            if self._hs_seen == self._hs_length:
                done.append(HandshakeMessage(self._hs_type, bytes(self._hs), self._hs_length))
                self._hs_type = None
                self._hs.clear()
        return done

    @property
    def pending_handshake(self) -> tuple[int, int, int] | None:
        """The handshake message being read, as (type, bytes seen, length), or None."""
        if self._hs_type is None:
            return None
        return self._hs_type, self._hs_seen, self._hs_length


@dataclass
class WireSession:
    """Both directions of one relayed connection, read as TLS.

    Feed the client's bytes to :meth:`client_data` and the server's to :meth:`server_data`,
    in the order they were relayed. What was learnt is in the attributes; ``finished`` says
    nothing more can be learnt (the relay may stop feeding).
    """

    phase: str = PHASE_START
    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    hello_retry: bool = False
    chain: list[bytes] = field(default_factory=list)
    chain_truncated: bool = False
    certificate_length: int | None = None
    resumed: bool = False
    client_alert: tuple[int, int] | None = None  # (level, description), in clear
    server_alert: tuple[int, int] | None = None
    # The client's records after the (final) ServerHello, as (type, length); bounded.
    client_records: list[tuple[int, int]] = field(default_factory=list)
    client_records_total: int = 0
    server_ccs: bool = False  # TLS <= 1.2: the server's ChangeCipherSpec
    client_ccs: bool = False
    error: str | None = None  # what made the bytes unreadable as TLS
    # The client stopped speaking TLS after its ClientHello (OpenLDAP's ldapsearch sends its
    # UnbindRequest in clear when it refuses the certificate after a STARTTLS handshake).
    client_left_tls: bool = False
    finished: bool = False
    _started: bool = False
    _first: bytearray = field(default_factory=bytearray)
    _client: RecordStream = field(default_factory=RecordStream)
    _server: RecordStream = field(default_factory=RecordStream)

    @property
    def tls13(self) -> bool:
        return self.server_hello is not None and self.server_hello.version == "TLSv1.3"

    def client_data(self, data: bytes) -> None:
        """The client sent ``data`` (relayed to the server unchanged)."""
        if self.finished or not data:
            return
        if not self._started:
            # Decide from the first 5 bytes, however they were split (at most 4 wait here).
            self._first += data
            if len(self._first) < 5:
                return
            data, self._first = bytes(self._first), bytearray()
            if not self._client_started(data):
                return
            self._started = True
        records, messages, alerts = self._client.feed(data)
        if self._client.error is not None:
            self.client_left_tls = self.client_hello is not None
            self._stop(f"the client sent {self._client.error}")
            return
        after_hello = self.server_hello is not None and not self.server_hello.hello_retry
        for content_type, length in records:
            if after_hello:
                self.client_records_total += 1
                if len(self.client_records) < MAX_CLIENT_RECORDS:
                    self.client_records.append((content_type, length))
            if content_type == CHANGE_CIPHER_SPEC and self.server_hello and not self.tls13:
                self.client_ccs = True
        for message in messages:
            if message.msg_type == CLIENT_HELLO and (self.client_hello is None or self.hello_retry):
                try:
                    self.client_hello = parse_client_hello(message.body)
                except WireError as exc:
                    self._stop(f"the ClientHello does not parse ({exc})")
                    return
                if self.phase == PHASE_START:
                    self.phase = PHASE_CLIENT_HELLO
        if alerts and self.client_alert is None:
            self.client_alert = alerts[0]
        if len(self.client_records) >= MAX_CLIENT_RECORDS:
            self.finished = True

    def server_data(self, data: bytes) -> None:
        """The server sent ``data`` (relayed to the client unchanged)."""
        if self.finished or not data or self.phase in (PHASE_NOT_TLS, PHASE_SSLV2):
            return
        records, messages, alerts = self._server.feed(data)
        if self._server.error is not None:
            self._stop(f"the server sent {self._server.error}")
            return
        if alerts and self.server_alert is None:
            self.server_alert = alerts[0]
        for message in messages:
            self._server_message(message)
        for content_type, _length in records:
            if content_type == CHANGE_CIPHER_SPEC and self.server_hello and not self.tls13:
                self.server_ccs = True
                if self.phase == PHASE_SERVER_HELLO:
                    self.resumed = True  # an abbreviated handshake: no Certificate before it
        pending = self._server.pending_handshake
        if (
            pending is not None
            and pending[0] == CERTIFICATE
            and pending[1] >= MAX_HANDSHAKE_PREFIX
            and self.certificate_length is None
        ):
            self.certificate_length = pending[2]  # known before the rest arrives

    def _client_started(self, data: bytes) -> bool:
        if starts_like_tls(data):
            return True
        if starts_like_sslv2_hello(data):
            self.phase = PHASE_SSLV2
            self.finished = True
            return False
        self.phase = PHASE_NOT_TLS
        self.error = "the client's first bytes are not a TLS handshake record"
        self.finished = True
        return False

    def _server_message(self, message: HandshakeMessage) -> None:
        if message.msg_type == SERVER_HELLO:
            try:
                hello = parse_server_hello(message.body)
            except WireError as exc:
                self._stop(f"the ServerHello does not parse ({exc})")
                return
            self.server_hello = hello
            if hello.hello_retry:
                # TLS 1.3 only: the ServerHello and the client's second ClientHello come in
                # clear, whatever compatibility CCS the two sides send around them.
                self.hello_retry = True
                for stream in (self._server, self._client):
                    stream.ccs_encrypts = stream.encrypted = False
                return
            self.phase = PHASE_SERVER_HELLO
            if self.tls13:
                self.phase = PHASE_ENCRYPTED
                self.resumed = hello.psk
                self._server.encrypted = True
                self._client.encrypted = True
        elif message.msg_type == CERTIFICATE and self.server_hello is not None and not self.tls13:
            certificates = parse_certificate_list(message.body, message.length)
            self.chain = certificates.certificates
            self.chain_truncated = certificates.truncated
            self.certificate_length = message.length
            self.phase = PHASE_CERTIFICATE
        elif message.msg_type == SERVER_HELLO_DONE and self.server_hello is not None:
            self.phase = PHASE_SERVER_DONE

    def _stop(self, error: str) -> None:
        self.error = error
        self.finished = True
