"""A real INN ``nnrpd`` on loopback: NNTP with STARTTLS and NNTPS (implicit TLS), one certificate.

Only the reader daemon runs, without ``innd``: two ``nnrpd -D -f`` processes
(one plain, one with ``-S``) read an inn.conf of our own (selected with
``INNCONF``) whose every path lies in a private runtime directory. The news
spool holds one empty group, ``GROUP`` (test.certmatch). nnrpd cannot select a
certificate by SNI, so each certificate needs its own pair.

nnrpd needs root here: it binds as root and then runs as ``news``, which must
be able to read its files (so the runtime directory lies outside pytest's
0700 tree) and insists on owning a key nobody else can read. It reports its
errors to syslog only, so a failed start is explained from the configuration.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .certs import CertFiles
from .process import (
    LOOPBACK,
    OwnedProcess,
    ServerStartError,
    free_port,
    require_binary,
    wait_until_ready,
)

PACKAGE = "inn2"
NEWS_BIN = Path("/usr/lib/news/bin")
NEWS_USER = "news"
START_ATTEMPTS = 3
GROUP = "test.certmatch"
GROUP_DESCRIPTION = "certmatch test group"
PATH_HOST = "news.example.test"  # named in nnrpd's greeting


@dataclass
class NnrpdServer:
    """A running pair of nnrpd daemons presenting one certificate."""

    host: str
    nntp_port: int  # plaintext NNTP offering STARTTLS (like 119)
    nntps_port: int  # implicit TLS (like 563)
    cert: CertFiles
    config_path: Path  # the inn.conf both daemons read
    runtime_dir: Path
    log_path: Path  # nnrpd's own output (it logs to syslog, so this is mostly empty)
    start_seconds: float  # makehistory plus both daemons answering
    group: str = GROUP
    path_host: str = PATH_HOST
    processes: list[OwnedProcess] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()
        self.processes = []
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def start_nnrpd(cert: CertFiles, workdir: Path, ca_file: Path | None = None) -> NnrpdServer:
    """Build a news spool for ``cert`` and start nnrpd on two free loopback ports.

    ``ca_file`` becomes nnrpd's ``tlscafile`` (it only verifies client
    certificates with it, which no test sends); ``workdir`` receives the log
    and a copy of inn.conf.

    Returns once both ports greet with ``200``/``201`` (the TLS one after a
    handshake). Raises MissingSystemPackage when inn2 is absent and
    ServerStartError when nnrpd does not come up.
    """
    nnrpd = require_binary(str(NEWS_BIN / "nnrpd"), PACKAGE)
    makehistory = require_binary(str(NEWS_BIN / "makehistory"), PACKAGE)
    if os.geteuid() != 0:
        raise ServerStartError(
            "the nnrpd fixture must run as root (nnrpd binds its ports as root and then "
            "runs as news); run the tests as root, as CI does"
        )
    news = pwd.getpwnam(NEWS_USER)
    for attempt in range(1, START_ATTEMPTS + 1):
        server = _start_once(
            nnrpd, makehistory, news, cert, ca_file, workdir / f"attempt-{attempt}"
        )
        if server is not None:
            return server
    raise ServerStartError(f"nnrpd could not bind free ports in {START_ATTEMPTS} attempts")


def _start_once(
    nnrpd: str,
    makehistory: str,
    news: pwd.struct_passwd,
    cert: CertFiles,
    ca_file: Path | None,
    workdir: Path,
) -> NnrpdServer | None:
    """One start on fresh ports; None when a port was taken meanwhile (the caller retries)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    log_path = workdir / "nnrpd.log"
    runtime = Path(tempfile.mkdtemp(prefix="certmatch-inn-"))
    procs: list[OwnedProcess] = []
    ports: tuple[int, int] = (0, 0)
    try:
        runtime.chmod(0o755)
        config_path = _write_spool(runtime, cert, ca_file)
        shutil.copy(config_path, workdir / "inn.conf")  # beside the log, for post-mortems
        _chown_tree(runtime, news)
        env = {**os.environ, "INNCONF": str(config_path)}
        started = time.monotonic()
        _make_overview(makehistory, news, env, config_path)
        ports = free_port(), free_port()
        for port, tls in zip(ports, (False, True), strict=True):
            argv = [nnrpd, "-D", "-f", "-n", "-b", LOOPBACK, "-p", str(port)]
            procs.append(OwnedProcess([*argv, "-S"] if tls else argv, log_path, env=env))
        for proc, port, tls in zip(procs, ports, (False, True), strict=True):
            wait_until_ready(
                "nnrpd", functools.partial(_probe_greeting, port, tls=tls), proc, [log_path]
            )
    except BaseException as err:
        died = any(proc.exited() for proc in procs)
        for proc in procs:
            proc.stop()
        nnrpd_failed = bool(procs) and isinstance(err, ServerStartError)
        clash = nnrpd_failed and died and _port_taken(ports)
        check = (
            _config_check(config_path, workdir / "inn.conf") if nnrpd_failed and not clash else ""
        )
        shutil.rmtree(runtime, ignore_errors=True)
        if clash:
            return None
        if not check:
            raise
        raise ServerStartError(f"{err}\n{check}") from err
    return NnrpdServer(
        host=LOOPBACK,
        nntp_port=ports[0],
        nntps_port=ports[1],
        cert=cert,
        config_path=config_path,
        runtime_dir=runtime,
        log_path=log_path,
        start_seconds=time.monotonic() - started,
        processes=procs,
    )


