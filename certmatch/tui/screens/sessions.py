"""The main screen: the session list, the detail pane below it (or alone), the status line.

A reader thread (``Loader.poll`` in a worker) posts the sessions it reads as
``BatchLoaded`` messages; the screen adds them to the list as they come, so
the first rows show while a big recording is still being read.
"""

from __future__ import annotations

import bisect
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Static
from textual.worker import get_current_worker

from certmatch.core.judge import Judge
from certmatch.core.recording import LineProblem
from certmatch.core.report import shown_prose
from certmatch.core.text import counted, printable
from certmatch.core.trust import TrustStore
from certmatch.tui import keys
from certmatch.tui.detail_pane import NOTHING_SELECTED, DetailPane
from certmatch.tui.export import export_session, export_stem, session_json
from certmatch.tui.footer import KeyFooter
from certmatch.tui.keys import View
from certmatch.tui.loader import SKIPPED_EMPTY, Batch
from certmatch.tui.messages import (
    BatchLoaded,
    FindCounted,
    LoaderFailed,
    LoadPassFinished,
    SessionHighlighted,
)
from certmatch.tui.model import FILTER_HELP, Filter, FilterError, Group, Grouping, Row, select
from certmatch.tui.proxy_watch import EXIT_PROXY_STOPPED, LiveProxy, ProxyState
from certmatch.tui.reader import ReaderProcess
from certmatch.tui.screens.confirm import ConfirmScreen
from certmatch.tui.screens.help import HelpScreen
from certmatch.tui.screens.prompt import PromptScreen
from certmatch.tui.session_list import SessionList

_ACTIONS = {key.action: key for key in keys.keys_for(View.SESSIONS)}
_TAIL_SHOWN = 6  # lines of the proxy's log in its red banner
# Seconds between details of the newest session while the list moves with a fast recording:
# each is diagnosed, laid out and painted whole, and nobody reads more than one a second.
DETAIL_EVERY = 1.0
# Seconds between batches handed to the UI: each repaints the list and the status, so a fast
# recording's rows come a few times a second, not at every read, and the keys stay live. While
# following (after the first pass) twice a second: a repaint of the moving list takes the UI
# 10-20 ms, and a key pressed meanwhile waits for it.
BATCH_EVERY = 0.25
FOLLOW_BATCH_EVERY = 0.5


def _file_of(error: str) -> str:
    """The file a loader error is about: errors read ``path: ...`` or ``path:line: ...``."""
    where = error.partition(": ")[0]
    path, colon, line = where.rpartition(":")
    return path if colon and line.isdigit() else where


def proxy_banner(
    proxy: LiveProxy, state: ProxyState, *, width: int = 0, log_lines: int = _TAIL_SHOWN
) -> Text:
    """The proxy's line above the status: where it listens, the CA to trust, its log; or, once
    it stopped or reported an error, what happened, what it said, and what to do.

    Once it stopped, at most ``log_lines`` lines of its log, wrapped to ``width`` cells under
    their indent (when given), so that the banner's height is bounded and its last line, where
    the whole log is and that q quits, always shows."""
    text = Text()
    log = printable(str(proxy.log_path))
    if not state.running:
        text.append(
            f"✗ The proxy stopped ({_exit_text(state.exit_code)}): nothing more is recorded.",
            "bold",
        )
        if state.first_errors:
            text.append(" It reported:\n", "bold")
            lines = state.first_errors
            if state.last_error not in lines:
                lines = [*lines, "…", state.last_error]
            shown = _wrapped(lines, width)[: max(1, log_lines)]  # the first ones
        else:
            text.append(" The end of its log:\n", "bold")
            tail = state.tail[-max(1, log_lines) :] or ["(the log is empty)"]
            shown = _wrapped(tail, width)[-max(1, log_lines) :]  # the last ones
        for line in shown:
            text.append(f"{line}\n")
        if state.advice:
            text.append(f"{state.advice}\n", "bold")
        text.append(f"Its whole log: {log}. q quits.")
        return text
    if state.errors:
        count = "an error" if state.errors == 1 else f"{state.errors:,} errors"
        text.append(f"✗ The proxy reported {count} (it still runs): ", "bold")
        text.append(f"{state.last_error}\n")
        if state.advice:
            text.append(f"{state.advice}\n", "bold")
    if state.listening:
        text.append(f"● proxy listening on {state.listening}", "bold")
    else:
        text.append(f"◌ proxy starting ({proxy.mode_text}), not listening yet", "bold")
    if proxy.observe:
        text.append(f" · observe: clients check the server's own certificate · log {log}")
    else:
        text.append(f" · clients trust {printable(str(proxy.ca_cert))} · log {log}")
    if state.warning:
        text.append(f"\n⚠ {state.warning}")
    return text


