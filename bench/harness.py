"""What the proxy benchmarks share: a real dovecot, proxies as child processes, IMAP clients.

Not a benchmark itself. ``bench_proxy.py``, ``bench_writer.py``, ``bench_profile.py`` and ``bench_instructions.py``
import it. The proxies run as real processes (stock ``mitmdump``, or ``python -m certmatch
proxy`` with the default options of the day), and their CPU time is read from /proc, so a
figure is the proxy's own work, all threads included, not the client's or the server's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from proxy_fixtures import free_port, wait_for_port
from scenarios import DEFAULT_CERT, mint_scenario_pki
from servers import CertFiles, DovecotServer, start_dovecot
from servers.accounts import PASSWORD, USER

from certmatch.lab.pki import Issued

MITMDUMP = str(Path(sys.executable).parent / "mitmdump")
HOST = "imap.example.test"  # covered by the default certificate: the common, matching case
TIMEOUT_S = 15.0


# --- accounting ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_seconds(pid: int) -> float:
    """CPU time of a process's live threads from the scheduler (/proc/PID/task/*/schedstat),
    in nanosecond resolution, user and system together: for short spans such as one bulk
    transfer, where /proc/PID/stat's clock ticks (10 ms) are too coarse. A thread that ends
    takes its time with it, so use it for differences over spans in which no thread ends
    (mitmproxy's event loop does the relaying); falls back to :func:`cpu_seconds`."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return cpu_seconds(pid)
    return total / 1e9 if total else cpu_seconds(pid)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def code_under_test() -> str:
    """Where ``certmatch`` is imported from, and that checkout's commit (dirty or not)."""
    import certmatch

    where = Path(certmatch.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "not a git checkout"
    return f"{where} ({commit})"


# --- proxies ---------------------------------------------------------------------------


@dataclass
class Proxy:
    """A proxy process in front of dovecot; ``kind`` is what its listening port speaks."""

    name: str
    argv: list[str]
    kind: str  # "tls" (implicit TLS) or "starttls" (plaintext IMAP, then STARTTLS)
    port: int = 0
    record: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None  # ``python -m`` puts the working directory first on sys.path

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def run_time(self) -> float:
        """The finer CPU clock of :func:`run_seconds`, for short spans."""
        return run_seconds(self.pid)

    def recorded(self) -> int:
        """Session lines in its recording (the header line aside)."""
        if self.record is None or not self.record.exists():
            return 0
        with self.record.open("rb") as file:
            return max(0, sum(1 for _ in file) - 1)


def stock_mitmdump(name: str, upstream: str, confdir: Path) -> Proxy:
    """Stock mitmdump in reverse mode, as quiet as ``certmatch proxy`` makes it (flow_detail=0).

    ``ssl_insecure``: in reverse mode to an IP address, stock mitmproxy's eager upstream
    handshake names the IP and its own verification fails ("IP address mismatch"); OpenSSL's
    verification is a small part of a handshake either way."""
    return Proxy(
        name,
        [
            MITMDUMP,
            "--mode",
            upstream,
            "--set",
            f"confdir={confdir}",
            "--set",
            "ssl_insecure=true",
            "--set",
            "flow_detail=0",
        ],
        kind="tls",
    )


def certmatch_proxy(
    name: str, upstream: str, confdir: Path, root_ca: Path, work: Path, extra: Sequence[str] = ()
) -> Proxy:
    """``certmatch proxy`` with the default options of the day (plus ``extra``)."""
    record = work / f"record-{re.sub(r'[^A-Za-z0-9]+', '-', name)}.jsonl"
    kind = "starttls" if upstream.startswith("reverse:tcp") else "tls"
    argv = [sys.executable, "-m", "certmatch", "proxy", "--mode", upstream, "--record", str(record)]
    argv += ["--confdir", str(confdir), "--ca-file", str(root_ca), *extra]
    return Proxy(name, argv, kind=kind, record=record)


def start(
    proxy: Proxy, log_dir: Path, mitm_args: Sequence[str] = (), startup_timeout: float = 60
) -> Proxy:
    """Start ``proxy`` on a free loopback port; wait until it listens."""
    proxy.port = free_port()
    argv = [*proxy.argv, "--listen-host", "127.0.0.1", "--listen-port", str(proxy.port)]
    if mitm_args:
        argv += ([] if "certmatch" not in argv else ["--"]) + list(mitm_args)
    log = (log_dir / f"{re.sub(r'[^A-Za-z0-9]+', '-', proxy.name)}.log").open("wb")
    env = {**os.environ, **proxy.env}
    proxy.proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=proxy.cwd
    )
    try:
        wait_for_port(proxy.port, timeout=startup_timeout)
    except RuntimeError:
        proxy.proc.kill()
        raise RuntimeError(f"{proxy.name} did not start; see {log.name}") from None
    return proxy


def stop(proxy: Proxy) -> None:
    if proxy.proc is not None and proxy.proc.poll() is None:
        proxy.proc.terminate()
        try:
            proxy.proc.wait(20)
        except subprocess.TimeoutExpired:
            proxy.proc.kill()
            proxy.proc.wait()


def proxy_options(help_text: str, option: str) -> list[str] | None:
    """The choices of ``option`` in ``certmatch proxy --help`` (``[]`` for a flag), or None
    when today's proxy has no such option."""
    match = re.search(re.escape(option) + r"(?:[ =]\{([^}]*)\})?", help_text)
    if match is None:
        return None
    return match.group(1).split(",") if match.group(1) else []


def certmatch_proxy_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "certmatch", "proxy", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return done.stdout


# --- the server ------------------------------------------------------------------------


@dataclass
class Lab:
    work: Path
    dovecot: DovecotServer
    root_ca: Path
    confdir: Path

    def implicit(self) -> str:
        return f"reverse:tls://127.0.0.1:{self.dovecot.imaps_port}"

    def starttls(self) -> str:
        return f"reverse:tcp://127.0.0.1:{self.dovecot.imap_port}"


SERVER_KEYS = ("ec", "rsa2048", "rsa4096")


def add_server_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-key",
        choices=SERVER_KEYS,
        default="ec",
        help="the key of dovecot's certificate (the test PKI's: EC P-256)",
    )


