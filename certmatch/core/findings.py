"""From one session's facts to a verdict and its findings, explained.

This is where facts become judgements, in two steps:

- :func:`decide` works from the verdict fields only (:func:`facts.verdict_part
  <certmatch.core.facts.verdict_part>`) and says which causes hold, primary first.
  Every rule it meets is turned into its cause through the catalogue
  (:func:`causes.cause_of <certmatch.core.causes.cause_of>`); the causes that need
  the whole session are decided here, one function per :class:`SessionRule`.
- :func:`explain` fills each cause's templates with the session's own names.

Parsing, identity and trust come from ``parts``, the judge
(:class:`certmatch.core.judge.Judge`), which remembers them; nothing here caches.
It runs when a recording is read (and in the proxy, to decide whether to block),
so a recording made with an older certmatch is judged by today's rules.

Verdicts:
``match`` the names pass; ``legacy-match`` only a legacy rule (CN-ID)
accepts them; ``mismatch`` the names fail; ``untrusted`` names pass but
trust or validity fails, or the client refused a certificate whose names pass;
``error`` no certificate was obtained. A ``match`` still fails when a failing cause
holds beside it: the name judged against was assumed, not given by the client
(``requested-host-assumed``). A session the client refused is never a ``match``. An
``error`` fails unless every cause is a warning: a client that closed before any byte
(``client-closed-before-handshake``) is a probe, not a failure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any, Literal, Protocol

from certmatch.core import alerts
from certmatch.core import causes as catalogue
from certmatch.core.anchors import TrustAnchor
from certmatch.core.causes import Cause, Rule, cause_of
from certmatch.core.certificates import CertificateSummary, ParsedChain
from certmatch.core.dns_rules import DnsRule, dns_findings, srv_ids_of, suggested_servers
from certmatch.core.facts import SessionFacts, verdict_part
from certmatch.core.identity import (
    IdentityResult,
    PresentedIdentifiers,
    is_ip_address,
    registrable_domain,
)
from certmatch.core.session_rules import SessionRule
from certmatch.core.starttls import UPGRADED_PHASES
from certmatch.core.starttls_findings import StartTlsFinding, starttls_findings
from certmatch.core.text import printable
from certmatch.core.trust import TrustProblem, TrustProblemId, TrustResult

Verdict = Literal["match", "legacy-match", "mismatch", "untrusted", "error"]
VERDICTS: tuple[str, ...] = ("match", "legacy-match", "mismatch", "untrusted", "error")

_HOST_SOURCE_TEXT = {
    "sni": "from the client's SNI",
    "socks5": "the SOCKS5 target",
    "http-connect": "the HTTP CONNECT target",
    "reverse-target": "the reverse-proxy target",
    "option": "configured with --host",
    "unknown": "source unknown",
}


class Parts(Protocol):
    """What deciding needs besides the facts: parsed chains, identity and trust results."""

    def chain(self, chain: tuple[str, ...]) -> ParsedChain: ...

    def presented(self, chain: tuple[str, ...]) -> PresentedIdentifiers:
        """The leaf's identifiers; ValueError when they cannot be read."""
        ...

    def identity(self, reference: str, presented: PresentedIdentifiers) -> IdentityResult: ...

    def trust(self, chain: tuple[str, ...], at: datetime) -> TrustResult: ...

    def anchor(self, chain: tuple[str, ...], trust: TrustResult) -> TrustAnchor | None:
        """The store certificate a trusted chain reached, and where it came from."""
        ...


@dataclass(frozen=True)
class Finding:
    """One cause that holds for a session, explained with the session's own names."""

    cause: Cause
    explanation: str
    fix: str
    evidence: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.cause.id

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.cause.id,
            "title": self.cause.title,
            "severity": self.cause.severity,
            "explanation": self.explanation,
            "fix": self.fix,
            "evidence": list(self.evidence),
            "citations": [str(c) for c in self.cause.citations],
        }


@dataclass(frozen=True)
class Diagnosis:
    """The verdict on one session, its causes (primary first) and the evidence."""

    facts: SessionFacts
    verdict: Verdict
    findings: tuple[Finding, ...]
    identity: IdentityResult | None
    trust: TrustResult | None
    certificates: tuple[CertificateSummary, ...] = field(default_factory=tuple)
    anchor: TrustAnchor | None = None  # what the chain was trusted through, when it was

    @property
    def primary(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    @property
    def cause_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.findings)

    @property
    def failed(self) -> bool:
        """True when a client would refuse the session (or did), a security problem was seen,
        or the verdict cannot be vouched for (the name judged against was assumed)."""
        return is_failure(self.verdict, self.cause_ids)

    @property
    def presented_names(self) -> tuple[str, ...]:
        return presented_names(self.certificates)

    def to_json(self) -> dict[str, Any]:
        f = self.facts
        primary = self.primary
        return {
            "id": f.id,
            "started": f.started,
            "protocol": f.protocol,
            "tls_kind": f.tls_kind,
            "client_address": f.client_address,
            "server_address": f.server_address,
            "requested_host": f.requested_host,
            "requested_host_source": f.requested_host_source,
            "sni": f.sni,
            "upstream_sni": f.upstream_sni,
            "presented": f.presented,
            "client_decision": f.client_decision,
            "client_alert": f.client_alert,
            "client_alert_code": f.client_alert_code,
            "client_waited": f.client_waited,
            "presented_names": list(self.presented_names),
            "verdict": self.verdict,
            "failed": self.failed,
            "primary_cause": primary.id if primary else None,
            "causes": list(self.cause_ids),
            "explanation": primary.explanation if primary else _match_text(self),
            "fix": primary.fix if primary else None,
            "citations": [str(c) for c in primary.cause.citations] if primary else [],
            "findings": [finding.to_json() for finding in self.findings],
            "identifiers": [
                {
                    "kind": c.kind,
                    "presented": c.presented,
                    "outcome": c.outcome,
                    "rule": str(c.rule),
                    "reason": c.reason,
                }
                for c in (self.identity.checks if self.identity else ())
            ],
            "certificates": [_summary_json(s) for s in self.certificates],
            "trust_anchor": self.anchor.to_json() if self.anchor else None,
            "action": f.action,
            "notes": list(f.notes),
            # what DNS said about the names (the probe, a proxy that asked); None when not asked
            "dns": f.dns.to_json() if f.dns is not None else None,
        }


