"""Show untrusted text (names from certificates and recordings) safely on a terminal."""

from __future__ import annotations

import unicodedata


def printable(text: str) -> str:
    """``text`` with control and format characters written as escapes (``\\x00``).

    A certificate name can carry a NUL or terminal escape sequences; printed
    raw it would hide part of the name or drive the terminal.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or (char == " "):
            out.append(char)
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)
