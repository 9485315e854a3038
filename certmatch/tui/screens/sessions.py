"""The main screen: the session list, the detail pane below it (or alone), the status line.

A reader thread (``Loader.poll`` in a worker) posts the sessions it reads as
``BatchLoaded`` messages; the screen adds them to the list as they come, so
the first rows show while a big recording is still being read.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from certmatch.core.judge import Judge
from certmatch.core.recording import LineProblem
from certmatch.core.report import shown_prose
from certmatch.core.text import printable
from certmatch.core.trust import TrustStore
from certmatch.tui import keys
from certmatch.tui.detail_pane import DetailPane
from certmatch.tui.export import export_session, session_json
from certmatch.tui.keys import View
from certmatch.tui.loader import Loader
from certmatch.tui.messages import BatchLoaded, LoaderFailed, LoadPassFinished, SessionHighlighted
from certmatch.tui.model import FILTER_HELP, Filter, FilterError, Group, Grouping, Row, select
from certmatch.tui.screens.help import HelpScreen
from certmatch.tui.screens.prompt import PromptScreen
from certmatch.tui.session_list import SessionList

_ACTIONS = {key.action: key for key in keys.keys_for(View.SESSIONS)}


class SessionsScreen(Screen[None]):
    """Recorded sessions, failing ones first, and the selected one explained in detail."""

    DEFAULT_CSS = """
    SessionsScreen #status {
        dock: top;
        height: 1;
        background: $primary-background;
        color: $text;
        padding: 0 1;
    }
    SessionsScreen #detail {
        height: 45%;
        border-top: solid $accent;
        padding: 0 1;
    }
    SessionsScreen.-maximized SessionList { display: none; }
    SessionsScreen.-maximized #detail { height: 1fr; border-top: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = keys.bindings(View.SESSIONS)

    def __init__(
        self,
        paths: list[Path],
        *,
        store: TrustStore,
        follow: bool,
        show_all: bool,
        export_dir: Path,
        poll_interval: float,
    ) -> None:
        super().__init__()
        self.paths = paths
        self.judge = Judge(store)  # shared by the reader thread and the detail pane
        self.loader = Loader(paths, self.judge)
        self.rows: list[Row] = []
        self.following = follow
        self.show_all = show_all
        self.grouped = False
        self.filter = Filter()
        self.export_dir = export_dir
        self.poll_interval = poll_interval
        self.problems: list[LineProblem] = []
        self.errors: list[str] = []
        self.failing = 0
        self.initial_load_done = False
        self.progress = (0, 0)
        self.last_filter_seconds = 0.0
        self.find_text = ""
        self._visible: list[int] = []
        self._grouping = Grouping()
        self._test = self.filter.predicate(show_all)
        self._wake = threading.Event()
        self._loading = False
        # Kept here, not queried: loader messages can arrive while the screen closes.
        self._status = Static(id="status")
        self.session_list = SessionList(self.rows, id="sessions")
        self.detail_pane = DetailPane(self.judge, id="detail")

    def compose(self) -> ComposeResult:
        yield self._status
        yield self.session_list
        yield self.detail_pane
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.session_list.focus()
        self.session_list.set_items(self._visible, grouped=False)
        self._show_detail()
        self._update_status()
        # Start reading once the empty screen is painted, so the first paint does not wait.
        self.call_after_refresh(self._start_loader)

    @property
    def view(self) -> View:
        """The list with the detail below it, or the detail alone."""
        return View.DETAIL if self.has_class("-maximized") else View.LIST

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        key = _ACTIONS.get(action)
        return key is None or bool(key.where & self.view)

    # --- loading ---------------------------------------------------------------------------

    def _start_loader(self) -> None:
        # The reader thread runs Python code non-stop; by default it holds the GIL for
        # 5 ms at a time, and every wait of the UI's event loop costs the UI a whole
        # slice, which made the first paint take seconds. Shorter slices keep the UI fluid.
        sys.setswitchinterval(0.0005)
        if not self._loading:
            self._loading = True
            self._load()

    @work(thread=True, exclusive=True, group="loader", exit_on_error=False)
    def _load(self) -> None:
        worker = get_current_worker()
        try:
            while not worker.is_cancelled:
                following = self.following
                self.loader.poll(
                    lambda batch: self.post_message(BatchLoaded(batch)),
                    final=not following,
                    cancelled=lambda: worker.is_cancelled,
                )
                self.post_message(LoadPassFinished())
                if not self.following:
                    break
                self._wake.wait(self.poll_interval)
                self._wake.clear()
        except Exception as error:  # noqa: BLE001 - shown to the user instead of a traceback
            self.post_message(LoaderFailed(f"{type(error).__name__}: {error}"))
        finally:
            self._loading = False

    def stop_loader(self) -> None:
        """Cancel the reader thread and wake it if it waits for the next follow pass."""
        self.workers.cancel_group(self, "loader")
        self._wake.set()

    @on(BatchLoaded)
    def _add_batch(self, message: BatchLoaded) -> None:
        batch = message.batch
        self.progress = (batch.bytes_read, batch.bytes_total)
        self.problems += batch.problems
        for error in batch.errors:
            self.errors.append(error)
            self.notify(
                shown_prose(error),
                title="Cannot read a recording",
                severity="error",
                timeout=10,
                markup=False,
            )
        if batch.rows:
            start = len(self.rows)
            self.rows.extend(batch.rows)
            self.failing += sum(1 for row in batch.rows if row.judgement.failed)
            new = select(self.rows, self._test, start)
            listing = self.session_list
            if self.grouped:
                self._grouping.add(self.rows, new)
                self._visible.extend(new)
                self._show_groups()
            else:
                at_end = listing.at_end()
                listing.append_items(new)  # extends self._visible, the list's items
                if self.following and at_end:
                    listing.cursor = len(listing.items) - 1
            self._show_detail()
        self._update_status()

    @on(LoadPassFinished)
    def _pass_finished(self) -> None:
        if not self.initial_load_done:
            self.initial_load_done = True
            if self.problems:
                first = self.problems[0]
                more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
                self.notify(
                    f"{shown_prose(str(first))}{more}",
                    title="Lines skipped",
                    severity="warning",
                    timeout=8,
                    markup=False,
                )
        self._update_status()

    @on(LoaderFailed)
    def _loader_failed(self, message: LoaderFailed) -> None:
        self.errors.append(message.error)
        self.notify(
            shown_prose(message.error),
            title="Reading stopped",
            severity="error",
            timeout=15,
            markup=False,
        )
        self._update_status()

    # --- the list --------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Recompute what the list shows after the filter, all/failing or grouping changed."""
        started = time.perf_counter()
        listing = self.session_list
        keep = listing.current_item
        self._test = self.filter.predicate(self.show_all)
        self._visible = select(self.rows, self._test)
        self._grouping = Grouping()
        if self.grouped:
            self._grouping.add(self.rows, self._visible)
            self._show_groups(keep if isinstance(keep, Group) else None)
        else:
            row = keep.last if isinstance(keep, Group) else keep
            listing.set_items(self._visible, grouped=False, keep=row)
        self.last_filter_seconds = time.perf_counter() - started
        self._update_status()
        self._show_detail()

    def _show_groups(self, keep: Group | None = None) -> None:
        listing = self.session_list
        current = keep or listing.current_item if listing.grouped else keep
        groups = self._grouping.sorted()
        listing.set_items(groups, grouped=True)
        if isinstance(current, Group):
            for position, g in enumerate(groups):
                if (
                    g.host == current.host
                    and g.judgement.leaf_sha256 == current.judgement.leaf_sha256
                    and g.judgement.primary == current.judgement.primary
                ):
                    listing.cursor = position
                    break

    def _empty_message(self) -> str:
        if not self.initial_load_done:
            return "Loading…"
        if not self.rows:
            return "No sessions recorded yet." + (
                " Following: new sessions appear here." if self.following else ""
            )
        if not self.filter.empty:
            return (
                f"No session matches the filter “{printable(self.filter.text)}”. "
                "Press f to change it."
            )
        if not self.show_all:
            return f"None of the {len(self.rows):,} sessions fails. Press a to show all of them."
        return "Nothing to show."

    def _update_status(self) -> None:
        listing = self.session_list
        listing.empty_message = self._empty_message()
        names = ", ".join(printable(p.name) for p in self.paths)
        parts = [f"certmatch · {names}", f"{len(self.rows):,} sessions, {self.failing:,} failing"]
        shown = "all" if self.show_all else "failing"
        if self.grouped:
            parts.append(
                f"grouped ({shown}): {len(self._grouping):,} groups of {len(self._visible):,}"
            )
        else:
            parts.append(f"showing {shown}: {len(self._visible):,}")
        if not self.filter.empty:
            parts.append(f"filter: {printable(self.filter.text)}")
        if not self.initial_load_done:
            read, total = self.progress
            percent = 100 * read // total if total else 0
            parts.append(f"loading {percent}%")
        if self.following:
            waiting = (
                f" (waiting for {printable(', '.join(self.loader.waiting))})"
                if self.loader.waiting
                else ""
            )
            parts.append("following" + waiting)
        if self.problems:
            parts.append(f"{len(self.problems):,} bad lines skipped")
        self._status.update(Text(" · ".join(parts), no_wrap=True, overflow="ellipsis"))
        if not listing.items:
            listing.refresh()

    # --- the detail pane -------------------------------------------------------------------

    @on(SessionHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        item = self.session_list.current_item
        if item is None:
            self.detail_pane.show_nothing()
            return
        count: int | None
        if isinstance(item, Group):
            row, count = self.rows[item.last], item.count
        else:
            row, count = self.rows[item], None
        self.detail_pane.show(self.loader.sources[row.source].path, row.offset, count)

    # --- actions (keys.KEYS binds them) ----------------------------------------------------

    def action_cursor_down(self) -> None:
        self.session_list.move(1)
        self._show_detail()

    def action_cursor_up(self) -> None:
        self.session_list.move(-1)
        self._show_detail()

    def action_top(self) -> None:
        self.session_list.cursor = 0
        self._show_detail()

    def action_bottom(self) -> None:
        self.session_list.cursor = len(self.session_list.items) - 1
        self._show_detail()

    def action_page_down(self) -> None:
        self.session_list.page(1)
        self._show_detail()

    def action_page_up(self) -> None:
        self.session_list.page(-1)
        self._show_detail()

    def action_toggle_detail(self) -> None:
        maximized = self.view is View.LIST
        self.set_class(maximized, "-maximized")
        (self.detail_pane if maximized else self.session_list).focus()
        self.refresh_bindings()

    def action_quit(self) -> None:
        """Quit (q in the list; in a sub-view q goes back instead), as the app's ctrl+q does:
        stop the reader thread first, so no file is read while exiting."""
        self.stop_loader()
        self.app.exit(0)

    def action_back(self) -> None:
        """From the full-screen detail back to the list (q, Esc)."""
        if self.view is View.DETAIL:
            self.action_toggle_detail()

    def action_column_right(self) -> None:
        self.session_list.scroll_columns(1)

    def action_column_left(self) -> None:
        self.session_list.scroll_columns(-1)

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self.rebuild()

    def action_toggle_grouped(self) -> None:
        self.grouped = not self.grouped
        self.rebuild()

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        if self.following:
            listing = self.session_list
            if listing.items:
                listing.cursor = len(listing.items) - 1
                self._show_detail()
            self._start_loader()
            self._wake.set()
        self._update_status()
        self.notify(
            "Following: new sessions are read and shown as they are recorded."
            if self.following
            else "Stopped following.",
            timeout=3,
        )

    def action_filter(self) -> None:
        def check(text: str) -> str | None:
            try:
                Filter.parse(text)
            except FilterError as error:
                return str(error)
            return None

        def apply(text: str | None) -> None:
            if text is None:
                return
            self.filter = Filter.parse(text)
            self.rebuild()

        self.app.push_screen(
            PromptScreen(
                "Filter sessions",
                value=self.filter.text,
                placeholder="e.g. example.com protocol:imap cause:wildcard-apex verdict:mismatch",
                help_text=FILTER_HELP,
                check=check,
            ),
            apply,
        )

    def action_find(self) -> None:
        def apply(text: str | None) -> None:
            if text:
                self.find_text = text
                self._find(1, include_current=True)

        self.app.push_screen(
            PromptScreen(
                "Find",
                value=self.find_text,
                placeholder="text anywhere in a line",
                help_text="n: next match, N: previous match",
            ),
            apply,
        )

    def action_find_next(self) -> None:
        self._find(1)

    def action_find_previous(self) -> None:
        self._find(-1)

    def _find(self, direction: int, include_current: bool = False) -> None:
        if not self.find_text:
            self.action_find()
            return
        position = self.session_list.find(self.find_text, direction, include_current)
        if position is None:
            self.notify(
                f"Nothing in the list contains “{printable(self.find_text)}”.",
                severity="warning",
                timeout=4,
                markup=False,
            )
            return
        self.session_list.cursor = position
        self._show_detail()

    def action_export(self) -> None:
        self._show_detail()
        if self.detail_pane.detail is None:
            self.notify(
                "No session is selected, so there is nothing to export.", severity="warning"
            )
            return
        d, recording = self.detail_pane.detail
        try:
            written = export_session(d, recording, self.export_dir)
        except OSError as error:
            self.notify(
                f"Could not write to {printable(str(self.export_dir.resolve()))}: "
                f"{shown_prose(str(error.strerror or error))}.",
                title="Export failed",
                severity="error",
                markup=False,
            )
            return
        self.app.copy_to_clipboard(session_json(d, recording))
        where = " and ".join(printable(str(p.resolve())) for p in written)
        self.notify(
            f"Wrote {where}. The JSON is also on the clipboard.",
            title=f"Exported session {printable(d.facts.id)}",
            timeout=8,
            markup=False,
        )

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())
