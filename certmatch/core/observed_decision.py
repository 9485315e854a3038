"""The client's decision about the server's certificate, read from the records it relayed.

In observe mode certmatch terminates no TLS, so it cannot ask OpenSSL what the client sent;
it reads the records' content types and lengths (:class:`certmatch.core.tls_wire.WireSession`).
The decisions are those of :data:`certmatch.core.facts.CLIENT_DECISIONS`.

TLS 1.2 and below (RFC 5246 §7.3): the server's Certificate travels in clear, and a client
verifies it on receipt, before its own second flight. It then either sends a **cleartext
alert** (content type 21, 2 bytes: level, description; RFC 5246 §7.2), which names its
reason, or ClientKeyExchange, ChangeCipherSpec and Finished: it accepted the chain.

TLS 1.3 (RFC 8446 §5.2): every record the client sends after the ServerHello has the outer
content type 23 (a ChangeCipherSpec for middlebox compatibility aside, RFC 8446 §D.4) and
the true type inside the encryption ("The outer opaque_type field of a TLSCiphertext record is
always set to the value 23"). A client that refuses the certificate sends an **encrypted alert
instead of its Finished** and closes (RFC 8446 §6.2: "Upon transmission or receipt of a fatal
alert message, both parties MUST immediately close the connection"). The rule, from the
encrypted records' lengths alone:

- the inner plaintext of an alert is 2 bytes plus the 1-byte content type; an AEAD adds its
  tag (16 bytes for every TLS 1.3 cipher suite but TLS_AES_128_CCM_8_SHA256's 8), so an
  alert record is **at most 19 bytes** (:data:`ALERT_RECORD_MAX`);
- Finished is the 4-byte handshake header plus verify_data, the hash length (32 for SHA-256,
  48 for SHA-384; RFC 8446 §4.4.4), plus the content type and the tag: **at least 45 bytes**
  (:data:`FINISHED_RECORD_MIN`, 53 with a 16-byte tag);
- the client's first encrypted record after the ServerHello decides: at most 19 bytes is an
  alert (the decision is ``alert``; which alert is encrypted, so none is named); at least 45
  is Finished (or a Certificate flight, which precedes Finished only when the server asked
  for a client certificate, and is followed by it); in between (an empty client Certificate)
  the next record decides;
- after its Finished, a record longer than 19 bytes is application data: the client went
  on. A record of 19 bytes or less may be a close_notify, so it is not counted; a client
  that sent one closed the connection, even when the server's answering close reached the
  relay before the client's own.

A TLS 1.3 client may also alert in clear: OpenSSL (and so Python and curl built on it)
refuses the server's certificate before it has installed its handshake write keys, and its
alert is a 2-byte cleartext record naming the reason (bad_certificate for a wrong name, as
tested). Such a record is read as in TLS 1.2.

Records with padding (RFC 8446 §5.4) could blur this; the clients certmatch was tested with
(OpenSSL, Python, curl) pad none of these records.

A client that stops speaking TLS after its ClientHello (bytes that are no TLS record; OpenLDAP's
ldapsearch sends its UnbindRequest in clear when it refuses a certificate after StartTLS) closed
the TLS session: after or during the handshake, as far as it got.

When the decision needs the connection's end (closed after or during the handshake), the
caller says who closed first. A server that closed first leaves the decision unknown (None),
as in :mod:`certmatch.proxy.client_decision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from certmatch.core.tls_wire import (
    ALERT,
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    PHASE_START,
    WireSession,
)

# An encrypted alert's record: 2 bytes + content type + a 16-byte AEAD tag.
ALERT_RECORD_MAX = 2 + 1 + 16
# Finished with SHA-256 verify_data and the shortest TLS 1.3 tag (CCM_8): 4 + 32 + 1 + 8.
FINISHED_RECORD_MIN = 4 + 32 + 1 + 8

CLOSE_NOTIFY = 0
FATAL = 2


@dataclass(frozen=True)
class ObservedDecision:
    """The decision (None = not known yet, or not known at all), the alert's code when it
    was sent in clear, whether the client completed its handshake, and whether anything
    that can still happen could change the decision (``final``)."""

    decision: str | None
    alert_code: int | None = None
    handshake_done: bool = False
    final: bool = False


def observed_decision(
    wire: WireSession,
    *,
    client_spoke: bool,
    closed_first: Literal["client", "server"] | None = None,
) -> ObservedDecision:
    """What the client decided, from ``wire`` and, once the connection has closed, which
    side closed first."""
    if wire.client_hello is None:
        if closed_first == "client" and not client_spoke and wire.phase == PHASE_START:
            return ObservedDecision("closed-before-handshake", final=True)
        return ObservedDecision(None)
    alert = wire.client_alert
    if alert is not None and (alert[0] == FATAL or alert[1] != CLOSE_NOTIFY):
        return ObservedDecision("alert", alert_code=alert[1], final=True)
    if wire.server_hello is None or wire.hello_retry and wire.server_hello.hello_retry:
        decided = _closed(closed_first, handshake_done=False)
    elif wire.tls13:
        decided = _tls13(wire, closed_first)
    else:
        decided = _tls12(wire, closed_first)
    if wire.client_left_tls and decided.decision in (None, "went-on"):
        # It gave up on TLS: whatever it sends next, it did not go on in this session.
        return _closed("client", handshake_done=decided.handshake_done)
    return decided


def _tls12(wire: WireSession, closed_first: str | None) -> ObservedDecision:
    if not wire.client_ccs:
        return _closed(closed_first, handshake_done=False)
    ccs = next(i for i, (t, _) in enumerate(wire.client_records) if t == CHANGE_CIPHER_SPEC)
    # Its Finished follows the CCS; application data after that is the client going on.
    after = wire.client_records[ccs + 1 :]
    if any(t == APPLICATION_DATA for t, _ in after):
        return ObservedDecision("went-on", handshake_done=True, final=True)
    # An encrypted alert after its Finished: a close_notify, most likely.
    closing = any(t == ALERT for t, _ in after)
    return _closed(closed_first, handshake_done=True, client_closing=closing)


def _tls13(wire: WireSession, closed_first: str | None) -> ObservedDecision:
    finished = closing = False
    for content_type, length in wire.client_records:
        if content_type == CHANGE_CIPHER_SPEC:
            continue
        if content_type == ALERT and length <= 2:
            continue  # a cleartext alert: read as such above
        if not finished:
            if length <= ALERT_RECORD_MAX:
                return ObservedDecision("alert", final=True)
            if length >= FINISHED_RECORD_MIN:
                finished = True
            continue
        if content_type == APPLICATION_DATA and length > ALERT_RECORD_MAX:
            return ObservedDecision("went-on", handshake_done=True, final=True)
        closing = True  # a record an alert fits in: a close_notify, most likely
    return _closed(closed_first, handshake_done=finished, client_closing=closing)


def _closed(
    closed_first: str | None, *, handshake_done: bool, client_closing: bool = False
) -> ObservedDecision:
    """A client that sent what must be its close_notify closed first, whichever FIN came
    first: a server answers a close_notify by closing at once."""
    if closed_first is None:
        return ObservedDecision(None, handshake_done=handshake_done)
    if closed_first == "server" and not client_closing:
        return ObservedDecision(None, handshake_done=handshake_done, final=True)
    decision = "closed-after-handshake" if handshake_done else "closed-during-handshake"
    return ObservedDecision(decision, handshake_done=handshake_done, final=True)