@dataclass(frozen=True)
class Decision:
    """Which causes hold for a session, before they are explained."""

    verdict: Verdict
    # cause id -> (detail, pattern) for the templates, primary cause first
    found: Mapping[str, tuple[str, str]]
    identity: IdentityResult | None
    trust: TrustResult | None
    certificates: tuple[CertificateSummary, ...]
    anchor: TrustAnchor | None = None

    @property
    def cause_ids(self) -> tuple[str, ...]:
        return tuple(self.found)


def is_failure(verdict: str, cause_ids: Iterable[str]) -> bool:
    """A client would refuse the session, a security problem was seen, or a failing cause
    holds beside a match (any cause that is not a warning). An ``error`` with only warnings
    (a client that closed before the handshake) fails nothing."""
    if verdict == "error":
        listed = tuple(cause_ids)
        return not listed or any(catalogue.get(cid).severity != "warning" for cid in listed)
    if verdict != "match":
        return True
    return any(catalogue.get(cid).severity != "warning" for cid in cause_ids)


def presented_names(certificates: tuple[CertificateSummary, ...]) -> tuple[str, ...]:
    """The leaf's names for display, control characters escaped; () without a certificate."""
    return _presented_names(certificates[0]) if certificates else ()


def diagnose_with(facts: SessionFacts, parts: Parts) -> Diagnosis:
    """Decide and explain one session. Never raises on odd facts: oddities become findings.

    Certificates are hostile input, and cryptography parses parts of them
    lazily (a name can fail when first read), so anything unexpected is
    reported as a malformed certificate rather than raised.
    """
    try:
        return explain(facts, _decide(verdict_part(facts), parts), parts)
    except Exception as exc:  # noqa: BLE001 - the reader and the proxy must get a verdict
        return explain(facts, _unanalysable(facts, parts, exc), parts)


def decide(facts: SessionFacts, parts: Parts) -> Decision:
    """Which causes hold, from the verdict fields of ``facts`` only; never raises."""
    verdict_facts = verdict_part(facts)
    try:
        return _decide(verdict_facts, parts)
    except Exception as exc:  # noqa: BLE001 - as in diagnose_with
        return _unanalysable(verdict_facts, parts, exc)


def _unanalysable(facts: SessionFacts, parts: Parts, exc: Exception) -> Decision:
    detail = f"certmatch could not analyse the chain ({type(exc).__name__}: {exc})"
    found: dict[str, tuple[str, str]] = {}
    _add(found, SessionRule.MALFORMED_CERTIFICATE, detail)
    return Decision("error", found, None, None, parts.chain(tuple(facts.chain)).summaries)


def _decide(facts: SessionFacts, parts: Parts) -> Decision:
    chain = tuple(facts.chain)
    parsed = parts.chain(chain)
    found: dict[str, tuple[str, str]] = {}  # cause id -> (detail, pattern)

    def decided(
        verdict: Verdict,
        identity: IdentityResult | None = None,
        trust: TrustResult | None = None,
        anchor: TrustAnchor | None = None,
    ) -> Decision:
        ordered = {cid: found[cid] for cid in sorted(found, key=_primary_rank)}
        return Decision(verdict, ordered, identity, trust, parsed.summaries, anchor)

    if _closed_before_handshake(facts, found):
        return decided("error")
    _sni_ip_literal(facts, found)
    starttls = starttls_findings(facts)
    if facts.server_error and facts.starttls and facts.starttls.phase not in UPGRADED_PHASES:
        # The server failed (unreachable, silent, closed) before the upgrade was asked for:
        # the client had no chance left to ask.
        starttls.pop(StartTlsFinding.NOT_REQUESTED, None)
    for finding, detail in starttls.items():
        _add(found, finding, detail)

    if not facts.chain:
        _no_certificate(facts, bool(starttls), found)
        return decided("error")
    presented = _unreadable_leaf(parts, chain, parsed, found)
    if presented is None:
        return decided("error")

    identity = parts.identity(facts.requested_host or "", presented)
    _identity_findings(identity, found)
    trust = parts.trust(chain, capture_time(facts))
    relevant = _relevant_trust_problems(trust)
    for problem in relevant:
        _add(found, problem.id, problem.detail)
    if facts.dns is not None and identity.reference_kind == "dns":
        _dns_findings(facts, parsed, presented, parts, found)
    if identity.verdict != "match" and identity.reference_kind == "dns":
        _no_sni_default_certificate(facts, identity, parts, found)
        _mail_domain_not_server(facts, identity, presented, parts, found)
    _name_not_in_certificate(identity, found)
    _requested_host_assumed(facts, found)

    if identity.verdict == "mismatch":
        verdict: Verdict = "mismatch"
    elif identity.verdict == "legacy-match":
        verdict = "legacy-match"
    elif not trust.trusted or any(cause_of(p.id).severity != "warning" for p in relevant):
        verdict = "untrusted"
    else:
        verdict = "match"
    if _client_refused(facts, verdict, found) and verdict == "match":
        verdict = "untrusted"  # the names pass, but the client did not accept what it saw
    anchor = parts.anchor(chain, trust) if trust.trusted else None
    return decided(verdict, identity, trust, anchor)


