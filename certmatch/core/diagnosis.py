"""Derive a verdict and its causes from one session's recorded facts.

This is where facts become judgements. It runs when a recording is read
(and in the proxy, to decide whether to block), so a recording made with
an older certmatch is judged by today's rules.

Verdicts:
``match`` the names pass; ``legacy-match`` only a legacy rule (CN-ID)
accepts them; ``mismatch`` the names fail; ``untrusted`` names pass but
trust or validity fails; ``error`` no certificate was obtained.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from certmatch.core import causes as catalogue
from certmatch.core.certificates import CertificateSummary, ParsedChain, parse_chain
from certmatch.core.facts import SessionFacts
from certmatch.core.identity import (
    IdentifierCheck,
    IdentityResult,
    PresentedIdentifiers,
    check_identity,
    is_ip_address,
    registrable_domain,
)
from certmatch.core.starttls_findings import starttls_findings
from certmatch.core.text import printable
from certmatch.core.trust import TrustProblem, TrustResult, TrustStore, assess_trust

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

# Identity flags that are causes of their own, by cause id.
_IDENTITY_CAUSES = (
    "nul-in-name",
    "invalid-reference",
    "ip-not-in-certificate",
    "wildcard-too-deep",
    "wildcard-apex",
    "wildcard-partial",
    "wildcard-public-suffix",
    "cn-ignored-san-present",
    "cn-only-legacy",
    "idn-form",
    "trailing-dot",
    "name-not-in-certificate",
)
_TRUST_CAUSES = (
    "malformed-certificate",
    "missing-intermediate",
    "self-signed",
    "unknown-issuer",
    "wrong-order",
    "expired",
    "not-yet-valid",
)


@dataclass(frozen=True)
class Finding:
    """One cause that holds for a session, explained with the session's own names."""

    cause: catalogue.Cause
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
        """True when a client would refuse the session, or a security problem was seen."""
        if self.verdict != "match":
            return True
        return any(f.cause.severity != "warning" for f in self.findings)

    @property
    def presented_names(self) -> tuple[str, ...]:
        return _presented_names(self.certificates[0]) if self.certificates else ()

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
                    "rule": c.rule,
                    "reason": c.reason,
                }
                for c in (self.identity.checks if self.identity else ())
            ],
            "certificates": [_summary_json(s) for s in self.certificates],
            "action": f.action,
            "notes": list(f.notes),
        }


def diagnose(facts: SessionFacts, store: TrustStore) -> Diagnosis:
    """Judge one session. Never raises on odd facts: oddities become findings.

    Certificates are hostile input, and cryptography parses parts of them
    lazily (a name can fail when first read), so anything unexpected is
    reported as a malformed certificate rather than raised.
    """
    try:
        return _diagnose(facts, store)
    except Exception as exc:  # noqa: BLE001 - the reader and the proxy must get a verdict
        detail = f"certmatch could not analyse the chain ({type(exc).__name__}: {exc})"
        parsed = _parse_chain(tuple(facts.chain))
        return _build(
            facts,
            "error",
            {"malformed-certificate": (detail, "")},
            None,
            None,
            parsed.summaries,
            parsed,
        )


def _diagnose(facts: SessionFacts, store: TrustStore) -> Diagnosis:
    parsed = _parse_chain(tuple(facts.chain))
    summaries = parsed.summaries
    reference = facts.requested_host or ""
    found: dict[str, tuple[str, str]] = {}  # cause id -> (detail, pattern)

    identity: IdentityResult | None = None
    trust: TrustResult | None = None
    leaf = parsed.leaf

    if facts.client_error and _is_proxy_refusal(facts.client_error):
        found["proxy-ca-not-trusted"] = (facts.client_error, "")
    starttls = starttls_findings(facts)
    found.update({cause_id: (detail, "") for cause_id, detail in starttls.items()})

    if not facts.chain:
        # A STARTTLS session that never reached TLS is explained by its STARTTLS
        # finding, unless the server itself failed.
        if facts.server_error or not starttls:
            detail = facts.server_error or "no certificate was received"
            tls_failed = _is_tls_error(facts.server_error)
            found["upstream-tls-failed" if tls_failed else "upstream-unreachable"] = (detail, "")
        return _build(facts, "error", found, None, None, summaries, parsed)

    if leaf is None:
        found["malformed-certificate"] = ("; ".join(parsed.errors) or "the leaf is unreadable", "")
        return _build(facts, "error", found, None, None, summaries, parsed)

    try:
        presented = _presented(facts.chain[0], leaf)
    except ValueError as exc:
        found["malformed-certificate"] = (str(exc), "")
        return _build(facts, "error", found, None, None, summaries, parsed)

    identity = _check_identity(reference, presented)
    _identity_findings(identity, found)

    trust = _assess_trust(tuple(facts.chain), parsed, _capture_time(facts), store)
    for problem in _relevant_trust_problems(trust):
        if problem.id in catalogue.CAUSES and problem.id not in found:
            found[problem.id] = (problem.detail, "")

    if identity.verdict != "match":
        _context_findings(facts, identity, presented, store, found)

    if identity.verdict == "mismatch":
        verdict: Verdict = "mismatch"
    elif identity.verdict == "legacy-match":
        verdict = "legacy-match"
    elif not trust.trusted or any(
        p.id in _TRUST_CAUSES and catalogue.get(p.id).severity != "warning"
        for p in _relevant_trust_problems(trust)
    ):
        verdict = "untrusted"
    else:
        verdict = "match"
    return _build(facts, verdict, found, identity, trust, summaries, parsed)


