"""Where certmatch's extra CPU per handshake goes: stock mitmdump and ``certmatch proxy``
profiled on the same handshakes, side by side.

    uv run --frozen python bench/bench_profile.py [--connections 300] [--concurrency 8]
        [--py-spy PATH] [--cprofile] [--top 25] [--starttls]
        [--proxy-options '--present substitute']
        [--bulk-mb 8 --transfers 8 --direction download|upload]

For each proxy (stock ``mitmdump``, ``certmatch proxy`` with the default options of the
day, and with --starttls the STARTTLS proxy) it runs --connections short IMAP sessions,
--concurrency at once, while

* py-spy (sampling, at --rate Hz, idle samples left out) records every thread of the
  proxy: the samples are turned into ms per handshake by frame, inclusive ("in or under
  this function") and exclusive ("in this function itself");
* with --cprofile, cProfile (``bench/cprofile_addon.py`` loaded into the proxy) records
  the event-loop thread with call counts; its clock inflates many small calls, so read it
  for counts and shares, not absolute times.

It prints the proxy's CPU per handshake from /proc beside the sampled total, the
certmatch frames by inclusive cost, the functions that cost more in ``certmatch`` than in
``stock`` (exclusive, by function name), and the hooks' costs.

With --bulk-mb the profiled work is not handshakes but --transfers bulk transfers of that
many MB (IMAP FETCH for a download, APPEND for an upload) on one logged-in session per
proxy, and the figures are ms per MB: where a long session's relay spends its CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pstats
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ImapClient,
    Proxy,
    add_server_key_option,
    certmatch_proxy,
    code_under_test,
    direct_context,
    handshake_session,
    lab,
    load_average,
    message_of,
    proxy_ca,
    start,
    stock_mitmdump,
    stop,
)

HERE = Path(__file__).resolve().parent
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def run_sessions(proxy: Proxy, context: object, n: int, concurrency: int) -> float:
    def one(_: int) -> None:
        handshake_session(proxy.port, proxy.kind, context)  # type: ignore[arg-type]

    cpu0 = proxy.cpu()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    return proxy.cpu() - cpu0


def run_bulk(
    proxy: Proxy, context: object, message: bytes, uid: int, transfers: int, direction: str
) -> float:
    """``transfers`` downloads (FETCH of ``uid``) or uploads of ``message`` on one logged-in
    session; the proxy's CPU seconds over the transfers alone."""
    client = ImapClient(proxy.port, proxy.kind, context)  # type: ignore[arg-type]
    try:
        client.login()
        client.command("x", b"SELECT INBOX")
        cpu = 0.0
        for _ in range(transfers):
            cpu0 = proxy.cpu()
            if direction == "download":
                if client.fetch(uid) != len(message):
                    raise RuntimeError("a download came back short")
                cpu += proxy.cpu() - cpu0
            else:
                new = client.append(message)
                cpu += proxy.cpu() - cpu0
                client.delete(new)
        client.logout()
    finally:
        client.close()
    return cpu