def _add(
    found: dict[str, tuple[str, str]], rule: Rule, detail: str = "", pattern: str = ""
) -> None:
    """Record the cause ``rule`` is bound to, unless an earlier rule already raised it."""
    found.setdefault(cause_of(rule).id, (detail, pattern))


# --- the session rules: one function each --------------------------------------------------


def _closed_before_handshake(facts: SessionFacts, found: dict[str, tuple[str, str]]) -> bool:
    """The client closed before sending a byte: a probe, never a fault of the server, even
    when certmatch's own connection to the server was cancelled with it. True when so."""
    if facts.client_decision != _CLOSED_BEFORE_HANDSHAKE or facts.chain:
        return False
    detail = ""
    error = facts.server_error
    if error and "cancel" not in error.lower():
        detail = (
            f"certmatch's own connection to the server, opened for it, ended with: {error}. "
            "The client had gone by then, so nothing is concluded from it."
        )
    _add(found, SessionRule.CLIENT_CLOSED_BEFORE_HANDSHAKE, detail)
    return True


_CLOSED_BEFORE_HANDSHAKE = "closed-before-handshake"
_CLOSED_AFTER_HANDSHAKE = "closed-after-handshake"
_CLOSED_DURING_HANDSHAKE = "closed-during-handshake"
_ALERT = "alert"
_PINNED_ALERT = "internal_error"  # OpenSSL's alert when an application's own check refuses
# What the client did instead of going on, when it was shown a certificate.
_REFUSALS = frozenset({_ALERT, _CLOSED_AFTER_HANDSHAKE, _CLOSED_DURING_HANDSHAKE})
# What an older recording's client error says when the client refused the certificate.
_REFUSED_IN_ERROR = ("unknown ca", "bad certificate", "certificate unknown", "does not trust")


def _refusal(facts: SessionFacts) -> str | None:
    """How the client refused the certificate it was shown, or None if it did not (or
    was shown none): its decision, or "error" for an older recording's client error."""
    decision = facts.client_decision
    if decision is not None:
        return decision if decision in _REFUSALS and facts.presented is not None else None
    error = facts.client_error
    if facts.presented is None and error and any(w in error.lower() for w in _REFUSED_IN_ERROR):
        return "error"
    return None


def _client_refused(
    facts: SessionFacts, verdict: Verdict, found: dict[str, tuple[str, str]]
) -> bool:
    """The client refused what certmatch showed it. ``client-refused-certificate`` stands
    beside the certificate's own causes; ``proxy-ca-not-trusted`` joins it only when the
    certificate passes for a name the client gave (a match, not assumed) and the client's
    alert, if any, was about a certificate: never when the client's own check of the
    server's names or dates failed. True when the client refused."""
    refusal = _refusal(facts)
    if refusal is None:
        return False
    assumed = cause_of(SessionRule.REQUESTED_HOST_ASSUMED).id in found
    about_certificate = refusal != _ALERT or alerts.refuses_certificate(facts.client_alert)
    # In observe mode the client saw the server's own chain: nothing of certmatch's to refuse.
    passes = verdict == "match" and not assumed and about_certificate and not _real(facts)
    if passes:
        _add(found, SessionRule.PROXY_CA_NOT_TRUSTED, _proxy_ca_detail(facts, refusal))
    detail = _refusal_detail(facts, refusal, verdict, passes=passes, assumed=assumed)
    _add(found, SessionRule.CLIENT_REFUSED_CERTIFICATE, detail)
    return True


def _proxy_ca_detail(facts: SessionFacts, refusal: str) -> str:
    lines = []
    if refusal == _ALERT and facts.client_alert == _PINNED_ALERT:
        lines.append(
            "Its alert, internal_error, is what an OpenSSL-based client sends when its own check "
            "of the certificate refuses it outside the chain check: most likely it pins the "
            "server's certificate or key (fetchmail's sslfingerprint), which no copy can match. "
            "A client that did not trust certmatch's CA would have sent unknown_ca."
        )
    if facts.presented == "mirror":
        lines.append(
            "The certificate it was shown carried the server's own names and dates; only its "
            "issuer, certmatch's CA, was certmatch's."
        )
    if refusal == _CLOSED_AFTER_HANDSHAKE:
        lines.append(
            "GnuTLS-based clients (neomutt, msmtp, ldapsearch) and mbsync check the "
            "certificate after the handshake and close without an alert, as this one did. "
            "A client that accepted and only wanted the handshake (openssl s_client with "
            "nothing to send, a monitoring probe) closes the same way: if this was one, "
            "nothing was refused and nothing needs fixing."
        )
    return " ".join(lines)


