"""What observe mode costs against stock mitmdump intercepting, and against a plain relay.

    uv run --frozen python bench/bench_observe.py [--connections 200] [--rounds 3]
        [--concurrency 8] [--bulk-mb 32] [--latency-sessions 100] [--max-tls 1.3|1.2]
        [--json FILE]

Starts a real dovecot on loopback and, in front of its IMAPS port, each as its own process:

* ``stock``: stock ``mitmdump --mode reverse:tls://dovecot:993`` intercepting (it decrypts
  and re-encrypts; the client trusts mitmproxy's CA), see :func:`harness.stock_mitmdump`;
* ``observe``: ``certmatch proxy --observe`` in the same mode (the client trusts only the
  server's own CA; certmatch records and judges every session);
* ``relay``: stock mitmdump with ``--ignore-hosts .*``, which relays the bytes with no flow
  and no TLS at all: the plain TCP relay the latency goal compares with.

Each round runs ``--connections`` short IMAP sessions (TLS handshake, greeting, LOGOUT),
``--concurrency`` at once, through each proxy in a rotated order; then, through each, one
bulk upload (APPEND of ``--bulk-mb`` MB) and one bulk download (FETCH); then
``--latency-sessions`` sessions one at a time, timing connect + handshake + greeting (the
client's wait). CPU comes from /proc (all the proxy's threads). Figures are medians over
rounds; ratios are medians of per-round ratios (paired, so a busy moment hits both).

Goals (issue 10): observe CPU per connection <= 0.5x stock; bulk >= 2x stock's MB/s;
handshake latency within 10% of the plain relay. With TLS 1.3 (the default) observe makes
a side handshake per server and SNI per minute (cached), which these numbers include.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ssl

import harness
from harness import (
    ImapClient,
    Proxy,
    certmatch_proxy,
    handshake_session,
    lab,
    load_average,
    message_of,
    proxy_ca,
    start,
    stock_mitmdump,
    stop,
)

ANCHOR = "stock"


def contexts(lab_: harness.Lab, max_tls: str) -> dict[str, ssl.SSLContext]:
    """The client context per proxy: stock's client trusts mitmproxy's CA, the others only
    the server's own."""
    made = {"stock": proxy_ca(lab_.confdir)}
    for name in ("observe", "relay"):
        made[name] = ssl.create_default_context(cafile=str(lab_.root_ca))
    if max_tls == "1.2":
        for context in made.values():
            context.maximum_version = ssl.TLSVersion.TLSv1_2
    return made


