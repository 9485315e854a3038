"""The server identity check: RFC 6125 §6 / RFC 9525 §6 as RFC 7817 applies them to mail."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from certmatch.core import identity
from certmatch.core.identity import (
    IdentifierCheck,
    IdentityResult,
    PresentedIdentifiers,
    check_identity,
)
from certmatch.lab import pki as certmatch_pki

pytestmark = pytest.mark.pure


def ids(
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    cns: tuple[str, ...] = (),
    *,
    has_san: bool | None = None,
) -> PresentedIdentifiers:
    """Presented identifiers as pure data; has_san defaults to "some SAN entry exists"."""
    san = bool(dns or ips) if has_san is None else has_san
    return PresentedIdentifiers(dns, ips, cns, san)


def only_check(result: IdentityResult) -> IdentifierCheck:
    assert len(result.checks) == 1, result.checks
    return result.checks[0]


def matched(result: IdentityResult) -> IdentifierCheck:
    assert result.matched_by is not None, result.checks
    return result.matched_by


def explained(result: IdentityResult) -> bool:
    """Some identifier is the specific reason the name failed (else: the name is not there)."""
    return any(f.explains_mismatch for f in result.findings)


# --- DNS-ID: exact names ------------------------------------------------------------------


def test_exact_dns_name_matches_case_insensitively():
    result = check_identity("MAIL.Example.COM", ids(dns=("mail.example.com",)))
    assert result.verdict == "match"
    assert result.reference_kind == "dns"
    assert result.normalized == "mail.example.com"
    assert result.matched_by == only_check(result)
    assert matched(result).rule == "exact"
    assert "RFC 6125 §6.4.1" in matched(result).reason
    assert result.flags == frozenset()


def test_trailing_dot_on_reference_still_matches_but_is_flagged():
    result = check_identity("mail.example.com.", ids(dns=("mail.example.com",)))
    assert result.verdict == "match"
    assert result.reference == "mail.example.com."
    assert result.normalized == "mail.example.com"
    assert "trailing-dot" in result.flags


def test_trailing_dot_on_presented_name_is_ignored():
    result = check_identity("mail.example.com", ids(dns=("mail.example.com.",)))
    assert result.verdict == "match"
    assert "trailing-dot" not in result.flags


def test_different_name_is_a_plain_mismatch():
    result = check_identity("imap.example.com", ids(dns=("mail.example.com",)))
    check = only_check(result)
    assert result.verdict == "mismatch"
    assert result.matched_by is None
    assert (check.outcome, check.rule) == ("no-match", "different-name")
    assert "mail.example.com" in check.reason and "imap.example.com" in check.reason
    assert result.flags == frozenset() and not explained(result)


def test_first_matching_identifier_is_reported_and_every_identifier_is_checked():
    presented = ids(
        dns=("other.example.com", "*.example.com", "mail.example.com"),
        ips=("192.0.2.1",),
        cns=("mail.example.com",),
    )
    result = check_identity("mail.example.com", presented)
    assert [c.kind for c in result.checks] == ["dns", "dns", "dns", "ip", "cn"]
    assert [c.presented for c in result.checks] == [
        "other.example.com",
        "*.example.com",
        "mail.example.com",
        "192.0.2.1",
        "mail.example.com",
    ]
    assert result.matched_by is result.checks[1]
    assert matched(result).rule == "wildcard"
    assert result.checks[2].outcome == "match"
    assert (result.checks[3].outcome, result.checks[3].rule) == ("no-match", "reference-is-dns")
    assert result.checks[4].outcome == "not-considered"


def test_invalid_presented_name_is_rejected():
    result = check_identity("mail.example.com", ids(dns=("mail..example.com", "mail example.com")))
    assert [(c.outcome, c.rule) for c in result.checks] == [("rejected", "invalid-name")] * 2
    assert "empty label" in result.checks[0].reason
    assert result.verdict == "mismatch"


# --- wildcards ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "verdict", "rule"),
    [
        ("foo.example.com", "match", "wildcard"),
        ("bar.foo.example.com", "mismatch", "wildcard-too-deep"),
        ("example.com", "mismatch", "wildcard-apex"),
    ],
)
def test_rfc6125_wildcard_examples(reference: str, verdict: str, rule: str):
    result = check_identity(reference, ids(dns=("*.example.com",)))
    assert result.verdict == verdict
    assert only_check(result).rule == rule
    assert "RFC 6125 §6.4.3" in only_check(result).reason


def test_wildcard_too_deep_explains_the_depth():
    result = check_identity("a.b.example.com", ids(dns=("*.example.com",)))
    check = only_check(result)
    assert check.outcome == "no-match"
    assert "two labels below example.com" in check.reason
    assert result.flags == {"wildcard-too-deep"}


def test_wildcard_does_not_cover_the_apex():
    result = check_identity("example.com", ids(dns=("*.example.com",)))
    assert only_check(result).outcome == "no-match"
    assert result.flags == {"wildcard-apex"}


def test_wildcard_for_another_domain_is_just_a_different_name():
    result = check_identity("mail.example.org", ids(dns=("*.example.com",)))
    assert only_check(result).rule == "different-name"
    assert result.flags == frozenset() and not explained(result)


@pytest.mark.parametrize(
    ("pattern", "reference", "openssl_accepts"),
    [
        ("baz*.example.net", "baz1.example.net", True),
        ("*baz.example.net", "foobaz.example.net", True),
        ("b*z.example.net", "buzz.example.net", False),
        ("w*.example.com", "www.example.com", True),
    ],
)
def test_partial_wildcards_are_rejected(pattern: str, reference: str, openssl_accepts: bool):
    result = check_identity(reference, ids(dns=(pattern,)))
    check = only_check(result)
    assert result.verdict == "mismatch"
    assert (check.outcome, check.rule) == ("rejected", "wildcard-partial")
    assert result.flags == {"wildcard-partial"}
    assert ("OpenSSL's default (lax) rules would still have accepted it" in check.reason) == (
        openssl_accepts
    )


def test_partial_wildcard_that_could_not_match_anyway_is_not_the_cause():
    result = check_identity("mail.other.org", ids(dns=("w*.example.com",)))
    assert only_check(result).rule == "wildcard-partial"
    assert "OpenSSL" not in only_check(result).reason
    assert result.flags == frozenset() and not explained(result)


def test_openssl_refuses_partial_wildcards_over_idn_labels():
    result = check_identity("xn--bcher-kva.example.com", ids(dns=("x*.example.com",)))
    assert only_check(result).rule == "wildcard-partial"
    assert "OpenSSL's default" not in only_check(result).reason


def test_wildcard_not_in_leftmost_label_is_rejected():
    result = check_identity("www.mail.example.com", ids(dns=("www.*.example.com",)))
    check = only_check(result)
    assert (check.outcome, check.rule) == ("rejected", "wildcard-not-leftmost")
    assert result.flags == {"wildcard-not-leftmost"}


def test_double_wildcard_is_not_leftmost():
    result = check_identity("a.b.example.com", ids(dns=("*.*.example.com",)))
    assert only_check(result).rule == "wildcard-not-leftmost"


@pytest.mark.parametrize(
    ("pattern", "reference"),
    [("*.com", "example.com"), ("*.co.uk", "foo.co.uk"), ("*.test", "example.test"), ("*", "x")],
)
def test_wildcard_over_a_public_suffix_is_rejected(pattern: str, reference: str):
    result = check_identity(reference, ids(dns=(pattern,)))
    check = only_check(result)
    assert (check.outcome, check.rule) == ("rejected", "wildcard-public-suffix")
    assert result.flags == {"wildcard-public-suffix"}


def test_wildcard_below_a_registrable_domain_of_an_unlisted_tld_is_fine():
    # .test is not in the PSL; its default rule "*" makes example.test registrable.
    result = check_identity("mail.example.test", ids(dns=("*.example.test",)))
    assert result.verdict == "match"


def test_public_suffix_check_falls_back_to_two_labels(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(identity, "_public_suffix_list", lambda: None)
    assert check_identity("foo.co.uk", ids(dns=("*.co.uk",))).verdict == "match"
    assert only_check(check_identity("example.com", ids(dns=("*.com",)))).rule == (
        "wildcard-public-suffix"
    )


def test_wildcard_does_not_stand_for_an_idn_label():
    result = check_identity("xn--bcher-kva.example.com", ids(dns=("*.example.com",)))
    check = only_check(result)
    assert (check.outcome, check.rule) == ("rejected", "wildcard-idn")
    assert result.flags == {"wildcard-idn"}
    # The same, when the client gave the U-label form.
    result = check_identity("bücher.example.com", ids(dns=("*.example.com",)))
    assert only_check(result).rule == "wildcard-idn"
    assert result.flags == {"wildcard-idn", "idn-form"}


# --- IDN ----------------------------------------------------------------------------------


def test_u_label_reference_matches_a_label_name():
    result = check_identity("Bücher.example", ids(dns=("xn--bcher-kva.example",)))
    assert result.verdict == "match"
    assert result.normalized == "xn--bcher-kva.example"
    assert result.flags == {"idn-form"}
    assert "RFC 6125 §6.4.2" in matched(result).reason


def test_non_ascii_dns_name_is_invalid():
    result = check_identity("xn--bcher-kva.example", ids(dns=("bücher.example",)))
    check = only_check(result)
    assert (check.outcome, check.rule) == ("rejected", "invalid-name")
    assert "IA5String" in check.reason and "xn--bcher-kva.example" in check.reason
    assert "would have matched" in check.reason
    assert result.flags == {"idn-form"}


def test_unconvertible_reference_is_invalid():
    result = check_identity("a\u200d.example", ids(dns=("a.example",)))
    assert result.reference_kind == "invalid"
    assert result.verdict == "mismatch"
    assert only_check(result).rule == "invalid-reference"


# --- NUL and control characters -----------------------------------------------------------


def test_nul_in_name_is_an_attack_that_would_fool_a_vulnerable_client():
    result = check_identity("mail.example.com", ids(dns=("mail.example.com\x00.evil.example",)))
    check = only_check(result)
    assert (check.outcome, check.rule) == ("rejected", "nul-in-name")
    assert "CVE-2009-2408" in check.reason and "attack" in check.reason
    assert "would have accepted it for mail.example.com" in check.reason
    assert result.flags == {"nul-in-name"} and explained(result)


def test_nul_in_name_for_an_unrelated_host():
    result = check_identity("mail.example.com", ids(dns=("other.example\x00.com",)))
    check = only_check(result)
    assert check.rule == "nul-in-name"
    assert "would have accepted" not in check.reason
    assert result.flags == {"nul-in-name"} and not explained(result)


@pytest.mark.parametrize("char", ["\x01", "\n", "\x1f", "\x7f"])
def test_any_control_character_counts_like_a_nul(char: str):
    result = check_identity("mail.example.com", ids(cns=(f"mail.example.com{char}x",)))
    assert only_check(result).rule == "nul-in-name"
    assert "nul-in-name" in result.flags


def test_nul_in_cn_is_rejected_even_when_dns_ids_exist():
    presented = ids(dns=("other.example.com",), cns=("mail.example.com\x00.evil",))
    result = check_identity("mail.example.com", presented)
    assert (result.checks[1].outcome, result.checks[1].rule) == ("rejected", "nul-in-name")


def test_reference_with_control_characters_is_invalid():
    result = check_identity("mail.example.com\x00.evil", ids(dns=("mail.example.com",)))
    assert result.reference_kind == "invalid"
    assert result.verdict == "mismatch"
    assert "\\x00" in only_check(result).reason


# --- IP-ID --------------------------------------------------------------------------------


def test_ipv6_written_differently_still_matches():
    result = check_identity("2001:DB8:0:0::1", ids(ips=("2001:db8::1",)))
    assert result.reference_kind == "ip"
    assert result.normalized == "2001:db8::1"
    assert result.verdict == "match"
    assert matched(result).rule == "ip-match"
    assert result.flags == frozenset()


def test_bracketed_ipv6_reference_is_accepted():
    result = check_identity("[2001:db8::1]", ids(ips=("2001:db8::1",)))
    assert (result.reference_kind, result.verdict) == ("ip", "match")


def test_other_ip_address_does_not_match():
    result = check_identity("192.0.2.1", ids(ips=("192.0.2.2",)))
    assert only_check(result).rule == "ip-mismatch"
    assert result.flags == {"ip-mismatch"}


def test_ipv4_mapped_ipv6_is_not_the_same_octets():
    result = check_identity("::ffff:192.0.2.1", ids(ips=("192.0.2.1",)))
    assert result.verdict == "mismatch"
    assert "IPv4-mapped" in only_check(result).reason


def test_ip_in_dns_name_or_cn_never_counts():
    result = check_identity("192.0.2.1", ids(dns=("192.0.2.1",), cns=("192.0.2.1",)))
    assert [(c.outcome, c.rule) for c in result.checks] == [
        ("no-match", "ip-as-dns-name"),
        ("not-considered", "ip-in-cn"),
    ]
    assert result.verdict == "mismatch"
    assert result.flags == {"ip-as-dns-name", "ip-in-cn", "ip-mismatch"}


def test_ip_in_cn_of_a_cn_only_certificate():
    result = check_identity("192.0.2.1", ids(cns=("192.0.2.1",), has_san=False))
    assert (only_check(result).outcome, only_check(result).rule) == ("no-match", "ip-in-cn")
    assert result.flags == {"ip-in-cn", "ip-mismatch"}


def test_dns_reference_never_matches_an_ip_address_and_vice_versa():
    result = check_identity("mail.example.com", ids(ips=("192.0.2.1",)))
    assert only_check(result).rule == "reference-is-dns"
    assert result.verdict == "mismatch"
    result = check_identity("192.0.2.1", ids(dns=("mail.example.com",)))
    assert only_check(result).rule == "reference-is-ip"
    assert result.flags == {"ip-mismatch"}


def test_unparsable_ip_text_is_rejected():
    result = check_identity("192.0.2.1", ids(ips=("192.0.2.0/24",)))
    assert (only_check(result).outcome, only_check(result).rule) == ("rejected", "invalid-name")


# --- CN-ID --------------------------------------------------------------------------------


def test_cn_only_certificate_is_a_legacy_match():
    result = check_identity("mail.example.com", ids(cns=("mail.example.com",), has_san=False))
    check = only_check(result)
    assert result.verdict == "legacy-match"
    assert result.matched_by == check
    assert (check.outcome, check.rule) == ("match", "cn-only-legacy")
    assert "RFC 6125 §6.4.4" in check.reason and "RFC 9525" in check.reason
    assert result.flags == {"cn-only-legacy"}


def test_wildcard_cn_follows_the_same_rules():
    presented = ids(cns=("*.example.com",), has_san=False)
    assert check_identity("mail.example.com", presented).verdict == "legacy-match"
    result = check_identity("a.b.example.com", presented)
    assert result.verdict == "mismatch"
    assert only_check(result).rule == "wildcard-too-deep"


def test_cn_is_consulted_when_the_san_has_no_dns_name():
    presented = ids(ips=("192.0.2.1",), cns=("mail.example.com",))
    result = check_identity("mail.example.com", presented)
    assert result.verdict == "legacy-match"
    assert matched(result).kind == "cn"


def test_cn_is_ignored_when_dns_ids_exist():
    presented = ids(dns=("other.example.com",), cns=("mail.example.com",))
    result = check_identity("mail.example.com", presented)
    cn = result.checks[1]
    assert result.verdict == "mismatch"
    assert (cn.outcome, cn.rule) == ("not-considered", "cn-ignored-san-present")
    assert result.flags == {"cn-ignored-san-present"}


def test_non_matching_cn_beside_dns_ids_is_not_considered_without_a_flag():
    presented = ids(dns=("mail.example.com",), cns=("something else",))
    result = check_identity("mail.example.com", presented)
    assert result.verdict == "match"
    assert result.checks[1].outcome == "not-considered"
    assert result.flags == frozenset()


def test_dns_id_match_beats_a_legacy_cn():
    presented = ids(dns=("mail.example.com",), cns=("mail.example.com",))
    result = check_identity("mail.example.com", presented)
    assert result.verdict == "match"
    assert matched(result).kind == "dns"


# --- unusable references ------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["", "   ", None, "*.example.com", "mail.example.com:993"])
def test_unusable_reference_is_a_mismatch_not_a_crash(reference: str | None):
    result = check_identity(reference, ids(dns=("mail.example.com",), ips=("192.0.2.1",)))
    assert result.reference_kind == "invalid"
    assert result.verdict == "mismatch"
    assert result.matched_by is None
    assert all(c.rule == "invalid-reference" for c in result.checks)
    assert result.flags == {"invalid-reference"}


def test_host_and_port_reference_gets_a_hint():
    result = check_identity("mail.example.com:993", ids(dns=("mail.example.com",)))
    assert "host:port" in only_check(result).reason


# --- reasons ------------------------------------------------------------------------------

REASON_CASES = [
    ("mail.example.com", ids(dns=("mail.example.com", "*.example.org", "w*.example.com"))),
    ("a.b.example.com", ids(dns=("*.example.com", "*.com", "a.*.example.com"))),
    ("192.0.2.1", ids(dns=("192.0.2.1",), ips=("192.0.2.9",), cns=("x.example",))),
    ("mail.example.com", ids(cns=("mail.example.com",), has_san=False)),
    ("mail.example.com", ids(dns=("bücher.example", "a\x00b.example"))),
]


@pytest.mark.parametrize(("reference", "presented"), REASON_CASES)
def test_every_reason_is_one_sentence_naming_the_identifier_and_a_source(
    reference: str, presented: PresentedIdentifiers
):
    for check in check_identity(reference, presented).checks:
        shown = check.presented.replace("\x00", "\\x00")
        assert shown in check.reason
        assert "RFC" in check.reason or "CVE" in check.reason
        assert check.reason.endswith(".")
        assert "\n" not in check.reason and check.reason.count(". ") == 0


# --- real certificates --------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_ca() -> certmatch_pki.Issued:
    return certmatch_pki.make_ca("certmatch identity test CA")


def _self_signed_with(extension: x509.ExtensionType, cn: str = "odd.example") -> x509.Certificate:
    """A certificate whose subjectAltName is exactly ``extension`` (possibly raw DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(extension, critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _raw_san(der: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, der)


def test_from_certificate_reads_san_and_cn(test_ca: certmatch_pki.Issued):
    leaf = certmatch_pki.issue_leaf(
        test_ca,
        cn="mail.example.test",
        dns=["mail.example.test", "*.example.test"],
        ips=["192.0.2.7", "2001:DB8:0::7"],
    )
    presented = PresentedIdentifiers.from_certificate(leaf.cert)
    assert presented == PresentedIdentifiers(
        dns_names=("mail.example.test", "*.example.test"),
        ip_addresses=("192.0.2.7", "2001:db8::7"),
        common_names=("mail.example.test",),
        has_san=True,
    )
    assert matched(check_identity("imap.example.test", presented)).presented == "*.example.test"
    assert check_identity("2001:db8:0:0:0:0:0:7", presented).verdict == "match"
    assert check_identity("192.0.2.8", presented).flags == {"ip-mismatch"}


def test_from_certificate_keeps_a_nul_in_the_san(test_ca: certmatch_pki.Issued):
    leaf = certmatch_pki.issue_leaf(test_ca, dns=["mail.example.test\x00.attacker.example"])
    presented = PresentedIdentifiers.from_certificate(leaf.cert)
    assert presented.dns_names == ("mail.example.test\x00.attacker.example",)
    result = check_identity("mail.example.test", presented)
    assert result.verdict == "mismatch"
    assert result.checks[0].rule == "nul-in-name"
    assert "would have accepted" in result.checks[0].reason


def test_from_certificate_cn_only(test_ca: certmatch_pki.Issued):
    leaf = certmatch_pki.issue_leaf(test_ca, cn="mail.example.test")
    presented = PresentedIdentifiers.from_certificate(leaf.cert)
    assert presented == PresentedIdentifiers((), (), ("mail.example.test",), has_san=False)
    result = check_identity("mail.example.test", presented)
    assert (result.verdict, result.flags) == ("legacy-match", {"cn-only-legacy"})


def test_from_certificate_without_cn(test_ca: certmatch_pki.Issued):
    leaf = certmatch_pki.issue_leaf(test_ca, ips=["192.0.2.7"])
    presented = PresentedIdentifiers.from_certificate(leaf.cert)
    assert presented == PresentedIdentifiers((), ("192.0.2.7",), (), has_san=True)
    assert check_identity("192.0.2.7", presented).verdict == "match"


def test_from_certificate_with_a_san_that_has_no_dns_or_ip():
    cert = _self_signed_with(
        x509.SubjectAlternativeName([x509.RFC822Name("postmaster@example.test")]),
        cn="mail.example.test",
    )
    presented = PresentedIdentifiers.from_certificate(cert)
    assert presented == PresentedIdentifiers((), (), ("mail.example.test",), has_san=True)
    assert check_identity("mail.example.test", presented).verdict == "legacy-match"


def test_from_certificate_with_a_non_ascii_dns_name():
    value = "bücher.example".encode()
    der = bytes([0x30, len(value) + 2, 0x82, len(value)]) + value
    presented = PresentedIdentifiers.from_certificate(_self_signed_with(_raw_san(der)))
    assert presented.dns_names == ("bücher.example",)
    result = check_identity("xn--bcher-kva.example", presented)
    assert result.checks[0].rule == "invalid-name"
    assert "idn-form" in result.flags


def test_from_certificate_with_an_undecodable_san_raises_a_clear_value_error():
    cert = _self_signed_with(_raw_san(b"\x30\x05\x82\x10abc"))
    with pytest.raises(ValueError, match="subjectAltName cannot be read"):
        PresentedIdentifiers.from_certificate(cert)


# --- properties ---------------------------------------------------------------------------

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?", fullmatch=True)
TOP_LABEL = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)  # never all-numeric
HOSTNAME = st.builds(
    lambda labels, top: ".".join([*labels, top]), st.lists(LABEL, min_size=1, max_size=4), TOP_LABEL
)
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[*a-zA-Z0-9.\-_:\[\]\x00\x7f ü。]{0,30}", fullmatch=True),
    HOSTNAME,
)


