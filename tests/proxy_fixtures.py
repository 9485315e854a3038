"""Run mitmproxy with the certmatch capture addon, in-process or as a real mitmdump.

In-process (a thread with its own event loop) is fast and lets a test
inject a failure into the addon; ``mitmdump_process`` runs the stock
``mitmdump -s addons/capture.py`` exactly as the README tells users to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from mitmproxy import options
from mitmproxy.tools.dump import DumpMaster
from servers.clients import SClientResult

from certmatch.core.recording import read_recording
from certmatch.proxy.capture import CertmatchCapture

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RunningProxy:
    port: int
    record: Path
    confdir: Path
    addon: CertmatchCapture | None = None
    log: list[str] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        """The proxy's CA certificate, which clients must trust."""
        return self.confdir / "mitmproxy-ca-cert.pem"

    def sessions(self, expected: int = 1, timeout: float = 5.0):
        """The recorded sessions, once at least ``expected`` are there."""
        deadline = time.monotonic() + timeout
        while True:
            recording = read_recording(self.record) if self.record.exists() else None
            sessions = recording.sessions if recording else []
            if len(sessions) >= expected or time.monotonic() > deadline:
                return sessions
            time.sleep(0.02)


@contextlib.contextmanager
def inprocess_proxy(
    tmp: Path,
    mode: str,
    *,
    addon: CertmatchCapture | None = None,
    extra_addons: tuple[object, ...] = (),
    **certmatch_options: object,
) -> Iterator[RunningProxy]:
    """mitmproxy with the capture addon in a background thread, listening on a free port."""
    confdir = tmp / "mitmproxy"
    record = tmp / "session.jsonl"
    addon = addon or CertmatchCapture()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def run() -> None:
        opts = options.Options(
            mode=[mode], listen_host="127.0.0.1", listen_port=0, confdir=str(confdir)
        )
        master = DumpMaster(opts, with_termlog=False, with_dumper=False)
        master.addons.add(addon, *extra_addons)
        settings = {"certmatch_record": str(record)}
        settings.update({f"certmatch_{k}": v for k, v in certmatch_options.items()})
        opts.update(**settings)
        state["master"] = master
        loop = asyncio.get_running_loop()
        state["loop"] = loop
        # Shutting down with connections still open cancels their handlers;
        # asyncio would print each cancellation. They are expected here.
        default_handler = loop.get_exception_handler()

        def quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict) -> None:
            if isinstance(context.get("exception"), asyncio.CancelledError):
                return
            if default_handler:
                default_handler(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(quiet_cancellations)
        task = asyncio.create_task(master.run())
        proxyserver = master.addons.get("proxyserver")
        # Listening, and the CA that clients are given exists (tlsconfig makes it on start).
        ca_cert = confdir / "mitmproxy-ca-cert.pem"
        for _ in range(1000):
            servers = list(proxyserver.servers)
            if servers and servers[0].listen_addrs and ca_cert.exists():
                state["port"] = servers[0].listen_addrs[0][1]
                break
            await asyncio.sleep(0.01)
        ready.set()
        await task

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    if not ready.wait(10) or "port" not in state:
        raise RuntimeError("mitmproxy did not start listening within 10 s")
    proxy = RunningProxy(int(state["port"]), record, confdir, addon)  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        loop = state["loop"]
        master = state["master"]
        loop.call_soon_threadsafe(master.shutdown)  # type: ignore[attr-defined]
        thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Wait until something listens on ``port``, without connecting to it: the proxy records
    every connection, a port check included, so a probe would add a session to the test's
    recording. The kernel's socket tables say it instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


_TCP_LISTEN = "0A"


def is_listening(port: int) -> bool:
    """True when a TCP socket of this machine listens on ``port`` (from /proc/net/tcp{,6})."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)  # the column names
            for line in lines:
                fields = line.split()
                local, state = fields[1], fields[3]
                if state == _TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


@contextlib.contextmanager
def private_hosts(tmp: Path, names: list[str]) -> Iterator[list[str]]:
    """A command prefix that runs a program with its own /etc/hosts mapping ``names`` to loopback.

    Uses a private mount namespace (root), so the machine's /etc/hosts is untouched.
    """
    hosts = tmp / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {n}\n" for n in names))
    yield ["unshare", "-m", "sh", "-c", f'mount --bind "{hosts}" /etc/hosts && exec "$0" "$@"']


@contextlib.contextmanager
def mitmdump_process(
    tmp: Path, argv: list[str], *, prefix: list[str] = (), port: int
) -> Iterator[subprocess.Popen]:
    """Run a command (mitmdump or certmatch proxy) until the test is done; its output goes to tmp/proxy.log."""
    log = (tmp / "proxy.log").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*prefix, *argv], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        wait_for_port(port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def stock_command(
    program: str,
    *,
    port: int,
    mode: str,
    confdir: Path,
    record: Path,
    ca_file: Path | None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line a user types to run stock mitmdump/mitmweb with the capture addon."""
    argv = [
        venv_bin(program),
        *extra,
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--mode",
        mode,
        "--set",
        f"confdir={confdir}",
        "-s",
        str(REPO / "addons" / "capture.py"),
        "--set",
        f"certmatch_record={record}",
    ]
    if ca_file is not None:
        argv += ["--set", f"certmatch_ca_file={ca_file}"]
    return argv


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_VERIFY = re.compile(r"Verify return code: (\d+)")
IMAP_LOGOUT = b"a LOGOUT\r\n"


def s_client_speaking(
    port: int,
    *,
    servername: str | None,
    cafile: Path | None = None,
    send: bytes = IMAP_LOGOUT,
    extra: tuple[str, ...] = (),
) -> SClientResult:
    """``openssl s_client`` that sends ``send`` once the handshake is done, as a mail client
    that accepted the certificate would: the proxy records that it went on.

    With nothing to send, s_client closes right after the handshake, which the proxy
    records as a client that closed without a word (how GnuTLS clients refuse).
    """
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts", *extra]
    argv += ["-noservername"] if servername is None else ["-servername", servername]
    if cafile is not None:
        argv += ["-CAfile", str(cafile)]
    done = subprocess.run(argv, check=False, input=send, capture_output=True, timeout=20)
    text = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    chain = [x509.load_pem_x509_certificate(pem) for pem in _PEM.findall(done.stdout)]
    match = _VERIFY.search(text)
    return SClientResult(chain, int(match.group(1)) if match else None, text)
