"""Read and judge the recordings in a process of their own, apart from the UI.

certmatch must judge every session to show the failing ones, and judging is Python work: in a
thread of the UI's process it holds the interpreter lock against the UI, so keys waited while
a big recording loaded or a fast one was followed. ``ReaderProcess`` forks (before the UI
starts any thread of its own) a process that runs a ``Loader`` and sends its batches over a
pipe, compactly: rows as tuples of plain values, each distinct judgement once. The UI's side
turns them back into rows and mirrors the sources, so that a session can be read back for the
detail pane, from the file it was read from.

Messages from the reader: ``("batch", Packed)``, ``("pass",)`` once it reached the end of every
file, ``("failed", text)``. To it: ``("follow", bool)``, ``("stop",)``.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from certmatch.core.judge import Judge, Judgement
from certmatch.core.recording import LineProblem
from certmatch.tui.loader import Batch, Loader
from certmatch.tui.model import Row
from certmatch.tui.source import RecordingSource
from certmatch.tui.split_read import readers_to_use

READER_NICENESS = 5
BIG_BATCH_ROWS = 10_000
FULL_COLLECTIONS_DEFERRED = 1 << 30  # gen1 collections before a full one: never, in practice

type PackedRow = tuple[int, int, str, str, str, str, str, str | None, int]


@dataclass(frozen=True)
class SourceState:
    """What the UI needs to know of one source to read its sessions back."""

    index: int
    path: str
    identity: tuple[int, int] | None
    gone: str
    retired: bool


@dataclass
class Packed:
    """A ``Batch`` as it crosses the pipe."""

    rows: list[PackedRow] = field(default_factory=list)
    judgements: list[tuple[int, Judgement]] = field(default_factory=list)  # new ones only
    problems: list[LineProblem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: list[SourceState] = field(default_factory=list)  # new or changed ones only
    waiting: list[str] = field(default_factory=list)
    bytes_read: int = 0
    bytes_total: int = 0
    diagnosed: int = 0
    changed: bool = True  # false for a pass that found nothing new


class _Packer:
    """The reader's side: numbers each judgement once, notes which sources changed."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self._numbers: dict[int, int] = {}
        self._kept: list[Judgement] = []  # holds each numbered judgement, so its id stays its
        self._sent: dict[int, SourceState] = {}
        self._waiting_sent: list[str] = []

    def pack(self, batch: Batch) -> Packed:
        numbers, kept = self._numbers, self._kept
        packed = Packed(
            problems=batch.problems,
            errors=batch.errors,
            notes=batch.notes,
            waiting=list(self.loader.waiting),
            bytes_read=batch.bytes_read,
            bytes_total=batch.bytes_total,
            diagnosed=sum(j.diagnosed for j in self.loader.judges()),
        )
        rows = packed.rows
        for row in batch.rows:
            j = row.judgement
            number = numbers.get(id(j))
            if number is None:
                number = numbers[id(j)] = len(kept)
                kept.append(j)
                packed.judgements.append((number, j))
            rows.append(
                (
                    row.source,
                    row.offset,
                    row.time,
                    row.protocol,
                    row.client,
                    row.host,
                    row.host_source,
                    row.sni,
                    number,
                )
            )
        for index, source in enumerate(list(self.loader.sources)):
            state = SourceState(index, source.name, source.identity, source.gone, source.retired)
            if self._sent.get(index) != state:
                self._sent[index] = state
                packed.sources.append(state)
        packed.changed = (
            bool(rows or packed.problems or packed.errors or packed.notes or packed.sources)
            or packed.waiting != self._waiting_sent
        )
        self._waiting_sent = packed.waiting
        return packed


def _serve(loader: Loader, conn: Connection, follow: bool, poll_interval: float) -> None:
    """The reader process: read, send, and while following read again every interval."""
    packer = _Packer(loader)
    stopping = False

    def handle(message: tuple[Any, ...]) -> None:
        nonlocal follow, stopping
        if message[0] == "follow":
            follow = bool(message[1])
        elif message[0] == "stop":
            stopping = True

    def cancelled() -> bool:
        while not stopping and conn.poll(0):
            handle(conn.recv())
        return stopping

    told = {"pass": False}  # anything sent in this pass
    first = True
    was_following = follow

    def emit(batch: Batch) -> None:
        packed = packer.pack(batch)
        # While following, most passes find nothing new: only what changed crosses the pipe.
        if first or packed.changed:
            conn.send(("batch", packed))
            told["pass"] = True

    try:
        while not stopping:
            told["pass"] = False
            loader.poll(emit, final=not follow, cancelled=cancelled)
            if stopping:
                break
            if first or told["pass"] or follow != was_following:
                conn.send(("pass",))
            first, was_following = False, follow
            # Not following: wait for a command. Following: for the next pass, or a command.
            if conn.poll(poll_interval if follow else None):
                handle(conn.recv())
                cancelled()
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the UI is gone
    except Exception as error:  # noqa: BLE001 - shown to the user instead of a traceback
        try:
            conn.send(("failed", f"{type(error).__name__}: {error}"))
        except OSError:
            pass
        traceback.print_exc()


