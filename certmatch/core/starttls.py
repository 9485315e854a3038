"""The plaintext phase of STARTTLS, per protocol, as pure state machines over bytes.

Each machine is fed the bytes each side sends and answers with the bytes to
relay (:class:`Relay`). It recognises the upgrade exactly:

- SMTP, submission, LMTP: 220 greeting, EHLO/LHLO, the 250 reply's STARTTLS
  keyword, ``STARTTLS``, ``220``.
- IMAP: ``* OK`` greeting, CAPABILITY (in the greeting or a response),
  ``tag STARTTLS``, ``tag OK``.
- POP3: ``+OK``, ``CAPA`` with ``STLS``, ``STLS``, ``+OK``.
- LDAP: an ExtendedRequest for OID 1.3.6.1.4.1.1466.20037, answered by an
  ExtendedResponse with resultCode 0.
- NNTP: ``200``/``201``, ``CAPABILITIES`` with ``STARTTLS``, ``STARTTLS``, ``382``.

Once the client has asked for the upgrade, its further bytes are held back.
When the server accepts, the held client bytes and any server bytes after the
positive reply are an injection finding (the buffering flaw class of
CVE-2011-0411 and the 2021 "NO STARTTLS" study) and are never relayed. When
the server refuses, the held bytes are relayed as plaintext, as sent.

Only command names are ever recorded (``AUTH PLAIN``, ``LOGIN``), never a
credential, and never the bytes themselves. Lines may arrive split over many
reads or several in one read; the machines buffer to line (or BER message)
boundaries.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from certmatch.core.facts import StartTlsFacts

# Phases, in the order an upgrade goes through them. ``phase`` in the facts
# says how far the upgrade got when the plaintext phase ended.
GREETING = "greeting"  # waiting for the server's greeting
PLAINTEXT = "plaintext"  # greeting seen; the client has not asked to upgrade
REQUESTED = "requested"  # the client asked; waiting for the server's reply
REFUSED = "refused"  # the server said no; the session goes on in plaintext
ACCEPTED = "accepted"  # the server said yes; TLS handshakes come next
HANDSHAKE = "handshake"  # the proxy started the TLS handshakes (set by the layer)
FAILED = "failed"  # the server's bytes are not the protocol; the session is closed

PHASES: tuple[str, ...] = (GREETING, PLAINTEXT, REQUESTED, REFUSED, ACCEPTED, HANDSHAKE, FAILED)
UPGRADED_PHASES = frozenset({ACCEPTED, HANDSHAKE})

STARTTLS_PROTOCOLS: tuple[str, ...] = ("smtp", "submission", "imap", "pop3", "ldap", "nntp")

# Well-known plaintext ports that upgrade with STARTTLS (implicit-TLS ports are not here).
STARTTLS_PORTS: dict[int, str] = {
    25: "smtp",
    24: "smtp",  # LMTP
    587: "submission",
    143: "imap",
    110: "pop3",
    389: "ldap",
    119: "nntp",
}
SUBMISSION_PORTS = frozenset({587, 465})
LDAP_PORTS = frozenset({389, 3268})

LDAP_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"

MAX_LINE = 64 * 1024  # longer "lines" are relayed unparsed
MAX_BER_MESSAGE = 256 * 1024  # larger LDAP messages are relayed unparsed
MAX_REPLY_TEXT = 200
NEEDS_MORE = "needs-more"  # detect_protocol: not enough bytes yet to decide


@dataclass(frozen=True)
class Relay:
    """Bytes to relay after feeding one side's data."""

    to_server: bytes = b""
    to_client: bytes = b""


# -- framing -------------------------------------------------------------------