def _refusal_detail(
    facts: SessionFacts, refusal: str, verdict: Verdict, *, passes: bool, assumed: bool
) -> str:
    """What the refusal means: the alert's meaning, and how it squares with the verdict."""
    lines = []
    if refusal == _ALERT:
        alert = alerts.BY_NAME.get(facts.client_alert or "")
        if alert is None:
            lines.append("An unknown alert ends the handshake like any error alert.")
        elif alerts.refuses_certificate(alert.name):
            lines.append(f"{alert.name} means that {alert.meaning}.")
        else:
            lines.append(
                f"{alert.name} is not about the certificate: it means that {alert.meaning}. "
                "The client gave up on the handshake for that reason, whatever it made of "
                "the names."
            )
    elif refusal == _CLOSED_AFTER_HANDSHAKE and not passes:
        lines.append(
            "Some clients check the certificate after the handshake and close without an "
            "alert when they refuse it; a client that only wanted the handshake (a certificate "
            "check, a monitoring probe) closes the same way."
        )
    elif refusal == _CLOSED_DURING_HANDSHAKE:
        lines.append(
            "Some clients close like this when they refuse the certificate; a client that "
            "timed out or failed looks the same."
        )
    if passes:
        lines.append(
            "certmatch judges the server's own certificate acceptable, so the refusal is "
            "about what certmatch showed the client (see proxy-ca-not-trusted)."
        )
    elif verdict == "untrusted" and facts.presented == "mirror":
        lines.append(
            "If the client goes on with this server when it connects directly, it keeps a "
            "saved exception or a pin for the server's own certificate (neomutt's "
            "certificate_file, Thunderbird): that covers no copy, since a copy never carries "
            "the server's key. Look at the server directly with certmatch proxy --observe."
        )
    elif verdict == "match" and assumed:
        lines.append(
            "certmatch judged the certificate against a name it assumed (see "
            "requested-host-assumed); the client checks the server name in its own settings, "
            "which may be another name or an address, or it does not trust certmatch's CA."
        )
    elif verdict == "match" and _real(facts):
        lines.append(
            "It refused the server's own chain, which certmatch judges acceptable with the CAs "
            "it trusts: the client does not trust that CA (its store differs from certmatch's, "
            "see --ca-file), pins another key, or checks a name other than the one it sent."
        )
    elif verdict == "match":
        lines.append("certmatch judges the server's own certificate acceptable.")
    elif _real(facts):
        lines.append(
            "It refused the server's own certificate, as certmatch's verdict says a client "
            "checking it would: see the certificate's own causes."
        )
    elif facts.presented == "mirror":
        lines.append(
            "It refused the server's real names and dates, as certmatch's verdict says a "
            "client checking them would: see the certificate's own causes."
        )
    elif facts.presented == "substitute":
        lines.append(
            "That certificate is not the server's, so the refusal may be about certmatch's CA "
            "rather than the certificate's own causes; with --present mirror the client judges "
            "the server's own names and dates."
        )
    else:
        lines.append(
            "certmatch did not record which certificate the client saw, so the refusal may be "
            "about certmatch's CA as well as about the certificate's own causes."
        )
    return " ".join(lines)


def _real(facts: SessionFacts) -> bool:
    """Observe mode: the client was shown the server's own chain, relayed unchanged."""
    return facts.presented == "real"


def _sni_ip_literal(facts: SessionFacts, found: dict[str, tuple[str, str]]) -> None:
    """The client sent an IP address as SNI (RFC 6066 §3 permits host names only)."""
    if facts.sni and is_ip_address(facts.sni):
        _add(found, SessionRule.SNI_IP_LITERAL)


# Where a name comes from the client itself (its SNI, the target of its SOCKS5 or HTTP
# CONNECT request) or from the user (--host), as opposed to being assumed by certmatch.
_NAMED_BY_CLIENT_OR_USER = frozenset({"sni", "socks5", "http-connect", "option"})


# What the client was shown carried the server's own names (not names added for the client).
_SERVERS_NAMES_SHOWN = frozenset({"real", "mirror"})


def _requested_host_assumed(facts: SessionFacts, found: dict[str, tuple[str, str]]) -> None:
    """The certificate was judged against a name neither the client nor the user gave.

    Without SNI, the reverse-proxy target (or a destination the client did not name)
    stands in for the server name in the client's settings (RFC 9525 §6.1.1), which
    certmatch cannot see; a match against it says nothing about the client's own check.
    """
    if facts.sni or facts.requested_host_source in _NAMED_BY_CLIENT_OR_USER:
        return
    detail = ""
    if facts.client_decision == "went-on" and facts.presented in _SERVERS_NAMES_SHOWN:
        detail = (
            "This client went on with the certificate it was shown, which carried the server's "
            "own names: either the name in its settings is one of them, or it checks no name at "
            "all (swaks, or openssl s_client without -verify_hostname). certmatch cannot tell "
            "which, so the causes beside this one are for the assumed name, as a client "
            "configured with it and checking it would see them."
        )
    _add(found, SessionRule.REQUESTED_HOST_ASSUMED, detail)


# Observe mode: the chain was to come from certmatch's own second handshake.
_FETCHED_BY_SIDE_HANDSHAKE = frozenset({"side-handshake", "resumed"})
_SIDE_HANDSHAKE_PREFIX = "side handshake: "


