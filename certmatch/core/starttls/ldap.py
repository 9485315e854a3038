"""The STARTTLS machine for LDAP (RFC 4511 §4.14, RFC 4513 §3)."""

from __future__ import annotations

from typing import ClassVar

from certmatch.core import ldap_ber
from certmatch.core.ldap_ber import STARTTLS_OID, Operation
from certmatch.core.starttls.framing import BerReader, LineReader
from certmatch.core.starttls.machine import REQUESTED, StartTlsMachine


class LdapMachine(StartTlsMachine):
    """LDAP (RFC 4511 §4.14, RFC 4513 §3): ExtendedRequest StartTLS, ExtendedResponse success."""

    protocol = "ldap"
    server_speaks_first = False
    upgrade_command = "StartTLS"

    _RESULT_NAMES: ClassVar[dict[int, str]] = {
        0: "success",
        1: "operationsError",
        2: "protocolError",
        51: "busy",
        52: "unavailable",
        53: "unwillingToPerform",
        80: "other",
    }

    def __init__(self, protocol: str | None = None) -> None:
        super().__init__(protocol)
        self._starttls_id: int | None = None

    def _reader(self) -> LineReader:
        return BerReader()

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        message = ldap_ber.decode_message(unit) if is_line else None
        if message is None:
            return
        if message.operation == Operation.EXTENDED_REQUEST:
            if ldap_ber.extended_request_name(message.content) == STARTTLS_OID:
                self._starttls_id = message.message_id
                # StartTLS has no requestValue (RFC 4511 §4.14.1).
                with_value = len(ldap_ber.children_or_none(message.content)) > 1
                self._request(with_arguments=with_value)
        elif message.operation == Operation.BIND_REQUEST:
            self._note_bind(message.content)

    def _is_goodbye(self, unit: bytes) -> bool:
        """An UnbindRequest (RFC 4511 §4.3)."""
        message = ldap_ber.decode_message(unit)
        return message is not None and message.operation == Operation.UNBIND_REQUEST

    def _note_bind(self, op: bytes) -> None:
        fields = ldap_ber.children_or_none(op)  # version, name, authentication
        if len(fields) < 3:
            return
        tag, credentials = fields[2]
        # BER framing would hide these among its length bytes: known exactly, noted exactly.
        self._client_words.add(fields[1][1])
        if tag == 0x80 and credentials:  # simple bind with a password (not anonymous)
            self._client_words.add(credentials)
            self._plaintext_auth("BIND simple")
        elif tag == 0xA3:  # SASL: mechanism, then maybe credentials
            sasl = ldap_ber.children_or_none(credentials)
            for _, value in sasl[1:]:
                self._client_words.add(value)
            self._plaintext_auth("BIND SASL", sasl[0][1] if sasl else None)

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        message = ldap_ber.decode_message(unit) if is_line else None
        if message is None:
            if self.phase == REQUESTED:
                self._fail(f"the server sent {self._quote(unit)}, which is not an LDAP message")
            return
        if message.operation == Operation.SEARCH_RESULT_ENTRY:
            self._note_root_dse(message.content)
        if self.phase != REQUESTED or message.message_id != self._starttls_id:
            return
        if message.operation != Operation.EXTENDED_RESPONSE:
            self._fail(
                f"the server answered StartTLS with LDAP operation tag 0x{message.operation:02x}"
            )
            return
        result = ldap_ber.decode_result(message.content)
        if result is None:
            self._fail("the server's StartTLS response has no resultCode")
            return
        code = f"resultCode {result.code} ({self._RESULT_NAMES.get(result.code, 'error')})"
        text = result.diagnostic_message
        self._answer(
            result.code == 0, code.encode() + b": " + text if text else code.encode(), code
        )

    def _note_root_dse(self, op: bytes) -> None:
        fields = ldap_ber.children_or_none(op)  # objectName, attributes
        if not fields or fields[0] != (ldap_ber.OCTET_STRING, b""):
            return
        if b"supportedextension" in op.lower():
            self._offered(STARTTLS_OID in op)
