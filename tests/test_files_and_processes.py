"""Files and processes: what certmatch creates is owner-only, the banner tells where the proxy
really listens (and warns off loopback), and a write cut by a full disk never merges records.

Pure: no server, no sleep. The proxy run as a process is in test_proxy_process.py.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from certmatch.cli import proxy
from certmatch.core import recording
from certmatch.core.facts import SessionFacts
from certmatch.core.recording import RecordingError, RecordingWriter, read_recording

pytestmark = pytest.mark.pure


def session(number: int) -> SessionFacts:
    return SessionFacts(
        id=f"s{number}",
        started="2025-03-01T10:00:00.250000+00:00",
        protocol="imap",
        requested_host="mail.example.org",
        requested_host_source="sni",
        sni="mail.example.org",
    )


@pytest.fixture
def umask() -> Iterator[None]:
    """Run the test under umask 000, the most permissive; restore the old one after."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- owner-only files -------------------------------------------------------------------------


@pytest.mark.usefixtures("umask")
def test_a_new_recording_is_owner_only_under_umask_000(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(session(1))
    assert mode_of(path) == 0o600


def test_a_new_recording_is_owner_only_under_the_usual_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "rec.jsonl"
        RecordingWriter(path, tool_version="test").close()
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600


def test_an_existing_recording_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    RecordingWriter(path, tool_version="test").close()
    path.chmod(0o640)  # its owner shares it with a group on purpose
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(session(1))
    assert mode_of(path) == 0o640
    assert [s.id for s in read_recording(path).sessions] == ["s1"]


@pytest.mark.usefixtures("umask")
def test_the_proxy_log_is_created_owner_only(tmp_path: Path) -> None:
    log = tmp_path / "rec.jsonl.proxy.log"
    with proxy.open_private(log) as file:
        file.write(b"one\n")
    with proxy.open_private(log) as file:  # appends, as each run of the proxy does
        file.write(b"two\n")
    assert mode_of(log) == 0o600
    assert log.read_bytes() == b"one\ntwo\n"


@pytest.mark.parametrize(
    ("mode", "who"), [(0o644, "every user"), (0o640, "its group"), (0o604, "every user")]
)
def test_an_existing_file_readable_by_others_is_named_in_a_warning(
    tmp_path: Path, mode: int, who: str
) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_bytes(b"")
    path.chmod(mode)
    warning = proxy.shared_file_warning(path)
    assert warning is not None
    assert f"{path} is readable by {who} (mode {mode:04o})" in warning
    assert f"chmod 600 {path}" in warning
    assert mode_of(path) == mode  # said, not changed


@pytest.mark.parametrize("mode", [0o600, 0o620, 0o700])
def test_no_warning_for_a_private_file(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_bytes(b"")
    path.chmod(mode)
    assert proxy.shared_file_warning(path) is None


def test_no_warning_for_a_file_not_yet_there(tmp_path: Path) -> None:
    assert proxy.shared_file_warning(tmp_path / "new.jsonl") is None


# --- the banner ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.7", False),
        ("fe80::1%eth0", False),
        ("localhost", False),  # a socket's address is always an IP; a name is not trusted
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert proxy.is_loopback(host) is loopback


def test_the_banner_lists_every_address_really_bound() -> None:
    listeners = [
        ("reverse:tls://mail.example.org:993", [("127.0.0.1", 40001)]),
        ("socks5@0", [("0.0.0.0", 40002), ("::", 40002, 0, 0)]),
    ]
    line = proxy.listen_banner(listeners, Path("rec.jsonl"))
    assert "proxy listening on 127.0.0.1:40001 (reverse:tls://mail.example.org:993); " in line
    assert "0.0.0.0:40002, [::]:40002 (socks5@0), recording to rec.jsonl." in line


def test_no_warning_when_only_loopback_is_bound() -> None:
    listeners = [("regular", [("127.0.0.1", 8080), ("::1", 8080, 0, 0)])]
    assert proxy.exposure_warning(listeners) is None


def test_a_warning_names_each_address_others_can_reach() -> None:
    listeners = [
        ("regular", [("127.0.0.1", 8080)]),
        ("reverse:tls://mail.example.org:993@0.0.0.0:26002", [("0.0.0.0", 26002)]),
        ("socks5@192.0.2.7:1080", [("192.0.2.7", 1080)]),
    ]
    warning = proxy.exposure_warning(listeners)
    assert warning is not None
    assert "listens on 0.0.0.0:26002 (every interface), 192.0.2.7:1080, not only on" in warning
    assert "127.0.0.1:8080" not in warning.split("To keep it local")[0]
    assert "Anyone who can reach that port can use the proxy" in warning


# --- a write cut short by a full disk -----------------------------------------------------------


class DiskFull:
    """os.write for the recording's fd: the next ``cuts`` calls write ``keep`` bytes and then
    fail with ENOSPC (as a real full disk: a short write, then the error)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, keep: int) -> None:
        self.real_write = os.write
        self.keep = keep
        self.cuts = 0
        self.fd: int | None = None
        monkeypatch.setattr(recording.os, "write", self)

    def __call__(self, fd: int, data: bytes) -> int:
        if fd != self.fd or self.cuts == 0:
            return self.real_write(fd, data)
        self.cuts -= 1
        if self.keep:
            self.real_write(fd, data[: self.keep])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def writer_on_a_disk_that_fills(
    path: Path, monkeypatch: pytest.MonkeyPatch, keep: int
) -> tuple[RecordingWriter, DiskFull]:
    disk = DiskFull(monkeypatch, keep)
    writer = RecordingWriter(path, tool_version="test")
    disk.fd = writer._fd
    return writer, disk


@pytest.mark.parametrize("keep", [1, 40, -2])  # bytes of the cut record on disk (-2: all but "}\n")
def test_after_a_full_disk_the_next_record_starts_on_a_fresh_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int
) -> None:
    path = tmp_path / "rec.jsonl"
    cut_length = len(recording._encode_line(session(2).to_json()))
    writer, disk = writer_on_a_disk_that_fills(path, monkeypatch, keep % cut_length)
    with writer:
        writer.write(session(1))
        disk.cuts = 1
        with pytest.raises(OSError, match="No space left"):
            writer.write(session(2))
        writer.write(session(3))  # space is back
        writer.write(session(4))

    result = read_recording(path)

    assert [s.id for s in result.sessions] == ["s1", "s3", "s4"]
    assert [p.line for p in result.problems] == [3]  # the cut record, alone on its line


def test_a_write_that_fails_before_any_byte_costs_at_most_a_blank_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error does not say how much was written: the next record starts afresh anyway."""
    path = tmp_path / "rec.jsonl"
    writer, disk = writer_on_a_disk_that_fills(path, monkeypatch, keep=0)
    with writer:
        writer.write(session(1))
        disk.cuts = 1
        with pytest.raises(OSError):
            writer.write(session(2))
        writer.write(session(3))
        writer.write(session(4))
    assert path.read_bytes().count(b"\n\n") == 1  # only before s3; s4 needs no fresh line
    result = read_recording(path)
    assert [s.id for s in result.sessions] == ["s1", "s3", "s4"]
    assert result.problems == []


def test_the_disk_still_full_for_the_fresh_line_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next write fails too, after only its leading newline: still no merge."""
    path = tmp_path / "rec.jsonl"
    writer, disk = writer_on_a_disk_that_fills(path, monkeypatch, keep=10)
    with writer:
        writer.write(session(1))
        disk.cuts = 1
        with pytest.raises(OSError):
            writer.write(session(2))
        disk.cuts, disk.keep = 1, 1  # only the newline that starts the next record
        with pytest.raises(OSError):
            writer.write(session(3))
        writer.write(session(4))
    lines = path.read_bytes().split(b"\n")  # header, s1, the cut s2, blank, s4, ""
    assert [len(line) for line in lines][2:4] == [10, 0]
    assert lines[4].startswith(b'{"id":"s4"')
    result = read_recording(path)
    assert [s.id for s in result.sessions] == ["s1", "s4"]
    assert [p.line for p in result.problems] == [3]


def test_a_cut_last_record_reads_as_the_usual_cut_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rec.jsonl"
    writer, disk = writer_on_a_disk_that_fills(path, monkeypatch, keep=25)
    with writer:
        writer.write(session(1))
        disk.cuts = 1
        with pytest.raises(OSError):
            writer.write(session(2))
    result = read_recording(path)
    assert [s.id for s in result.sessions] == ["s1"]
    assert result.partial_last_line


def test_a_new_writer_repairs_the_cut_tail_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rec.jsonl"
    writer, disk = writer_on_a_disk_that_fills(path, monkeypatch, keep=25)
    with writer:
        writer.write(session(1))
        disk.cuts = 1
        with pytest.raises(OSError):
            writer.write(session(2))
    monkeypatch.undo()
    with RecordingWriter(path, tool_version="test") as writer:  # the proxy restarted
        assert path.read_bytes().endswith(b"\n")
        writer.write(session(3))
    result = read_recording(path)
    assert [s.id for s in result.sessions] == ["s1", "s3"]
    assert [p.line for p in result.problems] == [3]


def test_a_repair_that_fails_on_open_is_a_recording_error_and_still_owed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rec.jsonl"
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(session(1))
    with path.open("ab") as file:
        file.write(b'{"type":"session","id":"s2"')
    before = path.read_bytes()
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(recording.os, "write", full)
    with pytest.raises(RecordingError, match="No space left on device"):
        RecordingWriter(path, tool_version="test")
    monkeypatch.setattr(recording.os, "write", real_write)
    assert path.read_bytes() == before
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(session(3))
    assert [s.id for s in read_recording(path).sessions] == ["s1", "s3"]


def test_a_session_with_every_byte_value_still_round_trips(tmp_path: Path) -> None:
    """The fresh-line logic looks at the last byte written: a record's own bytes never fool it."""
    path = tmp_path / "rec.jsonl"
    odd = dataclasses.replace(session(1), sni="a\nb\\n\udcff.example")
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(odd)
        writer.write(session(2))
    result = read_recording(path)
    assert [s.id for s in result.sessions] == ["s1", "s2"] and result.problems == []