def _no_certificate(facts: SessionFacts, starttls: bool, found: dict[str, tuple[str, str]]) -> None:
    """Why no certificate arrived: the connection, the STARTTLS exchange or the TLS handshake
    with the server failed, or the client stopped first.

    A STARTTLS session whose plaintext phase the server broke off (silent, closed, not the
    protocol) failed before any TLS. One that never reached TLS otherwise is explained by its
    STARTTLS finding; a client that stopped with no server error is never the server's fault.
    """
    if _server_broke_off_starttls(facts):
        _add(found, SessionRule.UPSTREAM_STARTTLS_FAILED, facts.server_error or "")
        return
    if not facts.server_error and facts.client_error:
        _add(found, SessionRule.CLIENT_STOPPED_BEFORE_HANDSHAKE, facts.client_error)
        return
    if not facts.server_error and starttls:
        return
    detail = facts.server_error or "no certificate was received"
    if facts.chain_source in _FETCHED_BY_SIDE_HANDSHAKE:
        detail = detail.removeprefix(_SIDE_HANDSHAKE_PREFIX).rstrip(".") + ". "
        if facts.client_decision == "went-on":
            detail += "The client itself went on with the session: it accepted what it was shown."
        elif facts.client_decision:
            detail += f"The client itself did not go on: {_decision_text(facts)}."
        _add(found, SessionRule.SIDE_HANDSHAKE_FAILED, detail)
        return
    if _is_tls_error(facts.server_error):
        _add(found, SessionRule.UPSTREAM_TLS_FAILED, detail)
    else:
        _add(found, SessionRule.UPSTREAM_UNREACHABLE, detail)


def _server_broke_off_starttls(facts: SessionFacts) -> bool:
    """The server was reached, and the plaintext phase of STARTTLS ended with its error
    before the upgrade was accepted (a refusal is a STARTTLS finding, not an error)."""
    st = facts.starttls
    error = facts.server_error
    return (
        st is not None
        and st.phase not in UPGRADED_PHASES
        and bool(error)
        and not (error or "").startswith(_NOT_REACHED)
    )


# The STARTTLS layer's words for a server it could not connect to (an unreachable server).
_NOT_REACHED = "cannot connect"


def _unreadable_leaf(
    parts: Parts, chain: tuple[str, ...], parsed: ParsedChain, found: dict[str, tuple[str, str]]
) -> PresentedIdentifiers | None:
    """The leaf's identifiers, or None (and a malformed certificate) when they cannot be read."""
    if parsed.leaf is None:
        detail = "; ".join(parsed.errors) or "the leaf is unreadable"
        _add(found, SessionRule.MALFORMED_CERTIFICATE, detail)
        return None
    try:
        return parts.presented(chain)
    except ValueError as exc:
        _add(found, SessionRule.MALFORMED_CERTIFICATE, str(exc))
        return None


def _no_sni_default_certificate(
    facts: SessionFacts, identity: IdentityResult, parts: Parts, found: dict[str, tuple[str, str]]
) -> None:
    """No SNI, and the server's certificate for the name (when probed) matches it."""
    if facts.sni is not None:
        return
    probe = facts.sni_probe
    probe_matches = False
    if probe and probe.chain:
        probe_chain = tuple(probe.chain)
        if parts.chain(probe_chain).leaf is not None:
            try:
                probe_ids = parts.presented(probe_chain)
            except ValueError:
                probe_ids = None
            if probe_ids is not None:
                probe_matches = parts.identity(identity.reference, probe_ids).verdict == "match"
    if probe_matches or probe is None:
        _add(found, SessionRule.NO_SNI_DEFAULT_CERTIFICATE)


def _mail_domain_not_server(
    facts: SessionFacts,
    identity: IdentityResult,
    presented: PresentedIdentifiers,
    parts: Parts,
    found: dict[str, tuple[str, str]],
) -> None:
    """The client asked for the mail domain, and the certificate names hosts inside it, or
    the servers the domain's SRV records (RFC 6186) or MX records name, which are then the ones
    to configure, each with its record."""
    if cause_of(DnsRule.SRV_ID_ONLY).id in found:
        return  # the certificate names the domain, as an SRV-ID: that cause says what to do
    reference = identity.normalized
    dns = facts.dns
    if dns is not None and (dns.mail_domain or "").lower().rstrip(".") == reference:

        def covers(name: str) -> bool:
            return parts.identity(name, presented).verdict != "mismatch"

        servers = suggested_servers(dns, facts.protocol, covers)
        if servers:
            _add(found, SessionRule.MAIL_DOMAIN_NOT_SERVER, "", servers)
            return
    if registrable_domain(reference) != reference:
        return
    suffix = "." + reference
    candidates = [
        name
        for name in presented.dns_names
        if name.lower().rstrip(".").endswith(suffix) and not name.startswith("*")
    ]
    if candidates:
        _add(found, SessionRule.MAIL_DOMAIN_NOT_SERVER, "", ", ".join(candidates))


_EXPLAINED_BY_THE_SESSION: tuple[Rule, ...] = (
    SessionRule.NO_SNI_DEFAULT_CERTIFICATE,
    SessionRule.MAIL_DOMAIN_NOT_SERVER,
    DnsRule.CNAME_ALIAS,
    DnsRule.SPLIT_HORIZON,
    DnsRule.SRV_TARGET_NOT_IN_CERTIFICATE,
    DnsRule.SRV_ID_ONLY,  # the domain is there, as an SRV-ID a hand-configured client ignores
)


