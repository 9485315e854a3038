"""Read a recording incrementally, remembering where each session's line starts.

The TUI keeps only a small row per session in memory and reads a session's
full facts back from its file when it is shown, so it needs the byte offset
of every line; and it follows files that a proxy is still appending to, so it
reads only complete lines and resumes where it stopped. Parsing and checking
a line is the domain's (``certmatch.core.recording``); this only walks the bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from certmatch.core import recording
from certmatch.core.facts import SessionFacts
from certmatch.core.recording import LineProblem, RecordingError

# Read this much at a time while loading; a line longer than this is still read whole.
_CHUNK = 1 << 20


@dataclass
class RecordingSource:
    """One recording file being read: where the next unread line starts, and its number."""

    path: Path
    offset: int = 0  # byte offset of the first unread line; 0 until the header was read
    line_number: int = 1  # number of the line at ``offset`` (the header is line 1)
    size_at_start: int = 0
    started: bool = False  # the header has been read and checked
    header_problem: LineProblem | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.path)

    def open_header(self) -> None:
        """Read and check the header; RecordingError if the file is not a recording."""
        _path, _header, offset, problem = recording.open_recording(self.path)
        self.offset = offset
        self.line_number = 2
        self.header_problem = problem
        self.started = True
        try:
            self.size_at_start = self.path.stat().st_size
        except OSError:
            self.size_at_start = 0

    def exists_with_header(self) -> bool:
        """True once the file exists and holds a complete first line (a proxy may not have written it yet)."""
        try:
            with self.path.open("rb") as file:
                return file.readline(64 * 1024).endswith(b"\n")
        except OSError:
            return False

    def read_new(self, *, final: bool) -> Iterator[tuple[int, SessionFacts | LineProblem]]:
        """(offset, session or problem) for every complete line after ``offset``.

        With ``final`` the file is not expected to grow, so an unterminated last
        line is reported (as the domain reports it); otherwise it is left unread
        until its writer finishes it.
        """
        if not self.started:
            self.open_header()
            if self.header_problem is not None:
                yield 0, self.header_problem
        with self.path.open("rb") as file:
            file.seek(self.offset)
            pending = b""
            while True:
                chunk = file.read(_CHUNK)
                if not chunk:
                    break
                data = pending + chunk
                start = 0
                while True:
                    end = data.find(b"\n", start)
                    if end < 0:
                        break
                    raw = data[start : end + 1]
                    item = recording.parse_line(self.name, self.line_number, raw, last=False)
                    line_offset = self.offset
                    self.offset += len(raw)
                    self.line_number += 1
                    start = end + 1
                    if item is not None:
                        yield line_offset, item
                pending = data[start:]
            if pending and final:
                item = recording.parse_line(self.name, self.line_number, pending, last=True)
                line_offset = self.offset
                self.offset += len(pending)
                self.line_number += 1
                if item is not None:
                    yield line_offset, item


def read_session_at(path: Path, offset: int) -> SessionFacts:
    """The session whose line starts at ``offset``; RecordingError if it cannot be read back."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            raw = file.readline()
    except OSError as error:
        raise RecordingError(
            path, f"cannot read the session back ({error.strerror or error})"
        ) from None
    item = recording.parse_line(str(path), 0, raw, last=True)
    if not isinstance(item, SessionFacts):
        raise RecordingError(path, f"the session at byte {offset} changed since it was loaded")
    return item
