"""The certmatch TUI: failing sessions, why they fail, and the cause each rests on.

``run_view`` is what ``certmatch view`` calls; ``CertmatchApp`` is the app,
also usable on a recording a proxy is still writing (``follow=True``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from certmatch.core.diagnosis import Diagnosis, diagnose
from certmatch.core.recording import LineProblem, RecordingError, expand_paths
from certmatch.core.trust import TrustStore, TrustStoreError
from certmatch.tui.detail import render_detail
from certmatch.tui.export import export_session, session_json
from certmatch.tui.loader import Batch, Loader
from certmatch.tui.model import FILTER_HELP, Filter, FilterError, Group, Grouping, Row, select
from certmatch.tui.screens import HelpScreen, PromptScreen
from certmatch.tui.session_list import SessionList
from certmatch.tui.source import RecordingSource, read_session_at

EXIT_OK, EXIT_USAGE = 0, 2
MOVE = Binding.Group("Move", compact=True)


class BatchLoaded(Message):
    """The loader read more sessions."""

    def __init__(self, batch: Batch) -> None:
        super().__init__()
        self.batch = batch


class LoadPassFinished(Message):
    """The loader reached the end of every file (once per pass while following)."""


class LoaderFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class CertmatchApp(App[int]):
    """Browse recorded sessions: failing ones first, each explained with its cause."""

    TITLE = "certmatch"
    CSS = """
    #status {
        dock: top;
        height: 1;
        background: $primary-background;
        color: $text;
        padding: 0 1;
    }
    #detail {
        height: 45%;
        border-top: solid $accent;
        padding: 0 1;
    }
    Screen.-maximized SessionList { display: none; }
    Screen.-maximized #detail { height: 1fr; border-top: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "cursor_down", "Next session", key_display="j", group=MOVE),
        Binding("k,up", "cursor_up", "Previous session", key_display="k", group=MOVE),
        Binding("g,home", "top", "First session", key_display="g", group=MOVE),
        Binding("G,end", "bottom", "Last session", key_display="G", group=MOVE),
        Binding("pagedown", "page_down", "Page down", key_display="PgDn", group=MOVE),
        Binding("pageup", "page_up", "Page up", key_display="PgUp", group=MOVE),
        Binding("enter", "toggle_detail", "Detail"),
        Binding("f", "filter", "Filter"),
        Binding("slash", "find", "Find"),
        Binding("n", "find_next", "Next match"),
        Binding("N", "find_previous", "Prev match"),
        Binding("F", "toggle_follow", "Follow"),
        Binding("a", "toggle_all", "All/failing"),
        Binding("v", "toggle_grouped", "Grouped"),
        Binding("c", "export", "Export"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]
    # (keys as typed, what they do) for the help screen, in the order of BINDINGS.
    KEY_HELP: ClassVar[tuple[tuple[str, str], ...]] = (
        ("j / ↓", "next session"),
        ("k / ↑", "previous session"),
        ("g / Home", "first session"),
        ("G / End", "last session"),
        ("PgDn / PgUp", "a page down / up"),
        ("enter", "detail pane full screen, or back"),
        ("f", "filter by host, protocol, cause id, verdict"),
        ("/", "find text in the list"),
        ("n / N", "next / previous match of the find"),
        ("F", "follow on/off: read what is appended and jump to the newest session"),
        ("a", "show all sessions, or only the failing ones"),
        ("v", "grouped view: one line per requested host + certificate + cause, with a count"),
        ("c", "export the selected session: JSON and PEM chain to files, JSON to the clipboard"),
        ("?", "this help"),
        ("q", "quit"),
        ("ctrl+p", "command palette: the same actions by name"),
    )

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        store: TrustStore,
        follow: bool = False,
        show_all: bool = False,
        export_dir: str | Path = ".",
        poll_interval: float = 0.25,
    ) -> None:
        super().__init__()
        self.paths = [Path(p) for p in paths]
        self.store = store
        self.loader = Loader(self.paths, store)
        self.rows: list[Row] = []
        self.following = follow
        self.show_all = show_all
        self.grouped = False
        self.filter = Filter()
        self.export_dir = Path(export_dir)
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
        self._detail_key: tuple[int, int, int | None] | None = None
        self.detail: tuple[Diagnosis, str] | None = None
        # Kept here, not queried: loader messages can arrive while the screen closes.
        self._status = Static(id="status")
        self._list = SessionList(self.rows, id="sessions")
        self._detail_scroll = VerticalScroll(id="detail")
        self._detail_body = Static(id="detail-body")

    # --- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self._status
        yield self._list
        with self._detail_scroll:
            yield self._detail_body
        yield Footer(compact=True)

    @property
    def session_list(self) -> SessionList:
        return self._list

    def on_mount(self) -> None:
        self.session_list.focus()
        self.session_list.set_items(self._visible, grouped=False)
        self._show_detail()
        self._update_status()
        # Start reading once the empty screen is painted, so the first paint does not wait.
        self.call_after_refresh(self._start_loader)

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

    @on(BatchLoaded)
    def _add_batch(self, message: BatchLoaded) -> None:
        batch = message.batch
        self.progress = (batch.bytes_read, batch.bytes_total)
        self.problems += batch.problems
        for error in batch.errors:
            self.errors.append(error)
            self.notify(error, title="Cannot read a recording", severity="error", timeout=10)
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
                self.notify(f"{first}{more}", title="Lines skipped", severity="warning", timeout=8)
        self._update_status()

    @on(LoaderFailed)
    def _loader_failed(self, message: LoaderFailed) -> None:
        self.errors.append(message.error)
        self.notify(message.error, title="Reading stopped", severity="error", timeout=15)
        self._update_status()

    # --- the view --------------------------------------------------------------------------

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
            return f"No session matches the filter “{self.filter.text}”. Press f to change it."
        if not self.show_all:
            return f"None of the {len(self.rows):,} sessions fails. Press a to show all of them."
        return "Nothing to show."

    def _update_status(self) -> None:
        listing = self.session_list
        listing.empty_message = self._empty_message()
        names = ", ".join(p.name for p in self.paths)
        parts = [f"certmatch · {names}", f"{len(self.rows):,} sessions, {self.failing:,} failing"]
        shown = "all" if self.show_all else "failing"
        if self.grouped:
            parts.append(
                f"grouped ({shown}): {len(self._grouping):,} groups of {len(self._visible):,}"
            )
        else:
            parts.append(f"showing {shown}: {len(self._visible):,}")
        if not self.filter.empty:
            parts.append(f"filter: {self.filter.text}")
        if not self.initial_load_done:
            read, total = self.progress
            percent = 100 * read // total if total else 0
            parts.append(f"loading {percent}%")
        if self.following:
            waiting = (
                f" (waiting for {', '.join(self.loader.waiting)})" if self.loader.waiting else ""
            )
            parts.append("following" + waiting)
        if self.problems:
            parts.append(f"{len(self.problems):,} bad lines skipped")
        self._status.update(Text(" · ".join(parts), no_wrap=True, overflow="ellipsis"))
        if not listing.items:
            listing.refresh()

    # --- the detail pane -------------------------------------------------------------------

    @on(SessionList.Highlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    def _selected_row(self) -> tuple[Row, int | None] | None:
        item = self.session_list.current_item
        if item is None:
            return None
        if isinstance(item, Group):
            return self.rows[item.last], item.count
        return self.rows[item], None

    def _show_detail(self) -> None:
        body = self._detail_body
        selected = self._selected_row()
        if selected is None:
            self._detail_key = None
            self.detail = None
            body.update(
                Text(
                    "Select a session to see why it fails, the evidence and the fix.",
                    style="italic",
                )
            )
            return
        row, count = selected
        key = (row.source, row.offset, count)
        if key == self._detail_key:
            return
        path = self.loader.sources[row.source].path
        try:
            facts = read_session_at(path, row.offset)
        except RecordingError as error:
            body.update(Text(str(error), style="bold red"))
            self._detail_key = None
            self.detail = None
            return
        d = diagnose(facts, self.store)
        self._detail_key = key
        self.detail = (d, str(path))
        body.update(render_detail(d, str(path), group_count=count))
        self._detail_scroll.scroll_home(animate=False)

    # --- actions ---------------------------------------------------------------------------

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
        maximized = not self.screen.has_class("-maximized")
        self.screen.set_class(maximized, "-maximized")
        (self._detail_scroll if maximized else self.session_list).focus()

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

        self.push_screen(
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

        self.push_screen(
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
        listing = self.session_list
        count = len(listing.items)
        needle = self.find_text.lower()
        start = listing.cursor if include_current else listing.cursor + direction
        for step in range(count):
            position = (start + direction * step) % count
            if needle in listing.row_text(position):
                listing.cursor = position
                self._show_detail()
                return
        self.notify(
            f"Nothing in the list contains “{self.find_text}”.", severity="warning", timeout=4
        )

    def action_export(self) -> None:
        self._show_detail()
        if self.detail is None:
            self.notify(
                "No session is selected, so there is nothing to export.", severity="warning"
            )
            return
        d, recording = self.detail
        try:
            written = export_session(d, recording, self.export_dir)
        except OSError as error:
            self.notify(
                f"Could not write to {self.export_dir.resolve()}: {error.strerror or error}.",
                title="Export failed",
                severity="error",
            )
            return
        self.copy_to_clipboard(session_json(d, recording))
        where = " and ".join(str(p.resolve()) for p in written)
        self.notify(
            f"Wrote {where}. The JSON is also on the clipboard.",
            title=f"Exported session {d.facts.id}",
            timeout=8,
        )
        self.exported = written

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.KEY_HELP))

    def action_quit(self) -> None:  # type: ignore[override]
        self.workers.cancel_group(self, "loader")
        self._wake.set()
        self.exit(EXIT_OK)

    # --- command palette -------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Show all sessions / only failing",
            "Toggle between every session and the failing ones (a)",
            self.action_toggle_all,
        )
        yield SystemCommand(
            "Filter", "By host, protocol, cause id, verdict (f)", self.action_filter
        )
        yield SystemCommand("Find", "Find text in the list (/)", self.action_find)
        yield SystemCommand("Find next", "Next match of the find (n)", self.action_find_next)
        yield SystemCommand(
            "Find previous", "Previous match of the find (N)", self.action_find_previous
        )
        yield SystemCommand(
            "Follow on/off", "Read sessions as they are recorded (F)", self.action_toggle_follow
        )
        yield SystemCommand(
            "Grouped view on/off",
            "One line per host + certificate + cause (v)",
            self.action_toggle_grouped,
        )
        yield SystemCommand(
            "Export selected session", "JSON and PEM chain to files (c)", self.action_export
        )
        yield SystemCommand(
            "Detail full screen",
            "Show the detail pane alone, or back (enter)",
            self.action_toggle_detail,
        )
        yield SystemCommand("First session", "Go to the top (g)", self.action_top)
        yield SystemCommand("Last session", "Go to the bottom (G)", self.action_bottom)
        yield SystemCommand(
            "Help", "Every key, the filter syntax and the cause ids (?)", self.action_help
        )
        yield from super().get_system_commands(screen)


def run_view(
    paths: list[str],
    *,
    follow: bool,
    show_all: bool,
    ca_files: list[str],
    use_system_store: bool = True,
) -> int:
    """Open the TUI on recordings; returns the exit code. Input errors: one line on stderr, 2."""
    try:
        store = TrustStore.load(ca_files, use_system=use_system_store)
        files = expand_paths(paths)
        for path in files:
            RecordingSource(path).open_header()  # a clear error now, not inside the TUI
    except (RecordingError, TrustStoreError) as error:
        print(f"certmatch view: {error}", file=sys.stderr)
        return EXIT_USAGE
    app = CertmatchApp(files, store=store, follow=follow, show_all=show_all)
    result = app.run()
    return int(result or app.return_code or EXIT_OK)