def _dns_findings(
    facts: SessionFacts,
    parsed: ParsedChain,
    presented: PresentedIdentifiers,
    parts: Parts,
    found: dict[str, tuple[str, str]],
) -> None:
    """What the session's DNS facts show about its names (:mod:`certmatch.core.dns_rules`).

    The address reached is the one the DNS facts asked the PTR of: ``server_ip`` itself is
    no verdict field."""
    dns = facts.dns
    if dns is None:
        return
    leaf = parsed.leaf

    def covers(name: str) -> bool:
        return parts.identity(name, presented).verdict != "mismatch"

    for rule, detail in dns_findings(
        facts.requested_host,
        dns.server_ip,
        dns,
        presented,
        protocol=facts.protocol,
        srv_ids=srv_ids_of(leaf) if leaf is not None else (),
        covers=covers,
    ).items():
        _add(found, rule, detail)


def _name_not_in_certificate(identity: IdentityResult, found: dict[str, tuple[str, str]]) -> None:
    """The name fails, and nothing more specific says why.

    The only place that decides this cause. A mismatch is explained when an
    identifier would have matched but for a rule that is a failure in its own
    right (a wildcard one label short, the name only in the CN, ...; an IDN-form
    warning explains nothing), or when the session shows why the server sent
    this certificate (no SNI, the mail domain asked for).
    """
    if identity.verdict != "mismatch":
        return
    if any(
        f.explains_mismatch and cause_of(f.rule).severity != "warning" for f in identity.findings
    ):
        return
    if any(cause_of(rule).id in found for rule in _EXPLAINED_BY_THE_SESSION):
        return
    _add(found, SessionRule.NAME_NOT_IN_CERTIFICATE)


# --- identity and trust ----------------------------------------------------------------------


def _identity_findings(identity: IdentityResult, found: dict[str, tuple[str, str]]) -> None:
    """The cause of every identity finding, with the identifier that shows it."""
    for finding in identity.findings:
        cause = cause_of(finding.rule)
        if identity.verdict == "match" and cause.severity == "failure":
            continue  # a name that matched needs no explaining; advisories and attacks remain
        check = finding.check
        _add(found, finding.rule, *((check.reason, check.presented) if check else ("", "")))


def _relevant_trust_problems(trust: TrustResult) -> tuple[TrustProblem, ...]:
    """The trust problems that bear on the verdict.

    When the chain validated, an extra certificate the server sent but the
    path did not use does not matter to clients, even if it cannot be parsed
    (cryptography is stricter than OpenSSL about some names).
    """
    if not trust.trusted:
        return trust.problems
    return tuple(
        p
        for p in trust.problems
        if not (p.id == TrustProblemId.MALFORMED_CERTIFICATE and p.cert_index != 0)
    )


_SEVERITY_RANK = {"security": 0, "failure": 1, "warning": 2}


def _primary_rank(cause_id: str) -> tuple[int, int]:
    """Warnings come after every failure; otherwise the catalogue's order decides."""
    severity = catalogue.get(cause_id).severity
    return _SEVERITY_RANK[severity], catalogue.PRIMARY_ORDER.index(cause_id)


# --- explaining --------------------------------------------------------------------------------


def explain(facts: SessionFacts, decision: Decision, parts: Parts) -> Diagnosis:
    """The decision's causes explained with the names of ``facts`` (the whole session)."""
    names = presented_names(decision.certificates)
    leaf_ips = decision.certificates[0].ip_addresses if decision.certificates else ()
    probe_names: tuple[str, ...] = ()
    if facts.sni_probe and facts.sni_probe.chain:
        probe_names = presented_names(parts.chain(tuple(facts.sni_probe.chain)).summaries)
    # STARTTLS details name the protocol, which the decision does not see.
    starttls = {cause_of(f).id: detail for f, detail in starttls_findings(facts).items()}
    findings = []
    for cause_id, (detail, pattern) in decision.found.items():
        detail = starttls.get(cause_id, detail)
        cause = catalogue.get(cause_id)
        findings.append(
            _finding(
                cause,
                facts,
                names,
                detail,
                pattern,
                decision.identity,
                probe_names,
                leaf_ips,
                decision.anchor,
                decision.cause_ids,
            )
        )
    return Diagnosis(
        facts,
        decision.verdict,
        tuple(findings),
        decision.identity,
        decision.trust,
        decision.certificates,
        decision.anchor,
    )


def _finding(
    cause: Cause,
    facts: SessionFacts,
    names: tuple[str, ...],
    detail: str,
    pattern: str,
    identity: IdentityResult | None,
    probe_names: tuple[str, ...] = (),
    leaf_ips: tuple[str, ...] = (),
    anchor: TrustAnchor | None = None,
    beside: tuple[str, ...] = (),
) -> Finding:
    requested = printable(facts.requested_host or "(unknown host)")
    pattern = printable(pattern)
    candidates = (
        pattern
        if cause.id == cause_of(SessionRule.MAIL_DOMAIN_NOT_SERVER).id
        else ", ".join(n for n in names if not n.startswith("*") and not is_ip_address(n))
    )
    if facts.sni_probe is None:
        probe_evidence = (
            "certmatch did not ask the server again with SNI, so this is the likeliest cause, "
            "not a proven one."
        )
    elif facts.sni_probe.error:
        probe_evidence = f"Asking again with SNI failed ({facts.sni_probe.error})."
    else:
        probe_evidence = (
            f"Asked again with SNI {facts.sni_probe.sni}, the server presented a certificate "
            f"naming {_join(probe_names)}, which matches."
        )
    fields = {
        "address_sni": _address_sni(facts),
        "ip_view": _ip_view(facts.server_ip, leaf_ips),
        "requested": requested,
        "source": _HOST_SOURCE_TEXT.get(facts.requested_host_source, facts.requested_host_source),
        "server": facts.server_address or "the server",
        "names": _join(names),
        "sni": printable(facts.sni) if facts.sni is not None else "(none)",
        "detail": detail,
        "pattern": pattern or "(none)",
        "probe_names": _join(probe_names),
        "probe_evidence": probe_evidence,
        "candidates": candidates or "(none)",
        "candidates_hint": f" ({candidates})" if candidates else "",
        "refusal": _refusal_text(facts),
        "shown": _SHOWN.get(facts.presented or "", ""),
        "refusal_fix": _refusal_fix(facts, beside),
    }
    evidence = _evidence(facts, names, identity, anchor)
    return Finding(cause, _filled(cause.explanation, fields), _filled(cause.fix, fields), evidence)


