"""Run real mail clients non-interactively and read their own decision about a certificate.

The clients: gnutls-cli, openssl s_client, fetchmail, mbsync, swaks, msmtp, ldapsearch, neomutt (in a terminal of
its own, see :func:`run_neomutt`) and Python's imaplib, poplib, smtplib and nntplib.

Each ``run_*`` function starts one client against a :class:`ClientTarget`: the server name
the client is configured with (a host name or an IP address), the port, the protocol, implicit
TLS or STARTTLS, and the one CA file the client trusts. It returns a :class:`ClientOutcome`:
``accepted`` (its checks passed and it went on talking), ``refused`` (it rejected the
certificate, with its own words), or ``error`` (anything else: no connection, a timeout, a
protocol failure).

The clients dial ``target.address`` while keeping the configured name, the way a client whose
server name resolves there would. Command-line clients resolve the name themselves through a
private ``/etc/hosts`` (a mount namespace of their own, so the machine's file is untouched;
this needs root); the stdlib clients dial the address and check the name. Every client does
its own SNI and its own checks exactly as it would for a user.

Nothing a client does is kept: its configuration, home and state live in a temporary
directory removed afterwards. The only credentials used are a lab server's throwaway test
account (fetchmail and mbsync must log in to get that far), and they are scrubbed from the
output a :class:`ClientOutcome` carries.
"""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import os
import poplib
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 10.0
HELO_NAME = "client.example.test"  # the name SMTP clients greet with
MESSAGE_LIMIT = 240  # characters of a client's own message kept in an outcome


class Decision(StrEnum):
    """What a client did with the certificate it was shown."""

    ACCEPTED = "accepted"
    """Its checks passed and it went on with the protocol."""
    REFUSED = "refused"
    """It rejected the certificate (its name, its chain or its dates)."""
    ERROR = "error"
    """It failed for another reason (no connection, timeout, protocol error): no decision."""


class ClientUnavailable(RuntimeError):
    """The client cannot run here: its program is missing, or it needs root for its hosts file."""


@dataclass(frozen=True)
class Account:
    """A throwaway account of a lab server, for clients that must log in to get anywhere."""

    user: str
    password: str


@dataclass(frozen=True)
class ClientTarget:
    """Where a client connects and what it is configured with."""

    server_name: str
    """The server name in the client's settings: a host name, or an IP address."""
    port: int
    protocol: str
    """``imap``, ``pop3``, ``smtp``, ``nntp`` or ``ldap``."""
    tls: str
    """``implicit`` (TLS from the first byte) or ``starttls``."""
    cafile: Path
    """The only CA certificates the client trusts."""
    address: str = "127.0.0.1"
    """Where ``server_name`` resolves: the address the client dials."""
    account: Account | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    pin: str | None = None
    """A fingerprint of the server certificate the client pins, for clients that can (fetchmail's
    ``sslfingerprint``: MD5 of the certificate, colon-separated hex)."""
    saved_exception: bytes | None = None
    """A server certificate (PEM) the user told the client to accept always, for clients that
    keep such exceptions (neomutt's ``certificate_file``)."""

    @property
    def name_is_ip(self) -> bool:
        return _is_ip(self.server_name)


@dataclass(frozen=True)
class ClientOutcome:
    """A client's decision, in its own words."""

    client: str
    decision: Decision
    message: str
    """The client's own line that shows its decision, trimmed (for ``error``, what failed)."""
    exit_status: int | None
    """The process's exit status; None for an in-process client or a killed one."""
    seconds: float
    output: str = field(default="", repr=False)
    """Everything the client printed, with the account's password scrubbed."""


@dataclass(frozen=True)
class RealClient:
    """One client program: how to run it, and what it supports and checks."""

    name: str
    run: Callable[[ClientTarget], ClientOutcome]
    modes: frozenset[tuple[str, str]]
    """The (protocol, tls) pairs it can speak."""
    checks_host_name: bool
    """False for a client that verifies the chain and dates but never the server's name."""
    needs_account: bool = False
    pins: bool = False
    """True for a client that can pin the server's certificate (``ClientTarget.pin``)."""
    keeps_exceptions: bool = False
    """True for a client that can keep a saved exception (``ClientTarget.saved_exception``)."""
    checks_after_handshake: bool = False
    """True for a client that completes the handshake, checks the certificate afterwards and,
    refusing it, closes without an alert; the others refuse with an alert in the handshake."""
    sends_ip_as_sni: bool = False
    """True for a client that sends an address it is configured with as SNI, which RFC 6066 §3
    forbids ("Literal IPv4 and IPv6 addresses are not permitted in "HostName"."); the others
    send no SNI for an address."""


