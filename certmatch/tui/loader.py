"""Turn recordings into list rows, in batches, away from the UI.

``Loader.poll`` reads what is new in every recording, judges each session (the core's
``Judge`` judges each distinct situation once) and hands over a ``Batch`` every ~0.2 s, never
one message per session. The first batch goes out after 0.05 s, so the first screen appears
at once. The TUI runs it in a process of its own (``reader``).

While following, it behaves as ``tail -F``: it waits for a file that does not exist yet or
is still empty, reads a file again from its start when it was truncated or its name came to
mean a new file (rotation), and picks up new ``*.jsonl`` files in a watched directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judge
from certmatch.core.recording import LineProblem, RecordingError
from certmatch.tui.model import Row
from certmatch.tui.source import RecordingSource
from certmatch.tui.split_read import SPLIT_BYTES, PartReader, PartRows, part_bounds

FIRST_BATCH_ROWS = 200
FIRST_BATCH_SECONDS = 0.05  # the first rows go out at once: the first screen waits for them
BATCH_SECONDS = 0.2
BATCH_ROWS = 50_000

_by_time = attrgetter("time")


# The end of the note for an empty file that is not read (the status counts these notes).
SKIPPED_EMPTY = "the file is empty (no header yet); skipped"


@dataclass
class Batch:
    """Rows and skipped lines read since the previous batch, and how far reading got."""

    rows: list[Row] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a file that could not be read at all
    notes: list[str] = field(default_factory=list)  # a file skipped, rotated, truncated
    bytes_read: int = 0
    bytes_total: int = 0

    def extend(self, later: Batch) -> Batch:
        """This batch with a later one's rows and lines after its own; returns itself."""
        self.rows += later.rows
        self.problems += later.problems
        self.errors += later.errors
        self.notes += later.notes
        self.bytes_read, self.bytes_total = later.bytes_read, later.bytes_total
        return self


