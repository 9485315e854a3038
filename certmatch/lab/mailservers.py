"""Small embedded mail, directory and news servers for the demo and for replay.

Loopback, no root, no configuration files: IMAP, POP3, SMTP, LDAP and a
minimal NNTP, each either with implicit TLS or with the protocol's own
STARTTLS upgrade. The TLS server name indication (SNI) picks the
certificate, like dovecot's ``local_name`` blocks; a client that sends no
SNI (or an unknown name) gets the default certificate.

They speak just enough of each protocol for Python's stdlib clients, curl,
``openssl s_client -starttls`` and ldap3 to finish the handshake and a short
session (IMAP LOGIN/SELECT/FETCH, POP3 USER/PASS/STAT/RETR, SMTP
EHLO/AUTH/MAIL/RCPT/DATA, LDAP bind and one search result). Any user name
and password is accepted; nothing is stored but the mail an SMTP client sends
(``RunningServer.received``), so a test can check it arrived intact.

The servers run on their own asyncio loop in one background thread;
:class:`ServerGroup` starts them and, on exit, closes every connection and
joins the thread, leaving nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from certmatch.core import ldap_ber
from certmatch.core.facts import PROTOCOLS
from certmatch.core.ldap_ber import (
    OCTET_STRING,
    RESPONSE_NAME,
    SEQUENCE,
    SET,
    STARTTLS_OID,
    LdapMessage,
    Operation,
    encode,
)

logger = logging.getLogger("certmatch.lab.mailservers")

TLS_MODES = ("implicit", "starttls")

# Every read waits at most this long: a stalled client never pins a server task.
IDLE_TIMEOUT_S = 30.0
HANDSHAKE_TIMEOUT_S = 10.0

MESSAGE = (
    b"From: Demo Sender <sender@example.test>\r\n"
    b"To: Demo User <demo@example.test>\r\n"
    b"Subject: certmatch demo message\r\n"
    b"Message-ID: <demo-1@certmatch.example.test>\r\n"
    b"\r\n"
    b"Hello from the certmatch embedded server.\r\n"
    b".A line that starts with a dot, to exercise dot-stuffing.\r\n"
)


@dataclass(frozen=True)
class PemIdentity:
    """A certificate chain (leaf first, in the order the server sends it) and the leaf's key."""

    chain: bytes
    key: bytes


@dataclass(frozen=True)
class CertificateSet:
    """What a server presents: one certificate per SNI name, and a default for everything else."""

    default: PemIdentity
    by_sni: Mapping[str, PemIdentity] = field(default_factory=dict)

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side context that switches certificate on the client's SNI."""
        default = _context_for(self.default)
        by_name = {name.lower(): _context_for(identity) for name, identity in self.by_sni.items()}

        def pick(
            conn: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext
        ) -> None:
            chosen = by_name.get(name.lower()) if name else None
            if chosen is not None:
                conn.context = chosen

        default.sni_callback = pick
        return default


def _context_for(identity: PemIdentity) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only; the key file exists for the blink of an eye, mode 0600.
    with tempfile.TemporaryDirectory(prefix="certmatch-tls-") as directory:
        chain_path = os.path.join(directory, "chain.pem")
        key_path = os.path.join(directory, "key.pem")
        with open(chain_path, "wb") as out:
            out.write(identity.chain)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(identity.key)
        context.load_cert_chain(chain_path, key_path)
    return context


@dataclass(frozen=True)
class ServerSpec:
    """One server to run: its protocol, how TLS starts, and its certificates."""

    protocol: str
    tls: str  # "implicit" or "starttls"
    certificates: CertificateSet
    label: str = ""  # free text for listings, e.g. the scenario or recorded address
    hostname: str = "mail.example.test"  # the name the server calls itself in greetings
    port: int = 0  # 0 = any free port

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"unknown protocol {self.protocol!r}; expected one of {', '.join(PROTOCOLS)}"
            )
        if self.tls not in TLS_MODES:
            raise ValueError(f"unknown TLS mode {self.tls!r}; expected 'implicit' or 'starttls'")
        if self.tls == "starttls" and self.protocol == "unknown":
            raise ValueError("a server of unknown protocol cannot offer STARTTLS")


@dataclass
class RunningServer:
    """A started server: where it listens, and the mail it received."""

    spec: ServerSpec
    host: str
    port: int
    received: list[bytes] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


