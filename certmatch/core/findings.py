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
trust or validity fails; ``error`` no certificate was obtained. A ``match``
still fails when a failing cause holds beside it: the client refused
certmatch's own CA, or the name judged against was assumed, not given by the
client (``requested-host-assumed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any, Literal, Protocol

from certmatch.core import causes as catalogue
from certmatch.core.causes import Cause, Rule, cause_of
from certmatch.core.certificates import CertificateSummary, ParsedChain
from certmatch.core.facts import SessionFacts, verdict_part
from certmatch.core.identity import (
    IdentityResult,
    PresentedIdentifiers,
    is_ip_address,
    registrable_domain,
)
from certmatch.core.session_rules import SessionRule
from certmatch.core.starttls_findings import starttls_findings
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

    @property
    def primary(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    @property
    def cause_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.findings)

    @property
    def failed(self) -> bool:
        """True when a client would refuse the session, a security problem was seen, or the
        verdict cannot be vouched for (a failing cause beside a match: the client refused
        certmatch's CA, or the name judged against was assumed)."""
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
            "action": f.action,
            "notes": list(f.notes),
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

    @property
    def cause_ids(self) -> tuple[str, ...]:
        return tuple(self.found)


def is_failure(verdict: str, cause_ids: Iterable[str]) -> bool:
    """A client would refuse the session, a security problem was seen, or a failing cause
    holds beside a match (any cause that is not a warning)."""
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
        verdict: Verdict, identity: IdentityResult | None = None, trust: TrustResult | None = None
    ) -> Decision:
        ordered = {cid: found[cid] for cid in sorted(found, key=_primary_rank)}
        return Decision(verdict, ordered, identity, trust, parsed.summaries)

    _proxy_refused(facts, found)
    _sni_ip_literal(facts, found)
    starttls = starttls_findings(facts)
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
    if identity.verdict != "match" and identity.reference_kind == "dns":
        _no_sni_default_certificate(facts, identity, parts, found)
        _mail_domain_not_server(identity, presented, found)
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
    return decided(verdict, identity, trust)


def _add(
    found: dict[str, tuple[str, str]], rule: Rule, detail: str = "", pattern: str = ""
) -> None:
    """Record the cause ``rule`` is bound to, unless an earlier rule already raised it."""
    found.setdefault(cause_of(rule).id, (detail, pattern))


# --- the session rules: one function each --------------------------------------------------


def _proxy_refused(facts: SessionFacts, found: dict[str, tuple[str, str]]) -> None:
    """The client aborted the handshake with certmatch because it does not trust its CA."""
    error = facts.client_error
    if error and any(
        w in error.lower()
        for w in ("unknown ca", "bad certificate", "certificate unknown", "does not trust")
    ):
        _add(found, SessionRule.PROXY_CA_NOT_TRUSTED, error)


def _sni_ip_literal(facts: SessionFacts, found: dict[str, tuple[str, str]]) -> None:
    """The client sent an IP address as SNI (RFC 6066 §3 permits host names only)."""
    if facts.sni and is_ip_address(facts.sni):
        _add(found, SessionRule.SNI_IP_LITERAL)


# Where a name comes from the client itself (its SNI, the target of its SOCKS5 or HTTP
# CONNECT request) or from the user (--host), as opposed to being assumed by certmatch.
_NAMED_BY_CLIENT_OR_USER = frozenset({"sni", "socks5", "http-connect", "option"})


def _requested_host_assumed(facts: SessionFacts, found: dict[str, tuple[str, str]]) -> None:
    """The certificate was judged against a name neither the client nor the user gave.

    Without SNI, the reverse-proxy target (or a destination the client did not name)
    stands in for the server name in the client's settings (RFC 9525 §6.1.1), which
    certmatch cannot see; a match against it says nothing about the client's own check.
    """
    if facts.sni or facts.requested_host_source in _NAMED_BY_CLIENT_OR_USER:
        return
    _add(found, SessionRule.REQUESTED_HOST_ASSUMED)


def _no_certificate(facts: SessionFacts, starttls: bool, found: dict[str, tuple[str, str]]) -> None:
    """Why no certificate arrived: the connection or the TLS handshake with the server failed.

    A STARTTLS session that never reached TLS is explained by its STARTTLS
    finding, unless the server itself failed.
    """
    if not facts.server_error and starttls:
        return
    detail = facts.server_error or "no certificate was received"
    if _is_tls_error(facts.server_error):
        _add(found, SessionRule.UPSTREAM_TLS_FAILED, detail)
    else:
        _add(found, SessionRule.UPSTREAM_UNREACHABLE, detail)


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
    identity: IdentityResult, presented: PresentedIdentifiers, found: dict[str, tuple[str, str]]
) -> None:
    """The client asked for the mail domain, and the certificate names hosts inside it."""
    reference = identity.normalized
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


_EXPLAINED_BY_THE_SESSION = (
    SessionRule.NO_SNI_DEFAULT_CERTIFICATE,
    SessionRule.MAIL_DOMAIN_NOT_SERVER,
)


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
            _finding(cause, facts, names, detail, pattern, decision.identity, probe_names, leaf_ips)
        )
    return Diagnosis(
        facts,
        decision.verdict,
        tuple(findings),
        decision.identity,
        decision.trust,
        decision.certificates,
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
    }
    evidence = _evidence(facts, names, identity)
    return Finding(
        cause,
        cause.explanation.format_map(fields).strip(),
        cause.fix.format_map(fields).strip(),
        evidence,
    )


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
    facts: SessionFacts, names: tuple[str, ...], identity: IdentityResult | None
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
    return tuple(lines)


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
