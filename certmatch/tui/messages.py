"""Every message the TUI posts, as dataclasses (as Textualize's toolong does).

The reader thread posts the loader's messages to the sessions screen; the
session list posts ``SessionHighlighted`` when its cursor moves; the thread that
counts a find's matches posts ``FindCounted``.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from certmatch.tui.loader import Batch


@dataclass
class BatchLoaded(Message, bubble=False):
    """The reader read more sessions (and maybe skipped lines, or could not read a file)."""

    batch: Batch


@dataclass
class LoadPassFinished(Message, bubble=False):
    """The reader reached the end of every file (once per pass while following)."""


@dataclass
class LoaderFailed(Message, bubble=False):
    """The reader stopped on an unexpected error; ``error`` says which, for the user."""

    error: str


@dataclass
class SessionHighlighted(Message):
    """The list's cursor moved to another session or group (or the list emptied: -1)."""

    index: int


@dataclass
class FindCounted(Message, bubble=False):
    """The find's matches among the list's first ``upto`` lines, counted in a thread."""

    generation: int  # which find (a newer find or list makes this one stale)
    upto: int
    positions: list[int]
