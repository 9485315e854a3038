"""The certmatch TUI: failing sessions, why they fail, and the cause each rests on.

``run_view`` is what ``certmatch view`` calls; ``CertmatchApp`` is the app,
also usable on a recording a proxy is still writing (``follow=True``). The app
only wires things together: ``SessionsScreen`` does the work, and the keys,
the help and the command palette come from the key table in ``keys``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from textual.app import App, SystemCommand
from textual.screen import Screen

from certmatch.core.recording import RecordingError, expand_paths
from certmatch.core.report import shown_prose
from certmatch.core.trust import TrustStore, TrustStoreError
from certmatch.tui import keys
from certmatch.tui.screens.sessions import SessionsScreen
from certmatch.tui.source import RecordingSource

EXIT_OK, EXIT_USAGE = 0, 2


class CertmatchApp(App[int]):
    """Browse recorded sessions: failing ones first, each explained with its cause."""

    TITLE = "certmatch"
    COMMAND_PALETTE_BINDING = keys.COMMAND_PALETTE

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
        self.sessions = SessionsScreen(
            [Path(p) for p in paths],
            store=store,
            follow=follow,
            show_all=show_all,
            export_dir=Path(export_dir),
            poll_interval=poll_interval,
        )

    def get_default_screen(self) -> Screen:
        return self.sessions

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        if isinstance(screen, SessionsScreen):
            yield from keys.system_commands(screen, screen.view)
        yield from super().get_system_commands(screen)

    def action_quit(self) -> None:  # type: ignore[override]
        """Quit (q, ctrl+q): stop the reader thread first, so no file is read while exiting."""
        self.sessions.stop_loader()
        self.exit(EXIT_OK)


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
        print(f"certmatch view: {shown_prose(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    app = CertmatchApp(files, store=store, follow=follow, show_all=show_all)
    result = app.run()
    return int(result or app.return_code or EXIT_OK)