class _LineReader:
    """Splits one direction into lines, or raw runs of a length the protocol announced."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.raw_remaining = 0  # bytes to pass through unparsed (IMAP literals, BDAT chunks)

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def units(self) -> Iterator[tuple[bytes, bool]]:
        """Complete units as ``(bytes, is_line)``; the caller may set raw_remaining between them."""
        while True:
            if self.raw_remaining:
                if not self.buffer:
                    return
                chunk = bytes(self.buffer[: self.raw_remaining])
                del self.buffer[: len(chunk)]
                self.raw_remaining -= len(chunk)
                yield chunk, False
                continue
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    chunk = bytes(self.buffer)
                    self.buffer.clear()
                    yield chunk, False
                    continue
                return
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            yield line, True

    def take_rest(self) -> bytes:
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest


class _BerReader(_LineReader):
    """Splits one direction into complete BER elements (LDAPMessages); garbage is a raw unit."""

    def units(self) -> Iterator[tuple[bytes, bool]]:
        while True:
            if self.raw_remaining:
                if not self.buffer:
                    return
                chunk = bytes(self.buffer[: self.raw_remaining])
                del self.buffer[: len(chunk)]
                self.raw_remaining -= len(chunk)
                yield chunk, False
                continue
            if not self.buffer:
                return
            try:
                total = _ber_element_size(self.buffer)
            except ValueError:
                chunk = bytes(self.buffer)
                self.buffer.clear()
                yield chunk, False
                continue
            if total is None:
                return
            if total > MAX_BER_MESSAGE:
                # Too big to hold: relay it as it comes, without looking inside.
                self.raw_remaining = total
                continue
            if len(self.buffer) < total:
                return
            message = bytes(self.buffer[:total])
            del self.buffer[:total]
            yield message, True


def _ber_header(data: bytes | bytearray, pos: int = 0) -> tuple[int, int, int] | None:
    """``(tag, header_length, content_length)`` of the element at ``pos``; None if incomplete."""
    if len(data) < pos + 2:
        return None
    tag = data[pos]
    first = data[pos + 1]
    if first < 0x80:
        return tag, 2, first
    count = first & 0x7F
    if count == 0 or count > 4:
        raise ValueError("indefinite or oversized BER length")
    if len(data) < pos + 2 + count:
        return None
    return tag, 2 + count, int.from_bytes(data[pos + 2 : pos + 2 + count], "big")


def _ber_element_size(data: bytes | bytearray) -> int | None:
    """Total size of the LDAPMessage starting ``data``; None if its header is incomplete."""
    if data[0] != 0x30:
        raise ValueError("not a BER SEQUENCE")
    header = _ber_header(data)
    if header is None:
        return None
    _, header_length, length = header
    return header_length + length


def _ber_children(data: bytes, start: int, end: int) -> list[tuple[int, bytes]]:
    """The ``(tag, content)`` elements between ``start`` and ``end``."""
    children = []
    pos = start
    while pos < end:
        header = _ber_header(data, pos)
        if header is None:
            raise ValueError("truncated BER element")
        tag, header_length, length = header
        content_start = pos + header_length
        if content_start + length > end:
            raise ValueError("BER element overruns its parent")
        children.append((tag, data[content_start : content_start + length]))
        pos = content_start + length
    return children


# -- machines ------------------------------------------------------------------


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

    def _reader(self) -> _LineReader:
        return _LineReader()

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


def _words(line: bytes) -> list[bytes]:
    return line.strip().split()


def _verb(line: bytes) -> str:
    words = _words(line)
    return words[0].upper().decode("ascii", "replace") if words else ""


def _mechanism(word: bytes) -> str:
    """A SASL mechanism name, or "" when the word does not look like one (never a credential)."""
    return word.upper().decode("ascii") if re.fullmatch(rb"[A-Za-z0-9_-]{1,20}", word) else ""


def _describe(data: bytes) -> str:
    text = data[:60].decode("ascii", "backslashreplace")
    return repr(text) + (" ..." if len(data) > 60 else "")


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
        verb = _verb(unit)
        self._pending.append(verb)
        words = _words(unit)
        if verb == "STARTTLS":
            self._request()
        elif verb == "AUTH":
            mechanism = _mechanism(words[1]) if len(words) > 1 else ""
            self._plaintext_auth(f"AUTH {mechanism}".strip())
        elif verb == "BDAT" and len(words) > 1 and words[1].isdigit():
            self._client.raw_remaining = int(words[1])

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        match = _REPLY_LINE.match(unit.rstrip(b"\r\n")) if is_line else None
        if match is None:
            if self.phase in (GREETING, REQUESTED):
                self._fail(f"the server sent {_describe(unit)}, which is not an SMTP reply")
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
            keywords = [_words(line[4:])[:1] for line in lines[1:]]
            self._offered([b"STARTTLS"] in [[k.upper() for k in kw] for kw in keywords])
        elif verb == "STARTTLS":
            self._answer(code == 220, lines[0])
        elif verb == "DATA" and code == 354:
            self._client_mode = "data"
        elif verb == "AUTH":
            self._client_mode = "auth" if code == 334 else "command"


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
        words = _words(unit)
        if len(words) < 2:
            return
        tag, command = words[0], words[1].upper()
        if command == b"STARTTLS":
            self._starttls_tag = tag
            self._request()
        elif command == b"LOGIN":
            self._plaintext_auth("LOGIN")
        elif command == b"AUTHENTICATE":
            mechanism = _mechanism(words[2]) if len(words) > 2 else ""
            self._plaintext_auth(f"AUTHENTICATE {mechanism}".strip())
            self._auth_tag = tag

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
                self._fail(f"the server's greeting {_describe(unit)} is not an IMAP greeting")
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
            if status not in (b"OK", b"NO", b"BAD"):
                self._fail(f"the server answered STARTTLS with {_describe(unit)}")
                return
            self._starttls_tag = None
            self._answer(status == b"OK", line)

    def _literal(self, line: bytes, reader: _LineReader, *, client: bool) -> None:
        match = re.search(rb"\{(\d{1,9})\+?\}\r?\n$", line)
        if match:
            reader.raw_remaining = int(match.group(1))
            if client:
                self._client_continues = True
            else:
                self._server_continues = True


class Pop3Machine(StartTlsMachine):
    """POP3 (RFC 2595 §4, RFC 2449): CAPA with STLS, ``STLS``, ``+OK``."""

    protocol = "pop3"
    upgrade_command = "STLS"
    _MULTILINE = frozenset({"CAPA", "RETR", "TOP"})  # plus LIST and UIDL without an argument

    def __init__(self, protocol: str | None = None) -> None:
        super().__init__(protocol)
        self._pending: deque[tuple[str, bool]] = deque()  # (verb, has arguments)
        self._multiline_verb: str | None = None  # reading a multi-line response to this
        self._capa_stls = False
        self._in_auth = False  # SASL exchange: client lines are responses, not commands

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        if not is_line or self._in_auth:
            return
        words = _words(unit)
        verb = _verb(unit)
        self._pending.append((verb, len(words) > 1))
        if verb == "STLS":
            self._request()
        elif verb in ("USER", "PASS", "APOP"):
            self._plaintext_auth(verb)
        elif verb == "AUTH" and len(words) > 1:
            self._plaintext_auth(f"AUTH {_mechanism(words[1])}".strip())
            self._in_auth = True

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        if not is_line:
            return
        line = unit.rstrip(b"\r\n")
        if self._multiline_verb is not None:
            if line == b".":
                if self._multiline_verb == "CAPA":
                    self._offered(self._capa_stls)
                self._multiline_verb = None
            elif self._multiline_verb == "CAPA" and _words(line)[:1] == [b"STLS"]:
                self._capa_stls = True
            return
        positive = line.startswith(b"+OK")
        if not positive and not line.startswith(b"-ERR"):
            if line == b"+" or line.startswith(b"+ "):
                return  # a SASL challenge; the AUTH command is still pending
            if self.phase in (GREETING, REQUESTED):
                self._fail(f"the server sent {_describe(unit)}, which is not a POP3 reply")
            return
        if self._awaiting_greeting:
            self._greeted()
            return
        verb, has_args = self._pending.popleft() if self._pending else ("", False)
        if verb == "STLS":
            self._answer(positive, line)
        elif verb == "AUTH":
            self._in_auth = False
        multiline = verb in self._MULTILINE or (verb in ("LIST", "UIDL", "AUTH") and not has_args)
        if positive and multiline:
            self._multiline_verb = verb
            self._capa_stls = False


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
        words = _words(unit)
        verb = _verb(unit)
        self._pending.append(verb)
        if verb == "STARTTLS":
            self._request()
        elif verb == "AUTHINFO" and len(words) > 1:
            sub = _mechanism(words[1])
            name = f"AUTHINFO {sub}"
            if sub == "SASL" and len(words) > 2:
                name += f" {_mechanism(words[2])}"
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
            elif self._multiline_verb == "CAPABILITIES" and _words(line)[:1] == [b"STARTTLS"]:
                self._capa_starttls = True
            return
        match = re.match(rb"^(\d{3})\b", line)
        if match is None:
            if self.phase in (GREETING, REQUESTED):
                self._fail(f"the server sent {_describe(unit)}, which is not an NNTP reply")
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


class LdapMachine(StartTlsMachine):
    """LDAP (RFC 4511 §4.14, RFC 4513 §3): ExtendedRequest StartTLS, ExtendedResponse success."""

    protocol = "ldap"
    server_speaks_first = False
    upgrade_command = "StartTLS"

    _EXTENDED_REQUEST = 0x77  # [APPLICATION 23]
    _EXTENDED_RESPONSE = 0x78  # [APPLICATION 24]
    _BIND_REQUEST = 0x60  # [APPLICATION 0]
    _SEARCH_RESULT_ENTRY = 0x64  # [APPLICATION 4]
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

    def _reader(self) -> _LineReader:
        return _BerReader()

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        parsed = _ldap_message(unit) if is_line else None
        if parsed is None:
            return
        message_id, op_tag, op = parsed
        if op_tag == self._EXTENDED_REQUEST:
            fields = dict(_safe_children(op))
            if fields.get(0x80) == LDAP_STARTTLS_OID:
                self._starttls_id = message_id
                self._request()
        elif op_tag == self._BIND_REQUEST:
            self._note_bind(op)

    def _note_bind(self, op: bytes) -> None:
        children = _safe_children(op)
        if len(children) < 3:
            return
        tag, credentials = children[2]
        if tag == 0x80 and credentials:  # simple bind with a password (not anonymous)
            self._plaintext_auth("BIND simple")
        elif tag == 0xA3:  # SASL
            sasl = _safe_children(credentials)
            mechanism = _mechanism(sasl[0][1]) if sasl else ""
            self._plaintext_auth(f"BIND SASL {mechanism}".strip())

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        parsed = _ldap_message(unit) if is_line else None
        if parsed is None:
            if self.phase == REQUESTED:
                self._fail(f"the server sent {_describe(unit)}, which is not an LDAP message")
            return
        message_id, op_tag, op = parsed
        if op_tag == self._SEARCH_RESULT_ENTRY:
            self._note_root_dse(op)
        if self.phase != REQUESTED or message_id != self._starttls_id:
            return
        if op_tag != self._EXTENDED_RESPONSE:
            self._fail(f"the server answered StartTLS with LDAP operation tag 0x{op_tag:02x}")
            return
        children = _safe_children(op)
        if not children or children[0][0] != 0x0A:
            self._fail("the server's StartTLS response has no resultCode")
            return
        code = int.from_bytes(children[0][1], "big")
        message = children[2][1].decode("utf-8", "replace") if len(children) > 2 else ""
        reply = f"resultCode {code} ({self._RESULT_NAMES.get(code, 'error')})"
        self._answer(code == 0, f"{reply}: {message}" if message else reply)

    def _note_root_dse(self, op: bytes) -> None:
        children = _safe_children(op)
        if not children or children[0] != (0x04, b""):
            return
        if b"supportedextension" in op.lower():
            self._offered(LDAP_STARTTLS_OID in op)


def _ldap_message(message: bytes) -> tuple[int, int, bytes] | None:
    """``(messageID, protocolOp tag, protocolOp content)`` of one LDAPMessage, or None."""
    try:
        header = _ber_header(message)
        if header is None:
            return None
        _, header_length, length = header
        children = _ber_children(message, header_length, header_length + length)
    except ValueError:
        return None
    if len(children) < 2 or children[0][0] != 0x02:
        return None
    return int.from_bytes(children[0][1], "big"), children[1][0], children[1][1]


def _safe_children(content: bytes) -> list[tuple[int, bytes]]:
    try:
        return _ber_children(content, 0, len(content))
    except ValueError:
        return []


_MACHINES: dict[str, type[StartTlsMachine]] = {
    "smtp": SmtpMachine,
    "submission": SmtpMachine,
    "imap": ImapMachine,
    "pop3": Pop3Machine,
    "ldap": LdapMachine,
    "nntp": NntpMachine,
}


def make_machine(protocol: str) -> StartTlsMachine:
    """A fresh machine for ``protocol`` (one of STARTTLS_PROTOCOLS)."""
    try:
        return _MACHINES[protocol](protocol)
    except KeyError:
        raise ValueError(
            f"no STARTTLS machine for {protocol!r}; known: {', '.join(STARTTLS_PROTOCOLS)}"
        ) from None


# -- choosing a protocol ------------------------------------------------------


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
    if client_data[:1] == b"\x16":
        return None
    if forced not in ("auto", ""):
        if forced == "smtp" and port in SUBMISSION_PORTS:
            return "submission"
        return forced
    if client_data:
        if server_data or client_data[0] != 0x30:
            return None
        try:
            size = _ber_element_size(client_data)
        except ValueError:
            return None
        if size is not None and size > MAX_BER_MESSAGE:
            return None
        if size is None or len(client_data) < size:
            # Waiting for the rest is safe only where LDAP is expected: elsewhere a
            # client whose first byte happens to be "0" would wait for an answer
            # that never comes.
            return NEEDS_MORE if port in LDAP_PORTS else None
        return "ldap" if _ldap_message(client_data[:size]) is not None else None
    if not server_data:
        return NEEDS_MORE
    end = server_data.find(b"\n")
    if end < 0:
        return NEEDS_MORE if len(server_data) < 512 else None
    line = server_data[:end].upper()
    if re.match(rb"\* (OK|PREAUTH)\b", line):
        return "imap"
    if line.startswith(b"+OK"):
        return "pop3"
    if re.match(rb"20[01][ -]", line):
        return "nntp"
    if re.match(rb"220[ -]", line) and b"FTP" not in line:
        return "submission" if port in SUBMISSION_PORTS else "smtp"
    return None
