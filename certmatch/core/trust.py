"""Does a presented chain lead to a trusted root, at a given time, ignoring names?

certmatch explains name mismatches; trust is judged separately so that a
chain problem (expired, self-signed, missing intermediate, ...) is never
mistaken for a name problem, and the other way round. RFC 7817 §3: mail
clients check the name only after certification path validation.

Every problem is a :class:`TrustProblemId`; the catalogue
(:mod:`certmatch.core.causes`) binds each to its cause, and each member
names the function that finds it.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import urllib.parse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store

from certmatch.core.ca_profile import profile_breaches
from certmatch.core.certificates import (
    CertificateSummary,
    ParsedChain,
    certificate_label,
    is_ca,
    subject_label,
)

# Where systems keep their CA bundle, tried in order after $SSL_CERT_FILE (which OpenSSL
# itself honours). The list stands in for ssl.get_default_verify_paths(): the core does
# not import ssl.
FALLBACK_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/usr/lib/ssl/cert.pem",  # OpenSSL's default on Debian and Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/pki/tls/cert.pem",  # OpenSSL's default on Fedora and RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, BSDs, Alpine
    "/opt/homebrew/etc/openssl@3/cert.pem",  # Homebrew on Apple silicon
    "/usr/local/etc/openssl@3/cert.pem",  # Homebrew on Intel
)


class TrustProblemId(StrEnum):
    """Why a chain is not (or not fully) acceptable; each value is its cause id.

    Each member says which section it rests on and, last, the function that finds it.
    """

    EXPIRED = "expired"
    """A certificate on the path is past its notAfter (RFC 5280 §4.1.2.5).
    Found in ``_time_problems``."""
    NOT_YET_VALID = "not-yet-valid"
    """A certificate on the path is before its notBefore (RFC 5280 §4.1.2.5).
    Found in ``_time_problems``."""
    SELF_SIGNED = "self-signed"
    """The leaf signed itself and is not in the store (RFC 5280 §6.1).
    Found in ``_path_end_problems``."""
    UNKNOWN_ISSUER = "unknown-issuer"
    """The path ends at a CA the store does not hold, or loops back on itself (RFC 5280 §6.1).
    Found in ``_path_end_problems``."""
    MISSING_INTERMEDIATE = "missing-intermediate"
    """The path ends at a non-CA whose issuer nobody sent (RFC 5280 §6.1, RFC 8446 §4.4.2).
    Found in ``_path_end_problems``."""
    WRONG_ORDER = "wrong-order"
    """Not leaf first, each certificate followed by its issuer (RFC 5246 §7.4.2,
    RFC 8446 §4.4.2). Found in ``_order_problems``."""
    MALFORMED_CERTIFICATE = "malformed-certificate"
    """A presented certificate cannot be parsed (RFC 5280 §4.1). Found in ``_assess``."""
    NO_CERTIFICATE = "no-certificate"
    """The server presented no certificate at all (RFC 8446 §4.4.2). Found in ``_assess``."""
    UNKNOWN_CRITICAL_EXTENSION = "unknown-critical-extension"
    """A certificate on the path has a critical extension clients do not process, which they
    must reject (RFC 5280 §4.2, §6.1.4 (o)). Found in ``_critical_extension_problems``."""
    NOT_A_CA = "not-a-ca"
    """An issuer on the path, a store root included, is not a CA certificate: no basicConstraints
    with cA TRUE, a keyUsage without keyCertSign, or an empty subject (RFC 5280 §4.1.2.6,
    §4.2.1.9, §6.1.4 (k), (n)). Found in ``_non_ca_issuer_problems``."""
    PATH_LENGTH_EXCEEDED = "path-length-exceeded"
    """More non-self-issued CA certificates below a CA than its pathLenConstraint allows
    (RFC 5280 §4.2.1.9, §6.1.4 (l), (m)). Found in ``_path_length_problems``."""
    NAME_CONSTRAINTS_VIOLATED = "name-constraints-violated"
    """A name in a certificate below a CA lies outside its permitted subtrees, inside its excluded
    ones, or in a form its constraints cannot be applied to (RFC 5280 §4.2.1.10, §6.1.3 (b),
    (c)). Found in ``_name_constraint_problems``."""
    WRONG_EXTENDED_KEY_USAGE = "wrong-extended-key-usage"
    """The leaf's extKeyUsage lists neither serverAuth nor anyExtendedKeyUsage (RFC 5280
    §4.2.1.12). Found in ``_key_usage_problems``."""
    WEAK_SIGNATURE_ALGORITHM = "weak-signature-algorithm"
    """A certificate on the path is signed with MD5 or SHA-1 (RFC 9155; RFC 8446 §4.2.3).
    Found in ``_weak_problem``, for links on the path and for a path that ends at such a
    signature."""
    CA_PROFILE_VIOLATION = "ca-profile-violation"
    """A certificate on the path breaks a rule RFC 5280 §4 sets for the issuing CA (a serial
    number, a missing key identifier, an extension not marked critical, ...), which path
    validation (§6.1) and mail clients' verifiers do not enforce: a warning, never a reason
    to distrust. Found in ``_ca_profile_problems``."""
    CHAIN_TOO_COMPLEX = "chain-too-complex"
    """More certificates, more ways to link them, or more name-constraint comparisons than a path
    search may take; RFC 5280 §6.1 leaves path building to the implementation, and an unbounded
    one is a denial of service. Found in ``_too_many_certificates``, ``_too_complex``,
    ``_too_many_name_checks``."""


# The most intermediates on one path, as cryptography's verifier counts them (its default is 8,
# too few for a deep private PKI). Real chains hold one to three; 32 admits any plausible one.
MAX_CHAIN_DEPTH = 32
# The most certificates judged: a leaf, MAX_CHAIN_DEPTH intermediates and the root. Beyond it
# the chain is refused before any signature is checked (x509-limbo's pathological chains send
# 101). Building our own links then costs at most 34 x 33 signature checks.
MAX_CERTIFICATES = MAX_CHAIN_DEPTH + 2
# The verifier tries every issuer with the right name at every step, with no memory of dead
# ends, so certificates that sign for each other make it exponential: 3 sharing one subject and
# key take seconds, 4 take most of a minute, and it cannot be interrupted. So it never sees them
# all at once: certmatch finds the paths itself, each (subject, key) at most once on a path, and
# hands the verifier one path at a time, where every step has one candidate. At most
# MAX_PATH_STEPS steps of that search (a few microseconds each; honest chains take one per
# certificate) and MAX_CANDIDATE_PATHS paths (a cross-signed root makes two).
MAX_PATH_STEPS = 1024
MAX_CANDIDATE_PATHS = 16
# The most name-constraint comparisons: subtrees in a CA times names in the certificates below
# it. cryptography's verifier stops at the same number (2^20), and OpenSSL at a like one, since
# x509-limbo's nc-dos chains (4,096 subtrees against 4,096 names) would take each one minutes.
MAX_NAME_CONSTRAINT_CHECKS = 1 << 20
# The extensions a client processes when marked critical: those OpenSSL supports
# (X509_supported_extension), which most mail clients verify with. Any other critical one
# fails the certificate (RFC 5280 §4.2), as ``openssl verify`` says with error 34.
PROCESSED_EXTENSIONS = frozenset(
    x509.ObjectIdentifier(dotted)
    for dotted in (
        "2.16.840.1.113730.1.1",  # Netscape certificate type
        "2.5.29.15",  # keyUsage
        "2.5.29.17",  # subjectAltName
        "2.5.29.19",  # basicConstraints
        "2.5.29.32",  # certificatePolicies
        "2.5.29.37",  # extKeyUsage
        "1.3.6.1.5.5.7.1.7",  # sbgp-ipAddrBlock (RFC 3779)
        "1.3.6.1.5.5.7.1.8",  # sbgp-autonomousSysNum (RFC 3779)
        "2.5.29.36",  # policyConstraints
        "1.3.6.1.5.5.7.1.14",  # proxyCertInfo (RFC 3820)
        "2.5.29.30",  # nameConstraints
        "2.5.29.33",  # policyMappings
        "2.5.29.54",  # inhibitAnyPolicy
    )
)
_DER = Encoding.DER


class TrustStoreError(Exception):
    """A CA file could not be used; the message names the file and what to do."""


@dataclass(frozen=True)
class TrustStore:
    """The root certificates a chain is judged against, and where they came from."""

    roots: tuple[x509.Certificate, ...]
    sources: tuple[str, ...]  # e.g. "system (/etc/ssl/certs/ca-certificates.crt)", "/path/ca.pem"

    @classmethod
    def load(cls, ca_files: Sequence[str | Path] = (), *, use_system: bool = True) -> TrustStore:
        """The system bundle (when ``use_system``) plus every PEM bundle in ``ca_files``.

        Raises TrustStoreError for a CA file that is missing, unreadable or
        holds no certificate. A machine without a system bundle is not an
        error: the source then says so, and every chain is judged untrusted.
        """
        roots: list[x509.Certificate] = []
        sources: list[str] = []
        if use_system:
            path, system_roots = _system_roots()
            roots += system_roots
            sources.append(
                f"system ({path})" if path else "system (no CA bundle found on this machine)"
            )
        for ca_file in ca_files:
            roots += _read_ca_file(Path(ca_file))
            sources.append(str(ca_file))
        unique = {cert.public_bytes(_DER): cert for cert in roots}
        return cls(tuple(unique.values()), tuple(sources))

    @cached_property
    def _der(self) -> frozenset[bytes]:
        return frozenset(cert.public_bytes(_DER) for cert in self.roots)

    @cached_property
    def _by_subject(self) -> dict[x509.Name, list[x509.Certificate]]:
        index: dict[x509.Name, list[x509.Certificate]] = {}
        for cert in self.roots:
            index.setdefault(cert.subject, []).append(cert)
        return index

    @cached_property
    def verifier_store(self) -> Store | None:
        """The roots as a ``cryptography`` Store (None when there are none: it refuses empty)."""
        return Store(list(self.roots)) if self.roots else None

    def contains(self, cert: x509.Certificate) -> bool:
        return cert.public_bytes(_DER) in self._der

    def roots_named(self, name: x509.Name) -> list[x509.Certificate]:
        """Roots whose subject is ``name`` (candidates for issuing a certificate with that issuer)."""
        return list(self._by_subject.get(name, []))

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """Roots whose name and key say they signed ``cert``."""
        return [root for root in self._by_subject.get(cert.issuer, []) if _signed_by(cert, root)]

    def describe(self) -> str:
        """E.g. "the trust store (144 roots: system (/etc/ssl/certs/ca-certificates.crt))"."""
        count = f"{len(self.roots)} root{'' if len(self.roots) == 1 else 's'}"
        return f"the trust store ({count}: {'; '.join(self.sources) or 'no sources'})"


@dataclass(frozen=True)
class TrustProblem:
    """One reason the chain is not (or not fully) acceptable."""

    id: TrustProblemId
    cert_index: int | None  # position in the presented chain; None for a store root or the chain
    detail: str


@dataclass(frozen=True)
class TrustResult:
    trusted: bool  # the chain validates to a root in the store at the given time, ignoring names
    problems: tuple[TrustProblem, ...]
    validated_path: tuple[str, ...]  # subjects, leaf to root, when trusted


def assess_trust(chain: ParsedChain, at: datetime, store: TrustStore) -> TrustResult:
    """Judge the presented chain against ``store`` at time ``at``, ignoring names; never raises.

    Trust comes from ``cryptography``'s verifier (web PKI rules for the CA
    certificates, none for the leaf, so names and the leaf's extensions play
    no part). If the verifier refuses but the chain reaches a root by name
    and signature with every certificate in date, every issuer a CA and
    nothing unparseable, the chain is trusted too: the web PKI rules refuse
    chains that OpenSSL-based clients accept (e.g. a CA without keyUsage),
    and certmatch would otherwise have no reason to show. The problems come
    from our own path, built by issuer name and signature through the
    presented certificates and the store:

    - expired / not-yet-valid: a certificate on the path outside its validity at ``at``.
    - self-signed: the leaf signed itself and is not in the store.
    - unknown-issuer: the path ends at a CA (or a self-signed root) that is not in the store,
      or loops back on itself; or an issuer on it, a store root included, is not a CA.
    - missing-intermediate: the path ends at a certificate that is not a CA and
      whose issuer is neither presented nor in the store. This is a heuristic:
      the server most likely left out its intermediate, but the issuer could
      also be a private CA nobody here trusts.
    - wrong-order: the leaf is not first, or the certificates on the path are
      not presented leaf-to-issuer (RFC 5246 §7.4.2 requires that order; RFC
      8446 §4.4.2 only the leaf first, and many clients reorder).
    - unknown-critical-extension: a certificate on the path, the root included, marks
      critical an extension outside PROCESSED_EXTENSIONS; judged on the verifier's path
      too, since its leaf policy permits every extension (a critical AIA, say).
    - malformed-certificate / no-certificate: unparseable entries; an empty chain.
    - chain-too-complex: more than MAX_CERTIFICATES sent; links among them that take the
      search for candidate paths past MAX_PATH_STEPS (or MAX_CANDIDATE_PATHS) without one
      that validates; or more than MAX_NAME_CONSTRAINT_CHECKS name-constraint comparisons.
      Judged before the verifier runs, since it cannot be interrupted, and the verifier gets
      one candidate path at a time. Copies alike in subject, issuer and key count once.
    """
    try:
        return _assess(chain, _as_utc(at), store)
    except Exception as exc:  # noqa: BLE001 - a judgement must never crash a report
        detail = f"Trust could not be assessed: {type(exc).__name__}: {exc}"
        problem = TrustProblem(TrustProblemId.MALFORMED_CERTIFICATE, None, detail)
        return TrustResult(False, (problem,), ())


# --- assessment -----------------------------------------------------------------------------


def _as_utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@dataclass
class _Step:
    """One certificate on the path we built: where it came from."""

    cert: x509.Certificate
    index: int | None  # presented position, None when only the store has it
    in_store: bool


def _assess(chain: ParsedChain, at: datetime, store: TrustStore) -> TrustResult:
    if not chain.certificates:
        detail = "The server presented no certificate at all."
        return TrustResult(False, (TrustProblem(TrustProblemId.NO_CERTIFICATE, None, detail),), ())

    problems = [
        TrustProblem(TrustProblemId.MALFORMED_CERTIFICATE, s.index, _sentence(s.error))
        for s in chain.summaries
        if s.error
    ]
    presented = {i: c for i, c in enumerate(chain.certificates) if c is not None}
    if 0 not in presented:
        unassessable = "Without a parseable leaf certificate trust cannot be assessed."
        if problems and problems[0].cert_index == 0:
            problems[0] = TrustProblem(
                TrustProblemId.MALFORMED_CERTIFICATE, 0, f"{problems[0].detail} {unassessable}"
            )
        else:
            problems.insert(0, TrustProblem(TrustProblemId.MALFORMED_CERTIFICATE, 0, unassessable))
        return TrustResult(False, tuple(problems), ())

    too_many = _too_many_certificates(chain, presented)
    if too_many:
        return TrustResult(False, (*problems, too_many), ())
    presented = _distinct(presented, at)
    issuers = _presented_issuers(presented)
    leaf_index = _find_leaf(presented, issuers)
    candidates, cut_short = _candidate_paths(leaf_index, presented, issuers, store)
    anchors = [root for p in candidates for root in store.issuers_of(presented[p[-1]])]
    too_many = _too_many_name_checks([*presented.values(), *anchors])
    if too_many:
        return TrustResult(False, (*problems, too_many), ())
    verified = _verify(presented, candidates, at, store)
    if verified is None and cut_short:
        return TrustResult(False, (*problems, _too_complex(chain, presented)), ())
    path = _build_path(leaf_index, presented, issuers, store)

    if verified is not None:
        # The verifier found a path in date to a root; ours may have taken a detour. Its leaf
        # policy permits every extension, so critical ones are judged here.
        # The verifier checked the CAs with rules stricter than RFC 5280's (so not-a-ca and weak
        # signatures cannot occur), but permits every leaf extension and lets a wildcard reach
        # past a permitted subtree: those are judged here.
        steps = _steps(verified, presented, store)
        trust_problems = (
            _path_length_problems(steps)
            + _name_constraint_problems(steps)
            + _key_usage_problems(steps)
            + _critical_extension_problems(steps)
        )
        time_problems = []
        trusted = not trust_problems
        shown = verified if trusted else []
        judged_path = steps
    else:
        last = path[-1].index
        looped = last is not None and any(j != last for j in issuers[last])
        issuer_sent = any(c.subject == path[-1].cert.issuer for c in presented.values())
        ends = _path_end_problems(path, store, looped=looped, issuer_sent=issuer_sent)
        trust_problems = (ends or _rfc5280_problems(path)) + _critical_extension_problems(path)
        time_problems = _time_problems(path, at)
        trusted = (
            not trust_problems
            and not time_problems
            and not any(chain.summaries[s.index].error for s in path if s.index is not None)
        )
        shown = [s.cert for s in path] if trusted else []
        judged_path = path

    problems += trust_problems
    problems += _ca_profile_problems(judged_path)
    problems += _order_problems(path, leaf_index, chain)
    problems += time_problems
    return TrustResult(trusted, tuple(problems), tuple(_subject(c) for c in shown))


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Issuer name matches and the signature verifies with the issuer's key."""
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - name mismatch, bad signature, unsupported key: all "no"
        return False
    return True


