"""What the client decided about the certificate it was shown, read from what it did.

A client that refuses a certificate either sends an alert during the handshake (OpenSSL,
Python, curl), or completes the handshake and closes without a word (GnuTLS clients and
mbsync check afterwards and send no alert). One that accepts goes on: it sends application
data. :class:`ClientWatch` collects, per client connection, the few moments that tell these
apart; :meth:`ClientWatch.decision` turns them into the recorded decision:

- ``alert``: the client sent an alert other than close_notify (its name and code);
- ``went-on``: it sent application data;
- ``closed-after-handshake``: the handshake completed and the client closed first without
  sending application data; on a server-first protocol over implicit TLS that is after the
  greeting was relayed, after STARTTLS (the client speaks first) it means no command at all.
  A close_notify alone counts as sending nothing. ``waited`` is the time from the handshake's
  end (or the greeting) to the close;
- ``closed-during-handshake``: it closed in the middle of the handshake without an alert;
- ``closed-before-handshake``: it closed before sending a byte (a port check, a health probe);
- None: nothing tells (the server hung up first, or the proxy refused the client).

Alerts are named as in :mod:`certmatch.core.alerts`, and read from OpenSSL itself (an info
callback on the client connection), so an alert sent after the handshake counts too; the
text of mitmproxy's handshake error is the fallback. An alert that follows the client's own
close_notify, or the server's close, is no decision (OpenSSL 3 clients answer a close without
close_notify, which is how mitmproxy closes, with decode_error).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

from OpenSSL import SSL

from certmatch.core import alerts
from certmatch.core.facts import ClientDecision

CLOSE_NOTIFY = 0

# OpenSSL's reason text for an alert it received: "sslv3 alert bad certificate", "tlsv1 alert
# unknown ca", "ssl/tls alert bad certificate" (3.2+), "tlsv13 alert certificate required",
# "tlsv1 unrecognized name" (no "alert" for the RFC 6066 ones).
_RECEIVED_ALERT = re.compile(r"\b(?:sslv3|tlsv1|tlsv13|ssl/tls)(?: alert)? ([a-z0-9 ]+)")
_OPENSSL_SPELLINGS = {"user_cancelled": "user_canceled"}


def alert_name(code: int) -> str:
    """The RFC name of an alert code (:mod:`certmatch.core.alerts`); an unknown code reads
    ``alert_<code>``."""
    return alerts.name_of(code) or f"alert_{code}"


def alert_from_error(text: str | None) -> tuple[str, int] | None:
    """The alert an OpenSSL error text says was received, as (RFC name, code)."""
    for match in _RECEIVED_ALERT.finditer((text or "").lower()):
        name = match.group(1).strip().replace(" ", "_")
        name = _OPENSSL_SPELLINGS.get(name, name)
        if name in alerts.BY_NAME:
            return name, alerts.BY_NAME[name].code
    return None


@dataclass(frozen=True)
class Decision:
    """The decision as recorded: what the client did, its alert, how long it waited."""

    decision: ClientDecision | None  # one of certmatch.core.facts.CLIENT_DECISIONS
    alert: str | None = None
    alert_code: int | None = None
    waited: float | None = None  # seconds, to the millisecond


@dataclass
class ClientWatch:
    """One client connection's moments that tell its decision (monotonic seconds)."""

    spoke: bool = False  # any byte from the client reached the proxy's layers
    hello_seen: bool = False
    handshake_error: str | None = None  # mitmproxy's text when the client's handshake failed
    handshake_end: float | None = None
    greeting_at: float | None = None  # the server spoke first, after the handshake
    sent_data: bool = False
    alert: int | None = None  # the first alert other than close_notify read from the client
    alert_at: float | None = None
    close_notify: bool = False
    first_close: Literal["client", "server"] | None = None
    closed_at: float | None = None

    def watch_alerts(self, ssl_conn: SSL.Connection) -> None:
        """Note every alert the client sends on ``ssl_conn``, during the handshake or after."""
        ssl_conn.set_info_callback(self._on_info)

    def _on_info(self, _conn: SSL.Connection, where: int, ret: int) -> None:
        # Called from inside OpenSSL: keep it trivial, never raise.
        if where & SSL.SSL_CB_READ_ALERT == SSL.SSL_CB_READ_ALERT:
            code = ret & 0xFF
            if code == CLOSE_NOTIFY:
                self.close_notify = True
            elif self.alert is None and not self.close_notify:
                # After its own close_notify the client has decided; an alert it sends while
                # the connection winds down is no decision about the certificate.
                self.alert, self.alert_at = code, time.monotonic()

    def handshake_done(self) -> None:
        self.handshake_end = time.monotonic()

    def server_data(self) -> None:
        if self.greeting_at is None and not self.sent_data and self.handshake_end is not None:
            self.greeting_at = time.monotonic()

    def closed(self, by: Literal["client", "server"], at: float | None = None) -> None:
        """The first close seen (later calls change nothing)."""
        if self.first_close is None:
            self.first_close = by
            self.closed_at = time.monotonic() if at is None else at

    def decision(self) -> Decision:
        """What the client decided, from what was seen so far."""
        alert = self.alert
        if alert is not None and self._answered_the_servers_close():
            alert = None
        if alert is None and self.handshake_end is None:
            parsed = alert_from_error(self.handshake_error)
            if parsed is not None:
                alert = parsed[1]
        if alert is not None:
            return Decision("alert", alert_name(alert), alert)
        if self.sent_data:
            return Decision("went-on")
        if self.handshake_end is None:
            if self.handshake_error is not None:
                closed = self.first_close == "client" or _closed_mid_handshake(self.handshake_error)
                return Decision("closed-during-handshake" if closed else None)
            if not self.spoke and not self.hello_seen:
                return Decision("closed-before-handshake")
            return Decision(None)
        if self.first_close == "client" or (self.first_close is None and self.close_notify):
            since = self.greeting_at or self.handshake_end
            until = self.closed_at if self.closed_at is not None else time.monotonic()
            return Decision("closed-after-handshake", waited=round(max(until - since, 0.0), 3))
        return Decision(None)

    def _answered_the_servers_close(self) -> bool:
        """The alert came after the server's side had closed: OpenSSL 3 clients answer a
        close without close_notify (mitmproxy sends none) with decode_error. A reaction to
        the close, not a decision about the certificate."""
        return (
            self.first_close == "server"
            and self.closed_at is not None
            and self.alert_at is not None
            and self.alert_at >= self.closed_at
        )


def _closed_mid_handshake(error: str) -> bool:
    """mitmproxy's words for a client that hung up during the handshake (``layers/tls.py``)."""
    return error == "connection closed" or error.startswith("The client disconnected during")
