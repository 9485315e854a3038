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
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual._context import NoActiveAppError
from textual.geometry import Region, Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from certmatch.core.report import shown_prose
from certmatch.core.text import printable
from certmatch.tui.messages import SessionHighlighted
from certmatch.tui.model import Group, Row
from certmatch.tui.severity import (
    MONO_SEVERITY_STYLES,
    SEVERITY_STYLES,
    Severity,
    badge,
    further_causes,
)


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the list: its title, the width it wants, and the least it can shrink to."""

    title: str
    width: int
    least: int = 0  # 0: never shrinks

    @property
    def floor(self) -> int:
        return self.least or self.width


# The columns of each view, left to right in priority order: the columns a newcomer needs to
# judge a session (verdict, host, cause, names) come first and shrink to fit the screen; the
# rest follow, reached with ← / →.
SESSION_COLUMNS: tuple[Column, ...] = (
    Column("verdict", 14),
    Column("requested host (source)", 34, 18),
    Column("primary cause", 29, 23),  # most cause ids whole
    Column("names on the certificate", 42, 14),
    Column("SNI", 24),
    Column("protocol", 10),
    Column("time (UTC)", 19),
    Column("client", 21),
)
SESSION_PRIORITY = 4  # verdict, host, cause, names
GROUP_COLUMNS: tuple[Column, ...] = (
    Column("count", 8),
    Column("verdict", 14),
    Column("requested host", 30, 18),
    Column("primary cause", 29, 23),
    Column("names on the certificate", 42, 14),
    Column("protocols", 18),
    Column("last seen (UTC)", 19),
)
GROUP_PRIORITY = 5  # count, verdict, host, cause, names
NAMES_WIDTH = 40
_BOLD = Style(bold=True)
BADGE_STYLES = {severity: Style.parse(style) for severity, style in SEVERITY_STYLES.items()}
MONO_BADGE_STYLES = {
    severity: Style.parse(style) for severity, style in MONO_SEVERITY_STYLES.items()
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


def names_text(names: tuple[str, ...], width: int) -> str:
    """The certificate's names in ``width`` cells, keeping the ``+N`` of the ones left out:
    ``mail.example… +2``."""
    short = shorten_names(names, width)
    head, plus, count = short.rpartition(" +")
    if len(short) > width and plus and count.isdigit():
        return fit_keeping(head, f" +{count}", width)
    return fit(short, width)


def fit(text: str, width: int) -> str:
    """``text`` cut or padded to exactly ``width`` cells, with … where it was cut."""
    if len(text) > width:
        return text[: width - 1] + "…"
    return text.ljust(width)


def fit_keeping(text: str, suffix: str, width: int) -> str:
    """``text`` and ``suffix`` in ``width`` cells; ``text`` is cut (with …) before ``suffix``
    is: ``no-sni-default-ce… +1``."""
    if len(text) + len(suffix) <= width or len(suffix) >= width - 1:
        return fit(text + suffix, width)
    return fit(text, width - len(suffix)).rstrip(" ") + suffix


def cause_text(primary: str, causes: tuple[str, ...], width: int) -> str:
    """The primary cause and how many more causes hold: ``cn-ignored-san-present +1``
    (counted as :func:`further_causes` says: the row keeps its cells for the cause that decides
    the session)."""
    further, _warnings = further_causes(primary, causes)
    more = f" +{len(further)}" if further else ""
    return fit_keeping(primary or "-", more, width)


def host_text(host: str, source: str, width: int) -> str:
    """``host (source)``, or the host alone when both do not fit."""
    both = f"{printable(host or '?')} ({printable(source)})"
    return fit(both if len(both) <= width else printable(host or "?"), width)


def column_widths(columns: Sequence[Column], priority: int, width: int) -> list[int]:
    """Each column's width for a list ``width`` cells wide.

    The first ``priority`` columns must fit: the ones that can shrink give up cells, in
    proportion to how much they can give, until the priority columns fit in ``width`` (or
    are at their least). The other columns keep their width, to the right."""
    widths = [c.width for c in columns]
    excess = sum(widths[:priority]) + priority - 1 - width
    slack = [c.width - c.floor for c in columns[:priority]]
    total_slack = sum(slack)
    if excess > 0 and total_slack:
        take = min(excess, total_slack)
        given = [take * s // total_slack for s in slack]
        for position in range(priority):  # hand out what rounding left, left to right
            if sum(given) >= take:
                break
            if given[position] < slack[position]:
                given[position] += 1
        widths[:priority] = [w - g for w, g in zip(widths[:priority], given, strict=True)]
    return widths


def _title(title: str, width: int) -> str:
    """A column's title, without its "(source)" when the column is too narrow for it."""
    return title.partition(" (")[0] if len(title) > width else title


