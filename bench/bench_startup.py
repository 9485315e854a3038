"""How long ``certmatch proxy`` takes to listen, against stock ``mitmdump``.

    uv run --frozen python bench/bench_startup.py [--rounds 9] [--bytecode cached|none]
        [--also NAME=SRC_DIR]

Each figure is a fresh process on loopback, the commands interleaved (rotated order) round
by round, so drift in the machine's speed hits them alike:

- ``mitmdump --version`` (the venv's): the interpreter and mitmproxy's imports, the anchor;
- ``certmatch --version``;
- stock ``mitmdump --mode reverse:tls://127.0.0.1:1`` on a free port: seconds from spawn
  until the port accepts a TCP connection;
- ``certmatch proxy`` with the same mode, ``--record`` and ``--confdir``, and the same with
  ``--observe``: seconds until the port accepts, and until its listen line
  (``certmatch …: proxy listening on …``) has been printed.

Each proxy has its own confdir, its CA made by an untimed first run. ``--bytecode cached``
(default) gives the children a bytecode cache of their own (``PYTHONPYCACHEPREFIX``), filled
by that first run, as an installed package has; ``--bytecode none`` makes them compile every
module at every start (``PYTHONDONTWRITEBYTECODE=1`` and an empty cache), as a venv without
``__pycache__`` does. ``--also NAME=DIR`` adds ``certmatch proxy`` from another source tree
(e.g. a ``git worktree`` of an older commit) to the same rounds, for before/after figures.

Printed: medians with their range, the median of each round's ratio to stock mitmdump (to
its accepting port; ``--version`` to ``mitmdump --version``); the CPU time (user + system,
from /proc) each had used when ready (certmatch: its listen line; stock: its port accepts),
which a busy machine disturbs less than wall time; with ``--also``, certmatch over each other
tree paired by round; and the 1-minute load average before and after.

mitmproxy loads ``-s`` scripts (certmatch's addons) in a task that runs right after it binds
its sockets, so certmatch's port accepts before its addons are loaded; such a client waits in
the kernel's queue. The listen line comes once they are loaded and the servers are up.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MITMDUMP = str(BIN / "mitmdump")
TARGET = "reverse:tls://127.0.0.1:1"  # nothing listens there; the proxy only has to start
LISTEN_LINE = "proxy listening on"  # certmatch's banner, printed once the proxy listens
TIMEOUT_S = 120.0


def load_average() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@dataclass
class Command:
    """One thing to start: ``argv(port, workdir)`` builds its command line."""

    name: str
    kind: str  # "exit": time until it exits; "listen": until the port accepts
    argv: Callable[[int, Path], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)  # to exit, or until the port accepts
    line_seconds: list[float] = field(default_factory=list)  # until the listen line
    cpu: list[float] = field(default_factory=list)  # CPU seconds until it exits, or is ready


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_exit(command: Command, env: dict[str, str], workdir: Path) -> tuple[float, float]:
    """Seconds until it exits, and its CPU seconds."""
    cpu_before = children_cpu()
    start = time.monotonic()
    done = subprocess.run(
        command.argv(0, workdir),
        check=False,
        cwd=workdir,
        env=env,
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    elapsed = time.monotonic() - start
    cpu = children_cpu() - cpu_before
    if done.returncode != 0:
        raise SystemExit(
            f"{command.name} failed ({done.returncode}): {done.stderr.decode()[-500:]}"
        )
    return elapsed, cpu


def time_listen(
    command: Command, env: dict[str, str], workdir: Path
) -> tuple[float, float | None, float]:
    """Seconds until the port accepts, until the listen line appeared (None: it never did),
    and CPU seconds until it is ready: the listen line, or for stock mitmdump the port."""
    port = free_port()
    start = time.monotonic()
    child = subprocess.Popen(
        command.argv(port, workdir),
        cwd=workdir,  # not the checkout: ``-m certmatch`` imports the installed or --also code
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen: list[float] = []
    cpu: list[float] = []
    output: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            line = raw.decode(errors="replace")
            output.append(line)
            if not seen and LISTEN_LINE in line:
                seen.append(time.monotonic() - start)
                cpu.append(cpu_seconds(child.pid))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    accepted = None
    wants_line = command.name.startswith("certmatch")
    try:
        while time.monotonic() - start < TIMEOUT_S:
            if child.poll() is not None:
                break
            if accepted is None and accepts(port):
                accepted = time.monotonic() - start
                if not wants_line:
                    cpu.append(cpu_seconds(child.pid))
            if accepted is not None and (seen or not wants_line):
                break
            time.sleep(0.005)
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        reader.join(5)
    if accepted is None:
        raise SystemExit(f"{command.name} never listened:\n{''.join(output)[-2000:]}")
    return accepted, (seen[0] if seen else None), (cpu[0] if cpu else float("nan"))


def commands(extra: Sequence[tuple[str, Path]]) -> list[Command]:
    def certmatch(*flags: str) -> Callable[[int, Path], list[str]]:
        def argv(port: int, workdir: Path) -> list[str]:
            return [
                sys.executable,
                "-m",
                "certmatch",
                "proxy",
                "--mode",
                TARGET,
                "--listen-port",
                str(port),
                "--record",
                str(workdir / f"{port}.jsonl"),
                "--confdir",
                str(workdir / "confdir"),
                *flags,
            ]

        return argv

    found = [
        Command("mitmdump --version", "exit", lambda port, workdir: [MITMDUMP, "--version"]),
        Command(
            "certmatch --version",
            "exit",
            lambda port, workdir: [sys.executable, "-m", "certmatch", "--version"],
        ),
        Command(
            "mitmdump (stock)",
            "listen",
            lambda port, workdir: [
                MITMDUMP,
                "--mode",
                TARGET,
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                str(port),
                "--set",
                f"confdir={workdir / 'confdir'}",
            ],
        ),
        Command("certmatch proxy", "listen", certmatch()),
        Command("certmatch proxy --observe", "listen", certmatch("--observe")),
    ]
    for name, src in extra:
        found.append(
            Command(f"certmatch proxy ({name})", "listen", certmatch(), {"PYTHONPATH": str(src)})
        )
    return found


def child_env(bytecode: str, cache: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPYCACHEPREFIX=str(cache))
    env.pop("PYTHONPATH", None)
    if bytecode == "none":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def imported_from(env: dict[str, str], cwd: Path) -> str:
    """Where ``python -m certmatch`` with ``env`` imports certmatch from."""
    return subprocess.run(
        [sys.executable, "-c", "import certmatch; print(certmatch.__file__)"],
        check=True,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):6.2f} s ({min(values):.2f}–{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--bytecode", choices=("cached", "none"), default="cached")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also time certmatch proxy imported from this source tree",
    )
    args = parser.parse_args()
    extra = []
    for item in args.also:
        name, _, src = item.partition("=")
        extra.append((name, Path(src).resolve()))
    todo = commands(extra)
    load_before = load_average()
    print(f"{os.cpu_count()} cores, bytecode {args.bytecode}, {args.rounds} rounds")
    print(f"load average (1 min) before: {load_before:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        root = Path(tmp)
        cache = root / "pycache"
        cache.mkdir()
        workdirs = {}
        for number, command in enumerate(todo):
            workdirs[command.name] = root / f"w{number}"
            workdirs[command.name].mkdir()
        # The untimed first run: each proxy's CA, and with --bytecode cached the bytecode.
        warm = child_env("cached", cache)
        for command in todo:
            env = {**warm, **command.env}
            if command.kind == "exit":
                time_exit(command, env, workdirs[command.name])
            else:
                time_listen(command, env, workdirs[command.name])
        for command in todo:
            if command.name.startswith("certmatch proxy"):
                print(f"  {command.name}: {imported_from({**warm, **command.env}, root)}")
        if args.bytecode == "none":
            cache = root / "empty-pycache"
            cache.mkdir()
        env = child_env(args.bytecode, cache)
        for number in range(args.rounds):
            shift = number % len(todo)
            for command in todo[shift:] + todo[:shift]:
                run_env = {**env, **command.env}
                if command.kind == "exit":
                    elapsed, cpu = time_exit(command, run_env, workdirs[command.name])
                    command.seconds.append(elapsed)
                    command.cpu.append(cpu)
                else:
                    accepted, line, cpu = time_listen(command, run_env, workdirs[command.name])
                    command.seconds.append(accepted)
                    command.cpu.append(cpu)
                    if line is not None:
                        command.line_seconds.append(line)
            print(f"  round {number + 1}/{args.rounds}, load {load_average():.2f}", flush=True)
    load_after = load_average()

    by_name = {command.name: command for command in todo}
    stock = by_name["mitmdump (stock)"].seconds
    version = by_name["mitmdump --version"].seconds

    def ratio(values: Sequence[float], anchor: Sequence[float]) -> str:
        return f"{statistics.median(v / a for v, a in zip(values, anchor, strict=True)):5.2f}x"

    print()
    print(f"  {'command':<40}{'median (range)':>24}{'ratio':>9}  to")
    for command in todo:
        anchor, anchor_name = (
            (version, "mitmdump --version") if command.kind == "exit" else (stock, "stock accepts")
        )
        what = "exits" if command.kind == "exit" else "accepts"
        print(
            f"  {command.name + ' ' + what:<40}{spread(command.seconds):>24}"
            f"{ratio(command.seconds, anchor):>9}  {anchor_name}"
        )
        if command.line_seconds:
            if len(command.line_seconds) != len(command.seconds):
                print(f"  {command.name}: the listen line was missing in some rounds")
                continue
            print(
                f"  {command.name + ' listen line':<40}{spread(command.line_seconds):>24}"
                f"{ratio(command.line_seconds, stock):>9}  stock accepts"
            )
    print(f"\n  {'CPU (user + system) until':<40}{'median (range)':>24}{'ratio':>9}  to")
    for command in todo:
        anchor, what = (
            (by_name["mitmdump --version"].cpu, "it exits")
            if command.kind == "exit"
            else (by_name["mitmdump (stock)"].cpu, "listening")
        )
        print(
            f"  {command.name + ', ' + what:<40}{spread(command.cpu):>24}"
            f"{ratio(command.cpu, anchor):>9}  {'mitmdump --version' if command.kind == 'exit' else 'stock'}"
        )
    mine = by_name["certmatch proxy"]
    for name, _src in extra:
        other = by_name[f"certmatch proxy ({name})"]
        if len(other.line_seconds) == len(mine.line_seconds) == len(other.seconds):
            print(
                f"\n  certmatch proxy / ({name}), paired by round: listen line "
                f"{ratio(mine.line_seconds, other.line_seconds).strip()}, CPU until ready "
                f"{ratio(mine.cpu, other.cpu).strip()}"
            )
    print(f"\nload average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
