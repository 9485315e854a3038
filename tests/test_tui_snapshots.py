"""SVG snapshots of the TUI (pytest-textual-snapshot): the list, the grouped view, and the
detail pane for several causes, from the fixed recording in tests/data/tui/.

After a deliberate change of the layout, review and accept with:
    .venv/bin/pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from certmatch.core.trust import TrustStore
from certmatch.tui.app import CertmatchApp
from certmatch.tui.model import Filter

pytestmark = pytest.mark.pure

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path("tests/data/tui/sample.jsonl")  # relative, so the path shown is the same everywhere
SIZE = (150, 44)
NEWCOMER = (80, 24)  # what a newcomer sees without pressing a key
RECORDINGS = Path("recordings")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _app(**options) -> CertmatchApp:
    # Relative (the test runs in the repo), so the store's description is the same in any clone.
    store = TrustStore.load([Path("tests/data/tui/root.pem")], use_system=False)
    return CertmatchApp([SAMPLE], store=store, **options)


def _recordings_app(*names: str) -> CertmatchApp:
    store = TrustStore.load([RECORDINGS / "ca.pem"], use_system=False)
    paths = [RECORDINGS / f"{name}.jsonl" for name in names]
    return CertmatchApp(paths, store=store, show_all=True)


def _loaded_then(filter_text: str = "", *keys: str):
    async def run_before(pilot) -> None:
        app = pilot.app
        deadline = time.monotonic() + 15
        while not app.sessions.initial_load_done:
            assert time.monotonic() < deadline, "the sample recording did not load"
            await pilot.pause(0.02)
        if filter_text:
            app.sessions.filter = Filter.parse(filter_text)
            app.sessions.rebuild()
        if keys:
            await pilot.press(*keys)
        await pilot.pause()

    return run_before


def test_list_of_failing_sessions(snap_compare) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, run_before=_loaded_then())


def test_list_of_all_sessions_scrolled_right(snap_compare) -> None:
    assert snap_compare(
        _app(show_all=True), terminal_size=(100, 30), run_before=_loaded_then("", "G", "right")
    )


def test_grouped_view(snap_compare) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, run_before=_loaded_then("", "v"))


@pytest.mark.parametrize(
    "cause",
    [
        "name-not-in-certificate",
        "wildcard-too-deep",
        "cn-only-legacy",
        "no-sni-default-certificate",
        "expired",
        "missing-intermediate",
    ],
)
def test_detail_pane(snap_compare, cause: str) -> None:
    assert snap_compare(
        _app(), terminal_size=SIZE, run_before=_loaded_then(f"cause:{cause}", "enter")
    )


def test_newcomer_list_and_detail_at_80x24(snap_compare) -> None:
    """Without a key pressed: verdict, host, cause and names in the list; the detail's
    headline (verdict, cause, what was asked, the names side by side) below it."""
    assert snap_compare(_app(), terminal_size=NEWCOMER, run_before=_loaded_then())


def test_newcomer_detail_full_screen_at_80x24(snap_compare) -> None:
    assert snap_compare(
        _app(),
        terminal_size=NEWCOMER,
        run_before=_loaded_then("cause:cn-ignored-san-present", "enter"),
    )


def test_newcomer_list_scrolled_right_at_80x24(snap_compare) -> None:
    assert snap_compare(_app(), terminal_size=NEWCOMER, run_before=_loaded_then("", "right"))


def test_security_findings_and_failing_matches_at_80x24(snap_compare) -> None:
    """A security finding is a red ‼ badge and a failing match a ✗, never a green ✓."""
    app = _recordings_app(
        "starttls-injection", "plaintext-auth", "requested-host-assumed", "correct"
    )
    assert snap_compare(app, terminal_size=NEWCOMER, run_before=_loaded_then())
