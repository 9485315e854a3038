"""A real SMTP server (aiosmtpd) on loopback: SMTPS and STARTTLS submission, SNI-selected certs.

It runs in this process, in aiosmtpd's background thread with its own event
loop: messages land in a plain Python list the tests can read, start-up
takes a fraction of a second, and no process can be left behind.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from . import accounts
from .certs import CertFiles
from .process import LOOPBACK, ServerStartError

BANNER_HOSTNAME = "smtp.example.test"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    port: int  # the listener it arrived on
    authenticated_as: str | None


@dataclass
class SmtpServer:
    """Two aiosmtpd listeners sharing one certificate selection and one message store."""

    host: str
    smtps_port: int  # implicit TLS (like 465)
    submission_port: int  # plaintext, STARTTLS required before mail (like 587)
    start_seconds: float
    user: str = accounts.USER
    password: str = accounts.PASSWORD
    messages: list[ReceivedMessage] = field(default_factory=list)
    # The SNI of each TLS handshake, in order (None when the client sent none).
    sni_seen: list[str | None] = field(default_factory=list)
    _controllers: list[Controller] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def clear(self) -> None:
        """Forget received messages and seen SNI (the server keeps running)."""
        with self._lock:
            self.messages.clear()
            self.sni_seen.clear()

    def stop(self) -> None:
        for controller in self._controllers:
            controller.stop()
        self._controllers.clear()


class _Handler:
    def __init__(self, server: SmtpServer):
        self._server = server

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        auth = session.auth_data
        user = auth.login.decode() if isinstance(auth, LoginPassword) else None
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            port=smtp.transport.get_extra_info("sockname")[1] if smtp.transport else 0,
            authenticated_as=user if session.authenticated else None,
        )
        with self._server._lock:
            self._server.messages.append(message)
        return "250 OK message accepted"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == accounts.USER.encode()
        and auth_data.password == accounts.PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _EphemeralPortController(Controller):
    """A Controller that binds port 0 and learns its port before aiosmtpd's self-test connect."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def _context(files: CertFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.served, files.key)
    return ctx


def _sni_selecting_context(
    default: CertFiles, sni: Mapping[str, CertFiles], seen: list[str | None], lock: threading.Lock
) -> ssl.SSLContext:
    by_name = {name.lower(): _context(files) for name, files in sni.items()}
    ctx = _context(default)

    def select(sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        with lock:
            seen.append(name)
        if name and name.lower() in by_name:
            sslobj.context = by_name[name.lower()]

    ctx.sni_callback = select
    return ctx


def start_smtp(default: CertFiles, sni: Mapping[str, CertFiles]) -> SmtpServer:
    """Start SMTPS and submission listeners on free loopback ports; return once both answer."""
    started = time.monotonic()
    server = SmtpServer(host=LOOPBACK, smtps_port=0, submission_port=0, start_seconds=0.0)
    ctx = _sni_selecting_context(default, sni, server.sni_seen, server._lock)
    handler = _Handler(server)
    common: dict[str, Any] = {
        "hostname": LOOPBACK,
        "port": 0,
        "server_hostname": BANNER_HOSTNAME,
        "authenticator": _authenticate,
        "ready_timeout": 10.0,
    }
    # On implicit TLS aiosmtpd does not know the transport is encrypted and would
    # hide AUTH unless auth_require_tls is off.
    smtps = _EphemeralPortController(handler, ssl_context=ctx, auth_require_tls=False, **common)
    submission = _EphemeralPortController(
        handler, tls_context=ctx, require_starttls=True, auth_require_tls=True, **common
    )
    try:
        for controller in (smtps, submission):
            controller.start()
            server._controllers.append(controller)
    except Exception as err:
        server.stop()
        raise ServerStartError(f"aiosmtpd did not start on {LOOPBACK}: {err}") from err
    server.smtps_port = smtps.port
    server.submission_port = submission.port
    server.start_seconds = time.monotonic() - started
    server.clear()  # drop the SNI of aiosmtpd's own start-up probe
    return server