def _relevant_trust_problems(trust: TrustResult) -> tuple[TrustProblem, ...]:
    """The trust problems that bear on the verdict.

    When the chain validated, an extra certificate the server sent but the
    path did not use does not matter to clients, even if it cannot be parsed
    (cryptography is stricter than OpenSSL about some names).
    """
    if not trust.trusted:
        return trust.problems
    return tuple(
        p for p in trust.problems if not (p.id == "malformed-certificate" and p.cert_index != 0)
    )


_CAUSES_EVEN_WHEN_MATCHING = frozenset({"nul-in-name", "trailing-dot", "idn-form"})

# Identity flags that are reported under a broader cause.
_FLAG_ALIASES = {
    "wildcard-not-leftmost": "wildcard-partial",
    "wildcard-idn": "idn-form",
    "ip-in-dns-or-cn": "ip-not-in-certificate",
}


# Sessions to one server repeat the same chain and names thousands of times:
# parse, match and validate each distinct combination once per process.
_parse_chain = lru_cache(maxsize=4096)(parse_chain)
_check_identity = lru_cache(maxsize=16384)(check_identity)
_TRUST_CACHES: dict[int, tuple[TrustStore, dict[tuple, TrustResult]]] = {}
_TRUST_CACHE_SIZE = 8192


@lru_cache(maxsize=4096)
def _presented(leaf_b64: str, leaf: Any) -> PresentedIdentifiers:
    """The leaf's identifiers, remembered by its DER (``leaf`` is its parsed form)."""
    return PresentedIdentifiers.from_certificate(leaf)


def _assess_trust(
    chain_key: tuple[str, ...], parsed: ParsedChain, at: datetime, store: TrustStore
) -> TrustResult:
    """assess_trust, remembered per store, chain and where ``at`` falls in each validity period.

    The periods are those of the presented certificates and of the store's
    roots that could have issued them. When ``at`` is inside all of them the
    result does not depend on the exact time; otherwise the time is part of
    the key (the problem text names it).
    """
    positions = tuple(_validity_position(s, at) for s in parsed.summaries)
    positions += tuple(
        _root_position(root, at)
        for cert in parsed.certificates
        if cert is not None
        for root in _candidate_roots(cert, store)
    )
    key = (chain_key, positions, at if any(positions) else None)
    entry = _TRUST_CACHES.get(id(store))
    if entry is None or entry[0] is not store:
        if len(_TRUST_CACHES) >= 8:
            _TRUST_CACHES.pop(next(iter(_TRUST_CACHES)))
        entry = (store, {})  # holding the store keeps its id from being reused
        _TRUST_CACHES[id(store)] = entry
    cache = entry[1]
    result = cache.get(key)
    if result is None:
        result = assess_trust(parsed, at, store)
        if len(cache) >= _TRUST_CACHE_SIZE:
            cache.clear()
        cache[key] = result
    return result


def _candidate_roots(cert: Any, store: TrustStore) -> list[Any]:
    try:
        return store.roots_named(cert.issuer)
    except ValueError:  # an issuer name cryptography cannot decode: no root can match it
        return []


def _root_position(root: Any, at: datetime) -> int:
    if at < root.not_valid_before_utc:
        return -1
    return 1 if at > root.not_valid_after_utc else 0


def _validity_position(summary: CertificateSummary, at: datetime) -> int:
    """-1 before the validity period, 0 within it (or unknown), 1 after it."""
    if summary.not_before and at < summary.not_before:
        return -1
    if summary.not_after and at > summary.not_after:
        return 1
    return 0


def _identity_findings(identity: IdentityResult, found: dict[str, tuple[str, str]]) -> None:
    flags = {_FLAG_ALIASES.get(flag, flag) for flag in identity.flags}
    if identity.verdict == "match":
        # A name that matched needs no explaining; only advisories and attacks remain.
        flags &= _CAUSES_EVEN_WHEN_MATCHING
    for cid in _IDENTITY_CAUSES:
        if cid not in flags:
            continue
        check = _check_for(identity, cid)
        found[cid] = (check.reason if check else "", check.presented if check else "")
    explained = any(
        catalogue.get(cid).severity != "warning" for cid in found if cid in _IDENTITY_CAUSES
    )
    if identity.verdict == "mismatch" and not explained:
        # Only advisories (e.g. an IDN form) were flagged: the failure itself is still
        # that no name on the certificate is the one asked for.
        found["name-not-in-certificate"] = ("", "")