def handshakes(proxy: Proxy, context: ssl.SSLContext, n: int, concurrency: int) -> dict:
    errors: list[BaseException] = []

    def one(_: int) -> None:
        try:
            handshake_session(proxy.port, "tls", context)
        except Exception as exc:  # noqa: BLE001 - counted and shown
            errors.append(exc)

    cpu0, wall0 = proxy.cpu(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    wall, cpu = time.perf_counter() - wall0, proxy.cpu() - cpu0
    if errors:
        print(f"    {proxy.name}: {len(errors)} failed, e.g. {errors[0]!r}", flush=True)
    return {"conn_per_s": n / wall, "cpu_ms_per_conn": cpu * 1000 / n}


def bulk(proxy: Proxy, context: ssl.SSLContext, message: bytes, uid: int) -> dict:
    mb = len(message) / 1e6
    client = ImapClient(proxy.port, "tls", context)
    try:
        client.login()
        client.command("x", b"SELECT INBOX")
        cpu0, wall0 = proxy.cpu(), time.perf_counter()
        new = client.append(message)
        up_wall, up_cpu = time.perf_counter() - wall0, proxy.cpu() - cpu0
        client.delete(new)
        cpu0, wall0 = proxy.cpu(), time.perf_counter()
        got = client.fetch(uid)
        down_wall, down_cpu = time.perf_counter() - wall0, proxy.cpu() - cpu0
        if got != len(message):
            raise RuntimeError(f"fetched {got} bytes, expected {len(message)}")
        client.logout()
    finally:
        client.close()
    return {
        "upload_mb_per_s": mb / up_wall,
        "upload_cpu_ms_per_mb": up_cpu * 1000 / mb,
        "download_mb_per_s": mb / down_wall,
        "download_cpu_ms_per_mb": down_cpu * 1000 / mb,
    }


def latency(proxy: Proxy, context: ssl.SSLContext, n: int) -> dict:
    """Median ms from connect to the greeting, sessions one at a time."""
    waits = []
    for _ in range(n):
        start_ = time.perf_counter()
        client = ImapClient(proxy.port, "tls", context)
        waits.append((time.perf_counter() - start_) * 1000)
        client.logout()
        client.close()
    return {"handshake_ms": statistics.median(waits)}


METRICS = [
    ("conn_per_s", "handshakes: connections/s"),
    ("cpu_ms_per_conn", "handshakes: proxy CPU ms per connection"),
    ("upload_mb_per_s", "bulk upload: MB/s"),
    ("upload_cpu_ms_per_mb", "bulk upload: proxy CPU ms per MB"),
    ("download_mb_per_s", "bulk download: MB/s"),
    ("download_cpu_ms_per_mb", "bulk download: proxy CPU ms per MB"),
    ("handshake_ms", "latency: ms from connect to greeting, one at a time"),
]


def ratio(rounds: list[dict], name: str, anchor: str, key: str) -> float:
    values = [
        r[name][key] / r[anchor][key] for r in rounds if r[anchor].get(key) and key in r[name]
    ]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bulk-mb", type=int, default=32)
    parser.add_argument("--latency-sessions", type=int, default=100)
    parser.add_argument("--max-tls", choices=("1.3", "1.2"), default="1.3")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"code under test: {harness.code_under_test()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-observe-") as tmp, lab(Path(tmp)) as lab_:
        work = lab_.work
        relay = stock_mitmdump("relay", lab_.implicit(), lab_.confdir)
        relay.argv += ["--ignore-hosts", ".*"]
        proxies = [
            stock_mitmdump(ANCHOR, lab_.implicit(), lab_.confdir),
            certmatch_proxy(
                "observe", lab_.implicit(), lab_.confdir, lab_.root_ca, work, ["--observe"]
            ),
            relay,
        ]
        for proxy in proxies:
            start(proxy, work)
        try:
            ctx = contexts(lab_, args.max_tls)
            message = message_of(args.bulk_mb * 1_000_000)
            seed = ImapClient(proxies[0].port, "tls", ctx[ANCHOR])
            seed.login()
            seed.command("x", b"SELECT INBOX")
            uid = seed.append(message)
            seed.logout()
            seed.close()
            rounds: list[dict] = []
            for index in range(args.rounds):
                print(f"round {index + 1}/{args.rounds} (load {load_average()})", flush=True)
                result: dict[str, dict] = {p.name: {} for p in proxies}
                order = proxies[index % len(proxies) :] + proxies[: index % len(proxies)]
                for proxy in order:
                    result[proxy.name] |= handshakes(
                        proxy, ctx[proxy.name], args.connections, args.concurrency
                    )
                if args.bulk_mb:
                    for proxy in order:
                        result[proxy.name] |= bulk(proxy, ctx[proxy.name], message, uid)
                for proxy in order:
                    result[proxy.name] |= latency(proxy, ctx[proxy.name], args.latency_sessions)
                rounds.append(result)
            recorded = proxies[1].recorded()
        finally:
            for proxy in proxies:
                stop(proxy)
    names = [p.name for p in proxies]
    summary: dict[str, object] = {"max_tls": args.max_tls, "observe_recorded": recorded}
    for key, label in METRICS:
        print(f"\n{label}")
        print(f"  {'proxy':<10}{'median':>10}{'x stock':>10}{'x relay':>10}")
        for name in names:
            values = [r[name][key] for r in rounds if key in r[name]]
            if not values:
                continue
            row = {
                "median": statistics.median(values),
                "x_stock": ratio(rounds, name, ANCHOR, key),
                "x_relay": ratio(rounds, name, "relay", key),
            }
            summary.setdefault(name, {})[key] = row  # type: ignore[union-attr]
            print(
                f"  {name:<10}{row['median']:>10.2f}{row['x_stock']:>10.3f}{row['x_relay']:>10.3f}"
            )
    print(f"\nobserve recorded {recorded} sessions")
    goals = [
        ("observe CPU per connection <= 0.5x stock", ratio(rounds, "observe", ANCHOR, "cpu_ms_per_conn"), lambda v: v <= 0.5),
        ("observe upload >= 2x stock", ratio(rounds, "observe", ANCHOR, "upload_mb_per_s"), lambda v: v >= 2),
        ("observe download >= 2x stock", ratio(rounds, "observe", ANCHOR, "download_mb_per_s"), lambda v: v >= 2),
        ("observe latency <= 1.10x relay", ratio(rounds, "observe", "relay", "handshake_ms"), lambda v: v <= 1.10),
    ]  # fmt: skip
    print("\ngoals (issue 10)")
    for label, value, ok in goals:
        print(f"  {'met   ' if ok(value) else 'MISSED'} {label}: {value:.3f}")
    summary["goals"] = {label: value for label, value, _ in goals}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