def variant_proxy(lab_: Lab, variant: str) -> Proxy:
    """``--variant 'NAME=OPTIONS'``: one more certmatch proxy with these options (a NAME
    containing 'starttls' runs in front of dovecot's STARTTLS port)."""
    name, _, options = variant.partition("=")
    upstream = lab_.starttls() if "starttls" in name else lab_.implicit()
    return certmatch_proxy(
        name, upstream, lab_.confdir, lab_.root_ca, lab_.work, shlex.split(options)
    )


def code_proxy(lab_: Lab, spec: str) -> Proxy:
    """``--code 'NAME=DIR [OPTIONS]'``: a certmatch proxy run from another checkout (e.g. a git
    worktree of an earlier commit), to compare code side by side; a NAME containing
    'starttls' runs in front of dovecot's STARTTLS port."""
    name, _, rest = spec.partition("=")
    directory, *options = shlex.split(rest)
    upstream = lab_.starttls() if "starttls" in name else lab_.implicit()
    proxy = certmatch_proxy(name, upstream, lab_.confdir, lab_.root_ca, lab_.work, options)
    where = Path(directory).resolve()
    proxy.env["PYTHONPATH"] = str(where)
    proxy.cwd = where
    return proxy


def direct_context(root_ca: Path) -> ssl.SSLContext:
    """A client context for dovecot itself (no proxy): trusts the test PKI's root."""
    return ssl.create_default_context(cafile=str(root_ca))


@contextlib.contextmanager
def lab(work: Path, server_key: str = "ec") -> Iterator[Lab]:
    """Mint the test PKI and start dovecot (IMAPS and IMAP with STARTTLS) on loopback.

    ``server_key``: the key of the certificate dovecot serves. The test PKI's are EC P-256;
    ``rsa2048`` or ``rsa4096`` serve the same names with an RSA key instead, as most mail
    servers do (a mirror copies the key type and size, so it changes the proxy's own
    handshake with the client).
    """
    pki = mint_scenario_pki(work / "pki")
    default = pki.default
    if server_key != "ec":
        default = rsa_leaf(pki.minted.intermediate, work / "pki", int(server_key[3:]))
    with roomy_logins():
        dovecot = start_dovecot(default, pki.sni, work / "dovecot")
    try:
        yield Lab(work, dovecot, pki.root_ca, work / "mitmproxy-conf")
    finally:
        dovecot.stop()


# dovecot's defaults start one login process per connection, at most 100 (process_limit), and
# drop the connections beyond: a burst of 500 would measure dovecot's refusals. Its
# high-performance login mode serves them all (tests/test_proxy_load.py does the same).
ROOMY_LOGIN = """
service imap-login {
  service_count = 0
  client_limit = 2000
  process_min_avail = 2
}
"""


@contextlib.contextmanager
def roomy_logins() -> Iterator[None]:
    """dovecot started inside this block has room for a burst of logins."""
    import servers.dovecot

    config = servers.dovecot._config
    servers.dovecot._config = lambda *args: config(*args) + ROOMY_LOGIN
    try:
        yield
    finally:
        servers.dovecot._config = config


