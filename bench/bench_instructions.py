"""Instructions per handshake, stock mitmdump against ``certmatch proxy``, counted by callgrind.

    uv run --frozen python bench/bench_instructions.py [--connections 60] [--starttls]
        [--variant 'NAME=--proxy-option ...']

CPU time on a machine shared with other work moves by ±10 % from one run to the next;
the number of instructions a proxy executes per handshake does not. Each proxy runs
under ``valgrind --tool=callgrind`` with instrumentation off until it is warmed up
(10 handshakes); then --connections short IMAP sessions (TLS handshake, greeting,
LOGOUT) go through it one after another while callgrind counts, and the count (Ir, all
threads) is divided by the number of sessions. With --bulk-mb, one upload (APPEND) and
one download (FETCH) of that size follow on a logged-in session, each counted on its
own and divided by the MB moved. Instructions are not cycles (a cache miss
costs no instruction), so this is a steady check of the CPU-time ratio, not a
replacement for it: ``bench_proxy.py`` measures the time.

``--code NAME=DIR`` adds a ``certmatch proxy`` running the code in DIR: the way to count
what a proposed change saves, without committing it. ``--annotate N`` also prints the N
functions with the most inclusive instructions in each certmatch proxy (C functions:
Python code shows as the interpreter's own).
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
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
    variant_proxy,
)

harness.TIMEOUT_S = 900  # a proxy under callgrind runs some 50 times slower

VALGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no"]


def callgrind(proxy: Proxy, out: Path) -> Proxy:
    proxy.argv = [*VALGRIND, f"--callgrind-out-file={out}", *proxy.argv]
    return proxy


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=600)


def totals(path: Path) -> int:
    """The Ir total of a callgrind dump."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


PHASES = ("handshakes", "upload", "download")


def trigger(dump: Path) -> str:
    """The name given to a dump (``callgrind_control --dump=NAME``)."""
    with dump.open(errors="replace") as file:
        for line in itertools.islice(file, 40):
            if line.startswith("desc: Trigger:"):
                return line.split()[-1]
    return ""


