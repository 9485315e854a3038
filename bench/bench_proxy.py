"""What certmatch costs a mail session against stock mitmproxy, side by side in one run.

    uv run --frozen python bench/bench_proxy.py [--connections 300] [--rounds 5]
        [--concurrency 8] [--bulk-mb 32] [--server-key ec|rsa2048|rsa4096]
        [--variant 'NAME=--proxy-option ...'] [--json FILE]

Starts a real dovecot on loopback and, in front of it, each as its own process:

* ``stock``: stock ``mitmdump --mode reverse:tls://dovecot:993`` with ``ssl_insecure``
  (see :func:`harness.stock_mitmdump`) and ``flow_detail=0`` (as quiet as ``certmatch
  proxy``);
* ``certmatch``: ``certmatch proxy`` in the same reverse mode, default options of the day
  (recording every session, judging it, logging its verdict);
* ``certmatch starttls``: ``certmatch proxy --mode reverse:tcp://dovecot:143``, which
  intercepts IMAP STARTTLS (stock mitmproxy cannot, so its anchor is stock's implicit TLS,
  which does the same TLS work);
* one more ``certmatch`` per value of ``--present`` other than its default, and with
  ``--no-dns``, when today's ``certmatch proxy --help`` offers them; and one per
  ``--variant``.

Each round runs ``--connections`` short IMAP sessions (TLS handshake, greeting, LOGOUT)
through every proxy, ``--concurrency`` clients at once, in ``--slices`` turns that the
proxies take in a rotated order (so a busy moment on a shared machine falls on all of
them); then, through each, one bulk upload (APPEND of ``--bulk-mb`` MB) and one bulk
download (FETCH of the same size), each on a logged-in session. The proxy's CPU time
comes from /proc (all its threads), taken around the handshakes and around the transfer
alone. Figures are medians over rounds; each ratio is the median of the per-round ratios
to ``stock`` (paired, so a busy moment hits both sides). The load average is printed
with every round.

A mirror (``--present mirror``) copies the server's key type and size, so the proxy's
own handshake with the client costs what the server's does: with the test PKI's EC P-256
keys less than stock mitmproxy's RSA 2048 certificate, with ``--server-key rsa4096``
more. ``--present substitute`` does the same TLS work as stock.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ImapClient,
    Lab,
    Proxy,
    add_server_key_option,
    certmatch_proxy,
    certmatch_proxy_help,
    code_under_test,
    direct_context,
    handshake_session,
    lab,
    load_average,
    message_of,
    peak_rss_mb,
    proxy_ca,
    proxy_options,
    start,
    stock_mitmdump,
    stop,
    variant_proxy,
    wait_until,
)

ANCHOR = "stock"
WARMUP = 20


def proxies_of_the_day(lab_: Lab, variants: list[str]) -> list[Proxy]:
    """stock, certmatch, certmatch starttls, and the variants today's proxy offers."""
    conf, root, work = lab_.confdir, lab_.root_ca, lab_.work
    proxies = [
        stock_mitmdump(ANCHOR, lab_.implicit(), conf),
        certmatch_proxy("certmatch", lab_.implicit(), conf, root, work),
        certmatch_proxy("certmatch starttls", lab_.starttls(), conf, root, work),
    ]
    help_text = certmatch_proxy_help()
    for choice in proxy_options(help_text, "--present") or []:
        if f"'{choice}' (default)" in help_text:
            continue  # that is "certmatch" itself
        extra = ["--present", choice]
        proxies.append(
            certmatch_proxy(
                f"certmatch {' '.join(extra)}", lab_.implicit(), conf, root, work, extra
            )
        )
    for flag in ("--no-dns",):
        if proxy_options(help_text, flag) is not None:
            proxies.append(
                certmatch_proxy(f"certmatch {flag}", lab_.implicit(), conf, root, work, [flag])
            )
    proxies += [variant_proxy(lab_, variant) for variant in variants]
    return proxies


