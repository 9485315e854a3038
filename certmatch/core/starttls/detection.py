"""Which STARTTLS protocol a new plaintext connection speaks, from its first bytes."""

from __future__ import annotations

from certmatch.core import ldap_ber, protocols
from certmatch.core.starttls.framing import MAX_BER_MESSAGE

NEEDS_MORE = "needs-more"  # not enough bytes yet to decide

_TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello
_LONGEST_GREETING_LINE = 512  # a first line that runs on longer is no greeting we know


def detect_protocol(
    port: int | None, server_data: bytes, client_data: bytes, forced: str = "auto"
) -> str | None:
    """The STARTTLS protocol a new plaintext connection speaks, None, or NEEDS_MORE.

    ``forced`` is ``auto`` or a protocol name. In auto mode a server-speaks-first
    protocol is recognised by its greeting (the port only refines SMTP into
    submission), LDAP by the client's first BER SEQUENCE once it parses as an
    LDAPMessage; only on a known LDAP port is a partial one waited for. A client that starts with
    TLS is never ours: that is implicit TLS.
    """
    if client_data[:1] == bytes([_TLS_HANDSHAKE]):
        return None
    by_port = protocols.protocol_from_port(port)
    if forced not in ("auto", ""):
        return protocols.refine_protocol(by_port, forced)
    if client_data:
        return _ldap_client(port, server_data, client_data)
    if not server_data:
        return NEEDS_MORE
    end = server_data.find(b"\n")
    if end < 0:
        return NEEDS_MORE if len(server_data) < _LONGEST_GREETING_LINE else None
    seen = protocols.protocol_from_server_greeting(server_data[:end])
    if seen == "unknown":
        return None
    return protocols.refine_protocol(by_port, seen)


def _ldap_client(port: int | None, server_data: bytes, client_data: bytes) -> str | None:
    """``ldap`` when the client, speaking first, sent an LDAPMessage; NEEDS_MORE or None if not."""
    if server_data or client_data[0] != ldap_ber.SEQUENCE:
        return None
    try:
        size = ldap_ber.message_size(client_data)
    except ldap_ber.BerError:
        return None
    if size is not None and size > MAX_BER_MESSAGE:
        return None
    if size is None or len(client_data) < size:
        # Waiting for the rest is safe only where LDAP is expected: elsewhere a
        # client whose first byte happens to be "0" would wait for an answer
        # that never comes.
        return NEEDS_MORE if protocols.is_starttls_port("ldap", port) else None
    return "ldap" if ldap_ber.decode_message(client_data[:size]) is not None else None
