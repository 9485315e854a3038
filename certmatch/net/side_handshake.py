"""A side handshake: certmatch's own TLS handshake to the server a client is talking to.

In observe mode a TLS 1.3 server's Certificate is encrypted (RFC 8446 §4.4.2 travels after
the ServerHello, under the handshake keys), and a resumed handshake carries none at all. To
learn which chain the client was shown, certmatch asks the same server the same way:

- the same address and port, and for STARTTLS the same protocol's upgrade dialogue;
- the client's SNI exactly, or no SNI when it sent none (an IP address is never sent as
  SNI, RFC 6066 §3, so a client that sent one is asked for with none);
- the client's range of TLS versions, its ALPN protocols, and its signature algorithms (those
  OpenSSL has names for; a server may choose between an RSA and an ECDSA certificate by them,
  RFC 8446 §4.2.3), through :mod:`certmatch.net.copied_hello`.

What it cannot copy: anything else a server might choose by (cipher suites, groups, the
client's own address), and a signature algorithm OpenSSL does not know.

Results are kept per (server, SNI, STARTTLS protocol) for a short time (:class:`SideHandshakes`),
and a handshake already under way is shared, so a busy client does not double the server's
load. The relayed session never waits for any of this: callers get a task and go on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from dataclasses import dataclass, field

from OpenSSL import SSL

from certmatch.core.identity import is_ip_address
from certmatch.core.starttls import make_machine
from certmatch.net import copied_hello

# The probe's STARTTLS dialogue, shared so both speak STARTTLS the same way.
from certmatch.net.handshake import _Dialogue

DEFAULT_TTL_S = 60.0
DEFAULT_TIMEOUT_S = 5.0
MAX_ENTRIES = 4096


@dataclass
class SideResult:
    """What the side handshake showed."""

    chain: list[str] = field(default_factory=list)  # base64 DER, leaf first
    tls_version: str | None = None
    cipher: str | None = None
    error: str | None = None
    sni_sent: str | None = None
    signature_algorithms_copied: bool = False  # False: OpenSSL's defaults were offered
    cached: bool = False  # from an earlier handshake, not one made for this session


async def side_handshake(
    ip: str,
    port: int,
    *,
    sni: str | None,
    versions: list[str],
    alpn: list[str],
    signature_algorithms: list[str] | None = None,
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
            done = await copied_hello.handshake(
                reader,
                writer,
                sni=sni_sent,
                versions=versions,
                alpn=alpn,
                signature_algorithms=signature_algorithms or [],
            )
            result.tls_version, result.cipher = done.tls_version, done.cipher
            result.chain = [base64.b64encode(d).decode("ascii") for d in done.chain]
            result.signature_algorithms_copied = done.signature_algorithms_copied
            if not result.chain:
                result.error = "the side handshake got no certificate from the server"
    except TimeoutError:
        result.error = f"the side handshake got no answer within {timeout:g} s (during {phase})"
    except SSL.Error as exc:
        result.error = f"the side handshake failed ({_openssl_reason(exc)})"
    except Exception as exc:  # noqa: BLE001 - a side handshake never breaks a session
        result.error = f"the side handshake failed during {phase} ({type(exc).__name__}: {exc})"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await writer.wait_closed()
    return result


def _openssl_reason(error: SSL.Error) -> str:
    """OpenSSL's reason, e.g. "tlsv1 alert protocol version", from pyOpenSSL's error list."""
    listed = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [entry[2] for entry in listed if isinstance(entry, tuple) and len(entry) == 3]
    return "; ".join(r for r in reasons if r) or str(error) or type(error).__name__


# server, port, SNI, STARTTLS protocol, and the client's offered versions, ALPN and signature
# algorithms: a server may choose its certificate by any of them, so a client offering others
# gets its own.
type CacheKey = tuple[
    str, int, str | None, str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...]
]


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
        signature_algorithms: list[str] | None = None,
        starttls: str | None = None,
    ) -> tuple[asyncio.Task[SideResult], bool]:
        """The task of the handshake for this server, SNI, versions, ALPN and signature
        algorithms, and whether it was shared (cached or under way for another session). Call
        from the event loop."""
        sigalgs = tuple(signature_algorithms or ())
        key: CacheKey = (ip, port, sni, starttls, tuple(sorted(versions)), tuple(alpn), sigalgs)
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
                signature_algorithms=list(sigalgs),
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
