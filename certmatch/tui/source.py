"""Read a recording incrementally, remembering where each session's line starts.

The TUI keeps only a small row per session in memory and reads a session's
full facts back from its file when it is shown, so it needs the byte offset
of every line; and it follows files that a proxy is still appending to, so it
reads only complete lines and resumes where it stopped. Parsing and checking
a line is the domain's (``certmatch.core.recording``); this only walks the bytes.

Lines are read with ``readline(limit)``: a line longer than the domain's ``LINE_LIMIT`` is
one problem, skipped in pieces and never held whole, so reading stays linear in the file's
size whatever its lines. A followed file is held open, as ``tail -F`` does: the source notices
when its name comes to mean another file (rotation) or the file shrinks (truncation), and its
sessions stay readable from the file it read them from while that is possible.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from certmatch.core import recording
from certmatch.core.facts import SessionFacts
from certmatch.core.recording import LINE_LIMIT, LineProblem, RecordingError

_SKIP_PIECE = 64 * 1024  # how much of an overlong line is held at a time while skipping it
_READ_BACK_PIECE = 64 * 1024
READ_BUFFER = 256 * 1024

Change = Literal["missing", "replaced", "truncated"]


@dataclass
class RecordingSource:
    """One recording file being read: where the next unread line starts, and its number."""

    path: Path
    offset: int = 0  # byte offset of the first unread line; 0 until the header was read
    line_number: int = 1  # number of the line at ``offset`` (the header is line 1)
    size_at_start: int = 0
    started: bool = False  # the header has been read and checked
    header_problem: LineProblem | None = field(default=None, repr=False)
    identity: tuple[int, int] | None = None  # (device, inode) of the file read
    gone: str = ""  # why its sessions can no longer be read back: "" while they can
    retired: bool = False  # its name now means another file; its own file is held open
    stop_at: int | None = None  # read no line that starts here or later (a part's end)
    _file: BinaryIO | None = field(default=None, repr=False)
    _skipping: bool = field(default=False, repr=False)  # inside an overlong line

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def skipping(self) -> bool:
        """Inside an overlong line, already reported, whose rest is skipped."""
        return self._skipping

    @skipping.setter
    def skipping(self, value: bool) -> None:
        self._skipping = value

    def line_start_at_or_after(self, position: int) -> int:
        """The offset of the first line that starts at ``position`` or later (the file's
        size if none does)."""
        file = self._open()
        if position <= 0:
            return 0
        at = position - 1  # the byte before: a line starts at position if it is a newline
        while True:
            piece = os.pread(file.fileno(), _SKIP_PIECE, at)
            if not piece:
                return at
            end = piece.find(b"\n")
            if end >= 0:
                return at + end + 1
            at += len(piece)

    def open_header(self) -> None:
        """Read and check the header; RecordingError if the file is not a recording."""
        _path, _header, offset, problem = recording.open_recording(self.path)
        self.offset = offset
        self.line_number = 2
        self.header_problem = problem
        self.started = True
        try:
            status = self.path.stat()
        except OSError:
            self.size_at_start = 0
        else:
            self.size_at_start = status.st_size
            self.identity = (status.st_dev, status.st_ino)

    def exists_with_header(self) -> bool:
        """True once the file exists and holds a complete first line (a proxy may not have written it yet)."""
        try:
            with self.path.open("rb") as file:
                return file.readline(64 * 1024).endswith(b"\n")
        except OSError:
            return False

    def is_empty(self) -> bool:
        """True for an existing file of 0 bytes (a recording not begun)."""
        try:
            return self.path.is_file() and self.path.stat().st_size == 0
        except OSError:
            return False

    def changed(self) -> Change | None:
        """What happened to the file since it was opened: its name is ``missing`` or now names
        another file (``replaced``: rotated), or it is shorter than what was read
        (``truncated``); None while it is the same file."""
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return "missing"
        except OSError:
            return None
        if self.identity is not None and (status.st_dev, status.st_ino) != self.identity:
            return "replaced"
        if status.st_size < self.offset:
            return "truncated"
        return None

    def hold(self) -> None:
        """Open the file and keep it open, if it is still the one read (``identity``): its
        sessions stay readable after a rotation by renaming. Nothing happens otherwise."""
        if self._file is not None:
            return
        try:
            file = self.path.open("rb")
        except OSError:
            return
        status = os.fstat(file.fileno())
        if self.identity is not None and (status.st_dev, status.st_ino) == self.identity:
            self._file = file
        else:
            file.close()

    def retire(self) -> None:
        """Read no more: the name now means another file. The file read stays open, so the
        sessions read from it can still be shown (after a rotation by renaming)."""
        self.retired = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            file = self.path.open("rb", buffering=READ_BUFFER)  # a read call per 256 KiB
            status = os.fstat(file.fileno())
            if self.identity is not None and (status.st_dev, status.st_ino) != self.identity:
                file.close()
                raise RecordingError(self.path, "the file was replaced while it was read")
            self._file = file
        return self._file

    def read_new(self, *, final: bool) -> Iterator[tuple[int, SessionFacts | LineProblem]]:
        """(offset, session or problem) for every complete line after ``offset``.

        With ``final`` the file is not expected to grow, so an unterminated last
        line is reported (as the domain reports it) and the file is closed after;
        otherwise the line is left unread until its writer finishes it, and the file stays
        open for the next call.
        """
        if not self.started:
            self.open_header()
            if self.header_problem is not None:
                yield 0, self.header_problem
        file = self._open()
        try:
            yield from self._read_lines(file, final)
        finally:
            if final:
                self.close()

    def _read_lines(
        self, file: BinaryIO, final: bool
    ) -> Iterator[tuple[int, SessionFacts | LineProblem]]:
        file.seek(self.offset)
        readline = file.readline
        limit = LINE_LIMIT + 2
        name = self.name
        while True:
            if self.stop_at is not None and self.offset >= self.stop_at:
                return  # the next part's line
            if self._skipping:  # the rest of an overlong line, already reported
                while piece := readline(_SKIP_PIECE):
                    self.offset += len(piece)
                    if piece.endswith(b"\n"):
                        self._skipping = False
                        break
                if self._skipping:
                    return  # its end is not written yet
            raw = readline(limit)
            if not raw:
                return
            line_offset = self.offset
            if not raw.endswith(b"\n"):
                if len(raw) >= limit:  # longer than any record: one problem, skipped unread
                    item = recording.parse_line(name, self.line_number, raw, last=False)
                    self.offset += len(raw)
                    self.line_number += 1
                    self._skipping = True
                    del raw
                    if item is not None:
                        yield line_offset, item
                    continue
                if not final:
                    return  # its writer has not finished it
                item = recording.parse_line(name, self.line_number, raw, last=True)
            else:
                item = recording.parse_line(name, self.line_number, raw, last=False)
            self.offset += len(raw)
            self.line_number += 1
            if item is not None:
                yield line_offset, item

    def read_back(self, offset: int) -> SessionFacts:
        """The session whose line starts at ``offset``; RecordingError if it cannot be read
        back (the file was truncated or replaced since, or changed under it)."""
        if self.gone:
            raise RecordingError(
                self.path,
                f"the recording was {self.gone} after this session was read, so its details "
                "can no longer be read back; the list keeps what was read",
            )
        try:
            if self.retired and self._file is not None:  # no reader touches it any more
                raw = _read_line_at(self._file.fileno(), offset)
            else:
                with self.path.open("rb") as file:
                    status = os.fstat(file.fileno())
                    if self.identity is not None and (status.st_dev, status.st_ino) != (
                        self.identity
                    ):
                        raise RecordingError(
                            self.path,
                            "the recording was replaced after this session was read, so its "
                            "details can no longer be read back",
                        )
                    raw = _read_line_at(file.fileno(), offset)
        except OSError as error:
            raise RecordingError(
                self.path, f"cannot read the session back ({error.strerror or error})"
            ) from None
        item = recording.parse_line(self.name, 0, raw, last=True)
        if not isinstance(item, SessionFacts):
            raise RecordingError(
                self.path, f"the session at byte {offset} changed since it was loaded"
            )
        return item


def _read_line_at(fd: int, offset: int) -> bytes:
    """The line starting at ``offset`` (at most ``LINE_LIMIT`` + 2 bytes), read with
    ``pread``: the reader thread's position in the same file is left alone."""
    pieces: list[bytes] = []
    size = 0
    while size <= LINE_LIMIT:
        piece = os.pread(fd, _READ_BACK_PIECE, offset + size)
        if not piece:
            break
        end = piece.find(b"\n")
        if end >= 0:
            pieces.append(piece[: end + 1])
            break
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)
