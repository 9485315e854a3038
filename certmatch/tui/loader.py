"""Turn recordings into list rows, in batches, off the UI thread.

The app runs ``Loader.poll`` in a thread worker: it reads what is new in
every recording, judges each session (the core's ``Judge`` judges each
distinct situation once) and hands over a ``Batch`` every ~0.1 s, never one
message per session. The first batch is sent early so the first screen
appears at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judge
from certmatch.core.recording import LineProblem, RecordingError
from certmatch.tui.model import Row
from certmatch.tui.source import RecordingSource

FIRST_BATCH_ROWS = 200
BATCH_SECONDS = 0.2
BATCH_ROWS = 50_000

_SOURCE_LABELS = {
    "sni": "sni",
    "socks5": "socks5",
    "http-connect": "connect",
    "reverse-target": "reverse",
    "option": "--host",
    "unknown": "?",
}


@dataclass
class Batch:
    """Rows and skipped lines read since the previous batch, and how far reading got."""

    rows: list[Row] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a file that could not be read at all
    bytes_read: int = 0
    bytes_total: int = 0


class Loader:
    """Reads a set of recordings; remembers where each stopped, so it can follow them."""

    def __init__(self, paths: Sequence[Path], judge: Judge) -> None:
        self.sources = [RecordingSource(Path(p)) for p in paths]
        self.judge = judge
        self._strings: dict[str, str] = {}
        self.waiting: list[str] = []  # files that do not exist (yet), when following
        self._failed: set[int] = set()  # files that turned out not to be readable recordings

    def _shared(self, text: str) -> str:
        # Hosts, protocols and sources repeat endlessly; keep one copy of each.
        return self._strings.setdefault(text, text)

    def row(self, source: int, offset: int, facts: SessionFacts) -> Row:
        shared = self._shared
        return Row(
            source,
            offset,
            facts.started[:19].replace("T", " "),
            shared(facts.protocol),
            facts.client_address or "",
            shared(facts.requested_host or ""),
            _SOURCE_LABELS.get(facts.requested_host_source, facts.requested_host_source),
            shared(facts.sni) if facts.sni is not None else None,
            self.judge.judgement(facts),
        )

    def progress(self) -> tuple[int, int]:
        """(bytes read, bytes known) over all files."""
        read = sum(s.offset for s in self.sources)
        total = sum(max(s.size_at_start, s.offset) for s in self.sources)
        return read, total

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
        limit = first_batch_rows
        last_emit = time.monotonic()
        total = 0
        # Built aside and swapped in whole: the UI thread reads it while this runs.
        waiting: list[str] = []

        def flush() -> None:
            nonlocal batch, last_emit
            batch.bytes_read, batch.bytes_total = self.progress()
            emit(batch)
            batch = Batch()
            last_emit = time.monotonic()

        for index, source in enumerate(self.sources):
            if index in self._failed:
                continue
            if not source.started and not final and not source.exists_with_header():
                waiting.append(source.name)
                continue
            try:
                for offset, item in source.read_new(final=final):
                    if isinstance(item, LineProblem):
                        batch.problems.append(item)
                        continue
                    batch.rows.append(self.row(index, offset, item))
                    total += 1
                    if len(batch.rows) >= limit or time.monotonic() - last_emit > BATCH_SECONDS:
                        if cancelled():
                            return total
                        flush()
                        limit = BATCH_ROWS
            except RecordingError as error:
                self._failed.add(index)
                batch.errors.append(str(error))
            except OSError as error:
                self._failed.add(index)
                batch.errors.append(f"{source.name}: reading stopped ({error.strerror or error})")
        self.waiting = waiting
        flush()
        return total
