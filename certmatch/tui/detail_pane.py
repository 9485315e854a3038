"""The detail pane: one session read back from its recording and diagnosed in full.

The list keeps only a light judgement per session; the pane diagnoses its one
session again, so the explanation uses that session's own names.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from certmatch.core.diagnosis import Diagnosis
from certmatch.core.judge import Judge
from certmatch.core.recording import RecordingError
from certmatch.core.report import shown_prose
from certmatch.tui import colours
from certmatch.tui.detail import render_detail
from certmatch.tui.source import RecordingSource

NOTHING_SELECTED = "Select a session to see why it fails, the evidence and the fix."


class DetailPane(VerticalScroll, inherit_bindings=False):
    """Shows the diagnosis of the selected session (or of the latest session of a group).

    It binds no key of its own: the key table (``keys``) scrolls it, in both views."""

    def __init__(
        self, judge_of: Callable[[RecordingSource], Judge], *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.judge_of = judge_of
        self.detail: tuple[Diagnosis, str] | None = None  # what is shown, and its recording
        self._shown: tuple[RecordingSource, int, int | None] | None = None
        # Kept here, not queried: the loader can ask for a detail while the screen closes.
        self._body = Static(id="detail-body")

    def compose(self) -> ComposeResult:
        yield self._body

    def show_nothing(self) -> None:
        self._shown = None
        self.detail = None
        self._body.update(Text(NOTHING_SELECTED, style="italic"))

    def show(self, source: RecordingSource, offset: int, group_count: int | None = None) -> None:
        """The session whose line starts at ``offset`` in ``source``; nothing to do if shown."""
        shown = (source, offset, group_count)
        if self._shown is not None and shown[0] is self._shown[0] and shown[1:] == self._shown[1:]:
            return
        try:
            facts = source.read_back(offset)
        except RecordingError as error:
            self._body.update(Text(shown_prose(str(error)), style=f"bold {colours.RED}"))
            self._shown = None
            self.detail = None
            return
        d = self.judge_of(source).diagnose(facts)
        self._shown = shown
        self.detail = (d, source.name)
        self._body.update(render_detail(d, source.name, group_count=group_count))
        self.scroll_home(animate=False)
