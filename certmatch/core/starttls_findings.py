"""The findings of a STARTTLS session's plaintext phase, from its recorded facts.

Each finding is bound to a cause in the catalogue (:mod:`certmatch.core.causes`,
``Cause.raised_by``), whose id is the finding's value.
"""

from __future__ import annotations

from enum import StrEnum

from certmatch.core.facts import SessionFacts
from certmatch.core.starttls import REFUSED, UPGRADED_PHASES


class StartTlsFinding(StrEnum):
    """What the plaintext phase of a STARTTLS session can show; each value is its cause id.

    Each member says which section it rests on and, last, the function that finds it.
    """

    INJECTION = "starttls-injection"
    """Bytes crossed the upgrade boundary (RFC 3207 §4, CVE-2011-0411).
    Found in ``starttls_findings``."""
    PLAINTEXT_AUTH = "plaintext-auth"
    """Credentials were sent before TLS (RFC 8314 §3). Found in ``starttls_findings``."""
    NOT_OFFERED = "starttls-not-offered"
    """The server did not advertise the upgrade (RFC 3207 §4, RFC 2595 §3 and §4,
    RFC 4513 §3, RFC 4642 §2). Found in ``starttls_findings``."""
    REFUSED = "starttls-refused"
    """The server answered the upgrade request with a refusal (RFC 3207 §4, RFC 2595 §3 and §4,
    RFC 4513 §3, RFC 4642 §2). Found in ``starttls_findings``."""
    NOT_REQUESTED = "starttls-not-requested"
    """The client never asked for the upgrade (RFC 8314 §3). Found in ``starttls_findings``."""


_ADVERTISEMENT = {
    "smtp": "its EHLO reply did not list STARTTLS",
    "submission": "its EHLO reply did not list STARTTLS",
    "imap": "its CAPABILITY list did not include STARTTLS",
    "pop3": "its CAPA list did not include STLS",
    "nntp": "its CAPABILITIES list did not include STARTTLS",
    "ldap": "its root DSE's supportedExtension did not list StartTLS (1.3.6.1.4.1.1466.20037)",
}


def starttls_findings(facts: SessionFacts) -> dict[StartTlsFinding, str]:
    """The STARTTLS causes that hold for a session: cause id -> one-sentence detail."""
    st = facts.starttls
    if st is None:
        return {}
    found: dict[StartTlsFinding, str] = {}
    upgraded = st.phase in UPGRADED_PHASES
    protocol = facts.protocol
    if st.injection:
        found[StartTlsFinding.INJECTION] = st.injection[0].upper() + st.injection[1:] + "."
    if st.plaintext_auth:
        found[StartTlsFinding.PLAINTEXT_AUTH] = (
            f"The client sent {st.plaintext_auth} before any TLS upgrade, so its credentials "
            "crossed the network in plaintext."
        )
    if st.server_offered is False and not upgraded:
        what = _ADVERTISEMENT.get(protocol, "it did not advertise STARTTLS")
        asked = (
            " The client asked for it anyway."
            if st.client_requested
            else " The client did not ask for it."
        )
        found[StartTlsFinding.NOT_OFFERED] = f"The server did not offer the upgrade: {what}.{asked}"
    if st.phase == REFUSED:
        reply = f" with {st.server_reply!r}" if st.server_reply else ""
        found[StartTlsFinding.REFUSED] = (
            f"The client asked for the TLS upgrade and the server answered{reply}."
        )
    if not upgraded and not st.client_requested and st.server_offered is not False:
        offered = (
            "The server offered STARTTLS" if st.server_offered else "STARTTLS was not discussed"
        )
        found[StartTlsFinding.NOT_REQUESTED] = (
            f"{offered}, but the client never asked for it: the session stayed in plaintext."
        )
    return found
