"""The certmatch TUI: failing sessions, why they fail, and the cause each rests on.

``run_view`` is what ``certmatch view`` calls; ``CertmatchApp`` is the app,
also usable on a recording a proxy is still writing (``follow=True``), and on the
proxy itself (``proxy=LiveProxy(...)``: ``certmatch proxy --tui``). The app
only wires things together: ``SessionsScreen`` does the work, and the keys,
the help and the command palette come from the key table in ``keys``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from textual.app import App, SystemCommand
from textual.filter import Monochrome, NoColor
from textual.screen import Screen

from certmatch.core.judge import Judge
from certmatch.core.recording import RecordingError, expand_paths
from certmatch.core.report import shown_prose
from certmatch.core.trust import TrustStore, TrustStoreError
from certmatch.tui import keys
from certmatch.tui.proxy_watch import LiveProxy
from certmatch.tui.screens.confirm import ConfirmScreen
from certmatch.tui.screens.sessions import SessionsScreen
from certmatch.tui.source import RecordingSource

EXIT_OK, EXIT_USAGE = 0, 2


def wants_mono(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """No colour at all: ``NO_COLOR`` is set (https://no-color.org), or the terminal is
    ``dumb``. Emphasis then comes from bold and reverse video."""
    return "NO_COLOR" in environ or environ.get("TERM") == "dumb"


class CertmatchApp(App[int]):
    """Browse recorded sessions: failing ones first, each explained with its cause."""

    TITLE = "certmatch"
    COMMAND_PALETTE_BINDING = keys.COMMAND_PALETTE
    CSS = """
    App.-mono SessionList > .session-list--cursor { text-style: reverse bold; }
    App.-mono SessionList:focus > .session-list--cursor { text-style: reverse bold; }
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        store: TrustStore,
        follow: bool = False,
        show_all: bool = False,
        export_dir: str | Path = ".",
        poll_interval: float = 0.25,
        proxy: LiveProxy | None = None,
        directories: Sequence[str | Path] = (),
        judge_for: Callable[[Path], Judge] | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.mono = wants_mono()
        if self.mono:
            # Textual's NO_COLOR greys every colour (dark grey on black is unreadable); the
            # terminal's own colours with bold and reverse stay readable on any terminal.
            self._filters = [f for f in self._filters if not isinstance(f, Monochrome)]
            self._filters.append(NoColor())
            self.add_class("-mono")
        self.sessions = SessionsScreen(
            [Path(p) for p in paths],
            store=store,
            follow=follow,
            show_all=show_all,
            export_dir=Path(export_dir),
            poll_interval=poll_interval,
            proxy=proxy,
            directories=[Path(d) for d in directories],
            judge_for=judge_for,
            notes=notes,
        )

    def get_default_screen(self) -> Screen:
        return self.sessions

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """certmatch's actions, and of Textual's own only Quit (which asks first while a proxy
        records): its Keys panel, Maximize, Theme and Screenshot broke the layout, the
        contrast or the live status, and no key or help mentions them."""
        if isinstance(screen, SessionsScreen):
            yield from keys.system_commands(screen, screen.view)
        for command in super().get_system_commands(screen):
            if command.title == "Quit":
                yield command

    def action_quit(self) -> None:  # type: ignore[override]
        """Quit (ctrl+q) as q does in the list: while a proxy records, ask first (a second
        ctrl+q while asked quits)."""
        if isinstance(self.screen, ConfirmScreen):
            self.sessions.quit_now()
        else:
            self.sessions.action_quit()


def recordings_to_view(paths: Sequence[str], *, follow: bool) -> tuple[list[Path], list[Path]]:
    """The files to read and the directories to watch for new ones (when following); each
    file that is there already is checked now, so that a wrong one is a clear error before the
    TUI starts. RecordingError says what is wrong.

    Without ``follow``, as ``certmatch check``: every path must exist, and an empty file found
    in a directory is skipped (with a note in the TUI). With it, a file that does not exist
    yet or is still empty is waited for (the viewer may start before the proxy), as is an
    empty directory; a missing directory is still an error."""
    if follow:
        files, directories = _followed(paths)
    else:
        files, directories = expand_paths(paths), []
    named = {Path(p).resolve() for p in paths if not Path(p).is_dir()}
    errors: list[RecordingError] = []
    readable = 0  # or waited for
    for path in files:
        source = RecordingSource(path)
        if follow and (not path.exists() or source.is_empty()):
            readable += 1
            continue  # waited for
        if source.is_empty() and path.resolve() not in named:
            continue  # an empty file in a directory: skipped with a note
        try:
            source.open_header()
            readable += 1
        except RecordingError as error:  # shown in the TUI beside the others, as check does
            errors.append(error)
        finally:
            source.close()
    if errors and not readable and not directories:
        raise NothingToView(errors)
    return files, directories


class NothingToView(RecordingError):
    """Every recording given is unreadable: ``errors`` says why, one per file."""

    def __init__(self, errors: Sequence[RecordingError]) -> None:
        first = errors[0]
        super().__init__(first.path, first.message, first.line)
        self.errors = list(errors)


def _followed(paths: Sequence[str]) -> tuple[list[Path], list[Path]]:
    files: list[Path] = []
    directories: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            directories.append(path)
            files += sorted(p for p in path.glob("*.jsonl") if p.is_file())
        elif path.exists() or path.parent.is_dir():
            files.append(path)  # maybe not written yet
        else:
            raise RecordingError(
                path, f"no such directory {path.parent} to wait for the recording in"
            )
    return list({file.resolve(): file for file in files}.values()), directories


def run_view(
    paths: list[str],
    *,
    follow: bool,
    show_all: bool,
    ca_files: list[str],
    use_system_store: bool = True,
    proxy: LiveProxy | None = None,
    judge_for: Callable[[Path], Judge] | None = None,
    notes: Sequence[str] = (),
) -> int:
    """Open the TUI on recordings; returns the exit code. Input errors: one line on stderr, 2.

    ``proxy``: the live proxy that writes the recording (``certmatch proxy --tui``), watched
    and shown in the status. ``judge_for(path)``: the judge for one file's sessions (its
    header's CAs), instead of one judge for all built from ``ca_files``. ``notes``: shown in
    the TUI as it opens (recordings in subdirectories that are not read)."""
    try:
        store = TrustStore.load(ca_files, use_system=use_system_store)
        files, directories = recordings_to_view(paths, follow=follow)
    except (RecordingError, TrustStoreError) as error:
        for each in error.errors if isinstance(error, NothingToView) else [error]:
            print(f"certmatch view: {shown_prose(str(each))}", file=sys.stderr)
        return EXIT_USAGE
    if not files and not directories:
        print("certmatch view: no recording to show", file=sys.stderr)
        return EXIT_USAGE
    app = CertmatchApp(
        files,
        store=store,
        follow=follow,
        show_all=show_all,
        proxy=proxy,
        directories=directories,
        judge_for=judge_for,
        notes=notes,
    )
    result = app.run()
    return int(result or app.return_code or EXIT_OK)
