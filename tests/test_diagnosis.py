"""diagnose(): verdicts, primary causes and explanations from facts alone (pure, minted certificates)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmatch.core import causes
from certmatch.core.diagnosis import diagnose
from certmatch.core.dns_facts import DnsAnswer, DnsFacts
from certmatch.core.facts import SessionFacts, SniProbe
from certmatch.core.trust import TrustStore
from certmatch.lab import pki

pytestmark = pytest.mark.pure

UTC = dt.UTC


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    root = pki.make_ca("Diagnosis Root")
    inter = pki.make_ca("Diagnosis Intermediate", parent=root)
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(root.cert_pem())
    return inter, TrustStore.load([path], use_system=False)


def b64(issued: pki.Issued) -> list[str]:
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in issued.chain()]


def captured_within(chain: list[str]) -> str:
    """A capture time inside every certificate's validity: an hour after the latest start.

    Derived from the certificates themselves, so no test depends on today's date.
    """
    starts = []
    for encoded in chain:
        try:
            starts.append(
                x509.load_der_x509_certificate(base64.b64decode(encoded)).not_valid_before_utc
            )
        except ValueError:  # the junk some tests put in a chain has no validity
            continue
    if not starts:
        return "2026-01-01T00:00:00+00:00"
    return (max(starts) + dt.timedelta(hours=1)).isoformat()


def facts(chain, host, *, sni="same", source="sni", started=None, **kw):
    return SessionFacts(
        id="t",
        started=started or captured_within(chain),
        requested_host=host,
        requested_host_source=source,
        sni=host if sni == "same" else sni,
        chain=chain,
        server_address="mail:993",
        **kw,
    )


def test_names_fail_and_trust_fails_reports_the_name_cause_first(ca):
    _, store = ca
    leaf = pki.issue_leaf(None, dns=["other.example.net"])  # self-signed and wrong
    d = diagnose(facts(b64(leaf), "mail.example.test"), store)
    assert d.verdict == "mismatch"
    assert d.cause_ids == ("name-not-in-certificate", "self-signed")
    assert "mail.example.test" in d.primary.explanation
    assert "other.example.net" in d.primary.explanation


def test_explanation_and_fix_carry_the_sessions_names(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["*.example.test"])
    d = diagnose(facts(b64(leaf), "a.b.example.test"), store)
    assert d.primary.id == "wildcard-too-deep"
    assert "*.example.test" in d.primary.explanation and "a.b.example.test" in d.primary.fix
    assert "RFC 6125 §6.4.3" in [str(c).split(" (")[0] for c in d.primary.cause.citations]


def test_no_sni_with_a_probe_that_also_fails_is_a_plain_mismatch(ca):
    inter, store = ca
    default = pki.issue_leaf(inter, dns=["mail.example.test"])
    probe = SniProbe(sni="alt.example.test", chain=b64(default)[:1])
    d = diagnose(
        facts(b64(default), "alt.example.test", sni=None, source="option", sni_probe=probe), store
    )
    assert d.primary.id == "name-not-in-certificate"
    assert "no-sni-default-certificate" not in d.cause_ids


def test_no_sni_with_a_matching_probe_is_the_no_sni_cause(ca):
    inter, store = ca
    default = pki.issue_leaf(inter, dns=["mail.example.test"])
    alt = pki.issue_leaf(inter, dns=["alt.example.test"])
    probe = SniProbe(sni="alt.example.test", chain=b64(alt)[:1])
    d = diagnose(
        facts(b64(default), "alt.example.test", sni=None, source="option", sni_probe=probe), store
    )
    assert d.cause_ids == ("no-sni-default-certificate",)
    assert "matches" in d.primary.explanation


def test_mail_domain_instead_of_server(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.org", "smtp.example.org"])
    d = diagnose(facts(b64(leaf), "example.org"), store)
    assert d.primary.id == "mail-domain-not-server"
    assert "mail.example.org, smtp.example.org" in d.primary.fix


def test_mail_domain_instead_of_server_names_the_server_dns_gives_for_the_service(ca):
    inter, store = ca
    # The certificate is the hoster's: no name inside the mail domain, so only DNS can say
    # which server to configure; MX and SRV name it for SMTP and IMAPS respectively.
    leaf = pki.issue_leaf(inter, dns=["imap.hoster.test", "mx.hoster.test"])
    r = "127.0.0.1:53"
    dns = DnsFacts(
        host="example.org",
        resolvers=[r],
        mail_domain="example.org",
        answers=[
            DnsAnswer("_imaps._tcp.example.org", "SRV", r, ("0 1 993 imap.hoster.test.",), 60),
            DnsAnswer("example.org", "MX", r, ("10 mx.hoster.test.",), 60),
        ],
    )
    d = diagnose(facts(b64(leaf), "example.org", dns=dns, protocol="imap"), store)
    assert d.primary.id == "mail-domain-not-server"
    assert "imap.hoster.test (SRV _imaps._tcp.example.org)" in d.primary.fix
    assert "mx.hoster.test" not in d.primary.fix  # MX is SMTP's, not an IMAP client's
    smtp = diagnose(facts(b64(leaf), "example.org", dns=dns, protocol="smtp"), store)
    assert smtp.primary.id == "mail-domain-not-server"
    assert "mx.hoster.test (MX example.org)" in smtp.primary.fix


def test_time_is_the_capture_time_and_cached_results_respect_it(tmp_path):
    old = dt.datetime(2020, 1, 1, tzinfo=UTC)
    root = pki.make_ca("Old Root", not_before=old)
    inter = pki.make_ca("Old Intermediate", parent=root, not_before=old)
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    store = TrustStore.load([tmp_path / "root.pem"], use_system=False)
    leaf = pki.issue_leaf(
        inter,
        dns=["mail.example.test"],
        not_before=dt.datetime(2026, 1, 1, tzinfo=UTC),
        not_after=dt.datetime(2026, 6, 1, tzinfo=UTC),
    )
    chain = b64(leaf)
    inside = diagnose(facts(chain, "mail.example.test", started="2026-03-01T00:00:00+00:00"), store)
    after = diagnose(facts(chain, "mail.example.test", started="2026-07-01T00:00:00+00:00"), store)
    before = diagnose(facts(chain, "mail.example.test", started="2025-07-01T00:00:00+00:00"), store)
    again = diagnose(facts(chain, "mail.example.test", started="2026-04-01T00:00:00+00:00"), store)
    assert (inside.verdict, after.verdict, before.verdict, again.verdict) == (
        "match",
        "untrusted",
        "untrusted",
        "match",
    )
    assert after.primary.id == "expired" and before.primary.id == "not-yet-valid"
    assert "2026-07-01" in after.primary.explanation


def test_cached_trust_notices_a_root_outside_its_validity(tmp_path):
    """Two sessions with the same chain, one before the root's own validity: no stale cache hit."""
    root = pki.make_ca("Late Root", not_before=dt.datetime(2026, 1, 1, tzinfo=UTC))
    leaf = pki.issue_leaf(
        root,
        dns=["mail.example.test"],
        not_before=dt.datetime(2025, 1, 1, tzinfo=UTC),
    )
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    store = TrustStore.load([tmp_path / "root.pem"], use_system=False)
    chain = b64(leaf)
    later = diagnose(facts(chain, "mail.example.test", started="2026-11-01T00:00:00+00:00"), store)
    earlier = diagnose(
        facts(chain, "mail.example.test", started="2025-06-01T00:00:00+00:00"), store
    )
    assert later.verdict == "match"
    assert earlier.verdict == "untrusted" and "not-yet-valid" in earlier.cause_ids