def measure(
    proxy: Proxy, context: ssl.SSLContext, n: int, message: bytes, download_uid: int
) -> dict[str, float]:
    """Counted phases, each in a dump of its own: ``n`` handshakes, then (with a message) one
    upload and one download of it on a logged-in session."""
    for _ in range(10):  # warm up with instrumentation off
        handshake_session(proxy.port, proxy.kind, context)
    pid = str(proxy.pid)
    control("--instr=on", pid)
    control("--dump=warmup", pid)  # the counts so far go to this dump
    started = time.perf_counter()
    for _ in range(n):
        handshake_session(proxy.port, proxy.kind, context)
    control("--dump=handshakes", pid)
    result = {"handshakes_units": float(n)}
    if message:
        mb = len(message) / 1e6
        client = ImapClient(proxy.port, proxy.kind, context)
        client.login()
        client.command("x", b"SELECT INBOX")
        control("--dump=login", pid)
        uid = client.append(message)
        control("--dump=upload", pid)
        client.delete(uid)
        control("--dump=delete", pid)
        if client.fetch(download_uid) != len(message):
            raise RuntimeError("the download came back short")
        control("--dump=download", pid)
        client.logout()
        client.close()
        result |= {"upload_units": mb, "download_units": mb}
    control("--instr=off", pid)
    result["seconds"] = time.perf_counter() - started
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=60)
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        help="'NAME=DIR [OPTIONS]': one more certmatch proxy (implicit TLS) running the code "
        "in DIR (PYTHONPATH), e.g. a copy of the checkout with a proposed change",
    )
    parser.add_argument("--only", default="", help="comma-separated proxy names to run")
    parser.add_argument("--annotate", type=int, default=0)
    parser.add_argument(
        "--bulk-mb",
        type=float,
        default=0,
        help="also count one upload and one download of this many MB (per MB)",
    )
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here")
    add_server_key_option(parser)
    args = parser.parse_args()
    print(f"code under test: {code_under_test()}; server key: {args.server_key}")
    print(f"load average at start: {load_average()}", flush=True)
    n = args.connections
    with (
        tempfile.TemporaryDirectory(prefix="certmatch-ir-") as tmp,
        lab(Path(tmp), args.server_key) as lab_,
    ):
        work, conf, root = lab_.work, lab_.confdir, lab_.root_ca
        proxies = [
            stock_mitmdump("stock", lab_.implicit(), conf),
            certmatch_proxy("certmatch", lab_.implicit(), conf, root, work),
        ]
        if args.starttls:
            proxies.append(certmatch_proxy("certmatch starttls", lab_.starttls(), conf, root, work))
        proxies += [variant_proxy(lab_, variant) for variant in args.variant]
        for code in args.code:
            name, _, spec = code.partition("=")
            directory, *options = shlex.split(spec)
            proxy = certmatch_proxy(name, lab_.implicit(), conf, root, work, options)
            proxy.env["PYTHONPATH"] = str(Path(directory).resolve())
            proxy.cwd = Path(directory).resolve()
            proxies.append(proxy)
        if args.only:
            wanted = {"stock", *args.only.split(",")}
            proxies = [p for p in proxies if p.name in wanted]
        message = message_of(int(args.bulk_mb * 1e6)) if args.bulk_mb else b""
        download_uid = 0
        if message:
            seed = ImapClient(lab_.dovecot.imaps_port, "tls", direct_context(root))
            seed.login()
            download_uid = seed.append(message)
            seed.logout()
        results: dict[str, dict[str, float]] = {}
        for proxy in proxies:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", proxy.name)
            callgrind(proxy, work / f"callgrind.{slug}")
            try:
                start(proxy, work, startup_timeout=900)
                results[proxy.name] = measure(proxy, proxy_ca(conf), n, message, download_uid)
            except (OSError, RuntimeError) as exc:
                log = work / f"{slug}.log"
                tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
                print(f"  {proxy.name}: failed ({exc!r}); its log ends:", *tail, sep="\n    ")
                continue
            finally:
                stop(proxy)
            dumps = {trigger(d): d for d in work.glob(f"callgrind.{slug}*") if d.stat().st_size}
            r = results[proxy.name]
            r |= {
                phase: totals(dumps[phase]) / r.pop(f"{phase}_units")
                for phase in PHASES
                if phase in dumps
            }
            print(
                f"  {proxy.name}: {r['handshakes'] / 1e6:.1f} M instructions per handshake"
                + (
                    f", {r['upload'] / 1e6:.1f} M per MB up, {r['download'] / 1e6:.1f} M per MB down"
                    if message
                    else ""
                )
                + f" ({r['seconds']:.0f} s under callgrind, load {load_average()})",
                flush=True,
            )
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for phase, dump in dumps.items():
                    (args.keep / f"{slug}.{phase}.callgrind").write_bytes(dump.read_bytes())
            if args.annotate and proxy.name != "stock":
                annotated = subprocess.run(
                    ["callgrind_annotate", "--inclusive=yes", str(dumps["handshakes"])],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                body = [line for line in annotated.splitlines() if re.match(r"^\s*[\d,]+ ", line)]
                print("\n".join(body[: args.annotate]))
    stock = results.get("stock") or next(iter(results.values()))
    print(f"\n{n} sequential IMAP sessions each; instructions (Ir, all threads) and x stock:")
    units = {"handshakes": "per handshake", "upload": "per MB up", "download": "per MB down"}
    for phase in [p for p in PHASES if p in stock]:
        print(f"  {units[phase]}:")
        for name, r in results.items():
            print(f"    {name:<26}{r[phase] / 1e6:>10.2f} M   {r[phase] / stock[phase]:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