def handshakes(proxy: Proxy, context: object, n: int, concurrency: int) -> dict[str, float]:
    """``n`` short sessions, ``concurrency`` at once: connections/s and CPU ms per handshake."""
    errors: list[BaseException] = []

    def one(_: int) -> None:
        try:
            handshake_session(proxy.port, proxy.kind, context)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - counted and shown, the run goes on
            errors.append(exc)

    cpu0, wall0 = proxy.cpu(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    wall, cpu = time.perf_counter() - wall0, proxy.cpu() - cpu0
    if errors:
        print(f"    {proxy.name}: {len(errors)} failed sessions, e.g. {errors[0]!r}", flush=True)
    return {"conn_per_s": n / wall, "cpu_ms_per_conn": cpu * 1000 / n, "errors": len(errors)}


def bulk(proxy: Proxy, context: object, message: bytes, download_uid: int) -> dict[str, float]:
    """One upload and one download of ``len(message)`` bytes: MB/s and CPU ms per MB."""
    mb = len(message) / 1e6
    client = ImapClient(proxy.port, proxy.kind, context)  # type: ignore[arg-type]
    try:
        client.login()
        client.command("x", b"SELECT INBOX")
        cpu0, wall0 = proxy.cpu(), time.perf_counter()
        uid = client.append(message)
        up_wall, up_cpu = time.perf_counter() - wall0, proxy.cpu() - cpu0
        client.delete(uid)
        cpu0, wall0 = proxy.cpu(), time.perf_counter()
        got = client.fetch(download_uid)
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


METRICS = [  # (key, label, higher is better)
    ("conn_per_s", "handshakes: connections/s", True),
    ("cpu_ms_per_conn", "handshakes: proxy CPU ms per connection", False),
    ("upload_mb_per_s", "bulk upload: MB/s", True),
    ("upload_cpu_ms_per_mb", "bulk upload: proxy CPU ms per MB", False),
    ("download_mb_per_s", "bulk download: MB/s", True),
    ("download_cpu_ms_per_mb", "bulk download: proxy CPU ms per MB", False),
]


def report(rounds: list[dict[str, dict[str, float]]], names: list[str]) -> dict[str, Any]:
    """Print medians and paired ratios to the anchor; return them for --json."""
    summary: dict[str, Any] = {}
    width = max(len(n) for n in names) + 2
    for key, label, _ in METRICS:
        if not any(key in r.get(name, {}) for r in rounds for name in names):
            continue  # e.g. no bulk transfer (--bulk-mb 0)
        print(f"\n{label}")
        print(f"  {'proxy':<{width}}{'median':>10}{'min':>10}{'max':>10}{'x stock':>10}")
        for name in names:
            values = [r[name][key] for r in rounds if key in r.get(name, {})]
            if not values:
                continue
            ratios = [
                r[name][key] / r[ANCHOR][key]
                for r in rounds
                if key in r.get(name, {}) and r[ANCHOR].get(key)
            ]
            ratio = statistics.median(ratios) if ratios else float("nan")
            print(
                f"  {name:<{width}}{statistics.median(values):>10.2f}{min(values):>10.2f}"
                f"{max(values):>10.2f}{ratio:>10.3f}"
            )
            summary.setdefault(name, {})[key] = {
                "median": statistics.median(values),
                "values": values,
                "ratio_to_stock": ratio,
            }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=300, help="handshakes per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--slices", type=int, default=6, help="turns per round that the proxies take in rotation"
    )
    parser.add_argument("--bulk-mb", type=float, default=32, help="0: no bulk transfer")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="'NAME=OPTIONS': one more certmatch proxy with these options (NAME containing "
        "'starttls' runs in STARTTLS mode)",
    )
    parser.add_argument("--only", default="", help="comma-separated proxy names to run")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    add_server_key_option(parser)
    args = parser.parse_args()

    print(f"code under test: {code_under_test()}; server key: {args.server_key}")
    print(f"load average at start: {load_average()}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="certmatch-bench-") as tmp,
        lab(Path(tmp), args.server_key) as lab_,
    ):
        proxies = proxies_of_the_day(lab_, args.variant)
        if args.only:
            wanted = {ANCHOR, *args.only.split(",")}
            proxies = [p for p in proxies if p.name in wanted]
        names = [p.name for p in proxies]
        rounds: list[dict[str, dict[str, float]]] = []
        try:
            for proxy in proxies:  # one at a time: the first creates the shared CA
                start(proxy, lab_.work)
            context = proxy_ca(lab_.confdir)
            message = message_of(int(args.bulk_mb * 1e6)) if args.bulk_mb else b""
            download_uid = 0
            if message:
                seed = ImapClient(lab_.dovecot.imaps_port, "tls", direct_context(lab_.root_ca))
                seed.login()
                download_uid = seed.append(message)
                seed.logout()
            for proxy in proxies:  # warm caches: forged certificates, judge, imports
                handshakes(proxy, context, WARMUP, min(args.concurrency, WARMUP))
            for number in range(args.rounds):
                order = proxies[number % len(proxies) :] + proxies[: number % len(proxies)]
                # The round's handshakes in --slices turns, each proxy in each turn, so
                # that a busy moment on the machine falls on every proxy alike.
                spent = {p.name: [0.0, 0.0, 0] for p in proxies}  # wall s, CPU s, errors
                for part in _split(args.connections, args.slices):
                    for proxy in order:
                        r = handshakes(proxy, context, part, args.concurrency)
                        spent[proxy.name][0] += part / r["conn_per_s"]
                        spent[proxy.name][1] += r["cpu_ms_per_conn"] * part / 1000
                        spent[proxy.name][2] += int(r["errors"])
                this: dict[str, dict[str, float]] = {
                    name: {
                        "conn_per_s": args.connections / wall,
                        "cpu_ms_per_conn": cpu * 1000 / args.connections,
                        "errors": errors,
                    }
                    for name, (wall, cpu, errors) in spent.items()
                }
                for proxy in order if message else []:
                    this[proxy.name] |= bulk(proxy, context, message, download_uid)
                rounds.append(this)
                print(
                    f"round {number + 1}/{args.rounds} done, load average {load_average()}: "
                    + ", ".join(f"{n} {this[n]['cpu_ms_per_conn']:.1f} ms/conn" for n in names),
                    flush=True,
                )
            expected = WARMUP + args.rounds * (args.connections + (1 if message else 0))
            for proxy in proxies:
                if proxy.record is not None:
                    wait_until(lambda p=proxy: p.recorded() >= expected)
            rss = {p.name: peak_rss_mb(p.pid) for p in proxies}
            recorded = {p.name: p.recorded() for p in proxies if p.record is not None}
        finally:
            for proxy in proxies:
                stop(proxy)
    print(
        f"\n{args.connections} IMAP sessions x {args.rounds} rounds, {args.concurrency} at once"
        + (f"; bulk {args.bulk_mb:g} MB up and down per round" if message else "")
        + f"; dovecot on loopback; load average at the end: {load_average()}"
    )
    summary = report(rounds, names)
    print("\npeak RSS: " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in rss.items()))
    print(
        "sessions recorded (expected "
        f"{expected} each, plus any port checks): "
        + ", ".join(f"{n} {c}" for n, c in recorded.items())
    )
    _goals(summary)
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=1))
    return 0


