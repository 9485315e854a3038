"""Framing for the STARTTLS machines: one direction's bytes as lines or LDAP messages.

A read may carry part of a line or several lines; the readers buffer to
unit boundaries. A unit is ``(bytes, is_line)``: a complete line (or
LDAPMessage), or a raw run the machine does not look into (an IMAP
literal, a BDAT chunk, an over-long line, bytes that are not BER).
"""

from __future__ import annotations

from collections.abc import Iterator

from certmatch.core import ldap_ber

MAX_LINE = 64 * 1024  # longer "lines" are relayed unparsed
MAX_BER_MESSAGE = 256 * 1024  # larger LDAP messages are relayed unparsed


class LineReader:
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
                yield self._raw(), False
                continue
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    yield self.take_rest(), False
                    continue
                return
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            yield line, True

    def take_rest(self) -> bytes:
        """Everything buffered and not yet returned as a unit."""
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest

    def _raw(self) -> bytes:
        chunk = bytes(self.buffer[: self.raw_remaining])
        del self.buffer[: len(chunk)]
        self.raw_remaining -= len(chunk)
        return chunk


class BerReader(LineReader):
    """Splits one direction into complete LDAPMessages; bytes that are not BER are a raw unit."""

    def units(self) -> Iterator[tuple[bytes, bool]]:
        while True:
            if self.raw_remaining:
                if not self.buffer:
                    return
                yield self._raw(), False
                continue
            if not self.buffer:
                return
            try:
                total = ldap_ber.message_size(self.buffer)
            except ldap_ber.BerError:
                yield self.take_rest(), False
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
