"""The words a client sent in the plaintext phase, to keep them out of recorded server text.

Servers quote what they reject (``500 unrecognised command "AUTH AHRlc3Q..."``,
``BAD Error in IMAP command``), so server text can carry a client's credential
back. A machine records server text only where it repeats none of these
words, base64-decoded words included; otherwise only the reply code.
"""

from __future__ import annotations

import base64
import binascii
import re

MIN_WORD = 4  # shorter client words are never taken for a possible secret
KEY_LENGTH = 8  # a word is looked for by its first bytes, so a quote cut short is still found
MAX_WORDS = 512  # past this many, all server text is taken to quote the client
MAX_TOKEN = 4096  # a longer run of word bytes is cut; only shorter ones are base64-decoded

# Between words of a line (IMAP quotes and parentheses included), and inside a decoded SASL
# message, also between its fields (RFC 4616 NULs, RFC 5802 "n=user,r=...", XOAUTH2 ^A).
_SEPARATORS = re.compile(rb'[\x00-\x20\x7f"(){}\[\]\\]+')
_DECODED_SEPARATORS = re.compile(rb'[\x00-\x20\x7f"(){}\[\]\\=,]+')
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


class ClientWords:
    """Every word of MIN_WORD bytes or more the client sent, except the protocol's vocabulary."""

    def __init__(self, vocabulary: frozenset[bytes] = frozenset()) -> None:
        self._vocabulary = vocabulary  # lower-case words that are never secret (command names)
        self._keys: set[bytes] = set()
        self._partial = b""  # a word that may go on in the next read
        self.overflowed = False

    def feed(self, data: bytes) -> None:
        """The client's bytes, in order; a word split across reads is joined."""
        if self.overflowed:
            return  # nothing more to learn: all server text is withheld now
        if len(self._partial) >= MAX_TOKEN:  # inside an over-long word: skip to its end
            end = _SEPARATORS.search(data)
            if end is None:
                return
            data = data[end.start() :]
        tokens = _SEPARATORS.split(self._partial + data)
        self._partial = tokens.pop()[:MAX_TOKEN]
        for token in tokens:
            self.add(token)

    def add(self, word: bytes) -> None:
        """One word the client sent (a field a machine decoded, or a token of a line)."""
        word = word[:MAX_TOKEN]
        self._add(word)
        if len(word) < 2 * MIN_WORD or len(word) % 4 == 1 or not _BASE64.fullmatch(word):
            return
        try:  # padded or not: clients differ
            decoded = base64.b64decode(word + b"=" * (-len(word) % 4), validate=True)
        except binascii.Error:
            return
        for part in _DECODED_SEPARATORS.split(decoded):
            self._add(part)

    def quoted_in(self, text: bytes) -> bool:
        """True when ``text`` (server bytes) repeats a client word, compared without case."""
        if self.overflowed:
            return True
        lower = text.lower()
        pending = self._partial[:KEY_LENGTH].lower()
        if len(pending) >= MIN_WORD and pending in lower:
            return True
        return any(key in lower for key in self._keys)

    def _add(self, word: bytes) -> None:
        if len(word) < MIN_WORD or word.lower() in self._vocabulary:
            return
        key = word[:KEY_LENGTH].lower()
        if key in self._keys:
            return
        if len(self._keys) >= MAX_WORDS:
            self.overflowed = True
            return
        self._keys.add(key)
