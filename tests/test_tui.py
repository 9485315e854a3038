"""The TUI driven with Textual's Pilot: every key and the key table, follow, the judgements."""

from __future__ import annotations

import asyncio
import functools
import importlib
import io
import itertools
import json
import pkgutil
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Input

import certmatch.tui
from certmatch.core.diagnosis import diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judge
from certmatch.core.recording import RecordingError, RecordingWriter, read_recording
from certmatch.core.report import VERDICT_SYMBOLS
from certmatch.core.trust import TrustStore
from certmatch.tui import keys, split_read
from certmatch.tui.app import CertmatchApp, run_view
from certmatch.tui.app import recordings_to_view as run_view_inputs
from certmatch.tui.detail import citation_link, grouped_fingerprint, line_segments
from certmatch.tui.detail_pane import DetailPane
from certmatch.tui.footer import FooterEntry, KeyFooter, fitting, footer_entries
from certmatch.tui.loader import Loader
from certmatch.tui.model import Filter, FilterError, Group, Row
from certmatch.tui.screens import ConfirmScreen, HelpScreen, PromptScreen
from certmatch.tui.session_list import cause_text, shorten_names
from certmatch.tui.source import RecordingSource

pytestmark = pytest.mark.pure

DATA = Path(__file__).parent / "data" / "tui"
SAMPLE = DATA / "sample.jsonl"
SIZE = (160, 40)


