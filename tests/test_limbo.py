"""x509-limbo's server cases through certmatch's judge (tests/data/limbo, Apache-2.0).

Each case is one session: the server sends the peer certificate and the
case's intermediates, the client asked for the case's peer name, the store
holds the case's trusted certificates, and the capture time is the case's
validation time. certmatch accepts when the verdict is ``match`` with no
failing cause (``Judgement.failed`` is false); limbo's expected result says
whether a conforming client accepts.

Namespaces (issue 13): ``rfc5280::``, ``pathlen::``, ``pathological::`` and
``cve::`` must agree, in bounded time. Where they do not yet, the case is in
NOT_YET, a strict xfail with the cause that will settle it (proposed in
/work/notes/limbo-causes.md, not in the catalogue yet). ``webpki::`` follows
CA/Browser Forum rules stricter than a mail client's; where certmatch differs
on purpose the case is in DIFFERS_ON_PURPOSE, with its reason, and the test
asserts certmatch's own answer. The ``rfc5280::`` cases that rest on what a
conforming CA must issue (RFC 5280 §4) rather than on path validation (§6.1),
which no mail client's verifier enforces, are in PROFILE_FLAGGED: accepted as
those clients accept them, never silently: the ``ca-profile-violation`` warning
names the broken rule.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from certmatch.core.causes import cause_of
from certmatch.core.certificates import parse_chain
from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judge
from certmatch.core.trust import TrustStore, assess_trust

pytestmark = pytest.mark.pure

SUITE_FILE = Path(__file__).parent / "data" / "limbo" / "limbo-server.json"
SUITE: dict[str, Any] = json.loads(SUITE_FILE.read_text(encoding="utf-8"))
CASES: dict[str, dict[str, Any]] = {case["id"]: case for case in SUITE["testcases"]}
# A case without a validation time leaves it to the harness; their certificates are valid from
# 1970 to 2969, so any fixed moment does: the day of the x509-limbo commit the cases come from.
UNDATED_AT = datetime(2026, 6, 29, tzinfo=UTC)
# Seconds one case may take, on a loaded 2-core machine; the slowest (nc-dos) take ~0.2 s.
BUDGET = 10.0

# -- cases certmatch gets wrong today: each waits for a cause not in the catalogue yet ---------

_NC = "name-constraints-violated (RFC 5280 §4.2.1.10, §6.1.3 (b), (c))"
_PATHLEN = "path-length-exceeded (RFC 5280 §4.2.1.9, §6.1.4 (l), (m))"
_NOT_A_CA = "not-a-ca (RFC 5280 §4.2.1.3, §4.2.1.9, §6.1.4 (k), (n))"
NOT_YET: dict[str, str] = {}

# -- cases where certmatch answers otherwise on purpose --------------------------------------

_CN = (
    "the certificate has a DNS-ID, so the CN is not consulted (RFC 6125 §6.4.4, RFC 9525 §2): "
    "CA/Browser Forum BR 7.1.4.3 on what the CN holds binds the CA, not a mail client"
)
_KEY = (
    "CA/Browser Forum BR §6.1.5 key rules; OpenSSL-based mail clients accept the key (their "
    "security level, not certmatch, refuses the weakest ones)"
)
_EKU = "a mail client does not require serverAuth beyond RFC 5280 §4.2.1.12"
DIFFERS_ON_PURPOSE: dict[str, str] = {
    "rfc5280::san::underscore-dns": "an underscore is outside RFC 5280 §4.2.1.6's preferred "
    "syntax, yet OpenSSL and GnuTLS match it and internal mail hosts use it: accepted, with the "
    "underscore-in-name warning",
    "webpki::aki::root-with-aki-missing-keyidentifier": "CA/Browser Forum BR 7.1.2.1.3 binds the "
    "root's CA; a trusted root is an anchor as it is",
    "webpki::aki::root-with-aki-authoritycertissuer": "CA/Browser Forum BR 7.1.2.1.3 (root AKI)",
    "webpki::aki::root-with-aki-authoritycertserialnumber": "CA/Browser Forum BR 7.1.2.1.3",
    "webpki::aki::root-with-aki-all-fields": "CA/Browser Forum BR 7.1.2.1.3 (root AKI)",
    "webpki::aki::root-with-aki-ski-mismatch": "CA/Browser Forum BR 7.1.2.1.3 (root AKI)",
    "webpki::cn::ipv4-hex-mismatch": _CN,
    "webpki::cn::ipv4-leading-zeros-mismatch": _CN,
    "webpki::cn::ipv6-uppercase-mismatch": _CN,
    "webpki::cn::ipv6-uncompressed-mismatch": _CN,
    "webpki::cn::ipv6-non-rfc5952-mismatch": _CN,
    "webpki::cn::punycode-not-in-san": _CN,
    "webpki::cn::utf8-vs-punycode-mismatch": _CN,
    "webpki::cn::not-in-san": _CN,
    "webpki::cn::case-mismatch": _CN,
    "webpki::eku::ee-anyeku": f"{_EKU}: anyExtendedKeyUsage admits any purpose",
    "webpki::eku::ee-critical-eku": f"{_EKU}: a critical extKeyUsage with serverAuth is processed",
    "webpki::eku::ee-without-eku": f"{_EKU}: without extKeyUsage the key serves any purpose",
    "webpki::eku::root-has-eku": "CA/Browser Forum BR 7.1.2.1.2 forbids EKU in a root; a root's "
    "serverAuth usage does not bar a server leaf",
    "webpki::san::public-suffix-private-namespace-wildcard-san": "certmatch refuses wildcards on "
    "ICANN public suffixes only, as Chrome does: private suffixes such as s3.amazonaws.com "
    "legitimately carry wildcard certificates",
    "webpki::san::san-critical-with-nonempty-subject": "CA/Browser Forum BR 7.1.2.7.12 binds the "
    "CA; clients process a critical SAN",
    "webpki::forbidden-p192-root": _KEY,
    "webpki::forbidden-p192-leaf": _KEY,
    "webpki::forbidden-dsa-root": _KEY,
    "webpki::forbidden-dsa-leaf": _KEY,
    "webpki::forbidden-weak-rsa-key-in-root": _KEY,
    "webpki::forbidden-weak-rsa-in-leaf": _KEY,
    "webpki::forbidden-rsa-not-divisible-by-8-in-root": _KEY,
    "webpki::forbidden-rsa-key-not-divisible-by-8-in-leaf": _KEY,
    "webpki::ee-basicconstraints-ca": "CA/Browser Forum BR 7.1.2.7.8; RFC 5280 lets a CA "
    "certificate serve as a leaf (x509-limbo rfc5280::ca-as-leaf)",
    "webpki::ca-as-leaf": "CA/Browser Forum BR 7.1.2.7.8 and 7.1.2.7.11; RFC 5280 lets a CA "
    "certificate serve as a leaf (x509-limbo rfc5280::ca-as-leaf)",
}


# -- cases limbo refuses for a rule RFC 5280 §4 sets the issuing CA: flagged, not failed ------
# Path validation (RFC 5280 §6.1) does not check these rules, and OpenSSL's and GnuTLS's
# default verifiers, so the mail clients built on them, accept the chain. certmatch agrees with
# those clients on the verdict and names the broken rule in the ca-profile-violation warning,
# so no such chain passes silently. Each case maps to the section the warning must name.
PROFILE_FLAGGED: dict[str, str] = {
    "rfc5280::nc::permitted-dns-match-noncritical": "§4.2.1.10",
    "rfc5280::nc::not-allowed-in-ee-noncritical": "§4.2.1.10",
    "rfc5280::nc::not-allowed-in-ee-critical": "§4.2.1.10",
    "rfc5280::aki::leaf-missing-aki": "§4.2.1.1",
    "rfc5280::aki::intermediate-missing-aki": "§4.2.1.1",
    "rfc5280::aki::cross-signed-root-missing-aki": "§4.2.1.1",
    "rfc5280::ski::root-missing-ski": "§4.2.1.2",
    "rfc5280::ski::intermediate-missing-ski": "§4.2.1.2",
    "rfc5280::serial::too-long": "§4.1.2.2",
    "rfc5280::serial::zero": "§4.1.2.2",
    "rfc5280::pc::ica-noncritical-pc": "§4.2.1.11",
    "rfc5280::san::noncritical-with-empty-subject": "§4.2.1.6",
    "rfc5280::root-non-critical-basic-constraints": "§4.2.1.9",
    "rfc5280::leaf-ku-keycertsign": "§4.2.1.3",
}


@dataclass(frozen=True)
class Outcome:
    """certmatch's answer to one case."""

    accepted: bool
    verdict: str
    causes: tuple[str, ...]
    seconds: float


