"""The plaintext phase of STARTTLS: what every protocol's machine has in common.

A machine is fed the bytes each side sends and answers with the bytes to
relay (:class:`Relay`). Once the client has asked for the upgrade, its
further bytes are held back. When the server accepts, the held client bytes
and any server bytes after the positive reply are an injection finding (the
buffering flaw class of CVE-2011-0411 and the 2021 "NO STARTTLS" study) and
are never relayed. When the server refuses, the held bytes are relayed as
plaintext, as sent.

Nothing the client wrote is ever recorded: only a command name from
:data:`AUTH_COMMANDS`, a registered SASL mechanism name
(:mod:`certmatch.core.sasl`) or ``<unrecognised>``, and byte counts. The
server's reply to the upgrade is its own text, but a server may quote the
client, so it is recorded only where it repeats no word the client sent
(:mod:`~certmatch.core.starttls.client_words`); otherwise only its code is.
"""

from __future__ import annotations

from dataclasses import dataclass

from certmatch.core import sasl
from certmatch.core.facts import StartTlsFacts
from certmatch.core.ldap_ber import STARTTLS_OID
from certmatch.core.starttls.client_words import ClientWords
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

# The commands ``plaintext_auth`` may name, each alone or followed by a SASL mechanism name
# (or sasl.UNRECOGNISED): the whole vocabulary of that field.
AUTH_COMMANDS = frozenset(
    {
        "AUTH",  # SMTP (RFC 4954), POP3 (RFC 5034)
        "AUTHENTICATE",  # IMAP (RFC 9051 §6.2.2)
        "LOGIN",  # IMAP (RFC 9051 §6.2.3)
        "USER",  # POP3 (RFC 1939 §7)
        "PASS",
        "APOP",
        "AUTHINFO",  # NNTP, with a subcommand that is none of the following
        "AUTHINFO USER",  # RFC 4643 §2.3
        "AUTHINFO PASS",
        "AUTHINFO SASL",  # RFC 4643 §2.4
        "AUTHINFO GENERIC",  # RFC 2980 §3.1.3
        "AUTHINFO SIMPLE",  # RFC 2980 §3.1.2
        "BIND simple",  # LDAP (RFC 4513 §5.1.3), with a password
        "BIND SASL",  # LDAP (RFC 4513 §5.2)
    }
)

