"""``certmatch view`` as a new user met it: a directory with one file that is not a recording
shows the others (and the bad file's problem) as ``check`` judges them, and the status line's
counts agree with their nouns."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from certmatch.core.facts import SessionFacts
from certmatch.core.recording import RecordingWriter, read_recording
from certmatch.core.trust import TrustStore
from certmatch.tui.app import CertmatchApp, NothingToView, recordings_to_view, run_view

pytestmark = pytest.mark.pure

DATA = Path(__file__).parent / "data" / "tui"
SAMPLE = DATA / "sample.jsonl"
NOT_A_RECORDING = '{"log": {"entries": []}}\n'  # a HAR file


def run_async(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return run


async def wait_for(pilot, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


@pytest.fixture(scope="module")
def store() -> TrustStore:
    return TrustStore.load([DATA / "root.pem"], use_system=False)


@pytest.fixture(scope="module")
def sample() -> list[SessionFacts]:
    return read_recording(SAMPLE).sessions


def _write(path: Path, sessions: list[SessionFacts], extra: str = "") -> Path:
    with RecordingWriter(path, tool_version="test") as writer:
        for facts in sessions:
            writer.write(facts)
    if extra:
        with path.open("a", encoding="utf-8") as file:
            file.write(extra)
    return path


def test_a_bad_file_in_a_directory_no_longer_refuses_the_others(sample, tmp_path) -> None:
    good = _write(tmp_path / "a-good.jsonl", sample[:1])
    bad = tmp_path / "b-notes.jsonl"
    bad.write_text(NOT_A_RECORDING, encoding="utf-8")
    files, directories = recordings_to_view([str(tmp_path)], follow=False)
    assert files == [good, bad] and directories == []
    # Named beside a good file, as check takes it: shown too, its problem in the TUI.
    assert recordings_to_view([str(bad), str(good)], follow=False)[0] == [bad, good]


def test_only_bad_files_are_still_refused_each_in_one_line(tmp_path, capsys) -> None:
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text(NOT_A_RECORDING, encoding="utf-8")
    with pytest.raises(NothingToView) as raised:
        recordings_to_view([str(tmp_path)], follow=False)
    assert [Path(e.path).name for e in raised.value.errors] == ["a.jsonl", "b.jsonl"]
    (tmp_path / "c-empty.jsonl").touch()  # skipped: no more readable than the others
    code = run_view([str(tmp_path)], follow=False, show_all=False, ca_files=[])
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("certmatch view: ") and "HAR" in line for line in lines)


@run_async
async def test_the_viewer_shows_the_good_file_and_names_the_bad_one(
    store, sample, tmp_path
) -> None:
    good = _write(tmp_path / "a-good.jsonl", sample[:1], extra='{"type": "session"}\n')
    bad = tmp_path / "b-notes.jsonl"
    bad.write_text(NOT_A_RECORDING, encoding="utf-8")
    files, directories = recordings_to_view([str(tmp_path)], follow=False)
    note = "not read: the recordings in subdirectories of X (X/old)"
    app = CertmatchApp(files, store=store, show_all=True, directories=directories, notes=[note])
    async with app.run_test(size=(160, 40)) as pilot:
        screen = app.sessions
        await wait_for(pilot, lambda: screen.initial_load_done, "the first pass")
        assert len(screen.rows) == 1
        status = str(app.query_one("#status").render())
        # One of each, in the singular: not "1 sessions", "1 bad lines".
        assert status.startswith("1 session, ")
        assert "1 bad line skipped" in status
        assert "b-notes.jsonl not read" in status
        titles = [n.title for n in app._notifications]
        assert "Cannot read a recording" in titles and "Note" in titles
        (error,) = screen.errors
        assert error.startswith(f"{bad}:1: ") and "HAR" in error
        assert screen.notes == [note]
    assert good.exists()


@run_async
async def test_the_empty_list_of_one_passing_session_is_in_the_singular(
    store, sample, tmp_path
) -> None:
    from certmatch.core.diagnosis import diagnose

    passing = next(f for f in sample if not diagnose(f, store).failed)
    path = _write(tmp_path / "one.jsonl", [passing])
    app = CertmatchApp([path], store=store, show_all=False)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: app.sessions.initial_load_done, "the first pass")
        assert app.sessions.session_list.empty_message == (
            "The one session does not fail. Press a to show it."
        )