def run_async(test):
    """Run an async test on a fresh event loop (no pytest async plugin is needed)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture(scope="module")
def store() -> TrustStore:
    return TrustStore.load([DATA / "root.pem"], use_system=False)


@pytest.fixture(scope="module")
def sample() -> list[SessionFacts]:
    return read_recording(SAMPLE).sessions


async def wait_for(pilot, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Let the app run until ``condition`` holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def app_on(store: TrustStore, *paths: Path, **options) -> CertmatchApp:
    return CertmatchApp(list(paths) or [SAMPLE], store=store, **options)


def loaded(app: CertmatchApp) -> bool:
    """The first pass is done and, when a session is listed, the detail pane shows one (the
    first rows are painted before the first detail is diagnosed)."""
    sessions = app.sessions
    if not sessions.initial_load_done:
        return False
    return sessions.detail_pane.detail is not None or not sessions.session_list.items


def current_facts(app: CertmatchApp) -> SessionFacts:
    detail = app.sessions.detail_pane.detail
    assert detail is not None, "no session is shown in the detail pane"
    return detail[0].facts


# --- the list ---------------------------------------------------------------------------------


@run_async
async def test_default_view_lists_failing_sessions_and_a_shows_all(store, sample) -> None:
    expected_failing = [f.id for f in sample if diagnose(f, store).failed]
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        shown = [app.sessions.rows[i] for i in app.sessions.session_list.items]
        assert len(shown) == len(expected_failing) < len(sample)
        assert all(row.judgement.failed for row in shown)
        await pilot.press("a")
        assert len(app.sessions.session_list.items) == len(sample)
        await pilot.press("a")
        assert len(app.sessions.session_list.items) == len(expected_failing)


@run_async
async def test_movement_keys(store, sample) -> None:
    app = app_on(store, show_all=True)
    async with app.run_test(size=(160, 16)) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        listing = app.sessions.session_list
        assert current_facts(app).id == sample[0].id
        await pilot.press("j")
        assert listing.cursor == 1 and current_facts(app).id == sample[1].id
        await pilot.press("down", "down")
        assert listing.cursor == 3
        await pilot.press("k")
        assert listing.cursor == 2
        await pilot.press("up")
        assert listing.cursor == 1
        await pilot.press("G")
        assert listing.cursor == len(sample) - 1
        assert current_facts(app).id == sample[-1].id
        assert listing.scroll_offset.y > 0, "the list scrolls to keep the cursor visible"
        await pilot.press("g")
        assert listing.cursor == 0 and listing.scroll_offset.y == 0
        await pilot.press("pagedown")
        assert listing.cursor > 1
        await pilot.press("pageup")
        assert listing.cursor == 0
        await pilot.press("end")
        assert listing.cursor == len(sample) - 1
        await pilot.press("home")
        assert listing.cursor == 0


@run_async
async def test_enter_shows_the_detail_full_screen_and_back(store) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        assert app.sessions.session_list.display
        await pilot.press("enter")
        assert not app.sessions.session_list.display
        assert app.query_one("#detail").has_focus
        await pilot.press("enter")
        assert app.sessions.session_list.display and app.sessions.session_list.has_focus


@run_async
async def test_detail_explains_with_the_sessions_names_and_cites(store, sample) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.press("f")
        await pilot.press(*"cause:wildcard-too-deep", "enter")
        await wait_for(
            pilot,
            lambda: app.sessions.filter.causes == {"wildcard-too-deep"},
            "the filter to apply",
        )
        facts = current_facts(app)
        text = app.sessions.detail_pane.plain
        d = diagnose(facts, store)
        assert d.primary is not None and d.primary.id == "wildcard-too-deep"
        assert d.primary.explanation.split(".")[0] in text.replace("\n", " ")
        assert facts.requested_host in text
        for check in d.identity.checks:
            assert check.presented in text and check.rule in text
        for summary in d.certificates:
            assert grouped_fingerprint(summary.sha256) in text and summary.subject in text
        for citation in d.primary.cause.citations:
            assert str(citation) in text


@run_async
async def test_filter_by_cause_protocol_verdict_and_host(store, sample) -> None:
    app = app_on(store, show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")

        async def apply(text: str) -> list[str]:
            await pilot.press("f")
            prompt = app.screen
            assert isinstance(prompt, PromptScreen)
            prompt.query_one("Input").value = text
            await pilot.press("enter")
            return [app.sessions.rows[i].host for i in app.sessions.session_list.items]

        assert await apply("cause:expired") == ["expired.example.test"]
        imap = await apply("protocol:imap")
        assert imap and len(imap) == sum(f.protocol == "imap" for f in sample)
        untrusted = await apply("verdict:untrusted")
        assert untrusted and all(
            diagnose(f, store).verdict == "untrusted"
            for f in sample
            if f.requested_host in untrusted
        )
        assert await apply("wrong") == ["wrong.example.test", "wrong.example.test"]
        assert await apply("host:wrong verdict:match") == []
        assert "matches the filter" in app.sessions.session_list.empty_message
        await pilot.press("f")
        app.screen.query_one("Input").value = "cause:no-such-cause"
        await pilot.press("enter")
        assert isinstance(app.screen, PromptScreen), "a bad filter keeps the prompt open"
        assert "unknown cause id" in str(app.screen.query_one("#prompt-error").render())
        await pilot.press("escape")
        assert not isinstance(app.screen, PromptScreen)
        assert await apply("") != []


@run_async
async def test_find_and_next_previous(store) -> None:
    app = app_on(store, show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.press("slash", *"wrong", "enter")
        first = app.sessions.session_list.cursor
        assert current_facts(app).requested_host == "wrong.example.test"
        await pilot.press("n")
        second = app.sessions.session_list.cursor
        assert second > first and current_facts(app).requested_host == "wrong.example.test"
        await pilot.press("n")
        assert app.sessions.session_list.cursor == first, "find wraps around"
        await pilot.press("N")
        assert app.sessions.session_list.cursor == second


@run_async
async def test_grouped_view_counts_sessions_per_host_certificate_and_cause(store) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        failing = len(app.sessions.session_list.items)
        await pilot.press("v")
        groups = app.sessions.session_list.items
        assert all(isinstance(g, Group) for g in groups)
        assert sum(g.count for g in groups) == failing
        top = groups[0]
        assert (top.host, top.count, top.judgement.primary) == (
            "wrong.example.test",
            2,
            "name-not-in-certificate",
        )
        assert "Group of 2 sessions" in app.sessions.detail_pane.plain
        await pilot.press("v")
        assert len(app.sessions.session_list.items) == failing


@run_async
async def test_grouping_and_ungrouping_keep_the_selected_session(store) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        listing = app.sessions.session_list
        await pilot.press("j", "j", "j")
        selected = listing.current_item
        assert isinstance(selected, int)
        row = app.sessions.rows[selected]
        await pilot.press("v")
        group = listing.current_item
        assert isinstance(group, Group) and listing.cursor != 3  # the group moved in the list
        assert (group.host, group.judgement.primary) == (row.host, row.judgement.primary)
        await pilot.press("v")
        assert listing.current_item == selected, "back on the session selected before"


@run_async
async def test_a_session_the_detail_cannot_lay_out_is_told_and_the_tui_goes_on(
    store, monkeypatch
) -> None:
    """A bug in laying out one session (injected here) must not end the TUI: under
    proxy --tui that ended the recording too (trial T saw a traceback end it)."""
    from certmatch.tui import detail_pane

    real = detail_pane.detail_lines
    app = app_on(store, show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        first = current_facts(app).id
        broken = {first}

        def lines(d, recording, **options):
            if d.facts.id in broken:
                raise KeyError("a bug")
            return real(d, recording, **options)

        monkeypatch.setattr(detail_pane, "detail_lines", lines)
        await pilot.press("j", "k")
        assert app.is_running and app.sessions.detail_pane.detail is None
        text = app.sessions.detail_pane.text
        assert f"could not lay out session {first} (KeyError" in " ".join(text.split())
        assert "asked " in text  # what the list knows of it
        await pilot.press("j")
        assert current_facts(app).id != first  # the next one shows as ever


@run_async
async def test_export_writes_json_and_pem_and_says_where(store, tmp_path) -> None:
    app = app_on(store, export_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        facts = current_facts(app)
        await pilot.press("c")  # asks where, and writes nothing yet
        assert isinstance(app.screen, PromptScreen) and list(tmp_path.iterdir()) == []
        assert app.screen.query_one(Input).value == str(tmp_path.resolve())
        await pilot.press("escape")
        assert list(tmp_path.iterdir()) == []
        target = tmp_path / "exports"
        (tmp_path / "a-file").touch()
        await pilot.press("c", "ctrl+u", *str(tmp_path / "a-file"), "enter")
        assert isinstance(app.screen, PromptScreen), "a file is no directory: the prompt stays"
        assert "is a file, not a directory" in str(app.screen.query_one("#prompt-error").render())
        await pilot.press("ctrl+u", *str(target), "enter")
        assert not isinstance(app.screen, PromptScreen)
        (tmp_path / "a-file").unlink()
        tmp_path = target
        written = sorted(tmp_path.iterdir())
        assert [p.name for p in written] == [
            f"certmatch-{facts.id}.chain.pem",
            f"certmatch-{facts.id}.json",
        ]
        data = json.loads(written[1].read_text())
        assert data["id"] == facts.id and data["primary_cause"] == diagnose(facts, store).primary.id
        certs = x509.load_pem_x509_certificates(written[0].read_bytes())
        assert len(certs) == len(facts.chain)
        assert [p.stat().st_mode & 0o777 for p in written] == [0o600, 0o600]  # owner-only
        messages = [n.message for n in app._notifications]
        assert any(
            f"{written[0].name} and {written[1].name} in {target}" in m for m in messages
        ) or any(f"{written[1].name} and {written[0].name} in {target}" in m for m in messages)
        await pilot.press("c")  # the next export offers the same directory
        assert app.screen.query_one(Input).value == str(target.resolve())


@run_async
async def test_help_and_quit(store) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = " ".join(str(s.render()) for s in app.screen.query("Static"))
        for shown, description in keys.help_lines():
            assert f"{shown} {description}" in help_text  # side by side
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
    assert app.return_code == 0


@run_async
async def test_the_help_scrolls_as_less_does(store) -> None:
    app = app_on(store)
    async with app.run_test(size=NEWCOMER) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        scroll = app.screen.query_one(VerticalScroll)
        await pilot.pause()
        assert scroll.max_scroll_y > scroll.size.height, "the help is longer than two screens"
        await pilot.press("j", "j")
        assert scroll.scroll_y == 2
        await pilot.press("k")
        assert scroll.scroll_y == 1
        await pilot.press("space")
        assert scroll.scroll_y == 1 + scroll.size.height
        await pilot.press("b")
        assert scroll.scroll_y == 1
        await pilot.press("G")
        assert scroll.scroll_y == scroll.max_scroll_y
        await pilot.press("g")
        assert scroll.scroll_y == 0
        # The cause ids fit their column: none runs into its title.
        for row in app.screen.query(".help-cause"):
            assert len(str(row.render())) <= row.size.width


def _declared_bindings() -> dict[str, list[Binding]]:
    """The BINDINGS every class of the TUI declares itself (not inherited from Textual)."""
    declared: dict[str, list[Binding]] = {}
    for module in pkgutil.walk_packages(certmatch.tui.__path__, "certmatch.tui."):
        for name, cls in vars(importlib.import_module(module.name)).items():
            if isinstance(cls, type) and cls.__module__ == module.name and "BINDINGS" in vars(cls):
                declared[name] = [b for b in cls.BINDINGS if isinstance(b, Binding)]
    return declared


def test_every_key_in_the_table_is_one_a_terminal_can_send() -> None:
    """A made-up key name binds nothing: ] arrives as right_square_bracket, not bracketright."""
    from textual.keys import Keys, _character_to_key

    printable = [chr(code) for code in range(0x20, 0x7F)]
    known = {key.value for key in Keys} | set(printable)
    known |= {_character_to_key(char) for char in printable}
    for key in keys.KEYS:
        for name in key.names:
            assert name in known, f"{name!r} ({key.action}) is no key Textual reports"


def test_the_help_has_one_line_per_key_and_no_key_twice_in_one_view() -> None:
    shown = [line for line, _ in keys.help_lines()]
    for view in keys.View.LIST, keys.View.DETAIL, keys.View.HELP:
        names = [name for key in keys.keys_for(view) for name in key.names]
        assert len(names) == len(set(names)), f"a key is bound twice in {view}"
    assert len(shown) == len(set(shown)), "a line of keys appears twice in the help"


def test_every_binding_comes_from_the_key_table() -> None:
    declared = _declared_bindings()
    assert set(declared) == {"SessionsScreen", "HelpScreen", "PromptScreen", "ConfirmScreen"}
    table = {(key.keys, key.action) for key in keys.KEYS}
    for owner, bindings in declared.items():
        for binding in bindings:
            assert (binding.key, binding.action) in table, f"{owner} binds {binding.key} itself"
    assert CertmatchApp.COMMAND_PALETTE_BINDING == keys.COMMAND_PALETTE


@run_async
async def test_the_key_table_is_bound_in_the_footer_help_and_palette(store) -> None:
    app = app_on(store)

    def bound(key: keys.Key) -> bool:
        """Each key runs its action; False if the focused detail pane scrolls with all of them."""
        active = app.screen.active_bindings
        reachable = False
        for name in key.names:
            assert name in active, f"{name} is not bound on {type(app.screen).__name__}"
            found = active[name]
            if isinstance(found.node, DetailPane):
                continue  # the full-screen detail has focus: its arrows and pages scroll it
            assert found.binding.action == key.action, name
            reachable = True
        return reachable

    async with app.run_test(size=(240, 30)) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        for view in (keys.View.LIST, keys.View.DETAIL):
            await pilot.pause()  # the footer recomposes after a change of focus
            assert app.sessions.view is view
            back = "q Quit" if view is keys.View.LIST else "q Back"
            await wait_for(
                pilot,
                lambda back=back: footer_settled(app) and back in screen_lines(app)[-1],
                "the footer to be composed for the view",
            )
            footer = footer_actions(app)
            for key in keys.keys_for(view):
                shown = bound(key) and key.footer
                assert (key.action in footer) is shown, f"{key.keys} in the footer"
            palette = {c.title: c.help for c in app.get_system_commands(app.screen)}
            for key in keys.keys_for(view):
                if key.palette:
                    assert palette[key.palette].startswith(key.palette_help)
            await pilot.press("enter")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = " ".join(str(s.render()) for s in app.screen.query("Static"))
        for key in keys.KEYS:
            assert key.shown in help_text and (not key.help or key.help in help_text)
        for key in keys.keys_for(keys.View.HELP):
            bound(key)
        await pilot.press("escape", "f")
        assert isinstance(app.screen, PromptScreen)
        for key in keys.keys_for(keys.View.PROMPT):
            bound(key)
        await pilot.press("escape")
        app.push_screen(ConfirmScreen("Quit?", "The proxy records."))
        await pilot.pause()
        for key in keys.keys_for(keys.View.CONFIRM):
            bound(key)


@run_async
async def test_command_palette_runs_the_same_actions(store) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in (
            "Filter",
            "Find",
            "Follow on/off",
            "Grouped view on/off",
            "Export selected session",
            "Help",
            "Next session",
            "Previous session",
            "Quit",
        ):
            assert wanted in titles
        for textuals_own in ("Keys", "Maximize", "Theme", "Screenshot"):
            assert textuals_own not in titles  # they broke the layout and are in no help
        await pilot.press("ctrl+p")
        await pilot.press(*"Grouped view")
        await wait_for(
            pilot, lambda: app.screen.query_one("CommandList").option_count > 0, "palette matches"
        )
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: app.sessions.grouped, "the palette to switch to the grouped view"
        )


# --- follow -----------------------------------------------------------------------------------


def _session(template: SessionFacts, number: int) -> SessionFacts:
    data = template.to_json()
    data["id"] = f"grown-{number}"
    return SessionFacts.from_json(data)


@run_async
async def test_follow_shows_sessions_appended_while_running(store, sample, tmp_path) -> None:
    path = tmp_path / "live.jsonl"
    failing = next(f for f in sample if diagnose(f, store).failed)
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(_session(failing, 0))
    app = app_on(store, path, follow=True, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.sessions.rows) == 1, "the first session")
        with RecordingWriter(path, tool_version="test") as writer:
            for number in range(1, 6):
                writer.write(_session(failing, number))
            with path.open("ab") as raw:
                raw.write(b'{"type":"session","id":"half')  # a line still being written
            await wait_for(pilot, lambda: len(app.sessions.rows) == 6, "the appended sessions")
            assert not app.sessions.problems, (
                "an unfinished last line is not an error while following"
            )
            assert app.sessions.session_list.cursor == 5
            # The newest session's detail follows, at most every DETAIL_EVERY seconds.
            await wait_for(
                pilot,
                lambda: (
                    app.sessions.detail_pane.detail is not None
                    and current_facts(app).id == "grown-5"
                ),
                "its detail",
            )
            with path.open("ab") as raw:
                raw.write(b'"}\n')  # finished, but not a valid session: reported once complete
            await wait_for(
                pilot, lambda: len(app.sessions.problems) == 1, "the bad line to be reported"
            )
            writer.write(_session(failing, 6))
            await wait_for(
                pilot, lambda: len(app.sessions.rows) == 7, "the session after the bad line"
            )
        assert "following" in str(app.query_one("#status").render())
        await pilot.press("F")
        assert not app.sessions.following
        await wait_for(pilot, lambda: not app.sessions._loading, "the reader to stop")
        with RecordingWriter(path, tool_version="test") as writer:
            writer.write(_session(failing, 7))
        await pilot.pause(0.1)
        assert len(app.sessions.rows) == 7, "not following: the file is not read again"
        await pilot.press("F")
        await wait_for(pilot, lambda: len(app.sessions.rows) == 8, "follow to read the file again")


@run_async
async def test_follow_waits_for_a_recording_the_proxy_has_not_created_yet(
    store, sample, tmp_path
) -> None:
    path = tmp_path / "later.jsonl"
    app = app_on(store, path, follow=True, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.sessions.initial_load_done, "the first pass")
        assert "waiting for" in str(app.query_one("#status").render())
        with RecordingWriter(path, tool_version="test") as writer:
            writer.write(_session(sample[1], 0))
        await wait_for(pilot, lambda: len(app.sessions.rows) == 1, "the new file to be read")


def test_the_status_takes_a_second_line_only_when_its_parts_do_not_fit() -> None:
    from certmatch.tui.screens.sessions import _status_lines

    parts = ["3 sessions, 1 failing", "showing all: 3", "following +1 new (G: newest)"]
    assert _status_lines(parts, 80) == [" · ".join(parts)]
    assert _status_lines([*parts, "filter: x", "live.jsonl"], 70) == [
        " · ".join(parts),
        "filter: x · live.jsonl",
    ]
    assert _status_lines(["x" * 100], 70) == ["x" * 100]  # cut on screen, with …
    assert _status_lines([*parts, "3 files: " + "a.jsonl, " * 20], 80)[1:] == []  # names: cut


@run_async
async def test_at_80_columns_the_status_shows_the_follow_state_and_the_filter(
    store, sample, tmp_path
) -> None:
    path = tmp_path / "live.jsonl"
    _write(path, [_session(sample[0], 0), _session(sample[1], 1)])
    app = app_on(store, path, follow=True, show_all=True, poll_interval=0.02)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.press("f", *"host:!nothing-at-all.example.test protocol:imap,smtp,pop3")
        await pilot.press("enter", "g")  # reading the first session: new ones are counted
        _write(path, [_session(sample[2], 2)])
        await wait_for(pilot, lambda: len(app.sessions.rows) == 3, "the new session")
        await pilot.pause()
        first, second = screen_lines(app)[:2]
        assert "following +1 new" in first, first
        assert "filter: host:!nothing-at-all.example.test protocol:imap,smtp,pop3" in second
        assert second.rstrip().endswith("live.jsonl"), "the second line is the rest"
        assert "verdict" in screen_lines(app)[2]  # the list's header right below


# --- entry point, model and cache -----------------------------------------------------------


def test_run_view_reports_bad_input_in_one_line(tmp_path, capsys) -> None:
    missing = tmp_path / "nope.jsonl"
    assert (
        run_view([str(missing)], follow=False, show_all=False, ca_files=[], use_system_store=False)
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.jsonl" in err and "Traceback" not in err
    pem = tmp_path / "cert.pem"
    shutil.copy(DATA / "root.pem", pem)
    assert (
        run_view([str(pem)], follow=False, show_all=False, ca_files=[], use_system_store=False) == 2
    )
    assert "PEM" in capsys.readouterr().err
    assert run_view([str(SAMPLE)], follow=False, show_all=False, ca_files=[str(missing)]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_the_lists_judgements_equal_fresh_diagnoses(store, sample, tmp_path) -> None:
    sessions = sample + [_session(f, 99) for f in sample]
    path = tmp_path / "twice.jsonl"
    with RecordingWriter(path, tool_version="test") as writer:
        for facts in sessions:
            writer.write(facts)
    loader = Loader([path], Judge(store))
    rows: list[Row] = []
    loader.poll(lambda batch: rows.extend(batch.rows), final=True)
    assert len(rows) == len(sessions)
    for row, facts in zip(rows, sessions, strict=True):
        judged, d = row.judgement, diagnose(facts, store)
        assert (judged.verdict, judged.failed, judged.causes) == (d.verdict, d.failed, d.cause_ids)
    # Sessions differing only in id (and the two with the same host and certificate) share one.
    assert (
        loader.judge.diagnosed
        == len({(f.requested_host, tuple(f.chain)) for f in sample})
        < len(sample)
    )


def test_no_judgement_is_shared_across_a_validity_boundary(store, sample) -> None:
    expired = next(f for f in sample if f.requested_host == "expired.example.test")
    judge = Judge(store)
    before = _session(expired, 1)
    before.started = "2020-06-01T00:00:00+00:00"  # inside the leaf's validity
    judged_before, judged_after = judge.judgement(before), judge.judgement(expired)
    assert judged_after.primary == "expired"
    assert "expired" not in judged_before.causes
    assert judged_before.causes == diagnose(before, store).cause_ids


def test_filter_language() -> None:
    f = Filter.parse("Mail protocol:imap,pop3 cause:expired v:✗ c:!self-signed")
    assert f.hosts == ("mail",) and f.protocols == {"imap", "pop3"}
    assert (
        f.causes == {"expired"}
        and f.verdicts == {"mismatch"}
        and f.excluded_causes == {"self-signed"}
    )
    with pytest.raises(FilterError, match="did you mean wildcard-apex"):
        Filter.parse("cause:apex")
    with pytest.raises(FilterError, match="unknown filter field"):
        Filter.parse("colour:red")
    with pytest.raises(FilterError, match="unknown verdict"):
        Filter.parse("verdict:bad")
    assert Filter.parse("  ").empty


def test_shortened_names_say_how_many_were_left_out() -> None:
    names = tuple(f"host{i}.example.test" for i in range(10))
    short = shorten_names(names, 45)
    assert len(short) <= 45 and short.startswith("host0.example.test") and short.endswith(" +8")
    assert shorten_names(()) == "(no certificate)"


def test_source_reads_only_complete_lines_until_final(tmp_path, sample) -> None:
    path = tmp_path / "r.jsonl"
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(sample[0])
    with path.open("ab") as raw:
        raw.write(b'{"type":"sess')
    source = RecordingSource(path)
    assert [type(item).__name__ for _, item in source.read_new(final=False)] == ["SessionFacts"]
    assert list(source.read_new(final=False)) == []
    problems = [item for _, item in source.read_new(final=True)]
    assert len(problems) == 1 and problems[0].truncated


@run_async
async def test_a_hostile_file_name_and_bad_line_are_shown_escaped_and_not_as_markup(
    store, sample, tmp_path
) -> None:
    """The status line and the "Lines skipped" notice quote the file: escaped, not markup."""
    path = tmp_path / "rec-\x1b[2J-[bold]x.jsonl"
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(sample[0])
    with path.open("ab") as raw:
        raw.write(b'{"type":"session","id":"\\u202e\x1b]2;PWNED\x07"\n')
        raw.write(b'{"type":"session","id":"after"}\n')
    app = app_on(store, path, show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        status = str(app.query_one("#status").render())
        assert "rec-\\x1b[2J-[bold]x.jsonl" in status
        notices = [n for n in app._notifications if n.title == "Lines skipped"]
        assert notices and not notices[0].markup
        assert "\x1b" not in notices[0].message and "\\x1b[2J-[bold]" in notices[0].message


# --- decisive facts first, severity badges, keys of mitmproxy and less -------------------------

NEWCOMER = (80, 24)
RECORDINGS = Path(__file__).parent.parent / "recordings"


def footer_entries_shown(app: CertmatchApp) -> list[FooterEntry]:
    """What the sessions screen's footer shows now, left to right."""
    return app.sessions.query_one(KeyFooter).shown


