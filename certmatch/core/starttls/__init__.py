"""The plaintext phase of STARTTLS, per protocol, as pure state machines over bytes.

Each machine is fed the bytes each side sends and answers with the bytes to
relay (:class:`Relay`). It recognises the upgrade exactly:

- SMTP, submission, LMTP: 220 greeting, EHLO/LHLO, the 250 reply's STARTTLS
  keyword, ``STARTTLS``, ``220``.
- IMAP: ``* OK`` greeting, CAPABILITY (in the greeting or a response),
  ``tag STARTTLS``, ``tag OK``.
- POP3: ``+OK``, ``CAPA`` with ``STLS``, ``STLS``, ``+OK``.
- LDAP: an ExtendedRequest for OID 1.3.6.1.4.1.1466.20037, answered by an
  ExtendedResponse with resultCode 0.
- NNTP: ``200``/``201``, ``CAPABILITIES`` with ``STARTTLS``, ``STARTTLS``, ``382``.

Modules: ``framing`` (line and LDAP message readers), ``machine`` (the
phases and what every machine shares), one module per protocol, and
``detection`` (which protocol a new connection speaks).
"""

from __future__ import annotations

from certmatch.core.protocols import STARTTLS_PROTOCOLS
from certmatch.core.starttls.detection import NEEDS_MORE, detect_protocol
from certmatch.core.starttls.imap import ImapMachine
from certmatch.core.starttls.ldap import LdapMachine
from certmatch.core.starttls.machine import (
    ACCEPTED,
    FAILED,
    GREETING,
    HANDSHAKE,
    PLAINTEXT,
    REFUSED,
    REQUESTED,
    UPGRADED_PHASES,
    Relay,
    StartTlsMachine,
)
from certmatch.core.starttls.nntp import NntpMachine
from certmatch.core.starttls.pop3 import Pop3Machine
from certmatch.core.starttls.smtp import SmtpMachine

MACHINES: dict[str, type[StartTlsMachine]] = {
    "smtp": SmtpMachine,
    "submission": SmtpMachine,
    "imap": ImapMachine,
    "pop3": Pop3Machine,
    "ldap": LdapMachine,
    "nntp": NntpMachine,
}


def make_machine(protocol: str) -> StartTlsMachine:
    """A fresh machine for ``protocol`` (one of STARTTLS_PROTOCOLS)."""
    try:
        return MACHINES[protocol](protocol)
    except KeyError:
        raise ValueError(
            f"no STARTTLS machine for {protocol!r}; known: {', '.join(STARTTLS_PROTOCOLS)}"
        ) from None


__all__ = [
    "ACCEPTED",
    "FAILED",
    "GREETING",
    "HANDSHAKE",
    "MACHINES",
    "NEEDS_MORE",
    "PLAINTEXT",
    "REFUSED",
    "REQUESTED",
    "STARTTLS_PROTOCOLS",
    "UPGRADED_PHASES",
    "ImapMachine",
    "LdapMachine",
    "NntpMachine",
    "Pop3Machine",
    "Relay",
    "SmtpMachine",
    "StartTlsMachine",
    "detect_protocol",
    "make_machine",
]