# The identity-check rules whose reason explains each cause.
_RULES_FOR_CAUSE: dict[str, tuple[str, ...]] = {
    "nul-in-name": ("nul-in-name",),
    "invalid-reference": ("reference-invalid",),
    "wildcard-too-deep": ("wildcard-too-deep",),
    "wildcard-apex": ("wildcard-apex",),
    "wildcard-partial": ("wildcard-partial", "wildcard-not-leftmost"),
    "wildcard-public-suffix": ("wildcard-public-suffix",),
    "cn-ignored-san-present": ("cn-ignored-san-present",),
    "cn-only-legacy": ("cn-legacy",),
    "idn-form": ("wildcard-idn", "invalid-name", "exact"),
    "ip-not-in-certificate": ("ip-as-dns-name", "ip-in-cn", "ip-mismatch"),
}


def _check_for(identity: IdentityResult, cause_id: str) -> IdentifierCheck | None:
    """The identifier check whose reason explains ``cause_id``, if any."""
    rules = _RULES_FOR_CAUSE.get(cause_id, ())
    for rule in rules:
        for check in identity.checks:
            if check.rule == rule:
                return check
    return None


def _context_findings(
    facts: SessionFacts,
    identity: IdentityResult,
    presented: PresentedIdentifiers,
    store: TrustStore,
    found: dict[str, tuple[str, str]],
) -> None:
    """Causes that need more than the certificate: SNI, the probe, the mail domain."""
    if identity.reference_kind != "dns":
        return
    if facts.sni is None:
        probe = facts.sni_probe
        probe_matches = False
        if probe and probe.chain:
            probe_leaf = _parse_chain(tuple(probe.chain)).leaf
            if probe_leaf is not None:
                try:
                    probe_ids = PresentedIdentifiers.from_certificate(probe_leaf)
                except ValueError:
                    probe_ids = None
                if probe_ids is not None:
                    probe_matches = (
                        _check_identity(identity.reference, probe_ids).verdict == "match"
                    )
        if probe_matches or probe is None:
            found["no-sni-default-certificate"] = ("", "")
    candidates = _mail_domain_candidates(identity.normalized, presented)
    if candidates:
        found["mail-domain-not-server"] = ("", ", ".join(candidates))
    if "no-sni-default-certificate" in found or "mail-domain-not-server" in found:
        found.pop("name-not-in-certificate", None)


def _mail_domain_candidates(reference: str, presented: PresentedIdentifiers) -> list[str]:
    """Certificate names that are hosts inside the domain the client asked for."""
    if registrable_domain(reference) != reference:
        return []
    suffix = "." + reference
    return [
        name
        for name in presented.dns_names
        if name.lower().rstrip(".").endswith(suffix) and not name.startswith("*")
    ]


def _build(
    facts: SessionFacts,
    verdict: Verdict,
    found: dict[str, tuple[str, str]],
    identity: IdentityResult | None,
    trust: TrustResult | None,
    summaries: tuple[CertificateSummary, ...],
    parsed: ParsedChain,
) -> Diagnosis:
    names = _presented_names(summaries[0]) if summaries else ()
    ordered = sorted(found, key=_primary_rank)
    findings = tuple(
        _finding(catalogue.get(cid), facts, names, found[cid][0], found[cid][1], identity)
        for cid in ordered
    )
    return Diagnosis(facts, verdict, findings, identity, trust, summaries)


_SEVERITY_RANK = {"security": 0, "failure": 1, "warning": 2}


def _primary_rank(cause_id: str) -> tuple[int, int]:
    """Warnings come after every failure; otherwise the catalogue's order decides."""
    severity = catalogue.get(cause_id).severity
    return _SEVERITY_RANK[severity], catalogue.PRIMARY_ORDER.index(cause_id)


def _finding(
    cause: catalogue.Cause,
    facts: SessionFacts,
    names: tuple[str, ...],
    detail: str,
    pattern: str,
    identity: IdentityResult | None,
) -> Finding:
    requested = printable(facts.requested_host or "(unknown host)")
    pattern = printable(pattern)
    candidates = (
        pattern
        if cause.id == "mail-domain-not-server"
        else ", ".join(n for n in names if not n.startswith("*") and not is_ip_address(n))
    )
    probe_names: tuple[str, ...] = ()
    if facts.sni_probe and facts.sni_probe.chain:
        probe_summaries = _parse_chain(tuple(facts.sni_probe.chain)).summaries
        if probe_summaries:
            probe_names = _presented_names(probe_summaries[0])
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
        "requested": requested,
        "source": _HOST_SOURCE_TEXT.get(facts.requested_host_source, facts.requested_host_source),
        "server": facts.server_address or "the server",
        "names": _join(names),
        "sni": facts.sni if facts.sni is not None else "(none)",
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
    """The leaf's names for display, control characters escaped."""
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


def _is_proxy_refusal(error: str) -> bool:
    lowered = error.lower()
    return any(
        w in lowered
        for w in ("unknown ca", "bad certificate", "certificate unknown", "does not trust")
    )


def _capture_time(facts: SessionFacts) -> datetime:
    try:
        started = datetime.fromisoformat(facts.started)
    except (TypeError, ValueError):
        return datetime.now(UTC)
    return started if started.tzinfo else started.replace(tzinfo=UTC)
