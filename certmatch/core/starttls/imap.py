"""The STARTTLS machine for IMAP (RFC 2595 §3.1, RFC 9051)."""

from __future__ import annotations

import re

from certmatch.core.starttls.client_words import MIN_WORD
from certmatch.core.starttls.framing import LineReader
from certmatch.core.starttls.machine import REQUESTED, StartTlsMachine, line_words

TAG = b"<tag>"  # a client's tag as recorded when it is long enough to hold anything


class ImapMachine(StartTlsMachine):
    """IMAP (RFC 2595 §3.1, RFC 9051): CAPABILITY with STARTTLS, ``tag STARTTLS``, ``tag OK``."""

    protocol = "imap"

    def __init__(self, protocol: str | None = None) -> None:
        super().__init__(protocol)
        self._starttls_tag: bytes | None = None
        self._auth_tag: bytes | None = None  # AUTHENTICATE in progress: client lines are SASL
        self._client_continues = False  # the next client line continues a command (after a literal)
        self._server_continues = False

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        if not is_line:
            return
        continues, self._client_continues = self._client_continues, False
        self._literal(unit, self._client, client=True)
        if continues or self._auth_tag is not None:
            return
        words = line_words(unit)
        if len(words) < 2:
            return
        tag, command = words[0], words[1].upper()
        if command == b"STARTTLS":
            self._starttls_tag = tag
            self._request(with_arguments=len(words) > 2)
        elif command == b"LOGIN":
            self._plaintext_auth("LOGIN")
        elif command == b"AUTHENTICATE":
            self._plaintext_auth("AUTHENTICATE", words[2] if len(words) > 2 else None)
            self._auth_tag = tag

    def _is_goodbye(self, unit: bytes) -> bool:
        """``tag LOGOUT`` (RFC 9051 §6.1.3)."""
        words = line_words(unit)
        return len(words) == 2 and words[1].upper() == b"LOGOUT"

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        if not is_line:
            return
        continues, self._server_continues = self._server_continues, False
        self._literal(unit, self._server, client=False)
        if continues:
            return
        line = unit.rstrip(b"\r\n")
        upper = line.upper()
        if self._awaiting_greeting:
            if not re.match(rb"\* (OK|PREAUTH|BYE)\b", upper):
                self._fail(f"the server's greeting {self._quote(unit)} is not an IMAP greeting")
                return
            self._greeted()
        capability = re.search(rb"(?:^\* |\[)CAPABILITY ([^\]]*)", upper)
        if capability:
            self._offered(b"STARTTLS" in capability.group(1).split())
        words = line.split(None, 2)
        if len(words) < 2 or words[0] in (b"*", b"+"):
            return
        tag, status = words[0], words[1].upper()
        if self._auth_tag == tag:
            self._auth_tag = None
        if self.phase == REQUESTED and tag == self._starttls_tag:
            # The tag is the client's: recorded as sent only while too short to hold a secret.
            shown = tag if len(tag) < MIN_WORD and tag.isalnum() else TAG
            line = shown + line[len(tag) :]
            if status not in (b"OK", b"NO", b"BAD"):
                self._fail(f"the server answered STARTTLS with {self._quote(line)}")
                return
            self._starttls_tag = None
            self._answer(status == b"OK", line, (shown + b" " + status).decode("ascii", "replace"))

    def _literal(self, line: bytes, reader: LineReader, *, client: bool) -> None:
        match = re.search(rb"\{(\d{1,9})\+?\}\r?\n$", line)
        if match:
            reader.raw_remaining = int(match.group(1))
            if client:
                self._client_continues = True
            else:
                self._server_continues = True
