"""The one LDAP BER codec: byte-exact encodings, and decoding that never raises on junk (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certmatch.core import ldap_ber
from certmatch.core.ldap_ber import LdapMessage, LdapResult, Operation

pytestmark = pytest.mark.pure

# What ldapsearch -ZZ and python-ldap send for StartTLS, message id 1 (RFC 4511 §4.14.1).
STARTTLS_REQUEST = bytes.fromhex("301d02010177188016") + b"1.3.6.1.4.1.1466.20037"


def test_the_starttls_request_is_encoded_byte_for_byte():
    assert ldap_ber.STARTTLS_OID == b"1.3.6.1.4.1.1466.20037"
    assert ldap_ber.extended_request(1, ldap_ber.STARTTLS_OID).encode() == STARTTLS_REQUEST


def test_the_starttls_request_decodes_to_its_oid():
    message = ldap_ber.decode_message(STARTTLS_REQUEST)
    assert message == LdapMessage(1, Operation.EXTENDED_REQUEST, message.content)
    assert ldap_ber.extended_request_name(message.content) == ldap_ber.STARTTLS_OID
    assert ldap_ber.extended_request_name(b"\x81\x01x") is None  # no requestName
    assert ldap_ber.extended_request_name(b"\x80\x05ab") is None  # truncated


def test_a_success_response_with_its_response_name():
    name = ldap_ber.encode(ldap_ber.RESPONSE_NAME, ldap_ber.STARTTLS_OID)
    response = ldap_ber.result(7, Operation.EXTENDED_RESPONSE, 0, extra=name).encode()
    assert response == bytes.fromhex("3024020107781f0a0100040004008a16") + ldap_ber.STARTTLS_OID
    message = ldap_ber.decode_message(response)
    assert (message.message_id, message.operation) == (7, Operation.EXTENDED_RESPONSE)
    assert ldap_ber.decode_result(message.content) == LdapResult(0)


def test_a_refusal_carries_its_code_and_message():
    refusal = ldap_ber.result(2, Operation.EXTENDED_RESPONSE, 52, "no TLS configured").encode()
    message = ldap_ber.decode_message(refusal)
    assert ldap_ber.decode_result(message.content) == LdapResult(52, b"", b"no TLS configured")
    assert ldap_ber.decode_result(b"\x04\x00") is None  # no resultCode first
    assert ldap_ber.decode_result(b"\x0a\x05\x00") is None  # truncated


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "020100"), (127, "02017f"), (128, "02020080"), (256, "02020100"), (-1, "0201ff")],
)
def test_integers_take_the_fewest_twos_complement_octets(value, encoded):
    assert ldap_ber.encode_integer(value).hex() == encoded
    assert ldap_ber.decode_integer(bytes.fromhex(encoded)[2:]) == value


def test_long_lengths_use_the_long_form():
    content = b"x" * 300
    encoded = ldap_ber.encode(0x04, content)
    assert encoded[:4] == bytes([0x04, 0x82, 0x01, 0x2C])
    assert ldap_ber.header(encoded) == (0x04, 4, 300)
    assert ldap_ber.children(encoded) == [(0x04, content)]


def test_headers_and_sizes_of_partial_and_bad_input():
    assert ldap_ber.header(b"\x30") is None
    assert ldap_ber.header(b"\x30\x82\x01") is None  # the length is not all there yet
    assert ldap_ber.message_size(b"\x30\x82\x01\x00") == 4 + 256
    assert ldap_ber.message_size(STARTTLS_REQUEST[:1]) is None
    with pytest.raises(ldap_ber.BerError):
        ldap_ber.header(b"\x30\x80")  # indefinite: LDAP forbids it (RFC 4511 §5.1)
    with pytest.raises(ldap_ber.BerError):
        ldap_ber.header(b"\x30\x85\x01\x00\x00\x00\x00")
    with pytest.raises(ldap_ber.BerError):
        ldap_ber.message_size(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ldap_ber.BerError):
        ldap_ber.children(b"\x04\x05abc")
    assert ldap_ber.children_or_none(b"\x04\x05abc") == []


def test_what_is_not_an_ldap_message_decodes_to_none():
    assert ldap_ber.decode_message(b"\x30\x03\x04\x01x") is None  # no messageID
    assert ldap_ber.decode_message(b"\x30\x03\x02\x01\x01") is None  # no protocolOp
    assert ldap_ber.decode_message(b"\x30\x80") is None
    assert ldap_ber.decode_message(b"\x30") is None


@given(st.integers(0, 2**31 - 1), st.sampled_from(list(Operation)), st.binary(max_size=300))
def test_messages_round_trip(message_id, operation, content):
    message = LdapMessage(message_id, operation, content)
    encoded = message.encode()
    assert ldap_ber.message_size(encoded) == len(encoded)
    assert ldap_ber.decode_message(encoded) == message


@given(st.binary(max_size=64))
def test_decoding_junk_never_raises_anything_but_none(data):
    ldap_ber.decode_message(data)
    ldap_ber.decode_result(data)
    ldap_ber.extended_request_name(data)
    ldap_ber.children_or_none(data)