def _wrapped(lines: list[str], width: int) -> list[str]:
    """Log lines indented by two, each wrapped to ``width`` under its own indent (all on one
    line each when ``width`` is 0)."""
    if not width:
        return [f"  {line}" for line in lines]
    return [
        part
        for line in lines
        for part in textwrap.wrap(
            line, width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False
        )
        or ["  "]
    ]


def _status_lines(parts: list[str], width: int) -> list[str]:
    """The status's parts joined by " · " on one line, or on two when the state does not fit
    in ``width``: whole parts on the first, the rest on the second (cut at its end with "…").
    The last part, the file names, alone takes no second line: it is cut with "…"."""
    line = " · ".join(parts)
    if len(" · ".join(parts[:-1])) <= width:
        return [line]
    first: list[str] = []
    for number, part in enumerate(parts):
        if len(" · ".join([*first, part])) > width and first:
            return [" · ".join(first), " · ".join(parts[number:])]
        first.append(part)
    return [line]  # one part alone is wider than the line: cut it


def _exit_text(code: int | None) -> str:
    """``exit 3``, or ``killed by SIGKILL`` for a process a signal ended."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


class SessionsScreen(Screen[None]):
    """Recorded sessions, failing ones first, and the selected one explained in detail."""

    DEFAULT_CSS = """
    SessionsScreen #top {
        dock: top;
        height: auto;
    }
    SessionsScreen #status {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        background: $primary-background;
        color: $text;
        padding: 0 1;
    }
    SessionsScreen #proxy {
        height: auto;
        max-height: 12;
        background: $primary-background;
        color: $text;
        padding: 0 1;
    }
    SessionsScreen #proxy.-failed {
        background: #b00020;  /* colours.ALERT_BACKGROUND */
        color: #ffffff;
    }
    SessionsScreen #detail {
        height: 1fr;
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
        proxy: LiveProxy | None = None,
        directories: Sequence[Path] = (),
        judge_for: Callable[[Path], Judge] | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        """``notes``: what the command has to say before reading (recordings it leaves out),
        shown as notes once the screen is up."""
        super().__init__()
        self.paths = paths
        self.judge = Judge(store)  # shared by the reader thread and the detail pane
        # Read and judged in a process of its own; forked now, before the UI starts threads.
        self.loader = ReaderProcess(
            paths,
            None if judge_for is not None else self.judge,
            judge_for=judge_for,
            directories=directories,
            follow=follow,
            poll_interval=poll_interval,
        )
        self.rows: list[Row] = []
        self.following = follow
        self.show_all = show_all
        self.grouped = False
        self.filter = Filter()
        self.export_dir = export_dir
        self.poll_interval = poll_interval
        self.proxy = proxy
        self.proxy_state: ProxyState | None = None
        self.problems: list[LineProblem] = []
        self.errors: list[str] = []
        self.unreadable: list[str] = []  # files that are not recordings, or failed reading
        self.notes: list[str] = []  # files skipped, rotated, truncated
        self._first_notes = list(notes)
        self.failing = 0
        self.initial_load_done = False
        self._row_before_grouping: int | None = None  # the session selected when v grouped
        self.progress = (0, 0)
        self.last_filter_seconds = 0.0
        self.find_text = ""
        self.new_sessions = 0  # shown below the cursor while following, not yet looked at
        self._find_matches: list[int] | None = None  # positions in the list; None: counting
        self._find_generation = 0
        self._visible: list[int] = []
        self._grouping = Grouping()
        self._test = self.filter.predicate(show_all)
        self._receiving = False
        self._batch_taken = threading.Event()  # the UI took the last batch posted
        self._batch_taken.set()
        self._loading = False  # a pass is under way (or follow is on)
        self._tail_moved_to = -1  # where follow last moved the cursor
        self._detail_timer: Timer | None = None
        # Kept here, not queried: loader messages can arrive while the screen closes.
        self._status = Static(id="status")
        self._proxy_line = Static(id="proxy")
        self.session_list = SessionList(self.rows, id="sessions")
        self.detail_pane = DetailPane(self.loader.judge_of, id="detail")

    def compose(self) -> ComposeResult:
        with Vertical(id="top"):
            if self.proxy is not None:
                yield self._proxy_line
            yield self._status
        yield self.session_list
        yield self.detail_pane
        yield KeyFooter()

    def on_mount(self) -> None:
        self.session_list.focus()
        self.session_list.set_items(self._visible, grouped=False)
        self._show_detail()
        if self.proxy is not None:
            self._watch_proxy()
            self.set_interval(0.25, self._watch_proxy)
        for note in self._first_notes:
            self._note(note)
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

    # --- the proxy -------------------------------------------------------------------------

    def _watch_proxy(self) -> None:
        """Poll the proxy (every 0.25 s): a stop or an error turns its line into a red banner."""
        assert self.proxy is not None
        if (signum := self.proxy.stop_signal()) is not None:
            self.app.exit(128 + signum)  # SIGTERM or SIGHUP to `certmatch proxy --tui`
            return
        before = self.proxy_state
        seen = (before.running, before.errors, before.listening, before.warning) if before else None
        state = self.proxy.check()
        self.proxy_state = state
        if seen == (state.running, state.errors, state.listening, state.warning):
            return
        self._show_banner()
        self._proxy_line.set_class(state.failed, "-failed")
        self._update_status()

    def _show_banner(self) -> None:
        """The proxy's banner, its log lines fitted to the screen: at 80x24 a dead proxy's
        banner once took half the screen and lost its last line."""
        if self.proxy is None or self.proxy_state is None:
            return
        width, height = self.size
        banner = proxy_banner(
            self.proxy,
            self.proxy_state,
            width=max(20, width - 2),  # the banner's padding
            log_lines=max(2, min(_TAIL_SHOWN, height // 4)),
        )
        self._proxy_line.update(banner)

    def on_resize(self) -> None:
        self._show_banner()
        self._update_status()

    @property
    def proxy_running(self) -> bool:
        return self.proxy is not None and (self.proxy_state is None or self.proxy_state.running)

    @property
    def proxy_stopped(self) -> bool:
        """A proxy was watched and it stopped: nothing more is recorded."""
        return self.proxy is not None and not self.proxy_running

    # --- loading ---------------------------------------------------------------------------

    def _start_loader(self) -> None:
        if not self._receiving:
            self._receiving = True
            self._loading = True
            self._receive()

    @work(thread=True, exclusive=True, group="loader", exit_on_error=False)
    def _receive(self) -> None:
        """Turn the reader process's messages into the screen's (in a thread: receiving
        blocks; unpacking a batch is cheap next to reading and judging it)."""
        worker = get_current_worker()
        pending: Batch | None = None  # received, not yet handed to the UI
        posted = 0.0  # when the last batch was
        try:
            while not worker.is_cancelled:
                every = FOLLOW_BATCH_EVERY if self.initial_load_done else BATCH_EVERY
                if (
                    pending is not None
                    and self._batch_taken.is_set()
                    and time.monotonic() - posted >= every
                ):
                    self._batch_taken.clear()
                    self.post_message(BatchLoaded(pending))
                    pending, posted = None, time.monotonic()
                if pending is not None and not self.loader.wait(0.02):
                    continue  # the UI is still busy with the last batch, or had one just now
                kind, content = self.loader.receive()
                if kind == "batch":
                    # One batch at a time goes to the UI; what arrives while it is busy with
                    # the last one joins the next, so a busy UI gets fewer, bigger batches.
                    assert isinstance(content, Batch)
                    pending = content if pending is None else pending.extend(content)
                    continue
                if pending is not None and not (kind == "pass" and self.initial_load_done):
                    # The first pass's end shows at once what it read; a followed file's
                    # passes (every poll) wait for the next batch's turn.
                    self._batch_taken.clear()
                    self.post_message(BatchLoaded(pending))
                    pending = None
                if kind == "pass":
                    self.post_message(LoadPassFinished())
                elif kind == "failed":
                    self.post_message(LoaderFailed(str(content)))
                    break
                else:
                    break  # the reader stopped
        finally:
            self._receiving = False

    def stop_loader(self) -> None:
        """Stop the reader process and the thread that receives from it."""
        self.workers.cancel_group(self, "find")
        self.workers.cancel_group(self, "loader")
        self.loader.stop()

    def on_unmount(self) -> None:
        self.loader.stop()

    @on(BatchLoaded)
    def _add_batch(self, message: BatchLoaded) -> None:
        try:
            self._add_rows(message.batch)
        finally:
            self._batch_taken.set()

    def _add_rows(self, batch: Batch) -> None:
        self.progress = (batch.bytes_read, batch.bytes_total)
        self.problems += batch.problems
        for error in batch.errors:
            self.errors.append(error)
            self.unreadable.append(_file_of(error))
            self.notify(
                shown_prose(error),
                title="Cannot read a recording",
                severity="error",
                timeout=10,
                markup=False,
            )
        for note in batch.notes:
            self._note(note)
        if batch.rows:
            start = len(self.rows)
            self.rows.extend(batch.rows)
            self.failing += sum(1 for row in batch.rows if row.judgement.failed)
            new = select(self.rows, self._test, start)
            listing = self.session_list
            tail = False
            if self.grouped:
                self._grouping.add(self.rows, new)
                self._visible.extend(new)
                self._show_groups()
            else:
                first_new = len(listing.items)
                tail = self._tailing() and bool(new)
                listing.append_items(new)  # extends self._visible, the list's items
                self._count_new_matches(first_new)
                if tail:
                    # The first session shows at once; later ones at most every DETAIL_EVERY.
                    self._tail_moved_to = len(listing.items) - 1 if first_new else -1
                    listing.cursor = len(listing.items) - 1
                elif self.following and self.initial_load_done:
                    self.new_sessions += len(new)
            if start == 0:
                # The first rows are painted before the first detail is diagnosed (the first
                # diagnosis loads what judging needs, which takes a while).
                self.call_after_refresh(self._show_detail)
            elif not tail:
                self._show_detail()
        self._update_status()

    def _note(self, note: str) -> None:
        self.notes.append(note)
        self.notify(shown_prose(note), title="Note", timeout=8, markup=False)

    def _show_detail_soon(self) -> None:
        """The detail of the newest session, at most every ``DETAIL_EVERY`` seconds while
        the list moves with a fast recording: diagnosing and laying out each one would keep
        the UI from the keys."""
        if self._detail_timer is None:

            def show() -> None:
                self._detail_timer = None
                self._show_detail()

            self._detail_timer = self.set_timer(DETAIL_EVERY, show)

    def _tailing(self) -> bool:
        """While following, the list moves with the newest session only while nobody reads
        one: the cursor is on the last session, in the split view, its detail not scrolled."""
        return (
            self.following
            and self.session_list.at_end()
            and self.view is View.LIST
            and self.detail_pane.scroll_y == 0
        )

    @on(LoadPassFinished)
    def _pass_finished(self) -> None:
        if self.initial_load_done and self._loading == self.following:
            return  # another pass of a followed file: nothing to show (its rows are batches)
        self._loading = self.following
        if not self.initial_load_done:
            self.initial_load_done = True
            if len(self.loader.names()) > 1:
                self._in_time_order()
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

    def _in_time_order(self) -> None:
        """Sessions of several files, read file by file, put in time order (once loaded)."""
        listing = self.session_list
        item = listing.current_item
        # The cursor stays on the session it was moved to while loading; one nobody moved
        # stays on top, on the earliest session.
        current = self.rows[item] if isinstance(item, int) and listing.cursor > 0 else None
        self.rows.sort(key=attrgetter("time"))  # in place: the list shares it; stable
        self._row_before_grouping = None
        # The list's row numbers are stale now: the cursor is put back by the session it was
        # on, or on top.
        listing.set_reactive(SessionList.cursor, 0)
        self.rebuild(keep=False)
        if current is not None and not self.grouped:
            position = next(i for i, row in enumerate(self.rows) if row is current)
            at = bisect.bisect_left(self._visible, position)
            if at < len(self._visible) and self._visible[at] == position:
                listing.cursor = at
                self._show_detail()

    # --- the list --------------------------------------------------------------------------

    def rebuild(self, *, keep: bool = True) -> None:
        """Recompute what the list shows after the filter, all/failing or grouping changed;
        the cursor stays on its session (or group) if ``keep``, else where it is."""
        started = time.perf_counter()
        listing = self.session_list
        kept = listing.current_item if keep else None
        self._test = self.filter.predicate(self.show_all)
        self._visible = select(self.rows, self._test)
        grouped_before = self._grouping
        self._grouping = Grouping()
        if self.grouped:
            self._grouping.add(self.rows, self._visible)
            if isinstance(kept, int):  # from the sessions: the group of the one selected
                self._row_before_grouping = kept
                kept = self._grouping.group_of(self.rows[kept])
            self._show_groups(kept if isinstance(kept, Group) else None)
        else:
            row = kept.last if isinstance(kept, Group) else kept
            before = self._row_before_grouping
            if (
                isinstance(kept, Group)
                and before is not None
                and before < len(self.rows)
                and grouped_before.group_of(self.rows[before]) is kept
            ):
                row = before  # back on the session selected before grouping
            listing.set_items(self._visible, grouped=False, keep=row)
        self.last_filter_seconds = time.perf_counter() - started
        self.new_sessions = 0
        self._count_matches()
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
        self._count_matches()

    def _empty_message(self) -> str:
        if not self.initial_load_done:
            return "Loading…"
        if not self.rows:
            if self.proxy_state is not None and not self.proxy_state.running:
                return "No sessions recorded: the proxy is not running (see the red banner)."
            return "No sessions recorded yet." + (
                " Following: new sessions appear here." if self.following else ""
            )
        if not self.filter.empty:
            hidden = ""
            if not self.show_all:
                test = self.filter.predicate(True)
                if any(test(row) for row in self.rows):
                    hidden = " Sessions that do not fail match it: press a to show all sessions."
            return (
                f"No {'' if self.show_all else 'failing '}session matches the filter "
                f"“{printable(self.filter.text)}”.{hidden} Press f to change it."
            )
        if not self.show_all:
            if len(self.rows) == 1:
                return "The one session does not fail. Press a to show it."
            return f"None of the {len(self.rows):,} sessions fails. Press a to show all of them."
        return "Nothing to show."

    def _update_status(self) -> None:
        """Counts, loading, follow state, find and bad lines first; then the filter as typed;
        the file names last. A narrow terminal cuts the line at its end, with "…"."""
        listing = self.session_list
        listing.empty_message = self._empty_message()
        parts = [f"{counted(len(self.rows), 'session')}, {self.failing:,} failing"]
        shown = "all" if self.show_all else "failing"
        if self.grouped:
            parts.append(
                f"grouped ({shown}): {counted(len(self._grouping), 'group')} of "
                f"{len(self._visible):,}"
            )
        else:
            parts.append(f"showing {shown}: {len(self._visible):,}")
        if not self.initial_load_done:
            read, total = self.progress
            percent = 100 * read // total if total else 0
            parts.append(f"loading {percent}%")
        if self.proxy_stopped:
            parts.append("proxy stopped: no more sessions")
        elif self.proxy is not None and not self.following:
            parts.append("not following: the proxy records on (F)")
        if self.following:
            # The file is still read, but nothing more comes once its proxy stopped.
            following = "" if self.proxy_stopped else "following"
            if self.new_sessions:
                following += f" +{self.new_sessions:,} new (G: newest)"
            if self.loader.waiting and not self.proxy_stopped:
                waiting = ", ".join(Path(name).name for name in self.loader.waiting)
                following += f" (waiting for {printable(waiting)})"
            if following.strip():
                parts.append(following.strip())
        if self.find_text:
            parts.append(f"find “{printable(self.find_text)}” {self.find_position()}")
        if self.problems:
            parts.append(f"{counted(len(self.problems), 'bad line')} skipped")
        if skipped := sum(1 for note in self.notes if note.endswith(SKIPPED_EMPTY)):
            parts.append(f"{counted(skipped, 'empty file')} skipped")
        if self.unreadable:
            unreadable = self.unreadable
            one = len(unreadable) == 1
            what = Path(unreadable[0]).name if one else counted(len(unreadable), "file")
            parts.append(f"{printable(what)} not read")
        # The filter as typed can be long: after the state it does not tell.
        if not self.filter.empty:
            parts.append(f"filter: {printable(self.filter.text)}")
        names = [Path(name).name for name in self.loader.names()]
        parts.append(
            printable(names[0])
            if len(names) == 1
            else f"{len(names)} files: {printable(', '.join(names))}"
        )
        # One line, or two when the state does not fit in one (at 80 columns: following,
        # +N new, a find and a filter); the file names may be cut, with "…". The height
        # changes only then: a layout measures the whole detail again.
        lines = _status_lines(parts, max(20, self.size.width - 2))  # the status's padding
        height = len(lines)
        if self._status.styles.height is None or self._status.styles.height.value != height:
            self._status.styles.height = height
        self._status.update(Text("\n".join(lines), no_wrap=True, overflow="ellipsis"), layout=False)
        if not listing.items:
            listing.refresh()
            if self.detail_pane.detail is None:
                self._show_detail()  # the empty list's reason changes with the load, the proxy

    # --- find ------------------------------------------------------------------------------

    def find_position(self) -> str:
        """``k/n``: which match the cursor is on, of how many (``–/n`` off a match)."""
        matches = self._find_matches
        if matches is None:
            return "(counting…)"
        cursor = self.session_list.cursor
        at = bisect.bisect_left(matches, cursor)
        k = str(at + 1) if at < len(matches) and matches[at] == cursor else "–"
        return f"{k}/{len(matches):,}"

    def _count_matches(self) -> None:
        """Count the find's matches in the whole list, in a thread: a million lines take
        seconds, and the keys stay live meanwhile."""
        self._find_generation += 1
        self.session_list.find_text = self.find_text
        self.session_list.refresh()
        if not self.find_text:
            self._find_matches = []
            return
        self._find_matches = None
        self._count_in_thread(self.find_text, self._find_generation, len(self.session_list.items))

    @work(thread=True, exclusive=True, group="find", exit_on_error=False)
    def _count_in_thread(self, text: str, generation: int, count: int) -> None:
        worker = get_current_worker()
        listing = self.session_list
        needle = text.lower()
        found: list[int] = []
        for position in range(count):
            if position % 4096 == 0 and (
                worker.is_cancelled or generation != self._find_generation
            ):
                return
            if needle in listing.row_text(position):
                found.append(position)
        self.post_message(FindCounted(generation, count, found))

    @on(FindCounted)
    def _find_counted(self, message: FindCounted) -> None:
        if message.generation != self._find_generation:
            return
        self._find_matches = message.positions
        self._count_new_matches(message.upto)
        self._update_status()

    def _count_new_matches(self, start: int) -> None:
        """Add the matches among the list's items from ``start`` on (appended by follow)."""
        if self._find_matches is None or not self.find_text or self.session_list.grouped:
            return
        listing = self.session_list
        needle = self.find_text.lower()
        done = self._find_matches[-1] + 1 if self._find_matches else 0
        for position in range(max(start, done), len(listing.items)):
            if needle in listing.row_text(position):
                self._find_matches.append(position)

    # --- the detail pane -------------------------------------------------------------------

    @on(SessionHighlighted)
    def _highlighted(self, message: SessionHighlighted) -> None:
        if self.session_list.at_end():
            self.new_sessions = 0
        if message.index == self._tail_moved_to:  # moved by follow, not by a key
            self._show_detail_soon()
        else:
            self._tail_moved_to = -1
            self._show_detail()
        if self.find_text or self.following:
            self._update_status()

    def _show_detail(self) -> None:
        item = self.session_list.current_item
        if item is None:
            loaded_empty = self.initial_load_done and not self.session_list.items
            self.detail_pane.show_nothing(
                "No session is listed, so there is nothing to explain: "
                + shown_prose(self._empty_message())
                if loaded_empty
                else NOTHING_SELECTED
            )
            return
        count: int | None
        if isinstance(item, Group):
            row, count = self.rows[item.last], item.count
        else:
            row, count = self.rows[item], None
        self.detail_pane.show(self.loader.sources[row.source], row.offset, count, row)

    # --- actions (keys.KEYS binds them) ----------------------------------------------------

    def action_cursor_down(self) -> None:
        self.session_list.move(1)
        self._show_detail()

    def action_cursor_up(self) -> None:
        self.session_list.move(-1)
        self._show_detail()

    def action_next_session(self) -> None:
        self.action_cursor_down()

    def action_previous_session(self) -> None:
        self.action_cursor_up()

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

    def action_detail_line_down(self) -> None:
        self.detail_pane.scroll_relative(y=1, animate=False)

    def action_detail_line_up(self) -> None:
        self.detail_pane.scroll_relative(y=-1, animate=False)

    def action_detail_page_down(self) -> None:
        self.detail_pane.scroll_page_down(animate=False)

    def action_detail_page_up(self) -> None:
        self.detail_pane.scroll_page_up(animate=False)

    def action_page_detail_down(self) -> None:
        self.detail_pane.scroll_page_down(animate=False)

    def action_page_detail_up(self) -> None:
        self.detail_pane.scroll_page_up(animate=False)

    def action_half_page_detail_down(self) -> None:
        self.detail_pane.scroll_relative(y=max(1, self.detail_pane.size.height // 2), animate=False)

    def action_half_page_detail_up(self) -> None:
        self.detail_pane.scroll_relative(
            y=-max(1, self.detail_pane.size.height // 2), animate=False
        )

    def action_detail_top(self) -> None:
        self.detail_pane.scroll_home(animate=False)

    def action_detail_end(self) -> None:
        self.detail_pane.scroll_end(animate=False)

    def action_toggle_detail(self) -> None:
        maximized = self.view is View.LIST
        self.set_class(maximized, "-maximized")
        (self.detail_pane if maximized else self.session_list).focus()
        self.refresh_bindings()

    def action_quit(self) -> None:
        """Quit (q in the list; in a sub-view q goes back instead), as the app's ctrl+q does.
        While a proxy records, ask first: quitting stops it."""
        if not self.proxy_running:
            self.quit_now()
            return
        assert self.proxy is not None
        listening = self.proxy_state.listening if self.proxy_state else ""
        where = f" on {listening}" if listening else ""

        def answered(yes: bool | None) -> None:
            if yes:
                self.quit_now()

        self.app.push_screen(
            ConfirmScreen(
                "Quit, and stop the proxy?",
                f"The proxy{where} is recording to {printable(self.loader.names()[0])}. "
                "Quitting stops it: clients connected through it lose their connection, and "
                "nothing more is recorded.",
            ),
            answered,
        )

    def quit_now(self) -> None:
        """Stop the reader thread first, so no file is read while exiting; then exit (not 0
        if the proxy had stopped by itself: the recording ended early)."""
        self.stop_loader()
        self.app.exit(EXIT_PROXY_STOPPED if self.proxy_stopped else 0)

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
        self.new_sessions = 0
        if self.following:
            listing = self.session_list
            if listing.items:
                listing.cursor = len(listing.items) - 1
                self._show_detail()
            self._loading = True
        self.loader.follow(self.following)
        self._update_status()
        if self.following and self.proxy_stopped:
            message = "Following, but the proxy has stopped: no new session will come."
        elif self.following:
            message = "Following: new sessions are read and shown as they are recorded."
        elif self.proxy_running:
            message = "Stopped following: the proxy still records; F shows what it records."
        else:
            message = "Stopped following."
        self.notify(message, timeout=3)

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
                placeholder="e.g. example.com protocol:imap cause:wildcard verdict:!match",
                help_text=FILTER_HELP,
                check=check,
            ),
            apply,
        )

    def action_find(self) -> None:
        def apply(text: str | None) -> None:
            if text is None:
                return
            self.find_text = text
            self._count_matches()
            if text:
                self._find(1, include_current=True)
            self._update_status()

        self.app.push_screen(
            PromptScreen(
                "Find",
                value=self.find_text,
                placeholder="text anywhere in a line",
                help_text="n: next match, N: previous match; empty: stop highlighting",
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
        matches = self._find_matches
        position: int | None
        if matches is not None and not listing.grouped:
            position = _next_match(matches, listing.cursor, direction, include_current)
        else:
            position = listing.find(self.find_text, direction, include_current)
        if position is None:
            self.notify(
                f"Nothing in the list contains “{printable(self.find_text)}”.",
                severity="warning",
                timeout=4,
                markup=False,
            )
            return
        listing.cursor = position
        self._show_detail()
        self._update_status()

    def action_export(self) -> None:
        """Ask where (the last directory, at first the one given), then write the session's
        JSON and PEM chain there and copy the JSON to the clipboard."""
        self._show_detail()
        if self.detail_pane.detail is None:
            self.notify(
                "No session is selected, so there is nothing to export.", severity="warning"
            )
            return
        d, recording = self.detail_pane.detail
        stem = export_stem(d.facts.id)

        def folder(text: str) -> Path:
            return Path(text.strip() or ".").expanduser()

        def check(text: str) -> str | None:
            if folder(text).exists() and not folder(text).is_dir():
                return f"{text.strip()} is a file, not a directory: give a directory to write to"
            return None

        def write(text: str | None) -> None:
            if text is None:
                return
            self.export_dir = folder(text)
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
            names = " and ".join(printable(p.name) for p in written)
            self.notify(
                f"{names} in {printable(str(written[0].parent.resolve()))}; the JSON is also "
                "on the clipboard.",
                title="Exported",
                timeout=5,
                markup=False,
            )

        self.app.push_screen(
            PromptScreen(
                f"Export session {printable(d.facts.id)} to the directory",
                value=str(self.export_dir.resolve()),
                help_text=(
                    f"Enter writes {stem}.json (the diagnosis, as check --json shows it) and "
                    f"{stem}.chain.pem there, readable by you only, and copies the JSON to the "
                    "clipboard. A directory that does not exist is made. Esc: no export."
                ),
                check=check,
            ),
            write,
        )

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())


def _next_match(
    matches: list[int], cursor: int, direction: int, include_current: bool
) -> int | None:
    """The match after (1) or before (-1) ``cursor`` in the sorted ``matches``, wrapping."""
    if not matches:
        return None
    if direction > 0:
        at = (
            bisect.bisect_left(matches, cursor)
            if include_current
            else bisect.bisect_right(matches, cursor)
        )
        return matches[at % len(matches)]
    at = (
        bisect.bisect_right(matches, cursor)
        if include_current
        else bisect.bisect_left(matches, cursor)
    )
    return matches[(at - 1) % len(matches)]
