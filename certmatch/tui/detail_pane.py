"""The detail pane: one session read back from its recording and diagnosed in full.

The list keeps only a light judgement per session; the pane diagnoses its one
session again, so the explanation uses that session's own names.

A ``ScrollView`` that renders only the lines on screen (as the session list does): showing
another session wraps its lines once and changes the scroll bar, never the screen's layout,
which would measure every widget again at each key press. A citation with an address is a
link: the terminal's own (ctrl+)click opens it, and so does a click in the pane.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from certmatch.core.diagnosis import Diagnosis
from certmatch.core.judge import Judge
from certmatch.core.recording import RecordingError
from certmatch.core.report import shown_prose
from certmatch.tui import colours
from certmatch.tui.detail import (
    Line,
    as_text,
    detail_lines,
    line_segments,
    row_lines,
    wrap_lines,
)
from certmatch.tui.model import Row
from certmatch.tui.source import RecordingSource

NOTHING_SELECTED = "Select a session to see why it fails, the evidence and the fix."


class DetailPane(ScrollView, can_focus=True, inherit_bindings=False):
    """Shows the diagnosis of the selected session (or of the latest session of a group).

    It binds no key of its own: the key table (``keys``) scrolls it, in both views."""

    DEFAULT_CSS = """
    DetailPane {
        background: $surface;
        overflow-x: hidden;  /* lines wrap to the width; a moment's wider layout while the
                                vertical scroll bar comes must not leave a horizontal one */
    }
    """

    def __init__(
        self, judge_of: Callable[[RecordingSource], Judge], *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.judge_of = judge_of
        self.detail: tuple[Diagnosis, str] | None = None  # what is shown, and its recording
        self._shown: tuple[RecordingSource, int, int | None] | None = None
        self._lines: list[Line] = []
        self._wrapped: list[Line] = []
        self._strips: dict[int, Strip] = {}  # rendered lines, for the style in _strips_for
        self._strips_for: tuple[Style, int, int] | None = None
        self._wrapped_for = -1  # the width the lines were wrapped at
        self._base: Style | None = None  # the widget's style, during one repaint

    # --- content ---------------------------------------------------------------------------

    def show_nothing(self, why: str = NOTHING_SELECTED) -> None:
        if self._shown is None and self.detail is None and self.plain == why:
            return  # already says it: no repaint
        self._shown = None
        self.detail = None
        self._set_lines([Line(Text(), Text(why, style="italic"))])

    def show(
        self,
        source: RecordingSource,
        offset: int,
        group_count: int | None = None,
        row: Row | None = None,
    ) -> None:
        """The session whose line starts at ``offset`` in ``source``; nothing to do if shown.
        If its line cannot be read back (the file was truncated or replaced), what the list
        knew of it, ``row``, with the reason."""
        shown = (source, offset, group_count)
        if self._shown is not None and shown[0] is self._shown[0] and shown[1:] == self._shown[1:]:
            return
        try:
            facts = source.read_back(offset)
        except RecordingError as error:
            self._shown = None
            self.detail = None
            if row is not None:
                self._set_lines(row_lines(row, str(error)))
            else:
                message = Text(shown_prose(str(error)), style=f"bold {colours.RED}")
                self._set_lines([Line(Text(), message)])
            return
        try:
            d = self.judge_of(source).diagnose(facts)
            lines = detail_lines(d, source.name, group_count=group_count)
        except Exception as error:  # noqa: BLE001 - one session's bug must not end the TUI
            # (under proxy --tui that would stop the recording too)
            self._shown = None
            self.detail = None
            failed = _layout_failed(facts.id, error)
            if row is not None:
                self._set_lines(row_lines(row, failed))
            else:
                self._set_lines(
                    [Line(Text(), Text(shown_prose(failed), style=f"bold {colours.RED}"))]
                )
            return
        self._shown = shown
        self.detail = (d, source.name)
        self._set_lines(lines)

    @property
    def plain(self) -> str:
        """What the pane shows, unwrapped, in plain text (for tests)."""
        return as_text(self._lines).plain

    @property
    def text(self) -> str:
        """What the pane shows, as wrapped, in plain text (for tests and find)."""
        self._wrap()
        return "\n".join(f"{line.lead.plain}{line.body.plain}".rstrip() for line in self._wrapped)

    def _set_lines(self, lines: list[Line]) -> None:
        self._lines = lines
        self._wrapped_for = -1
        self._strips.clear()
        if self.is_mounted:
            self.scroll_to(y=0, animate=False, immediate=True)
            self._update_size()
            self.refresh()

    def _wrap(self) -> None:
        width = max(1, self.scrollable_content_region.width)
        if width != self._wrapped_for:
            self._wrapped = wrap_lines(self._lines, width, self.app.console)
            self._wrapped_for = width
            self._strips.clear()

    def _update_size(self) -> None:
        if not self.is_mounted:
            return
        self._wrap()
        size = Size(self._wrapped_for, len(self._wrapped))
        if size == self.virtual_size:
            return
        if size.width != self.virtual_size.width:
            self.virtual_size = size
            return
        # Only the scroll bar changes, not the screen's layout (see the module's docstring).
        self.set_reactive(ScrollView.virtual_size, size)
        self._scroll_update(size)

    def on_resize(self, _event: events.Resize) -> None:
        self._update_size()
        self.refresh()

    def on_mount(self) -> None:
        self._update_size()

    # --- rendering -------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        self._base = self.rich_style  # once per repaint, not per line
        self._wrap()
        if len(self._wrapped) != self.virtual_size.height:
            self.call_later(self._update_size)  # the width changed since the last layout
        try:
            return super().render_lines(crop)
        finally:
            self._base = None

    def render_line(self, y: int) -> Strip:
        if self._base is None:  # called on its own, not from render_lines
            self._wrap()
        scroll_x, scroll_y = self.scroll_offset
        width = self._wrapped_for
        base = self._base or self.rich_style
        index = scroll_y + y
        if index >= len(self._wrapped):
            return Strip.blank(width, base)
        # Each line is rendered once for a style, width and sideways scroll, and kept.
        key = (base, width, scroll_x)
        if key != self._strips_for:
            self._strips.clear()
            self._strips_for = key
        strip = self._strips.get(index)
        if strip is None:
            segments = Segment.apply_style(
                line_segments(self._wrapped[index], self.app.console), base
            )
            strip = Strip(segments).crop_extend(scroll_x, scroll_x + width, base)
            self._strips[index] = strip
        return strip

    def on_click(self, event: events.Click) -> None:
        """A click on a citation opens it (where the terminal does not do it by itself)."""
        style = event.style
        if isinstance(style, Style) and style.link:
            self.app.open_url(style.link)


def _layout_failed(session_id: str, error: Exception) -> str:
    return (
        f"certmatch could not lay out session {session_id} ({type(error).__name__}: {error}). "
        "This is certmatch's bug, not the recording's: please report it with this session's "
        "line from the recording."
    )
