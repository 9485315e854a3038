"""Running server processes we own: free ports, readiness, log tails, reliable teardown."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

LOOPBACK = "127.0.0.1"
START_DEADLINE_S = 10.0
STOP_GRACE_S = 5.0
PORT_IN_USE_MARKERS = ("Address already in use", "errno=98")

# Where Debian puts daemons; a non-root PATH often lacks the sbin directories.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/lib/dovecot"]
)


class MissingSystemPackage(RuntimeError):
    """A server or client binary is not installed."""


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries its log tail."""


def require_binary(name: str, package: str) -> str:
    """The absolute path of ``name``, or MissingSystemPackage naming the Debian package."""
    path = (
        name
        if os.path.isabs(name) and os.access(name, os.X_OK)
        else shutil.which(name, path=_SEARCH_PATH)
    )
    if not path:
        raise MissingSystemPackage(
            f"{name} is not installed: install the Debian package {package} "
            f"(bash .ci/install-system-packages installs everything the tests need)"
        )
    return path


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (callers retry if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def logs_tail(paths: Sequence[Path], lines: int = 25) -> str:
    """The last lines of each existing, non-empty log, each under its path."""
    parts = [f"--- {p}:\n{log_tail(p, lines)}" for p in paths if p.exists() and p.stat().st_size]
    return "\n".join(parts) or f"(no log output in {', '.join(map(str, paths))})"


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(log {path} is empty)"


class OwnedProcess:
    """A process started in its own process group, so stopping it ends all its children."""

    _alive: ClassVar[set[OwnedProcess]] = set()

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # stdout/stderr go to the log, never to our pipes: a daemon that inherits
            # the caller's pipe keeps a CI step waiting forever.
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self.pgid = self.popen.pid
        OwnedProcess._alive.add(self)

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def stop(self) -> None:
        """SIGTERM the leader, let it end its children, then SIGKILL whatever is left of the group."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=STOP_GRACE_S)
        OwnedProcess._alive.discard(self)

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls._alive):
            proc.stop()


# A safety net for an interpreter exit that skips fixture teardown (e.g. KeyboardInterrupt).
atexit.register(OwnedProcess.stop_all)


def wait_until_ready(
    what: str,
    probe: Callable[[], None],
    proc: OwnedProcess | None,
    log_paths: Sequence[Path],
    deadline_s: float = START_DEADLINE_S,
) -> None:
    """Call ``probe`` until it stops raising OSError; fail early if ``proc`` dies.

    Raises ServerStartError with the log tail when the process exits or the
    deadline passes.
    """
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while True:
        if proc is not None and proc.exited():
            raise ServerStartError(
                f"{what} exited with status {proc.popen.returncode} while starting "
                f"({' '.join(proc.argv)}).\n{logs_tail(log_paths)}"
            )
        try:
            probe()
            return
        except OSError as err:  # ssl.SSLError is an OSError too
            last_error = err
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{what} did not accept connections within {deadline_s:.0f} s "
                f"(last error: {last_error}).\n{logs_tail(log_paths)}"
            )
        time.sleep(0.02)  # a poll interval, not a wait for readiness


def probe_port(host: str, port: int, *, tls: bool, read_banner: bool) -> None:
    """Connect, optionally complete a TLS handshake (no verification), optionally read a banner."""
    with socket.create_connection((host, port), timeout=2.0) as raw:
        sock: socket.socket = raw
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(raw)
        if read_banner and not sock.recv(512):
            raise ConnectionError(f"{host}:{port} closed the connection before its greeting")


def port_clash(log_path: Path) -> bool:
    """True when the log says a listener could not bind (another process took the port)."""
    text = log_tail(log_path, 200)
    return any(marker in text for marker in PORT_IN_USE_MARKERS)
