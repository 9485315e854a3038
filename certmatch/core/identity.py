"""Server identity check for mail TLS that says why a name matches or not.

The rules are RFC 6125 §6 and its successor RFC 9525 §6, as RFC 7817 §3
applies them to IMAP, POP3, submission and ManageSieve (it replaces
RFC 2595 §2.4): DNS-IDs and IP-IDs from the subjectAltName decide; a
Common Name (CN-ID) counts only as a legacy fallback when the certificate
has no dNSName at all. ``check_identity`` judges every presented
identifier on its own, so a caller can show all of them with the rule and
the sentence that explains each outcome.

Every rule is an :class:`IdentityRule`; the catalogue
(:mod:`certmatch.core.causes`) binds each to the one cause it bears on, and
each member names the function that decides it.

This module is pure: no network, no clock, no mitmproxy.
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Literal

import idna
from cryptography import x509
from cryptography.x509.oid import NameOID

from certmatch.core.public_suffixes import PublicSuffixes

IdentifierKind = Literal["dns", "ip", "cn"]
Outcome = Literal["match", "no-match", "rejected", "not-considered"]
ReferenceKind = Literal["dns", "ip", "invalid"]
IdentityVerdict = Literal["match", "legacy-match", "mismatch"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_NAME = 253
_MAX_LABEL = 63
# Letters, digits, hyphen; "_" is tolerated because internal host names use it.
_LABEL = re.compile(r"[a-z0-9_-]+\Z")
_UNDERSCORE_NOTE = (
    " The name holds an underscore, outside the preferred name syntax of RFC 5280 §4.2.1.6 "
    "(RFC 1034 §3.5): OpenSSL and GnuTLS accept it, a strict client refuses it."
)
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class IdentityRule(StrEnum):
    """A rule of the identity check; its value is what ``IdentifierCheck.rule`` shows.

    As in service_identity, where each ID type names its mismatch type, each
    rule is bound to one cause in the catalogue (``Cause.raised_by``): the
    cause a client reports when this rule is why the name is not accepted,
    or, for a rule that accepts a name (``exact``, ``wildcard``, ``ip-match``),
    when nothing it accepts is on the certificate. Each member says which
    section it rests on and, last, the function that decides it.
    """

    # -- comparing a DNS-ID (or a legacy CN-ID) with a host name ----------------------------
    EXACT = "exact"
    """The name equals the reference label by label, case-insensitively, in A-label form
    (RFC 6125 §6.4.1, RFC 9525 §6.3). Decided in ``_exact_match``."""
    WILDCARD = "wildcard"
    """A whole-label ``*`` stands for the reference's single left-most label
    (RFC 6125 §6.4.3, RFC 9525 §6.3, RFC 7817 §3). Decided in ``_wildcard_against``."""
    DIFFERENT_NAME = "different-name"
    """The name is another name than the reference (RFC 6125 §6.4.1, RFC 9525 §6.3).
    Decided in ``_judge_name``, ``_wildcard_against``, ``_ip_written_as_name``."""
    REFERENCE_IS_DNS = "reference-is-dns"
    """An iPAddress never matches a host name (RFC 9525 §6.2, §6.3). Decided in ``_judge_ip``."""
    INVALID_NAME = "invalid-name"
    """A presented name that is not a valid DNS name or IP address as written is ignored
    (RFC 5280 §4.2.1.6, RFC 9525 §6.3). Decided in ``_judge_name``, ``_non_ascii_dns_name``,
    ``_judge_ip``."""
    NUL_IN_NAME = "nul-in-name"
    """A name with an embedded NUL or control character never matches (CVE-2009-2408 class).
    Decided in ``_control_character``."""
    WILDCARD_NOT_LEFTMOST = "wildcard-not-leftmost"
    """``*`` outside the left-most label is ruled out (RFC 6125 §6.4.3, RFC 9525 §6.3).
    Decided in ``_wildcard_defect``."""
    WILDCARD_PARTIAL = "wildcard-partial"
    """``*`` only as the complete left-most label (RFC 7817 §3, RFC 9525 §6.3).
    Decided in ``_wildcard_defect``."""
    WILDCARD_PUBLIC_SUFFIX = "wildcard-public-suffix"
    """No wildcard directly on a public suffix (CA/Browser Forum Baseline Requirements
    §3.2.2.6; RFC 9525 §7.1). Decided in ``_wildcard_defect``."""
    WILDCARD_APEX = "wildcard-apex"
    """``*.example.com`` does not cover ``example.com`` (RFC 6125 §6.4.3, RFC 9525 §6.3).
    Decided in ``_wildcard_against``."""
    WILDCARD_TOO_DEEP = "wildcard-too-deep"
    """``*`` stands for exactly one label (RFC 6125 §6.4.3, RFC 9525 §6.3).
    Decided in ``_wildcard_against``."""
    WILDCARD_IDN = "wildcard-idn"
    """``*`` is not matched against an internationalized label (RFC 6125 §6.4.3).
    Decided in ``_wildcard_against``."""
    CN_IGNORED_SAN_PRESENT = "cn-ignored-san-present"
    """With any dNSName present, the CN is not consulted (RFC 6125 §6.4.4, RFC 9525 §2).
    Decided in ``_judge_cn``."""
    CN_ONLY_LEGACY = "cn-only-legacy"
    """Without any dNSName, a mail client may accept the CN as a legacy CN-ID
    (RFC 6125 §6.4.4, RFC 7817 §3; RFC 9525 §2 forbids it). Decided in ``_judge_cn``."""
    # -- comparing an IP-ID with an IP address ---------------------------------------------
    IP_MATCH = "ip-match"
    """An iPAddress with the reference's octets (RFC 9525 §6.4, RFC 5280 §4.2.1.6).
    Decided in ``_judge_ip``."""
    IP_MISMATCH = "ip-mismatch"
    """An IP reference needs an iPAddress with the same octets (RFC 9525 §6.4).
    Decided in ``_judge_ip`` and, for the certificate as a whole, ``check_identity``."""
    REFERENCE_IS_IP = "reference-is-ip"
    """A DNS name never matches an IP reference (RFC 9525 §6.2, §6.4). Decided in ``_judge_name``."""
    IP_AS_DNS_NAME = "ip-as-dns-name"
    """An IP address written as a dNSName does not count (RFC 9525 §6.2, §6.4).
    Decided in ``_ip_written_as_name``."""
    IP_IN_CN = "ip-in-cn"
    """An IP address written in the CN does not count (RFC 9525 §6.2, §6.4).
    Decided in ``_ip_written_as_name``."""
    # -- the reference itself ----------------------------------------------------------------
    INVALID_REFERENCE = "invalid-reference"
    """The client's name must be a host name or an IP address (RFC 9525 §6.1.1).
    Decided in ``_against_invalid_reference`` and, for the reference, ``check_identity``."""
    TRAILING_DOT = "trailing-dot"
    """A reference written with a trailing dot; matching ignores it (RFC 6125 §6.4.1).
    Decided in ``_parse_reference``."""
    UNDERSCORE_IN_NAME = "underscore-in-name"
    """The name that matched holds an underscore, outside the preferred name syntax a dNSName
    must follow (RFC 5280 §4.2.1.6, RFC 1034 §3.5); OpenSSL and GnuTLS match it anyway, a strict
    client does not. Decided in ``_exact_match``, ``_wildcard_against``."""
    IDN_FORM = "idn-form"
    """Internationalized names are compared in A-label form (RFC 6125 §6.4.2, RFC 9525 §6.3).
    Decided in ``_parse_reference``, ``_exact_match``, ``_non_ascii_dns_name``."""


@dataclass(frozen=True)
class PresentedIdentifiers:
    """The identifiers a server certificate presents, exactly as written in it."""

    dns_names: tuple[str, ...]  # SAN dNSName values
    ip_addresses: tuple[str, ...]  # SAN iPAddress values, canonical text
    common_names: tuple[str, ...]  # subject CN values
    has_san: bool  # a subjectAltName extension is present at all

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PresentedIdentifiers:
        """Read the identifiers of ``cert``.

        Raises ValueError, with a message that says what is wrong, when the
        extensions or the subject cannot be decoded.
        """
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
        except (ValueError, x509.DuplicateExtension) as exc:
            raise ValueError(
                f"the certificate's extensions cannot be decoded ({exc}); its subjectAltName "
                "cannot be read, so no name can be checked against it: the server presents a "
                "malformed certificate and has to replace it"
            ) from exc
        try:
            cn_values = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        except ValueError as exc:
            raise ValueError(
                f"the certificate's subject cannot be decoded ({exc}); the server presents a "
                "malformed certificate and has to replace it"
            ) from exc
        common_names = tuple(
            v if isinstance(v, str) else v.decode("utf-8", "backslashreplace") for v in cn_values
        )
        if san is None:
            return cls((), (), common_names, has_san=False)
        return cls(
            dns_names=tuple(san.get_values_for_type(x509.DNSName)),
            ip_addresses=tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
            common_names=common_names,
            has_san=True,
        )


@dataclass(frozen=True)
class IdentifierCheck:
    """How one presented identifier fared against the reference, and why."""

    kind: IdentifierKind
    presented: str
    outcome: Outcome
    rule: IdentityRule  # the rule that decided the outcome
    reason: str  # one sentence with the names filled in and the section it rests on


@dataclass(frozen=True)
class IdentityFinding:
    """A rule that holds for the session, and the identifier that shows it."""

    rule: IdentityRule
    check: IdentifierCheck | None  # None when the reference itself shows it
    # This identifier is the specific reason the name failed: it would have matched but
    # for this rule (or the reference can match nothing).
    explains_mismatch: bool = False


@dataclass(frozen=True)
class IdentityResult:
    """The verdict for one reference name, with every presented identifier judged."""

    reference: str
    normalized: str
    reference_kind: ReferenceKind
    verdict: IdentityVerdict
    matched_by: IdentifierCheck | None
    checks: tuple[IdentifierCheck, ...]
    findings: tuple[IdentityFinding, ...]  # identifiers' findings in order, then the reference's

    @property
    def flags(self) -> frozenset[IdentityRule]:
        """The rules that hold for the session."""
        return frozenset(f.rule for f in self.findings)


def check_identity(reference: str | None, presented: PresentedIdentifiers) -> IdentityResult:
    """Judge ``presented`` against the name or IP address the client asked for.

    Never raises: an unusable reference gives ``reference_kind="invalid"``
    and a mismatch.
    """
    ref = _parse_reference(reference)
    judged: list[tuple[IdentifierCheck, _Judgement]] = []
    for name in presented.dns_names:
        judged.append(_as_check("dns", name, _judge_name(name, ref, "dns")))
    for ip in presented.ip_addresses:
        judged.append(_as_check("ip", ip, _judge_ip(ip, ref)))
    has_dns_id = bool(presented.dns_names)
    for cn in presented.common_names:
        judged.append(_as_check("cn", cn, _judge_cn(cn, ref, has_dns_id, presented.has_san)))

    checks = tuple(check for check, _ in judged)
    findings = [
        IdentityFinding(rule, check, judgement.explains_mismatch)
        for check, judgement in judged
        for rule in sorted(judgement.flags)
    ]

    matched_by = next((c for c in checks if c.kind != "cn" and c.outcome == "match"), None)
    verdict: IdentityVerdict = "match"
    if matched_by is None:
        matched_by = next((c for c in checks if c.kind == "cn" and c.outcome == "match"), None)
        verdict = "legacy-match" if matched_by else "mismatch"

    # The reference's own findings: its form (shown by the exact match that converted it,
    # if any), and a reference nothing can match.
    exact = matched_by if matched_by and matched_by.rule == IdentityRule.EXACT else None
    findings += [IdentityFinding(rule, exact) for rule in sorted(ref.flags)]
    if ref.kind == "ip" and not any(c.kind == "ip" and c.outcome == "match" for c in checks):
        findings.append(IdentityFinding(IdentityRule.IP_MISMATCH, None, explains_mismatch=True))
    if ref.kind == "invalid":
        first = next((c for c in checks if c.rule == IdentityRule.INVALID_REFERENCE), None)
        findings.append(IdentityFinding(IdentityRule.INVALID_REFERENCE, first, True))
    return IdentityResult(
        reference=ref.given,
        normalized=ref.normalized,
        reference_kind=ref.kind,
        verdict=verdict,
        matched_by=matched_by,
        checks=checks,
        findings=tuple(findings),
    )


# --- the reference ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    given: str
    kind: ReferenceKind
    normalized: str
    shown: str  # for sentences: the normalized form, or the given text when invalid
    ip: IPAddress | None = None
    problem: str = ""  # why an invalid reference is unusable
    u_label: bool = False  # given with non-ASCII labels
    flags: frozenset[IdentityRule] = frozenset()

    @property
    def labels(self) -> list[str]:
        return self.normalized.split(".")


def _parse_reference(reference: object) -> _Reference:
    if reference is None:
        return _invalid_reference("", "no name was given")
    given = reference if isinstance(reference, str) else str(reference)
    if not given.strip():
        return _invalid_reference(given, "it is empty")
    bad = _first_control(given)
    if bad is not None:
        return _invalid_reference(
            given, f"it contains the control character {_escape(given[bad])} at position {bad}"
        )
    text = given
    flags: set[IdentityRule] = set()
    if text.startswith("[") and text.endswith("]") and _parse_ip(text[1:-1]) is not None:
        text = text[1:-1]  # an IPv6 literal as written in a URL
    if text.endswith("."):
        text = text[:-1]
        flags.add(IdentityRule.TRAILING_DOT)
    ip = _parse_ip(text)
    if ip is not None:
        return _Reference(given, "ip", str(ip), str(ip), ip=ip, flags=frozenset(flags))
    if "*" in text:
        return _invalid_reference(given, "a reference name cannot contain a wildcard")
    ascii_name = _to_ascii(text)
    if ascii_name is None:
        return _invalid_reference(given, "it cannot be converted to A-labels (IDNA2008, UTS #46)")
    if ascii_name.endswith(".") and not text.endswith("."):  # an ideographic full stop, say
        ascii_name = ascii_name[:-1]
        flags.add(IdentityRule.TRAILING_DOT)
    problem = _name_problem(ascii_name)
    if problem:
        if ":" in text and _name_problem(text.rsplit(":", 1)[0].lower()) is None:
            problem += "; it looks like host:port, give the host alone"
        return _invalid_reference(given, problem)
    u_label = not text.isascii()
    if u_label:
        flags.add(IdentityRule.IDN_FORM)
    return _Reference(given, "dns", ascii_name, ascii_name, u_label=u_label, flags=frozenset(flags))


def _invalid_reference(given: str, problem: str) -> _Reference:
    return _Reference(given, "invalid", given.lower(), _escape(given) or '""', problem=problem)


# --- judging one presented identifier -----------------------------------------------------


@dataclass(frozen=True)
class _Judgement:
    outcome: Outcome
    rule: IdentityRule
    reason: str
    flags: frozenset[IdentityRule] = frozenset()  # the rules this identifier shows to hold
    # True when this identifier is the specific reason a mismatch happened: it would
    # have matched but for the rule that refused it.
    explains_mismatch: bool = False


def _as_check(
    kind: IdentifierKind, presented: str, j: _Judgement
) -> tuple[IdentifierCheck, _Judgement]:
    return IdentifierCheck(kind, presented, j.outcome, j.rule, j.reason), j


def _judge_name(presented: str, ref: _Reference, kind: IdentifierKind) -> _Judgement:
    """Judge a dNSName (kind "dns") or a CN read as a host name (kind "cn")."""
    what = "dNSName" if kind == "dns" else "CN"
    p = _escape(presented) or '""'
    bad = _first_control(presented)
    if bad is not None:
        return _control_character(presented, bad, ref, kind)
    if kind == "dns" and not presented.isascii():
        return _non_ascii_dns_name(presented, ref)

    name = presented.removesuffix(".")
    literal_ip = _parse_ip(name)
    if literal_ip is not None:
        return _ip_written_as_name(p, literal_ip, ref, kind)
    ascii_name = _to_ascii(name, remap=False)
    if ascii_name is None:
        return _Judgement(
            "rejected",
            IdentityRule.INVALID_NAME,
            f"{what} {p} is not a valid IDNA2008 name as written, so it is ignored "
            "(RFC 6125 §6.4.2, RFC 9525 §6.3).",
        )
    problem = _name_problem(ascii_name, allow_wildcard=True)
    if problem:
        return _Judgement(
            "rejected",
            IdentityRule.INVALID_NAME,
            f"{what} {p} is not a valid DNS name ({problem}), so it is ignored "
            "(RFC 5280 §4.2.1.6, RFC 1034 §3.5).",
        )
    labels = ascii_name.split(".")
    if "*" in ascii_name:
        defect = _wildcard_defect(p, labels, ref, what)
        if defect is not None:
            return defect
    if ref.kind == "invalid":
        return _against_invalid_reference(what, p, ref)
    if ref.kind == "ip":
        return _Judgement(
            "no-match",
            IdentityRule.REFERENCE_IS_IP,
            f"{what} {p} is a DNS name, and the reference {ref.shown} is an IP address, which "
            "only an iPAddress subjectAltName can match (RFC 9525 §6.2, §6.4).",
        )
    if labels[0] == "*":
        return _wildcard_against(p, labels, ref, what)
    if ascii_name == ref.normalized:
        return _exact_match(what, p, presented, ascii_name, ref)
    return _Judgement(
        "no-match",
        IdentityRule.DIFFERENT_NAME,
        f"{what} {p} is a different name from {ref.shown} (RFC 6125 §6.4.1, RFC 9525 §6.3).",
    )


def _exact_match(what: str, p: str, presented: str, ascii_name: str, ref: _Reference) -> _Judgement:
    flags: set[IdentityRule] = set()
    if ref.u_label:
        sentence = (
            f"{what} {p} equals the reference {_escape(ref.given)} once that is converted to its "
            f"A-label form {ref.normalized} (RFC 6125 §6.4.2, RFC 9525 §6.3)."
        )
    elif ascii_name != presented.lower().rstrip("."):
        flags.add(IdentityRule.IDN_FORM)
        sentence = (
            f"{what} {p} equals {ref.shown} once it is converted to its A-label form "
            f"{ascii_name} (RFC 6125 §6.4.2, RFC 9525 §6.3)."
        )
    else:
        sentence = (
            f"{what} {p} equals {ref.shown} compared case-insensitively label by label "
            "(RFC 6125 §6.4.1, RFC 9525 §6.3)."
        )
    if "_" in ascii_name:
        flags.add(IdentityRule.UNDERSCORE_IN_NAME)
        sentence += _UNDERSCORE_NOTE
    return _Judgement("match", IdentityRule.EXACT, sentence, frozenset(flags))


def _judge_cn(cn: str, ref: _Reference, has_dns_id: bool, has_san: bool) -> _Judgement:
    """A CN counts only without any dNSName, and then only as a legacy match."""
    j = _judge_name(cn, ref, "cn")
    if j.rule == IdentityRule.NUL_IN_NAME:
        return j
    p = _escape(cn) or '""'
    if has_dns_id:
        if j.outcome == "match":
            return _Judgement(
                "not-considered",
                IdentityRule.CN_IGNORED_SAN_PRESENT,
                f"CN {p} would match {ref.shown}, but the certificate has dNSName entries, so "
                "its CN is not consulted (RFC 6125 §6.4.4, RFC 9525 §2); the name belongs in "
                "the subjectAltName.",
                frozenset({IdentityRule.CN_IGNORED_SAN_PRESENT}),
                explains_mismatch=True,
            )
        kept = j.flags & {IdentityRule.IP_IN_CN}
        return _Judgement(
            "not-considered",
            j.rule,
            f"CN {p} is not consulted because the certificate has dNSName entries "
            f"(RFC 6125 §6.4.4, RFC 9525 §2), and even under the legacy rule it would not "
            f"match {ref.shown} ({j.rule}).",
            frozenset(kept),
        )
    if j.outcome != "match":
        return j
    where = "has a subjectAltName without any dNSName" if has_san else "has no subjectAltName"
    how = "covers" if cn.startswith("*") else "matches"
    return replace(
        j,
        rule=IdentityRule.CN_ONLY_LEGACY,
        reason=(
            f"CN {p} {how} {ref.shown} and the certificate {where}, so a mail client may "
            "accept this legacy CN-ID (RFC 6125 §6.4.4, RFC 7817 §3), but RFC 9525 §2 forbids "
            "identifying a service by its CN and browsers and mitmproxy reject it."
        ),
        flags=j.flags | {IdentityRule.CN_ONLY_LEGACY},
    )


def _judge_ip(presented: str, ref: _Reference) -> _Judgement:
    p = _escape(presented) or '""'
    ip = _parse_ip(presented)
    if ip is None:
        kind = "a network, not a single address" if "/" in presented else "not an IP address"
        return _Judgement(
            "rejected",
            IdentityRule.INVALID_NAME,
            f"iPAddress {p} is {kind}, so it is ignored (RFC 5280 §4.2.1.6, RFC 9525 §6.2).",
        )
    if ref.kind == "invalid":
        return _against_invalid_reference("iPAddress", p, ref)
    if ref.kind == "dns":
        return _Judgement(
            "no-match",
            IdentityRule.REFERENCE_IS_DNS,
            f"iPAddress {p} cannot match the host name {ref.shown}: a host name is compared "
            "only with dNSName entries (RFC 9525 §6.2, §6.3).",
        )
    assert ref.ip is not None
    if ip.packed == ref.ip.packed:
        written = "" if ref.given == ref.normalized else f" (written {_escape(ref.given)})"
        return _Judgement(
            "match",
            IdentityRule.IP_MATCH,
            f"iPAddress {p} has the same octets as the reference {ref.shown}{written} "
            "(RFC 9525 §6.4, RFC 5280 §4.2.1.6).",
        )
    mapped = _ipv4_mapped_pair(ip, ref.ip)
    if mapped:
        reason = (
            f"iPAddress {p} and the reference {ref.shown} name the same host only through "
            "IPv4-mapped IPv6, and an IP-ID is compared octet for octet, so they differ "
            "(RFC 9525 §6.4)."
        )
    else:
        reason = f"iPAddress {p} is a different address from {ref.shown} (RFC 9525 §6.4)."
    return _Judgement("no-match", IdentityRule.IP_MISMATCH, reason)


def _against_invalid_reference(what: str, p: str, ref: _Reference) -> _Judgement:
    return _Judgement(
        "no-match",
        IdentityRule.INVALID_REFERENCE,
        f"{what} {p} cannot be compared because the reference {ref.shown} is not a usable "
        f"host name or IP address: {ref.problem} (RFC 9525 §6.1.1).",
    )


def _ip_written_as_name(
    p: str, literal: IPAddress, ref: _Reference, kind: IdentifierKind
) -> _Judgement:
    what = "dNSName" if kind == "dns" else "CN"
    if ref.kind == "invalid":
        return _against_invalid_reference(what, p, ref)
    if ref.kind == "dns":
        return _Judgement(
            "no-match",
            IdentityRule.DIFFERENT_NAME,
            f"{what} {p} is an IP address, not the host name {ref.shown} "
            "(RFC 6125 §6.4.1, RFC 9525 §6.3).",
        )
    rule = IdentityRule.IP_AS_DNS_NAME if kind == "dns" else IdentityRule.IP_IN_CN
    same = ref.ip is not None and literal.packed == ref.ip.packed
    if same:
        tail = f", so it does not count for {ref.shown} although it names the same address"
    else:
        tail = f", and it names a different address from {ref.shown} anyway"
    return _Judgement(
        "no-match",
        rule,
        f"{what} {p} is an IP address written as text; an IP reference matches only an "
        f"iPAddress subjectAltName (RFC 9525 §6.2, §6.4){tail}.",
        frozenset({rule}) if same else frozenset(),
        explains_mismatch=same,
    )


def _control_character(
    presented: str, at: int, ref: _Reference, kind: IdentifierKind
) -> _Judgement:
    what = "dNSName" if kind == "dns" else "CN"
    char = "NUL byte" if presented[at] == "\x00" else f"control character {_escape(presented[at])}"
    prefix = presented[:at]
    fooled = (
        ref.kind == "dns" and bool(prefix) and _judge_name(prefix, ref, kind).outcome == "match"
    )
    tail = (
        f"; a vulnerable client that stops reading at the {char} would have accepted it "
        f"for {ref.shown}"
        if fooled
        else ""
    )
    return _Judgement(
        "rejected",
        IdentityRule.NUL_IN_NAME,
        f"{what} {_escape(presented)} contains a {char} at position {at}; a presented name with "
        f"an embedded NUL or control character is treated as an attack (CVE-2009-2408 class) "
        f"and never matches{tail}.",
        frozenset({IdentityRule.NUL_IN_NAME}),
        explains_mismatch=fooled,
    )


def _non_ascii_dns_name(presented: str, ref: _Reference) -> _Judgement:
    p = _escape(presented)
    name = presented.removesuffix(".")
    a_label = _to_ascii(name)
    form = f" ({a_label} here)" if a_label else ""
    would = (
        a_label is not None
        and ref.kind == "dns"
        and _judge_name(a_label, ref, "dns").outcome == "match"
    )
    tail = f"; in A-label form it would have matched {ref.shown}" if would else ""
    return _Judgement(
        "rejected",
        IdentityRule.INVALID_NAME,
        f"dNSName {p} contains non-ASCII characters, but a dNSName is an IA5String that must "
        f"carry A-labels{form} (RFC 5280 §4.2.1.6, RFC 9525 §6.3){tail}.",
        frozenset({IdentityRule.IDN_FORM}),
        explains_mismatch=would,
    )


# --- wildcards ----------------------------------------------------------------------------


def _wildcard_defect(p: str, labels: list[str], ref: _Reference, what: str) -> _Judgement | None:
    """Refuse a wildcard pattern that no client following RFC 7817/9525 may use."""
    ref_labels = ref.labels if ref.kind == "dns" else None
    if any("*" in label for label in labels[1:]):
        lax = ref_labels is not None and _glob_labels(labels, ref_labels)
        tail = f", although matching label by label would have covered {ref.shown}" if lax else ""
        return _Judgement(
            "rejected",
            IdentityRule.WILDCARD_NOT_LEFTMOST,
            f"{what} {p} has a wildcard in a label other than the left-most one, which "
            f"RFC 6125 §6.4.3 and RFC 9525 §6.3 rule out, so it is ignored{tail}.",
            frozenset({IdentityRule.WILDCARD_NOT_LEFTMOST}) if lax else frozenset(),
            explains_mismatch=lax,
        )
    if labels[0] != "*":
        lax = ref_labels is not None and _glob_labels(labels, ref_labels)
        tail = ""
        if lax and ref_labels is not None and _openssl_partial_match(labels, ref_labels):
            tail = (
                f"; OpenSSL's default (lax) rules would still have accepted it for {ref.shown}, "
                "so some clients connect and others refuse"
            )
        elif lax:
            tail = (
                f"; RFC 6125 §6.4.3 would have let a client match it to {ref.shown}, though "
                "OpenSSL refuses this form too"
            )
        return _Judgement(
            "rejected",
            IdentityRule.WILDCARD_PARTIAL,
            f"{what} {p} is a partial-label wildcard, but RFC 7817 §3 and RFC 9525 §6.3 allow "
            f"* only as the complete left-most label, so it is ignored{tail}.",
            frozenset({IdentityRule.WILDCARD_PARTIAL}) if lax else frozenset(),
            explains_mismatch=lax,
        )
    remainder = labels[1:]
    if _is_public_suffix(remainder):
        rest = ".".join(remainder)
        scope = (
            f"the public suffix {rest}"
            if len(remainder) > 1
            else f"the single label {rest}"
            if remainder
            else "the DNS root"
        )
        lax = ref_labels is not None and _glob_labels(labels, ref_labels)
        tail = f"; without this check it would have matched {ref.shown}" if lax else ""
        # A bare "*" was meant to cover every name; it is why a DNS reference fails, whatever
        # the reference (issue 13: it was reported only through the CN it hides).
        bare = not remainder and ref.kind == "dns"
        if bare and not lax:
            tail = f"; it matches no name, {ref.shown} included"
        return _Judgement(
            "rejected",
            IdentityRule.WILDCARD_PUBLIC_SUFFIX,
            f"{what} {p} would cover every name directly under {scope}, so it is refused "
            "(CA/Browser Forum Baseline Requirements §3.2.2.6; RFC 9525 §7.1 leaves this check "
            f"to clients){tail}.",
            frozenset({IdentityRule.WILDCARD_PUBLIC_SUFFIX}) if lax or bare else frozenset(),
            explains_mismatch=lax or bare,
        )
    return None


def _wildcard_against(p: str, labels: list[str], ref: _Reference, what: str) -> _Judgement:
    """A well-formed ``*.rest`` pattern against a DNS reference."""
    remainder = labels[1:]
    rest = ".".join(remainder)
    ref_labels = ref.labels
    cite = "(RFC 6125 §6.4.3, RFC 9525 §6.3)"
    if ref_labels == remainder:
        return _Judgement(
            "no-match",
            IdentityRule.WILDCARD_APEX,
            f"{what} {p} does not cover {ref.shown} itself: the wildcard must stand for exactly "
            f"one label and the bare domain has none there {cite}.",
            frozenset({IdentityRule.WILDCARD_APEX}),
            explains_mismatch=True,
        )
    below = len(ref_labels) - len(remainder)
    if below < 1 or ref_labels[-len(remainder) :] != remainder:
        return _Judgement(
            "no-match",
            IdentityRule.DIFFERENT_NAME,
            f"{what} {p} covers only names one label below {rest}, and {ref.shown} is not "
            f"below {rest} {cite}.",
        )
    if below > 1:
        return _Judgement(
            "no-match",
            IdentityRule.WILDCARD_TOO_DEEP,
            f"{what} {p} covers exactly one label; {ref.shown} has {_count(below)} below {rest} {cite}.",
            frozenset({IdentityRule.WILDCARD_TOO_DEEP}),
            explains_mismatch=True,
        )
    head = ref_labels[0]
    if head.startswith("xn--"):
        return _Judgement(
            "rejected",
            IdentityRule.WILDCARD_IDN,
            f"{what} {p} would cover {ref.shown}, but the wildcard would stand for the IDN "
            f"A-label {head}, and a wildcard is not matched against internationalized labels "
            "(RFC 6125 §6.4.3; service_identity refuses it, OpenSSL accepts it).",
            frozenset({IdentityRule.WILDCARD_IDN}),
            explains_mismatch=True,
        )
    underscore = "_" in ref.normalized
    return _Judgement(
        "match",
        IdentityRule.WILDCARD,
        f"{what} {p} covers {ref.shown}: the wildcard stands for the single left-most label "
        f"{head} (RFC 6125 §6.4.3, RFC 9525 §6.3, RFC 7817 §3)."
        + (_UNDERSCORE_NOTE if underscore else ""),
        frozenset({IdentityRule.UNDERSCORE_IN_NAME}) if underscore else frozenset(),
    )


def _glob_labels(pattern: list[str], labels: list[str]) -> bool:
    """Lax per-label glob: each ``*`` stands for any run of characters within its label."""
    if len(pattern) != len(labels):
        return False
    return all(_glob_label(p, label) for p, label in zip(pattern, labels, strict=True))


def _glob_label(pattern: str, label: str) -> bool:
    if pattern == "*":
        return bool(label)
    regex = "[a-z0-9_-]*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, label) is not None


def _openssl_partial_match(pattern: list[str], labels: list[str]) -> bool:
    """Would X509_check_host (without NO_PARTIAL_WILDCARDS) accept this partial wildcard?

    OpenSSL allows one ``*`` at the start or end of a non-IDN left-most label
    with at least two labels after it, and never lets it stand for an A-label.
    """
    head = pattern[0]
    if head.count("*") != 1 or head.startswith("xn--") or len(pattern) < 3:
        return False
    if not (head.startswith("*") or head.endswith("*")):
        return False
    if len(labels) != len(pattern) or labels[1:] != pattern[1:]:
        return False
    if labels[0].startswith("xn--"):
        return False
    prefix, suffix = head.split("*")
    subject = labels[0]
    if len(subject) < len(prefix) + len(suffix):
        return False
    if not (subject.startswith(prefix) and subject.endswith(suffix)):
        return False
    middle = subject[len(prefix) : len(subject) - len(suffix)]
    return re.fullmatch(r"[a-z0-9-]*", middle) is not None


def _is_public_suffix(labels: list[str]) -> bool:
    """True when ``labels`` is a public suffix (ICANN section) or shorter than two labels."""
    if len(labels) < 2:
        return True
    psl = _public_suffix_list()
    if psl is None:  # fallback: two labels after the wildcard are enough
        return False
    return psl.is_public_suffix(".".join(labels))


def registrable_domain(name: str) -> str | None:
    """The registrable domain (a public suffix plus one label) of ``name``, or None.

    Names under a suffix the list does not know (``.test``, internal TLDs)
    follow the list's default rule: the last two labels.
    """
    labels = name.lower().rstrip(".").split(".")
    if len(labels) < 2 or not all(labels):
        return None
    psl = _public_suffix_list()
    sld = psl.registrable_domain(".".join(labels)) if psl is not None else None
    if not sld or "." not in sld:
        return ".".join(labels[-2:])
    return str(sld)


@functools.cache
def _public_suffix_list() -> PublicSuffixes | None:
    """The ICANN section of publicsuffix2's bundled list, or None if it cannot be loaded.

    Only the ICANN section counts, as in Chrome: private suffixes such as
    blogspot.com legitimately carry ``*.blogspot.com`` certificates.
    """
    try:
        # The package's data file, found without importing the package (which imports
        # urllib.request: longer than reading the list).
        spec = importlib.util.find_spec("publicsuffix2")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(spec.submodule_search_locations[0]) / "public_suffix_list.dat"
        return PublicSuffixes.from_text(path.read_text(encoding="utf-8"), _to_ascii)
    except Exception:  # noqa: BLE001 - a list that fails to load means the fallback, not a crash
        return None


def _to_ascii(name: str, *, remap: bool = True) -> str | None:
    """Lowercase A-label form of ``name``, or None if it cannot be converted. Never raises.

    ``remap`` applies the UTS #46 mapping first (right for what a person typed:
    full-width dots, upper case). Names presented in certificates are not
    remapped: clients compare them as written, so a Kelvin sign is not a K.
    """
    if name.isascii():
        return name.lower()
    try:
        mapped = idna.uts46_remap(name, std3_rules=False, transitional=False) if remap else name
        labels = [
            label.lower() if label.isascii() else idna.alabel(label).decode("ascii")
            for label in mapped.split(".")
        ]
    except (UnicodeError, ValueError, IndexError):
        return None
    return ".".join(labels)


def _name_problem(name: str, *, allow_wildcard: bool = False) -> str | None:
    """Why lowercase ASCII ``name`` is not a usable host name, or None if it is."""
    if not name:
        return "it is empty"
    if len(name) > _MAX_NAME:
        return f"it is longer than {_MAX_NAME} characters"
    for label in name.split("."):
        if not label:
            return "it has an empty label"
        if len(label) > _MAX_LABEL:
            return f"the label {label[:20]}… is longer than {_MAX_LABEL} characters"
        plain = label.replace("*", "") if allow_wildcard else label
        if plain and not _LABEL.match(plain):
            return f"the label {_escape(label)} holds characters other than letters, digits, hyphen"
    return None


def is_ip_address(text: str) -> bool:
    """True when ``text`` is an IPv4 or IPv6 address literal (an IP-ID, not a DNS name)."""
    return _parse_ip(text) is not None


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _ipv4_mapped_pair(a: IPAddress, b: IPAddress) -> bool:
    for v6, v4 in ((a, b), (b, a)):
        if isinstance(v6, ipaddress.IPv6Address) and isinstance(v4, ipaddress.IPv4Address):
            return v6.ipv4_mapped == v4
    return False


def _first_control(text: str) -> int | None:
    for i, char in enumerate(text):
        if _is_control(char):
            return i
    return None


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or ord(char) == 0x7F


def _escape(text: str) -> str:
    """``text`` with control characters shown as \\xNN, for sentences."""
    return "".join(f"\\x{ord(c):02x}" if _is_control(c) else c for c in text)


def _count(n: int) -> str:
    word = _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)
    return f"{word} label" if n == 1 else f"{word} labels"


__all__ = [
    "IdentifierCheck",
    "IdentityFinding",
    "IdentityResult",
    "IdentityRule",
    "PresentedIdentifiers",
    "check_identity",
]
