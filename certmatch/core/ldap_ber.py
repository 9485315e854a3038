"""LDAP messages in BER: just what the StartTLS operation needs, both ways.

LDAP encodes its messages with the Basic Encoding Rules restricted to
definite lengths (RFC 4511 §5.1, X.690 §8.1). certmatch reads and writes a
handful of them: the LDAPMessage envelope, the ExtendedRequest and
ExtendedResponse of StartTLS (RFC 4511 §4.12, §4.14), and an LDAPResult.
The STARTTLS machine, the SNI probe and the embedded lab server all use
this one codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# The StartTLS extended operation (RFC 4511 §4.14.1).
STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"

# Universal tags (X.690 §8.1.2).
INTEGER = 0x02
OCTET_STRING = 0x04
ENUMERATED = 0x0A
SEQUENCE = 0x30
SET = 0x31

# Context-specific fields of the extended operations (RFC 4511 §4.12).
REQUEST_NAME = 0x80  # ExtendedRequest requestName [0]
RESPONSE_NAME = 0x8A  # ExtendedResponse responseName [10]

_MAX_LENGTH_OCTETS = 4  # lengths up to 4 GiB; LDAP never needs more


class BerError(ValueError):
    """Bytes that are not the BER element they should be."""


class Operation(IntEnum):
    """The protocolOp tags certmatch reads or writes ([APPLICATION n], RFC 4511 §4.2-§4.12)."""

    BIND_REQUEST = 0x60
    BIND_RESPONSE = 0x61
    UNBIND_REQUEST = 0x42
    SEARCH_REQUEST = 0x63
    SEARCH_RESULT_ENTRY = 0x64
    SEARCH_RESULT_DONE = 0x65
    ABANDON_REQUEST = 0x50
    EXTENDED_REQUEST = 0x77
    EXTENDED_RESPONSE = 0x78


# -- BER elements ------------------------------------------------------------------


def encode(tag: int, content: bytes) -> bytes:
    """One element: ``tag``, the definite length of ``content``, ``content`` (X.690 §8.1.3)."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def encode_integer(value: int, tag: int = INTEGER) -> bytes:
    """An INTEGER (or ENUMERATED) in the fewest two's-complement octets (X.690 §8.3)."""
    return encode(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def decode_integer(content: bytes) -> int:
    """The value of an INTEGER or ENUMERATED element's content."""
    return int.from_bytes(content, "big", signed=True)


def header(data: bytes | bytearray, pos: int = 0) -> tuple[int, int, int] | None:
    """``(tag, header_length, content_length)`` of the element at ``pos``; None if incomplete.

    Raises :class:`BerError` for the indefinite form, which LDAP forbids, and
    for lengths of more than four octets.
    """
    if len(data) < pos + 2:
        return None
    tag = data[pos]
    first = data[pos + 1]
    if first < 0x80:
        return tag, 2, first
    count = first & 0x7F
    if count == 0 or count > _MAX_LENGTH_OCTETS:
        raise BerError("indefinite or oversized BER length")
    if len(data) < pos + 2 + count:
        return None
    return tag, 2 + count, int.from_bytes(data[pos + 2 : pos + 2 + count], "big")


def children(content: bytes) -> list[tuple[int, bytes]]:
    """The ``(tag, content)`` elements that make up ``content``, in order."""
    elements = []
    pos = 0
    while pos < len(content):
        head = header(content, pos)
        if head is None:
            raise BerError("truncated BER element")
        tag, header_length, length = head
        start = pos + header_length
        if start + length > len(content):
            raise BerError("BER element overruns its parent")
        elements.append((tag, content[start : start + length]))
        pos = start + length
    return elements


def children_or_none(content: bytes) -> list[tuple[int, bytes]]:
    """Like :func:`children`, but an empty list when ``content`` does not parse."""
    try:
        return children(content)
    except BerError:
        return []


# -- LDAP messages -----------------------------------------------------------------


@dataclass(frozen=True)
class LdapMessage:
    """One LDAPMessage (RFC 4511 §4.1.1): its messageID and its protocolOp, still encoded."""

    message_id: int
    operation: int  # the protocolOp's tag, usually an :class:`Operation`
    content: bytes  # the protocolOp's content

    def encode(self) -> bytes:
        return encode(
            SEQUENCE, encode_integer(self.message_id) + encode(self.operation, self.content)
        )


def message_size(data: bytes | bytearray) -> int | None:
    """Total size of the LDAPMessage that starts ``data``; None while its header is incomplete.

    Raises :class:`BerError` when ``data`` does not start with a SEQUENCE.
    """
    if data[0] != SEQUENCE:
        raise BerError("not a BER SEQUENCE")
    head = header(data)
    if head is None:
        return None
    _, header_length, length = head
    return header_length + length


def decode_message(data: bytes) -> LdapMessage | None:
    """The LDAPMessage that ``data`` holds (trailing controls ignored), or None."""
    try:
        head = header(data)
        if head is None:
            return None
        _, header_length, length = head
        fields = children(data[header_length : header_length + length])
    except BerError:
        return None
    if len(fields) < 2 or fields[0][0] != INTEGER:
        return None
    (_, message_id), (operation, content) = fields[:2]
    return LdapMessage(decode_integer(message_id), operation, content)


def extended_request(message_id: int, name: bytes) -> LdapMessage:
    """An ExtendedRequest for the operation whose OID is ``name`` (RFC 4511 §4.12)."""
    return LdapMessage(message_id, Operation.EXTENDED_REQUEST, encode(REQUEST_NAME, name))


def extended_request_name(content: bytes) -> bytes | None:
    """The requestName (an OID) of an ExtendedRequest's content, or None."""
    return dict(children_or_none(content)).get(REQUEST_NAME)


@dataclass(frozen=True)
class LdapResult:
    """The LDAPResult that starts every response (RFC 4511 §4.1.9)."""

    code: int
    matched_dn: bytes = b""
    diagnostic_message: bytes = b""

    def encode(self) -> bytes:
        return (
            encode_integer(self.code, ENUMERATED)
            + encode(OCTET_STRING, self.matched_dn)
            + encode(OCTET_STRING, self.diagnostic_message)
        )


def result(
    message_id: int, operation: int, code: int, text: str = "", extra: bytes = b""
) -> LdapMessage:
    """A response of type ``operation`` carrying an LDAPResult, then ``extra`` fields."""
    body = LdapResult(code, diagnostic_message=text.encode()).encode() + extra
    return LdapMessage(message_id, operation, body)


def decode_result(content: bytes) -> LdapResult | None:
    """The LDAPResult at the start of a response's content, or None without a resultCode."""
    fields = children_or_none(content)
    if not fields or fields[0][0] != ENUMERATED:
        return None
    message = fields[2][1] if len(fields) > 2 else b""
    matched = fields[1][1] if len(fields) > 1 else b""
    return LdapResult(decode_integer(fields[0][1]), matched, message)
