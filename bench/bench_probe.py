"""How fast ``certmatch probe`` is, side by side with ``openssl s_client`` on the same servers.

    uv run --frozen python bench/bench_probe.py [--repeat 7] [--endpoints 100]

Child processes (--server-processes, default 2) run N embedded IMAPS servers on loopback
(certmatch.lab.mailservers, one event loop each, EC P-256 certificates from a throwaway CA,
SNI-selected), so the servers never share the measuring process's GIL. Then, each timing the median of
--repeat runs (after one warm-up):

* one endpoint, ``--connect`` (no DNS), in-process: :func:`probe_endpoint`, both handshakes
  (with SNI and without), judged by the core judge as ``check`` judges them;
* ``openssl s_client -connect ... -servername ...`` against the same server: the wall time of
  one process, one handshake (the reference: the issue's goal is "no slower than this");
* the ``certmatch probe`` command as a new process (interpreter start included);
* N endpoints at once: :func:`probe_many` over N servers, both handshakes each (2N).

sslyze (PyPI; ``SSLYZE=path``) and testssl.sh (Debian's ``testssl.sh`` package, command
``testssl``) are timed once each when installed: a full default scan of the same endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_SERVERS = r"""
import json, sys
from cryptography.hazmat.primitives import serialization
from certmatch.lab import pki
from certmatch.lab.mailservers import CertificateSet, PemIdentity, ServerSpec, serve
root = pki.make_ca("bench root")
leaf = pki.issue_leaf(root, cn="imap.example.test", dns=["imap.example.test"])
default = pki.issue_leaf(root, cn="default.example.test", dns=["default.example.test"])
def identity(issued):
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in issued.chain())
    return PemIdentity(chain, issued.key_pem())
certs = CertificateSet(identity(default), {"imap.example.test": identity(leaf)})
specs = [ServerSpec("imap", "implicit", certs) for _ in range(int(sys.argv[1]))]
with open(sys.argv[2], "wb") as out:
    out.write(root.cert.public_bytes(serialization.Encoding.PEM))
with serve(specs) as servers:
    print(json.dumps([s.port for s in servers]), flush=True)
    sys.stdin.read()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument(
        "--server-processes", type=int, default=2, help="processes the servers run in (2 cores)"
    )
    args = parser.parse_args()

    from certmatch.core.judge import Judge
    from certmatch.core.probe_plan import Target
    from certmatch.core.trust import TrustStore
    from certmatch.net.endpoint import probe_endpoint

    with tempfile.TemporaryDirectory(prefix="certmatch-bench-") as tmp:
        # The servers run in --server-processes children (one CA each, so each child's own
        # root is trusted), splitting the endpoints between them.
        children, ports, roots = [], [], []
        for index in range(args.server_processes):
            share = args.endpoints // args.server_processes + (
                index < args.endpoints % args.server_processes
            )
            root = Path(tmp) / f"root{index}.pem"
            child = subprocess.Popen(
                [sys.executable, "-c", _SERVERS, str(share), str(root)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            children.append(child)
            roots.append(str(root))
        try:
            for child in children:
                assert child.stdout is not None
                ports += json.loads(child.stdout.readline())
            store = TrustStore.load(roots, use_system=False)
            judge = Judge(store)
            target = Target("imap.example.test", ports[0])
            root = Path(roots[0])

            def one() -> float:
                start = time.perf_counter()
                result = asyncio.run(probe_endpoint(target, connect="127.0.0.1", lookup=None))
                verdicts = [judge.judgement(s).verdict for s in result.sessions]
                elapsed = time.perf_counter() - start
                assert verdicts[0] == "match", verdicts
                return elapsed

            probe_one = _median(one, args.repeat)
            s_client = _median(lambda: _s_client(ports[0], root), args.repeat)
            command = _median(lambda: _command(ports[0], root), max(3, args.repeat // 2))
            many = _median(lambda: _many(ports, judge), max(3, args.repeat // 2))
            others = {
                name: _once(lambda n=name, b=binary: _other(n, b, ports[0]))
                for name, binary in _installed().items()
            }
        finally:
            for child in children:
                if child.stdin:
                    child.stdin.close()
                child.wait(timeout=10)

    print(f"one endpoint, --connect, both handshakes, in-process: {probe_one * 1000:7.1f} ms")
    print(f"openssl s_client, one handshake, one process:          {s_client * 1000:7.1f} ms")
    print(f"  ratio probe / s_client:                              {probe_one / s_client:7.2f}")
    print(f"certmatch probe command (new interpreter):             {command * 1000:7.1f} ms")
    print(
        f"{len(ports)} endpoints at once ({2 * len(ports)} handshakes), judged:     "
        f"{many:7.2f} s  ({many / len(ports) * 1000:.1f} ms an endpoint)"
    )
    print(
        f"  of which this process's CPU time:                    {statistics.median(_CPU):7.2f} s"
    )
    for name, seconds in others.items():
        print(f"{name}, one endpoint, its default scan:{' ' * (19 - len(name))}{seconds:7.2f} s")
    if not others:
        print("sslyze, testssl.sh: not installed here, not measured")


def _once(run) -> float:
    return run()


def _median(run, repeat: int) -> float:
    run()  # warm-up: imports, first connections
    return statistics.median(run() for _ in range(repeat))


def _s_client(port: int, root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "imap.example.test",
            "-CAfile",
            str(root),
            "-verify_hostname",
            "imap.example.test",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - start


def _command(port: int, root: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "certmatch",
            "probe",
            "--connect",
            "127.0.0.1",
            f"imap.example.test:{port}",
            "--ca-file",
            str(root),
            "--no-system-store",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        cwd=REPO,
    )
    elapsed = time.perf_counter() - start
    assert done.returncode in (0, 1), done.returncode
    return elapsed


def _many(ports: list[int], judge) -> float:
    from certmatch.cli.probe import probe_many
    from certmatch.core.probe_plan import Target

    targets = [Target("imap.example.test", port) for port in ports]
    cpu = time.process_time()
    start = time.perf_counter()
    results = asyncio.run(probe_many(targets, None, connect="127.0.0.1"))
    for result in results:
        for session in result.sessions:
            judge.judgement(session)
    elapsed = time.perf_counter() - start
    _CPU.append(time.process_time() - cpu)
    assert sum(len(r.sessions) for r in results) == 2 * len(ports)
    assert all(s.chain for r in results for s in r.sessions)
    return elapsed


_CPU: list[float] = []  # the measuring process's own CPU seconds in each _many run


# The other tools, by the names their packages install them under: Debian's testssl.sh package
# installs "testssl"; sslyze comes from PyPI (SSLYZE=/path/to/sslyze to use one in another venv).
def _installed() -> dict[str, str]:
    found = {}
    for name, binary in (("sslyze", os.environ.get("SSLYZE", "sslyze")), ("testssl.sh", "testssl")):
        path = shutil.which(binary) or shutil.which(name)
        if path:
            found[name] = path
    return found


def _other(name: str, binary: str, port: int) -> float:
    """One full run of the tool against the endpoint, as its users run it (its default checks)."""
    command = {
        "sslyze": [binary, f"127.0.0.1:{port}"],
        "testssl.sh": [binary, "--quiet", "--warnings", "off", f"127.0.0.1:{port}"],
    }[name]
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