def rsa_leaf(intermediate: Issued, directory: Path, bits: int) -> CertFiles:
    """The default certificate's names on an RSA key of ``bits``, signed by ``intermediate``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName(name) for name in DEFAULT_CERT.dns]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(DEFAULT_CERT.cn))]))
        .issuer_name(intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(intermediate.key, hashes.SHA256())
    )
    issued = Issued(cert, key, [intermediate.cert, *intermediate.issuers])  # type: ignore[arg-type]
    paths = issued.write(directory, f"default-rsa{bits}")
    return CertFiles(paths["cert"], paths["key"], paths["chain"], paths["chain"], issued)


def proxy_ca(confdir: Path) -> ssl.SSLContext:
    """A client context that trusts the proxies' CA (they share one confdir)."""
    return ssl.create_default_context(cafile=str(confdir / "mitmproxy-ca-cert.pem"))


# --- an IMAP client --------------------------------------------------------------------


class ImapClient:
    """A minimal IMAP client over a socket, implicit TLS or STARTTLS, reading by lines."""

    def __init__(self, port: int, kind: str, context: ssl.SSLContext) -> None:
        self.buffer = bytearray()
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.sock: socket.socket = raw
        if kind == "tls":
            self.sock = context.wrap_socket(raw, server_hostname=HOST)
            self.expect_greeting()
        else:
            self.expect_greeting()
            self.command("s", b"STARTTLS")
            self.sock = context.wrap_socket(raw, server_hostname=HOST)

    def expect_greeting(self) -> None:
        greeting = self.readline()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"unexpected greeting {greeting[:80]!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("the connection closed")
        self.buffer += chunk

    def readline(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[: end + 2])
        del self.buffer[: end + 2]
        return line

    def skip(self, n: int) -> None:
        """Read and drop ``n`` bytes."""
        while len(self.buffer) < n:
            n -= len(self.buffer)
            self.buffer.clear()
            self._fill()
        del self.buffer[:n]

    def command(self, tag: str, line: bytes) -> list[bytes]:
        """Send one command; return its untagged lines and the tagged OK."""
        self.sock.sendall(tag.encode() + b" " + line + b"\r\n")
        return self.until_tagged(tag)

    def until_tagged(self, tag: str) -> list[bytes]:
        lines = []
        prefix = tag.encode() + b" "
        while True:
            line = self.readline()
            lines.append(line)
            if line.startswith(prefix):
                if not line.startswith(prefix + b"OK"):
                    raise RuntimeError(f"{line[:120]!r}")
                return lines

    def login(self) -> None:
        self.command("l", f"LOGIN {USER} {PASSWORD}".encode())

    def logout(self) -> None:
        self.sock.sendall(b"z LOGOUT\r\n")
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                self._fill()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def append(self, message: bytes) -> int:
        """APPEND ``message`` to INBOX; its UID (UIDPLUS)."""
        self.sock.sendall(b"a APPEND INBOX {" + str(len(message)).encode() + b"}\r\n")
        if not self.readline().startswith(b"+"):
            raise RuntimeError("no continuation for APPEND")
        self.sock.sendall(message)
        self.sock.sendall(b"\r\n")
        tagged = self.until_tagged("a")[-1]
        found = re.search(rb"APPENDUID \d+ (\d+)", tagged)
        if found is None:
            raise RuntimeError(f"no APPENDUID in {tagged!r}")
        return int(found.group(1))

    def fetch(self, uid: int) -> int:
        """UID FETCH the whole message; the number of message bytes read."""
        self.sock.sendall(f"f UID FETCH {uid} BODY.PEEK[]\r\n".encode())
        size = 0
        while True:
            line = self.readline()
            if line.startswith(b"f "):
                if not line.startswith(b"f OK"):
                    raise RuntimeError(f"{line[:120]!r}")
                return size
            literal = re.search(rb"\{(\d+)\}\r\n$", line)
            if literal:
                size = int(literal.group(1))
                self.skip(size)

    def delete(self, uid: int) -> None:
        self.command("d", f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)".encode())
        self.command("e", f"UID EXPUNGE {uid}".encode())


def handshake_session(port: int, kind: str, context: ssl.SSLContext) -> None:
    """One short session: connect, TLS (implicit or after STARTTLS), greeting, LOGOUT."""
    client = ImapClient(port, kind, context)
    try:
        client.logout()
    finally:
        client.close()


def message_of(size: int) -> bytes:
    """An RFC 5322 message of ``size`` bytes: headers, then 78-byte text lines."""
    head = (
        b"From: Bench <bench@example.test>\r\nTo: Test <test@example.test>\r\n"
        b"Subject: certmatch bulk benchmark\r\nMessage-ID: <bulk@example.test>\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog; certmatch bulk transfer test 01\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[: size - 2] + b"\r\n"


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    """Poll ``condition()`` until true or ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
