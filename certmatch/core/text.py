"""Show untrusted text (names from certificates, the network and recordings) safely.

Every renderer (the proxy's log, ``certmatch check``, the TUI, the pytest plugin) shows a
string that came from the network or a file through :func:`printable`, the one escaping
function. Facts, recordings and ``--json`` keep the exact data; only what is shown is escaped.
"""

from __future__ import annotations

import unicodedata

# Unicode bidi controls (UAX #9 §2): they reorder what follows them on the screen, so
# "moc.elpmaxe" can read as "example.com". Most are Cf; listed so the rule does not depend on
# the Unicode version.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

# Control (C0, DEL, C1), format (invisible: bidi, zero-width, soft hyphen, BOM), surrogate,
# private-use, unassigned, and the line and paragraph separators that break a line.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def is_dangerous(char: str) -> bool:
    """Whether ``char`` must not reach a terminal raw: it drives the terminal, hides or
    reorders text, breaks a line, or cannot be encoded (a lone surrogate)."""
    return char in BIDI_CONTROLS or unicodedata.category(char) in _ESCAPED_CATEGORIES


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, escape_backslash: bool = True) -> str:
    """``text`` with every dangerous character written as an escape: ``\\x1b``, ``\\x9b``,
    ``\\u202e``, ``\\udc80``, and a backslash as ``\\\\`` so the result is unambiguous (two
    different strings never show the same). Ordinary non-ASCII text (``bücher.example``) stays
    as it is.

    ``escape_backslash=False`` is for text that already quotes untrusted names through this
    function (the diagnosis's sentences): it then only escapes what is still dangerous, and
    applying it again changes nothing, so no name is escaped twice.
    """
    if text.isprintable() and (not escape_backslash or "\\" not in text):
        return text
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\" if escape_backslash else char)
        elif is_dangerous(char):
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def counted(number: int, noun: str) -> str:
    """``1 session``, ``2 sessions``, ``1,024 bad lines``: the count and the noun, agreeing."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"
