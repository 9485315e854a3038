"""Read the first pass of a big recording in several processes at once.

Judging every session is Python work, one core's worth per process. When a recording is big
and the machine has more than one core, the reader process reads the file's first part
itself and forks a ``PartReader`` for each further part: each reads and judges the lines that
start in its part, and sends its rows back in chunks, which it keeps (pickled) while the
reader is still busy with the part before, so no part waits for another. The reader takes the
parts in order, so the rows reach the list in file order, as if one process had read them.

A part reader is forked from the reader process (which runs no thread), after the reader has
judged the file's first sessions: it starts with the reader's judge and its caches warm.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, Pipe

from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judge, Judgement
from certmatch.core.recording import LineProblem
from certmatch.tui.model import Row
from certmatch.tui.source import RecordingSource

SPLIT_BYTES = 8 * 1024 * 1024  # less than this after the first sessions: one process reads
CHUNK_ROWS = 10_000

type PartRow = tuple[int, str, str, str, str, str, str | None, int]
type MakeRow = Callable[[int, int, SessionFacts, Judge], Row]


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def readers_to_use() -> int:
    """How many processes should read a big file's first pass: one per core that nobody else
    keeps busy now (:func:`busy_cores`), the reader's own included.

    Measured on a 2-core machine (bench/bench_tui.py, 100,000 sessions): idle, two readers
    loaded it in 6.2 s against about 7-8 s for one; with other work keeping both cores busy
    (load average 3-4) one reader took 9-11 s and 6-9 s of CPU, two 16-27 s and 12-14 s (the
    part reader judges the same situations again and its rows are passed on twice, and on a
    busy machine it only takes the CPU from the UI and from the other reader)."""
    total = cores()
    busy = busy_cores()
    if busy is None:
        return 1
    return max(1, min(total, round(total + 1 - busy)))


def busy_cores(samples: int = 3, interval: float = 0.005) -> float | None:
    """How many cores other processes keep busy now: the tasks running or ready to run
    (the fourth field of /proc/loadavg), less this one, over a few samples; else the 1-minute
    load average. Not the load average first: it still counts, for a minute, work that has
    ended (a second ``view`` right after the first would read with one process)."""
    try:
        counts = []
        pause = threading.Event()  # waited on, not slept: time.sleep fails under faketime
        for sample in range(samples):
            if sample:
                pause.wait(interval)
            with open("/proc/loadavg", encoding="ascii") as file:
                counts.append(int(file.read().split()[3].partition("/")[0]) - 1)
        return sum(counts) / len(counts)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return None


# What passing a row on costs the reader, against reading and judging it: about 4.4 µs against
# 45 µs a row (bench/bench_tui.py's recording, 2-core machine).
FORWARD_COST = 0.1


def part_bounds(start: int, end: int, parts: int) -> list[int]:
    """``parts + 1`` byte positions from ``start`` to ``end`` (each part reads the lines that
    start in it). The first part, the reader's own, is smaller: the reader also passes on
    every other part's rows, and all should be done at the same time."""
    if parts == 1:
        return [start, end]
    others = 1 / (parts - 1)
    first = (others - FORWARD_COST) / (1 - FORWARD_COST + others) if others > FORWARD_COST else 0
    size = end - start
    first_end = start + int(size * first)
    step = (end - first_end) // (parts - 1)
    return [start] + [first_end + step * number for number in range(parts - 1)] + [end]


@dataclass
class Chunk:
    """Rows of one part, as they cross the pipe: judgements numbered within the part."""

    rows: list[PartRow] = field(default_factory=list)
    judgements: list[tuple[int, Judgement]] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)  # line numbers within the part
    # In the last chunk: where the part ended, how many lines it read, an overlong line open.
    done: bool = False
    end: int = 0
    lines: int = 0
    skipping: bool = False


class PartReader:
    """A process reading and judging the lines that start in ``[start, end)`` of ``source``."""

    def __init__(
        self,
        source: RecordingSource,
        index: int,
        start: int,
        end: int,
        *,
        judge: Judge,
        make_row: MakeRow,
        final: bool,
    ) -> None:
        self.start, self.end = start, end
        receive, send = Pipe(duplex=False)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked process
            code = 0
            try:
                receive.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _read_part(source, index, start, end, judge, make_row, final, send)
            except BaseException:  # noqa: BLE001 - never back into the reader's code
                code = 1
            finally:
                os._exit(code)
        send.close()
        self.pid = pid
        self._receive = receive

    def chunks(self) -> Iterator[Chunk]:
        """The part's chunks, in order, the last one ``done``; ends early (without a done
        chunk) if the part reader died."""
        try:
            while True:
                chunk: Chunk = pickle.loads(self._receive.recv_bytes())
                yield chunk
                if chunk.done:
                    return
        except (EOFError, OSError):
            return
        finally:
            self.close()

    def close(self) -> None:
        """End the part reader (if it still runs) and reap it."""
        self._receive.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _read_part(
    parent: RecordingSource,
    index: int,
    start: int,
    end: int,
    judge: Judge,
    make_row: MakeRow,
    final: bool,
    conn: Connection,
) -> None:
    """The part reader: read, judge, pickle each chunk, and send the chunks from a thread,
    so reading goes on while the reader has not yet come to this part."""
    source = RecordingSource(parent.path)
    source.started = True
    source.identity = parent.identity
    source.offset = source.line_start_at_or_after(start)
    source.stop_at = end
    outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    reader = os.getppid()
    gone = threading.Event()  # the reader stopped taking chunks: stop reading too

    def send() -> None:
        while (data := outbox.get()) is not None:
            try:
                conn.send_bytes(data)
            except OSError:
                gone.set()
                return

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    numbers: dict[int, int] = {}
    kept: list[Judgement] = []
    chunk = Chunk()
    for offset, item in source.read_new(final=final):
        if isinstance(item, LineProblem):
            chunk.problems.append(item)
            continue
        row = make_row(index, offset, item, judge)
        j = row.judgement
        number = numbers.get(id(j))
        if number is None:
            number = numbers[id(j)] = len(kept)
            kept.append(j)
            chunk.judgements.append((number, j))
        chunk.rows.append(
            (offset, row.time, row.protocol, row.client, row.host, row.host_source, row.sni, number)
        )
        if len(chunk.rows) >= CHUNK_ROWS:
            if gone.is_set() or os.getppid() != reader:
                return  # the reader ended (or was killed): nobody will take these rows
            outbox.put(pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL))
            chunk = Chunk()
    chunk.done = True
    chunk.end = source.offset
    chunk.lines = source.line_number - 1
    chunk.skipping = source.skipping
    outbox.put(pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL))
    outbox.put(None)
    sender.join()
    conn.close()


class PartRows:
    """The reader's side of one part: its chunks turned into rows, its problems numbered as
    lines of the whole file (``first_line``: the number of the part's first line)."""

    def __init__(self, part: PartReader, index: int) -> None:
        self.part = part
        self.index = index
        self._judgements: dict[int, Judgement] = {}

    def read(self, first_line: int) -> Iterator[tuple[list[Row], list[LineProblem], Chunk]]:
        judgements = self._judgements
        index = self.index
        for chunk in self.part.chunks():
            for number, judgement in chunk.judgements:
                judgements[number] = judgement
            rows = [
                Row(index, offset, time, protocol, client, host, source, sni, judgements[n])
                for offset, time, protocol, client, host, source, sni, n in chunk.rows
            ]
            problems = [replace(p, line=p.line + first_line - 1) for p in chunk.problems]
            yield rows, problems, chunk