def _any_case(data: st.DataObject, text: str) -> str:
    upper = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))


@settings(max_examples=200, deadline=None)
@given(
    reference=st.one_of(st.none(), ODD_TEXT),
    dns=st.lists(ODD_TEXT, max_size=3),
    ips=st.lists(st.one_of(ODD_TEXT, st.ip_addresses().map(str)), max_size=2),
    cns=st.lists(ODD_TEXT, max_size=2),
    has_san=st.booleans(),
)
def test_check_identity_never_raises(reference, dns, ips, cns, has_san):
    presented = PresentedIdentifiers(tuple(dns), tuple(ips), tuple(cns), has_san)
    result = check_identity(reference, presented)
    assert len(result.checks) == len(dns) + len(ips) + len(cns)
    assert result.verdict in ("match", "legacy-match", "mismatch")
    assert (result.matched_by is None) == (result.verdict == "mismatch")
    assert result.matched_by is None or result.matched_by in result.checks
    assert all(c.reason and c.rule for c in result.checks)


@settings(max_examples=200, deadline=None)
@given(host=HOSTNAME, trailing_dot=st.booleans(), data=st.data())
def test_exact_dns_name_always_matches_in_any_case(host: str, trailing_dot: bool, data):
    reference = _any_case(data, host) + ("." if trailing_dot else "")
    presented = ids(dns=(_any_case(data, host),))
    result = check_identity(reference, presented)
    assert result.verdict == "match"
    assert matched(result).rule == "exact"
    assert ("trailing-dot" in result.flags) == trailing_dot


