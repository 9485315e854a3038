"""What the proxy decides for a session, as pure functions of what it saw.

The capture addon (:mod:`certmatch.proxy.capture`) only wires mitmproxy's hooks to
these decisions: which name the session is judged against, which SNI goes upstream,
whether the client is let through, and whether the server is asked again with SNI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from certmatch.core import protocols
from certmatch.core.diagnosis import Diagnosis
from certmatch.core.facts import HostSource, SessionFacts
from certmatch.core.identity import is_ip_address

OnMismatch = Literal["pass", "block"]
ON_MISMATCH_CHOICES: tuple[OnMismatch, ...] = ("pass", "block")

# mitmproxy's mode type names (``ProxyMode.type_name``) for which the destination
# is the name the client itself gave the proxy.
_MODE_HOST_SOURCES: dict[str, HostSource] = {"socks5": "socks5", "regular": "http-connect"}


def requested_host(
    sni: str | None,
    configured: str,
    *,
    mode: str,
    reverse_target: str | None,
    destination: str | None,
) -> tuple[str | None, HostSource]:
    """The name the client asked for, and where certmatch learned it.

    The client's SNI wins (RFC 6066 §3: it is the name the client wants). Without it,
    the name the user configured (``certmatch_host``), then what the proxy mode
    tells: the reverse target, or the destination of a SOCKS5 or HTTP CONNECT request.
    """
    if sni:
        return sni, "sni"
    if configured:
        return configured, "option"
    if mode == "reverse":
        return reverse_target, "reverse-target"
    return destination, _MODE_HOST_SOURCES.get(mode, "unknown")


def upstream_sni(client_sni: str | None) -> str | None:
    """The SNI the proxy sends upstream: the client's, or none when it cannot be sent on.

    A faithful upstream handshake shows what the client would have been shown. A name
    the TLS stack refuses to send (see :func:`certmatch.core.protocols.sendable_sni`)
    goes upstream as no SNI at all, never as a name the client did not ask for.
    """
    if client_sni is None or protocols.sendable_sni(client_sni):
        return client_sni
    return None


def upstream_sni_reason(client_sni: str | None, upstream: str | None) -> str | None:
    """Why the SNI sent upstream is not the client's (``SessionFacts.upstream_sni_reason``).

    ``"ip-literal"``: the client sent an address, and RFC 6066 §3 does not permit literal
    IPv4 or IPv6 addresses in HostName, so none is sent on. ``"not-encodable"``: the TLS
    stack refuses the name. None when the client's SNI went upstream, or it sent none.
    """
    if client_sni is None or (upstream == client_sni and not is_ip_address(client_sni)):
        return None
    return "ip-literal" if is_ip_address(client_sni) else "not-encodable"


def recorded_upstream_sni(sent: str | None) -> str | None:
    """What the recording keeps as sent upstream: an IP literal is never sent as SNI.

    mitmproxy's tlsconfig takes an IP address in ``server.sni`` to mean "send none"
    (RFC 6066 §3: literal IPv4 and IPv6 addresses are not permitted in HostName).
    """
    return sent if sent and not is_ip_address(sent) else None


@dataclass(frozen=True)
class Action:
    """What the proxy does with the client's handshake, and why (for the log)."""

    block: bool
    why: str | None = None  # set when blocking
    by_option: bool = False  # blocked because of ``on_mismatch=block``, not by necessity

    @property
    def name(self) -> OnMismatch:
        return "block" if self.block else "pass"


def client_action(
    verdict: Diagnosis | None, *, chain_seen: bool, on_mismatch: OnMismatch
) -> Action:
    """Let the client's handshake go on, or refuse it as a strict client would.

    With no server certificate there is nothing to show the client: always blocked.
    Otherwise only the certificate's verdict counts; warnings, and findings about a
    plaintext phase that is already over, never stop a session. With no verdict at
    all (the analysis failed), ``block`` fails closed.
    """
    if not chain_seen:
        return Action(block=True, why="no server certificate")
    failing = verdict is None or verdict.verdict != "match"
    if not failing or on_mismatch != "block":
        return Action(block=False)
    if verdict is None:
        return Action(block=True, why="no verdict: the analysis failed", by_option=True)
    primary = verdict.primary
    why = verdict.verdict + (f", {primary.id}" if primary else "")
    return Action(block=True, why=why, by_option=True)


def wants_sni_probe(facts: SessionFacts, verdict: Diagnosis | None) -> bool:
    """Whether to ask the server again, with SNI, after a client that sent none.

    Only a name mismatch can be explained by the missing SNI (the server's default
    certificate), and only a DNS name can be sent as SNI (RFC 6066 §3).
    """
    host = facts.requested_host
    return bool(
        facts.sni is None
        and host
        and not is_ip_address(host)
        and verdict is not None
        and verdict.verdict in ("mismatch", "legacy-match")
    )