# --- helpers -------------------------------------------------------------------------------


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _require(program: str, package: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if not path:
        raise ClientUnavailable(
            f"{program} is not installed: install the Debian package {package} "
            "(bash .ci/install-system-packages installs every client the tests use)"
        )
    return path


def _plain_config_value(value: str, what: str) -> str:
    """``value`` if it can go into a client's configuration file unquoted and unescaped."""
    if not value or re.search(r"[\s\"'\\#]", value):
        raise ValueError(f"{what} {value!r} cannot be written into a client configuration file")
    return value


def _trim(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _scrub(text: str, account: Account | None) -> str:
    if account and account.password:
        text = text.replace(account.password, "***")
    return text


def _resolving(target: ClientTarget, workdir: Path) -> list[str]:
    """A command prefix under which ``target.server_name`` resolves to ``target.address``.

    A private mount namespace bind-mounts a hosts file of our own over /etc/hosts for this
    one process; nothing is needed when the client is configured with an address.
    """
    if target.name_is_ip:
        return []
    if os.geteuid() != 0:
        raise ClientUnavailable(
            f"to make {target.server_name} resolve to {target.address} for a real client, "
            "certmatch gives it a private /etc/hosts, which needs root; run as root, as CI does"
        )
    unshare = _require("unshare", "util-linux")
    hosts = workdir / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        f"{target.address} {_plain_config_value(target.server_name, 'server name')}\n"
        f"127.0.1.1 {socket.gethostname()}\n"  # clients that qualify their own name find it
    )
    script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
    return [unshare, "--mount", "sh", "-c", script, "sh", str(hosts)]


@dataclass(frozen=True)
class _Run:
    exit_status: int | None  # None: killed after the timeout
    output: str
    seconds: float


def _run(
    argv: Sequence[str], *, stdin: bytes | None, timeout: float, cwd: Path, env: dict[str, str]
) -> _Run:
    """Run a client to its end; ``stdin`` is written and left open so it never sees an early EOF
    (None: /dev/null, an EOF at once).

    A client that has not finished after ``timeout`` seconds is killed with its process group.
    """
    started = time.monotonic()
    out_path = cwd / "client.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        if proc.stdin is not None and stdin is not None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # it already quit: its output says why
        try:
            status: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = None
        finally:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):  # closing flushes what it never read
                    proc.stdin.close()
    return _Run(status, out_path.read_text(errors="replace"), time.monotonic() - started)