def _find_leaf(presented: dict[int, x509.Certificate], issuers: dict[int, list[int]]) -> int:
    """Index 0, unless it certifies another presented certificate and someone else does not."""
    issuing = {i for j, found in issuers.items() for i in found if i != j}
    if 0 not in issuing:
        return 0
    ends = [i for i in presented if i not in issuing]
    non_ca = [i for i in ends if not is_ca(presented[i])]
    return (non_ca or ends or [0])[0]


def _build_path(
    leaf_index: int,
    presented: dict[int, x509.Certificate],
    issuers: dict[int, list[int]],
    store: TrustStore,
) -> list[_Step]:
    """Follow issuer name and signature from the leaf, preferring store roots.

    Each presented certificate is used once, so the path ends where the
    chain does: never cut short with an issuer that was in fact sent.
    """
    by_der = {cert.public_bytes(_DER): i for i, cert in presented.items()}
    path = [_Step(presented[leaf_index], leaf_index, store.contains(presented[leaf_index]))]
    used = {leaf_index}
    while not path[-1].in_store:
        current = path[-1]
        roots = store.issuers_of(current.cert)
        if roots:
            root = roots[0]
            path.append(_Step(root, by_der.get(root.public_bytes(_DER)), True))
            break
        assert current.index is not None  # only store roots lack one, and they end the path
        candidates = [i for i in issuers[current.index] if i not in used]
        if not candidates:
            break
        used.add(candidates[0])
        cert = presented[candidates[0]]
        path.append(_Step(cert, candidates[0], store.contains(cert)))
    return path