def _goals(summary: dict[str, Any]) -> None:
    """The issue's goals, checked on this run's ratios."""

    def ratio(name: str, key: str) -> float:
        return float(summary.get(name, {}).get(key, {}).get("ratio_to_stock", float("nan")))

    checks: list[tuple[str, float, Callable[[float], bool]]] = [
        (
            "certmatch CPU per handshake <= 1.05x stock",
            ratio("certmatch", "cpu_ms_per_conn"),
            lambda r: r <= 1.05,
        ),
        (
            "certmatch connections/s >= 0.95x stock",
            ratio("certmatch", "conn_per_s"),
            lambda r: r >= 0.95,
        ),
        (
            "STARTTLS upload >= 0.95x stock implicit TLS",
            ratio("certmatch starttls", "upload_mb_per_s"),
            lambda r: r >= 0.95,
        ),
        (
            "STARTTLS download >= 0.95x stock implicit TLS",
            ratio("certmatch starttls", "download_mb_per_s"),
            lambda r: r >= 0.95,
        ),
    ]
    print("\ngoals (issue 12):")
    for label, value, ok in checks:
        if math.isnan(value):
            print(f"  -      {label}: not measured in this run")
        else:
            print(f"  {'met ' if ok(value) else 'MISSED'} {label}: {value:.3f}")


def _split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal whole parts."""
    parts = max(1, min(parts, total))
    return [total // parts + (i < total % parts) for i in range(parts)]


if __name__ == "__main__":
    sys.exit(main())