def _env(home: Path) -> dict[str, str]:
    """A minimal environment: the client's home (and so its state files) is the scratch dir."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def _lines(patterns: Sequence[str], text: str) -> str | None:
    """The lines of ``text`` that match any of ``patterns``, in output order, joined by " | "."""
    found = [
        line.strip()
        for line in text.splitlines()
        if any(re.search(pattern, line) for pattern in patterns)
    ]
    return " | ".join(dict.fromkeys(found)) or None


def _outcome(
    client: str,
    target: ClientTarget,
    done: _Run,
    *,
    accepted: bool,
    refusal: Sequence[str],
    acceptance: Sequence[str] = (),
) -> ClientOutcome:
    """Classify a finished run: a refusal line wins, then acceptance, else an error."""
    output = _scrub(done.output, target.account)
    if done.exit_status is None:
        return ClientOutcome(
            client,
            Decision.ERROR,
            f"no decision within {target.timeout:g} s (killed)",
            None,
            done.seconds,
            output,
        )
    if refused := _lines(refusal, output):
        return ClientOutcome(
            client, Decision.REFUSED, _trim(refused), done.exit_status, done.seconds, output
        )
    if accepted:
        line = _lines(acceptance, output) or f"exit status {done.exit_status}"
        return ClientOutcome(
            client, Decision.ACCEPTED, _trim(line), done.exit_status, done.seconds, output
        )
    lines = [line for line in output.splitlines() if line.strip()]
    why = lines[-1] if lines else f"exit status {done.exit_status} and no output"
    return ClientOutcome(client, Decision.ERROR, _trim(why), done.exit_status, done.seconds, output)


def _check_mode(client: RealClient, target: ClientTarget) -> None:
    if (target.protocol, target.tls) not in client.modes:
        supported = ", ".join(f"{p}/{t}" for p, t in sorted(client.modes))
        raise ValueError(
            f"{client.name} does not speak {target.protocol} with {target.tls} TLS here; "
            f"it does: {supported}"
        )
    if target.pin and not client.pins:
        raise ValueError(f"{client.name} cannot pin a certificate here")
    if target.saved_exception and not client.keeps_exceptions:
        raise ValueError(f"{client.name} keeps no saved exception here")
    if client.needs_account and target.account is None:
        raise ValueError(f"{client.name} must log in: give the target a lab server's test account")


# --- gnutls-cli ------------------------------------------------------------------------------

# After the handshake the client says one harmless line and leaves: application data, so a
# proxy sees it went on. It goes even before a server-first greeting; every server here copes.
# One line only: gnutls-cli reads its input with stdio but waits on the descriptor, so a
# second line in the same read would sit in its buffer unsent.
_GOODBYE = {"imap": b"a1 LOGOUT\n", "pop3": b"QUIT\n", "smtp": b"QUIT\n", "nntp": b"QUIT\n"}


def run_gnutls_cli(target: ClientTarget) -> ClientOutcome:
    """gnutls-cli (GnuTLS), trusting only ``cafile``; ``--starttls-proto`` for STARTTLS.

    It checks the chain, the dates and the name (or the IP address) it was given, sends SNI
    for a host name and none for an address.
    """
    _check_mode(GNUTLS_CLI, target)
    program = _require("gnutls-cli", "gnutls-bin")
    with tempfile.TemporaryDirectory(prefix="certmatch-gnutls-") as scratch:
        workdir = Path(scratch)
        argv = [program, "--crlf", "--x509cafile", str(target.cafile), "-p", str(target.port)]
        if target.tls == "starttls":
            argv.append(f"--starttls-proto={target.protocol}")
        argv.append(target.server_name)
        done = _run(
            [*_resolving(target, workdir), *argv],
            stdin=_GOODBYE[target.protocol],
            timeout=target.timeout,
            cwd=workdir,
            env=_env(workdir),
        )
    return _outcome(
        GNUTLS_CLI.name,
        target,
        done,
        # Its checks run inside the handshake: a completed handshake is its acceptance, however
        # the session ends later (a proxy closing without close_notify makes it exit 1).
        accepted="Handshake was completed" in done.output,
        refusal=(
            r"^- Status: The certificate is NOT trusted\..*$",
            r"^\*\*\* PKI verification of server certificate failed.*$",
            r"^\*\*\* Fatal error: Error in the certificate\..*$",
        ),
        acceptance=(r"^- Status: The certificate is trusted\..*$",),
    )


# --- openssl s_client ------------------------------------------------------------------------


def run_s_client(target: ClientTarget, *, say_nothing: bool = False) -> ClientOutcome:
    """openssl s_client with ``-verify_return_error`` and ``-verify_hostname`` (``-verify_ip``
    for an address): chain, dates and name checked in the handshake, refused with an alert;
    ``-starttls`` for STARTTLS. SNI for a host name, none for an address.

    It says one line after the handshake, as gnutls-cli does. ``say_nothing`` gives it an empty
    standard input instead, as people often run it: it accepts, then closes without a word.
    """
    _check_mode(S_CLIENT, target)
    program = _require("openssl", "openssl")
    with tempfile.TemporaryDirectory(prefix="certmatch-s_client-") as scratch:
        workdir = Path(scratch)
        name = target.server_name
        host = f"[{name}]" if ":" in name else name
        # -nocommands: else a line starting with Q (SMTP's QUIT), R, k or K is s_client's own
        # command (quit, renegotiate, key update) and never reaches the server.
        argv = [program, "s_client", "-connect", f"{host}:{target.port}", "-crlf", "-nocommands"]
        argv += ["-CAfile", str(target.cafile), "-verify_return_error"]
        argv += ["-verify_ip" if target.name_is_ip else "-verify_hostname", name]
        if target.tls == "starttls":
            argv += ["-starttls", target.protocol]
        done = _run(
            [*_resolving(target, workdir), *argv],
            stdin=None if say_nothing else _GOODBYE[target.protocol],
            timeout=target.timeout,
            cwd=workdir,
            env=_env(workdir),
        )
    return _outcome(
        S_CLIENT.name,
        target,
        done,
        # With -verify_return_error a completed handshake is its acceptance.
        accepted="Verify return code: 0 (ok)" in done.output,
        refusal=(r"^verify error:num=\d+:.*$",),
        acceptance=(r"^\s*Verify return code: 0 \(ok\)$",),
    )


# --- fetchmail -------------------------------------------------------------------------------


def run_fetchmail(target: ClientTarget) -> ClientOutcome:
    """fetchmail in check mode (``-c``: it counts messages and fetches, deletes, delivers none).

    ``sslcertck`` with ``sslcertfile``; ``ssl`` for implicit TLS, ``sslproto tls1.2+`` to
    require STARTTLS/STLS; ``sslfingerprint`` when the target pins a certificate. fetchmail
    sends its configured name as SNI, even an IP address.
    """
    _check_mode(FETCHMAIL, target)
    program = _require("fetchmail", "fetchmail")
    assert target.account is not None
    name = _plain_config_value(target.server_name, "server name")
    security = "ssl" if target.tls == "implicit" else "sslproto 'tls1.2+'"
    with tempfile.TemporaryDirectory(prefix="certmatch-fetchmail-") as scratch:
        workdir = Path(scratch)
        rc = workdir / "fetchmailrc"
        _write_private(
            rc,
            "set no syslog\n"
            f"poll {name} protocol {target.protocol.upper()} port {target.port} "
            f"timeout {max(1, int(target.timeout))} auth password\n"
            f'  user "{_plain_config_value(target.account.user, "user")}" '
            f'password "{_plain_config_value(target.account.password, "password")}" '
            'is "nobody" here\n'
            f'  {security} sslcertck sslcertfile "{target.cafile}"'
            + (f' sslfingerprint "{_plain_config_value(target.pin, "pin")}"' if target.pin else "")
            + "\n",
        )
        env = _env(workdir) | {"FETCHMAILHOME": str(workdir)}
        done = _run(
            [*_resolving(target, workdir), program, "--check", "--nosyslog", "-f", str(rc)],
            stdin=b"",
            timeout=target.timeout,
            cwd=workdir,
            env=env,
        )
    # --check exits 0 when mail is waiting and 1 when there is none: both got that far.
    counted = (r"^\d+ messages? .*$", r"^fetchmail: No mail .*$")
    return _outcome(
        FETCHMAIL.name,
        target,
        done,
        accepted=done.exit_status in (0, 1) and _lines(counted, done.output) is not None,
        refusal=(
            r"^fetchmail: Server CommonName mismatch: .*$",
            r"^fetchmail: Server certificate verification error: .*$",
            r"^fetchmail: .* fingerprints do not match!$",
            r"^fetchmail: .*certificate verify failed.*$",
        ),
        acceptance=counted,
    )


def _write_private(path: Path, text: str) -> None:
    """A file only its owner can read (fetchmail refuses a readable rc file; it holds a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


# --- mbsync ----------------------------------------------------------------------------------


def run_mbsync(target: ClientTarget) -> ClientOutcome:
    """mbsync (isync) listing the server's mailboxes (``--list``): nothing is synchronised.

    ``SSLType IMAPS`` or ``STARTTLS``, ``CertificateFile`` with ``SystemCertificates no``. It
    checks the name itself after the handshake (subjectAltName DNS names, then the CN).
    """
    _check_mode(MBSYNC, target)
    program = _require("mbsync", "isync")
    assert target.account is not None
    with tempfile.TemporaryDirectory(prefix="certmatch-mbsync-") as scratch:
        workdir = Path(scratch)
        maildir = workdir / "mail"
        maildir.mkdir()
        config = workdir / "mbsyncrc"
        _write_private(
            config,
            "IMAPAccount lab\n"
            f"Host {_plain_config_value(target.server_name, 'server name')}\n"
            f"Port {target.port}\n"
            f"User {_plain_config_value(target.account.user, 'user')}\n"
            f"Pass {_plain_config_value(target.account.password, 'password')}\n"
            f"SSLType {'IMAPS' if target.tls == 'implicit' else 'STARTTLS'}\n"
            f"CertificateFile {_plain_config_value(str(target.cafile), 'CA file')}\n"
            "SystemCertificates no\n"
            f"Timeout {max(1, int(target.timeout))}\n\n"
            "IMAPStore far\nAccount lab\n\n"
            f"MaildirStore near\nPath {maildir}/\nInbox {maildir}/INBOX\n\n"
            "Channel lab\nFar :far:\nNear :near:\nPatterns INBOX\n",
        )
        done = _run(
            [*_resolving(target, workdir), program, "-c", str(config), "--list", "lab"],
            stdin=b"",
            timeout=target.timeout,
            cwd=workdir,
            env=_env(workdir),
        )
    return _outcome(
        MBSYNC.name,
        target,
        done,
        accepted=done.exit_status == 0 and "INBOX" in done.output,
        refusal=(
            r"^Error, certificate owner does not match hostname .*$",
            r"^Error, cannot get certificate common name.*$",
            r"^SSL error connecting .*: (?!.*(?:Connection refused|timed out)).*$",
        ),
        acceptance=(r"^INBOX$",),
    )


# --- swaks -----------------------------------------------------------------------------------


def run_swaks(target: ClientTarget) -> ClientOutcome:
    """swaks with ``--tls-verify --tls-ca-path``: ``--tlsc`` (SMTPS) or ``--tls`` (STARTTLS).

    It sends SNI only when told (``--tls-sni``, given here for a host name), and it never
    checks the server's name: ``--tls-verify`` checks the chain and the dates only. It stops
    after its EHLO on the TLS channel, before any AUTH or MAIL.
    """
    _check_mode(SWAKS, target)
    program = _require("swaks", "swaks")
    with tempfile.TemporaryDirectory(prefix="certmatch-swaks-") as scratch:
        workdir = Path(scratch)
        argv = [program, "--server", target.server_name, "--port", str(target.port)]
        argv += ["--tlsc" if target.tls == "implicit" else "--tls"]
        argv += ["--tls-verify", "--tls-ca-path", str(target.cafile)]
        if not target.name_is_ip:
            argv += ["--tls-sni", target.server_name]
        argv += ["--helo", HELO_NAME, "--from", f"test@{HELO_NAME}", "--to", f"test@{HELO_NAME}"]
        argv += ["--quit-after", "HELO", "--timeout", f"{max(1, int(target.timeout))}s"]
        done = _run(
            [*_resolving(target, workdir), *argv],
            stdin=b"",
            timeout=target.timeout,
            cwd=workdir,
            env=_env(workdir),
        )
    return _outcome(
        SWAKS.name,
        target,
        done,
        accepted=done.exit_status == 0 and "=== TLS started" in done.output,
        refusal=(r"^\*\*\* TLS startup failed .*certificate verify failed.*$",),
        acceptance=(r"^=== TLS peer DN=.*$",),
    )


# --- msmtp -----------------------------------------------------------------------------------


def run_msmtp(target: ClientTarget) -> ClientOutcome:
    """msmtp (GnuTLS) asking the server what it offers (``--serverinfo``): nothing is sent.

    ``--tls=on`` with ``--tls-starttls=off`` (SMTPS) or ``on`` (STARTTLS), trusting only
    ``--tls-trust-file``. It checks the chain, the dates and the name after the handshake and,
    when they fail, closes without an alert. An empty configuration file of its own keeps
    /etc/msmtprc and ~/.msmtprc out.
    """
    _check_mode(MSMTP, target)
    program = _require("msmtp", "msmtp")
    with tempfile.TemporaryDirectory(prefix="certmatch-msmtp-") as scratch:
        workdir = Path(scratch)
        rc = workdir / "msmtprc"
        _write_private(rc, "")  # msmtp refuses a configuration file others can read
        argv = [program, "--file", str(rc), "--serverinfo"]
        argv += [f"--host={target.server_name}", f"--port={target.port}"]
        argv += ["--tls=on", f"--tls-starttls={'off' if target.tls == 'implicit' else 'on'}"]
        argv += [f"--tls-trust-file={target.cafile}", f"--domain={HELO_NAME}"]
        argv += [f"--timeout={max(1, int(target.timeout))}"]
        done = _run(
            [*_resolving(target, workdir), *argv],
            stdin=b"",
            timeout=target.timeout,
            cwd=workdir,
            env=_env(workdir),
        )
    return _outcome(
        MSMTP.name,
        target,
        done,
        accepted=done.exit_status == 0 and "TLS certificate information:" in done.output,
        refusal=(r"^msmtp: TLS certificate verification failed: .*$",),
        acceptance=(r"^SMTP server at .*$",),
    )


# --- ldapsearch ------------------------------------------------------------------------------


def run_ldapsearch(target: ClientTarget) -> ClientOutcome:
    """ldapsearch (OpenLDAP's client, built with GnuTLS on Debian) reading the root DSE.

    ``ldaps://`` for implicit TLS, ``ldap://`` with ``-ZZ`` (StartTLS required) otherwise,
    anonymous (``-x``). ``LDAPTLS_CACERT`` and ``LDAPTLS_REQCERT=demand`` override
    /etc/ldap/ldap.conf. It checks the name itself after the handshake and closes without an
    alert; only its debug output (``-d 1``) says why (its error is "Can't contact LDAP server").
    """
    _check_mode(LDAPSEARCH, target)
    program = _require("ldapsearch", "ldap-utils")
    name = _plain_config_value(target.server_name, "server name")
    host = f"[{name}]" if ":" in name else name
    scheme, starttls = ("ldaps", []) if target.tls == "implicit" else ("ldap", ["-ZZ"])
    with tempfile.TemporaryDirectory(prefix="certmatch-ldapsearch-") as scratch:
        workdir = Path(scratch)
        argv = [program, "-d", "1", "-x", *starttls, "-H", f"{scheme}://{host}:{target.port}"]
        argv += ["-o", f"nettimeout={max(1, int(target.timeout))}"]
        argv += ["-b", "", "-s", "base", "-LLL", "namingContexts"]
        env = _env(workdir) | {
            "LDAPTLS_CACERT": str(target.cafile),
            "LDAPTLS_REQCERT": "demand",
        }
        done = _run(
            [*_resolving(target, workdir), *argv],
            stdin=b"",
            timeout=target.timeout,
            cwd=workdir,
            env=env,
        )
    return _outcome(
        LDAPSEARCH.name,
        target,
        done,
        accepted=done.exit_status == 0
        and re.search(r"(?m)^namingContexts: ", done.output) is not None,
        refusal=(
            r"^TLS: hostname \(.*\) does not match common name in certificate.*$",
            r"^TLS: unable to get common name from peer certificate.*$",
            r"^TLS: peer cert untrusted or revoked.*$",
        ),
        acceptance=(r"^namingContexts: .*$",),
    )


# --- neomutt ---------------------------------------------------------------------------------

_TERMINAL = ("120", "40")  # columns, lines of neomutt's terminal
_POLL_S = 0.05
_DIALOG = "(r)eject, accept (o)nce"
_INDEX = re.compile(r"NeoMutt: (?!\(no mailbox\))\S+ \[Msgs:\d+")
_NO_MAILBOX = "NeoMutt: (no mailbox)"


def run_neomutt(target: ClientTarget) -> ClientOutcome:
    """neomutt (GnuTLS) opening the INBOX over IMAPS, or IMAP with STARTTLS required.

    neomutt has no batch mode for reading mail: ``-B`` reads its configuration and exits,
    batch sending (a message on standard input) opens no mailbox and refuses an IMAP Fcc, and
    ``-Z`` or ``-e 'push <quit>'`` still need a terminal. A certificate it does not accept goes
    to an interactive dialog that ignores pushed keys and macros (neomutt 20220429,
    conn/dlg_verifycert.c), so no configuration can answer it. So neomutt runs in a real
    terminal: a tmux server of its own, whose screen is read with ``capture-pane``. The dialog appearing is neomutt's
    objection, and its WARNING lines are its words; it is answered ``r`` (reject), as a careful
    user would. ``q`` quits once the INBOX is open, or failed to open. neomutt checks after
    the handshake, so a rejected certificate ends in a close without an alert.
    """
    _check_mode(NEOMUTT, target)
    program = _require("neomutt", "neomutt")
    tmux = _require("tmux", "tmux")
    assert target.account is not None
    name = _plain_config_value(target.server_name, "server name")
    host = f"[{name}]" if ":" in name else name
    scheme = "imaps" if target.tls == "implicit" else "imap"
    with tempfile.TemporaryDirectory(prefix="certmatch-neomutt-") as scratch:
        workdir = Path(scratch)
        muttrc = workdir / "muttrc"
        _write_private(
            muttrc,
            f'set folder = "{scheme}://{host}:{target.port}/"\n'
            'set spoolfile = "+INBOX"\n'
            f'set imap_user = "{_plain_config_value(target.account.user, "user")}"\n'
            f'set imap_pass = "{_plain_config_value(target.account.password, "password")}"\n'
            f'set ssl_ca_certificates_file = "{_plain_config_value(str(target.cafile), "CA")}"\n'
            # Its saved exceptions ("accept always"): none, or the target's.
            f'set certificate_file = "{workdir}/certificates"\n'
            "set ssl_force_tls = yes\nset ssl_starttls = yes\n"
            "set ssl_verify_host = yes\nset ssl_verify_dates = yes\n"
            f"set connect_timeout = {max(1, int(target.timeout))}\n"
            'set quit = yes\nset mark_old = no\nset header_cache = ""\nset message_cachedir = ""\n'
            "set sleep_time = 0\n"  # no 1 s pause after each message
            'set record = ""\nset postponed = ""\nset mbox = ""\n',
        )
        if target.saved_exception:
            (workdir / "certificates").write_bytes(target.saved_exception)
        status = workdir / "status"
        script = 'status="$1"; shift; "$@"; echo $? > "$status"'
        command = ["sh", "-c", script, "sh", str(status)]
        # -n: no system muttrc; -R: the INBOX opens read-only, so nothing in it changes.
        command += [*_resolving(target, workdir), program, "-n", "-R", "-F", str(muttrc)]
        done = _in_terminal(tmux, command, status, workdir, target.timeout)
    return _outcome(
        NEOMUTT.name,
        target,
        done,
        accepted=_INDEX.search(done.output) is not None,
        refusal=(r"^WARNING: Server .*$", r"^SSL Certificate check \(.*\)$"),
        acceptance=(_INDEX.pattern + r"[^\]]*\]",),
    )


def _in_terminal(
    tmux: str, command: list[str], status: Path, workdir: Path, timeout: float
) -> _Run:
    """Run neomutt's ``command`` in a tmux terminal and drive it; the screens it showed.

    A certificate dialog is answered ``r``; the index (a mailbox open, or none) is answered
    ``q``. ``command`` writes its exit status to ``status``.
    """
    socket_path = str(workdir / "tmux.sock")
    base = [tmux, "-S", socket_path, "-f", "/dev/null"]
    env = _env(workdir) | {"TERM": "xterm"}
    started = time.monotonic()

    def tmux_run(*args: str) -> str:
        done = subprocess.run(
            [*base, *args], capture_output=True, text=True, env=env, cwd=workdir, check=False
        )
        return done.stdout

    width, height = _TERMINAL
    opened = subprocess.run(
        [*base, "new-session", "-d", "-x", width, "-y", height, *command],
        env=env,
        cwd=workdir,
        check=False,
        capture_output=True,
        text=True,
    )
    if opened.returncode != 0:
        why = " ".join(opened.stderr.split()) or f"exit status {opened.returncode}"
        tmux_run("kill-server")
        return _Run(
            opened.returncode,
            f"tmux could not open a terminal for neomutt: {why}",
            time.monotonic() - started,
        )
    screens: list[str] = []
    answered = ""
    exit_status: int | None = None
    try:
        while time.monotonic() - started < timeout:
            if status.exists() and (text := status.read_text().strip()):
                exit_status = int(text)
                break
            screen = tmux_run("capture-pane", "-p")
            key = ""
            if _DIALOG in screen and answered != "r":
                key = "r"  # reject the certificate
            elif (_INDEX.search(screen) or _NO_MAILBOX in screen) and _DIALOG not in screen:
                key = "q"
            if key and key != answered:
                screens.append(screen)
                tmux_run("send-keys", key)
                answered = key
            time.sleep(_POLL_S)
        else:
            screens.append(tmux_run("capture-pane", "-p"))
    finally:
        tmux_run("kill-server")
    # The screens' lines, without the dashes that fill neomutt's status bar.
    lines = (re.sub(r"-{3,}", " ", line).strip() for s in screens for line in s.splitlines())
    output = "\n".join(line for line in lines if line)
    return _Run(exit_status, output, time.monotonic() - started)


# --- the Python standard library ------------------------------------------------------------


_STDLIB_MODULES = {"imap": "imaplib", "pop3": "poplib", "smtp": "smtplib", "nntp": "nntplib"}


def _dialling(base: type, address: str, tls: ssl.SSLContext | None) -> Any:
    """``base`` (a stdlib client class) dialling ``address`` instead of resolving its host.

    With ``tls`` the socket is wrapped at once (implicit TLS), with SNI and the name check for
    the configured host, exactly as the library's own ``*_SSL`` class does.
    """

    def connect(host: str, port: int, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((address, port), timeout)
        return tls.wrap_socket(sock, server_hostname=host) if tls else sock

    def create_socket(self: Any, timeout: float | None) -> socket.socket:
        return connect(self.host, self.port, timeout)

    def get_socket(self: Any, host: str, port: int, timeout: float | None) -> socket.socket:
        return connect(host, port, timeout)

    override = (
        {"_get_socket": get_socket} if base is smtplib.SMTP else {"_create_socket": create_socket}
    )
    return type(f"Dialling{base.__name__}", (base,), override)


def _nntplib() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nntplib is deprecated in 3.12
        import nntplib

    return nntplib


def _quietly(close: Callable[[], object]) -> None:
    """Close a client whose socket a failed handshake may already have taken apart."""
    with contextlib.suppress(OSError, EOFError):
        close()


def _stdlib_session(target: ClientTarget, context: ssl.SSLContext) -> str:
    """Connect, upgrade if STARTTLS, send one command on the TLS channel; the server's reply."""
    implicit = context if target.tls == "implicit" else None
    name, port, timeout = target.server_name, target.port, target.timeout
    if target.protocol == "imap":
        imap = _dialling(imaplib.IMAP4, target.address, implicit)(name, port, timeout=timeout)
        try:
            if not implicit:
                imap.starttls(ssl_context=context)
            status, data = imap.noop()
            return f"{status} {b' '.join(d for d in data if d).decode(errors='replace')}"
        finally:
            _quietly(imap.shutdown)
    if target.protocol == "pop3":
        pop = _dialling(poplib.POP3, target.address, implicit)(name, port, timeout=timeout)
        try:
            if not implicit:
                pop.stls(context=context)
            return " ".join(sorted(pop.capa()))  # NOOP is for after login (RFC 1939 §5)
        finally:
            _quietly(pop.close)
    if target.protocol == "smtp":
        smtp = _dialling(smtplib.SMTP, target.address, implicit)(name, port, timeout=timeout)
        try:
            if not implicit:
                smtp.starttls(context=context)
            code, reply = smtp.ehlo(HELO_NAME)
            return f"{code} {reply.decode(errors='replace').splitlines()[0]}"
        finally:
            _quietly(smtp.close)
    nntplib = _nntplib()
    news = _dialling(nntplib.NNTP, target.address, implicit)(name, port, timeout=timeout)
    try:
        if not implicit:
            news.starttls(context=context)
        return f"DATE {news.date()[1]:%Y-%m-%d %H:%M:%S}"
    finally:
        _quietly(news.sock.close)


def _is_protocol_error(err: Exception) -> bool:
    """An error the stdlib client raises for a failed session rather than a bug of ours."""
    if isinstance(err, OSError | EOFError | imaplib.IMAP4.error | poplib.error_proto):
        return True
    return isinstance(err, smtplib.SMTPException) or type(err).__module__ == "nntplib"


def run_stdlib(target: ClientTarget) -> ClientOutcome:
    """Python's own client for the protocol (imaplib, poplib, smtplib, nntplib), in process.

    Given ``ssl.create_default_context(cafile=...)``: chain, dates and name checked (by default
    these libraries verify nothing). Python sends SNI for a host name and none for an address.
    """
    _check_mode(STDLIB, target)
    client = f"python-{_STDLIB_MODULES[target.protocol]}"
    context = ssl.create_default_context(cafile=str(target.cafile))
    started = time.monotonic()
    try:
        reply = _stdlib_session(target, context)
    except ssl.SSLCertVerificationError as err:
        decision, text = Decision.REFUSED, str(err)
    except Exception as err:
        if not _is_protocol_error(err):
            raise
        decision, text = Decision.ERROR, f"{type(err).__name__}: {err}"
    else:
        decision, text = Decision.ACCEPTED, reply
    return ClientOutcome(client, decision, _trim(text), None, time.monotonic() - started, text)


# --- the registry ----------------------------------------------------------------------------

_BOTH = ("implicit", "starttls")

GNUTLS_CLI = RealClient(
    "gnutls-cli",
    run_gnutls_cli,
    frozenset((p, t) for p in ("imap", "pop3", "smtp", "nntp") for t in _BOTH),
    checks_host_name=True,
)
FETCHMAIL = RealClient(
    "fetchmail",
    run_fetchmail,
    frozenset((p, t) for p in ("imap", "pop3") for t in _BOTH),
    checks_host_name=True,
    needs_account=True,
    pins=True,
    sends_ip_as_sni=True,
)
MBSYNC = RealClient(
    "mbsync",
    run_mbsync,
    frozenset(("imap", t) for t in _BOTH),
    checks_host_name=True,
    needs_account=True,
    checks_after_handshake=True,
    sends_ip_as_sni=True,
)
SWAKS = RealClient(
    "swaks", run_swaks, frozenset(("smtp", t) for t in _BOTH), checks_host_name=False
)
STDLIB = RealClient(
    "python-stdlib",
    run_stdlib,
    frozenset((p, t) for p in ("imap", "pop3", "smtp", "nntp") for t in _BOTH),
    checks_host_name=True,
)

S_CLIENT = RealClient(
    "openssl-s_client",
    run_s_client,
    frozenset((p, t) for p in ("imap", "pop3", "smtp", "nntp") for t in _BOTH),
    checks_host_name=True,
)
MSMTP = RealClient(
    "msmtp",
    run_msmtp,
    frozenset(("smtp", t) for t in _BOTH),
    checks_host_name=True,
    checks_after_handshake=True,
    sends_ip_as_sni=True,
)
LDAPSEARCH = RealClient(
    "ldapsearch",
    run_ldapsearch,
    frozenset(("ldap", t) for t in _BOTH),
    checks_host_name=True,
    checks_after_handshake=True,
)
NEOMUTT = RealClient(
    "neomutt",
    run_neomutt,
    frozenset(("imap", t) for t in _BOTH),
    checks_host_name=True,
    needs_account=True,
    keeps_exceptions=True,
    checks_after_handshake=True,
    sends_ip_as_sni=True,
)

CLIENTS: dict[str, RealClient] = {
    c.name: c
    for c in (GNUTLS_CLI, S_CLIENT, FETCHMAIL, MBSYNC, SWAKS, STDLIB, MSMTP, LDAPSEARCH, NEOMUTT)
}


def run_client(name: str, target: ClientTarget) -> ClientOutcome:
    """Run the client called ``name`` (a key of :data:`CLIENTS`) against ``target``."""
    try:
        client = CLIENTS[name]
    except KeyError:
        raise ValueError(f"no client {name!r}; known: {', '.join(CLIENTS)}") from None
    return client.run(target)
