"""A side handshake: certmatch's own TLS handshake to the server a client is talking to.

In observe mode a TLS 1.3 server's Certificate is encrypted (RFC 8446 §4.4.2 travels after
the ServerHello, under the handshake keys), and a resumed handshake carries none at all. To
learn which chain the client was shown, certmatch asks the same server the same way:

- the same address and port, and for STARTTLS the same protocol's upgrade dialogue;
- the client's SNI exactly, or no SNI when it sent none (an IP address is never sent as
  SNI, RFC 6066 §3, so a client that sent one is asked for with none);
- the client's range of TLS versions, and its ALPN protocols.

What it cannot copy: the client's signature_algorithms. Python's ssl module has no way to
set them (OpenSSL's ``SSL_CTX_set1_sigalgs_list`` is not exposed, nor by pyOpenSSL), so a
server that picks between an RSA and an ECDSA certificate by the client's signature
algorithms may answer the side handshake with the other one.

Results are kept per (server, SNI, STARTTLS protocol) for a short time (:class:`SideHandshakes`),
and a handshake already under way is shared, so a busy client does not double the server's
load. The relayed session never waits for any of this: callers get a task and go on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from dataclasses import dataclass, field

from certmatch.core.identity import is_ip_address
from certmatch.core.starttls import make_machine

# Private helpers of the probe's handshake, shared so both read chains and speak STARTTLS
# the same way.
from certmatch.net.handshake import _chain_der, _Dialogue

DEFAULT_TTL_S = 60.0
DEFAULT_TIMEOUT_S = 5.0
MAX_ENTRIES = 4096

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]


@dataclass
class SideResult:
    """What the side handshake showed."""

    chain: list[str] = field(default_factory=list)  # base64 DER, leaf first
    tls_version: str | None = None
    cipher: str | None = None
    error: str | None = None
    sni_sent: str | None = None
    cached: bool = False  # from an earlier handshake, not one made for this session


def client_context(versions: list[str], alpn: list[str]) -> ssl.SSLContext:
    """A context that offers the client's versions and ALPN and accepts any certificate:
    certmatch judges the chain itself."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    offered = [v for v in _ORDER if v in versions]
    if offered:
        with contextlib.suppress(ValueError, ssl.SSLError):
            # Old versions also need a security level that allows them.
            if offered[0] in ("TLSv1", "TLSv1.1"):
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = _VERSIONS[offered[0]]
            context.maximum_version = _VERSIONS[offered[-1]]
    if alpn:
        with contextlib.suppress(ValueError, NotImplementedError):
            context.set_alpn_protocols(alpn)
    return context


async def side_handshake(
    ip: str,
    port: int,
    *,
    sni: str | None,
    versions: list[str],
    alpn: list[str],
    starttls: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> SideResult:
    """One handshake to ``ip:port`` as the client made it; never raises."""
    sni_sent = sni if sni and not is_ip_address(sni) else None
    result = SideResult(sni_sent=sni_sent)
    writer: asyncio.StreamWriter | None = None
    phase = "connecting"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(ip, port, limit=16384)
            if starttls:
                phase = f"the {starttls} STARTTLS dialogue"
                await _Dialogue(reader, writer, make_machine(starttls)).upgrade()
            phase = "the TLS handshake"
            await writer.start_tls(client_context(versions, alpn), server_hostname=sni_sent)
            tls = writer.get_extra_info("ssl_object")
            if tls is not None:
                result.tls_version = tls.version()
                cipher = tls.cipher()
                result.cipher = cipher[0] if cipher else None
                result.chain = [base64.b64encode(d).decode("ascii") for d in _chain_der(tls)]
            if not result.chain:
                result.error = "the side handshake got no certificate from the server"
    except TimeoutError:
        result.error = f"the side handshake got no answer within {timeout:g} s (during {phase})"
    except ssl.SSLError as exc:
        result.error = f"the side handshake failed ({getattr(exc, 'reason', None) or exc})"
    except Exception as exc:  # noqa: BLE001 - a side handshake never breaks a session
        result.error = f"the side handshake failed during {phase} ({type(exc).__name__}: {exc})"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await writer.wait_closed()
    return result


# server, port, SNI, STARTTLS protocol, and the client's offered versions and ALPN: a server
# may choose its certificate by any of them, so a client offering others gets its own.
type CacheKey = tuple[str, int, str | None, str | None, tuple[str, ...], tuple[str, ...]]


class SideHandshakes:
    """Side handshakes, shared while under way and kept ``ttl`` seconds once done."""

    def __init__(self, ttl: float = DEFAULT_TTL_S, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self._entries: dict[CacheKey, tuple[float, asyncio.Task[SideResult]]] = {}
        self.made = 0  # handshakes actually made (for tests and numbers)

    def get(
        self,
        ip: str,
        port: int,
        *,
        sni: str | None,
        versions: list[str],
        alpn: list[str],
        starttls: str | None = None,
    ) -> tuple[asyncio.Task[SideResult], bool]:
        """The task of the handshake for this server, SNI, versions and ALPN, and whether it
        was shared (cached or under way for another session). Call from the event loop."""
        key: CacheKey = (ip, port, sni, starttls, tuple(sorted(versions)), tuple(alpn))
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < self.ttl:
            task = entry[1]
            if not (task.done() and task.result().error):
                return task, True
        if len(self._entries) >= MAX_ENTRIES:
            self._expire(now)
        self.made += 1
        task = asyncio.get_running_loop().create_task(
            side_handshake(
                ip,
                port,
                sni=sni,
                versions=versions,
                alpn=alpn,
                starttls=starttls,
                timeout=self.timeout,
            )
        )
        self._entries[key] = (now, task)
        return task, False

    def _expire(self, now: float) -> None:
        for key, (at, task) in list(self._entries.items()):
            if now - at >= self.ttl and task.done():
                del self._entries[key]
        while len(self._entries) >= MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