class Loader:
    """Reads a set of recordings; remembers where each stopped, so it can follow them.

    ``judge`` judges every session; or ``judge_for(path)`` gives the judge for the sessions
    of one file (a recording that carries its own CA anchors). ``directories`` are watched
    for new ``*.jsonl`` files while following.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        judge: Judge | None = None,
        *,
        judge_for: Callable[[Path], Judge] | None = None,
        directories: Sequence[Path] = (),
        workers: int = 1,
    ) -> None:
        if (judge is None) == (judge_for is None):
            raise TypeError("Loader needs a judge or a judge_for function, not both")
        self.sources = [RecordingSource(Path(p)) for p in paths]
        self.judge = judge
        self._judge_for = judge_for
        self._judges: dict[int, Judge] = {}  # by id() of a source, each kept in sources
        self.directories = [Path(d) for d in directories]
        self._strings: dict[str, str] = {}
        self.waiting: list[str] = []  # files that do not exist (yet), when following
        self._failed: set[int] = set()  # files that turned out not to be readable recordings
        self._skipped: set[int] = set()  # empty files, noted once
        # Processes that may read a big file's first pass (this one and part readers): only
        # from a process that runs no other thread (the reader process), as they are forked.
        self.workers = workers

    def judge_of(self, source: RecordingSource) -> Judge:
        """The judge for the sessions of ``source``, asked for once its header is read (a
        file rotated under the same name may record other CAs: each source has its own)."""
        if self.judge is not None:
            return self.judge
        found = self._judges.get(id(source))
        if found is None:
            assert self._judge_for is not None
            found = self._judges[id(source)] = self._judge_for(source.path)
        return found

    def judges(self) -> list[Judge]:
        """Every judge in use (one, or one per file)."""
        if self.judge is not None:
            return [self.judge]
        return list({id(j): j for j in self._judges.values()}.values())

    def names(self) -> list[str]:
        """The files read, each once (a rotated file is one name), in the order given."""
        return list(dict.fromkeys(source.name for source in self.sources))

    def _shared(self, text: str) -> str:
        # Hosts, protocols and sources repeat endlessly; keep one copy of each.
        return self._strings.setdefault(text, text)

    def row(self, source: int, offset: int, facts: SessionFacts, judge: Judge | None = None) -> Row:
        shared = self._shared
        judge = judge or self.judge_of(self.sources[source])
        return Row(
            source,
            offset,
            facts.started[:19].replace("T", " "),
            shared(facts.protocol),
            facts.client_address or "",
            shared(facts.requested_host or ""),
            shared(facts.requested_host_source),
            shared(facts.sni) if facts.sni is not None else None,
            judge.judgement(facts),
        )

    def progress(self) -> tuple[int, int]:
        """(bytes read, bytes known) over all files."""
        sources = self.sources
        read = sum(s.offset for s in sources)
        total = sum(max(s.size_at_start, s.offset) for s in sources)
        return read, total

    def _watch_directories(self) -> None:
        known = {source.path for source in self.sources}
        for directory in self.directories:
            try:
                found = sorted(p for p in directory.glob("*.jsonl") if p.is_file())
            except OSError:
                continue
            for path in found:
                if path not in known:
                    self.sources.append(RecordingSource(path))  # one append: thread-safe

    def poll(
        self,
        emit: Callable[[Batch], object],
        *,
        final: bool,
        cancelled: Callable[[], bool] = lambda: False,
        first_batch_rows: int = FIRST_BATCH_ROWS,
    ) -> int:
        """Read everything new in every file, emitting batches; returns the rows read.

        ``final``: the files are complete (not followed), so a cut last line is a problem.
        """
        batch = Batch()
        limit, seconds = first_batch_rows, FIRST_BATCH_SECONDS
        last_emit = time.monotonic()
        total = 0
        # Built aside and swapped in whole: the UI thread reads it while this runs.
        waiting: list[str] = []

        def flush() -> None:
            nonlocal batch, last_emit
            if len({row.source for row in batch.rows}) > 1:
                batch.rows.sort(key=_by_time)  # several files: in time order
            batch.bytes_read, batch.bytes_total = self.progress()
            emit(batch)
            batch = Batch()
            last_emit = time.monotonic()

        if not final:
            self._watch_directories()
        index = 0
        while index < len(self.sources):  # a rotation appends a source during the pass
            source = self.sources[index]
            index += 1
            if index - 1 in self._failed or source.retired:
                continue
            if not source.started:
                if source.is_empty() and final:
                    if index - 1 not in self._skipped:
                        self._skipped.add(index - 1)
                        batch.notes.append(f"{source.name}: {SKIPPED_EMPTY}")
                    continue
                if not final and not source.exists_with_header():
                    waiting.append(source.name)
                    continue
            judge: Judge | None = None
            parts: list[PartRows] = []
            try:
                while True:
                    for offset, item in source.read_new(final=final):
                        if isinstance(item, LineProblem):
                            batch.problems.append(item)
                            continue
                        judge = judge or self.judge_of(source)  # after the header was read
                        batch.rows.append(self.row(index - 1, offset, item, judge))
                        total += 1
                        if self.workers > 1 and not parts and source.stop_at is None:
                            # After the first session: the judge's caches are warm to fork.
                            parts = self._split(source, index - 1, judge, final)
                        if len(batch.rows) >= limit or time.monotonic() - last_emit > seconds:
                            if cancelled():
                                return total
                            flush()
                            limit, seconds = BATCH_ROWS, BATCH_SECONDS
                    if not parts:
                        break
                    # This process's part is read: the other parts' rows follow, in order.
                    for part in parts:
                        done = False
                        for rows, problems, chunk in part.read(source.line_number):
                            batch.rows += rows
                            batch.problems += problems
                            total += len(rows)
                            if chunk.done:
                                done = True
                                source.offset, source.skipping = chunk.end, chunk.skipping
                                source.line_number += chunk.lines
                            if cancelled():
                                return total
                            flush()
                        if not done:  # that part's reader died: read the rest here
                            source.offset = source.line_start_at_or_after(part.part.start)
                            break
                    for part in parts:
                        part.part.close()
                    parts = []
                    source.stop_at = None  # and on, for what was appended meanwhile
            except RecordingError as error:
                self._failed.add(index - 1)
                source.close()
                batch.errors.append(str(error))
                continue
            except OSError as error:
                self._failed.add(index - 1)
                source.close()
                batch.errors.append(f"{source.name}: reading stopped ({error.strerror or error})")
                continue
            finally:
                for part in parts:
                    part.part.close()
                source.stop_at = None
            if not final:
                self._after_read(source, waiting, batch)
        self.waiting = waiting
        flush()
        return total

    def _split(
        self, source: RecordingSource, index: int, judge: Judge, final: bool
    ) -> list[PartRows]:
        """Part readers for the rest of a big file's first pass: this process reads up to the
        first bound (``source.stop_at``), each part reader one further part."""
        start, end = source.offset, source.size_at_start
        if end - start < SPLIT_BYTES:
            return []
        bounds = part_bounds(start, end, self.workers)
        source.stop_at = bounds[1]
        return [
            PartRows(
                PartReader(
                    source,
                    index,
                    bounds[number],
                    bounds[number + 1],
                    judge=judge,
                    make_row=self.row,
                    final=final,
                ),
                index,
            )
            for number in range(1, self.workers)
        ]

    def _after_read(self, source: RecordingSource, waiting: list[str], batch: Batch) -> None:
        """Follow the name, as ``tail -F``: a new file under it is read from its start."""
        change = source.changed()
        if change is None:
            return
        if change == "missing":
            waiting.append(f"{source.name} (moved away)")
            return
        if change == "truncated":
            source.gone = "truncated"
            source.close()
            batch.notes.append(
                f"{source.name} was truncated: reading it again from its start. The sessions "
                "read before stay in the list, but their details are gone with the old content."
            )
        else:
            batch.notes.append(
                f"{source.name} was replaced (rotated): reading the new file from its start."
            )
        source.retire()
        self.sources.append(RecordingSource(source.path))