def _steps(
    certs: list[x509.Certificate], presented: dict[int, x509.Certificate], store: TrustStore
) -> list[_Step]:
    """The verifier's path as steps: where each certificate on it came from."""
    by_der = {cert.public_bytes(_DER): i for i, cert in presented.items()}
    return [
        _Step(cert, by_der.get(cert.public_bytes(_DER)), store.contains(cert)) for cert in certs
    ]


# --- bounds on the search (x509-limbo's pathological chains) ---------------------------------


def _subject_and_key(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """The subject and public key, DER; a key cryptography cannot load stands for itself."""
    try:
        key = cert.public_key().public_bytes(_DER, PublicFormat.SubjectPublicKeyInfo)
    except Exception:  # noqa: BLE001 - an unsupported key: no other certificate shares it
        key = cert.public_bytes(_DER)
    return cert.subject.public_bytes(), key


def _largest_shared(presented: dict[int, x509.Certificate]) -> tuple[int, str]:
    """How many presented certificates share one subject and key at most, and that subject."""
    groups: dict[tuple[bytes, bytes], list[x509.Certificate]] = {}
    for cert in presented.values():
        groups.setdefault(_subject_and_key(cert), []).append(cert)
    largest = max(groups.values(), key=len)
    return len(largest), _name(largest[0])


def _complexity_detail(presented: dict[int, x509.Certificate]) -> str:
    shared, subject = _largest_shared(presented)
    if shared < 2:
        return ""
    return (
        f" {shared} of them share one subject, {subject}, and one key, so each of those "
        "appears to have signed every other."
    )


def _too_many_certificates(
    chain: ParsedChain, presented: dict[int, x509.Certificate]
) -> TrustProblem | None:
    """More certificates than any honest server sends: judged without searching them."""
    total = len(chain.certificates)
    if total <= MAX_CERTIFICATES:
        return None
    return TrustProblem(
        TrustProblemId.CHAIN_TOO_COMPLEX,
        None,
        f"The server sent {total} certificates; certmatch searches at most {MAX_CERTIFICATES} "
        f"(a leaf and up to {MAX_CHAIN_DEPTH} intermediates) for a path to a trusted root."
        + _complexity_detail(presented),
    )


def _distinct(presented: dict[int, x509.Certificate], at: datetime) -> dict[int, x509.Certificate]:
    """One certificate per subject, issuer and key: the first in date at ``at``, else the first.

    Copies alike in those three are interchangeable links of a path, and
    every extra one multiplies the verifier's search. The issuer stays part
    of the key: a cross-signed CA (one subject and key, two issuers) keeps
    both its certificates, as either may be the one that reaches the store.
    """
    kept: dict[tuple[bytes, bytes, bytes], int] = {}
    for i, cert in presented.items():
        subject, key = _subject_and_key(cert)
        alike = (subject, cert.issuer.public_bytes(), key)
        if alike not in kept or (not _in_date(presented[kept[alike]], at) and _in_date(cert, at)):
            kept[alike] = i
    kept_indices = {0, *kept.values()}  # the first certificate stays: it is most likely the leaf
    return {i: cert for i, cert in presented.items() if i in kept_indices}


def _in_date(cert: x509.Certificate, at: datetime) -> bool:
    try:
        return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc
    except Exception:  # noqa: BLE001
        return False


def _presented_issuers(presented: dict[int, x509.Certificate]) -> dict[int, list[int]]:
    """For each presented certificate, the presented ones whose name and key signed it."""
    by_subject: dict[x509.Name, list[int]] = {}
    for i, cert in presented.items():
        by_subject.setdefault(cert.subject, []).append(i)
    return {
        i: [j for j in by_subject.get(cert.issuer, []) if _signed_by(cert, presented[j])]
        for i, cert in presented.items()
    }


def _candidate_paths(
    leaf_index: int,
    presented: dict[int, x509.Certificate],
    issuers: dict[int, list[int]],
    store: TrustStore,
) -> tuple[list[list[int]], bool]:
    """Paths from the leaf through presented issuers to a certificate the store holds or signed.

    Depth first, in the order sent; no (subject, key) twice on one path, so
    certificates that sign for each other cannot loop, and at most
    MAX_CHAIN_DEPTH intermediates. Returns the paths (presented indices, leaf
    first) and whether the search stopped at MAX_PATH_STEPS or
    MAX_CANDIDATE_PATHS before it had seen every path.
    """
    keys = {i: _subject_and_key(cert) for i, cert in presented.items()}
    ends: dict[int, bool] = {}
    paths: list[list[int]] = []
    stack = [[leaf_index]]
    steps = 0
    while stack:
        steps += 1
        if steps > MAX_PATH_STEPS:
            return paths, True
        path = stack.pop()
        last = path[-1]
        if last not in ends:
            ends[last] = store.contains(presented[last]) or bool(store.issuers_of(presented[last]))
        if ends[last]:
            paths.append(path)
            if len(paths) == MAX_CANDIDATE_PATHS:
                return paths, bool(stack)
            if store.contains(presented[last]):
                continue  # the verifier stops at a trust anchor
        if len(path) > MAX_CHAIN_DEPTH:
            continue
        on_path = {keys[i] for i in path}
        stack += [[*path, j] for j in reversed(issuers[last]) if keys[j] not in on_path]
    return paths, False


def _too_complex(chain: ParsedChain, presented: dict[int, x509.Certificate]) -> TrustProblem:
    return TrustProblem(
        TrustProblemId.CHAIN_TOO_COMPLEX,
        None,
        f"The server sent {len(chain.certificates)} certificates that sign for each other in "
        f"so many ways that certmatch stopped after {MAX_PATH_STEPS} steps of the search for a "
        f"path to a trusted root (or after {MAX_CANDIDATE_PATHS} paths), without finding one "
        "that validates." + _complexity_detail(presented),
    )


def _too_many_name_checks(certs: list[x509.Certificate]) -> TrustProblem | None:
    """More name-constraint comparisons than MAX_NAME_CONSTRAINT_CHECKS, at worst.

    Counted over the certificates sent and the roots that signed them: all
    subtrees times all alternative names, an upper bound of what any path
    through them compares.
    """
    subtrees = 0
    names = 0
    for cert in certs:
        try:
            extensions = cert.extensions
        except Exception:  # noqa: BLE001, S112 - unparseable extensions: reported as malformed
            continue
        for extension in extensions:
            value = extension.value
            if isinstance(value, x509.NameConstraints):
                subtrees += len(value.permitted_subtrees or ()) + len(value.excluded_subtrees or ())
            elif isinstance(value, x509.SubjectAlternativeName):
                names += len(value)
    if subtrees * names <= MAX_NAME_CONSTRAINT_CHECKS:
        return None
    return TrustProblem(
        TrustProblemId.CHAIN_TOO_COMPLEX,
        None,
        f"The certificates sent carry {subtrees} name constraints and {names} names to check "
        f"against them: more than the {MAX_NAME_CONSTRAINT_CHECKS} comparisons clients make "
        "before they give up (cryptography's and OpenSSL's verifiers refuse such chains).",
    )


def _verify(
    presented: dict[int, x509.Certificate],
    paths: list[list[int]],
    at: datetime,
    store: TrustStore,
) -> list[x509.Certificate] | None:
    """The verifier's path through the first candidate it accepts, or None when it refuses all.

    A client verifier with a permit-all leaf policy checks everything about
    the path except names and the leaf's own extensions (a server verifier
    always matches a name and requires a subjectAltName). Each call gets one
    candidate's intermediates, so its search has one way forward at each step.
    """
    if store.verifier_store is None:
        return None
    verifier = (
        PolicyBuilder()
        .store(store.verifier_store)
        .time(at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    for path in paths:
        try:
            return verifier.verify(presented[path[0]], [presented[i] for i in path[1:]]).chain
        except Exception:  # noqa: BLE001, S112 - VerificationError, or ValueError on odd input
            continue
    return None


def _path_end_problems(
    path: list[_Step], store: TrustStore, *, looped: bool, issuer_sent: bool
) -> list[TrustProblem]:
    """Why the path stops short of the store. ``looped``: its last certificate's issuers were
    sent, but all of them are on the path already. ``issuer_sent``: a certificate with its
    issuer's name was sent."""
    last = path[-1]  # never a store root here, so always a presented certificate
    if last.in_store:
        return []
    weak = _weak_signature(last.cert)
    named = store.roots_named(last.cert.issuer)
    if weak and (named or issuer_sent) and not _self_issued(last.cert):
        issuer = f"{_issuer_name(last.cert)} ({'in ' + store.describe() if named else 'sent'})"
        return [_weak_problem(last, weak, issuer)]
    if looped:
        return [
            TrustProblem(
                TrustProblemId.UNKNOWN_ISSUER,
                last.index,
                f"The chain ends at {_name(last.cert)} ({_where(last)}): its issuer "
                f"{_issuer_name(last.cert)} was sent, but only as certificates already on the "
                "path, so the certificates sent sign for each other in a loop and none of them "
                f"leads to a root in {store.describe()}.",
            )
        ]
    if len(path) == 1 and _is_self_signed(last.cert):
        return [
            TrustProblem(
                TrustProblemId.SELF_SIGNED,
                last.index,
                f"The leaf certificate {_name(last.cert)} is self-signed and is not in "
                f"{store.describe()}; a client accepts it only if the user pins or imports it.",
            )
        ]
    if _is_self_signed(last.cert):
        return [
            TrustProblem(
                TrustProblemId.UNKNOWN_ISSUER,
                last.index,
                f"The chain ends in the self-signed root {_name(last.cert)} ({_where(last)}), "
                f"which is not in {store.describe()}.",
            )
        ]
    issuer = _issuer_name(last.cert)
    if is_ca(last.cert):
        return [
            TrustProblem(
                TrustProblemId.UNKNOWN_ISSUER,
                last.index,
                f"The chain ends at the CA certificate {_name(last.cert)} ({_where(last)}); its "
                f"issuer {issuer} was not sent by the server and is not in {store.describe()}.",
            )
        ]
    return [
        TrustProblem(
            TrustProblemId.MISSING_INTERMEDIATE,
            last.index,
            f"The server sent {_name(last.cert)} ({_where(last)}) but not the certificate of "
            f"its issuer {issuer}, and that issuer is not in {store.describe()} either: most "
            "likely the server is not configured to send its intermediate certificate (or the "
            "issuer is a private CA that is not trusted here).",
        )
    ]


def _rfc5280_problems(path: list[_Step]) -> list[TrustProblem]:
    """What RFC 5280 §6.1 path validation refuses on a path that reaches the store, beyond
    signatures and dates: cryptography's verifier checks most of it with web PKI rules, and
    refuses more; these checks keep the verdict to what a mail client refuses."""
    return (
        _non_ca_issuer_problems(path)
        + _path_length_problems(path)
        + _name_constraint_problems(path)
        + _key_usage_problems(path)
        + _weak_signature_problems(path)
    )


def _non_ca_issuer_problems(path: list[_Step]) -> list[TrustProblem]:
    """Every issuer on the path, a store root included, must be a CA certificate: basicConstraints
    cA TRUE (RFC 5280 §6.1.4 (k)), keyCertSign if it has a keyUsage (§6.1.4 (n)) and a
    subject that names it (§4.1.2.6)."""
    problems = []
    for child, issuer in itertools.pairwise(path):
        why = _not_a_ca(issuer.cert)
        if why is None:
            continue
        if why.startswith(_UNREADABLE):
            consequence = "no client can tell it is a CA, and none accepts it as an issuer."
        elif issuer.in_store:
            consequence = (
                "a client that follows RFC 5280 §6.1.4 does not accept it as an issuer, trusted "
                "or not (OpenSSL still accepts a trusted self-signed root without basicConstraints)."
            )
        else:
            consequence = "no client accepts it as an issuer."
        problems.append(
            TrustProblem(
                TrustProblemId.NOT_A_CA,
                issuer.index,
                f"{_name(child.cert)} is signed by {_name(issuer.cert)} ({_where(issuer)}), "
                f"which is not a CA certificate ({why}), so {consequence}",
            )
        )
    return problems


_UNREADABLE = "its extensions cannot be read"


def _not_a_ca(cert: x509.Certificate) -> str | None:
    """Why ``cert`` cannot issue certificates, or None when it can."""
    try:
        extensions = cert.extensions
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "it has no basicConstraints extension"
    except Exception as exc:  # noqa: BLE001 - hostile DER: cryptography parses lazily
        return f"{_UNREADABLE}: {_sentence(str(exc)).rstrip('.')}"
    if not constraints.ca:
        return "its basicConstraints say CA:FALSE"
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        return "its keyUsage does not include keyCertSign"
    if not cert.subject.rdns:
        return "its subject is empty, and a CA's subject must name it"
    return None


# -- RFC 5280 §6.1.4 (l), (m): path length --------------------------------------------------------


def _path_length_problems(path: list[_Step]) -> list[TrustProblem]:
    """Top down: each non-self-issued CA below another uses up one of its pathLenConstraint."""
    if len(path) < 3:
        return []
    limit: int | None = None
    limiter = path[-1]
    for position in range(len(path) - 1, 0, -1):  # the anchor (or top) down to the leaf's issuer
        step = path[position]
        if position < len(path) - 1 and not _self_issued(step.cert):
            if limit is not None and limit <= 0:
                return [
                    TrustProblem(
                        TrustProblemId.PATH_LENGTH_EXCEEDED,
                        step.index,
                        f"{_name(limiter.cert)} ({_where(limiter)}) allows "
                        f"{_cas(_path_len(limiter.cert) or 0)} below it (pathLenConstraint "
                        f"{_path_len(limiter.cert)}), but {_name(step.cert)} ({_where(step)}) is "
                        "one more CA certificate on the path.",
                    )
                ]
            if limit is not None:
                limit -= 1
        own = _path_len(step.cert)
        if own is not None and (limit is None or own < limit):
            limit, limiter = own, step
    return []


def _path_len(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except Exception:  # noqa: BLE001 - absent or unreadable: no constraint of its own
        return None


def _self_issued(cert: x509.Certificate) -> bool:
    """Subject and issuer are the same non-empty name (RFC 5280 §6.1)."""
    try:
        return bool(cert.subject.rdns) and cert.subject == cert.issuer
    except Exception:  # noqa: BLE001
        return False


def _cas(count: int) -> str:
    return "no CA certificate" if count == 0 else f"{count} CA certificate{'s' * (count > 1)}"


# -- RFC 5280 §6.1.3 (b), (c): name constraints ---------------------------------------------------


def _name_constraint_problems(path: list[_Step]) -> list[TrustProblem]:
    """Top down: the names of each certificate below a CA (a self-issued CA's only when it is the
    leaf) against the subtrees of every CA above it; the first name outside them is reported."""
    active: list[tuple[_Step, x509.NameConstraints]] = []
    for position in range(len(path) - 1, -1, -1):
        step = path[position]
        leaf = position == 0
        if active and (leaf or not _self_issued(step.cert)):
            for name in _names(step.cert):
                for ca, constraints in active:
                    why = _name_outside(name, constraints)
                    if why:
                        return [
                            TrustProblem(
                                TrustProblemId.NAME_CONSTRAINTS_VIOLATED,
                                step.index,
                                f"{_name(step.cert)} ({_where(step)}) carries {_show(name)}, but "
                                f"{_name(ca.cert)} ({_where(ca)}) above it {why}.",
                            )
                        ]
        own = None if leaf else _name_constraints(step.cert)
        if own is not None:
            active.append((step, own))
    return []


def _name_constraints(cert: x509.Certificate) -> x509.NameConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except Exception:  # noqa: BLE001 - absent; unreadable ones make the CA not-a-ca
        return None


def _names(cert: x509.Certificate) -> list[x509.GeneralName]:
    """The names constraints apply to: a non-empty subject, the subjectAltName entries and,
    without a subjectAltName, the subject's emailAddress (RFC 5280 §4.2.1.10)."""
    names: list[x509.GeneralName] = []
    if cert.subject.rdns:
        names.append(x509.DirectoryName(cert.subject))
    try:
        names += list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        names += [
            x509.RFC822Name(str(a.value))
            for a in cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
        ]
    except Exception:  # noqa: BLE001, S110 - unreadable extensions: reported as malformed
        pass
    return names


def _name_outside(name: x509.GeneralName, constraints: x509.NameConstraints) -> str:
    """Why ``name`` breaks ``constraints`` (a clause for a sentence), or "" when it does not."""
    kind = type(name)
    permitted = [t for t in constraints.permitted_subtrees or () if type(t) is kind]
    excluded = [t for t in constraints.excluded_subtrees or () if type(t) is kind]
    if not permitted and not excluded:
        return ""
    within = _WITHIN.get(kind)
    if within is None:
        return (
            f"constrains {_KIND_NAMES.get(kind, kind.__name__)} names, which certmatch cannot "
            "compare, and a client that cannot must refuse the certificate (RFC 5280 §4.2.1.10)"
        )
    for subtree in excluded:
        verdict = within(name, subtree, excluded=True)
        if verdict is None:
            return f"excludes {_show(subtree)}, and this name cannot be compared with it"
        if verdict:
            return f"excludes {_show(subtree)} (RFC 5280 §4.2.1.10, §6.1.3 (c))"
    if permitted:
        verdicts = [within(name, subtree, excluded=False) for subtree in permitted]
        if not any(verdicts):
            shown = ", ".join(_show(s) for s in permitted)
            return f"permits only {shown} (RFC 5280 §4.2.1.10, §6.1.3 (b))"
    return ""


def _within_dns(
    name: x509.GeneralName, subtree: x509.GeneralName, *, excluded: bool
) -> bool | None:
    """dNSName: the subtree and every name with labels added on its left (RFC 5280 §4.2.1.10).
    A wildcard counts as every name it covers: excluded if it can reach the subtree, permitted
    only if all it covers lies within (x509-limbo cve-2025-61727). None: either is malformed."""
    base = str(subtree.value).lower()
    if base.startswith(".") or "*" in base or ".." in base:
        return None  # RFC 5280 §4.2.1.10 gives the leading period to URIs and mailboxes only
    value = str(name.value).lower().rstrip(".")
    labels = value.split(".")
    if not value or any(not label for label in labels) or "*" in value[1:]:
        return None if excluded else False
    if labels[0] == "*":
        rest = ".".join(labels[1:])
        if _dns_under(rest, base):
            return True
        return excluded and len(base.split(".")) == len(labels) and _dns_under(base, rest)
    return _dns_under(value, base)


def _dns_under(name: str, base: str) -> bool:
    return not base or name == base or name.endswith("." + base)


def _within_ip(name: x509.GeneralName, subtree: x509.GeneralName, *, excluded: bool) -> bool | None:
    network = subtree.value
    address = name.value
    if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return None
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return None if excluded else False  # a network where an address belongs (malformed)
    return address.version == network.version and address in network


def _within_email(
    name: x509.GeneralName, subtree: x509.GeneralName, *, excluded: bool
) -> bool | None:
    """A mailbox, all mailboxes on a host, or (".domain") on any host below it."""
    mailbox = str(name.value).lower()
    base = str(subtree.value).lower()
    if "@" not in mailbox:
        return None if excluded else False
    host = mailbox.rsplit("@", 1)[1]
    if "@" in base:
        return mailbox == base
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _within_uri(
    name: x509.GeneralName, subtree: x509.GeneralName, *, excluded: bool
) -> bool | None:
    """The URI's host against a host, or (".domain") any host below it."""
    try:
        host = urllib.parse.urlsplit(str(name.value)).hostname or ""
    except ValueError:
        host = ""
    base = str(subtree.value).lower()
    if not host:
        return None if excluded else False
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _within_dn(name: x509.GeneralName, subtree: x509.GeneralName, *, excluded: bool) -> bool:
    """The subtree's RDNs begin the name's (RFC 5280 §7.1, matching by RDN)."""
    rdns = list(subtree.value.rdns)
    return list(name.value.rdns)[: len(rdns)] == rdns


_WITHIN = {
    x509.DNSName: _within_dns,
    x509.IPAddress: _within_ip,
    x509.RFC822Name: _within_email,
    x509.UniformResourceIdentifier: _within_uri,
    x509.DirectoryName: _within_dn,
}
_KIND_NAMES = {x509.OtherName: "otherName", x509.RegisteredID: "registeredID"}


def _show(name: x509.GeneralName) -> str:
    """E.g. "dNSName 'example.com'", "iPAddress 192.0.2.0/24", "directoryName 'CN=foo'"."""
    value = name.value
    if isinstance(value, x509.Name):
        return f"directoryName '{value.rfc4514_string()}'"
    if isinstance(name, x509.OtherName):
        return f"otherName {name.type_id.dotted_string}"
    kind = {
        x509.DNSName: "dNSName",
        x509.IPAddress: "iPAddress",
        x509.RFC822Name: "rfc822Name",
        x509.UniformResourceIdentifier: "URI",
        x509.RegisteredID: "registeredID",
    }.get(type(name), type(name).__name__)
    return f"{kind} '{value}'"


# -- RFC 5280 §4.2.1.12: what the leaf is for -----------------------------------------------------


def _key_usage_problems(path: list[_Step]) -> list[TrustProblem]:
    """A leaf with an extKeyUsage must list serverAuth (or anyExtendedKeyUsage) for a server."""
    leaf = path[0]
    try:
        usages = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except Exception:  # noqa: BLE001 - absent (any purpose) or unreadable (malformed elsewhere)
        return []
    allowed = {
        x509.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    }
    if allowed & set(usages):
        return []
    listed = ", ".join(_oid_name(oid) for oid in usages) or "nothing"
    return [
        TrustProblem(
            TrustProblemId.WRONG_EXTENDED_KEY_USAGE,
            leaf.index,
            f"The leaf certificate {_name(leaf.cert)} may be used only for what its extKeyUsage "
            f"lists ({listed}), and that does not include serverAuth (1.3.6.1.5.5.7.3.1).",
        )
    ]


# -- RFC 9155, RFC 8446 §4.2.3: MD5 and SHA-1 signatures ------------------------------------------

WEAK_SIGNATURES = {
    x509.ObjectIdentifier(dotted): name
    for dotted, name in (
        ("1.2.840.113549.1.1.2", "md2WithRSAEncryption"),
        ("1.2.840.113549.1.1.3", "md4WithRSAEncryption"),
        ("1.2.840.113549.1.1.4", "md5WithRSAEncryption"),
        ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
        ("1.3.14.3.2.29", "sha1WithRSAEncryption (OIW)"),
        ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
        ("1.2.840.10040.4.3", "dsa-with-sha1"),
        ("1.3.14.3.2.27", "dsaWithSHA1 (OIW)"),
    )
}


def _weak_signature(cert: x509.Certificate) -> str | None:
    try:
        return WEAK_SIGNATURES.get(cert.signature_algorithm_oid)
    except Exception:  # noqa: BLE001
        return None


def _weak_signature_problems(path: list[_Step]) -> list[TrustProblem]:
    """Signatures a client checks: every certificate's but the trust anchor's own."""
    return [
        _weak_problem(step, weak, f"{_name(issuer.cert)} ({_where(issuer)})")
        for step, issuer in itertools.pairwise(path)
        if (weak := _weak_signature(step.cert))
    ]


def _weak_problem(step: _Step, weak: str, issuer: str) -> TrustProblem:
    return TrustProblem(
        TrustProblemId.WEAK_SIGNATURE_ALGORITHM,
        step.index,
        f"{_name(step.cert)} ({_where(step)}) is signed by {issuer} with {weak}; clients refuse "
        "MD5 and SHA-1 signatures (RFC 9155), and certmatch cannot check them either.",
    )


def _critical_extension_problems(path: list[_Step]) -> list[TrustProblem]:
    """Critical extensions no client processes, anywhere on the path, the root included."""
    problems: list[TrustProblem] = []
    for position, step in enumerate(path):
        try:
            extensions = list(step.cert.extensions)
        except Exception:  # noqa: BLE001, S112 - unparseable extensions: reported as malformed
            continue
        unknown = [e.oid for e in extensions if e.critical and e.oid not in PROCESSED_EXTENSIONS]
        if unknown:
            names = ", ".join(_oid_name(oid) for oid in unknown)
            role = _role(position, len(path), step)
            problems.append(
                TrustProblem(
                    TrustProblemId.UNKNOWN_CRITICAL_EXTENSION,
                    step.index,
                    f"The {role} {_name(step.cert)} ({_where(step)}) marks {names} critical, "
                    "which clients do not process, so they reject it (RFC 5280 §4.2).",
                )
            )
    return problems


def _ca_profile_problems(path: list[_Step]) -> list[TrustProblem]:
    """The rules of RFC 5280 §4 the path's certificates break, the root included, as one
    warning that names each certificate and rule."""
    found: list[tuple[_Step, str]] = []
    for position, step in enumerate(path):
        self_signed = step.cert.subject == step.cert.issuer
        breaches = profile_breaches(step.cert, self_signed=self_signed)
        if breaches:
            role = _role(position, len(path), step)
            text = (
                f"The {role} {_name(step.cert)} ({_where(step)}) breaks what RFC 5280 §4 "
                f"asks of the CA that issued it: {'; '.join(breaches)}."
            )
            found.append((step, text))
    if not found:
        return []
    detail = " ".join(text for _, text in found)
    return [TrustProblem(TrustProblemId.CA_PROFILE_VIOLATION, found[0][0].index, detail)]


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    """E.g. "the extension 1.3.6.1.4.1.55738.666.1", "authorityKeyIdentifier (2.5.29.35)"."""
    name = getattr(oid, "_name", "Unknown OID")
    if name == "Unknown OID":
        return f"the extension {oid.dotted_string}"
    return f"{name} ({oid.dotted_string})"


def _order_problems(path: list[_Step], leaf_index: int, chain: ParsedChain) -> list[TrustProblem]:
    indices = [s.index for s in path if s.index is not None]
    in_order = leaf_index == 0 and all(a < b for a, b in itertools.pairwise(indices))
    if in_order:
        return []
    presented = ", ".join(
        f"{i}: {s.subject or _empty_subject(s)}" for i, s in enumerate(chain.summaries)
    )
    expected = " -> ".join(f"{_name(s.cert)}" for s in path if s.index is not None)
    first = (
        "The leaf certificate is not the first one sent"
        if leaf_index != 0
        else "The certificates are not sent leaf first, each followed by its issuer"
    )
    return [
        TrustProblem(
            TrustProblemId.WRONG_ORDER,
            leaf_index if leaf_index != 0 else None,
            f"{first}: the server sent [{presented}], the path is {expected}. "
            "TLS 1.2 requires that order (RFC 5246 §7.4.2); TLS 1.3 only the leaf first "
            "(RFC 8446 §4.4.2). Many clients reorder, some refuse.",
        )
    ]


def _time_problems(path: list[_Step], at: datetime) -> list[TrustProblem]:
    problems: list[TrustProblem] = []
    for position, step in enumerate(path):
        cert = step.cert
        try:
            start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        except Exception:  # noqa: BLE001, S112 - reported as malformed elsewhere
            continue
        role = _role(position, len(path), step)
        window = f"valid from {_when(start)} to {_when(end)}"
        if at > end:
            problems.append(
                TrustProblem(
                    TrustProblemId.EXPIRED,
                    step.index,
                    f"The {role} {_name(cert)} expired on {_when(end)} ({window}); "
                    f"checked at {_when(at)}.",
                )
            )
        elif at < start:
            problems.append(
                TrustProblem(
                    TrustProblemId.NOT_YET_VALID,
                    step.index,
                    f"The {role} {_name(cert)} is not valid until {_when(start)} ({window}); "
                    f"checked at {_when(at)}. If that date is right, a clock is wrong.",
                )
            )
    return problems


# --- small helpers ----------------------------------------------------------------------------


def _is_self_signed(cert: x509.Certificate) -> bool:
    try:
        return cert.subject == cert.issuer and _signed_by(cert, cert)
    except Exception:  # noqa: BLE001
        return False


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except Exception:  # noqa: BLE001
        return ""


def _empty_subject(summary: CertificateSummary) -> str:
    """How to show a certificate whose subject is empty: by its names, or as unparseable."""
    if summary.error:
        return "(unparseable)"
    names = summary.dns_names + summary.ip_addresses
    return f"(empty subject; SAN {', '.join(names)})" if names else "(empty subject)"


def _name(cert: x509.Certificate) -> str:
    """A subject quoted for a sentence; an empty one by its names, "(empty subject; SAN a)"."""
    text = _subject(cert)
    return f"'{text}'" if text else subject_label(cert)


def _issuer_name(cert: x509.Certificate) -> str:
    try:
        return f"'{cert.issuer.rfc4514_string()}'"
    except Exception:  # noqa: BLE001
        return "(unparseable issuer)"


def _role(position: int, length: int, step: _Step) -> str:
    if position == 0:
        return "leaf certificate"
    if step.in_store and position == length - 1:
        return "root certificate"
    return "intermediate certificate"


def _where(step: _Step) -> str:
    if step.index is None:
        return "from the trust store"
    return f"the server's {certificate_label(step.index)}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _sentence(error: str | None) -> str:
    text = (error or "could not be parsed").rstrip(".")
    return text[:1].upper() + text[1:] + "."


# --- loading ----------------------------------------------------------------------------------


@functools.cache
def _system_roots() -> tuple[str | None, tuple[x509.Certificate, ...]]:
    """The first system CA bundle found, parsed once per process."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), *FALLBACK_SYSTEM_BUNDLES):
        if not candidate:
            continue
        try:
            data = Path(candidate).read_bytes()
        except OSError:
            continue
        certs = [cert for cert in _pem_certificates(data) if cert is not None]
        if certs:
            return candidate, tuple(certs)
    return None, ()


_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


def _pem_certificates(data: bytes) -> list[x509.Certificate | None]:
    """Each PEM certificate block parsed on its own (None where it fails).

    One odd root must not sink a whole bundle, which is what
    ``load_pem_x509_certificates`` would do.
    """
    results: list[x509.Certificate | None] = []
    start = data.find(_PEM_BEGIN)
    while start != -1:
        end = data.find(_PEM_END, start)
        if end == -1:
            results.append(None)
            break
        block = data[start : end + len(_PEM_END)]
        with warnings.catch_warnings():
            # Some trusted roots have a non-positive serial; cryptography warns about it.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            try:
                results.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                results.append(None)
        start = data.find(_PEM_BEGIN, end)
    return results


def _read_ca_file(path: Path) -> list[x509.Certificate]:
    advice = "pass a PEM file with one or more CA certificates"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TrustStoreError(f"CA file {path}: no such file; {advice}") from None
    except IsADirectoryError:
        raise TrustStoreError(f"CA file {path}: is a directory; {advice}") from None
    except OSError as exc:
        raise TrustStoreError(
            f"CA file {path}: cannot read it ({exc.strerror}); {advice}"
        ) from None
    parsed = _pem_certificates(data)
    broken = [str(n) for n, cert in enumerate(parsed, 1) if cert is None]
    if broken:
        raise TrustStoreError(
            f"CA file {path}: certificate block {', '.join(broken)} could not be parsed; "
            f"fix or remove it, and {advice}"
        )
    if not parsed:
        hint = ""
        try:
            x509.load_der_x509_certificate(data)
            hint = f" (it looks like DER: convert it with 'openssl x509 -inform der -in {path}')"
        except ValueError:
            pass
        raise TrustStoreError(f"CA file {path}: no PEM certificate found{hint}; {advice}")
    return [cert for cert in parsed if cert is not None]
