"""The STARTTLS machine for NNTP (RFC 4642, RFC 3977)."""

from __future__ import annotations

import re
from collections import deque

from certmatch.core import sasl
from certmatch.core.starttls.machine import (
    AUTH_COMMANDS,
    GREETING,
    REQUESTED,
    StartTlsMachine,
    line_verb,
    line_words,
)


class NntpMachine(StartTlsMachine):
    """NNTP (RFC 4642, RFC 3977): CAPABILITIES with STARTTLS, ``STARTTLS``, ``382``."""

    protocol = "nntp"
    _MULTILINE_CODES = frozenset({100, 101, 215, 220, 221, 222, 224, 225, 230, 231})

    def __init__(self, protocol: str | None = None) -> None:
        super().__init__(protocol)
        self._pending: deque[str] = deque()
        self._client_mode = "command"  # or "article" (POST/IHAVE body) or "sasl"

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        if not is_line:
            return
        if self._client_mode == "article":
            if unit.rstrip(b"\r\n") == b".":
                self._client_mode = "command"
                self._pending.append("ARTICLE-END")
            return
        if self._client_mode == "sasl":
            self._pending.append("AUTHINFO")
            return
        words = line_words(unit)
        verb = line_verb(unit)
        self._pending.append(verb)
        if verb == "STARTTLS":
            self._request(with_arguments=len(words) > 1)
        elif verb == "AUTHINFO" and len(words) > 1:
            self._authinfo(words[1].upper(), words[2] if len(words) > 2 else None)

    def _authinfo(self, subcommand: bytes, argument: bytes | None) -> None:
        command = f"AUTHINFO {subcommand.decode('ascii', 'replace')}"
        if subcommand == b"SASL":
            self._plaintext_auth(command, argument)  # the mechanism, and no more
        elif command in AUTH_COMMANDS:
            self._plaintext_auth(command)  # the user name, password or authenticator stay out
        else:
            self._plaintext_auth(f"AUTHINFO {sasl.UNRECOGNISED}")

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        if not is_line:
            return
        line = unit.rstrip(b"\r\n")
        if self._multiline_line(line, "CAPABILITIES", b"STARTTLS"):
            return
        match = re.match(rb"^(\d{3})\b", line)
        if match is None:
            if self.phase in (GREETING, REQUESTED):
                self._fail(f"the server sent {self._quote(unit)}, which is not an NNTP reply")
            return
        code = int(match.group(1))
        if self._awaiting_greeting:
            self._greeted()
            return
        verb = self._pending.popleft() if self._pending else ""
        if verb == "STARTTLS":
            self._answer(code == 382, line, match.group(1).decode())
        elif verb in ("POST", "IHAVE") and code in (340, 335):
            self._client_mode = "article"
        elif verb == "AUTHINFO":
            self._client_mode = "sasl" if code == 383 else "command"
        if code in self._MULTILINE_CODES or (code == 211 and verb == "LISTGROUP"):
            self._start_multiline(verb)