def footer_actions(app: CertmatchApp) -> set[str]:
    """The actions of every key the footer shows, the command palette's included."""
    footer = app.sessions.query_one(KeyFooter)
    palette = {key.action for key in footer.query("FooterKey.-command-palette")}
    return {action for entry in footer.shown for action in entry.actions} | palette


def footer_settled(app: CertmatchApp) -> bool:
    """The footer was composed for the screen's width, and is on screen as it chose."""
    footer = app.sessions.query_one(KeyFooter)
    shown = [key for key in footer.query("FooterKey") if not key.has_class("-command-palette")]
    return (
        footer._composed_for == app.size.width
        and len(shown) == len(footer.shown)
        and screen_lines(app)[-1].startswith("? Help ")
    )


def screen_lines(app: CertmatchApp) -> list[str]:
    """The text of every line on screen, as the terminal shows it."""
    return ["".join(s.text for s in strip) for strip in app.screen._compositor.render_strips()]


def list_line(app: CertmatchApp, position: int) -> str:
    """The text of the list's line for the item at ``position`` (as far as the screen shows)."""
    listing = app.sessions.session_list
    return "".join(s.text for s in listing.render_line(position + 1 - round(listing.scroll_y)))


def detail_text(app: CertmatchApp) -> str:
    return app.sessions.detail_pane.plain


@run_async
async def test_a_newcomer_at_80x24_sees_what_was_asked_the_names_the_verdict_and_the_cause(
    store,
) -> None:
    app = app_on(store)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.pause()
        facts = current_facts(app)
        d = diagnose(facts, store)
        assert d.primary is not None
        screen = screen_lines(app)
        assert all(len(line) == NEWCOMER[0] for line in screen)
        text = "\n".join(screen)
        header = screen[1]
        for title in ("verdict", "requested host", "primary cause", "names on the cert"):
            assert title in header, title
        row = list_line(app, 0)
        assert row.startswith("✗ mismatch") and facts.requested_host in row
        assert f" {d.primary.id} " in row and d.presented_names[0] in row
        # the detail's headline, in the split view's lines without a key pressed
        detail_top = screen[screen.index("─" * NEWCOMER[0]) + 1 :]
        top = "\n".join(detail_top)
        assert "✗ mismatch" in top and d.primary.id in top
        assert f"asked {facts.requested_host}" in top and d.presented_names[0] in top
        assert f"SNI: {facts.sni}" in top
        assert facts.id not in text and "sample.jsonl" not in top  # ids and paths at the bottom
        assert "? Help" in screen[-1] and "q Quit" in screen[-1]


@run_async
async def test_the_detail_puts_ids_and_the_recording_path_last(store) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        facts = current_facts(app)
        text = detail_text(app)
        lines = text.splitlines()
        assert lines[0].startswith(" ✗ mismatch ")
        assert lines[2].startswith(f" asked {facts.requested_host} (")
        assert text.index("Why") < text.index(f"  {facts.id} · ") < text.index("recording: ")
        assert lines[-1] == f"  recording: {SAMPLE}"


@run_async
async def test_the_detail_at_80_columns_keeps_indents_and_whole_bytes_and_links_citations(
    store,
) -> None:
    app = app_on(store)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.press("enter")
        await pilot.pause()
        pane = app.sessions.detail_pane
        lines = pane.text.splitlines()
        assert max(len(line) for line in lines) <= pane.scrollable_content_region.width
        why = lines.index("Why")
        prose = lines[why + 1 : lines.index("", why + 1)]
        assert len(prose) > 1, "the explanation wraps at 80 columns"
        assert all(line.startswith("  ") for line in prose), "a wrapped line keeps its indent"
        sha256 = [i for i, line in enumerate(lines) if "SHA-256: " in line]
        assert sha256
        for at in sha256:
            start = lines[at].index("SHA-256: ") + len("SHA-256: ")
            value = [lines[at][start:], lines[at + 1][start:]]
            assert lines[at + 1][:start].strip() == "", "the fingerprint wraps under itself"
            for part in " ".join(value).split():
                assert re.fullmatch(r"([0-9A-F]{2}:){7}[0-9A-F]{2}", part), part
        # Each citation with an address is a link, in the pane's own rendering.
        d = pane.detail[0]
        links = {
            segment.style.link
            for y in range(pane.virtual_size.height)
            for segment in line_segments(pane._wrapped[y], app.console)
            if segment.style is not None and segment.style.link
        }
        wanted = {citation_link(c) for c in d.primary.cause.citations} - {None}
        assert wanted and wanted <= links