def cut_at_edge(line: str, end: int) -> str:
    """``line`` up to cell ``end``, ending in … when that cuts through text."""
    if len(line) <= end:
        return line
    if end > 0 and line[end - 1] != " " and line[end] != " ":
        return line[: end - 1] + "…"
    return line[:end]


def highlight(segments: list[Segment], text: str, find: str, style: Style) -> list[Segment]:
    """``segments`` (whose texts make up ``text``) with every occurrence of ``find``, in any
    case, styled ``style`` on top of its own."""
    spans: list[tuple[int, int]] = []
    lowered, needle = text.lower(), find.lower()
    start = lowered.find(needle)
    while start >= 0 and needle:
        spans.append((start, start + len(needle)))
        start = lowered.find(needle, start + len(needle))
    if not spans:
        return segments
    result: list[Segment] = []
    at = 0
    for segment in segments:
        piece, piece_style = segment.text, segment.style
        end = at + len(piece)
        cuts = sorted({at, end, *(p for span in spans for p in span if at < p < end)})
        for left, right in pairwise(cuts):
            inside = any(a <= left and right <= b for a, b in spans)
            result.append(
                Segment(
                    piece[left - at : right - at],
                    (piece_style + style if piece_style else style) if inside else piece_style,
                )
            )
        at = end
    return result


