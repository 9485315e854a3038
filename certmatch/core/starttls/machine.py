"""The plaintext phase of STARTTLS: what every protocol's machine has in common.

A machine is fed the bytes each side sends and answers with the bytes to
relay (:class:`Relay`). Once the client has asked for the upgrade, its
further bytes are held back. When the server accepts, the held client bytes
and any server bytes after the positive reply are an injection finding (the
buffering flaw class of CVE-2011-0411 and the 2021 "NO STARTTLS" study) and
are never relayed. When the server refuses, the held bytes are relayed as
plaintext, as sent.

Only command names are ever recorded (``AUTH PLAIN``, ``LOGIN``), never a
credential, and never the bytes themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from certmatch.core.facts import StartTlsFacts
from certmatch.core.starttls.framing import LineReader

# Phases, in the order an upgrade goes through them. ``phase`` in the facts
# says how far the upgrade got when the plaintext phase ended.
GREETING = "greeting"  # waiting for the server's greeting
PLAINTEXT = "plaintext"  # greeting seen; the client has not asked to upgrade
REQUESTED = "requested"  # the client asked; waiting for the server's reply
REFUSED = "refused"  # the server said no; the session goes on in plaintext
ACCEPTED = "accepted"  # the server said yes; TLS handshakes come next
HANDSHAKE = "handshake"  # the proxy started the TLS handshakes (set by the layer)
FAILED = "failed"  # the server's bytes are not the protocol; the session is closed

UPGRADED_PHASES = frozenset({ACCEPTED, HANDSHAKE})

MAX_REPLY_TEXT = 200  # the server's reply to the upgrade is kept up to this length


@dataclass(frozen=True)
class Relay:
    """Bytes to relay after feeding one side's data."""

    to_server: bytes = b""
    to_client: bytes = b""


class StartTlsMachine:
    """One connection's plaintext phase: relays bytes and fills ``facts``.

    Feed each side with :meth:`client_data` and :meth:`server_data`; relay
    what they return. After the server accepted (``accepted`` is true) the
    caller starts TLS and reports any further server bytes that arrive before
    its handshake with :meth:`late_server_bytes`.
    """

    protocol = "unknown"
    server_speaks_first = True
    upgrade_command = "STARTTLS"  # how the protocol's upgrade is called, for messages

    def __init__(self, protocol: str | None = None) -> None:
        if protocol is not None:
            self.protocol = protocol
        self.facts = StartTlsFacts(phase=GREETING if self.server_speaks_first else PLAINTEXT)
        self.error: str | None = None  # why the machine gave up (phase FAILED)
        self._client = self._reader()
        self._server = self._reader()
        self._held = bytearray()  # client bytes after its upgrade request
        self._release_held = False
        self._injected = {"client": 0, "server": 0}
        self._auth_names: list[str] = []
        self._greeting_seen = False

    # -- public -------------------------------------------------------------

    @property
    def phase(self) -> str:
        return self.facts.phase or PLAINTEXT

    @property
    def accepted(self) -> bool:
        return self.phase in UPGRADED_PHASES

    @property
    def failed(self) -> bool:
        return self.phase == FAILED

    @property
    def waiting_for_server(self) -> bool:
        """True while the server owes an answer the upgrade depends on (greeting or reply)."""
        return self.phase in (GREETING, REQUESTED)

    def client_data(self, data: bytes) -> Relay:
        """Feed bytes from the client; return what to relay."""
        if self.phase == REQUESTED:
            self._held += data
            return Relay()
        if self.phase in (ACCEPTED, HANDSHAKE, FAILED):
            return Relay()
        self._client.feed(data)
        out = bytearray()
        for unit, is_line in self._client.units():
            out += unit
            self._on_client(unit, is_line)
            if self.phase == REQUESTED:
                self._held += self._client.take_rest()
                break
        return Relay(to_server=bytes(out))

    def server_data(self, data: bytes) -> Relay:
        """Feed bytes from the server; return what to relay."""
        if self.accepted:
            self.late_server_bytes(len(data))
            return Relay()
        if self.failed:
            return Relay()
        self._server.feed(data)
        to_client = bytearray()
        to_server = bytearray()
        for unit, is_line in self._server.units():
            self._on_server(unit, is_line)
            if self.failed:
                break
            to_client += unit
            if self.accepted:
                self._note_injection("server", len(self._server.take_rest()))
                self._note_injection("client", len(self._held))
                self._held.clear()
                break
            if self._release_held:
                self._release_held = False
                held, self._held = bytes(self._held), bytearray()
                to_server += self.client_data(held).to_server
        return Relay(to_server=bytes(to_server), to_client=bytes(to_client))

    def late_server_bytes(self, count: int) -> None:
        """The server sent ``count`` bytes after accepting, before the TLS handshake began."""
        self._note_injection("server", count)

    def broke_off(self, why: str) -> None:
        """The plaintext phase ended abnormally (timeout, close); keep the phase, note why."""
        self.error = why

    # -- for subclasses -----------------------------------------------------

    def _reader(self) -> LineReader:
        return LineReader()

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        raise NotImplementedError

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        raise NotImplementedError

    @property
    def _awaiting_greeting(self) -> bool:
        return self.server_speaks_first and not self._greeting_seen

    def _greeted(self) -> None:
        self._greeting_seen = True
        if self.phase == GREETING:
            self.facts.phase = PLAINTEXT

    def _offered(self, offered: bool) -> None:
        # Once advertised, it stays advertised (capabilities shrink after login).
        self.facts.server_offered = bool(self.facts.server_offered) or offered

    def _request(self) -> None:
        self.facts.client_requested = True
        self.facts.phase = REQUESTED

    def _answer(self, positive: bool, reply: bytes | str) -> None:
        if isinstance(reply, bytes):
            reply = reply.decode("utf-8", "replace")
        self.facts.server_reply = reply.strip()[:MAX_REPLY_TEXT]
        if positive:
            self.facts.phase = ACCEPTED
        else:
            self.facts.phase = REFUSED
            self._release_held = True

    def _fail(self, why: str) -> None:
        self.error = why
        self.facts.phase = FAILED

    def _plaintext_auth(self, name: str) -> None:
        if name not in self._auth_names:
            self._auth_names.append(name)
            self.facts.plaintext_auth = ", ".join(self._auth_names)

    def _note_injection(self, side: str, count: int) -> None:
        if count <= 0:
            return
        self._injected[side] += count
        parts = []
        if self._injected["client"]:
            parts.append(
                f"the client sent {self._injected['client']} byte(s) after its "
                f"{self.upgrade_command} request, before the server's reply"
            )
        if self._injected["server"]:
            parts.append(
                f"the server sent {self._injected['server']} byte(s) after its positive "
                f"{self.upgrade_command} reply, before the TLS handshake"
            )
        self.facts.injection = "; ".join(parts)


def line_words(line: bytes) -> list[bytes]:
    """The words of a command or reply line."""
    return line.strip().split()


def line_verb(line: bytes) -> str:
    """The first word of a line, upper-cased: a command's name."""
    words = line_words(line)
    return words[0].upper().decode("ascii", "replace") if words else ""


def sasl_mechanism(word: bytes) -> str:
    """A SASL mechanism name, or "" when the word does not look like one (never a credential)."""
    return word.upper().decode("ascii") if re.fullmatch(rb"[A-Za-z0-9_-]{1,20}", word) else ""


def describe(data: bytes) -> str:
    """The start of some unexpected bytes, quoted for an error message."""
    text = data[:60].decode("ascii", "backslashreplace")
    return repr(text) + (" ..." if len(data) > 60 else "")
