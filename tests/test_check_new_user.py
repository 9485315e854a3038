"""``certmatch check`` as a new user met it: subdirectories it does not read are named, and a
recording whose only record was cut short is no pass."""

from __future__ import annotations

import json
import subprocess

import pytest
from proxy_fixtures import REPO, venv_bin

pytestmark = pytest.mark.pure

RECORDINGS = REPO / "recordings"
CA = RECORDINGS / "ca.pem"


def certmatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv_bin("certmatch"), *args], capture_output=True, text=True, check=False
    )


def _copy(name: str, to) -> None:
    to.mkdir(parents=True, exist_ok=True)
    (to / name).write_text((RECORDINGS / name).read_text(encoding="utf-8"), encoding="utf-8")


def test_check_dir_names_the_subdirectories_it_does_not_read(tmp_path):
    _copy("correct.jsonl", tmp_path)
    _copy("name-not-in-certificate.jsonl", tmp_path / "monday")
    _copy("expired.jsonl", tmp_path / "old" / "deeper")
    (tmp_path / "empty-subdir").mkdir()
    (tmp_path / ".git").mkdir()
    _copy("expired.jsonl", tmp_path / ".git")
    done = certmatch("check", "--ca-file", str(CA), str(tmp_path))
    assert done.returncode == 0, done.stderr  # what it read passes; the note changes nothing
    assert "1 session: 1 match" in done.stdout
    (note,) = done.stderr.strip().splitlines()
    assert note.startswith(
        f"certmatch: note: not read: the recordings in subdirectories of {tmp_path}"
    )
    assert f"({tmp_path / 'monday'}, {tmp_path / 'old' / 'deeper'})" in note
    assert "empty-subdir" not in note and ".git" not in note
    suggested = note.split("name them too: ")[1].split()
    assert suggested == [
        "certmatch",
        "check",
        str(tmp_path),
        str(tmp_path / "monday"),
        str(tmp_path / "old" / "deeper"),
    ]
    # ... and the command it suggests reads them all.
    done = certmatch("check", "--ca-file", str(CA), *suggested[2:])
    assert "3 sessions" in done.stdout


def test_a_directory_with_recordings_only_below_it_names_them(tmp_path):
    _copy("correct.jsonl", tmp_path / "a" / "b")
    done = certmatch("check", str(tmp_path))
    assert done.returncode == 2
    (error,) = done.stderr.strip().splitlines()
    assert "only in subdirectories" in error
    assert error.endswith(f"certmatch check {tmp_path / 'a' / 'b'}")


def test_a_directory_without_subdirectories_gets_no_note(tmp_path):
    _copy("correct.jsonl", tmp_path)
    done = certmatch("check", "--ca-file", str(CA), str(tmp_path))
    assert done.returncode == 0 and done.stderr == ""


def _cut_only(tmp_path, name: str = "cut.jsonl"):
    header, record = (RECORDINGS / "correct.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    path = tmp_path / name
    path.write_text(f"{header}\n{record[:300]}", encoding="utf-8")  # no newline: cut short
    return path


def test_a_file_whose_only_record_was_cut_is_an_input_error(tmp_path):
    path = _cut_only(tmp_path)
    done = certmatch("check", str(path))
    assert done.returncode == 2
    assert done.stdout == ""  # not "No sessions recorded.", which reads as a pass
    warning, error = done.stderr.strip().splitlines()
    assert warning.startswith(f"certmatch: warning: {path}:2:")
    assert error == (
        f"certmatch: error: no session was read: the only record, in {path}, was cut short "
        "(its writer was stopped while writing, or the disk was full), so nothing was judged; "
        "record the sessions again"
    )
    done = certmatch("check", "--json", str(path))
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["summary"]["sessions"] == 0
    assert report["problems"][-1].startswith("no session was read")


def test_a_cut_record_beside_a_readable_session_stays_a_warning(tmp_path):
    _cut_only(tmp_path)
    _copy("correct.jsonl", tmp_path)
    done = certmatch("check", "--ca-file", str(CA), str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "1 session: 1 match" in done.stdout
    assert "warning:" in done.stderr and "error:" not in done.stderr


def test_a_recording_with_a_header_only_is_still_no_error(tmp_path):
    path = tmp_path / "new.jsonl"
    header = (RECORDINGS / "correct.jsonl").read_text(encoding="utf-8").splitlines()[0]
    path.write_text(header + "\n", encoding="utf-8")
    done = certmatch("check", str(path))
    assert done.returncode == 0 and done.stdout == "No sessions recorded.\n"


def test_replay_names_the_subdirectories_it_does_not_read(tmp_path):
    _copy("correct.jsonl", tmp_path / "monday")
    done = certmatch("replay", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert (
        f"holds no *.jsonl recordings itself, only in subdirectories ({tmp_path / 'monday'})"
        in (done.stderr)
    )
    assert f"certmatch replay {tmp_path / 'monday'}" in done.stderr
