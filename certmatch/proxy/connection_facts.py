"""Between mitmproxy's connection objects and certmatch's facts.

Reads what a session's facts need from mitmproxy's ``Client``/``Server`` and
OpenSSL connections, and shapes the upstream handshake (which SNI goes out, a
connection that refuses the client). The decisions themselves are pure and live
in :mod:`certmatch.core.policy`.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from mitmproxy import connection, tls
from mitmproxy.proxy import mode_specs
from OpenSSL import SSL, crypto

from certmatch.core import policy, protocols
from certmatch.core.facts import SessionFacts
from certmatch.core.identity import is_ip_address


def new_facts(
    client: connection.Client, server: connection.Server, sni: str | None, configured_host: str
) -> SessionFacts:
    """The facts every session starts with: who, where, and what was asked for."""
    facts = SessionFacts(
        id=uuid.uuid4().hex,
        started=datetime.now(UTC).isoformat(timespec="milliseconds"),
        client_address=format_address(client.peername),
        proxy_mode=client.proxy_mode.full_spec,
        sni=sni,
    )
    if server.address:
        facts.server_address = format_address(server.address)
        facts.protocol = protocols.protocol_from_port(server.address[1])
    if server.peername:
        facts.server_ip = server.peername[0]
    mode = client.proxy_mode
    facts.requested_host, facts.requested_host_source = policy.requested_host(
        sni,
        configured_host,
        mode=mode.type_name,
        reverse_target=mode.address[0] if isinstance(mode, mode_specs.ReverseMode) else None,
        destination=server.address[0] if server.address else None,
    )
    return facts


def set_faithful_sni(server: connection.Server, sni: str | None) -> None:
    """Make the upstream handshake send ``sni``, or none when it is None.

    Stock tlsconfig fills a missing SNI with the target host. An IP literal
    is never sent as SNI (RFC 6066 §3), so when no SNI is to be sent the
    server's IP stands in: no SNI goes out, and tlsconfig still builds the
    connection. Before the server is connected, "" holds the place (it stops
    tlsconfig's substitution) and the capture addon's ``server_connected``
    replaces it.
    """
    if sni:
        server.sni = sni
    elif server.peername:
        server.sni = server.peername[0]
    elif server.address and is_ip_address(server.address[0]):
        server.sni = server.address[0]
    else:
        server.sni = ""


def refusing_connection() -> SSL.Connection:
    """A server-side TLS connection with no certificate: it answers any ClientHello with a
    handshake_failure alert, so the client stops before any mail is exchanged.

    Providing a connection (rather than none) keeps mitmproxy's tlsconfig from
    building a working one, whichever order the addons run in.
    """
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    refusing = SSL.Connection(context)
    refusing.set_accept_state()
    return refusing


def peer_chain(ssl_conn: SSL.Connection | None) -> list[str]:
    """The server's chain as base64 DER, leaf first, exactly as presented."""
    if ssl_conn is None:
        return []
    chain = ssl_conn.get_peer_cert_chain() or []
    return [
        base64.b64encode(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).decode("ascii")
        for cert in chain
    ]


def legacy_version(hello: tls.ClientHello) -> int | None:
    """The ClientHello's legacy ``client_version`` field."""
    raw = hello.raw_bytes(wrap_in_record=False)  # starts at client_version
    return int.from_bytes(raw[0:2], "big") if len(raw) >= 2 else None


def format_address(address: Any) -> str | None:
    """``host:port``, with IPv6 hosts in brackets."""
    if not address:
        return None
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def client_id(data: Any) -> str | None:
    """The client connection id of any hook's data, if it has one."""
    for path in ("context.client.id", "client.id", "client_conn.id"):
        obj = data
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return str(obj)
    return None
