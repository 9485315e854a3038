"""Measure the TUI on big recordings (a benchmark that prints numbers, not a test).

    .venv/bin/python bench/bench_tui.py --sessions 100000
    .venv/bin/python bench/bench_tui.py --sessions 1000000 --skip-filters
    .venv/bin/python bench/bench_tui.py --follow-rate 1000 --follow-seconds 10

The app runs headless (Textual's test driver), which paints exactly as in a
terminal, so the times include rendering. Targets (issue 14): 100,000 sessions:
first paint < 0.5 s, fully loaded < 5 s; 1,000,000 sessions: fully loaded < 30 s,
RSS < 600 MB with the reader process; following 1,000 sessions/s: key latency
p50 < 50 ms, p99 < 150 ms.

Key latency while following is the time from a key reaching the app (sent as a terminal's
driver sends it) to the first frame that shows its whole effect: the cursor moved and the
detail pane showing that session. ``--pilot-round-trip`` adds the earlier measure (Pilot's
press and pause, which waits until the process is idle: never under 60 ms, up to 1 s while
the process works on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

T0 = time.perf_counter()
from textual import events
from textual.strip import Strip

from certmatch.core.trust import TrustStore
from certmatch.tui.app import CertmatchApp
from certmatch.tui.model import Filter
from certmatch.tui.session_list import SessionList

IMPORT_SECONDS = time.perf_counter() - T0
sys.path.insert(0, str(Path(__file__).parent))
import make_large_recording

SIZE = (160, 45)
FILTERS = ("cause:expired", "protocol:imap", "example7", "verdict:mismatch protocol:pop3", "")


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB (0 once it ended)."""
    values = {}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time (user + system) a process has used, with its reaped children's (a reader's
    part readers): on a busy machine, what a run costs whatever the other processes take."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


async def timed_keys(pilot, *keys: str) -> float:
    """Pilot's round trip: the keys, then until the process is idle. Each of its waits is
    20 ms at least (so never under 60 ms), and up to 1 s while the process works on: it
    measures when the app is idle, not when the key's effect is on screen."""
    started = time.perf_counter()
    await pilot.press(*keys)
    await pilot.pause()
    return time.perf_counter() - started