def _filled(template: str, fields: Mapping[str, Any]) -> str:
    """``template`` filled in; a field that is empty takes the space before it along, so
    "... otherwise. {detail} {ip_view}" with no detail reads "... otherwise. IP ..."."""
    template = _SPACED_FIELD.sub(lambda m: "" if fields.get(m[1]) == "" else m[0], template)
    return template.format_map(fields).strip()


_SPACED_FIELD = re.compile(r" \{(\w+)\}")


_SHOWN = {
    "mirror": (
        "certmatch showed it a copy of the server's certificate: the same subject, names and "
        "dates, issued by certmatch's CA when the server's chain is trusted, by a throwaway CA "
        "when it is not, or self-signed like the original."
    ),
    "substitute": (
        "certmatch showed it mitmproxy's substitute certificate, which adds the client's SNI "
        "and the address it dialled to the server's names."
    ),
    "real": (
        "certmatch only relayed the handshake (observe mode): the client judged the server's "
        "own certificate."
    ),
}
# Protocols in which the server speaks first: after implicit TLS, a client that goes on
# answers the greeting with a command.
_SERVER_FIRST = frozenset({"imap", "pop3", "smtp", "submission", "nntp"})


def _refusal_text(facts: SessionFacts) -> str:
    """What the client did instead of going on, as the start of a sentence."""
    decision = facts.client_decision
    if decision == _ALERT:
        name = facts.client_alert
        code = facts.client_alert_code
        if name is None and code is not None:
            name = alerts.name_of(code)
        if name is None and code is None and _real(facts):
            return (
                "The client sent an encrypted TLS alert instead of its Finished (TLS 1.3 "
                "encrypts the alert, so which one is not known)"
            )
        if name is None:
            return "The client sent a TLS alert" + (f" ({code})" if code is not None else "")
        return f"The client sent the TLS alert {printable(name)}" + (
            f" ({code})" if code is not None else ""
        )
    if decision == _CLOSED_AFTER_HANDSHAKE:
        waited = _seconds(facts.client_waited)
        if facts.tls_kind == "starttls":
            what = "after the STARTTLS handshake without sending a command"
        elif facts.protocol in _SERVER_FIRST:
            what = "after the handshake and the server's greeting without sending a command"
        else:
            what = "after the handshake without sending any data"
        return f"The client closed the connection{waited} {what} (a close_notify alone is nothing)"
    if decision == _CLOSED_DURING_HANDSHAKE:
        return "The client closed the connection during the handshake, without an alert"
    if facts.client_error:
        return f"The client aborted the handshake ({facts.client_error})"
    return "The client did not go on"


def _refusal_fix(facts: SessionFacts, beside: tuple[str, ...]) -> str:
    """What to do about a refusal, given the causes that stand beside it."""
    if cause_of(SessionRule.PROXY_CA_NOT_TRUSTED).id in beside:
        return (
            "Make the client trust certmatch's CA (see proxy-ca-not-trusted) and retry; the "
            "server's certificate needs nothing."
        )
    own = [
        cid
        for cid in beside
        if catalogue.get(cid).severity != "warning"
        and cid != cause_of(SessionRule.CLIENT_REFUSED_CERTIFICATE).id
        and cid != cause_of(SessionRule.REQUESTED_HOST_ASSUMED).id
    ]
    if own and facts.presented == "substitute":
        return (
            f"Fix the certificate's own cause ({own[0]}), and run the proxy with --present "
            "mirror (the default) to see the client judge the server's own names and dates."
        )
    if own:
        return (
            f"Fix the certificate's own cause ({own[0]}): the client refused what the server "
            "really presents, and will accept it once that is fixed."
        )
    if cause_of(SessionRule.REQUESTED_HOST_ASSUMED).id in beside:
        if _real(facts):
            return (
                "Tell certmatch the server name from the client's settings (--host NAME) to "
                "learn whether the client refused the name."
            )
        return (
            "Tell certmatch the server name from the client's settings (--host NAME) to learn "
            "whether the client refused the name; if the name passes, make the client trust "
            "certmatch's CA."
        )
    if _real(facts):
        return (
            "Compare the client's trusted CAs with the ones certmatch judged with (the system "
            "store and --ca-file): give the client the CA that issued the server's chain, or "
            "remove a pin it keeps; then look in the client's own log."
        )
    return "Look in the client's own log for why it gave up."


def _seconds(waited: float | None) -> str:
    """`` 1.250 s`` for a wait the proxy measured, "" when it did not."""
    if not isinstance(waited, int | float) or not math.isfinite(waited):
        return ""
    return f" {waited:.3f} s"


