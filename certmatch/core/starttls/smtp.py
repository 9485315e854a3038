"""The STARTTLS machine for SMTP, submission and LMTP (RFC 3207, RFC 2033)."""

from __future__ import annotations

import re
from collections import deque

from certmatch.core.starttls.machine import (
    GREETING,
    REQUESTED,
    StartTlsMachine,
    line_verb,
    line_words,
)

_REPLY_LINE = re.compile(rb"^(\d{3})([ -]?)(.*)$", re.DOTALL)


class SmtpMachine(StartTlsMachine):
    """SMTP, submission and LMTP (RFC 3207): EHLO keyword STARTTLS, ``STARTTLS``, ``220``."""

    protocol = "smtp"

    def __init__(self, protocol: str | None = None) -> None:
        super().__init__(protocol)
        self._pending: deque[str] = deque()  # commands awaiting a reply, oldest first
        self._reply: list[bytes] = []  # lines of a multi-line reply so far
        self._client_mode = "command"  # or "data" (message content) or "auth" (SASL responses)

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        if not is_line:
            return
        if self._client_mode == "data":
            if unit.rstrip(b"\r\n") == b".":
                self._client_mode = "command"
                self._pending.append("DATA-END")
            return
        if self._client_mode == "auth":
            self._pending.append("AUTH")  # a SASL response: answered like the AUTH command
            return
        verb = line_verb(unit)
        self._pending.append(verb)
        words = line_words(unit)
        if verb == "STARTTLS":
            self._request(with_arguments=len(words) > 1)
        elif verb == "AUTH":
            self._plaintext_auth("AUTH", words[1] if len(words) > 1 else None)
        elif verb == "BDAT" and len(words) > 1 and words[1].isdigit():
            self._client.raw_remaining = int(words[1])

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        match = _REPLY_LINE.match(unit.rstrip(b"\r\n")) if is_line else None
        if match is None:
            if self.phase in (GREETING, REQUESTED):
                self._fail(f"the server sent {self._quote(unit)}, which is not an SMTP reply")
            return
        self._reply.append(unit)
        if match.group(2) == b"-":
            return
        lines, self._reply = self._reply, []
        self._on_reply(int(match.group(1)), lines)

    def _on_reply(self, code: int, lines: list[bytes]) -> None:
        if self._awaiting_greeting:
            self._greeted()
            return
        verb = self._pending.popleft() if self._pending else ""
        if verb in ("EHLO", "LHLO") and code == 250:
            # The first line names the server; each further line starts with a keyword.
            keywords = [line_words(line[4:])[:1] for line in lines[1:]]
            self._offered([b"STARTTLS"] in [[k.upper() for k in kw] for kw in keywords])
        elif verb == "STARTTLS":
            self._answer(code == 220, lines[0], str(code))
        elif verb == "DATA" and code == 354:
            self._client_mode = "data"
        elif verb == "AUTH":
            self._client_mode = "auth" if code == 334 else "command"