def _load(pem: str) -> x509.Certificate:
    with warnings.catch_warnings():
        # rfc5280::serial::zero and friends: cryptography warns about a non-positive serial
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_pem_x509_certificate(pem.encode("ascii"))


def _der_b64(pem: str) -> str:
    return base64.b64encode(_load(pem).public_bytes(Encoding.DER)).decode("ascii")


def judge_case(case: dict[str, Any]) -> Outcome:
    """Judge one limbo case as certmatch judges a recorded session."""
    at = datetime.fromisoformat(case["validation_time"]) if case["validation_time"] else UNDATED_AT
    roots = tuple(_load(pem) for pem in case["trusted_certs"])
    store = TrustStore(roots, (f"x509-limbo {case['id']}",))
    chain = [_der_b64(case["peer_certificate"])]
    chain += [_der_b64(pem) for pem in case["untrusted_intermediates"]]
    peer = case["expected_peer_name"]
    started = time.perf_counter()
    if peer is None:
        # No name to check (limbo checks the path alone): certmatch's trust judgement alone.
        trust = assess_trust(parse_chain(chain), at, store)
        failing = tuple(p.id.value for p in trust.problems if cause_of(p.id).severity != "warning")
        accepted = trust.trusted and not failing
        found = tuple(p.id.value for p in trust.problems)
        return Outcome(accepted, "trusted" if accepted else "untrusted", found, _since(started))
    name = peer["value"]
    facts = SessionFacts(
        id=case["id"],
        started=at.isoformat(),
        requested_host=name,
        requested_host_source="option",  # as with --host; the peer name is the client's setting
        sni=name if peer["kind"] == "DNS" else None,  # clients send no SNI for an address
        chain=chain,
    )
    judgement = Judge(store).judgement(facts)
    return Outcome(not judgement.failed, judgement.verdict, judgement.causes, _since(started))