def _write_spool(runtime: Path, cert: CertFiles, ca_file: Path | None) -> Path:
    """Write inn.conf, readers.conf, storage.conf, the active file and the TLS files; return inn.conf."""
    for sub in ("etc", "db", "run", "log", "http", "tls", "spool/articles", "spool/overview"):
        (runtime / sub).mkdir(parents=True)
    for sub in ("incoming/tmp", "outgoing", "archive"):
        (runtime / "spool" / sub).mkdir(parents=True)
    tls = runtime / "tls"
    shutil.copy(cert.served, tls / "cert.pem")  # the chain nnrpd sends, leaf first
    shutil.copy(cert.key, tls / "key.pem")
    (tls / "key.pem").chmod(0o600)  # nnrpd refuses a key that group or others can read
    if ca_file is not None:
        shutil.copy(ca_file, tls / "ca.pem")
    etc, db = runtime / "etc", runtime / "db"
    (etc / "readers.conf").write_text(_READERS_CONF)
    (etc / "storage.conf").write_text(_STORAGE_CONF)
    # An empty group: high water mark 0, low 1, posting allowed ("y").
    (db / "active").write_text(f"{GROUP} 0000000000 0000000001 y\n")
    (db / "newsgroups").write_text(f"{GROUP}\t{GROUP_DESCRIPTION}\n")
    (db / "history").touch()
    config_path = etc / "inn.conf"
    config_path.write_text(_inn_conf(runtime, with_ca=ca_file is not None))
    return config_path


def _chown_tree(root: Path, owner: pwd.struct_passwd) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _make_overview(
    makehistory: str, news: pwd.struct_passwd, env: dict[str, str], config_path: Path
) -> None:
    """Build the overview database; without it nnrpd greets "400 NNTP server unavailable"."""

    def as_news() -> None:
        os.setgid(news.pw_gid)
        os.setuid(news.pw_uid)

    done = subprocess.run(
        [makehistory, "-O", "-x"],
        env=env,
        preexec_fn=as_news,
        check=False,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    if done.returncode != 0:
        raise ServerStartError(
            f"makehistory -O -x could not build the overview (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr).strip()}\nconfig: {config_path}"
        )


def _probe_greeting(port: int, *, tls: bool) -> None:
    """Connect (and handshake) and read the greeting; a non-20x greeting is a start failure."""
    with socket.create_connection((LOOPBACK, port), timeout=2.0) as raw:
        sock: socket.socket = raw
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(raw)
        greeting = sock.makefile("rb").readline().decode(errors="replace").strip()
    if not greeting:
        raise ConnectionError(f"{LOOPBACK}:{port} closed the connection before its greeting")
    if not greeting.startswith(("200", "201")):
        raise ServerStartError(
            f"nnrpd on port {port} greets with {greeting!r} instead of 200/201; a missing "
            "overview (makehistory -O) or an unreadable active file gives 400"
        )


def _port_taken(ports: tuple[int, ...]) -> bool:
    """True when one of ``ports`` cannot be bound now: another process took it meanwhile."""
    for port in ports:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def _config_check(config_path: Path, kept: Path) -> str:
    """What ``innconfval -C`` says of an inn.conf (nnrpd itself logs to syslog only)."""
    done = subprocess.run(
        [str(NEWS_BIN / "innconfval"), "-C"],
        env={**os.environ, "INNCONF": str(config_path)},
        check=False,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=10,
    )
    said = (done.stdout + done.stderr).strip() or "no complaints"
    return (
        f"nnrpd reports its errors to syslog only; innconfval -C says: {said}; "
        f"its inn.conf is kept at {kept}"
    )


def _inn_conf(runtime: Path, *, with_ca: bool) -> str:
    spool = runtime / "spool"
    ca = f"tlscafile: {runtime}/tls/ca.pem\n" if with_ca else ""
    return f"""# written by tests/servers/inn.py
domain: example.test
pathhost: {PATH_HOST}
mta: "/bin/true %s"
ovmethod: tradindexed
hismethod: hisv6
enableoverview: true
nnrpdloadlimit: 0
pathnews: /usr/lib/news
pathbin: {NEWS_BIN}
pathcontrol: {NEWS_BIN}/control
pathfilter: /etc/news/filter
pathetc: {runtime}/etc
pathdb: {runtime}/db
pathrun: {runtime}/run
pathlog: {runtime}/log
pathhttp: {runtime}/http
pathspool: {spool}
patharticles: {spool}/articles
pathoverview: {spool}/overview
pathincoming: {spool}/incoming
pathtmp: {spool}/incoming/tmp
pathoutgoing: {spool}/outgoing
patharchive: {spool}/archive
tlscertfile: {runtime}/tls/cert.pem
tlskeyfile: {runtime}/tls/key.pem
{ca}"""


_READERS_CONF = """# written by tests/servers/inn.py: everyone may read every group
auth "everyone" {
    hosts: "*"
    default: "<reader>"
}
access "everyone" {
    users: "<reader>"
    newsgroups: "*"
    access: R
}
"""

_STORAGE_CONF = """method tradspool {
    newsgroups: *
    class: 0
}
"""