def test_citation_links_point_at_the_section_cited() -> None:
    from certmatch.core.causes import Citation

    assert (
        citation_link(Citation("RFC 6125", "§6.4.3"))
        == "https://www.rfc-editor.org/rfc/rfc6125#section-6.4.3"
    )
    assert (
        citation_link(Citation("RFC 9525", "Appendix A"))
        == "https://www.rfc-editor.org/rfc/rfc9525#appendix-A"
    )
    assert citation_link(Citation("CVE-2011-0411")) == (
        "https://www.cve.org/CVERecord?id=CVE-2011-0411"
    )
    assert citation_link(Citation("Microsoft KB Q198564")) is None


@run_async
async def test_the_detail_shows_the_three_names_when_the_session_has_dns_facts() -> None:
    from certmatch.core.report import three_names
    from certmatch.tui.detail import HOST_SOURCE_WORDS

    store = TrustStore.load([RECORDINGS / "ca.pem"], use_system=False)
    app = app_on(store, RECORDINGS / "cname-alias.jsonl", show_all=True)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.pause()
        d = app.sessions.detail_pane.detail[0]
        names = three_names(d, source_words=HOST_SOURCE_WORDS)
        assert names and names[0].startswith("client:")
        assert "(option)" not in app.sessions.detail_pane.plain  # one wording on one screen
        plain = app.sessions.detail_pane.plain
        for line in names:
            assert line[13:] in plain, line
        screen = "\n".join(screen_lines(app))
        # without a key: what was asked, the verdict, the cause, the certificate's names, DNS
        assert "✗ mismatch" in screen and "cname-alias" in screen
        assert "asked mailhost.example.test (configured with --host)" in screen
        assert "imap.example.test" in screen and "DNS:" in screen