# Words of the protocols themselves: a server that repeats one is not quoting a secret.
_PROTOCOL_WORDS = frozenset(
    {
        *(word.lower().encode() for word in " ".join(AUTH_COMMANDS).split()),
        *(name.lower().encode() for name in sasl.MECHANISMS),
        *b"ehlo helo lhlo starttls stls capa capability capabilities noop quit logout".split(),
        STARTTLS_OID,
    }
)


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
        self._client_words = ClientWords(_PROTOCOL_WORDS)
        self._request_had_arguments = False
        self._multiline_verb: str | None = None  # reading a multi-line response to this
        self._upgrade_listed = False  # the open capability list names the upgrade
        self.client_said_goodbye = False  # the client asked to end the session (QUIT, LOGOUT)

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
        self._client_words.feed(data)
        return self._from_client(data)

    def _from_client(self, data: bytes) -> Relay:
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
            if is_line and self._is_goodbye(unit):
                self.client_said_goodbye = True
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
                to_server += self._from_client(held).to_server  # its words already noted
        return Relay(to_server=bytes(to_server), to_client=bytes(to_client))

    def late_server_bytes(self, count: int) -> None:
        """The server sent ``count`` bytes after accepting, before the TLS handshake began."""
        self._note_injection("server", count)

    def broke_off(self, why: str) -> None:
        """The plaintext phase ended abnormally (timeout, close); keep the phase, note why."""
        self.error = why

    def client_left(self) -> None:
        """The client closed the connection. Bytes it sent after its upgrade request, before
        any reply, are still the client's side of an injection: no reply makes them harmless."""
        if self.phase == REQUESTED and self._held:
            self._note_injection("client", len(self._held))
            self._held.clear()

    # -- for subclasses -----------------------------------------------------

    def _reader(self) -> LineReader:
        return LineReader()

    def _on_client(self, unit: bytes, is_line: bool) -> None:
        raise NotImplementedError

    def _on_server(self, unit: bytes, is_line: bool) -> None:
        raise NotImplementedError

    def _is_goodbye(self, unit: bytes) -> bool:
        """A client command that ends the session (SMTP, POP3 and NNTP: ``QUIT``)."""
        return line_verb(unit) == "QUIT"

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

    def _start_multiline(self, verb: str) -> None:
        """A dot-terminated multi-line response to ``verb`` follows (POP3, NNTP)."""
        self._multiline_verb = verb
        self._upgrade_listed = False

    def _multiline_line(self, line: bytes, list_verb: str, keyword: bytes) -> bool:
        """Take one line of an open multi-line response; False when none is open.

        In the capability list (the response to ``list_verb``), note whether ``keyword``
        is listed, and record the offer when the list ends with its ``.`` line.
        """
        if self._multiline_verb is None:
            return False
        if line == b".":
            if self._multiline_verb == list_verb:
                self._offered(self._upgrade_listed)
            self._multiline_verb = None
        elif self._multiline_verb == list_verb and line_words(line)[:1] == [keyword]:
            self._upgrade_listed = True
        return True

    def _request(self, *, with_arguments: bool = False) -> None:
        # The upgrade takes no arguments; a reply to one that had some may well quote them.
        self.facts.client_requested = True
        self.facts.phase = REQUESTED
        self._request_had_arguments = with_arguments

    def _answer(self, positive: bool, reply: bytes, code: str) -> None:
        """The server answered the upgrade request: ``reply`` is its text, ``code`` its status."""
        if self._request_had_arguments or self._client_words.quoted_in(reply):
            self.facts.server_reply = code
        else:
            self.facts.server_reply = reply.decode("utf-8", "replace").strip()[:MAX_REPLY_TEXT]
        if positive:
            self.facts.phase = ACCEPTED
        else:
            self.facts.phase = REFUSED
            self._release_held = True

    def _fail(self, why: str) -> None:
        self.error = why
        self.facts.phase = FAILED

    def _quote(self, data: bytes) -> str:
        """Server bytes for an error message: quoted, unless they repeat the client's words."""
        if self._client_words.quoted_in(data):
            return f"{len(data)} byte(s) (not shown: they repeat what the client sent)"
        return describe(data)

    def _plaintext_auth(self, command: str, mechanism: bytes | None = None) -> None:
        """The client authenticated in plaintext with ``command`` (and a SASL ``mechanism``)."""
        name = command if mechanism is None else f"{command} {sasl.mechanism_name(mechanism)}"
        if not is_auth_name(name):
            raise ValueError(f"{name!r} is not a command of AUTH_COMMANDS")
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


def is_auth_name(name: str) -> bool:
    """True for a name ``plaintext_auth`` may list: a command, then maybe a mechanism name."""
    command, _, mechanism = name.rpartition(" ")
    if name in AUTH_COMMANDS:
        return True
    return command in AUTH_COMMANDS and (
        mechanism in sasl.MECHANISMS or mechanism == sasl.UNRECOGNISED
    )


def line_words(line: bytes) -> list[bytes]:
    """The words of a command or reply line."""
    return line.strip().split()


def line_verb(line: bytes) -> str:
    """The first word of a line, upper-cased: a command's name."""
    words = line_words(line)
    return words[0].upper().decode("ascii", "replace") if words else ""


def describe(data: bytes) -> str:
    """The start of some unexpected bytes, quoted for an error message."""
    text = data[:60].decode("ascii", "backslashreplace")
    return repr(text) + (" ..." if len(data) > 60 else "")