def test_trailing_dot_is_a_warning_on_a_match(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    d = diagnose(facts(b64(leaf), "mail.example.test.", sni=None, source="option"), store)
    assert d.verdict == "match"
    assert d.cause_ids == ("trailing-dot",)
    assert not d.failed


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        ("cannot connect: [Errno 111] Connection refused", "upstream-unreachable"),
        ("The remote server does not speak TLS.", "upstream-tls-failed"),
    ],
)
def test_no_certificate(ca, error, cause):
    _, store = ca
    d = diagnose(facts([], "mail.example.test", server_error=error), store)
    assert d.verdict == "error" and d.primary.id == cause
    assert error in d.primary.explanation


def test_garbage_certificate_is_malformed_not_a_crash(ca):
    _, store = ca
    d = diagnose(facts([base64.b64encode(b"\x30\x03junk").decode()], "mail.example.test"), store)
    assert d.verdict == "error" and d.primary.id == "malformed-certificate"


def test_client_refusing_the_proxy_is_reported_beside_a_good_certificate(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    d = diagnose(
        facts(b64(leaf), "mail.example.test", client_error="tlsv1 alert unknown ca"), store
    )
    # An older recording's client error: the client refused what it was shown, so the
    # session is no match, though the server's certificate passes.
    assert d.verdict == "untrusted"
    assert d.cause_ids == ("proxy-ca-not-trusted", "client-refused-certificate")
    assert d.failed
    assert "tlsv1 alert unknown ca" in d.primary.explanation


def test_every_cause_renders_without_missing_template_fields(ca):
    inter, _ = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    base = facts(b64(leaf), "mail.example.test")
    from certmatch.core.findings import _finding

    for cause in causes.CAUSES.values():
        finding = _finding(cause, base, ("mail.example.test",), "detail", "pattern", None)
        assert "{" not in finding.explanation and "{" not in finding.fix, cause.id


def test_to_json_is_serialisable(ca):
    import json

    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    data = diagnose(facts(b64(leaf), "wrong.example.test"), store).to_json()
    text = json.dumps(data)
    assert json.loads(text)["primary_cause"] == "name-not-in-certificate"


def _with_undecodable_issuer() -> str:
    """A self-issued certificate whose issuer UTF8String holds invalid UTF-8.

    cryptography loads it, and raises only when the issuer name is read.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(UTC)
    issuer = x509.Name(
        [
            x509.NameAttribute(
                NameOID.ORGANIZATION_NAME, "QQQQissuerQQQQ", _type=x509.name._ASN1Type.UTF8String
            )
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.example.com")]), False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(Encoding.DER).replace(b"QQQQissuerQQQQ", b"QQQQiss\xfferQQQQ")
    return base64.b64encode(der).decode()


def test_a_name_that_fails_when_read_is_a_finding_not_a_traceback(ca):
    _, store = ca
    d = diagnose(facts([_with_undecodable_issuer()], "mail.example.com"), store)
    assert d.verdict in ("untrusted", "error")
    assert d.findings, d.to_json()


def test_junk_after_a_trusted_chain_does_not_make_it_untrusted(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    junk = base64.b64encode(b"\x30\x03junk").decode()
    d = diagnose(facts([*b64(leaf), junk], "mail.example.test"), store)
    assert d.verdict == "match"
    assert "malformed-certificate" not in d.cause_ids


def test_a_warning_is_never_the_primary_cause_of_a_mismatch(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["*.example.com"])
    d = diagnose(facts(b64(leaf), "xn--bcher-kva.example.com"), store)
    assert d.verdict == "mismatch"
    assert d.primary.cause.severity != "warning"
    assert "idn-form" in d.cause_ids  # still reported, after the failure


def test_an_unrelated_nul_name_does_not_explain_a_wildcard_over_an_idn_label(ca):
    """The IDN warning explains nothing, the NUL name is another host: the name is not there."""
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["*.example.com", "other\x00.example.org"])
    d = diagnose(facts(b64(leaf), "xn--bcher-kva.example.com"), store)
    assert d.cause_ids == ("nul-in-name", "name-not-in-certificate", "idn-form")


def test_the_idn_form_detail_quotes_the_name_that_matched(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["junk name!", "xn--bcher-kva.example.com"])
    d = diagnose(facts(b64(leaf), "bücher.example.com"), store)
    assert d.verdict == "match" and d.cause_ids == ("idn-form",)
    assert "xn--bcher-kva.example.com equals" in d.primary.explanation
    assert "junk name!" not in d.primary.explanation


def test_the_ip_explanation_follows_what_the_client_sent_as_sni(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    silent = diagnose(facts(b64(leaf), "127.0.0.1", sni=None, source="reverse-target"), store)
    assert silent.primary.id == "ip-not-in-certificate"
    assert "sent no SNI" in silent.primary.explanation
    literal = diagnose(facts(b64(leaf), "127.0.0.1", sni="127.0.0.1"), store)
    assert literal.cause_ids == ("ip-not-in-certificate", "sni-ip-literal")
    text = literal.primary.explanation
    assert "sent the address 127.0.0.1 as SNI" in text and "no SNI" not in text
    warning = literal.findings[1]
    assert "127.0.0.1" in warning.explanation and "mail.example.test" in warning.fix


def test_an_assumed_name_alone_fails_a_match_and_says_why(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["localhost"])
    d = diagnose(
        facts(b64(leaf), "localhost", sni=None, source="reverse-target", server_ip="127.0.0.1"),
        store,
    )
    assert d.verdict == "match" and d.cause_ids == ("requested-host-assumed",)
    assert d.failed and d.to_json()["failed"] is True
    why, fix = d.primary.explanation, d.primary.fix
    assert "sent no server name" in why
    assert "localhost (the reverse-proxy target)" in why
    assert "configured with the address 127.0.0.1 would refuse the certificate" in why
    assert "iPAddress" in why
    assert "--host localhost" in fix and "certmatch_host=NAME" in fix and "hosts-file" in fix


@pytest.mark.parametrize(
    ("server_ip", "ips", "says"),
    [
        ("127.0.0.1", ["127.0.0.1"], "would match it"),
        ("127.0.0.1", ["192.0.2.1"], "has none for 127.0.0.1"),
        ("::1", ["0:0:0:0:0:0:0:1"], "would match it"),  # compared as addresses, not text
        (None, ["127.0.0.1"], "with an IP address would need one"),
    ],
)
def test_an_assumed_name_says_what_a_client_configured_with_the_address_sees(
    ca, server_ip, ips, says
):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"], ips=ips)
    d = diagnose(
        facts(b64(leaf), "mail.example.test", sni=None, source="unknown", server_ip=server_ip),
        store,
    )
    assert d.primary.id == "requested-host-assumed"
    assert says in d.primary.explanation


def test_names_from_the_client_or_the_user_are_not_assumed(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"], ips=["192.0.2.7"])
    for source, host in (("socks5", "192.0.2.7"), ("http-connect", "mail.example.test")):
        d = diagnose(facts(b64(leaf), host, sni=None, source=source), store)
        assert d.cause_ids == () and not d.failed, source
    d = diagnose(facts(b64(leaf), "mail.example.test", sni=None, source="option"), store)
    assert d.cause_ids == () and not d.failed


def test_a_client_that_closes_after_a_good_mirror_may_have_accepted_and_the_text_says_so(ca):
    inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["imap.example.test"])
    closed = facts(
        b64(leaf),
        "imap.example.test",
        presented="mirror",
        client_decision="closed-after-handshake",
    )
    d = diagnose(closed, store)
    assert d.cause_ids[:2] == ("proxy-ca-not-trusted", "client-refused-certificate")
    proxy_ca = next(f for f in d.findings if f.id == "proxy-ca-not-trusted")
    assert "only wanted the handshake" in proxy_ca.explanation
    assert "nothing needs fixing" in proxy_ca.explanation


def test_a_refused_mirror_of_a_self_signed_server_mentions_saved_exceptions(ca):
    _, store = ca
    leaf = pki.issue_leaf(None, dns=["selfsigned.example.test"])
    refused = facts(
        b64(leaf),
        "selfsigned.example.test",
        presented="mirror",
        client_decision="closed-after-handshake",
    )
    d = diagnose(refused, store)
    assert "proxy-ca-not-trusted" not in d.cause_ids
    refusal = next(f for f in d.findings if f.id == "client-refused-certificate")
    assert "saved exception" in refusal.explanation
    assert "--observe" in refusal.explanation
