"""Measure the TUI on big recordings (a benchmark that prints numbers, not a test).

    .venv/bin/python bench/bench_tui.py --sessions 100000
    .venv/bin/python bench/bench_tui.py --sessions 1000000 --skip-filters
    .venv/bin/python bench/bench_tui.py --follow-rate 1000 --follow-seconds 10

The app runs headless (Textual's test driver), which paints exactly as in a
terminal, so the times include rendering. Targets (issue 14): 100,000 sessions:
first paint < 0.5 s, fully loaded < 5 s; 1,000,000 sessions: fully loaded < 30 s,
RSS < 600 MB with the reader process; following 1,000 sessions/s: key latency
p50 < 50 ms, p99 < 150 ms.
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
from pathlib import Path

T0 = time.perf_counter()
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
    started = time.perf_counter()
    await pilot.press(*keys)
    await pilot.pause()
    return time.perf_counter() - started


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


async def bench_follow(directory: Path, rate: int, seconds: float) -> None:
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
        while not app.sessions.initial_load_done:
            await pilot.pause(0.01)
        go.set()
        lags: list[int] = []
        keys: list[float] = []
        try:
            while writer.is_alive():
                keys.append(await timed_keys(pilot, "k"))
                keys.append(await timed_keys(pilot, "G"))
                lags.append(written.value - len(app.sessions.rows))
                await pilot.pause(0.2)
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
        keys.sort()
        p99 = keys[min(len(keys) - 1, round(0.99 * (len(keys) - 1)))]
        print(
            f"  key press to repaint:    {statistics.median(keys) * 1000:7.0f} ms median, "
            f"{p99 * 1000:.0f} ms p99, {max(keys) * 1000:.0f} ms max ({len(keys)} presses)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument(
        "--recording", type=Path, default=None, help="reuse (or create) this recording"
    )
    parser.add_argument("--skip-filters", action="store_true")
    parser.add_argument("--follow-rate", type=int, default=0, help="sessions per second to append")
    parser.add_argument("--follow-seconds", type=float, default=10)
    args = parser.parse_args(argv)
    print(f"import of the TUI:         {IMPORT_SECONDS:7.2f} s")
    directory = Path("/tmp/certmatch-bench")
    directory.mkdir(exist_ok=True)
    if args.follow_rate:
        asyncio.run(bench_follow(directory, args.follow_rate, args.follow_seconds))
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