def _since(started: float) -> float:
    return time.perf_counter() - started


def _params() -> list[Any]:
    params = []
    for case_id in CASES:
        if case_id in DIFFERS_ON_PURPOSE or case_id in PROFILE_FLAGGED:
            continue  # asserted by their own tests below
        marks = []
        if case_id in NOT_YET:
            marks.append(pytest.mark.xfail(strict=True, reason=NOT_YET[case_id]))
        params.append(pytest.param(case_id, id=case_id, marks=marks))
    return params


@pytest.mark.parametrize("case_id", _params())
def test_certmatch_agrees_with_limbo(case_id: str) -> None:
    """Accept what limbo accepts and refuse, with a cause, what it refuses; never hang."""
    case = CASES[case_id]
    outcome = judge_case(case)
    assert outcome.seconds < BUDGET, f"{case_id} took {outcome.seconds:.1f} s"
    expected = case["expected_result"] == "SUCCESS"
    assert outcome.accepted == expected, (
        f"{case_id}: limbo {'accepts' if expected else 'refuses'}, certmatch says "
        f"{outcome.verdict} {list(outcome.causes)}"
    )
    if not expected:
        assert outcome.causes, f"{case_id}: refused without a cause to show"


@pytest.mark.parametrize("case_id", sorted(PROFILE_FLAGGED))
def test_a_ca_profile_breach_is_flagged_with_its_rule_and_accepted_as_clients_do(
    case_id: str,
) -> None:
    case = CASES[case_id]
    assert case["expected_result"] == "FAILURE"
    outcome = judge_case(case)
    assert outcome.seconds < BUDGET, f"{case_id} took {outcome.seconds:.1f} s"
    assert outcome.accepted, f"{case_id}: {outcome.verdict} {list(outcome.causes)}"
    assert "ca-profile-violation" in outcome.causes, outcome.causes
    at = datetime.fromisoformat(case["validation_time"]) if case["validation_time"] else UNDATED_AT
    store = TrustStore(tuple(_load(pem) for pem in case["trusted_certs"]), (case_id,))
    chain = [_der_b64(case["peer_certificate"])]
    chain += [_der_b64(pem) for pem in case["untrusted_intermediates"]]
    [warning] = [
        p
        for p in assess_trust(parse_chain(chain), at, store).problems
        if p.id.value == "ca-profile-violation"
    ]
    assert f"({PROFILE_FLAGGED[case_id]})" in warning.detail, warning.detail


