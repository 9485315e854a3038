"""What certmatch costs a mail session against stock mitmproxy, side by side in one run.

    uv run --frozen python bench/bench_proxy.py [--connections 300] [--rounds 5]
        [--concurrency 8] [--bulk-mb 32] [--transfers 1] [--server-key ec|rsa2048|rsa4096]
        [--variant 'NAME=--proxy-option ...'] [--code 'NAME=DIR [options]'] [--json FILE]

    # the STARTTLS bulk measure alone: 8 x 8 MB each way per proxy and round, interleaved
    uv run --frozen python bench/bench_proxy.py --only "stock,certmatch starttls" \
        --connections 0 --rounds 15 --bulk-mb 8 --transfers 8

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
them). Then the round's bulk: on one logged-in session per proxy, ``--transfers``
uploads (APPEND of ``--bulk-mb`` MB) and as many downloads (FETCH of the same size),
interleaved across the proxies (A B, then B A, ...), so that each proxy's transfers are
spread over the same stretch of time. The proxy's CPU time comes from /proc (all its
threads): for handshakes from its clock ticks, for each transfer alone from the
scheduler's nanosecond run times. A round's bulk figure is its median transfer's (so one
transfer slowed by a busy moment does not move it). Figures are medians over rounds; each
ratio is the median of the per-round ratios to ``stock`` (paired, so a busy moment hits
both sides), printed with the ratios' range and interquartile range, so the noise is in
view. The load average and the bulk ratios are printed with every round.
``--connections 0`` skips the handshakes (the bulk measure alone).

A mirror (``--present mirror``) copies the server's key type and size, so the proxy's
own handshake with the client costs what the server's does: with the test PKI's EC P-256
keys less than stock mitmproxy's RSA 2048 certificate, with ``--server-key rsa4096``
more. ``--present substitute`` does the same TLS work as stock.
"""

from __future__ import annotations

import argparse
import contextlib
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
    code_proxy,
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


def proxies_of_the_day(lab_: Lab, variants: list[str], codes: list[str]) -> list[Proxy]:
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
    proxies += [code_proxy(lab_, code) for code in codes]
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


class BulkSession:
    """A logged-in IMAP session through one proxy, for a round's bulk transfers."""

    def __init__(self, proxy: Proxy, context: object) -> None:
        self.proxy = proxy
        self.client = ImapClient(proxy.port, proxy.kind, context)  # type: ignore[arg-type]
        try:
            self.client.login()
            self.client.command("x", b"SELECT INBOX")
        except BaseException:
            self.client.close()
            raise

    def upload(self, message: bytes) -> tuple[float, float]:
        """APPEND ``message`` (then delete it, untimed): wall and proxy CPU seconds."""
        cpu0, wall0 = self.proxy.run_time(), time.perf_counter()
        uid = self.client.append(message)
        wall, cpu = time.perf_counter() - wall0, self.proxy.run_time() - cpu0
        self.client.delete(uid)
        return wall, cpu

    def download(self, uid: int, size: int) -> tuple[float, float]:
        """FETCH the message ``uid`` of ``size`` bytes: wall and proxy CPU seconds."""
        cpu0, wall0 = self.proxy.run_time(), time.perf_counter()
        got = self.client.fetch(uid)
        wall, cpu = time.perf_counter() - wall0, self.proxy.run_time() - cpu0
        if got != size:
            raise RuntimeError(f"{self.proxy.name}: fetched {got} bytes, expected {size}")
        return wall, cpu

    def close(self) -> None:
        try:
            self.client.logout()
        finally:
            self.client.close()