class ServerGroup:
    """Run several servers on one background event loop; a context manager.

    ``with ServerGroup(specs) as servers:`` yields one :class:`RunningServer`
    per spec, in order. Leaving the block closes every listener and
    connection and joins the thread.
    """

    def __init__(self, specs: Sequence[ServerSpec], host: str = "127.0.0.1") -> None:
        self.specs = list(specs)
        self.host = host
        self.servers: list[RunningServer] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> list[RunningServer]:
        """Start listening; raises OSError (e.g. address in use) if a server cannot bind."""
        self._thread = threading.Thread(target=self._run, name="certmatch-mailservers", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            self.stop()
            raise RuntimeError("the embedded servers did not start within 15 s")
        if self._error is not None:
            self.stop()
            raise self._error
        return self.servers

    def stop(self) -> None:
        """Close everything and join the thread; safe to call twice."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already finished
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

    def __enter__(self) -> list[RunningServer]:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the loop thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_handler)
        self._loop = loop
        self._stop = asyncio.Event()
        listeners: list[asyncio.Server] = []
        connections: set[asyncio.Task[None]] = set()
        try:
            for spec in self.specs:
                running = RunningServer(spec, self.host, 0)
                context = spec.certificates.ssl_context()
                handler = _Handler(running, context, connections)
                server = await asyncio.start_server(
                    handler,
                    self.host,
                    spec.port,
                    ssl=context if spec.tls == "implicit" else None,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if spec.tls == "implicit" else None,
                )
                running.port = server.sockets[0].getsockname()[1]
                listeners.append(server)
                self.servers.append(running)
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, re-raised there
            self._error = exc
            for server in listeners:
                server.close()
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        for server in listeners:
            server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        for server in listeners:
            await server.wait_closed()


def _quiet_handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Clients that refuse a certificate are the point of this tool: not worth a traceback."""
    exc = context.get("exception")
    if isinstance(exc, ssl.SSLError | ConnectionError | asyncio.CancelledError | TimeoutError):
        logger.debug("embedded server: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


class _Handler:
    """Called by asyncio for each accepted connection; runs the protocol dialogue."""

    def __init__(
        self, server: RunningServer, context: ssl.SSLContext, tasks: set[asyncio.Task[None]]
    ) -> None:
        self.server = server
        self.context = context
        self.tasks = tasks

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = _Connection(reader, writer, self.server, self.context)
        try:
            await _DIALOGUES[self.server.spec.protocol](conn)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError, EOFError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.tasks.discard(task)
            writer.transport.abort()


class _Connection:
    """One client connection: line I/O with a timeout, and the STARTTLS switch."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        server: RunningServer,
        context: ssl.SSLContext,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.server = server
        self.context = context
        self.tls_active = server.spec.tls == "implicit"

    @property
    def may_upgrade(self) -> bool:
        return self.server.spec.tls == "starttls" and not self.tls_active

    @property
    def hostname(self) -> str:
        return self.server.spec.hostname

    async def send(self, *lines: str | bytes) -> None:
        for line in lines:
            data = line.encode("utf-8") if isinstance(line, str) else line
            self.writer.write(data + b"\r\n")
        await self.writer.drain()

    async def readline(self) -> str:
        """The next line without its CRLF; EOFError when the client has gone."""
        raw = await asyncio.wait_for(self.reader.readline(), IDLE_TIMEOUT_S)
        if not raw:
            raise EOFError
        return raw.rstrip(b"\r\n").decode("utf-8", "replace")

    async def read_exactly(self, count: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(count), IDLE_TIMEOUT_S)

    async def upgrade(self) -> None:
        """Switch to TLS after the positive STARTTLS reply has been sent.

        Bytes the client pipelined after its STARTTLS command arrived in
        plaintext; treating them as part of the TLS session is the
        command-injection flaw of CVE-2011-0411, so they are dropped.
        """
        buffered = getattr(self.reader, "_buffer", None)  # asyncio keeps no public way to drain it
        if buffered:
            logger.info("embedded server: dropped %d bytes sent after STARTTLS", len(buffered))
            buffered.clear()
        await self.writer.start_tls(self.context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        self.tls_active = True


# -- IMAP (RFC 9051 / 3501) -------------------------------------------------------------------

_LITERAL = re.compile(r"\{(\d+)(\+?)\}$")


async def _imap_command(conn: _Connection) -> str:
    """One command line, with any {n} literals read in and inlined."""
    line = await conn.readline()
    while (literal := _LITERAL.search(line)) is not None:
        if not literal.group(2):
            await conn.send("+ Ready for literal data")
        data = await conn.read_exactly(int(literal.group(1)))
        line = (
            line[: literal.start()]
            + '"'
            + data.decode("utf-8", "replace")
            + '"'
            + await conn.readline()
        )
    return line


async def _imap(conn: _Connection) -> None:
    def capabilities() -> str:
        # No LOGINDISABLED before TLS: curl 7.88 remembers it after STARTTLS and never logs in.
        # LOGIN before TLS is refused all the same.
        return "IMAP4rev1 STARTTLS" if conn.may_upgrade else "IMAP4rev1"

    await conn.send(f"* OK [CAPABILITY {capabilities()}] {conn.hostname} certmatch IMAP ready")
    while True:
        line = await _imap_command(conn)
        tag, _, rest = line.partition(" ")
        command, _, args = rest.partition(" ")
        command = command.upper()
        if command == "UID":
            sub, _, args = args.partition(" ")
            command = "UID " + sub.upper()
        if command == "CAPABILITY":
            await conn.send(f"* CAPABILITY {capabilities()}", f"{tag} OK CAPABILITY completed")
        elif command == "STARTTLS":
            if not conn.may_upgrade:
                await conn.send(f"{tag} BAD STARTTLS is not available here")
                continue
            await conn.send(f"{tag} OK Begin TLS negotiation now")
            await conn.upgrade()
        elif command in ("LOGIN", "AUTHENTICATE"):
            if conn.may_upgrade:
                await conn.send(f"{tag} NO [PRIVACYREQUIRED] Use STARTTLS before logging in")
            elif command == "AUTHENTICATE":
                await conn.send(f"{tag} NO AUTHENTICATE is not supported, use LOGIN")
            else:
                await conn.send(f"{tag} OK [CAPABILITY IMAP4rev1] LOGIN completed")
        elif command in ("SELECT", "EXAMINE"):
            await conn.send(
                "* FLAGS (\\Seen \\Deleted)",
                "* 1 EXISTS",
                "* 0 RECENT",
                "* OK [UIDVALIDITY 1] UIDs valid",
                "* OK [UIDNEXT 2] Predicted next UID",
                f"{tag} OK [{'READ-ONLY' if command == 'EXAMINE' else 'READ-WRITE'}] {command} completed",
            )
        elif command in ("LIST", "LSUB"):
            await conn.send(f'* {command} () "/" INBOX', f"{tag} OK {command} completed")
        elif command in ("FETCH", "UID FETCH"):
            items = args.upper()
            name = "RFC822" if re.search(r"\bRFC822\b(?!\.)", items) else "BODY[]"
            uid = "UID 1 " if command == "UID FETCH" or "UID" in items else ""
            head = f"* 1 FETCH ({uid}{name} {{{len(MESSAGE)}}}".encode()
            await conn.send(head, MESSAGE + b")", f"{tag} OK {command} completed".encode())
        elif command in ("NOOP", "CHECK", "CLOSE", "EXPUNGE", "UID STORE", "STORE"):
            await conn.send(f"{tag} OK {command} completed")
        elif command == "LOGOUT":
            await conn.send("* BYE certmatch IMAP server logging out", f"{tag} OK LOGOUT completed")
            return
        else:
            await conn.send(f"{tag} BAD unknown command")


# -- POP3 (RFC 1939, STLS: RFC 2595) ------------------------------------------------------------


def _dot_stuffed(message: bytes) -> list[bytes]:
    return [b"." + line if line.startswith(b".") else line for line in message.split(b"\r\n")[:-1]]


async def _pop3(conn: _Connection) -> None:
    await conn.send(f"+OK {conn.hostname} certmatch POP3 ready")
    size = len(MESSAGE)
    while True:
        line = await conn.readline()
        command, _, args = line.partition(" ")
        command = command.upper()
        if command == "CAPA":
            caps = ["USER", "UIDL", "TOP"] + (["STLS"] if conn.may_upgrade else [])
            await conn.send("+OK Capability list follows", *caps, ".")
        elif command == "STLS":
            if not conn.may_upgrade:
                await conn.send("-ERR STLS is not available here")
                continue
            await conn.send("+OK Begin TLS negotiation")
            await conn.upgrade()
        elif command in ("USER", "PASS"):
            if conn.may_upgrade:
                await conn.send("-ERR [SYS/PERM] Use STLS before logging in")
            else:
                await conn.send("+OK" if command == "USER" else "+OK Logged in, 1 message")
        elif command == "STAT":
            await conn.send(f"+OK 1 {size}")
        elif command in ("LIST", "UIDL"):
            value = str(size) if command == "LIST" else "certmatch-demo-1"
            if args.strip():
                await conn.send(f"+OK 1 {value}")
            else:
                await conn.send("+OK 1 message", f"1 {value}", ".")
        elif command in ("RETR", "TOP"):
            await conn.send(f"+OK {size} octets".encode(), *_dot_stuffed(MESSAGE), b".")
        elif command in ("DELE", "NOOP", "RSET"):
            await conn.send("+OK")
        elif command == "QUIT":
            await conn.send("+OK Bye")
            return
        else:
            await conn.send("-ERR unknown command")


# -- SMTP and submission (RFC 5321, STARTTLS: RFC 3207, AUTH: RFC 4954) -------------------------


async def _smtp(conn: _Connection) -> None:
    await conn.send(f"220 {conn.hostname} ESMTP certmatch")
    while True:
        line = await conn.readline()
        command, _, args = line.partition(" ")
        command = command.upper()
        if command == "EHLO":
            lines = [conn.hostname, "8BITMIME", "SIZE 10240000"]
            lines += ["STARTTLS"] if conn.may_upgrade else ["AUTH PLAIN LOGIN"]
            await conn.send(*[f"250-{x}" for x in lines[:-1]], f"250 {lines[-1]}")
        elif command == "HELO":
            await conn.send(f"250 {conn.hostname}")
        elif command == "STARTTLS":
            if not conn.may_upgrade:
                await conn.send("454 4.7.0 TLS not available")
                continue
            await conn.send("220 2.0.0 Ready to start TLS")
            await conn.upgrade()
        elif command == "AUTH":
            if conn.may_upgrade:
                await conn.send("530 5.7.0 Must issue a STARTTLS command first")
                continue
            mechanism, _, initial = args.partition(" ")
            if mechanism.upper() == "PLAIN":
                if not initial:
                    await conn.send("334 ")
                    await conn.readline()
            elif mechanism.upper() == "LOGIN":
                if not initial:
                    await conn.send("334 " + base64.b64encode(b"Username:").decode())
                    await conn.readline()
                await conn.send("334 " + base64.b64encode(b"Password:").decode())
                await conn.readline()
            else:
                await conn.send("504 5.5.4 Unrecognized authentication type")
                continue
            await conn.send("235 2.7.0 Authentication successful")
        elif command == "MAIL":
            await conn.send("250 2.1.0 Ok")
        elif command == "RCPT":
            await conn.send("250 2.1.5 Ok")
        elif command == "DATA":
            await conn.send("354 End data with <CR><LF>.<CR><LF>")
            conn.server.received.append(await _read_data(conn))
            await conn.send("250 2.0.0 Ok: queued")
        elif command in ("RSET", "NOOP"):
            await conn.send("250 2.0.0 Ok")
        elif command == "VRFY":
            await conn.send("252 2.0.0 Cannot VRFY user")
        elif command == "QUIT":
            await conn.send("221 2.0.0 Bye")
            return
        else:
            await conn.send("502 5.5.2 Command not recognized")


async def _read_data(conn: _Connection) -> bytes:
    lines: list[bytes] = []
    while True:
        raw = await asyncio.wait_for(conn.reader.readline(), IDLE_TIMEOUT_S)
        if not raw:
            raise EOFError
        if raw in (b".\r\n", b".\n"):
            return b"".join(lines)
        lines.append(raw[1:] if raw.startswith(b".") else raw)


# -- NNTP (RFC 3977, STARTTLS: RFC 4642): greeting and upgrade only ---------------------------


async def _nntp(conn: _Connection) -> None:
    await conn.send(f"200 {conn.hostname} certmatch NNTP ready (posting ok)")
    while True:
        line = await conn.readline()
        command = line.partition(" ")[0].upper()
        if command == "CAPABILITIES":
            caps = ["VERSION 2", "READER"] + (["STARTTLS"] if conn.may_upgrade else [])
            await conn.send("101 Capability list:", *caps, ".")
        elif command == "STARTTLS":
            if not conn.may_upgrade:
                await conn.send("502 STARTTLS is not available here")
                continue
            await conn.send("382 Continue with TLS negotiation")
            await conn.upgrade()
        elif command == "MODE":
            await conn.send("200 Posting allowed")
        elif command == "QUIT":
            await conn.send("205 Bye")
            return
        else:
            await conn.send("500 Unknown command")


# -- a TLS server of unknown protocol: handshake, then silence until the client leaves --------


async def _silent(conn: _Connection) -> None:
    while await asyncio.wait_for(conn.reader.read(4096), IDLE_TIMEOUT_S):
        pass


# -- LDAP (RFC 4511, StartTLS: RFC 4513 §3) -----------------------------------------------------


_MAX_LDAP_MESSAGE = 1 << 20


async def _read_ldap_message(conn: _Connection) -> LdapMessage | None:
    """The next LDAPMessage from the client; None for bytes that are not one."""
    head = await conn.read_exactly(2)
    if head[0] != SEQUENCE:
        raise EOFError  # not an LDAPMessage: nothing sensible to answer
    if head[1] & 0x80:
        head += await conn.read_exactly(head[1] & 0x7F)
    try:
        parsed = ldap_ber.header(head)
    except ldap_ber.BerError:
        raise EOFError from None
    if parsed is None or parsed[2] > _MAX_LDAP_MESSAGE:
        raise EOFError
    return ldap_ber.decode_message(head + await conn.read_exactly(parsed[2]))


def _send(conn: _Connection, message: LdapMessage) -> None:
    conn.writer.write(message.encode())


def _ldap_entry(message_id: int, dn: bytes) -> LdapMessage:
    attributes = {
        b"objectClass": [b"top", b"inetOrgPerson"],
        b"cn": [b"Demo User"],
        b"sn": [b"User"],
        b"mail": [b"demo@example.test"],
    }
    encoded = b"".join(
        encode(
            SEQUENCE,
            encode(OCTET_STRING, name)
            + encode(SET, b"".join(encode(OCTET_STRING, v) for v in values)),
        )
        for name, values in attributes.items()
    )
    body = encode(OCTET_STRING, dn) + encode(SEQUENCE, encoded)
    return LdapMessage(message_id, Operation.SEARCH_RESULT_ENTRY, body)


async def _ldap(conn: _Connection) -> None:
    while True:
        message = await _read_ldap_message(conn)
        if message is None:
            return
        message_id, op = message.message_id, message.content
        if message.operation == Operation.BIND_REQUEST:
            if conn.may_upgrade and _simple_bind_password(op):
                text = "Use StartTLS before a simple bind"
                _send(conn, ldap_ber.result(message_id, Operation.BIND_RESPONSE, 13, text))
            else:
                _send(conn, ldap_ber.result(message_id, Operation.BIND_RESPONSE, 0))
        elif message.operation == Operation.SEARCH_REQUEST:
            fields = ldap_ber.children_or_none(op)
            base = fields[0][1] if fields else b""
            _send(conn, _ldap_entry(message_id, base or b"uid=demo,dc=example,dc=test"))
            _send(conn, ldap_ber.result(message_id, Operation.SEARCH_RESULT_DONE, 0))
        elif message.operation == Operation.EXTENDED_REQUEST:
            if ldap_ber.extended_request_name(op) == STARTTLS_OID and conn.may_upgrade:
                name = encode(RESPONSE_NAME, STARTTLS_OID)
                _send(conn, ldap_ber.result(message_id, Operation.EXTENDED_RESPONSE, 0, extra=name))
                await conn.writer.drain()
                await conn.upgrade()
                continue
            text = "unsupported extended operation"
            _send(conn, ldap_ber.result(message_id, Operation.EXTENDED_RESPONSE, 2, text))
        elif message.operation == Operation.UNBIND_REQUEST:
            return
        elif message.operation == Operation.ABANDON_REQUEST:
            continue  # no response by definition
        else:
            text = "operation not supported"
            _send(conn, ldap_ber.result(message_id, Operation.EXTENDED_RESPONSE, 2, text))
        await conn.writer.drain()


def _simple_bind_password(op: bytes) -> bool:
    """True if a BindRequest carries a non-empty simple password (credentials in plaintext)."""
    fields = ldap_ber.children_or_none(op)  # version, name, authentication
    return len(fields) >= 3 and fields[2][0] == 0x80 and bool(fields[2][1])


_DIALOGUES: dict[str, Callable[[_Connection], Awaitable[None]]] = {
    "imap": _imap,
    "pop3": _pop3,
    "smtp": _smtp,
    "submission": _smtp,
    "ldap": _ldap,
    "nntp": _nntp,
    "unknown": _silent,
}


@contextlib.contextmanager
def serve(specs: Sequence[ServerSpec], host: str = "127.0.0.1") -> Iterator[list[RunningServer]]:
    """Shorthand for ``with ServerGroup(specs, host) as servers``."""
    with ServerGroup(specs, host) as servers:
        yield servers


__all__ = [
    "MESSAGE",
    "CertificateSet",
    "PemIdentity",
    "RunningServer",
    "ServerGroup",
    "ServerSpec",
    "serve",
]
