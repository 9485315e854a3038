"""The recording writer's cost per session, and the proxy's event-loop lag under a burst.

    uv run --frozen python bench/bench_writer.py [--writes 20000] [--burst 500] [--rounds 3]

1. **Writer, in this process**: every session of the sample recordings in recordings/,
   cycled to --writes sessions, written with :class:`RecordingWriter` to a file on /tmp,
   CPU time per session (median of 5), split into its steps: ``SessionFacts.to_json``
   (``dataclasses.asdict``), the JSON encoding, and the one ``os.write``; with the parse
   of the same line (``json.loads``) for scale.
2. **Event-loop lag, in real proxies**: ``bench/loop_lag_addon.py`` runs in each proxy a
   5 ms timer and notes how late it fires. --burst IMAP sessions (TLS handshake, greeting,
   LOGOUT) are opened all at once, from an asyncio client, against stock ``mitmdump``,
   ``certmatch proxy`` (default options of the day, recording) and the same certmatch
   addons without a recording (``mitmdump -s capture.py -s starttls.py``), in rotated
   order, --rounds times. Printed: the timer's lateness p50, p99 and max during the burst,
   the burst's wall time, and the proxy's CPU per handshake; medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HOST,
    MITMDUMP,
    REPO,
    Proxy,
    add_server_key_option,
    certmatch_proxy,
    code_under_test,
    lab,
    load_average,
    proxy_ca,
    start,
    stock_mitmdump,
    stop,
)

HERE = Path(__file__).resolve().parent


# --- 1. the writer ----------------------------------------------------------------------


def sample_sessions() -> list[object]:
    from certmatch.core.recording import read_recording

    sessions: list[object] = []
    for path in sorted((REPO / "recordings").glob("*.jsonl")):
        sessions += read_recording(path).sessions
    return sessions


def cpu_per_item(action: object, items: list[object], repeat: int = 5) -> float:
    """Median CPU µs per item of ``action(item)`` over ``items``."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        for item in items:
            action(item)  # type: ignore[operator]
        times.append(time.process_time() - start)
    return statistics.median(times) * 1e6 / len(items)


def writer_costs(writes: int) -> None:
    from certmatch.core import recording
    from certmatch.core.recording import RecordingWriter

    samples = sample_sessions()
    facts = [samples[i % len(samples)] for i in range(writes)]
    dicts = [f.to_json() for f in facts]  # type: ignore[attr-defined]
    lines = [recording._encode_line(d) for d in dicts]
    with tempfile.TemporaryDirectory(prefix="certmatch-writer-", dir="/tmp") as tmp:
        writer = RecordingWriter(Path(tmp) / "w.jsonl", tool_version="bench")
        try:
            whole = cpu_per_item(writer.write, facts)
            to_json = cpu_per_item(lambda f: f.to_json(), facts)  # type: ignore[attr-defined]
            encode = cpu_per_item(recording._encode_line, dicts)  # type: ignore[arg-type]
            write = cpu_per_item(writer._write, lines)  # type: ignore[arg-type]
        finally:
            writer.close()
    parse = cpu_per_item(json.loads, lines)  # type: ignore[arg-type]
    size = statistics.mean(len(line) for line in lines)
    print(
        f"writer, {writes:,} sessions cycled from {len(samples)} samples "
        f"(mean line {size:,.0f} bytes), CPU µs per session, median of 5:"
    )
    for label, value in [
        ("RecordingWriter.write, in all", whole),
        ("  SessionFacts.to_json (dataclasses.asdict)", to_json),
        ("  JSON encoding (json.dumps, utf-8)", encode),
        ("  os.write (O_APPEND)", write),
        ("json.loads of the same line, for scale", parse),
    ]:
        print(f"  {label:<46}{value:>8.1f} µs")


# --- 2. the event loop under a burst ------------------------------------------------------