@run_async
async def test_the_detail_says_where_the_certificate_was_read_and_what_the_client_saw(
    store, sample, tmp_path
) -> None:
    data = sample[0].to_json()
    data.update(chain_source="side-handshake", presented="real", sni="192.0.2.7")
    data.update(upstream_sni=None, upstream_sni_reason="ip-literal")
    path = tmp_path / "observed.jsonl"
    _write(path, [SessionFacts.from_json(data)])
    app = app_on(store, path, show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.pause()
        plain = " ".join(app.sessions.detail_pane.plain.split())
        assert "where from: from a side handshake: TLS 1.3 encrypts the certificate" in plain
        assert "the client saw: the server's own chain (observe mode" in plain
        assert "no SNI upstream: the client sent an IP address as SNI" in plain
        assert "(the SOCKS5 target)" in plain, "where the host came from, in words"


def test_list_columns_fit_the_width_in_priority_order() -> None:
    from certmatch.tui.session_list import (
        SESSION_COLUMNS,
        SESSION_PRIORITY,
        cause_text,
        column_widths,
        cut_at_edge,
        fit_keeping,
        host_text,
        names_text,
    )

    titles = [c.title for c in SESSION_COLUMNS[:SESSION_PRIORITY]]
    assert titles == [
        "verdict",
        "requested host (source)",
        "primary cause",
        "names on the certificate",
    ]
    for width in (72, 78, 100, 120):
        widths = column_widths(SESSION_COLUMNS, SESSION_PRIORITY, width)
        assert sum(widths[:SESSION_PRIORITY]) + SESSION_PRIORITY - 1 <= width, width
        assert widths[0] == 14  # the verdict never shrinks
        assert widths[SESSION_PRIORITY:] == [c.width for c in SESSION_COLUMNS[SESSION_PRIORITY:]]
    wide = column_widths(SESSION_COLUMNS, SESSION_PRIORITY, 400)
    assert wide == [c.width for c in SESSION_COLUMNS]
    assert column_widths(SESSION_COLUMNS, SESSION_PRIORITY, 10)[:4] == [14, 18, 23, 14]
    assert cut_at_edge("abc defgh", 6) == "abc d…"
    assert cut_at_edge("abc defgh", 4) == "abc "  # cut between words: nothing was cut
    assert cut_at_edge("abc", 6) == "abc"
    assert fit_keeping("no-sni-default-certificate", " +1", 18) == "no-sni-default… +1"
    assert fit_keeping("expired", " +1", 18) == "expired +1".ljust(18)
    # Beside a failure, a further warning is left to the detail; beside a warning it counts.
    assert cause_text("expired", ("expired", "unknown-issuer"), 24).strip() == "expired +1"
    assert cause_text("expired", ("expired", "ca-profile-violation"), 24).strip() == "expired"
    both = ("trailing-dot", "ca-profile-violation")
    assert cause_text("trailing-dot", both, 24).strip() == "trailing-dot +1"
    assert host_text("a.example.test", "socks5", 30) == "a.example.test (socks5)".ljust(30)
    assert host_text("a.example.test", "socks5", 18) == "a.example.test".ljust(18)
    assert host_text("a.example.test", "socks5", 10) == "a.example…"
    names = ("mail.example.test", "imap.example.test", "smtp.example.test")
    assert names_text(names, 18) == "mail.example.t… +2"
    assert names_text(names, 40) == "mail.example.test, imap.example.test +1".ljust(40)


@run_async
async def test_text_cut_at_the_right_edge_ends_in_an_ellipsis(store) -> None:
    app = app_on(store, show_all=True)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.pause()
        listing = app.sessions.session_list
        width = listing.scrollable_content_region.width
        header = "".join(s.text for s in listing.render_line(0))
        assert len(header) == width and header.endswith("…")
        assert "names on the certificate" in header


@run_async
async def test_left_and_right_scroll_the_list_a_column_at_a_time(store) -> None:
    app = app_on(store)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.pause()
        listing = app.sessions.session_list
        starts = listing.column_starts()
        verdict = starts[1]  # the verdict column and its gap stay put
        assert listing.scroll_x == 0
        await pilot.press("right")
        assert listing.scroll_x == starts[2] - verdict
        header = "".join(s.text for s in listing.render_line(0))
        assert header.startswith("verdict") and header[verdict:].startswith("primary cause")
        row = "".join(s.text for s in listing.render_line(1))
        assert row[:verdict].strip() == list_line(app, 0)[:verdict].strip() != ""
        for _ in range(len(starts)):
            await pilot.press("right")
        assert listing.scroll_x == listing.max_scroll_x > starts[3] - verdict
        header = "".join(s.text for s in listing.render_line(0))
        assert header.startswith("verdict") and "client" in header
        await pilot.press("left")
        assert listing.scroll_x < listing.max_scroll_x
        for _ in range(len(starts)):
            await pilot.press("left")
        assert listing.scroll_x == 0
        assert listing.cursor == 0  # sideways, never another session


@run_async
async def test_q_and_escape_go_back_from_the_full_screen_detail_and_q_quits_the_list(
    store,
) -> None:
    app = app_on(store)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        for back in ("q", "escape"):
            await pilot.press("enter")
            assert app.sessions.view is keys.View.DETAIL
            await pilot.pause()
            footer = screen_lines(app)[-1]
            assert "? Help" in footer and "q Back" in footer and "Quit" not in footer
            await pilot.press(back)
            assert app.sessions.view is keys.View.LIST and app.is_running
            assert app.sessions.session_list.has_focus
        await pilot.press("escape")  # in the list Esc does nothing: no trap, no quit
        assert app.is_running and app.sessions.view is keys.View.LIST
        for close in ("q", "escape", "question_mark"):
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press(close)
            assert not isinstance(app.screen, HelpScreen) and app.is_running
        await pilot.press("q")
    assert app.return_code == 0


@run_async
async def test_the_list_and_the_headline_count_the_further_causes_alike() -> None:
    """wildcard-apex showed +1 in the list and +2 in the headline: a warning beside it was
    counted in one and not the other. Both count failures; the headline names the warnings."""
    store = TrustStore.load([RECORDINGS / "ca.pem"], use_system=False)
    app = app_on(store, *sorted(RECORDINGS.glob("*.jsonl")), show_all=True)
    async with app.run_test(size=(200, 45)) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recordings to load")
        listing = app.sessions.session_list
        checked = warned = 0
        for position in range(len(listing.items)):
            listing.cursor = position
            await pilot.pause()
            d = app.sessions.detail_pane.detail
            assert d is not None
            primary = d[0].primary
            if primary is None:
                continue
            pattern = re.escape(primary.id) + r"( \+(\d+))?"
            j = app.sessions.rows[listing.items[position]].judgement
            cell = cause_text(j.primary, j.causes, 80)  # the list's cell, uncut
            row = re.search(pattern, cell)
            headline = app.sessions.detail_pane.plain.splitlines()[0]
            top = re.search(pattern, headline)
            assert row and top, (cell, headline)
            assert row.group(2) == top.group(2), (cell, headline)
            warned += "warning" in headline.partition(f"({primary.cause.severity})")[2]
            checked += 1
        assert checked > 30 and warned > 0


def test_a_security_finding_or_a_failing_match_never_shows_a_tick() -> None:
    from certmatch.tui.severity import badge, severity_of

    assert badge("match", ()) == ("✓ match", "ok")
    assert badge("match", ("starttls-injection",)) == ("‼ security", "security")
    assert badge("mismatch", ("name-not-in-certificate", "plaintext-auth"))[1] == "security"
    assert badge("match", ("requested-host-assumed",)) == ("✗ match", "failure")
    assert badge("match", ("proxy-ca-not-trusted",)) == ("✗ match", "failure")
    assert badge("match", ("idn-form",)) == ("⚠ match", "warning")
    assert badge("mismatch", ("name-not-in-certificate",)) == ("✗ mismatch", "failure")
    assert badge("untrusted", ("expired",)) == ("! untrusted", "failure")
    assert severity_of("legacy-match", ("cn-only-legacy",)) == "failure"


@run_async
async def test_security_findings_and_failing_matches_look_failing_in_the_list_and_detail() -> None:
    store = TrustStore.load([RECORDINGS / "ca.pem"], use_system=False)
    recordings = {
        name: RECORDINGS / f"{name}.jsonl"
        for name in (
            "starttls-injection",
            "plaintext-auth",
            "requested-host-assumed",
            "proxy-ca-not-trusted",
            "correct",
        )
    }
    app = app_on(store, *recordings.values(), show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.sessions.initial_load_done, "the recordings to load")
        await pilot.pause()
        listing = app.sessions.session_list
        seen = set()
        for position in range(len(listing.items)):
            listing.cursor = position
            await pilot.pause()
            d = app.sessions.detail_pane.detail
            assert d is not None
            primary = d[0].primary.id if d[0].primary else "correct"
            seen.add(primary)
            line, headline = list_line(app, position), detail_text(app).splitlines()[0]
            if primary == "correct":
                assert line.startswith("✓ match") and headline.startswith(" ✓ match ")
                continue
            assert "✓" not in line and "✓" not in headline, primary
            if primary in ("starttls-injection", "plaintext-auth"):
                expected = "‼ security"
            elif d[0].verdict == "match":
                expected = "✗ match"
            else:
                expected = f"{VERDICT_SYMBOLS[d[0].verdict]} {d[0].verdict}"
            assert line.startswith(expected) and headline.startswith(f" {expected}"), primary
        assert seen == set(recordings)
        found = listing.find("‼ security", 1, include_current=True)  # find sees the badge too
        assert found is not None and list_line(app, found).startswith("‼ security")


@run_async
async def test_the_help_explains_the_severity_badges(store) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        help_text = " ".join(str(s.render()) for s in app.screen.query("Static"))
        assert "‼ security" in help_text and "✗ match" in help_text and "⚠ match" in help_text


# --- keys of less: the detail scrolls, [ ] change session, find highlights and counts ----------


@run_async
async def test_space_b_and_ctrl_d_u_scroll_the_detail_in_the_split_view(store) -> None:
    app = app_on(store)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.pause()
        detail, listing = app.sessions.detail_pane, app.sessions.session_list
        assert detail.max_scroll_y > detail.size.height, "the detail overflows its pane"
        page = detail.size.height
        await pilot.press("space")
        assert detail.scroll_y == page and listing.cursor == 0 and listing.has_focus
        await pilot.press("b")
        assert detail.scroll_y == 0
        await pilot.press("ctrl+d")
        assert detail.scroll_y == page // 2
        await pilot.press("ctrl+d")
        assert detail.scroll_y == 2 * (page // 2)
        await pilot.press("ctrl+u")
        assert detail.scroll_y == page // 2
        assert listing.cursor == 0, "scrolling the detail never changes the session"


@run_async
async def test_in_the_full_screen_detail_arrows_scroll_and_brackets_change_session(
    store, sample
) -> None:
    app = app_on(store, show_all=True)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        listing, detail = app.sessions.session_list, app.sessions.detail_pane
        await pilot.press("enter")
        await pilot.pause()
        assert app.sessions.view is keys.View.DETAIL
        for key, expected in (("j", 1), ("down", 2), ("k", 1), ("up", 0)):
            await pilot.press(key)
            assert detail.scroll_y == expected, key
        await pilot.press("pagedown")
        assert detail.scroll_y == detail.size.height
        await pilot.press("pageup")
        assert detail.scroll_y == 0
        await pilot.press("G")
        assert detail.scroll_y == detail.max_scroll_y > 0
        await pilot.press("g")
        assert detail.scroll_y == 0
        assert listing.cursor == 0, "no key above changes the session"
        await pilot.press("]")  # typed as a terminal sends it
        assert listing.cursor == 1 and current_facts(app).id == sample[1].id
        assert app.sessions.view is keys.View.DETAIL
        await pilot.press("[")
        assert listing.cursor == 0 and current_facts(app).id == sample[0].id
        footer = screen_lines(app)[-1]
        assert "[/] Session" in footer and "space Page detail" in footer
        # A detail that fits: ↓ still scrolls (nothing to do), never switches the session.
        await pilot.press("q")
        await pilot.resize_terminal(160, 80)
        await pilot.press("enter")
        await pilot.pause()
        assert detail.max_scroll_y == 0
        await pilot.press("down", "pagedown", "space")
        assert listing.cursor == 0
        await pilot.press("q", "]")
        assert listing.cursor == 1, "[ and ] change the session in the list too"


@run_async
async def test_find_highlights_matches_and_shows_which_of_how_many(store) -> None:
    app = app_on(store, show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await pilot.press("slash", *"WRONG", "enter")
        listing = app.sessions.session_list
        await wait_for(pilot, lambda: app.sessions.find_position() == "1/2", "the count 1/2")
        status = str(app.query_one("#status").render())
        assert "find “WRONG” 1/2" in status
        line = listing.render_line(listing.cursor + 1 - round(listing.scroll_y))
        match = listing.get_component_rich_style("session-list--match")
        lit = [s.text for s in line if s.style and s.style.bgcolor == match.bgcolor]
        assert lit and all(text.lower() == "wrong" for text in lit)
        other = listing.render_line(1 + 0)  # the first session is not a match
        assert listing.items[0] != listing.cursor
        assert not [s for s in other if s.style and s.style.bgcolor == match.bgcolor]
        await pilot.press("n")
        assert app.sessions.find_position() == "2/2"
        await pilot.press("n")
        assert app.sessions.find_position() == "1/2", "find wraps around"
        await pilot.press("g")
        assert app.sessions.find_position() == "–/2"
        await pilot.press("N")
        assert app.sessions.find_position() == "2/2"
        await pilot.press("slash")
        app.screen.query_one("Input").value = ""
        await pilot.press("enter")
        assert "find" not in str(app.query_one("#status").render())
        assert not [
            s for s in listing.render_line(1) if s.style and s.style.bgcolor == match.bgcolor
        ]


def test_highlight_styles_every_occurrence_across_segments() -> None:
    from rich.segment import Segment
    from rich.style import Style

    from certmatch.tui.session_list import highlight

    bold, lit = Style(bold=True), Style(reverse=True)
    segments = [Segment("abXa", bold), Segment("bcab", None)]
    result = highlight(segments, "abXabcab", "AB", lit)
    assert "".join(s.text for s in result) == "abXabcab"
    marked = [(s.text, s.style is not None and bool(s.style.reverse)) for s in result]
    assert marked == [
        ("ab", True),
        ("X", False),
        ("a", True),  # a match split between two segments is lit in both
        ("b", True),
        ("c", False),
        ("ab", True),
    ]
    assert result[0].style is not None and result[0].style.bold  # its own style kept
    assert highlight(segments, "abXabcab", "zz", lit) == segments


# --- follow: the detail being read stays, the status counts the new sessions ------------------


@run_async
async def test_follow_keeps_the_detail_being_read_and_counts_new_sessions(
    store, sample, tmp_path
) -> None:
    path = tmp_path / "live.jsonl"
    failing = next(f for f in sample if diagnose(f, store).failed)
    with RecordingWriter(path, tool_version="test") as writer:
        for number in range(3):
            writer.write(_session(failing, number))
    app = app_on(store, path, follow=True, poll_interval=0.02)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: len(app.sessions.rows) == 3, "the first sessions")
        listing = app.sessions.session_list
        assert listing.cursor == 2
        await pilot.press("enter")  # reading the newest session, full screen
        with RecordingWriter(path, tool_version="test") as writer:
            for number in range(3, 5):
                writer.write(_session(failing, number))
        await wait_for(pilot, lambda: len(app.sessions.rows) == 5, "the appended sessions")
        assert listing.cursor == 2 and current_facts(app).id == "grown-2"
        await wait_for(
            pilot,
            lambda: "following +2 new (G: newest)" in str(app.query_one("#status").render()),
            "+2 new in the status",
        )
        await pilot.press("q")  # back to the list, where the detail was scrolled: still read
        await pilot.press("space")
        with RecordingWriter(path, tool_version="test") as writer:
            writer.write(_session(failing, 5))
        await wait_for(pilot, lambda: len(app.sessions.rows) == 6, "one more session")
        assert current_facts(app).id == "grown-2" and app.sessions.new_sessions == 3
        await pilot.press("G")
        assert listing.cursor == 5 and app.sessions.new_sessions == 0
        assert "new" not in str(app.query_one("#status").render())
        with RecordingWriter(path, tool_version="test") as writer:
            writer.write(_session(failing, 6))
        await wait_for(pilot, lambda: current_facts(app).id == "grown-6", "the list to move on")


# --- the live proxy's watch -----------------------------------------------------------------


def test_the_proxy_watch_reads_the_listen_line_errors_and_warnings_from_the_log(tmp_path) -> None:
    import subprocess
    import sys

    from certmatch.cli.proxy import exposure_warning, listen_banner
    from certmatch.tui.proxy_watch import LiveProxy, ProxyState, mitmproxy_ca_cert
    from certmatch.tui.screens.sessions import proxy_banner

    listeners = [("reverse:tls://mail.example.test:993", [("0.0.0.0", 8993)])]
    log = tmp_path / "live.jsonl.proxy.log"
    log.write_text("an earlier run's line: failed to listen on x\n")
    start = log.stat().st_size
    with log.open("a") as out:
        out.write("[13:30:38.837] Loading script capture.py\n")
        out.write(listen_banner(listeners, tmp_path / "live.jsonl") + "\n")
        out.write(f"{exposure_warning(listeners)}\n")
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    live = LiveProxy(
        child,
        log,
        modes=["reverse:tls://mail.example.test:993"],
        ca_cert=mitmproxy_ca_cert(tmp_path / "conf"),
        log_offset=start,
    )
    assert live.ca_cert == tmp_path / "conf" / "mitmproxy-ca-cert.pem"
    assert mitmproxy_ca_cert(None).name == "mitmproxy-ca-cert.pem"
    child.wait()
    with log.open("a") as out:
        out.write("[13:31:00.000] certmatch: could not write session 1 to the recording (")
        out.write("OSError: [Errno 28] No space left on device). Traffic continues.\n")
        out.write("\x1b]2;title\x07 certmatch: internal error in x (no newline at the end)")
    state = live.check()
    assert state.listening == "0.0.0.0:8993 (reverse:tls://mail.example.test:993)"
    assert state.warning.startswith("certmatch: WARNING: the proxy listens on 0.0.0.0:8993")
    assert (state.running, state.exit_code, state.errors) == (False, 3, 2)  # not the earlier run's
    assert state.first_errors[0].startswith("certmatch: could not write session 1")
    assert "\x1b" not in state.last_error and "\\x1b]2;title" in state.last_error  # escaped
    assert state.tail[0] == "Loading script capture.py"  # timestamps dropped
    assert "check the disk space" in state.advice and state.failed
    banner = str(proxy_banner(live, state))
    assert banner.startswith("✗ The proxy stopped (exit 3): nothing more is recorded.")
    assert "could not write session 1" in banner and f"Its whole log: {log}" in banner
    running = ProxyState(listening="0.0.0.0:8993 (reverse:tls://mail.example.test:993)")
    assert "clients trust" in str(proxy_banner(live, running))
    live.observe = True  # observe mode: the clients must not be told to trust certmatch's CA
    observing = str(proxy_banner(live, running))
    assert "clients trust" not in observing and "server's own certificate" in observing


def test_a_failed_start_is_told_by_its_cause_not_mitmproxys_last_word(tmp_path) -> None:
    """`proxy --mode local` without sudo: mitmproxy logs the cause, a Rust stack, then
    "Error logged during startup, exiting...". The banner must say the cause (trial T)."""
    from certmatch.tui.proxy_watch import LiveProxy, mitmproxy_ca_cert

    log = tmp_path / "x.log"
    log.write_text(
        "[05:03:20.963] Loading script starttls.py\n"
        "[05:03:20.979] Failed to run sudo.\n\nCaused by:\n    No such file or directory (os "
        "error 2)\n\nStack backtrace:\n   0: <unknown>\n   1: start_thread\n"
        "             at ./nptl/pthread_create.c:442:8\n"
        "Error logged during startup, exiting...\n"
    )

    class Exited:
        def poll(self) -> int:
            return 1

    live = LiveProxy(Exited(), log, modes=["local"], ca_cert=mitmproxy_ca_cert(tmp_path / "conf"))
    state = live.check()
    assert state.first_errors == [
        "Failed to run sudo. Caused by: No such file or directory (os error 2)",
        "Error logged during startup, exiting...",
    ]


def test_a_dead_proxys_banner_fits_its_log_to_the_screen_and_keeps_its_last_line(
    tmp_path,
) -> None:
    import subprocess
    import sys

    from certmatch.tui.proxy_watch import LiveProxy, ProxyState, mitmproxy_ca_cert
    from certmatch.tui.screens.sessions import proxy_banner

    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(0)"])
    child.wait()
    live = LiveProxy(
        child,
        tmp_path / "x.log",
        modes=["reverse:tls://mail.example.test:993"],
        ca_cert=mitmproxy_ca_cert(tmp_path / "conf"),
    )
    tail = [f"line {n} " + "word " * 30 for n in range(20)]
    state = ProxyState(running=False, exit_code=-9, tail=tail)
    lines = str(proxy_banner(live, state, width=78, log_lines=6)).splitlines()
    assert lines[0].startswith("✗ The proxy stopped (killed by SIGKILL)")
    log = lines[1:-1]
    assert len(log) == 6 and all(len(line) <= 78 for line in log)
    assert log[-1].startswith("    ") and "line 19" in " ".join(log)  # the real end, indented
    assert lines[-1].endswith("q quits.")


# --- the filter language: ! everywhere, errors that suggest, cause prefixes -------------------


def test_every_field_takes_an_exclusion() -> None:
    f = Filter.parse("host:!example.org protocol:!smtp verdict:!match severity:!ok !test")
    assert f.excluded_hosts == ("example.org", "test") and f.excluded_protocols == {"smtp"}
    assert f.excluded_verdicts == {"match"} and f.excluded_severities == {"ok"}
    assert not f.hosts and not f.protocols and not f.empty
    both = Filter.parse("host:mail,!old !cause:wildcard-apex,expired")
    assert both.hosts == ("mail",) and both.excluded_hosts == ("old",)
    assert both.excluded_causes == {"wildcard-apex", "expired"}


def test_unknown_values_are_errors_that_suggest_the_right_one() -> None:
    for text, words in (
        ("protocol:imaps", "unknown protocol 'imaps' (did you mean imap?)"),
        ("protocol:smtps", "(did you mean submission"),
        ("verdict:mach", "(did you mean match"),
        ("severity:sec", "(did you mean security?)"),
        ("cause:apex", "(did you mean wildcard-apex?)"),
        ("cause:expird", "(did you mean expired"),
        ("hots:x", "(did you mean host"),
        ("protocol:", "protocol: needs a value, e.g. protocol:imap"),
        ("host:!", "nothing after !"),
    ):
        with pytest.raises(FilterError) as error:
            Filter.parse(text)
        assert words in str(error.value), text
        assert "\n" not in str(error.value)


def test_a_cause_filter_takes_the_start_of_ids() -> None:
    from certmatch.core.causes import CAUSES

    wildcard = {c for c in CAUSES if c.startswith("wildcard-")}
    assert len(wildcard) > 1 and Filter.parse("cause:wildcard").causes == wildcard
    assert Filter.parse("cause:!wildcard").excluded_causes == wildcard
    assert Filter.parse("cause:expired").causes == {"expired"}  # an id is itself, not a prefix


@run_async
async def test_exclusions_prefixes_and_the_hint_about_a_in_the_list(store, sample) -> None:
    app = app_on(store, show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")

        async def apply(text: str) -> list[Row]:
            await pilot.press("f")
            app.screen.query_one("Input").value = text
            await pilot.press("enter")
            return [app.sessions.rows[i] for i in app.sessions.session_list.items]

        without = await apply("host:!wrong")
        assert len(without) == len(sample) - 2 and all("wrong" not in r.host for r in without)
        assert await apply("!wrong") == without
        not_imap = await apply("protocol:!imap")
        assert not_imap and all(r.protocol != "imap" for r in not_imap)
        assert len(not_imap) == sum(f.protocol != "imap" for f in sample)
        wildcards = await apply("cause:wildcard")
        assert {r.judgement.primary for r in wildcards} == {"wildcard-too-deep", "wildcard-apex"}
        await pilot.press("f")
        app.screen.query_one("Input").value = "protocol:imaps"
        await pilot.press("enter")
        assert isinstance(app.screen, PromptScreen)
        assert "did you mean imap" in str(app.screen.query_one("#prompt-error").render())
        await pilot.press("escape")
        # Failing only, and only passing sessions match: the message says a shows them.
        assert await apply("verdict:match severity:ok") != []
        await pilot.press("a")
        assert app.sessions.session_list.items == []
        message = app.sessions.session_list.empty_message
        assert "No failing session matches" in message and "press a" in message


# --- follow that survives real files: missing, empty, rotated, truncated; time order -------


def _write(path: Path, sessions: list[SessionFacts]) -> None:
    with RecordingWriter(path, tool_version="test") as writer:
        for facts in sessions:
            writer.write(facts)


def _notes(app: CertmatchApp) -> list[str]:
    return app.sessions.notes


@run_async
async def test_follow_reads_the_new_file_after_a_rotation_by_renaming(
    store, sample, tmp_path
) -> None:
    path = tmp_path / "live.jsonl"
    _write(path, [_session(sample[0], 0), _session(sample[1], 1)])
    app = app_on(store, path, follow=True, show_all=True, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.sessions.rows) == 2, "the first sessions")
        rotated = tmp_path / "live.jsonl.1"
        path.rename(rotated)
        _write(rotated, [_session(sample[2], 2)])  # the writer had it open still
        _write(path, [_session(sample[3], 3), _session(sample[4], 4)])
        await wait_for(pilot, lambda: len(app.sessions.rows) == 5, "the new file's sessions")
        ids = [
            app.sessions.loader.sources[r.source].read_back(r.offset).id for r in app.sessions.rows
        ]
        assert ids == [f"grown-{n}" for n in range(5)]
        assert any("was replaced (rotated)" in note for note in _notes(app))
        app.sessions.session_list.cursor = 0
        await pilot.pause()
        assert current_facts(app).id == "grown-0", "a rotated file's sessions stay readable"
        status = str(app.query_one("#status").render())
        assert status.endswith("live.jsonl") and "files" not in status  # one name


@run_async
async def test_follow_reads_a_truncated_file_again_from_its_start(store, sample, tmp_path) -> None:
    from certmatch.tui.severity import badge

    path = tmp_path / "live.jsonl"
    _write(path, [_session(sample[n], n) for n in range(3)])
    app = app_on(store, path, follow=True, show_all=True, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.sessions.rows) == 3, "the first sessions")
        path.write_bytes(b"")  # truncated, as logrotate's copytruncate does
        _write(path, [_session(sample[5], 5)])
        await wait_for(pilot, lambda: len(app.sessions.rows) == 4, "the session after truncation")
        last = app.sessions.rows[-1]
        assert app.sessions.loader.sources[last.source].read_back(last.offset).id == "grown-5"
        assert any("was truncated" in note for note in _notes(app))
        app.sessions.session_list.cursor = 0
        await pilot.pause()
        assert app.sessions.detail_pane.detail is None
        text = detail_text(app)
        assert "can no longer be read back" in text
        # What the list knew stays on screen: the badge, the cause, what was asked.
        first = app.sessions.rows[0]
        assert badge(first.judgement.verdict, first.judgement.causes)[0] in text
        assert first.judgement.primary in text  # "" for a match
        assert f"asked {first.host}" in text and "→ certificate:" in text


@run_async
async def test_follow_waits_for_an_empty_file_and_a_directory_gains_files(
    store, sample, tmp_path
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    files, directories = run_view_inputs([str(tmp_path)], follow=True)
    assert files == [empty] and directories == [tmp_path]
    app = CertmatchApp(
        files, store=store, follow=True, show_all=True, poll_interval=0.02, directories=[tmp_path]
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.sessions.initial_load_done, "the first pass")
        assert f"waiting for {empty.name}" in str(app.query_one("#status").render())
        _write(empty, [_session(sample[0], 0)])
        await wait_for(pilot, lambda: len(app.sessions.rows) == 1, "the file once written")
        _write(tmp_path / "later.jsonl", [_session(sample[1], 1)])
        await wait_for(pilot, lambda: len(app.sessions.rows) == 2, "a new file in the directory")
        assert "2 files: empty.jsonl, later.jsonl" in str(app.query_one("#status").render())


def test_view_inputs_wait_when_following_and_skip_empty_files_in_a_directory(
    store, sample, tmp_path
) -> None:
    missing = tmp_path / "not-yet.jsonl"
    assert run_view_inputs([str(missing)], follow=True) == ([missing], [])
    with pytest.raises(RecordingError, match="no such directory"):
        run_view_inputs([str(tmp_path / "nope" / "x.jsonl")], follow=True)
    with pytest.raises(RecordingError, match="no such file"):
        run_view_inputs([str(missing)], follow=False)
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    with pytest.raises(RecordingError, match="empty"):
        run_view_inputs([str(empty)], follow=False)  # named alone: nothing to show
    good = tmp_path / "good.jsonl"
    _write(good, [_session(sample[0], 0)])
    files, _ = run_view_inputs([str(tmp_path)], follow=False)
    assert files == [empty, good]
    loader = Loader(files, Judge(store))
    batches: list = []
    loader.poll(batches.append, final=True)
    rows = [row for batch in batches for row in batch.rows]
    notes = [note for batch in batches for note in batch.notes]
    assert len(rows) == 1 and notes == [f"{empty}: the file is empty (no header yet); skipped"]
    assert not [error for batch in batches for error in batch.errors]


@run_async
async def test_at_80_columns_the_status_says_an_empty_file_was_skipped(
    store, sample, tmp_path
) -> None:
    (tmp_path / "empty.jsonl").touch()
    _write(tmp_path / "good.jsonl", [_session(sample[0], 0)])
    files, _ = run_view_inputs([str(tmp_path)], follow=False)
    app = app_on(store, *files, show_all=True)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recordings to load")
        await pilot.pause()
        assert "1 empty file skipped" in screen_lines(app)[0]  # before the file names


@run_async
async def test_sessions_of_several_files_are_in_time_order(store, sample, tmp_path) -> None:
    def at(number: int, minute: int) -> SessionFacts:
        facts = _session(sample[number], number)
        facts.started = f"2026-01-01T10:{minute:02d}:00+00:00"
        return facts

    _write(tmp_path / "a.jsonl", [at(0, 1), at(1, 3), at(2, 5)])
    _write(tmp_path / "b.jsonl", [at(3, 2), at(4, 4)])
    app = app_on(store, tmp_path / "a.jsonl", tmp_path / "b.jsonl", show_all=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.sessions.initial_load_done, "the recordings to load")
        times = [app.sessions.rows[i].time for i in app.sessions.session_list.items]
        assert times == [f"2026-01-01 10:0{m}:00" for m in (1, 2, 3, 4, 5)]
        app.sessions.session_list.cursor = 1
        await pilot.pause()
        assert current_facts(app).id == "grown-3"


@run_async
async def test_the_cursor_starts_on_the_earliest_failing_session_of_several_files(
    store, sample, tmp_path
) -> None:
    """Put in time order, the list's row numbers change: the cursor nobody moved must not
    follow a stale number to another row (it did, showing the 2nd session's detail)."""
    passing = [f for f in sample if not diagnose(f, store).failed]
    failing = [f for f in sample if diagnose(f, store).failed]

    def at(template: SessionFacts, number: int, minute: int) -> SessionFacts:
        facts = _session(template, number)
        facts.started = f"2026-01-01T10:{minute:02d}:00+00:00"
        return facts

    # In file order the first failing session is a's third; in time order it is b's first.
    _write(
        tmp_path / "a.jsonl",
        [at(passing[0], 0, 1), at(passing[0], 1, 3), at(failing[0], 2, 5)],
    )
    _write(tmp_path / "b.jsonl", [at(failing[0], 3, 0), at(failing[0], 4, 2)])
    app = app_on(store, tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recordings to load")
        await pilot.pause()
        listing = app.sessions.session_list
        times = [app.sessions.rows[i].time for i in listing.items]
        assert times == [f"2026-01-01 10:0{m}:00" for m in (0, 2, 5)]
        assert listing.cursor == 0 and current_facts(app).id == "grown-3"


def test_a_huge_line_is_one_problem_read_in_bounded_pieces(store, sample, tmp_path) -> None:
    from certmatch.core.recording import LINE_LIMIT

    path = tmp_path / "huge.jsonl"
    _write(path, [_session(sample[0], 0)])
    huge = b'{"type":"session","id":"' + b"x" * (3 * LINE_LIMIT)
    with path.open("ab") as raw:
        raw.write(huge[: 2 * LINE_LIMIT])  # a writer still writing it
    source = RecordingSource(path)
    items = [item for _, item in source.read_new(final=False)]
    assert [type(i).__name__ for i in items] == ["SessionFacts", "LineProblem"]
    assert "longer than 1 MB" in str(items[1])
    with path.open("ab") as raw:
        raw.write(huge[2 * LINE_LIMIT :] + b'"}\n')
    _write(path, [_session(sample[1], 1)])
    later = [item for _, item in source.read_new(final=False)]
    assert [getattr(i, "id", None) for i in later] == ["grown-1"], "the rest is skipped, once"
    source.close()
    # Read at once, as view reads a finished file: the same, and the offsets read back.
    loader = Loader([path], Judge(store))
    batches: list = []
    loader.poll(batches.append, final=True)
    rows = [row for batch in batches for row in batch.rows]
    assert [loader.sources[0].read_back(r.offset).id for r in rows] == ["grown-0", "grown-1"]
    assert len([p for batch in batches for p in batch.problems]) == 1


@pytest.mark.parametrize("final", [True, False], ids=["view", "follow"])
def test_parts_read_by_other_processes_give_the_rows_and_problems_of_one_reader(
    store, sample, tmp_path, monkeypatch, final
) -> None:
    """A big file's first pass read by three processes: the same rows, in file order, the
    same skipped lines with the same line numbers, and it ends where one reader would."""
    from certmatch.core.recording import LINE_LIMIT

    path = tmp_path / "big.jsonl"
    _write(path, [_session(sample[n % len(sample)], n) for n in range(90)])
    with path.open("ab") as raw:
        raw.write(b"not json\n")
        raw.write(b'{"type":"session","id":"' + b"x" * (LINE_LIMIT + 10) + b'"}\n')
    _write(path, [_session(sample[n % len(sample)], n) for n in range(90, 150)])
    with path.open("ab") as raw:
        raw.write(b"{}\n")
    _write(path, [_session(sample[n % len(sample)], n) for n in range(150, 200)])
    with path.open("ab") as raw:
        raw.write(b'{"type":"session","id":"cut')  # a last line its writer has not finished
    monkeypatch.setattr("certmatch.tui.loader.SPLIT_BYTES", 1)

    def read(workers: int) -> tuple[list, list, int, int]:
        loader = Loader([path], Judge(store), workers=workers)
        batches: list = []
        loader.poll(batches.append, final=final)
        rows = [
            (r.offset, r.time, r.host, r.sni, r.judgement.verdict, r.judgement.primary)
            for batch in batches
            for r in batch.rows
        ]
        problems = [str(p) for batch in batches for p in batch.problems]
        source = loader.sources[0]
        return rows, problems, source.offset, source.line_number

    one = read(1)
    assert len(one[0]) == 200 and len(one[1]) == (4 if final else 3)
    for workers in (2, 3):
        assert read(workers) == one, f"{workers} processes"


def test_full_collections_wait_only_while_a_big_first_pass_comes(
    store, sample, tmp_path, monkeypatch
) -> None:
    """The rows of a big first pass stay for good: the collector's full collections wait
    while they arrive (each would walk them all again), and resume at the end of the pass."""
    import gc

    from certmatch.tui import reader

    path = tmp_path / "big.jsonl"
    _write(path, [_session(sample[n % len(sample)], n) for n in range(30)])
    monkeypatch.setattr(reader, "BIG_BATCH_ROWS", 1)
    before = gc.get_threshold()
    process = reader.ReaderProcess([path], Judge(store))
    try:
        kinds, thresholds = [], []
        while not kinds or kinds[-1] != "pass":
            kind, batch = process.receive()
            kinds.append(kind)
            thresholds.append(gc.get_threshold())
            assert kind in ("batch", "pass"), batch
        assert kinds[0] == "batch"
        assert thresholds[0] == (*before[:2], reader.FULL_COLLECTIONS_DEFERRED)
        assert thresholds[-1] == before, "full collections resume at the end of the pass"
    finally:
        process.stop()
        gc.set_threshold(*before)


@pytest.mark.parametrize("parts", [1, 2, 3, 6, 16])
def test_the_reader_reads_a_smaller_part_as_it_also_passes_the_others_on(parts) -> None:
    bounds = split_read.part_bounds(1000, 101_000, parts)
    assert bounds[0] == 1000 and bounds[-1] == 101_000 and len(bounds) == parts + 1
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    assert min(sizes) >= 0
    if parts == 1:
        return
    assert sizes[0] < min(sizes[1:]), "the reader's own part is the smallest"
    assert max(sizes[1:]) - min(sizes[1:]) <= parts, "the others are equal"
    # The reader's work (its part, and passing on the rest) equals each other reader's.
    reader = sizes[0] + split_read.FORWARD_COST * sum(sizes[1:])
    assert reader == pytest.approx(sizes[1], rel=0.01) or sizes[0] == 0


@pytest.mark.parametrize(
    ("cores", "running", "readers"),
    [(2, [1, 1, 1], 2), (2, [2, 2, 2], 2), (2, [3, 3, 2], 1), (2, [5, 4, 5], 1), (8, [3, 4, 3], 7)]
    + [(1, [1, 1, 1], 1)],
)
def test_a_big_file_is_read_by_one_process_per_idle_core(monkeypatch, cores, running, readers):
    """/proc/loadavg's running tasks, the sampling process among them, decide; the 1-minute
    load average (high here: work that just ended) does not."""
    samples = iter(running)

    def loadavg(path, encoding):
        assert path == "/proc/loadavg"
        return io.StringIO(f"3.90 2.10 1.70 {next(samples)}/190 4242\n")

    monkeypatch.setattr(split_read, "cores", lambda: cores)
    monkeypatch.setattr(split_read, "open", loadavg, raising=False)
    monkeypatch.setattr(split_read.os, "getloadavg", lambda: (3.9, 2.1, 1.7))
    assert split_read.readers_to_use() == readers


@pytest.mark.parametrize(("load", "readers"), [(0.4, 2), (1.6, 1), (3.5, 1)])
def test_without_proc_loadavg_the_load_average_decides(monkeypatch, load, readers):
    def missing(path, encoding):
        raise FileNotFoundError(path)

    monkeypatch.setattr(split_read, "cores", lambda: 2)
    monkeypatch.setattr(split_read, "open", missing, raising=False)
    monkeypatch.setattr(split_read.os, "getloadavg", lambda: (load, load, load))
    assert split_read.readers_to_use() == readers


def test_busy_cores_counts_processes_running_now() -> None:
    """Two spinning processes are counted within a few samples (on a machine with others
    at work the count is higher still, never lower)."""
    import subprocess
    import sys

    spin = [
        sys.executable,
        "-c",
        "import time\nend = time.time() + 5\nwhile time.time() < end: pass",
    ]
    spinners = [subprocess.Popen(spin) for _ in range(2)]
    try:
        threading.Event().wait(0.3)  # not time.sleep, which fails under faketime
        assert split_read.busy_cores(samples=20, interval=0.01) >= 1.5
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_a_loader_takes_a_judge_per_file(store, sample, tmp_path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write(a, [_session(sample[0], 0)])
    _write(b, [_session(sample[0], 1)])
    untrusting = Judge(TrustStore.load([], use_system=False))
    judges = {a: Judge(store), b: untrusting}
    asked: list[Path] = []

    def judge_for(path: Path) -> Judge:
        asked.append(path)
        return judges[path]

    loader = Loader([a, b], judge_for=judge_for)
    rows: list[Row] = []
    loader.poll(lambda batch: rows.extend(batch.rows), final=True)
    assert asked == [a, b]  # once per file
    assert [r.judgement.verdict for r in rows] == [diagnose(sample[0], store).verdict, "untrusted"]
    assert loader.judge_of(loader.sources[1]) is untrusting
    with pytest.raises(TypeError):
        Loader([a])
    # Followed before it exists: the judge is asked for once the header can be read.
    later = tmp_path / "later.jsonl"
    judges[later] = untrusting
    asked.clear()
    following = Loader([later], judge_for=judge_for)
    following.poll(lambda batch: None, final=False)
    assert asked == [] and following.waiting == [str(later)]
    _write(later, [_session(sample[0], 2)])
    following.poll(lambda batch: None, final=False)
    assert asked == [later]
    following.sources[0].close()


# --- contrast (WCAG AA) in the default theme; NO_COLOR and TERM=dumb -------------------------


def _luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour."""

    def linear(value: int) -> float:
        v = value / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def low_contrast(app: CertmatchApp, region=None) -> list[tuple[float, int, str]]:
    """(ratio, line, text) of every piece of text on screen below 4.5:1 (inside ``region``
    if given: a modal's, whose dimmed backdrop is not meant to be read). Lines and blocks
    (box drawing, scroll bars) are not text."""
    found = []
    for y, strip in enumerate(app.screen._compositor.render_strips()):
        x = 0
        for segment in strip:
            start, x = x, x + segment.cell_length
            text, style = segment.text, segment.style
            if region is not None and not (
                region.y <= y < region.bottom and region.x <= start < region.right
            ):
                continue
            if not text.strip() or all(0x2500 <= ord(c) <= 0x259F or c == " " for c in text):
                continue
            assert style is not None and style.color and style.bgcolor, (y, text)
            assert not style.dim, f"dim text is too faint: {text!r}"
            fg, bg = style.color.get_truecolor(), style.bgcolor.get_truecolor()
            if style.reverse:
                fg, bg = bg, fg
            ratio = contrast_ratio(tuple(fg), tuple(bg))
            if ratio < 4.5:
                found.append((round(ratio, 2), y, text.strip()))
    return found


def test_contrast_ratio_matches_wcag_examples() -> None:
    assert round(contrast_ratio((0, 0, 0), (255, 255, 255)), 1) == 21.0
    assert round(contrast_ratio((118, 118, 118), (255, 255, 255)), 2) == 4.54  # #767676
    assert contrast_ratio((255, 255, 255), (255, 255, 255)) == 1.0


@run_async
async def test_every_screen_reaches_wcag_aa_contrast_in_the_default_theme(store) -> None:
    recordings = [RECORDINGS / f"{n}.jsonl" for n in ("starttls-injection", "correct")]
    app = app_on(store, SAMPLE, *recordings, show_all=True)
    async with app.run_test(size=NEWCOMER) as pilot:
        await wait_for(pilot, lambda: app.sessions.initial_load_done, "the recordings to load")
        await pilot.pause()
        listing = app.sessions.session_list
        for position in range(len(listing.items)):  # every badge, on and off the cursor
            listing.cursor = position
            await pilot.pause()
            assert low_contrast(app) == [], f"the list, cursor on {position}"
        await pilot.press("slash", *"example", "enter")
        await pilot.pause()
        assert low_contrast(app) == [], "find's highlight"
        await pilot.press("enter")
        for position in range(len(listing.items)):  # every detail, page by page
            listing.cursor = position
            detail = app.sessions.detail_pane
            while True:
                await pilot.pause()
                assert low_contrast(app) == [], f"detail {position} at {detail.scroll_y}"
                if detail.scroll_y >= detail.max_scroll_y:
                    break
                await pilot.press("space")
        await pilot.press("q", "question_mark")
        await pilot.pause()
        assert low_contrast(app, app.screen.query_one("VerticalScroll").region) == []
        await pilot.press("escape", "f")
        app.screen.query_one("Input").value = "protocol:imaps"
        await pilot.press("enter")
        await pilot.pause()
        assert low_contrast(app, app.screen.query_one("Vertical").region) == [], "the prompt"
        await pilot.press("escape")
        await pilot.click(app.sessions.detail_pane)  # the list loses focus: its cursor dims
        await pilot.pause()
        assert not listing.has_focus and low_contrast(app) == []


@pytest.mark.parametrize("environ", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_without_colour_the_cursor_and_badges_use_reverse_and_bold(
    store, environ, monkeypatch
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    @run_async
    async def check() -> None:
        app = app_on(store, RECORDINGS / "starttls-injection.jsonl", SAMPLE, show_all=True)
        assert app.mono
        async with app.run_test(size=NEWCOMER) as pilot:
            await wait_for(pilot, lambda: app.sessions.initial_load_done, "the recordings")
            await pilot.pause()
            lines = app.screen._compositor.render_strips()
            for strip in lines:
                for segment in strip:
                    style = segment.style
                    if style is not None:
                        assert not style.color or style.color.is_default, segment
                        assert not style.bgcolor or style.bgcolor.is_default, segment
            listing = app.sessions.session_list
            cursor_line = lines[listing.region.y + 1 + listing.cursor]
            assert all(s.style and s.style.reverse for s in cursor_line if s.text.strip())
            security = next(
                i for i in range(len(listing.items)) if list_line(app, i).startswith("‼")
            )
            listing.cursor = (security + 1) % len(listing.items)
            await pilot.pause()
            row = listing.render_line(security + 1 - round(listing.scroll_y))
            badge_segment = next(s for s in row if s.text.startswith("‼"))
            assert badge_segment.style.reverse and badge_segment.style.bold

    check()


def test_the_footer_shows_a_group_as_keys_with_slashes_and_only_what_fits_whole() -> None:
    down = Binding("j,down", "cursor_down", "Next session", group=keys.MOVE)
    up = Binding("k,up", "cursor_up", "Previous session", group=keys.MOVE)
    hidden = Binding("g", "top", "First", group=keys.MOVE, show=False)
    help_ = Binding("question_mark", "help", "Help")
    find = Binding("slash", "find", "Find")
    entries = footer_entries(
        [(help_, True, ""), (down, True, ""), (hidden, True, ""), (up, True, ""), (find, True, "")],
        lambda b: {"question_mark": "?", "slash": "/"}.get(b.key, b.key.split(",")[0]),
    )
    assert [(e.display, e.description, e.actions) for e in entries] == [
        ("?", "Help", ("help",)),
        ("j/k", "Move", ("cursor_down", "cursor_up")),
        ("/", "Find", ("find",)),
    ]
    assert [e.width for e in entries] == [7, 9, 7]
    # What does not fit is left out whole; a later, shorter entry may still fit.
    assert fitting(entries, 15) == [entries[0], entries[2]]
    assert fitting(entries, 6) == []


@run_async
@pytest.mark.parametrize("width", [80, 90, 100, 160])
async def test_the_footer_keeps_help_and_quit_and_never_runs_keys_together(store, width) -> None:
    app = app_on(store)
    async with app.run_test(size=(width, 24)) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        for view, first in ((keys.View.LIST, "? Help q Quit j/k Move "), (keys.View.DETAIL, "")):
            if view is keys.View.DETAIL:
                await pilot.press("enter")
                first = "? Help q Back "
            await wait_for(
                pilot,
                lambda first=first: footer_settled(app) and screen_lines(app)[-1].startswith(first),
                "the footer to be composed for the view",
            )
            footer = screen_lines(app)[-1]
            assert len(footer) == width
            assert footer.startswith(first), footer
            # Every entry whole, one space apart, the palette's key flush right (nothing of
            # a hidden key shows after it, as "^p paletter" did).
            entries = " ".join(f"{e.display} {e.description}" for e in footer_entries_shown(app))
            assert footer.startswith(entries + " ") and footer.endswith("▏^p palette"), footer
            assert "jk" not in footer and "PgDnPgUp" not in footer
            if width <= 100:
                assert len(footer_entries_shown(app)) < len(
                    footer_entries(
                        [(b, e, t) for _n, b, e, t in app.screen.active_bindings.values()],
                        app.get_key_display,
                    )
                ), "a narrow footer leaves keys out (the help lists them all)"


@run_async
async def test_the_footer_chooses_its_keys_again_when_the_width_changes(store) -> None:
    app = app_on(store)
    async with app.run_test(size=(160, 24)) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the recording to load")
        await wait_for(pilot, lambda: footer_settled(app), "the footer to be composed")
        wide = [e.description for e in footer_entries_shown(app)]
        assert "Export" in wide and "Filter" in wide
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: footer_settled(app), "the footer to be composed again")
        narrow = [e.description for e in footer_entries_shown(app)]
        assert "Export" not in narrow and narrow[:3] == ["Help", "Quit", "Move"]
        assert screen_lines(app)[-1].endswith("▏^p palette")
        await pilot.resize_terminal(160, 24)
        await wait_for(pilot, lambda: footer_settled(app), "the footer to be composed again")
        assert [e.description for e in footer_entries_shown(app)] == wide