@settings(max_examples=200, deadline=None)
@given(reference=st.one_of(st.none(), ODD_TEXT, st.ip_addresses().map(str)), has_san=st.booleans())
def test_nothing_matches_a_certificate_without_identifiers(reference, has_san: bool):
    result = check_identity(reference, PresentedIdentifiers((), (), (), has_san))
    assert result.verdict == "mismatch"
    assert result.checks == ()
    assert result.matched_by is None


@pytest.mark.parametrize(
    ("reference", "common_name"),
    [
        ("key.example.com", "\u212aey.example.com"),  # KELVIN SIGN, which UTS #46 maps to k
        ("mail.example.com", "mail\u3002example\u3002com"),  # ideographic full stops
        ("mail.example.com", "\uff0a.example.com"),  # a full-width asterisk is no wildcard
    ],
)
def test_presented_names_are_not_remapped_into_a_match(reference, common_name):
    result = check_identity(reference, PresentedIdentifiers((), (), (common_name,), has_san=False))
    assert result.verdict == "mismatch"
    assert result.checks[0].rule == "invalid-name"


def test_a_u_label_common_name_still_matches_its_a_label():
    result = check_identity(
        "xn--bcher-kva.example.com",
        PresentedIdentifiers((), (), ("bücher.example.com",), has_san=False),
    )
    assert result.verdict == "legacy-match"


