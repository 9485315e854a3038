"""SVG snapshots of the TUI (pytest-textual-snapshot): the list, the grouped view, and the
detail pane for several causes, from the fixed recording in tests/data/tui/; and at 80x24 and
160x45 the list, the detail, the help, a dead proxy's red banner and follow's "+N new".

After a deliberate change of the layout, review and accept with:
    .venv/bin/pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from certmatch.core.facts import SessionFacts
from certmatch.core.recording import RecordingWriter, read_recording
from certmatch.core.trust import TrustStore
from certmatch.tui.app import CertmatchApp
from certmatch.tui.model import Filter
from certmatch.tui.proxy_watch import LiveProxy

pytestmark = pytest.mark.pure

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path("tests/data/tui/sample.jsonl")  # relative, so the path shown is the same everywhere
SIZE = (150, 44)
NEWCOMER = (80, 24)  # what a newcomer sees without pressing a key
WIDE = (160, 45)
BOTH = pytest.mark.parametrize("size", [NEWCOMER, WIDE], ids=["80x24", "160x45"])
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


def _detail_settled(app: CertmatchApp) -> bool:
    """The first pass is done and the detail pane shows a session when one is listed (the
    first rows are painted before the first detail is diagnosed)."""
    sessions = app.sessions
    if not sessions.initial_load_done:
        return False
    return sessions.detail_pane.detail is not None or not sessions.session_list.items


async def _until_still(pilot, deadline: float) -> None:
    """Until the whole screen has stayed the same for 0.3 s: the detail may be shown again
    once its session's full diagnosis arrives, and the status may change once the reader's
    later passes end (a snapshot once differed only under a loaded faketime run of the pure
    tests)."""
    app = pilot.app
    screen = app.export_screenshot()
    while True:
        await pilot.pause(0.3)
        now = app.export_screenshot()
        if now == screen:
            return
        assert time.monotonic() < deadline, "the screen kept changing"
        screen = now


def _loaded_then(filter_text: str = "", *keys: str):
    async def run_before(pilot) -> None:
        app = pilot.app
        deadline = time.monotonic() + 15
        while not _detail_settled(app):
            assert time.monotonic() < deadline, "the sample recording did not load"
            await pilot.pause(0.02)
        if filter_text:
            app.sessions.filter = Filter.parse(filter_text)
            app.sessions.rebuild()
        if keys:
            # Still before a key too: a screen opened on top (help) hides a detail that
            # changes beneath it until it is painted again (test_help[160x45] differed once
            # in the scroll bar and one line of the detail behind the help).
            await _until_still(pilot, deadline)
            await pilot.press(*keys)
        await pilot.pause()
        while not _detail_settled(app):
            assert time.monotonic() < deadline, "the detail pane never showed a session"
            await pilot.pause(0.02)
        await _until_still(pilot, deadline)
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


@BOTH
def test_list_and_detail(snap_compare, size) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_loaded_then())


@BOTH
def test_detail_full_screen(snap_compare, size) -> None:
    assert snap_compare(
        _app(), terminal_size=size, run_before=_loaded_then("cause:wildcard-too-deep", "enter")
    )


@BOTH
def test_three_names_of_a_session_with_dns_facts(snap_compare, size) -> None:
    """Without a key pressed: the verdict, the cause, what was asked and what the certificate
    names, then the client's name, what DNS answered and the certificate's names."""
    assert snap_compare(
        _recordings_app("cname-alias"), terminal_size=size, run_before=_loaded_then()
    )


@BOTH
def test_help(snap_compare, size) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_loaded_then("", "question_mark"))


@BOTH
def test_a_dead_proxys_red_banner(snap_compare, size) -> None:
    """What proxy --tui shows when its proxy could not listen: the proxy's own words, what
    to do, and where its log is (a real process that exited, and a mitmproxy log kept as
    tests/data/tui/proxy-bind-failed.log)."""
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    child.wait()
    live = LiveProxy(
        child,
        Path("tests/data/tui/proxy-bind-failed.log"),
        modes=["reverse:tls://mail.example.test:993"],
        ca_cert=Path("conf/mitmproxy-ca-cert.pem"),
    )
    store = TrustStore.load([], use_system=False)
    app = CertmatchApp(
        [Path("tests/data/tui/not-recorded.jsonl")],
        store=store,
        follow=True,
        show_all=True,
        proxy=live,
    )

    async def run_before(pilot) -> None:
        deadline = time.monotonic() + 15
        while app.sessions.proxy_state is None or app.sessions.proxy_state.running:
            assert time.monotonic() < deadline, "the banner never showed the dead proxy"
            await pilot.pause(0.02)
        while not app.sessions.initial_load_done:
            await pilot.pause(0.02)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def _grown(template: SessionFacts, number: int) -> SessionFacts:
    data = template.to_json()
    data["id"] = f"grown-{number}"
    return SessionFacts.from_json(data)


@BOTH
def test_follow_counts_new_sessions_below_the_one_being_read(snap_compare, size, tmp_path) -> None:
    store = TrustStore.load([Path("tests/data/tui/root.pem")], use_system=False)
    sample = read_recording(SAMPLE).sessions[:5]
    path = tmp_path / "live.jsonl"
    with RecordingWriter(path, tool_version="test") as writer:
        for number, facts in enumerate(sample[:3]):
            writer.write(_grown(facts, number))
    app = CertmatchApp([path], store=store, follow=True, poll_interval=0.02, show_all=True)

    async def run_before(pilot) -> None:
        deadline = time.monotonic() + 15
        while len(app.sessions.rows) < 3:
            assert time.monotonic() < deadline, "the first sessions were not read"
            await pilot.pause(0.02)
        await pilot.press("g")  # reading the first session
        with RecordingWriter(path, tool_version="test") as writer:
            for number, facts in enumerate(sample[3:], start=3):
                writer.write(_grown(facts, number))
        while app.sessions.new_sessions < 2:
            assert time.monotonic() < deadline, "the new sessions were not counted"
            await pilot.pause(0.02)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