class Frames:
    """When the app's screen was last painted: Textual hands each frame to ``App._display``
    (in a terminal it is written out there; headless, it is rendered and dropped)."""

    def __init__(self, app: CertmatchApp) -> None:
        self.app = app
        self.waiting: tuple[float, Callable[[], bool], asyncio.Future[float]] | None = None
        display = app._display

        def spy(screen, renderable) -> None:
            display(screen, renderable)
            if self.waiting is not None and renderable is not None:
                started, done, future = self.waiting
                if done() and not future.done():
                    future.set_result(time.perf_counter() - started)
                    self.waiting = None

        app._display = spy  # type: ignore[method-assign]

    async def key(self, key: str, done: Callable[[], bool], timeout: float = 10.0) -> float:
        """Seconds from ``key`` reaching the app (as a terminal's key does, from the driver)
        to the first frame painted once ``done()`` holds."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting = (time.perf_counter(), done, future)
        driver = self.app._driver
        assert driver is not None
        driver.send_message(events.Key(key, key if len(key) == 1 else None))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiting = None


def watch_first_paint() -> dict[str, float]:
    """Record when the session list first renders a line holding a session."""
    seen: dict[str, float] = {}
    render_line = SessionList.render_line

    def spy(self: SessionList, y: int) -> Strip:
        if y > 0 and self.items and "painted" not in seen:
            seen["painted"] = time.perf_counter()
            seen["rows"] = len(self.rows)
        if y >= self.size.height - 1 and len(self.items) >= self.size.height and "full" not in seen:
            seen["full"] = time.perf_counter()  # the last visible line holds a session
        return render_line(self, y)

    SessionList.render_line = spy  # type: ignore[method-assign]
    return seen


async def bench_file(path: Path, ca: Path, skip_filters: bool) -> None:
    store = TrustStore.load([ca])
    first_paint = watch_first_paint()
    cpu_before = cpu_seconds()
    app = CertmatchApp([path], store=store)
    started = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        while "painted" not in first_paint:
            await pilot.pause(0.005)
        first = first_paint["painted"] - started
        print(
            f"first screen painted:      {first:7.2f} s  ({first_paint['rows']:,.0f} rows loaded by then)"
        )
        while "full" not in first_paint and not app.sessions.initial_load_done:
            await pilot.pause(0.005)
        if "full" in first_paint:
            full = first_paint["full"] - started
            print(f"first screen full of rows: {full:7.2f} s")
        while not app.sessions.initial_load_done:
            await pilot.pause(0.05)
        loaded = time.perf_counter() - started
        print(
            f"fully loaded:              {loaded:7.2f} s  ({len(app.sessions.rows):,} sessions, {app.sessions.failing:,} failing)"
        )
        print(
            f"judgements computed:       {app.sessions.loader.diagnosed:7,}  (the rest reused a cached judgement)"
        )
        cpu_ui, cpu_reader = cpu_seconds() - cpu_before, cpu_seconds(app.sessions.loader.pid)
        print(
            f"CPU time to load:          {cpu_ui + cpu_reader:7.2f} s  (UI {cpu_ui:.2f} s, reader "
            f"processes {cpu_reader:.2f} s; wall time above depends on the machine's load)"
        )
        current, peak = rss_mb()
        reader, reader_peak = rss_mb(app.sessions.loader.pid)
        print(
            f"resident memory:           {current + reader:7.0f} MB  (UI {current:.0f} MB, peak "
            f"{peak:.0f}; reader process {reader:.0f} MB, peak {reader_peak:.0f})"
        )
        scroll = [
            await timed_keys(pilot, key)
            for key in ("G", "g", "pagedown", "pagedown", "j", "k", "end")
        ]
        print(
            f"scroll key to repaint:     {max(scroll) * 1000:7.0f} ms max ({statistics.median(scroll) * 1000:.0f} ms median)"
        )
        if skip_filters:
            return
        for text in FILTERS:
            app.sessions.filter = Filter.parse(text)
            app.sessions.rebuild()
            await pilot.pause()
            print(
                f"filter {text or '(none)':<28} {app.sessions.last_filter_seconds * 1000:5.0f} ms  -> {len(app.sessions.session_list.items):,} rows"
            )
        for key, what in (
            ("a", "all sessions"),
            ("a", "failing only"),
            ("v", "grouped"),
            ("v", "ungrouped"),
        ):
            elapsed = await timed_keys(pilot, key)
            print(
                f"key {key} ({what}):{'':<{17 - len(what)}} {elapsed * 1000:5.0f} ms  (rebuild {app.sessions.last_filter_seconds * 1000:.0f} ms)"
            )


def _append(path: Path, lines: list[str], rate: int, go, stop, written) -> None:
    """Append ``lines`` to ``path`` at ``rate`` lines a second, in chunks, once ``go`` is set."""
    go.wait()
    chunk = max(1, rate // 20)
    done = 0
    with path.open("a", encoding="utf-8") as out:
        next_time = time.perf_counter()
        while done < len(lines) and not stop.is_set():
            out.write("".join(lines[done : done + chunk]))
            out.flush()
            done = min(len(lines), done + chunk)
            written.value = done
            next_time += chunk / rate
            time.sleep(max(0.0, next_time - time.perf_counter()))


async def bench_follow(
    directory: Path, rate: int, seconds: float, pilot_round_trip: bool = False
) -> None:
    path = directory / "follow.jsonl"
    ca = make_large_recording.write(path, 0)
    root_kinds = make_large_recording._kinds(make_large_recording.make_ca("bench follow root"))
    lines = [
        json.dumps(d, separators=(",", ":")) + "\n"
        for d in make_large_recording.sessions(int(rate * seconds), root_kinds, 2)
    ]
    store = TrustStore.load([ca])
    # The writer is a process of its own, as a proxy is: it takes no time from the UI's.
    context = multiprocessing.get_context("fork")
    go, stop, written = context.Event(), context.Event(), context.Value("l", 0)
    writer = context.Process(target=_append, args=(path, lines, rate, go, stop, written))
    writer.start()  # before the app starts any thread
    app = CertmatchApp([path], store=store, follow=True, poll_interval=0.1)

    async with app.run_test(size=SIZE) as pilot:
        frames = Frames(app)
        listing = app.sessions.session_list

        def detail_shown(at_least: int | None = None) -> bool:
            """The detail pane shows the session under the cursor (a key's whole effect), or
            one at ``at_least`` or later in the file."""
            shown = app.sessions.detail_pane._shown
            if shown is None:
                return False
            if at_least is not None:
                return shown[1] >= at_least
            row = app.sessions.rows[listing.items[listing.cursor]]  # type: ignore[index]
            return shown[1] == row.offset

        while not app.sessions.initial_load_done:
            await pilot.pause(0.01)
        await pilot.pause(1.0)  # the start's own work (the footer composes again) is over
        cpu_before, reader_before = cpu_seconds(), cpu_seconds(app.sessions.loader.pid)
        go.set()
        lags: list[int] = []
        keys: list[float] = []  # key to the frame that shows it
        pilot_keys: list[float] = []
        try:
            while writer.is_alive():
                if len(listing.items) < 3:
                    await asyncio.sleep(0.05)
                    continue
                # k leaves the newest session (the list stops moving with new ones), G goes
                # back to it: each a frame that shows the cursor moved.
                if listing.at_end():
                    keys.append(
                        await frames.key("k", lambda: not listing.at_end() and detail_shown())
                    )
                    await asyncio.sleep(0.05)
                # G's effect: the newest session (or, should more have come meanwhile, a
                # newer one) in the list and in the detail.
                newest = app.sessions.rows[-1].offset
                keys.append(
                    await frames.key("G", lambda at=newest: listing.at_end() and detail_shown(at))
                )
                await asyncio.sleep(0.05)
                if pilot_round_trip:  # the earlier measure, for comparison (it loads the UI)
                    pilot_keys.append(await timed_keys(pilot, "k"))
                    pilot_keys.append(await timed_keys(pilot, "G"))
                lags.append(written.value - len(app.sessions.rows))
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            writer.join()
        total = written.value
        caught_up = time.perf_counter()
        while len(app.sessions.rows) < total:
            await pilot.pause(0.01)
        print(f"following {rate:,} sessions/s for {seconds:.0f} s ({total:,} sessions):")
        print(f"  rows behind the file:    {statistics.mean(lags):7.0f} mean, {max(lags):,} max")
        print(f"  caught up after writing: {time.perf_counter() - caught_up:7.2f} s")
        print(
            f"  CPU while following:     {cpu_seconds() - cpu_before:7.2f} s UI (with the "
            f"presses), {cpu_seconds(app.sessions.loader.pid) - reader_before:.2f} s reader"
        )
        for what, times in (("key press to frame:", keys), ("pilot round trip:", pilot_keys)):
            if not times:
                continue
            times.sort()
            p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
            print(
                f"  {what:<24}{statistics.median(times) * 1000:7.0f} ms median, "
                f"{p99 * 1000:.0f} ms p99, {max(times) * 1000:.0f} ms max ({len(times)} presses)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument(
        "--recording", type=Path, default=None, help="reuse (or create) this recording"
    )
    parser.add_argument("--skip-filters", action="store_true")
    parser.add_argument(
        "--readers",
        type=int,
        default=0,
        help="processes that read a big file's first pass (default: one per idle core)",
    )
    parser.add_argument("--follow-rate", type=int, default=0, help="sessions per second to append")
    parser.add_argument("--follow-seconds", type=float, default=10)
    parser.add_argument(
        "--pilot-round-trip",
        action="store_true",
        help="also time each key as Pilot's press and pause (until the process is idle), as "
        "the earlier figures were",
    )
    args = parser.parse_args(argv)
    print(f"import of the TUI:         {IMPORT_SECONDS:7.2f} s")
    if args.readers:
        import certmatch.tui.reader

        certmatch.tui.reader.readers_to_use = lambda: args.readers  # type: ignore[attr-defined]
    directory = Path("/tmp/certmatch-bench")
    directory.mkdir(exist_ok=True)
    if args.follow_rate:
        asyncio.run(
            bench_follow(directory, args.follow_rate, args.follow_seconds, args.pilot_round_trip)
        )
        return 0
    path = args.recording or directory / f"sessions-{args.sessions}.jsonl"
    ca = path.with_name(path.name + ".ca.pem")
    if not path.exists() or not ca.exists():
        print(f"writing {path} ...", flush=True)
        make_large_recording.write(path, args.sessions)
    print(f"recording: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    asyncio.run(bench_file(path, ca, args.skip_filters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
