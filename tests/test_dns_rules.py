"""The DNS rules over hand-made facts: CNAME alias, points elsewhere, split horizon, SRV."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmatch.core.dns_facts import NXDOMAIN, TIMEOUT, DnsAnswer, DnsFacts
from certmatch.core.dns_rules import (
    SRV_NAME_OID,
    DnsRule,
    dns_findings,
    dns_summary,
    servers_for,
    srv_ids_of,
)
from certmatch.core.identity import PresentedIdentifiers

pytestmark = pytest.mark.pure

R1, R2 = "127.0.0.1:5301", "127.0.0.1:5302"


def names(*dns: str) -> PresentedIdentifiers:
    return PresentedIdentifiers(dns_names=dns, ip_addresses=(), common_names=(), has_san=True)


def facts(
    *answers: DnsAnswer, resolvers=(R1,), server_ip=None, mail_domain=None, host="mail.example.test"
):
    return DnsFacts(
        host=host,
        resolvers=list(resolvers),
        server_ip=server_ip,
        mail_domain=mail_domain,
        answers=list(answers),
    )


def a(name, rtype, *data, resolver=R1, error=None):
    return DnsAnswer(name, rtype, resolver, tuple(data), 60 if data else None, error)


ALIAS = facts(
    a("mailhost.example.test", "CNAME", "imap.example.test"),
    a("imap.example.test", "A", "192.0.2.10"),
    host="mailhost.example.test",
    server_ip="192.0.2.10",
)


def test_cname_alias_when_only_the_canonical_name_is_covered():
    found = dns_findings("mailhost.example.test", "192.0.2.10", ALIAS, names("imap.example.test"))
    assert set(found) == {DnsRule.CNAME_ALIAS}
    assert "mailhost.example.test → CNAME imap.example.test" in found[DnsRule.CNAME_ALIAS]
    assert "names imap.example.test" in found[DnsRule.CNAME_ALIAS]


def test_no_cname_alias_when_the_alias_itself_is_covered_or_nothing_in_the_chain_is():
    assert dns_findings("mailhost.example.test", "192.0.2.10", ALIAS, names("*.example.test")) == {}
    assert (
        dns_findings("mailhost.example.test", "192.0.2.10", ALIAS, names("other.example.net")) == {}
    )


def test_dns_points_elsewhere_is_round_robin_safe():
    round_robin = facts(
        a("mail.example.test", "A", "192.0.2.1", "192.0.2.2"),
        a("mail.example.test", "A", "192.0.2.3", resolver=R2),
        resolvers=(R1, R2),
    )
    cert = names("mail.example.test")
    for reached in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "::ffff:192.0.2.3"):
        found = dns_findings("mail.example.test", reached, round_robin, cert)
        assert DnsRule.DNS_POINTS_ELSEWHERE not in found, reached
    found = dns_findings("mail.example.test", "198.51.100.7", round_robin, cert)
    detail = found[DnsRule.DNS_POINTS_ELSEWHERE]
    assert "198.51.100.7" in detail and "192.0.2.1, 192.0.2.2" in detail and R2 in detail


def test_dns_points_elsewhere_for_a_name_dns_does_not_know():
    unknown = facts(a("mail.example.test", "A", error=NXDOMAIN))
    found = dns_findings("mail.example.test", "192.0.2.1", unknown, names("mail.example.test"))
    assert "NXDOMAIN" in found[DnsRule.DNS_POINTS_ELSEWHERE]


def test_no_verdict_from_resolvers_that_never_answered():
    silent = facts(a("mail.example.test", "A", error=TIMEOUT))
    assert dns_findings("mail.example.test", "192.0.2.1", silent, names("x.example.test")) == {}


def test_split_horizon_when_the_certificate_covers_one_side_only():
    split = facts(
        a("mail.example.test", "CNAME", "mail.corp.test"),
        a("mail.corp.test", "A", "10.1.1.1"),
        a("mail.example.test", "CNAME", "mx.provider.test", resolver=R2),
        a("mx.provider.test", "A", "192.0.2.5", resolver=R2),
        resolvers=(R1, R2),
    )
    found = dns_findings("mail.example.test", "192.0.2.5", split, names("mx.provider.test"))
    detail = found[DnsRule.SPLIT_HORIZON]
    assert f"only {R2} leads to" in detail and f"asks {R1}" in detail
    assert f"192.0.2.5, is what {R2} answers." in detail
    assert DnsRule.CNAME_ALIAS in found  # the alias fails too, with R2's chain as evidence


def test_no_split_horizon_when_resolvers_agree_or_the_requested_name_is_covered():
    agree = facts(
        a("mail.example.test", "A", "192.0.2.5"),
        a("mail.example.test", "A", "192.0.2.5", resolver=R2),
        resolvers=(R1, R2),
    )
    assert DnsRule.SPLIT_HORIZON not in dns_findings(
        "mail.example.test", None, agree, names("x.test")
    )
    differ = facts(
        a("mail.example.test", "A", "10.0.0.1"),
        a("mail.example.test", "A", "192.0.2.5", resolver=R2),
        resolvers=(R1, R2),
    )
    covered = dns_findings("mail.example.test", None, differ, names("mail.example.test"))
    assert DnsRule.SPLIT_HORIZON not in covered


SRV = facts(
    a("_imaps._tcp.example.test", "SRV", "0 1 993 imap.hoster.test"),
    a("_submission._tcp.example.test", "SRV", "0 1 587 smtp.hoster.test"),
    a("example.test", "MX", "10 mx.hoster.test"),
    a("imap.hoster.test", "A", "192.0.2.9"),
    host="imap.hoster.test",
    mail_domain="example.test",
)


def test_srv_target_not_in_certificate():
    found = dns_findings("imap.hoster.test", None, SRV, names("www.hoster.test"), protocol="imap")
    detail = found[DnsRule.SRV_TARGET_NOT_IN_CERTIFICATE]
    assert "_imaps._tcp.example.test" in detail and "imap.hoster.test:993" in detail
    assert "_imaps.example.test" in detail


@pytest.mark.parametrize(
    "cert",
    [names("imap.hoster.test"), names("example.test"), names("*.hoster.test")],
)
def test_an_srv_target_or_mail_domain_in_the_certificate_is_enough(cert):
    found = dns_findings("imap.hoster.test", None, SRV, cert, protocol="imap")
    assert DnsRule.SRV_TARGET_NOT_IN_CERTIFICATE not in found


def test_an_srv_id_for_the_service_is_enough_and_for_another_service_is_not():
    cert = names("www.hoster.test")
    ok = dns_findings(
        "imap.hoster.test", None, SRV, cert, protocol="imap", srv_ids=("_IMAPS.example.test",)
    )
    assert DnsRule.SRV_TARGET_NOT_IN_CERTIFICATE not in ok
    other = dns_findings(
        "imap.hoster.test", None, SRV, cert, protocol="imap", srv_ids=("_pop3s.example.test",)
    )
    assert DnsRule.SRV_TARGET_NOT_IN_CERTIFICATE in other


def test_srv_id_only_for_the_mail_domain():
    domain = facts(
        a("_imaps._tcp.example.test", "SRV", "0 1 993 imap.hoster.test"),
        host="example.test",
        mail_domain="example.test",
    )
    found = dns_findings(
        "example.test",
        None,
        domain,
        names("imap.hoster.test"),
        protocol="imap",
        srv_ids=("_imaps.example.test",),
    )
    assert "only as the SRV-ID _imaps.example.test" in found[DnsRule.SRV_ID_ONLY]


def test_servers_for_a_mail_domain():
    assert [str(s) for s in servers_for(SRV, "imap")] == [
        "imap.hoster.test (SRV _imaps._tcp.example.test)"
    ]
    assert [s.name for s in servers_for(SRV, "submission")] == [
        "smtp.hoster.test",
        "mx.hoster.test",
    ]
    covered = servers_for(SRV, "submission", lambda n: n == "mx.hoster.test")
    assert [str(s) for s in covered] == ["mx.hoster.test (MX example.test)"]
    assert servers_for(None, "imap") == []


def test_nothing_for_an_ip_address_or_without_facts():
    assert dns_findings("192.0.2.10", "192.0.2.99", ALIAS, names("x")) == {}
    assert dns_findings("mailhost.example.test", "192.0.2.99", None, names("x")) == {}


def _cert_with_srv_ids(*srv_ids: str, encoding: int = 0x16) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "srv test")])
    others = [x509.OtherName(SRV_NAME_OID, bytes([encoding, len(s)]) + s.encode()) for s in srv_ids]
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("imap.hoster.test"), *others]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def test_srv_ids_are_read_from_the_certificate():
    assert srv_ids_of(_cert_with_srv_ids("_imaps.example.test", "_submission.example.test")) == (
        "_imaps.example.test",
        "_submission.example.test",
    )
    assert srv_ids_of(_cert_with_srv_ids("_imaps.example.test", encoding=0x0C)) == (
        "_imaps.example.test",
    )
    assert srv_ids_of(_cert_with_srv_ids()) == ()


def test_dns_summary_lines():
    lines = dns_summary(ALIAS)
    assert (
        lines[0] == f"mailhost.example.test → CNAME imap.example.test → 192.0.2.10 ({R1}, TTL 60 s)"
    )
    assert lines[1] == "PTR 192.0.2.10 → none"
