"""How fast ``certmatch check`` judges a large recording, against merely parsing its lines.

    uv run --frozen python bench/bench_check.py [--sessions 100000] [--repeat 3] [--large 1000000]
        [--dns samples|every|both]

Builds a recording of N sessions by cycling through the sample recordings in recordings/
(every cause, real captured chains; each cycle one second later and from another client
port, so many sessions share a few chains, as a busy proxy records them); with ``--dns
every`` (or ``both``, the default, which runs both mixes) every session also carries DNS
facts as the proxy writes them, TTLs and look-up times differing per session. Then, side by
side in one run, each step in a fresh child process (so each peak RSS is its own):

* parse only: ``json.loads`` of every line of the file, read in binary (the floor);
* ``check``: :func:`certmatch.cli.check.check`, output to /dev/null;
* ``check --json``: the same with ``json_output=True``.

Rates are sessions per second from the median of --repeat interleaved runs, and each
check's ratio is its rate over the parse-only rate. --large N adds one run of each at N
sessions (the memory check: peak RSS must not grow with N). Timing starts after imports
and after the trust store is loaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "recordings"

# Each step runs in its own interpreter; it prints {"seconds": ..., "rss_mb": ...}.
_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
step, path = sys.argv[1], Path(sys.argv[2])
if step == "parse":
    start = time.process_time()
    with path.open("rb") as file:
        for line in file:
            json.loads(line)
else:
    import os
    from certmatch.cli.check import check
    from certmatch.core.trust import TrustStore
    store = TrustStore.load([Path(sys.argv[3])])
    sys.stdout = open(os.devnull, "w", encoding="utf-8")
    sys.stderr = open(os.devnull, "w", encoding="utf-8")
    start = time.process_time()
    check([path], store, json_output=step == "check --json")
    sys.stdout.flush()
seconds = time.process_time() - start
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
sys.__stdout__.write(json.dumps({"seconds": seconds, "rss_mb": rss_mb}) + "\n")
"""

STEPS = ("parse", "check", "check --json")


def build(path: Path, n: int, dns: bool = False) -> None:
    """A recording of ``n`` sessions cycled from the samples (one header line). With
    ``dns``, every session carries DNS facts, as a proxy that looks names up writes them
    (:func:`dns_facts`); without, only the samples that have them do."""
    header, sessions = None, []
    for sample in sorted(SAMPLES.glob("*.jsonl")):
        lines = sample.read_text(encoding="utf-8").splitlines()
        header = header or lines[0]
        sessions += [json.loads(line) for line in lines[1:] if line.strip()]
    with path.open("w", encoding="utf-8") as out:
        out.write(f"{header}\n")
        for i in range(n):
            cycle, session = divmod(i, len(sessions))
            data = dict(sessions[session])
            data["id"] = f"bench-{i:08d}"
            started = datetime.fromisoformat(data["started"]) + timedelta(seconds=cycle)
            data["started"] = started.isoformat(timespec="milliseconds")
            data["client_address"] = f"127.0.0.1:{1024 + i % 60000}"
            if dns and data.get("dns") is None:
                data["dns"] = dns_facts(data, i)
            out.write(json.dumps(data, separators=(",", ":")) + "\n")


_SRV = ("_imaps._tcp", "_imap._tcp", "_pop3s._tcp", "_pop3._tcp", "_submissions._tcp")


def dns_facts(session: dict[str, Any], i: int) -> dict[str, Any] | None:
    """What a proxy asking a caching resolver writes for a session: the host's A and AAAA,
    the PTR of the server's address, the mail domain's MX and SRV records, with TTLs that
    count down and look-up times that differ from one session to the next."""
    host = session.get("requested_host")
    ip = session.get("server_ip") or "127.0.0.1"
    if not host or host[0].isdigit() or ":" in host:
        return None
    domain = host.split(".", 1)[-1] if host.count(".") > 1 else host
    resolver = "127.0.0.53:53"
    ttl = 300 - i % 300

    def answer(name: str, rtype: str, data: list[str], error: str | None = None) -> Any:
        return {
            "name": name,
            "type": rtype,
            "resolver": resolver,
            "data": data,
            "ttl": None if error else ttl,
            "error": error,
        }

    answers = [
        answer(host, "CNAME", [], "no-data"),
        answer(host, "A", [ip]),
        answer(host, "AAAA", [], "no-data"),
        answer(".".join(reversed(ip.split("."))) + ".in-addr.arpa", "PTR", [host]),
        answer(domain, "MX", [f"10 mail.{domain}"]),
        *(answer(f"{service}.{domain}", "SRV", [], "nxdomain") for service in _SRV),
    ]
    return {
        "host": host,
        "resolvers": [resolver],
        "server_ip": ip,
        "mail_domain": domain,
        "answers": answers,
        "started": session["started"],
        "elapsed": round(0.001 + (i % 97) / 1000, 3),
    }


def run_step(step: str, path: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, step, str(path), str(SAMPLES / "ca.pem")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(path: Path, n: int, repeat: int) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {step: [] for step in STEPS}
    for _ in range(repeat):  # interleaved, so a busy moment hits every step alike
        for step in STEPS:
            runs[step].append(run_step(step, path))
    return {
        step: {
            "seconds": statistics.median(r["seconds"] for r in results),
            "rate": n / statistics.median(r["seconds"] for r in results),
            "rss_mb": max(r["rss_mb"] for r in results),
        }
        for step, results in runs.items()
    }


def report(n: int, size: int, repeat: int, results: dict[str, dict[str, float]]) -> None:
    floor = results["parse"]["rate"]
    runs = f"median of {repeat} runs" if repeat > 1 else "one run"
    print(f"{n:,} sessions ({size / 1e6:.0f} MB), {runs}")
    print(f"  {'step':<14}{'seconds':>9}{'sessions/s':>12}{'x parse':>9}{'peak RSS':>11}")
    for step, r in results.items():
        print(
            f"  {step:<14}{r['seconds']:>9.2f}{r['rate']:>12,.0f}{r['rate'] / floor:>9.3f}"
            f"{r['rss_mb']:>8.0f} MB"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large", type=int, default=0, help="also one run at this many")
    parser.add_argument(
        "--dns",
        choices=("samples", "every", "both"),
        default="both",
        help="DNS facts as in the samples (5 of 47), on every session, or both mixes",
    )
    args = parser.parse_args()
    mixes = {"samples": [False], "every": [True], "both": [False, True]}[args.dns]
    with tempfile.TemporaryDirectory() as tmp:
        for n, repeat in [(args.sessions, args.repeat), (args.large, 1)]:
            for dns in mixes if n else ():
                path = Path(tmp) / f"bench-{n}.jsonl"
                build(path, n, dns)
                print(f"DNS facts on {'every session' if dns else 'the samples that have them'}:")
                report(n, path.stat().st_size, repeat, measure(path, n, repeat))
                path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