def bulk(
    proxies: list[Proxy], context: object, message: bytes, download_uid: int, transfers: int
) -> dict[str, dict[str, float]]:
    """``transfers`` uploads and downloads of ``len(message)`` bytes through each proxy,
    interleaved (A B, B A, A B, ...): per proxy, the median transfer's MB/s and CPU ms per MB."""
    mb = len(message) / 1e6
    sessions: list[BulkSession] = []
    spent: dict[str, dict[str, list[tuple[float, float]]]] = {
        p.name: {"upload": [], "download": []} for p in proxies
    }
    try:
        for proxy in proxies:
            sessions.append(BulkSession(proxy, context))
        for turn in range(transfers):
            order = sessions if turn % 2 == 0 else sessions[::-1]
            for session in order:
                spent[session.proxy.name]["upload"].append(session.upload(message))
            for session in order:
                spent[session.proxy.name]["download"].append(
                    session.download(download_uid, len(message))
                )
    finally:
        for session in sessions:
            with contextlib.suppress(OSError, ConnectionError, RuntimeError):
                session.close()
    # The median transfer, not the total: one transfer that a busy moment slowed does not
    # move the round's figure.
    return {
        name: {
            f"{way}_{key}": statistics.median(values)
            for way, done in ways.items()
            for key, values in (
                ("mb_per_s", [mb / wall for wall, _ in done]),
                ("cpu_ms_per_mb", [cpu * 1000 / mb for _, cpu in done]),
            )
        }
        for name, ways in spent.items()
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
        print(
            f"  {'proxy':<{width}}{'median':>10}{'min':>10}{'max':>10}{'x stock':>10}"
            f"{'ratio range':>16}{'ratio IQR':>16}"
        )
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
            spread = _spread(ratios) if name != ANCHOR else None
            print(
                f"  {name:<{width}}{statistics.median(values):>10.2f}{min(values):>10.2f}"
                f"{max(values):>10.2f}{ratio:>10.3f}"
                + (f"{spread[0]:>16}{spread[1]:>16}" if spread else "")
            )
            summary.setdefault(name, {})[key] = {
                "median": statistics.median(values),
                "values": values,
                "ratio_to_stock": ratio,
                "ratios": ratios,
            }
    return summary


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def _spread(ratios: list[float]) -> tuple[str, str] | None:
    """The per-round ratios' range and interquartile range, as text."""
    if not ratios:
        return None
    q1, q3 = _quartiles(ratios)
    return f"{min(ratios):.3f}-{max(ratios):.3f}", f"{q1:.3f}-{q3:.3f}"


def _round_bulk_line(this: dict[str, dict[str, float]], names: list[str]) -> str:
    """The round's bulk figures against stock: MB/s ratio and CPU per MB ratio each way."""
    anchor = this.get(ANCHOR, {})
    parts = []
    for name in names:
        if name == ANCHOR or "download_mb_per_s" not in this.get(name, {}):
            continue
        r = this[name]
        figures = []
        for way in ("upload", "download"):
            rate, cpu = r[f"{way}_mb_per_s"], r[f"{way}_cpu_ms_per_mb"]
            figures.append(
                f"{way[:2]} {rate:.1f}/{anchor[f'{way}_mb_per_s']:.1f} MB/s "
                f"{rate / anchor[f'{way}_mb_per_s']:.3f}x, "
                f"CPU {cpu:.1f}/{anchor[f'{way}_cpu_ms_per_mb']:.1f} ms/MB "
                f"{cpu / anchor[f'{way}_cpu_ms_per_mb']:.3f}x"
            )
        parts.append(f"{name} / {ANCHOR}: " + "; ".join(figures))
    return "\n    ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--connections", type=int, default=300, help="handshakes per round (0: bulk only)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--slices", type=int, default=6, help="turns per round that the proxies take in rotation"
    )
    parser.add_argument(
        "--bulk-mb", type=float, default=32, help="MB per bulk transfer (0: no bulk transfer)"
    )
    parser.add_argument(
        "--transfers",
        type=int,
        default=1,
        help="bulk uploads and as many downloads per proxy and round, interleaved across "
        "the proxies (e.g. 8 with --bulk-mb 8)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="'NAME=OPTIONS': one more certmatch proxy with these options (NAME containing "
        "'starttls' runs in STARTTLS mode)",
    )
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        help="'NAME=DIR [OPTIONS]': one more certmatch proxy run from the checkout DIR (e.g. "
        "a git worktree of an earlier commit); NAME containing 'starttls' runs in STARTTLS mode",
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
        proxies = proxies_of_the_day(lab_, args.variant, args.code)
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
            if message:  # and the server's cache of the message, the transfer paths
                bulk(proxies, context, message, download_uid, 1)
            for number in range(args.rounds):
                order = proxies[number % len(proxies) :] + proxies[: number % len(proxies)]
                # The round's handshakes in --slices turns, each proxy in each turn, so
                # that a busy moment on the machine falls on every proxy alike.
                spent = {p.name: [0.0, 0.0, 0] for p in proxies}  # wall s, CPU s, errors
                for part in _split(args.connections, args.slices) if args.connections else []:
                    for proxy in order:
                        r = handshakes(proxy, context, part, args.concurrency)
                        spent[proxy.name][0] += part / r["conn_per_s"]
                        spent[proxy.name][1] += r["cpu_ms_per_conn"] * part / 1000
                        spent[proxy.name][2] += int(r["errors"])
                this: dict[str, dict[str, float]] = {
                    name: (
                        {
                            "conn_per_s": args.connections / wall,
                            "cpu_ms_per_conn": cpu * 1000 / args.connections,
                            "errors": errors,
                        }
                        if args.connections
                        else {}
                    )
                    for name, (wall, cpu, errors) in spent.items()
                }
                if message:
                    for name, figures in bulk(
                        order, context, message, download_uid, args.transfers
                    ).items():
                        this[name] |= figures
                rounds.append(this)
                line = f"round {number + 1}/{args.rounds} done, load average {load_average()}"
                if args.connections:
                    line += ": " + ", ".join(
                        f"{n} {this[n]['cpu_ms_per_conn']:.1f} ms/conn" for n in names
                    )
                if message:
                    line += "\n  bulk " + _round_bulk_line(this, names)
                print(line, flush=True)
            # Every bulk call opens one session per proxy (the warm-up's too).
            expected = WARMUP + args.rounds * args.connections + (args.rounds + 1 if message else 0)
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
        + (
            f"; bulk {args.transfers} x {args.bulk_mb:g} MB up and down per proxy and round"
            if message
            else ""
        )
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

    def ratios(label: str) -> list[float]:
        name, key = where[label]
        return list(summary.get(name, {}).get(key, {}).get("ratios", []))

    where = {
        "certmatch CPU per handshake <= 1.05x stock": ("certmatch", "cpu_ms_per_conn"),
        "certmatch connections/s >= 0.95x stock": ("certmatch", "conn_per_s"),
        "STARTTLS upload >= 0.95x stock implicit TLS": ("certmatch starttls", "upload_mb_per_s"),
        "STARTTLS download >= 0.95x stock implicit TLS": (
            "certmatch starttls",
            "download_mb_per_s",
        ),
    }
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
    print("\ngoals (issue 12; median of the per-round ratios, then the rounds' spread):")
    for label, value, ok in checks:
        if math.isnan(value):
            print(f"  -      {label}: not measured in this run")
            continue
        each = ratios(label)
        q1, q3 = _quartiles(each)
        held = sum(1 for r in each if ok(r))
        print(
            f"  {'met ' if ok(value) else 'MISSED'} {label}: {value:.3f} "
            f"(range {min(each):.3f}-{max(each):.3f}, IQR {q1:.3f}-{q3:.3f}; "
            f"held in {held} of {len(each)} rounds)"
        )


def _split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal whole parts."""
    parts = max(1, min(parts, total))
    return [total // parts + (i < total % parts) for i in range(parts)]


if __name__ == "__main__":
    sys.exit(main())