class SessionList(ScrollView, can_focus=True, inherit_bindings=False):
    """Sessions (or groups of them) one per line, with a cursor."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "session-list--header",
        "session-list--cursor",
        "session-list--empty",
        "session-list--match",
    }
    DEFAULT_CSS = """
    SessionList {
        height: auto;
        min-height: 3;
        max-height: 55%;
        background: $surface;
    }
    SessionList > .session-list--header {
        text-style: bold;
        background: $panel;
        color: $text;
    }
    SessionList > .session-list--cursor {
        background: $accent 30%;
    }
    SessionList:focus > .session-list--cursor {
        background: $accent;
        color: #000000;
    }
    SessionList > .session-list--empty {
        color: $text-muted;
        text-style: italic;
    }
    SessionList > .session-list--match {
        color: black;
        background: yellow;
    }
    """

    cursor: reactive[int] = reactive(0, always_update=True, init=False, repaint=False)

    def __init__(self, rows: list[Row], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows = rows  # every loaded session, shared with the app
        self.items: list[int] | list[Group] = []  # row indices, or groups
        self.grouped = False
        self.empty_message = "Loading…"
        self.find_text = ""  # highlighted where it shows
        self._widths: list[int] = []
        self._widths_for: tuple[bool, int] | None = None
        self._base: Style | None = None  # the widget's style, during one repaint
        self._painted = False

    # --- content ---------------------------------------------------------------------------

    @property
    def columns(self) -> tuple[Column, ...]:
        return GROUP_COLUMNS if self.grouped else SESSION_COLUMNS

    @property
    def widths(self) -> list[int]:
        """The columns' widths for the list's current width (the priority columns fit)."""
        width = self.scrollable_content_region.width
        key = (self.grouped, width)
        if key != self._widths_for:
            priority = GROUP_PRIORITY if self.grouped else SESSION_PRIORITY
            self._widths = column_widths(self.columns, priority, width)
            self._widths_for = key
        return self._widths

    def column_starts(self) -> list[int]:
        """The cell where each column starts."""
        starts, at = [], 0
        for width in self.widths:
            starts.append(at)
            at += width + 1
        return starts

    @property
    def pinned_width(self) -> int:
        """The cells of the columns that stay put when the list scrolls sideways: the verdict
        (and, grouped, the count before it), so that a scrolled row still says how it ended."""
        pinned = 2 if self.grouped else 1
        return sum(self.widths[:pinned]) + pinned

    def scroll_columns(self, direction: int) -> None:
        """Scroll sideways to the next column (1) or the previous one (-1)."""
        self._update_size()  # the widths follow the width, which a scrollbar can change
        x = round(self.scroll_x)
        pinned = self.pinned_width
        starts = [start - pinned for start in self.column_starts() if start >= pinned]
        if direction > 0:
            target = next((s for s in starts if s > x), x)
            target = min(target, round(self.max_scroll_x))
        else:
            target = max((s for s in starts if s < x), default=0)
        self.scroll_to(x=target, animate=False, immediate=True)

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
        before = len(self.items)
        self.items.extend(new)  # type: ignore[arg-type]
        self._update_size()
        if not before:
            self.cursor = 0
        if before <= round(self.scroll_y) + self._visible_rows:
            self.refresh()  # some of the new lines are on screen (below, the scroll bar shows)

    def _update_size(self) -> None:
        size = Size(sum(self.widths) + len(self.widths) - 1, len(self.items) + 1)
        if size == self.virtual_size:
            return
        before = self.virtual_size
        if size.width != before.width or not self.is_mounted:
            self.virtual_size = size
            return
        if min(before.height, size.height) <= self.screen.size.height:
            # The list is as tall as its lines up to 55% of the screen (the detail has the
            # rest): a short list that grows or shrinks changes the layout.
            self.virtual_size = size
            return
        # Only more (or fewer) lines: the scroll bars change, not the screen's layout, which
        # would measure every widget again (the whole detail) at each batch of a followed file.
        self.set_reactive(ScrollView.virtual_size, size)
        self._scroll_update(size)  # the scroll bars; the lines are the caller's to refresh

    @property
    def _badge_styles(self) -> dict[Severity, Style]:
        try:
            mono = getattr(self.app, "mono", False)
        except NoActiveAppError:  # rendered outside an app (tests/test_escaping.py)
            mono = False
        return MONO_BADGE_STYLES if mono else BADGE_STYLES

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

    def watch_cursor(self, old: int, value: int) -> None:
        top = round(self.scroll_y)
        self.scroll_to_cursor()
        if round(self.scroll_y) == top and self._painted:
            # Only the cursor's old and new lines change: a key repaints two lines, not all.
            self.refresh_line(old + 1)
            self.refresh_line(value + 1)
        else:
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
        self._update_size()
        self.scroll_to_cursor()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        self.cursor = round(self.scroll_y) + offset.y - 1

    # --- rendering -------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # The widget's style is worked out once per repaint, not once per line (it walks
        # every ancestor's CSS).
        self._base = self.rich_style
        try:
            return super().render_lines(crop)
        finally:
            self._base = None
            self._painted = True

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        widths = self.widths
        if sum(widths) + len(widths) - 1 != self.virtual_size.width:
            self.call_later(self._update_size)  # the width changed since the last layout
        base = self._base or self.rich_style
        if y == 0:
            header = " ".join(
                fit(_title(c.title, w), w) for c, w in zip(self.columns, widths, strict=True)
            )
            style = base + self.get_component_rich_style("session-list--header")
            return self._strip([(header, None)], scroll_x, width, style, pinned=self.pinned_width)
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
        cells = (
            self._group_cells(item, widths)
            if isinstance(item, Group)
            else self._row_cells(item, widths)
        )
        if index == self.cursor:
            # The cursor's background is the accent: a badge keeps its symbol and weight but
            # not its colour there (only a security badge, with a background of its own).
            security = self._badge_styles["security"]
            cells = [
                (text, extra if extra is None or extra == security else _BOLD)
                for text, extra in cells
            ]
        match = self.get_component_rich_style("session-list--match") if self.find_text else None
        return self._strip(
            cells, scroll_x, width, style, self.find_text, match, pinned=self.pinned_width
        )

    @staticmethod
    def _strip(
        cells: list[tuple[str, Style | None]],
        scroll_x: int,
        width: int,
        style: Style,
        find: str = "",
        match: Style | None = None,
        pinned: int = 0,
    ) -> Strip:
        """The cells joined by spaces, cut at the right edge with … if that cuts text; where
        ``find`` shows (any case), it is styled ``match``. The first ``pinned`` cells stay in
        place when scrolled sideways; what follows them scrolls."""
        line = " ".join(text for text, _ in cells)
        shown = cut_at_edge(line, scroll_x + width)
        segments: list[Segment] = []
        at = 0
        for number, (text, extra) in enumerate(cells):
            piece = shown[at : at + len(text) + (1 if number else 0)]
            at += len(piece)
            if not piece:
                break
            if number and extra is not None:  # the separating space is not styled
                segments.append(Segment(piece[0], style))
                piece = piece[1:]
            segments.append(Segment(piece, style + extra if extra is not None else style))
        if find and match is not None:
            segments = highlight(segments, shown, find, match)
        strip = Strip(segments)
        if scroll_x and 0 < pinned < width:
            return Strip.join(
                [
                    strip.crop_extend(0, pinned, style),
                    strip.crop_extend(pinned + scroll_x, scroll_x + width, style),
                ]
            )
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def _row_segments(self, index: int, style: Style) -> list[Segment]:
        """Session row ``index`` whole, every column at the list's widths, uncut by the edge
        (what reaches the terminal; tests/test_escaping.py checks it)."""
        widths = self.widths
        return list(self._strip(self._row_cells(index, widths), 0, sum(widths) + 8, style))

    def _row_cells(self, index: int, widths: list[int]) -> list[tuple[str, Style | None]]:
        row = self.rows[index]
        j = row.judgement
        label, severity = badge(j.verdict, j.causes)
        return [
            (fit(label, widths[0]), self._badge_styles[severity]),
            (host_text(row.host, row.host_source, widths[1]), None),
            (cause_text(j.primary, j.causes, widths[2]), None),
            (names_text(j.presented_names, widths[3]), None),
            (fit(printable(row.sni) if row.sni is not None else "(none)", widths[4]), None),
            (fit(printable(row.protocol), widths[5]), None),
            (fit(printable(row.time), widths[6]), None),
            (fit(printable(row.client), widths[7]), None),
        ]

    def _group_cells(self, g: Group, widths: list[int]) -> list[tuple[str, Style | None]]:
        j = g.judgement
        last = self.rows[g.last]
        label, severity = badge(j.verdict, j.causes)
        return [
            (fit(f"{g.count:>7,}", widths[0]), None),
            (fit(label, widths[1]), self._badge_styles[severity]),
            (fit(printable(g.host or "?"), widths[2]), None),
            (cause_text(j.primary, j.causes, widths[3]), None),
            (names_text(j.presented_names, widths[4]), None),
            (fit(printable(",".join(sorted(g.protocols))), widths[5]), None),
            (fit(printable(last.time), widths[6]), None),
        ]

    def row_text(self, position: int) -> str:
        """The plain text of the line at ``position`` (for find)."""
        item = self.items[position]
        if isinstance(item, Group):
            j = item.judgement
            names = shorten_names(j.presented_names)
            label = badge(j.verdict, j.causes)[0]
            protocols = " ".join(item.protocols)
            return f"{item.host} {label} {j.verdict} {j.primary} {names} {protocols}".lower()
        row = self.rows[item]
        j = row.judgement
        return (
            f"{badge(j.verdict, j.causes)[0]} {j.verdict} {row.time} {row.protocol} {row.host} "
            f"{j.primary} {row.sni or ''} "
            f"{shorten_names(j.presented_names)} {row.client}"
        ).lower()
