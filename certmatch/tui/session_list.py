"""The session list: a virtual list that renders only the lines on screen.

A ``ScrollView`` with ``render_line`` (as Textualize's toolong does): its
cost does not grow with the number of sessions, unlike ``DataTable``. Line 0
is the column header and stays put; the list scrolls below it. Every cell that comes from a
recording is escaped (``printable``) before it becomes a ``Segment``, which reaches the
terminal as it is.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from certmatch.core.report import shown_prose, verdict_label
from certmatch.core.text import printable
from certmatch.tui.messages import SessionHighlighted
from certmatch.tui.model import Group, Row

# (title, width) for each column of each view.
SESSION_COLUMNS: tuple[tuple[str, int], ...] = (
    ("verdict", 14),
    ("time (UTC)", 19),
    ("protocol", 10),
    ("requested host (source)", 34),
    ("primary cause", 26),
    ("SNI", 24),
    ("names on the certificate", 42),
    ("client", 21),
)
GROUP_COLUMNS: tuple[tuple[str, int], ...] = (
    ("count", 8),
    ("verdict", 14),
    ("requested host", 30),
    ("primary cause", 26),
    ("names on the certificate", 42),
    ("protocols", 18),
    ("last seen (UTC)", 19),
)
NAMES_WIDTH = 40
VERDICT_COLOURS = {
    "match": Style(color="green"),
    "legacy-match": Style(color="yellow"),
    "mismatch": Style(color="red", bold=True),
    "untrusted": Style(color="magenta", bold=True),
    "error": Style(color="red"),
}


@lru_cache(maxsize=4096)  # a few distinct certificates, each on many rows
def shorten_names(names: tuple[str, ...], width: int = NAMES_WIDTH) -> str:
    """ "a, b +3": as many names as fit in ``width``, then how many were left out.

    The names are a judgement's ``presented_names``, which the diagnosis already escaped;
    what is still dangerous is escaped here."""
    if not names:
        return "(no certificate)"
    shown: list[str] = []
    used = 0
    for index, name in enumerate(map(shown_prose, names)):
        rest = len(names) - index - 1
        suffix = len(f" +{rest}") if rest else 0
        cost = len(name) + (2 if shown else 0)
        if shown and used + cost + suffix > width:
            return ", ".join(shown) + f" +{len(names) - index}"
        shown.append(name)
        used += cost
    return ", ".join(shown)


def fit(text: str, width: int) -> str:
    """``text`` cut or padded to exactly ``width`` cells, with … where it was cut."""
    if len(text) > width:
        return text[: width - 1] + "…"
    return text.ljust(width)


def _total_width(columns: Sequence[tuple[str, int]]) -> int:
    return sum(width for _, width in columns) + len(columns) - 1


class SessionList(ScrollView, can_focus=True, inherit_bindings=False):
    """Sessions (or groups of them) one per line, with a cursor."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "session-list--header",
        "session-list--cursor",
        "session-list--empty",
    }
    DEFAULT_CSS = """
    SessionList {
        height: 1fr;
        background: $surface;
    }
    SessionList > .session-list--header {
        text-style: bold;
        background: $panel;
        color: $text;
    }
    SessionList > .session-list--cursor {
        background: $accent 50%;
    }
    SessionList:focus > .session-list--cursor {
        background: $accent;
    }
    SessionList > .session-list--empty {
        color: $text-muted;
        text-style: italic;
    }
    """

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    def __init__(self, rows: list[Row], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows = rows  # every loaded session, shared with the app
        self.items: list[int] | list[Group] = []  # row indices, or groups
        self.grouped = False
        self.empty_message = "Loading…"

    # --- content ---------------------------------------------------------------------------

    @property
    def columns(self) -> tuple[tuple[str, int], ...]:
        return GROUP_COLUMNS if self.grouped else SESSION_COLUMNS

    def set_items(
        self, items: list[int] | list[Group], *, grouped: bool, keep: int | None = None
    ) -> None:
        """Show ``items``; put the cursor on row ``keep`` (or the one after it) if given."""
        self.items = items
        self.grouped = grouped
        if keep is not None and not grouped and items:
            position = bisect.bisect_left(items, keep)  # type: ignore[arg-type, type-var]
            cursor = min(position, len(items) - 1)
        else:
            cursor = min(self.cursor, max(len(items) - 1, 0))
        self._update_size()
        self.cursor = cursor
        self.refresh()

    def append_items(self, new: list[int]) -> None:
        """More sessions arrived at the end (sessions view only)."""
        if not new:
            return
        was_empty = not self.items
        self.items.extend(new)  # type: ignore[arg-type]
        self._update_size()
        if was_empty:
            self.cursor = 0
        self.refresh()

    def _update_size(self) -> None:
        self.virtual_size = Size(_total_width(self.columns), len(self.items) + 1)

    @property
    def current_item(self) -> int | Group | None:
        if 0 <= self.cursor < len(self.items):
            return self.items[self.cursor]
        return None

    # --- cursor ----------------------------------------------------------------------------

    @property
    def _visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.items) - 1)) if self.items else 0

    def watch_cursor(self, value: int) -> None:
        self.scroll_to_cursor()
        self.refresh()
        self.post_message(SessionHighlighted(value if self.items else -1))

    def scroll_to_cursor(self) -> None:
        top = round(self.scroll_y)
        visible = self._visible_rows
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False, immediate=True)

    def move(self, delta: int) -> None:
        self.cursor = self.cursor + delta

    def page(self, direction: int) -> None:
        self.cursor = self.cursor + direction * max(1, self._visible_rows - 1)

    def find(self, text: str, direction: int, include_current: bool = False) -> int | None:
        """The position of the next line (1) or previous line (-1) containing ``text``,
        wrapping around; the current line counts only with ``include_current``."""
        count = len(self.items)
        needle = text.lower()
        start = self.cursor if include_current else self.cursor + direction
        for step in range(count):
            position = (start + direction * step) % count
            if needle in self.row_text(position):
                return position
        return None

    def at_end(self) -> bool:
        return not self.items or self.cursor >= len(self.items) - 1

    def on_resize(self, _event: events.Resize) -> None:
        self.scroll_to_cursor()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        self.cursor = round(self.scroll_y) + offset.y - 1

    # --- rendering -------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            header = " ".join(fit(title, w) for title, w in self.columns)
            style = base + self.get_component_rich_style("session-list--header")
            strip = Strip([Segment(header, style)])
            return strip.crop_extend(scroll_x, scroll_x + width, style)
        index = scroll_y + y - 1
        if index >= len(self.items):
            if index == 0:
                style = base + self.get_component_rich_style("session-list--empty")
                message = shown_prose(self.empty_message)
                return Strip([Segment(f" {message}", style)]).crop_extend(0, width, style)
            return Strip.blank(width, base)
        style = base
        if index == self.cursor:
            style = base + self.get_component_rich_style("session-list--cursor")
        item = self.items[index]
        segments = (
            self._group_segments(item, style)
            if isinstance(item, Group)
            else self._row_segments(item, style)
        )
        return Strip(segments).crop_extend(scroll_x, scroll_x + width, style)

    def _row_segments(self, index: int, style: Style) -> list[Segment]:
        row = self.rows[index]
        j = row.judgement
        widths = [w for _, w in SESSION_COLUMNS]
        verdict = fit(verdict_label(j.verdict), widths[0])
        rest = " ".join(
            (
                "",
                fit(printable(row.time), widths[1]),
                fit(printable(row.protocol), widths[2]),
                fit(f"{printable(row.host or '?')} ({printable(row.host_source)})", widths[3]),
                fit(j.primary or "-", widths[4]),
                fit(printable(row.sni) if row.sni is not None else "(none)", widths[5]),
                fit(shorten_names(j.presented_names), widths[6]),
                fit(printable(row.client), widths[7]),
            )
        )
        return [
            Segment(verdict, style + VERDICT_COLOURS.get(j.verdict, Style())),
            Segment(rest, style),
        ]

    def _group_segments(self, g: Group, style: Style) -> list[Segment]:
        widths = [w for _, w in GROUP_COLUMNS]
        j = g.judgement
        last = self.rows[g.last]
        return [
            Segment(fit(f"{g.count:>7,}", widths[0]) + " ", style),
            Segment(
                fit(verdict_label(j.verdict), widths[1]),
                style + VERDICT_COLOURS.get(j.verdict, Style()),
            ),
            Segment(
                " "
                + " ".join(
                    (
                        fit(printable(g.host or "?"), widths[2]),
                        fit(j.primary or "-", widths[3]),
                        fit(shorten_names(j.presented_names), widths[4]),
                        fit(printable(",".join(sorted(g.protocols))), widths[5]),
                        fit(printable(last.time), widths[6]),
                    )
                ),
                style,
            ),
        ]

    def row_text(self, position: int) -> str:
        """The plain text of the line at ``position`` (for find)."""
        item = self.items[position]
        if isinstance(item, Group):
            j = item.judgement
            names = shorten_names(j.presented_names)
            return f"{item.host} {j.verdict} {j.primary} {names} {' '.join(item.protocols)}".lower()
        row = self.rows[item]
        j = row.judgement
        return (
            f"{j.verdict} {row.time} {row.protocol} {row.host} {j.primary} {row.sni or ''} "
            f"{shorten_names(j.presented_names)} {row.client}"
        ).lower()