async def one_session(port: int, context: ssl.SSLContext) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=HOST, ssl_handshake_timeout=300
    )
    try:
        greeting = await asyncio.wait_for(reader.readline(), 300)
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting {greeting[:60]!r}")
        writer.write(b"z LOGOUT\r\n")
        await writer.drain()
        while await asyncio.wait_for(reader.read(65536), 300):
            pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def burst(port: int, context: ssl.SSLContext, n: int) -> int:
    """``n`` sessions opened at once; the number that failed."""
    results = await asyncio.gather(
        *(one_session(port, context) for _ in range(n)), return_exceptions=True
    )
    return sum(isinstance(r, BaseException) for r in results)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def lag_round(proxy: Proxy, context: ssl.SSLContext, n: int) -> dict[str, float]:
    lag_file = Path(proxy.env["CERTMATCH_BENCH_LAG"])
    lag_file.unlink(missing_ok=True)
    os.kill(proxy.pid, signal.SIGUSR1)
    cpu0, wall0 = proxy.cpu(), time.perf_counter()
    failed = asyncio.run(burst(proxy.port, context, n))
    wall, cpu = time.perf_counter() - wall0, proxy.cpu() - cpu0
    os.kill(proxy.pid, signal.SIGUSR2)
    for _ in range(200):
        if lag_file.exists():
            break
        time.sleep(0.05)
    lags = [float(x) for x in lag_file.read_text().split()]
    return {
        "lag_p50_ms": percentile(lags, 0.50) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": max(lags, default=float("nan")) * 1000,
        "burst_s": wall,
        "cpu_ms_per_conn": cpu * 1000 / n,
        "failed": failed,
    }


def loop_lag(n: int, rounds: int, server_key: str = "ec") -> None:
    with (
        tempfile.TemporaryDirectory(prefix="certmatch-lag-") as tmp,
        lab(Path(tmp), server_key) as lab_,
    ):
        work, conf = lab_.work, lab_.confdir
        scripts = REPO / "certmatch" / "proxy" / "scripts"
        no_record = Proxy(
            "certmatch, no recording",
            [
                MITMDUMP,
                "--mode",
                lab_.implicit(),
                "--set",
                f"confdir={conf}",
                "-s",
                str(scripts / "capture.py"),
                "-s",
                str(scripts / "starttls.py"),
                "--set",
                f"certmatch_ca_file={lab_.root_ca}",
                "--set",
                "flow_detail=0",
            ],
            kind="tls",
        )
        proxies = [
            stock_mitmdump("stock", lab_.implicit(), conf),
            certmatch_proxy("certmatch", lab_.implicit(), conf, lab_.root_ca, work),
            no_record,
        ]
        results: dict[str, list[dict[str, float]]] = {p.name: [] for p in proxies}
        try:
            for proxy in proxies:
                slug = "".join(c if c.isalnum() else "-" for c in proxy.name)
                proxy.env["CERTMATCH_BENCH_LAG"] = str(work / f"lag-{slug}.txt")
                start(proxy, work, ["-s", str(HERE / "loop_lag_addon.py")])
            context = proxy_ca(conf)
            for proxy in proxies:
                asyncio.run(burst(proxy.port, context, 20))  # warm up
            for number in range(rounds):
                order = proxies[number % len(proxies) :] + proxies[: number % len(proxies)]
                for proxy in order:
                    results[proxy.name].append(lag_round(proxy, context, n))
                print(f"  round {number + 1}/{rounds}, load average {load_average()}", flush=True)
            recorded = proxies[1].recorded()
        finally:
            for proxy in proxies:
                stop(proxy)
    print(
        f"event loop under a burst of {n} IMAPS handshakes at once, {rounds} rounds, medians "
        f"(load average at the end {load_average()}):"
    )
    keys = ["lag_p50_ms", "lag_p99_ms", "lag_max_ms", "burst_s", "cpu_ms_per_conn", "failed"]
    print(f"  {'proxy':<26}" + "".join(f"{k:>16}" for k in keys))
    for name, rows in results.items():
        print(
            f"  {name:<26}"
            + "".join(f"{statistics.median(r[k] for r in rows):>16.2f}" for k in keys)
        )
    stock_p99 = statistics.median(r["lag_p99_ms"] for r in results["stock"])
    for name in list(results)[1:]:
        ratio = statistics.median(
            a["lag_p99_ms"] / b["lag_p99_ms"]
            for a, b in zip(results[name], results["stock"], strict=True)
        )
        print(f"  {name}: lag p99 {ratio:.2f}x stock ({stock_p99:.1f} ms)")
    print(f"  sessions recorded by certmatch: {recorded}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-lag", action="store_true", help="only the writer")
    add_server_key_option(parser)
    args = parser.parse_args()
    print(f"code under test: {code_under_test()}")
    print(f"load average at start: {load_average()}", flush=True)
    writer_costs(args.writes)
    if not args.skip_lag:
        loop_lag(args.burst, args.rounds, args.server_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
