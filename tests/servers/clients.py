"""Real clients that dial an address (loopback) but keep the host name they ask for.

The Python stdlib clients below connect to ``dial`` (127.0.0.1 by default)
while sending SNI and checking the certificate against ``name``, the way a
mail client configured with that host name would. ``s_client`` and ``curl``
run the real command-line tools the same way.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .process import LOOPBACK, require_binary

TIMEOUT_S = 5.0


def verifying_context(cafile: Path) -> ssl.SSLContext:
    """A client context that trusts only ``cafile`` and checks host names."""
    return ssl.create_default_context(cafile=str(cafile))


class LoopbackIMAP4(imaplib.IMAP4):
    """Plaintext IMAP to ``dial``:port; ``starttls()`` checks the certificate against ``name``."""

    def __init__(self, name: str, port: int, *, dial: str = LOOPBACK, timeout: float = TIMEOUT_S):
        self._dial = dial
        super().__init__(name, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self._dial, self.port), timeout)


class LoopbackIMAP4_SSL(imaplib.IMAP4_SSL):
    """Implicit-TLS IMAP to ``dial``:port, with SNI and certificate check for ``name``."""

    def __init__(
        self,
        name: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        dial: str = LOOPBACK,
        timeout: float = TIMEOUT_S,
    ):
        self._dial = dial
        self._tls = ssl_context
        super().__init__(name, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self._dial, self.port), timeout)
        return self._tls.wrap_socket(sock, server_hostname=self.host)


class LoopbackPOP3(poplib.POP3):
    """Plaintext POP3 to ``dial``:port; ``stls()`` checks the certificate against ``name``."""

    def __init__(self, name: str, port: int, *, dial: str = LOOPBACK, timeout: float = TIMEOUT_S):
        self._dial = dial
        super().__init__(name, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self._dial, self.port), timeout)


class LoopbackPOP3_SSL(poplib.POP3_SSL):
    """Implicit-TLS POP3 to ``dial``:port, with SNI and certificate check for ``name``."""

    def __init__(
        self,
        name: str,
        port: int,
        *,
        context: ssl.SSLContext,
        dial: str = LOOPBACK,
        timeout: float = TIMEOUT_S,
    ):
        self._dial = dial
        self._tls = context
        super().__init__(name, port, context=context, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._dial, self.port), timeout)
        return self._tls.wrap_socket(sock, server_hostname=self.host)


class LoopbackSMTP(smtplib.SMTP):
    """Plaintext SMTP to ``dial``:port; ``starttls()`` checks the certificate against ``name``."""

    def __init__(self, name: str, port: int, *, dial: str = LOOPBACK, timeout: float = TIMEOUT_S):
        self._dial = dial
        super().__init__(name, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._dial, port), timeout)


class LoopbackSMTP_SSL(smtplib.SMTP_SSL):
    """Implicit-TLS SMTP to ``dial``:port, with SNI and certificate check for ``name``."""

    def __init__(
        self,
        name: str,
        port: int,
        *,
        context: ssl.SSLContext,
        dial: str = LOOPBACK,
        timeout: float = TIMEOUT_S,
    ):
        self._dial = dial
        self._tls = context
        super().__init__(name, port, context=context, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._dial, port), timeout)
        return self._tls.wrap_socket(sock, server_hostname=host)


@dataclass(frozen=True)
class SClientResult:
    """What ``openssl s_client`` saw: the certificates the server sent and its verdict."""

    chain: list[x509.Certificate]  # as sent by the server, leaf first
    verify_code: int | None  # 0 = ok; 62 = hostname mismatch (with verify_hostname)
    output: str

    @property
    def leaf(self) -> x509.Certificate:
        if not self.chain:
            raise AssertionError(f"s_client received no certificate:\n{self.output}")
        return self.chain[0]


_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_VERIFY = re.compile(r"Verify return code: (\d+)")


def s_client(
    port: int,
    *,
    servername: str | None,
    cafile: Path | None = None,
    starttls: str | None = None,
    verify_hostname: str | None = None,
    dial: str = LOOPBACK,
) -> SClientResult:
    """Handshake with ``openssl s_client``; ``servername=None`` sends no SNI (-noservername).

    ``starttls`` is an s_client protocol name (imap, pop3, smtp, ldap).
    """
    argv = [require_binary("openssl", "openssl"), "s_client", "-connect", f"{dial}:{port}"]
    argv += ["-showcerts"]
    argv += ["-noservername"] if servername is None else ["-servername", servername]
    if cafile is not None:
        argv += ["-CAfile", str(cafile)]
    if starttls is not None:
        argv += ["-starttls", starttls]
    if verify_hostname is not None:
        argv += ["-verify_hostname", verify_hostname]
    done = subprocess.run(
        argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S * 2
    )
    text = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    chain = [x509.load_pem_x509_certificate(pem) for pem in _PEM.findall(done.stdout)]
    match = _VERIFY.search(text)
    return SClientResult(chain, int(match.group(1)) if match else None, text)


def curl(url: str, *, connect_to: str, cafile: Path, user: str, password: str) -> bytes:
    """Fetch ``url`` with curl, dialling ``connect_to`` ("H:P:ADDR:P"); raise with curl's stderr."""
    argv = [require_binary("curl", "curl"), "--silent", "--show-error", "--max-time", "10"]
    argv += ["--connect-to", connect_to, "--cacert", str(cafile), "--user", f"{user}:{password}"]
    done = subprocess.run(
        [*argv, url],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT_S * 3,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"curl {url} failed with exit {done.returncode}: {done.stderr.decode().strip()}"
        )
    return done.stdout