@pytest.mark.parametrize("case_id", sorted(DIFFERS_ON_PURPOSE))
def test_certmatch_differs_on_purpose(case_id: str) -> None:
    """The deliberate differences hold as listed: certmatch answers the other way."""
    case = CASES[case_id]
    outcome = judge_case(case)
    assert outcome.seconds < BUDGET, f"{case_id} took {outcome.seconds:.1f} s"
    limbo_accepts = case["expected_result"] == "SUCCESS"
    assert outcome.accepted != limbo_accepts, (
        f"{case_id} now agrees with limbo ({outcome.verdict} {list(outcome.causes)}): take it "
        "out of DIFFERS_ON_PURPOSE"
    )


def test_the_tables_name_kept_cases_only_and_never_both() -> None:
    """No stale entry (a case the filter dropped) and no case in both tables."""
    assert set(NOT_YET) <= set(CASES)
    assert set(DIFFERS_ON_PURPOSE) <= set(CASES)
    assert set(PROFILE_FLAGGED) <= set(CASES)
    assert not set(NOT_YET) & set(DIFFERS_ON_PURPOSE)
    assert not set(PROFILE_FLAGGED) & (set(NOT_YET) | set(DIFFERS_ON_PURPOSE))


def test_in_the_strict_namespaces_only_ca_profile_rules_differ_on_purpose() -> None:
    """rfc5280::, pathlen::, pathological:: and cve:: differ on purpose only for the underscore
    (accepted with a warning); webpki:: differences are all CA/Browser Forum rules."""
    strict = ("rfc5280::", "pathlen::", "pathological::", "cve::")
    on_purpose = [case_id for case_id in DIFFERS_ON_PURPOSE if case_id.startswith(strict)]
    for case_id in on_purpose:
        reason = DIFFERS_ON_PURPOSE[case_id]
        assert "underscore" in reason
    assert not [c for c in NOT_YET if c.startswith("webpki::")]


def test_the_suite_is_limbo_at_a_known_commit_with_its_license() -> None:
    """Apache-2.0: the license travels with the cases, and the source commit is recorded."""
    assert SUITE["version"] == 1
    assert SUITE["source"].startswith("https://github.com/C2SP/x509-limbo/tree/")
    assert len(SUITE["source"].rsplit("/", 1)[1]) == 40
    license_text = (SUITE_FILE.parent / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert len(CASES) == len(SUITE["testcases"])  # ids are unique
