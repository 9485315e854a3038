"""The STARTTLS machine for POP3 (RFC 2595 §4, RFC 2449)."""

from __future__ import annotations

from collections import deque

from certmatch.core.starttls.machine import (
    GREETING,
    REQUESTED,
    StartTlsMachine,
    line_verb,
    line_words,
)


class Pop3Machine(StartTlsMachine):
    """POP3 (RFC 2595 §4, RFC 2449): CAPA with STLS, ``STLS``, ``+OK``."""

    protocol = "pop3"
    upgrade_command = "STLS"
    _MULTILINE = frozenset({"CAPA", "RETR", "TOP"})  # plus LIST and UIDL without an argument

    def __init__(self, protocol: str | None = None) -> None:
        super().__init__(protocol)
        self._pending: deque[tuple[str, bool]] = deque()  # (verb, has arguments)
        self._in_auth = False  # SASL exchange: client lines are responses, not commands

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        if not is_line or self._in_auth:
            return
        words = line_words(unit)
        verb = line_verb(unit)
        self._pending.append((verb, len(words) > 1))
        if verb == "STLS":
            self._request(with_arguments=len(words) > 1)
        elif verb in ("USER", "PASS", "APOP"):
            self._plaintext_auth(verb)
        elif verb == "AUTH" and len(words) > 1:  # without: a list of mechanisms (RFC 5034 §4)
            self._plaintext_auth("AUTH", words[1])
            self._in_auth = True

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        if not is_line:
            return
        line = unit.rstrip(b"\r\n")
        if self._multiline_line(line, "CAPA", b"STLS"):
            return
        positive = line.startswith(b"+OK")
        if not positive and not line.startswith(b"-ERR"):
            if line == b"+" or line.startswith(b"+ "):
                return  # a SASL challenge; the AUTH command is still pending
            if self.phase in (GREETING, REQUESTED):
                self._fail(f"the server sent {self._quote(unit)}, which is not a POP3 reply")
            return
        if self._awaiting_greeting:
            self._greeted()
            return
        verb, has_args = self._pending.popleft() if self._pending else ("", False)
        if verb == "STLS":
            self._answer(positive, line, "+OK" if positive else "-ERR")
        elif verb == "AUTH":
            self._in_auth = False
        multiline = verb in self._MULTILINE or (verb in ("LIST", "UIDL", "AUTH") and not has_args)
        if positive and multiline:
            self._start_multiline(verb)
