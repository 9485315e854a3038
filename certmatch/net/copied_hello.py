"""A TLS client handshake over an asyncio stream that offers what a given client offered.

Python's ssl module cannot set the signature algorithms a client offers, so a side handshake
made with it would offer Python's own. A TLS 1.3 server that keeps an RSA and an ECDSA
certificate picks by those (RFC 8446 §4.2.3, §4.4.2.2), and could then answer certmatch with
the other certificate. pyOpenSSL's context over the same OpenSSL that cryptography bundles can
(``SSL_CTX_set1_sigalgs_list``, reached as mitmproxy's own ``net/tls.py`` reaches such calls),
so the handshake is driven here through memory BIOs over the stream.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

_VERSIONS = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}
_ORDER = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
_READ = 16384


@dataclass(frozen=True)
class HandshakeCopy:
    """What the handshake negotiated, and which of the client's offers could be copied."""

    chain: list[bytes]  # DER, leaf first, as the server sent it
    tls_version: str | None
    cipher: str | None
    signature_algorithms_copied: bool  # False: OpenSSL's defaults were offered instead


@functools.lru_cache(maxsize=256)
def known_signature_algorithms(names: tuple[str, ...]) -> tuple[str, ...]:
    """The names OpenSSL can offer, in the client's order (a code it has no name for, such
    as ``0x0303``, and a scheme this OpenSSL lacks are left out)."""
    probe = SSL.Context(SSL.TLS_CLIENT_METHOD)
    return tuple(n for n in names if n.isascii() and _set_sigalgs(probe, (n,)))


def _set_sigalgs(context: SSL.Context, names: tuple[str, ...]) -> bool:
    text = ":".join(names).encode("ascii")
    return bool(SSL._lib.SSL_CTX_set1_sigalgs_list(context._context, text))  # type: ignore[attr-defined]


def client_context(
    versions: list[str], alpn: list[str], signature_algorithms: list[str]
) -> tuple[SSL.Context, bool]:
    """A context offering the client's versions, ALPN and signature algorithms (as far as
    OpenSSL knows them), and accepting any certificate: certmatch judges the chain itself.
    Also whether the signature algorithms were copied."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE)
    offered = [v for v in _ORDER if v in versions]
    if offered:
        if offered[0] in ("TLSv1", "TLSv1.1"):
            context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # old versions need it
        context.set_min_proto_version(_VERSIONS[offered[0]])
        context.set_max_proto_version(_VERSIONS[offered[-1]])
    protocols = [p.encode("ascii") for p in alpn if p.isascii() and 0 < len(p) < 256]
    if protocols:
        context.set_alpn_protos(protocols)
    known = known_signature_algorithms(tuple(signature_algorithms))
    copied = bool(known) and _set_sigalgs(context, known)
    return context, copied


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    sni: str | None,
    versions: list[str],
    alpn: list[str],
    signature_algorithms: list[str],
) -> HandshakeCopy:
    """Handshake as a client on an open stream; SSL.Error or ConnectionError on failure.
    The caller bounds the time and closes the stream."""
    context, copied = client_context(versions, alpn, signature_algorithms)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    if sni and sni.isascii():
        connection.set_tlsext_host_name(sni.encode("ascii"))
    while True:
        try:
            connection.do_handshake()
            break
        except SSL.WantReadError:
            await _send_pending(connection, writer)
            data = await reader.read(_READ)
            if not data:
                raise ConnectionError("the server closed the connection during the handshake")
            connection.bio_write(data)
    await _send_pending(connection, writer)  # the client's Finished: end the handshake politely
    chain = connection.get_peer_cert_chain(as_cryptography=True) or []
    if not chain and (leaf := connection.get_peer_certificate(as_cryptography=True)):
        chain = [leaf]
    return HandshakeCopy(
        chain=[c.public_bytes(Encoding.DER) for c in chain],
        tls_version=connection.get_protocol_version_name(),
        cipher=connection.get_cipher_name(),
        signature_algorithms_copied=copied,
    )


async def _send_pending(connection: SSL.Connection, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            data = connection.bio_read(_READ)
        except SSL.WantReadError:
            break
        writer.write(data)
    await writer.drain()
