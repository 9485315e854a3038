"""Ask a TLS server for its certificate with a given SNI.

Used when a client sent no SNI and got a certificate that does not match:
asking again by name shows whether the server would have sent the right
certificate (the ``no-sni-default-certificate`` cause). For a STARTTLS
session the probe first speaks the protocol's upgrade dialogue, as the
client did.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

from certmatch.core import ldap_ber
from certmatch.core.facts import SniProbe

_MAX_LDAP_REPLY = 64 * 1024  # an ExtendedResponse is a few dozen bytes; more is not one


# Probes run in their own small pool: a slow server must never tie up the
# default executor, which asyncio (and so mitmproxy) uses for DNS lookups.
_PROBES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="certmatch-probe")


class _Refused(Exception):
    """The server did not agree to the STARTTLS upgrade."""


async def probe_with_sni(
    ip: str, port: int, sni: str, *, starttls: str | None = None, timeout: float = 3.0
) -> SniProbe:
    """Connect to ``ip:port``, send ``sni``, and return the certificate presented.

    ``starttls`` names the protocol whose upgrade to perform first (smtp,
    submission, imap, pop3, nntp, ldap); None means implicit TLS. Never raises:
    a failure is recorded in ``SniProbe.error``. Only the leaf is recorded
    (Python 3.12's ssl module does not expose the rest of an unverified chain);
    the leaf is what names are judged on.
    """
    loop = asyncio.get_running_loop()
    try:
        der = await asyncio.wait_for(
            loop.run_in_executor(_PROBES, _fetch_leaf, ip, port, sni, starttls, timeout),
            timeout + 1,
        )
    except TimeoutError:
        return SniProbe(sni=sni, error=f"no answer from {ip}:{port} within {timeout:g} s")
    except _Refused as exc:
        return SniProbe(sni=sni, error=f"the server refused the STARTTLS upgrade: {exc}")
    except (OSError, ssl.SSLError, ValueError, IndexError) as exc:
        return SniProbe(sni=sni, error=f"{type(exc).__name__}: {exc}")
    if not der:
        return SniProbe(sni=sni, error="the server sent no certificate")
    return SniProbe(sni=sni, chain=[base64.b64encode(der).decode("ascii")])


def _fetch_leaf(ip: str, port: int, sni: str, starttls: str | None, timeout: float) -> bytes | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    with socket.create_connection((ip, port), timeout=timeout) as raw:
        if starttls:
            _upgrade(raw, starttls, deadline)
        raw.settimeout(max(0.05, deadline - time.monotonic()))
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            return tls.getpeercert(binary_form=True)


def _upgrade(sock: socket.socket, protocol: str, deadline: float) -> None:
    """Speak ``protocol`` up to the server's positive answer to STARTTLS, by ``deadline``."""
    reader = _Lines(sock, deadline)
    if protocol in ("smtp", "submission", "lmtp"):
        reader.reply(b"220")
        sock.sendall(
            b"LHLO certmatch.invalid\r\n" if protocol == "lmtp" else b"EHLO certmatch.invalid\r\n"
        )
        reader.reply(b"250")
        sock.sendall(b"STARTTLS\r\n")
        reader.reply(b"220")
    elif protocol == "imap":
        reader.expect(b"* OK")
        sock.sendall(b"cm1 STARTTLS\r\n")
        while not (line := reader.line()).startswith(b"cm1 "):
            pass  # untagged lines; the deadline bounds a server that sends them forever
        if not line.startswith(b"cm1 OK"):
            raise _Refused(_text(line))
    elif protocol == "pop3":
        reader.expect(b"+OK")
        sock.sendall(b"STLS\r\n")
        reader.expect(b"+OK")
    elif protocol == "nntp":
        reader.expect(b"20")
        sock.sendall(b"STARTTLS\r\n")
        reader.expect(b"382")
    elif protocol == "ldap":
        sock.sendall(ldap_ber.extended_request(1, ldap_ber.STARTTLS_OID).encode())
        _ldap_result(reader)
    else:
        raise ValueError(f"no STARTTLS dialogue for protocol {protocol!r}")


class _Lines:
    """CRLF lines from a socket, without reading past the line asked for."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def byte(self) -> bytes:
        """One byte (nothing may be read past the reply), or TimeoutError after the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        byte = self.sock.recv(1)
        if not byte:
            raise ConnectionError("the server closed the connection during the upgrade")
        return byte

    def line(self) -> bytes:
        data = bytearray()
        while not data.endswith(b"\n"):
            data += self.byte()
            if len(data) > 8192:
                raise ValueError("the server sent an over-long line")
        return bytes(data)

    def expect(self, prefix: bytes) -> bytes:
        line = self.line()
        if not line.startswith(prefix):
            raise _Refused(_text(line))
        return line

    def reply(self, code: bytes) -> None:
        """A (possibly multi-line) SMTP-style reply that must carry ``code``."""
        while True:
            line = self.expect(code)
            if line[3:4] != b"-":
                return


def _ldap_result(reader: _Lines) -> None:
    """Read the server's ExtendedResponse to StartTLS (RFC 4511 §4.14.2); raise unless success."""
    data = reader.byte() + reader.byte()
    while (head := ldap_ber.header(data)) is None:  # a long-form length: up to 4 more bytes
        data += reader.byte()
    if head[2] > _MAX_LDAP_REPLY:
        raise ValueError("the LDAP server sent a reply longer than this probe reads")
    for _ in range(head[2]):
        data += reader.byte()
    message = ldap_ber.decode_message(data)
    result = ldap_ber.decode_result(message.content) if message else None
    if result is None or result.code != 0:
        raise _Refused(f"LDAP resultCode {result.code if result is not None else 'missing'}")


def _text(line: bytes) -> str:
    return line.decode("ascii", "replace").strip()[:200]
