"""Redirect one client's TCP connections to a transparent proxy, the way a gateway would.

``certmatch proxy --mode transparent`` learns where a connection was going from the
kernel (``SO_ORIGINAL_DST``), after a NAT ``REDIRECT`` rule sent it to the proxy's port.
On one machine such a rule has a trap: the proxy's own connection to that original
destination passes the same ``OUTPUT`` chain, is redirected back to the proxy, and the
proxy ends up connecting to itself. :class:`ClientRedirect` avoids it the way a user
should: the rule matches only sockets of one group (``-m owner --gid-owner``), and only the
client runs with that group (:attr:`ClientRedirect.prefix`), so the proxy's own connections
are never redirected.

Each rule matches one destination address and port and one group no other program uses,
carries a comment naming the process that added it, and is deleted when the context ends.
Rules left by a process that died before it could delete them are deleted the next time.
Needs root and ``iptables`` (Debian package iptables); ``-w`` waits for the xtables lock
when another process changes rules at the same time (legacy iptables).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

COMMENT_PREFIX = "certmatch-redirect pid="
_STALE_RULE = re.compile(rf'^-A OUTPUT .*--comment "?{re.escape(COMMENT_PREFIX)}(\d+)"?')
# A range of group ids no Debian package allocates (system groups are below 1000, users
# from 1000 up to 59999, and 65534 is nogroup).
_GID_BASE = 61000
_GID_SPAN = 4000


class RedirectError(RuntimeError):
    """The redirect could not be set up (no iptables, not root, no NAT in the kernel)."""


def redirect_rule(dest_host: str, dest_port: int, gid: int, to_port: int) -> list[str]:
    """The ``iptables -t nat`` rule body (after ``-A``/``-D``) for one redirect."""
    return [
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        dest_host,
        "--dport",
        str(dest_port),
        "-m",
        "owner",
        "--gid-owner",
        str(gid),
        "-m",
        "comment",
        "--comment",
        f"{COMMENT_PREFIX}{os.getpid()}",
        "-j",
        "REDIRECT",
        "--to-ports",
        str(to_port),
    ]


def client_gid() -> int:
    """A group id for this process's redirected clients, unlikely to be anyone else's."""
    return _GID_BASE + os.getpid() % _GID_SPAN


def stale_rules(listing: str, alive: Sequence[int] | None = None) -> list[list[str]]:
    """The ``-D`` arguments for every rule in ``iptables -t nat -S OUTPUT`` output that a
    process no longer running added. ``alive`` (for tests) lists the pids taken as running."""
    stale = []
    for line in listing.splitlines():
        match = _STALE_RULE.match(line)
        if match is None:
            continue
        pid = int(match.group(1))
        running = pid in alive if alive is not None else os.path.exists(f"/proc/{pid}")
        if not running:
            stale.append(["-D", *_split_rule(line[len("-A ") :])])
    return stale


def _split_rule(text: str) -> list[str]:
    """An ``iptables -S`` rule split into arguments (its comment is quoted)."""
    return shlex.split(text)


@dataclass
class ClientRedirect:
    """Redirect connections to ``dest_host:dest_port`` made by :attr:`prefix`-run programs
    to ``to_port`` on this machine, for as long as the context lasts."""

    dest_host: str
    dest_port: int
    to_port: int
    gid: int = field(default_factory=client_gid)
    _added: bool = field(default=False, init=False, repr=False)

    @property
    def prefix(self) -> list[str]:
        """A command prefix running a program with the redirected group (and the same user)."""
        return [_setpriv(), f"--regid={self.gid}", "--clear-groups"]

    def __enter__(self) -> Self:
        iptables = _iptables()
        if os.geteuid() != 0:
            raise RedirectError(
                "redirecting a client to a transparent proxy needs root (iptables -t nat); "
                "run the tests as root, as CI does"
            )
        listing = _run([iptables, "-w", "-t", "nat", "-S", "OUTPUT"])
        for args in stale_rules(listing):
            _run([iptables, "-w", "-t", "nat", *args], check=False)
        rule = redirect_rule(self.dest_host, self.dest_port, self.gid, self.to_port)
        _run([iptables, "-w", "-t", "nat", "-A", *rule])
        self._added = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._added:
            rule = redirect_rule(self.dest_host, self.dest_port, self.gid, self.to_port)
            _run([_iptables(), "-w", "-t", "nat", "-D", *rule], check=False)
            self._added = False


def _iptables() -> str:
    path = shutil.which("iptables", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not path:
        raise RedirectError(
            "iptables is not installed: install the Debian package iptables "
            "(bash .ci/install-system-packages installs everything the tests need)"
        )
    return path


def _setpriv() -> str:
    path = shutil.which("setpriv")
    if not path:
        raise RedirectError("setpriv is not installed: install the Debian package util-linux")
    return path


def _run(argv: list[str], *, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise RedirectError(
            f"{' '.join(argv[:5])} ... failed (exit {done.returncode}): "
            f"{done.stderr.strip() or done.stdout.strip()}. A NAT REDIRECT needs root and "
            "the kernel's nf_nat support (nf_tables or legacy iptables)."
        )
    return done.stdout
