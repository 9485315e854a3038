"""One TLS handshake the way a mail client makes it, on asyncio: implicit TLS, or the
protocol's STARTTLS dialogue first, with or without SNI; the whole chain recorded.

The plaintext dialogue is fed through the same STARTTLS machine the proxy uses
(:mod:`certmatch.core.starttls`), so the facts it records (offered, requested, the
server's reply, how far the upgrade got) are the ones a proxied session would have.
Nothing raises: every failure becomes ``Handshake.error``, one sentence that says what
happened and what to try, within ``timeout`` seconds in all.
"""

from __future__ import annotations

import _ssl
import asyncio
import base64
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from certmatch.core import ldap_ber
from certmatch.core.facts import StartTlsFacts
from certmatch.core.starttls import StartTlsMachine, make_machine

_MAX_LINE = 8192
_MAX_LDAP_REPLY = 64 * 1024


@dataclass
class Handshake:
    """What one handshake showed."""

    ip: str
    port: int
    sni: str | None
    started: str
    chain: list[str] = field(default_factory=list)  # base64 DER, leaf first
    tls_version: str | None = None
    cipher: str | None = None
    error: str | None = None
    starttls: StartTlsFacts | None = None
    local_address: str | None = None
    elapsed: float = 0.0


class _Refused(Exception):
    """The server did not agree to the upgrade; the message is its reply."""


class _NotTheProtocol(Exception):
    """The server's bytes are not the protocol expected."""


async def handshake(
    ip: str,
    port: int,
    *,
    sni: str | None,
    starttls: str | None = None,
    timeout: float = 5.0,
) -> Handshake:
    """Connect to ``ip:port``, upgrade with ``starttls`` (a protocol name, or None for implicit
    TLS), and handshake sending ``sni`` (None: no SNI extension). Never raises."""
    result = Handshake(ip, port, sni, datetime.now(UTC).isoformat(timespec="milliseconds"))
    machine = make_machine(starttls) if starttls else None
    clock = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    phase = "connecting"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(ip, port, limit=_MAX_LINE * 2)
            sockname = writer.get_extra_info("sockname")
            if sockname:
                result.local_address = _address(sockname[0], sockname[1])
            if machine is not None:
                phase = f"the {starttls} STARTTLS dialogue"
                await _Dialogue(reader, writer, machine).upgrade()
            phase = "the TLS handshake"
            await writer.start_tls(_client_context(), server_hostname=sni)
            _read_tls(writer, result)
    except TimeoutError:
        result.error = f"no answer from {_address(ip, port)} within {timeout:g} s (during {phase})"
    except ConnectionRefusedError:
        result.error = (
            f"connection refused by {_address(ip, port)}: nothing listens there; check the port"
        )
    except _Refused as exc:
        result.error = f"the server refused the STARTTLS upgrade: {exc}"
    except _NotTheProtocol as exc:
        result.error = (
            f"the server does not speak {starttls} here ({exc}); check the port and --starttls"
        )
    except ssl.SSLError as exc:
        result.error = _tls_error(exc, ip, port, machine is None)
    except (ConnectionError, OSError, EOFError, ValueError, asyncio.IncompleteReadError) as exc:
        text = str(exc) or type(exc).__name__
        result.error = f"{type(exc).__name__} during {phase} with {_address(ip, port)}: {text}"
    finally:
        if machine is not None:
            result.starttls = machine.facts
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await writer.wait_closed()
        result.elapsed = time.monotonic() - clock
    return result


