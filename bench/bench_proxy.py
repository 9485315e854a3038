"""What certmatch costs a mail session, against stock mitmproxy and a direct connection, in one run.

    uv run python bench/bench_proxy.py [--connections 200]

Starts a real dovecot (IMAPS) on loopback, then opens N sequential IMAPS
connections (TLS handshake + IMAP greeting + LOGOUT) three ways:
direct, through stock mitmdump (ssl_insecure, no addon), and through
mitmdump with the certmatch addon (recording every session). Prints the
median and p90 latency per connection, the ratios, and the proxy's CPU
time per connection (from /proc). Needs root and dovecot, like the tests.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from proxy_fixtures import free_port, wait_for_port
from scenarios import mint_scenario_pki
from servers import start_dovecot

MITMDUMP = str(Path(sys.executable).parent / "mitmdump")


def one_session(port: int, context: ssl.SSLContext) -> float:
    start = time.perf_counter()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="imap.example.test") as tls,
    ):
        greeting = tls.recv(1024)
        assert greeting.startswith(b"* OK"), greeting
        tls.sendall(b"a LOGOUT\r\n")
        while tls.recv(1024):
            pass
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run(port: int, context: ssl.SSLContext, n: int, pid: int | None) -> dict:
    for _ in range(5):  # warm up
        one_session(port, context)
    cpu0 = cpu_seconds(pid) if pid else 0.0
    times = [one_session(port, context) for _ in range(n)]
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    times.sort()
    return {
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": times[int(0.9 * len(times))] * 1000,
        "cpu_ms_per_conn": cpu * 1000 / n if pid else None,
    }


def start_mitmdump(
    work: Path, name: str, upstream: int, extra: list[str]
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = work / f"conf-{name}"
    argv = [
        MITMDUMP,
        "-q",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--mode",
        f"reverse:tls://127.0.0.1:{upstream}",
        "--set",
        f"confdir={conf}",
        *extra,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="certmatch-bench-"))
    pki = mint_scenario_pki(work / "pki")
    dovecot = start_dovecot(pki.default, pki.sni, work)
    procs = []
    try:
        direct_ctx = ssl.create_default_context(cafile=str(pki.root_ca))
        stock, stock_port = start_mitmdump(
            work, "stock", dovecot.imaps_port, ["--set", "ssl_insecure=true"]
        )
        record = work / "bench.jsonl"
        ours, ours_port = start_mitmdump(
            work,
            "certmatch",
            dovecot.imaps_port,
            [
                "-s",
                str(REPO / "addons" / "capture.py"),
                "--set",
                f"certmatch_record={record}",
                "--set",
                f"certmatch_ca_file={pki.root_ca}",
            ],
        )
        procs = [stock, ours]
        results = {
            "direct": run(dovecot.imaps_port, direct_ctx, args.connections, None),
            "stock mitmdump": run(
                stock_port,
                ssl.create_default_context(
                    cafile=str(work / "conf-stock" / "mitmproxy-ca-cert.pem")
                ),
                args.connections,
                stock.pid,
            ),
            "mitmdump + certmatch": run(
                ours_port,
                ssl.create_default_context(
                    cafile=str(work / "conf-certmatch" / "mitmproxy-ca-cert.pem")
                ),
                args.connections,
                ours.pid,
            ),
        }
        recorded = sum(1 for _ in record.open()) - 1
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        dovecot.stop()
    print(
        f"IMAPS sessions (handshake + greeting + LOGOUT), {args.connections} sequential each, dovecot on loopback"
    )
    print(f"{'path':<24}{'median ms':>10}{'p90 ms':>10}{'proxy CPU ms/conn':>20}")
    for name, r in results.items():
        cpu = f"{r['cpu_ms_per_conn']:.1f}" if r["cpu_ms_per_conn"] is not None else "-"
        print(f"{name:<24}{r['median_ms']:>10.1f}{r['p90_ms']:>10.1f}{cpu:>20}")
    stock_r, ours_r, direct_r = (
        results["stock mitmdump"],
        results["mitmdump + certmatch"],
        results["direct"],
    )
    print(
        f"certmatch / stock mitmdump, median latency: {ours_r['median_ms'] / stock_r['median_ms']:.2f}x"
    )
    print(
        f"certmatch / stock mitmdump, CPU per connection: {ours_r['cpu_ms_per_conn'] / stock_r['cpu_ms_per_conn']:.2f}x"
    )
    print(f"certmatch / direct, median latency: {ours_r['median_ms'] / direct_r['median_ms']:.2f}x")
    print(f"sessions recorded: {recorded} (expected {args.connections + 5})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
