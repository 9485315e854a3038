"""The STARTTLS machine for NNTP (RFC 4642, RFC 3977)."""

from __future__ import annotations

import re
from collections import deque

from certmatch.core.starttls.machine import (
    GREETING,
    REQUESTED,
    StartTlsMachine,
    describe,
    line_verb,
    line_words,
    sasl_mechanism,
)


class NntpMachine(StartTlsMachine):
    """NNTP (RFC 4642, RFC 3977): CAPABILITIES with STARTTLS, ``STARTTLS``, ``382``."""

    protocol = "nntp"
    _MULTILINE_CODES = frozenset({100, 101, 215, 220, 221, 222, 224, 225, 230, 231})

    def __init__(self, protocol: str | None = None) -> None:
        super().__init__(protocol)
        self._pending: deque[str] = deque()
        self._multiline_verb: str | None = None
        self._capa_starttls = False
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
            self._request()
        elif verb == "AUTHINFO" and len(words) > 1:
            sub = sasl_mechanism(words[1])
            name = f"AUTHINFO {sub}"
            if sub == "SASL" and len(words) > 2:
                name += f" {sasl_mechanism(words[2])}"
            self._plaintext_auth(name.strip())

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        if not is_line:
            return
        line = unit.rstrip(b"\r\n")
        if self._multiline_verb is not None:
            if line == b".":
                if self._multiline_verb == "CAPABILITIES":
                    self._offered(self._capa_starttls)
                self._multiline_verb = None
            elif self._multiline_verb == "CAPABILITIES" and line_words(line)[:1] == [b"STARTTLS"]:
                self._capa_starttls = True
            return
        match = re.match(rb"^(\d{3})\b", line)
        if match is None:
            if self.phase in (GREETING, REQUESTED):
                self._fail(f"the server sent {describe(unit)}, which is not an NNTP reply")
            return
        code = int(match.group(1))
        if self._awaiting_greeting:
            self._greeted()
            return
        verb = self._pending.popleft() if self._pending else ""
        if verb == "STARTTLS":
            self._answer(code == 382, line)
        elif verb in ("POST", "IHAVE") and code in (340, 335):
            self._client_mode = "article"
        elif verb == "AUTHINFO":
            self._client_mode = "sasl" if code == 383 else "command"
        if code in self._MULTILINE_CODES or (code == 211 and verb == "LISTGROUP"):
            self._multiline_verb = verb
            self._capa_starttls = False