def parse_raw(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: one stack per line, root first, then a count."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    """``function (module path)`` from py-spy's ``function (path:line)``."""
    match = FRAME.match(frame)
    return f"{match['func']} ({match['file']})" if match else frame


def is_certmatch(frame: str) -> bool:
    """A frame of certmatch's own per-session code (the command line that runs mitmdump
    in-process is on every stack, so it is left out)."""
    match = FRAME.match(frame)
    path = match["file"] if match else ""
    return (path.startswith("certmatch/") or "/certmatch/" in path) and not any(
        part in path for part in ("certmatch/cli/", "certmatch/__main__")
    )


def inclusive(stacks: Iterable[tuple[list[str], int]], keep: object) -> collections.Counter[str]:
    """Samples in or under each frame that ``keep`` accepts (counted once per stack)."""
    counts: collections.Counter[str] = collections.Counter()
    for stack, count in stacks:
        for name in {short(f) for f in stack if keep(f)}:  # type: ignore[operator]
            counts[name] += count
    return counts


def exclusive(stacks: Iterable[tuple[list[str], int]]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for stack, count in stacks:
        counts[short(stack[-1])] += count
    return counts


def under_certmatch(stacks: list[tuple[list[str], int]]) -> int:
    """Samples with a certmatch frame anywhere on the stack."""
    return sum(count for stack, count in stacks if any(is_certmatch(f) for f in stack))


def py_spy_record(py_spy: str, pid: int, rate: int, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        + ["--output", str(out), "--nonblocking", "--threads"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attached and sampling
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--py-spy", default=shutil.which("py-spy") or "/tmp/v-pyspy/bin/py-spy", dest="py_spy"
    )
    parser.add_argument("--cprofile", action="store_true", help="also cProfile the event loop")
    parser.add_argument("--starttls", action="store_true", help="also the STARTTLS proxy")
    parser.add_argument(
        "--proxy-options",
        default="",
        help="more options for the certmatch proxies, e.g. '--present substitute'",
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--bulk-mb",
        type=float,
        default=0,
        help="profile bulk transfers of this many MB instead of handshakes (0: handshakes)",
    )
    parser.add_argument("--transfers", type=int, default=8, help="bulk transfers per proxy")
    parser.add_argument(
        "--direction", choices=("download", "upload"), default="download", help="bulk direction"
    )
    parser.add_argument("--keep", type=Path, help="copy the raw profiles to this directory")
    parser.add_argument("--again", type=Path, help="report again from a --keep directory")
    add_server_key_option(parser)
    args = parser.parse_args()
    if args.again:
        meta = json.loads((args.again / "meta.json").read_text())
        for name, r in meta["results"].items():
            raw = args.again / f"{name.replace(' ', '-')}.raw"
            r["stacks"] = parse_raw(raw) if raw.exists() else []
        report(
            meta["results"], meta["connections"], args.rate, args.top, False, meta.get("unit", "")
        )
        return 0
    use_py_spy = Path(args.py_spy).exists()

    print(f"code under test: {code_under_test()}; server key: {args.server_key}")
    print(f"load average at start: {load_average()}", flush=True)
    n = args.connections
    unit = "handshake"
    if args.bulk_mb:
        n, unit = round(args.bulk_mb * args.transfers), f"MB ({args.direction})"
    extra = shlex.split(args.proxy_options)
    with (
        tempfile.TemporaryDirectory(prefix="certmatch-profile-") as tmp,
        lab(Path(tmp), args.server_key) as lab_,
    ):
        work = lab_.work
        proxies = [
            stock_mitmdump("stock", lab_.implicit(), lab_.confdir),
            certmatch_proxy("certmatch", lab_.implicit(), lab_.confdir, lab_.root_ca, work, extra),
        ]
        if args.starttls:
            proxies.append(
                certmatch_proxy(
                    "certmatch starttls", lab_.starttls(), lab_.confdir, lab_.root_ca, work, extra
                )
            )
        results: dict[str, dict[str, object]] = {}
        try:
            for proxy in proxies:
                mitm_args: list[str] = []
                if args.cprofile:
                    prof = work / f"{proxy.name.replace(' ', '-')}.prof"
                    proxy.env["CERTMATCH_BENCH_PROFILE"] = str(prof)
                    mitm_args = ["-s", str(HERE / "cprofile_addon.py")]
                start(proxy, work, mitm_args)
            context = proxy_ca(lab_.confdir)
            message, uid = b"", 0
            if args.bulk_mb:
                message = message_of(int(args.bulk_mb * 1e6))
                seed = ImapClient(lab_.dovecot.imaps_port, "tls", direct_context(lab_.root_ca))
                seed.login()
                uid = seed.append(message)
                seed.logout()
            for proxy in proxies:
                run_sessions(proxy, context, 20, min(8, args.concurrency))  # warm up
            for proxy in proxies:
                raw = work / f"{proxy.name.replace(' ', '-')}.raw"
                spy = py_spy_record(args.py_spy, proxy.pid, args.rate, raw) if use_py_spy else None
                if args.cprofile:
                    os.kill(proxy.pid, signal.SIGUSR1)
                if args.bulk_mb:
                    cpu = run_bulk(proxy, context, message, uid, args.transfers, args.direction)
                else:
                    cpu = run_sessions(proxy, context, n, args.concurrency)
                if args.cprofile:
                    os.kill(proxy.pid, signal.SIGUSR2)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                results[proxy.name] = {"cpu_ms": cpu * 1000 / n, "load": load_average()}
                if spy is not None and raw.exists():
                    results[proxy.name]["stacks"] = parse_raw(raw)
                if args.cprofile:
                    prof = Path(proxy.env["CERTMATCH_BENCH_PROFILE"])
                    for _ in range(100):
                        if prof.exists():
                            break
                        time.sleep(0.1)
                    results[proxy.name]["prof"] = str(prof)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    for path in work.glob(f"{proxy.name.replace(' ', '-')}.*"):
                        shutil.copy(path, args.keep / path.name)
            if args.keep:
                kept = {
                    name: {k: v for k, v in r.items() if k != "stacks"}
                    for name, r in results.items()
                }
                meta = {"connections": n, "unit": unit, "results": kept}
                (args.keep / "meta.json").write_text(json.dumps(meta))
            report(results, n, args.rate, args.top, args.cprofile, unit)
        finally:
            for proxy in proxies:
                stop(proxy)
    return 0


def report(
    results: dict[str, dict[str, object]],
    n: int,
    rate: int,
    top: int,
    cprof: bool,
    unit: str = "",
) -> None:
    """Samples become ms per ``unit`` (a handshake, or an MB of bulk) in proportion to the
    proxy's CPU time from /proc: py-spy
    also counts a thread that is runnable but waiting for a core, which a loaded machine
    inflates, so the share of samples is what it measures well."""
    unit = unit or "handshake"
    what = f"{n} {unit}" if unit.startswith("MB") else f"{n} {unit}s"
    print(f"\n{what} per proxy; ms per {unit} (sample shares scaled to /proc CPU)")
    print(f"  {'proxy':<22}{'CPU (/proc)':>12}{'samples':>10}{'in certmatch':>14}  load")
    scale: dict[str, float] = {}
    for name, r in results.items():
        stacks: Any = r.get("stacks") or []
        total = sum(c for _, c in stacks)
        scale[name] = float(r["cpu_ms"]) / total if total else 0.0  # type: ignore[arg-type]
        ours = under_certmatch(stacks) * scale[name]  # type: ignore[arg-type]
        print(f"  {name:<22}{r['cpu_ms']:>12.2f}{total:>10}{ours:>14.2f}  {r['load']}")
    for name, r in results.items():
        stacks = r.get("stacks") or []
        if name == "stock" or not stacks:
            continue
        per = scale[name]
        print(f"\n{name}: certmatch frames, inclusive ms per {unit} (top {top})")
        for frame, count in inclusive(stacks, is_certmatch).most_common(top):  # type: ignore[arg-type]
            print(f"  {count * per:7.3f}  {frame}")
        stock = exclusive(results["stock"].get("stacks") or [])  # type: ignore[arg-type]
        ours_ex = exclusive(stacks)  # type: ignore[arg-type]
        stock_per = scale["stock"]
        diff = {
            f: ours_ex[f] * per - stock.get(f, 0) * stock_per for f in set(ours_ex) | set(stock)
        }
        print(f"\n{name}: exclusive ms per {unit} by function, minus stock's (top {top})")
        for frame, extra in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
            print(
                f"  {extra:+7.3f}  {frame}   "
                f"({ours_ex[frame] * per:.3f} vs {stock.get(frame, 0) * stock_per:.3f})"
            )
    if cprof:
        for name, r in results.items():
            if name == "stock" or "prof" not in r:
                continue
            print(f"\n{name}: cProfile, certmatch functions by cumulative time (event loop)")
            stats = pstats.Stats(str(r["prof"]))
            rows = [
                (ct, cc, func)
                for func, (cc, _nc, _tt, ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
                if "/certmatch/" in func[0]
                and not any(part in func[0] for part in ("/certmatch/cli/", "__main__"))
            ]
            total = sum(tt for (_cc, _nc, tt, _ct, _c) in stats.stats.values())  # type: ignore[attr-defined]
            print(f"  total profiled {total * 1000 / n:.2f} ms per handshake (cProfile clock)")
            for ct, cc, func in sorted(rows, reverse=True)[:top]:
                where = func[0].split("/certmatch/", 1)[1]
                print(
                    f"  {ct * 1000 / n:7.3f} ms {cc / n:6.1f} calls  {func[2]} (certmatch/{where}:{func[1]})"
                )


if __name__ == "__main__":
    sys.exit(main())