def _address_sni(facts: SessionFacts) -> str:
    """What the client's SNI, or its absence, meant when it dialled an address."""
    if not facts.sni:
        return (
            "The client sent no SNI (an address cannot be sent as SNI), so the server could not "
            "tell which of its names was wanted and sent its default certificate."
        )
    if is_ip_address(facts.sni):
        return (
            f"The client sent the address {printable(facts.sni)} as SNI, which RFC 6066 §3 does "
            "not permit, so the server could not choose a certificate by name and sent its "
            "default one."
        )
    return f"The client sent the SNI {printable(facts.sni)}."


def _ip_view(server_ip: str | None, leaf_ips: tuple[str, ...]) -> str:
    """What a client configured with the server's address would see (the IP-ID rule)."""
    rule = "an IP address matches only an iPAddress entry for it in the subjectAltName"
    if not server_ip or not is_ip_address(server_ip):
        return f"A client configured with an IP address would need one: {rule}."
    shown = printable(server_ip)
    if any(ip_address(server_ip) == ip_address(ip) for ip in leaf_ips if is_ip_address(ip)):
        return (
            f"A client configured with the address {shown} would match it: {rule}, and this "
            f"certificate has one for {shown}."
        )
    return (
        f"A client configured with the address {shown} would refuse the certificate: {rule}, "
        f"and this certificate has none for {shown}."
    )


def _evidence(
    facts: SessionFacts,
    names: tuple[str, ...],
    identity: IdentityResult | None,
    anchor: TrustAnchor | None = None,
) -> tuple[str, ...]:
    lines = [
        (
            f"requested host: {facts.requested_host or '(unknown)'} "
            f"({_HOST_SOURCE_TEXT.get(facts.requested_host_source, facts.requested_host_source)})"
        ),
        f"client SNI: {facts.sni if facts.sni is not None else 'none sent'}",
        f"SNI sent upstream: {facts.upstream_sni if facts.upstream_sni is not None else 'none'}",
        f"certificate names: {_join(names)}",
    ]
    if identity:
        lines += [f"{c.kind} {c.presented}: {c.outcome} ({c.reason})" for c in identity.checks]
    if facts.server_error:
        lines.append(f"server side: {facts.server_error}")
    if facts.client_error:
        lines.append(f"client side: {facts.client_error}")
    if facts.presented is not None:
        lines.append(f"certificate shown to the client: {facts.presented}")
    if facts.chain_source in _CHAIN_SOURCE_TEXT:
        lines.append(f"chain from: {_CHAIN_SOURCE_TEXT[facts.chain_source]}")
    if facts.client_decision is not None:
        lines.append(f"client's decision: {_decision_text(facts)}")
    if anchor is not None:
        lines.append(f"trusted through: {anchor.describe()}")
    return tuple(lines)


_CHAIN_SOURCE_TEXT = {
    "proxy": "certmatch's own handshake with the server, as the proxy",
    "wire": "the server's Certificate message, read from the relayed handshake",
    "side-handshake": (
        "a side handshake certmatch made to the same server with the client's SNI, versions "
        "and ALPN (TLS 1.3 encrypts the relayed one; a server that chooses its certificate by "
        "the client's signature algorithms may have sent the client another)"
    ),
    "resumed": (
        "a side handshake (the relayed handshake resumed a session and carried no certificate)"
    ),
}


def _decision_text(facts: SessionFacts) -> str:
    decision = facts.client_decision or ""
    if decision == _ALERT:
        name = facts.client_alert or (
            alerts.name_of(facts.client_alert_code) if facts.client_alert_code is not None else None
        )
        code = f" ({facts.client_alert_code})" if facts.client_alert_code is not None else ""
        if name is None and not code and _real(facts):
            return "an encrypted alert instead of its Finished"
        return f"alert {name or 'of an unknown kind'}{code}"
    if decision == _CLOSED_AFTER_HANDSHAKE and facts.client_waited is not None:
        return f"{decision} after{_seconds(facts.client_waited)}"
    return decision


def _presented_names(summary: CertificateSummary) -> tuple[str, ...]:
    names = list(summary.dns_names) + list(summary.ip_addresses)
    if not summary.dns_names:
        names += [f"CN={cn}" for cn in summary.common_names]
    return tuple(printable(name) for name in names)


def _summary_json(s: CertificateSummary) -> dict[str, Any]:
    return {
        "index": s.index,
        "subject": s.subject,
        "issuer": s.issuer,
        "not_before": s.not_before.isoformat() if s.not_before else None,
        "not_after": s.not_after.isoformat() if s.not_after else None,
        "sha256": s.sha256,
        "dns_names": list(s.dns_names),
        "ip_addresses": list(s.ip_addresses),
        "common_names": list(s.common_names),
        "error": s.error,
    }


def _match_text(d: Diagnosis) -> str:
    if d.identity and d.identity.matched_by:
        return d.identity.matched_by.reason
    return ""


def _join(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(items) if items else "no names at all"


def _is_tls_error(error: str | None) -> bool:
    if not error:
        return False
    lowered = error.lower()
    return any(w in lowered for w in ("tls", "ssl", "handshake", "does not speak"))


def capture_time(facts: SessionFacts) -> datetime:
    """When the session was recorded (now, when its time cannot be read), timezone-aware."""
    try:
        started = datetime.fromisoformat(facts.started)
    except (TypeError, ValueError):
        return datetime.now(UTC)
    return started if started.tzinfo else started.replace(tzinfo=UTC)