def _client_context() -> ssl.SSLContext:
    """A context that accepts any certificate: certmatch judges the chain itself."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _read_tls(writer: asyncio.StreamWriter, result: Handshake) -> None:
    tls = writer.get_extra_info("ssl_object")
    if tls is None:
        result.error = "the TLS handshake finished without a TLS session"
        return
    result.tls_version = tls.version()
    cipher = tls.cipher()
    result.cipher = cipher[0] if cipher else None
    result.chain = [base64.b64encode(der).decode("ascii") for der in _chain_der(tls)]
    if not result.chain:
        result.error = "the server sent no certificate"


def _chain_der(tls: ssl.SSLObject) -> list[bytes]:
    """Every certificate the server sent, leaf first. Python 3.12 has this only privately
    (``get_unverified_chain``, public from 3.13); without it, the leaf alone."""
    inner = getattr(tls, "_sslobj", None)
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        inner, "get_unverified_chain", None
    )
    if getter is not None:
        try:
            return [_der(c) for c in getter() or []]
        except (AttributeError, ValueError, ssl.SSLError):
            pass
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _der(certificate: object) -> bytes:
    """DER bytes of an entry of ``get_unverified_chain`` (3.13: bytes; 3.12: a ``_ssl.Certificate``)."""
    if isinstance(certificate, bytes):
        return certificate
    encoding = getattr(_ssl, "ENCODING_DER", 2)
    return bytes(certificate.public_bytes(encoding))  # type: ignore[attr-defined]


def _tls_error(exc: ssl.SSLError, ip: str, port: int, implicit: bool) -> str:
    reason = getattr(exc, "reason", None) or str(exc)
    text = f"TLS handshake with {_address(ip, port)} failed ({reason})"
    if implicit and reason in (
        "WRONG_VERSION_NUMBER",
        "UNEXPECTED_EOF_WHILE_READING",
        "RECORD_LAYER_FAILURE",
    ):
        text += "; the server does not speak TLS from the first byte here: is it a STARTTLS or plaintext port (try --starttls)?"
    return text


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class _Dialogue:
    """The client's side of a STARTTLS dialogue, every byte fed through the machine."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, machine: StartTlsMachine
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.machine = machine
        self.protocol = machine.protocol

    async def send(self, data: bytes) -> None:
        self.machine.client_data(data)
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        try:
            data = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self.machine.server_data(exc.partial)
            raise ConnectionError("the server closed the connection during the upgrade") from None
        except asyncio.LimitOverrunError:
            raise _NotTheProtocol("it sent an over-long line") from None
        self.machine.server_data(data)
        return data

    async def expect(self, prefix: bytes) -> bytes:
        line = await self.line()
        if not line.startswith(prefix):
            raise _Refused(_text(line))
        return line

    async def reply(self, code: bytes) -> list[bytes]:
        """A multi-line SMTP-style reply that must carry ``code``."""
        lines = []
        while True:
            line = await self.line()
            if not line[:3].isdigit():
                raise _NotTheProtocol(f"expected a reply code, got {_text(line)!r}")
            if not line.startswith(code):
                raise _Refused(_text(line))
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    async def dot_list(self) -> None:
        """Lines up to the lone ".", after a positive first line (POP3 CAPA, NNTP)."""
        while (await self.line()).rstrip(b"\r\n") != b".":
            pass

    async def upgrade(self) -> None:
        p = self.protocol
        if p in ("smtp", "submission"):
            greeting = await self.line()
            if not greeting.startswith(b"220"):
                raise (_Refused if greeting[:3].isdigit() else _NotTheProtocol)(_text(greeting))
            while greeting[3:4] == b"-":
                greeting = await self.expect(b"220")
            await self.send(b"EHLO certmatch.invalid\r\n")
            await self.reply(b"250")
            await self.send(b"STARTTLS\r\n")
            await self.reply(b"220")
        elif p == "imap":
            greeting = await self.line()
            if not greeting.upper().startswith(b"* OK"):
                raise _NotTheProtocol(_text(greeting))
            await self.send(b"cm1 CAPABILITY\r\n")
            while not (await self.line()).startswith(b"cm1 "):
                pass
            await self.send(b"cm2 STARTTLS\r\n")
            while not (line := await self.line()).startswith(b"cm2 "):
                pass
            if not line.upper().startswith(b"CM2 OK"):
                raise _Refused(_text(line))
        elif p == "pop3":
            greeting = await self.line()
            if not greeting.startswith(b"+OK"):
                raise _NotTheProtocol(_text(greeting))
            await self.send(b"CAPA\r\n")
            if (await self.line()).startswith(b"+OK"):
                await self.dot_list()
            await self.send(b"STLS\r\n")
            await self.expect(b"+OK")
        elif p == "nntp":
            greeting = await self.line()
            if not greeting.startswith((b"200", b"201")):
                raise _NotTheProtocol(_text(greeting))
            await self.send(b"CAPABILITIES\r\n")
            if (await self.line()).startswith(b"101"):
                await self.dot_list()
            await self.send(b"STARTTLS\r\n")
            await self.expect(b"382")
        elif p == "ldap":
            await self.send(ldap_ber.extended_request(1, ldap_ber.STARTTLS_OID).encode())
            await self._ldap_result()
        else:
            raise ValueError(f"no STARTTLS dialogue for protocol {p!r}")

    async def _ldap_result(self) -> None:
        data = await self.reader.readexactly(2)
        try:
            while (head := ldap_ber.header(data)) is None:
                data += await self.reader.readexactly(1)
        except ldap_ber.BerError as exc:
            raise _NotTheProtocol(f"its reply is not an LDAP message ({exc})") from None
        if head[2] > _MAX_LDAP_REPLY:
            raise _NotTheProtocol("its reply is longer than an LDAP ExtendedResponse")
        data += await self.reader.readexactly(head[2])
        self.machine.server_data(data)
        message = ldap_ber.decode_message(data)
        result = ldap_ber.decode_result(message.content) if message else None
        if result is None:
            raise _NotTheProtocol("its reply is not an LDAP ExtendedResponse")
        if result.code != 0:
            raise _Refused(f"LDAP resultCode {result.code}")


def _text(line: bytes) -> str:
    return line.decode("ascii", "replace").strip()[:200]
