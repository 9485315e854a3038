"""A real OpenLDAP slapd on loopback: LDAPS and LDAP with StartTLS, one certificate.

slapd cannot select a certificate by SNI, so each certificate needs its own
instance. It runs in the foreground (``-d stats``) as a process we own.
"""

from __future__ import annotations

import shutil
import subprocess
import time
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

START_ATTEMPTS = 3
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

SEED_LDIF = f"""dn: {accounts.LDAP_SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: certmatch test directory

dn: ou=people,{accounts.LDAP_SUFFIX}
objectClass: organizationalUnit
ou: people

dn: {accounts.LDAP_ENTRY_DN}
objectClass: inetOrgPerson
uid: {accounts.USER}
cn: Test User
sn: User
mail: {accounts.LDAP_ENTRY_MAIL}
"""


@dataclass
class SlapdServer:
    """A running slapd presenting one certificate on both listeners."""

    host: str
    ldap_port: int  # plaintext LDAP; clients upgrade with StartTLS (like 389)
    ldaps_port: int  # implicit TLS (like 636)
    cert: CertFiles
    log_path: Path
    config_path: Path
    start_seconds: float
    suffix: str = accounts.LDAP_SUFFIX
    root_dn: str = accounts.LDAP_ROOT_DN
    root_password: str = accounts.LDAP_ROOT_PASSWORD
    entry_dn: str = accounts.LDAP_ENTRY_DN
    entry_mail: str = accounts.LDAP_ENTRY_MAIL
    process: OwnedProcess | None = field(default=None, repr=False)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def start_slapd(cert: CertFiles, workdir: Path) -> SlapdServer:
    """Load the seed data and start slapd on two free loopback ports; return once both answer."""
    slapd = require_binary("slapd", "slapd")
    slapadd = require_binary("slapadd", "slapd")
    for attempt in range(1, START_ATTEMPTS + 1):
        server = _start_once(slapd, slapadd, cert, workdir / f"attempt-{attempt}")
        if server is not None:
            return server
    raise ServerStartError(f"slapd could not bind free ports in {START_ATTEMPTS} attempts")


def _start_once(slapd: str, slapadd: str, cert: CertFiles, workdir: Path) -> SlapdServer | None:
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "db").mkdir(parents=True)
    config_path = workdir / "slapd.conf"
    config_path.write_text(_config(workdir, cert))
    (workdir / "seed.ldif").write_text(SEED_LDIF)
    log_path = workdir / "slapd.log"
    started = time.monotonic()
    loaded = subprocess.run(
        [slapadd, "-q", "-f", str(config_path), "-l", str(workdir / "seed.ldif")],
        check=False,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    if loaded.returncode != 0:
        raise ServerStartError(
            f"slapadd could not load the seed data (exit {loaded.returncode}):\n"
            f"{loaded.stderr.strip()}\nconfig: {config_path}"
        )
    ldap_port, ldaps_port = free_port(), free_port()
    urls = f"ldap://{LOOPBACK}:{ldap_port}/ ldaps://{LOOPBACK}:{ldaps_port}/"
    proc = OwnedProcess([slapd, "-f", str(config_path), "-h", urls, "-d", "stats"], log_path)
    try:
        wait_until_ready(
            "slapd",
            lambda: probe_port(LOOPBACK, ldap_port, tls=False, read_banner=False),
            proc,
            [log_path],
        )
        wait_until_ready(
            "slapd",
            lambda: probe_port(LOOPBACK, ldaps_port, tls=True, read_banner=False),
            proc,
            [log_path],
        )
    except BaseException as err:
        proc.stop()
        if isinstance(err, ServerStartError) and port_clash(log_path):
            return None
        raise
    return SlapdServer(
        host=LOOPBACK,
        ldap_port=ldap_port,
        ldaps_port=ldaps_port,
        cert=cert,
        log_path=log_path,
        config_path=config_path,
        start_seconds=time.monotonic() - started,
        process=proc,
    )


def _config(workdir: Path, cert: CertFiles) -> str:
    schemas = "\n".join(
        f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson")
    )
    return f"""# written by tests/servers/slapd.py
{schemas}
pidfile {workdir}/slapd.pid
argsfile {workdir}/slapd.args
modulepath {MODULE_DIR}
moduleload back_mdb
TLSCertificateFile {cert.served}
TLSCertificateKeyFile {cert.key}

database mdb
maxsize 10485760
suffix "{accounts.LDAP_SUFFIX}"
rootdn "{accounts.LDAP_ROOT_DN}"
rootpw {accounts.LDAP_ROOT_PASSWORD}
directory {workdir}/db
access to * by * read
"""