class ReaderProcess:
    """The UI's side of the reader process: commands out, batches in, sources mirrored."""

    def __init__(
        self,
        paths: Sequence[Path],
        judge: Judge | None = None,
        *,
        judge_for: Callable[[Path], Judge] | None = None,
        directories: Sequence[Path] = (),
        follow: bool = False,
        poll_interval: float = 0.25,
    ) -> None:
        loader = Loader(
            paths, judge, judge_for=judge_for, directories=directories, workers=readers_to_use()
        )
        self.judge = judge
        self._judge_for = judge_for
        self._judges: dict[int, Judge] = {}
        self.sources: list[RecordingSource] = [RecordingSource(Path(p)) for p in paths]
        self.waiting: list[str] = []
        self.diagnosed = 0
        self._judgements: dict[int, Judgement] = {}
        self._hold_files = follow
        # the collector's thresholds while a big first pass comes in (full collections wait)
        self._collector_threshold: tuple[int, ...] | None = None
        self._conn, child_end = multiprocessing.Pipe()
        self.pid = _fork_reader(loader, child_end, self._conn, follow, poll_interval)
        child_end.close()

    # --- what the UI asks of the files --------------------------------------------------------

    def names(self) -> list[str]:
        """The files read, each once (a rotated file is one name), in the order given."""
        return list(dict.fromkeys(source.name for source in self.sources))

    def judge_of(self, source: RecordingSource) -> Judge:
        """The UI's judge for the sessions of ``source`` (the detail pane diagnoses)."""
        if self.judge is not None:
            return self.judge
        found = self._judges.get(id(source))
        if found is None:
            assert self._judge_for is not None
            found = self._judges[id(source)] = self._judge_for(source.path)
        return found

    # --- the pipe -----------------------------------------------------------------------------

    def follow(self, on: bool) -> None:
        self._hold_files = self._hold_files or on
        self._send(("follow", on))

    def stop(self) -> None:
        """Ask the reader to stop, and make sure it did (it is ended after 2 s)."""
        self._resume_full_collections()
        self._send(("stop",))
        _wait_for_exit(self.pid, 2.0)
        if _running(self.pid):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        self._conn.close()
        for source in self.sources:
            source.close()

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError):
            pass  # the reader is gone already

    def wait(self, timeout: float) -> bool:
        """True once a message can be received (or the reader ended), within ``timeout``."""
        try:
            return self._conn.poll(timeout)
        except (OSError, ValueError):
            return True  # receive() will say the reader is gone

    def receive(self) -> tuple[str, Batch | str | None]:
        """The next message, blocking: ("batch", Batch), ("pass", None), ("failed", text) or
        ("gone", None) when the reader ended."""
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            self._resume_full_collections()
            return "gone", None
        kind = message[0]
        if kind == "batch":
            batch = self._unpack(message[1])
            if len(batch.rows) >= BIG_BATCH_ROWS and self._collector_threshold is None:
                # A big file's rows stay for good, and each full collection walks them all
                # again (measured apart: unpacking a million rows took 2.4-3.4 s of CPU with
                # them, 1.3-1.4 s without). While they come, only the
                # young generations are collected; the full collections resume after the pass.
                self._collector_threshold = gc.get_threshold()
                gc.set_threshold(*self._collector_threshold[:2], FULL_COLLECTIONS_DEFERRED)
            return "batch", batch
        self._resume_full_collections()
        if kind == "failed":
            return "failed", message[1]
        return "pass", None

    def _resume_full_collections(self) -> None:
        if self._collector_threshold is not None:
            gc.set_threshold(*self._collector_threshold)
            self._collector_threshold = None

    def _unpack(self, packed: Packed) -> Batch:
        judgements = self._judgements
        for number, judgement in packed.judgements:
            judgements[number] = judgement
        for state in packed.sources:
            self._mirror(state)
        self.waiting = packed.waiting
        self.diagnosed = packed.diagnosed
        rows = [
            Row(source, offset, time, protocol, client, host, host_source, sni, judgements[n])
            for source, offset, time, protocol, client, host, host_source, sni, n in packed.rows
        ]
        return Batch(
            rows=rows,
            problems=packed.problems,
            errors=packed.errors,
            notes=packed.notes,
            bytes_read=packed.bytes_read,
            bytes_total=packed.bytes_total,
        )

    def _mirror(self, state: SourceState) -> None:
        while len(self.sources) <= state.index:
            self.sources.append(RecordingSource(Path(state.path)))
        source = self.sources[state.index]
        if source.identity is None and state.identity is not None:
            source.identity = state.identity
            if self._hold_files:
                source.hold()  # keeps the file, should its name come to mean another
        source.gone, source.retired = state.gone, state.retired
        if source.gone:
            source.close()


def _fork_reader(
    loader: Loader, conn: Connection, parent_end: Connection, follow: bool, interval: float
) -> int:
    """Start the reader, forked twice so that it is no child of the UI's process (whose
    children are its proxy's: ``proxy --tui`` waits for and signals those); it ends when told
    to, or when the UI's end of the pipe closes. Returns its process id."""
    read_pid, write_pid = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the forked processes
        code = 0
        try:
            os.close(read_pid)
            reader = os.fork()
            if reader == 0:
                os.close(write_pid)
                parent_end.close()  # so that the UI's end closing is seen here as the end
                os.setpgid(0, 0)  # the terminal's signals are the UI's to handle
                try:
                    # The keys come first: on a busy machine the UI gets the CPU before the
                    # reader (and its part readers), which still takes whatever is idle.
                    os.nice(READER_NICENESS)
                except OSError:
                    pass
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_DFL)
                try:
                    _serve(loader, conn, follow, interval)
                except BaseException:  # noqa: BLE001 - never back into the UI's code
                    code = 1
                finally:
                    os._exit(code)
            os.write(write_pid, str(reader).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write_pid)
    os.waitpid(middle, 0)
    with os.fdopen(read_pid, "rb") as pid_file:
        return int(pid_file.read() or b"0")


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` (not a child of ours) exits, ``timeout`` seconds at most."""
    if not _running(pid):
        return
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # gone already, or a kernel without pidfd: wait in small steps
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while _running(pid) and time.monotonic() < deadline:
            pause.wait(0.01)
        return
    try:
        select.select([pidfd], [], [], timeout)  # readable once the process has exited
    finally:
        os.close(pidfd)


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
