"""A real dovecot (IMAP and POP3) on loopback, certificates selected by SNI.

Listeners: IMAPS and POP3S (implicit TLS), and IMAP and POP3 plaintext
listeners that offer STARTTLS/STLS. One user (accounts.USER/PASSWORD) with
one known message. dovecot needs root here: it switches to the mail user
(nobody) and to its own login users.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import accounts
from .certs import CertFiles
from .process import (
    LOOPBACK,
    OwnedProcess,
    ServerStartError,
    free_port,
    port_clash,
    probe_port,
    require_binary,
    wait_until_ready,
)

MAIL_UID = 65534  # nobody: dovecot refuses root as a mail user
START_ATTEMPTS = 3
_SNI_LOG = re.compile(r"sni=<([^>]*)>")


@dataclass
class DovecotServer:
    """A running dovecot. Ports are on ``host``; the log shows each login's SNI."""

    host: str
    imap_port: int  # plaintext IMAP offering STARTTLS (like 143)
    imaps_port: int  # implicit TLS (like 993)
    pop3_port: int  # plaintext POP3 offering STLS (like 110)
    pop3s_port: int  # implicit TLS (like 995)
    log_path: Path
    config_path: Path
    runtime_dir: Path
    start_seconds: float
    user: str = accounts.USER
    password: str = accounts.PASSWORD
    known_message: bytes = accounts.KNOWN_MESSAGE
    process: OwnedProcess | None = field(default=None, repr=False)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def sni_seen(self) -> list[str]:
        """The SNI of each logged login or disconnect, in log order (dovecot omits it when none was sent)."""
        return _SNI_LOG.findall(self.log_text())

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def start_dovecot(
    default: CertFiles,
    sni: Mapping[str, CertFiles],
    log_dir: Path,
    *,
    alternative: CertFiles | None = None,
) -> DovecotServer:
    """Start dovecot in the foreground on four free loopback ports and wait until it answers.

    ``default`` is served without SNI or for unknown names; ``sni`` maps a
    server name to the certificate served for it. ``alternative`` is a second default
    certificate on another key type (dovecot's ``ssl_alt_cert``): OpenSSL serves the one the
    client's signature algorithms allow.
    """
    binary = require_binary("dovecot", "dovecot-imapd")
    require_binary("/usr/lib/dovecot/imap", "dovecot-imapd")
    require_binary("/usr/lib/dovecot/pop3", "dovecot-pop3d")
    if os.geteuid() != 0:
        raise ServerStartError(
            "the dovecot fixture must run as root (dovecot switches to its login and mail "
            "users); run the tests as root, as CI does"
        )
    for attempt in range(1, START_ATTEMPTS + 1):
        server = _start_once(binary, default, sni, log_dir, attempt, alternative)
        if server is not None:
            return server
    raise ServerStartError(f"dovecot could not bind free ports in {START_ATTEMPTS} attempts")


def _start_once(
    binary: str,
    default: CertFiles,
    sni: Mapping[str, CertFiles],
    log_dir: Path,
    attempt: int,
    alternative: CertFiles | None = None,
) -> DovecotServer | None:
    """One start on fresh ports; None when a port was taken meanwhile (the caller retries)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"dovecot-{attempt}.log"
    config_path = log_dir / f"dovecot-{attempt}.conf"  # beside the log, for post-mortems
    ports = [free_port() for _ in range(4)]
    imap, imaps, pop3, pop3s = ports
    # Its own runtime dir per run (base_dir, state, mail), outside pytest's 0700 tree
    # so that dovecot's unprivileged processes can reach it.
    runtime = Path(tempfile.mkdtemp(prefix="certmatch-dovecot-"))
    proc: OwnedProcess | None = None
    try:
        runtime.chmod(0o755)
        config = _config(runtime, log_path, ports, default, sni)
        if alternative is not None:
            config += f"ssl_alt_cert = <{alternative.served}\nssl_alt_key = <{alternative.key}\n"
        config_path.write_text(config)
        _make_mailbox(runtime / "home" / accounts.USER)
        started = time.monotonic()
        proc = OwnedProcess([binary, "-F", "-c", str(config_path)], log_path.with_suffix(".out"))
        for port, tls in ((imap, False), (imaps, True), (pop3, False), (pop3s, True)):
            wait_until_ready(
                "dovecot",
                functools.partial(probe_port, LOOPBACK, port, tls=tls, read_banner=True),
                proc,
                [log_path, proc.log_path],
            )
    except BaseException as err:
        if proc is not None:
            proc.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        clash = port_clash(log_path) or (proc is not None and port_clash(proc.log_path))
        if isinstance(err, ServerStartError) and clash:
            return None
        raise
    return DovecotServer(
        host=LOOPBACK,
        imap_port=imap,
        imaps_port=imaps,
        pop3_port=pop3,
        pop3s_port=pop3s,
        log_path=log_path,
        config_path=config_path,
        runtime_dir=runtime,
        start_seconds=time.monotonic() - started,
        process=proc,
    )


def _make_mailbox(home: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    (home / "Maildir" / "new" / "1767225600.M1P1.certmatch").write_bytes(accounts.KNOWN_MESSAGE)
    for root, dirs, files in os.walk(home.parent):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), MAIL_UID, MAIL_UID)
    os.chown(home.parent, MAIL_UID, MAIL_UID)


def _ssl_pair(files: CertFiles) -> str:
    return f"ssl_cert = <{files.served}\n  ssl_key = <{files.key}"


def _config(
    runtime: Path,
    log_path: Path,
    ports: list[int],
    default: CertFiles,
    sni: Mapping[str, CertFiles],
) -> str:
    imap, imaps, pop3, pop3s = ports
    local_names = "\n".join(
        f"local_name {name} {{\n  {_ssl_pair(files)}\n}}" for name, files in sorted(sni.items())
    )
    return f"""# written by tests/servers/dovecot.py
base_dir = {runtime}/run
state_dir = {runtime}/state
log_path = {log_path}
instance_name = certmatch-{runtime.name}
listen = {LOOPBACK}
protocols = imap pop3
ssl = yes
{_ssl_pair(default)}
{local_names}
# Plaintext login on the STARTTLS ports stays possible so tests can observe it.
disable_plaintext_auth = no
auth_mechanisms = plain login
login_log_format_elements = user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{{session}}> sni=<%{{local_name}}>
passdb {{
  driver = static
  args = password={accounts.PASSWORD}
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={runtime}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
"""