def test_a_bare_wildcard_san_is_named_by_its_own_rule():
    """Issue 13: a dNSName of just "*" was reported only as cn-ignored-san-present (the CN it
    hides). It is refused as a wildcard over the DNS root, and that is why the name failed."""
    result = check_identity(
        "mail.example.com", ids(dns=("*",), cns=("mail.example.com",), has_san=True)
    )
    assert result.verdict == "mismatch"
    star = result.checks[0]
    assert (star.outcome, star.rule) == ("rejected", "wildcard-public-suffix")
    assert "every name directly under the DNS root" in star.reason
    assert "it matches no name, mail.example.com included" in star.reason
    assert result.flags == {"wildcard-public-suffix", "cn-ignored-san-present"}
    assert any(f.rule == "wildcard-public-suffix" and f.explains_mismatch for f in result.findings)


def test_a_bare_wildcard_says_nothing_about_an_ip_reference():
    """Against an address, a bare "*" is just not an iPAddress: no wildcard finding."""
    result = check_identity("192.0.2.1", ids(dns=("*",), ips=("192.0.2.1",)))
    assert result.verdict == "match"
    assert "wildcard-public-suffix" not in result.flags


def test_an_underscore_in_the_matching_name_is_a_warning():
    """Issue 13: accepted (OpenSSL and GnuTLS match it), with underscore-in-name."""
    result = check_identity("foo_bar.example.com", ids(dns=("foo_bar.example.com",)))
    assert result.verdict == "match"
    assert result.flags == {"underscore-in-name"}
    assert "outside the preferred name syntax of RFC 5280 §4.2.1.6" in matched(result).reason
    wildcard = check_identity("foo_bar.example.com", ids(dns=("*.example.com",)))
    assert wildcard.verdict == "match" and wildcard.flags == {"underscore-in-name"}
