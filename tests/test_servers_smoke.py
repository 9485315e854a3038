"""Direct checks (no proxy) that the real test servers serve what the scenario table promises.

Real clients only: Python's imaplib/poplib/smtplib with verification on,
``openssl s_client``, curl and ldap3.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from scenarios import SCENARIOS, SERVICE_NAMES, Scenario, ScenarioPki, scenario
from servers import DovecotServer, MissingSystemPackage, SlapdServer, SmtpServer
from servers.clients import (
    LoopbackIMAP4,
    LoopbackIMAP4_SSL,
    LoopbackPOP3,
    LoopbackPOP3_SSL,
    LoopbackSMTP,
    LoopbackSMTP_SSL,
    curl,
    s_client,
    verifying_context,
)
from servers.process import require_binary

IMAP = SERVICE_NAMES["imap"]
POP = SERVICE_NAMES["pop3"]
SMTP = SERVICE_NAMES["smtp"]
LDAP = SERVICE_NAMES["ldap"]

# OpenSSL 3's own verdict (s_client "Verify return code") for each scenario's client:
# an independent check that each server presents the intended faulty certificate.
OPENSSL_VERDICT = {
    "correct": 0,
    "wrong-host": 62,  # hostname mismatch
    "cn-only": 0,  # OpenSSL still falls back to the CN when there is no SAN
    "cn-beside-san": 62,
    "wildcard-too-deep": 62,
    "wildcard-apex": 62,
    "expired": 10,  # certificate has expired
    "self-signed": 18,  # self-signed certificate
    "missing-intermediate": 21,  # unable to verify the first certificate
    "alt": 62,  # no SNI, so the default certificate, which lacks alt.example.test
    "ip-literal": 62,
}


def der(certs: list[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in certs]


def sni_of(s: Scenario) -> str | None:
    return s.server_name if s.client_sends_sni else None


def eventually(check: Callable[[], bool], what: str, deadline_s: float = 3.0) -> None:
    """Poll ``check`` until true (server logs are written asynchronously)."""
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.02)


def test_scenario_table_matches_verdicts() -> None:
    assert set(OPENSSL_VERDICT) == {s.name for s in SCENARIOS}
    assert [s.name for s in SCENARIOS if s.expected_cause is None] == ["correct"]


def test_a_missing_binary_names_its_debian_package() -> None:
    with pytest.raises(MissingSystemPackage) as caught:
        require_binary("certmatch-no-such-daemon", "certmatch-no-such-package")
    message = str(caught.value)
    assert "\n" not in message
    assert "certmatch-no-such-package" in message and ".ci/install-system-packages" in message


# --- certificate selection by SNI, per scenario, on every TLS port -----------------------


@pytest.mark.parametrize("s", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize(
    ("fixture", "port_name"),
    [("dovecot", "imaps_port"), ("dovecot", "pop3s_port"), ("smtp_server", "smtps_port")],
)
def test_implicit_tls_serves_the_scenario_certificate(
    s: Scenario, fixture: str, port_name: str, pki: ScenarioPki, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(fixture)
    seen = s_client(
        getattr(server, port_name),
        servername=sni_of(s),
        cafile=pki.root_ca,
        verify_hostname=s.server_name,
    )
    expected = pki.presented(s.name)
    assert der(seen.chain) == der(expected.served_chain), seen.output
    assert seen.verify_code == OPENSSL_VERDICT[s.name], seen.output
    if isinstance(server, SmtpServer):
        assert server.sni_seen[-1] == sni_of(s)


def test_chain_shapes(pki: ScenarioPki) -> None:
    """Leaf + intermediate normally; the leaf alone for self-signed and missing-intermediate."""
    lengths = {s.name: len(pki.for_scenario(s.name).served_chain) for s in SCENARIOS}
    assert lengths == {
        s.name: 1 if s.name in ("self-signed", "missing-intermediate") else 2 for s in SCENARIOS
    }
    default = pki.default.leaf
    assert default.subject.rfc4514_string() == "CN=mail.example.test"
    san = default.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == []
    assert set(san.get_values_for_type(x509.DNSName)) == {
        f"{label}.example.test" for label in ("mail", "imap", "pop", "smtp", "ldap", "news")
    }


@pytest.mark.parametrize("port_name", ["imaps_port", "smtps_port"])
def test_alt_with_sni_and_unknown_names_select_as_documented(
    port_name: str, pki: ScenarioPki, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    port = getattr(smtp_server if port_name == "smtps_port" else dovecot, port_name)
    with_sni = s_client(
        port, servername="alt.example.test", cafile=pki.root_ca, verify_hostname="alt.example.test"
    )
    assert with_sni.leaf == pki.for_scenario("alt").leaf
    assert with_sni.verify_code == 0
    unknown = s_client(port, servername="nobody.example.test")
    assert unknown.leaf == pki.default.leaf


@pytest.mark.parametrize(
    ("port_name", "protocol"),
    [("imap_port", "imap"), ("pop3_port", "pop3"), ("submission_port", "smtp")],
)
@pytest.mark.parametrize("name", ["correct", "wrong-host", "missing-intermediate"])
def test_starttls_serves_the_scenario_certificate(
    port_name: str,
    protocol: str,
    name: str,
    pki: ScenarioPki,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
) -> None:
    port = getattr(smtp_server if protocol == "smtp" else dovecot, port_name)
    s = scenario(name)
    seen = s_client(port, servername=s.name_for(protocol), starttls=protocol)
    assert der(seen.chain) == der(pki.for_scenario(name).served_chain), seen.output


# --- IMAP and POP3 with real, verifying clients --------------------------------------


def test_imaps_fetches_the_known_message(pki: ScenarioPki, dovecot: DovecotServer) -> None:
    with LoopbackIMAP4_SSL(
        IMAP, dovecot.imaps_port, ssl_context=verifying_context(pki.root_ca)
    ) as imap:
        imap.login(dovecot.user, dovecot.password)
        imap.select("INBOX", readonly=True)
        status, data = imap.fetch("1", "(BODY.PEEK[])")
    assert status == "OK"
    assert data[0][1] == dovecot.known_message  # type: ignore[index]
    eventually(lambda: IMAP in dovecot.sni_seen(), "dovecot to log the login's SNI")


def test_imap_starttls_login(pki: ScenarioPki, dovecot: DovecotServer) -> None:
    with LoopbackIMAP4(IMAP, dovecot.imap_port) as imap:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(verifying_context(pki.root_ca))
        assert imap.login(dovecot.user, dovecot.password)[0] == "OK"


def test_pop3s_and_stls_retrieve_the_known_message(
    pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    ctx = verifying_context(pki.root_ca)
    implicit = LoopbackPOP3_SSL(POP, dovecot.pop3s_port, context=ctx)
    upgraded = LoopbackPOP3(POP, dovecot.pop3_port)
    upgraded.stls(ctx)
    for pop in (implicit, upgraded):
        try:
            pop.user(dovecot.user)
            pop.pass_(dovecot.password)
            _, lines, _ = pop.retr(1)
        finally:
            pop.quit()
        assert b"\r\n".join(lines) + b"\r\n" == dovecot.known_message


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("wrong-host", "Hostname mismatch"),
        ("missing-intermediate", "unable to get local issuer"),
        ("expired", "certificate has expired"),
        ("self-signed", "self-signed certificate"),
    ],
)
def test_python_clients_really_verify(
    name: str, reason: str, pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        LoopbackIMAP4_SSL(
            scenario(name).server_name,
            dovecot.imaps_port,
            ssl_context=verifying_context(pki.root_ca),
        )


def test_curl_fetches_the_known_message_over_imaps(
    pki: ScenarioPki, dovecot: DovecotServer
) -> None:
    port = dovecot.imaps_port
    body = curl(
        f"imaps://{IMAP}:{port}/INBOX/;UID=1",
        connect_to=f"{IMAP}:{port}:127.0.0.1:{port}",
        cafile=pki.root_ca,
        user=dovecot.user,
        password=dovecot.password,
    )
    assert body == dovecot.known_message


# --- SMTP ------------------------------------------------------------------------------


def test_smtps_and_submission_deliver_authenticated_mail(
    pki: ScenarioPki, smtp_server: SmtpServer
) -> None:
    ctx = verifying_context(pki.root_ca)
    before = len(smtp_server.messages)
    with LoopbackSMTP_SSL(SMTP, smtp_server.smtps_port, context=ctx) as smtp:
        smtp.login(smtp_server.user, smtp_server.password)
        smtp.sendmail("a@example.test", ["b@example.test"], b"Subject: one\r\n\r\nvia smtps\r\n")
    with LoopbackSMTP(SMTP, smtp_server.submission_port) as smtp:
        smtp.starttls(context=ctx)
        smtp.login(smtp_server.user, smtp_server.password)
        smtp.sendmail("a@example.test", ["c@example.test"], b"Subject: two\r\n\r\nvia 587\r\n")
    got = smtp_server.messages[before:]
    assert [(m.port, m.rcpt_tos, m.authenticated_as) for m in got] == [
        (smtp_server.smtps_port, ("b@example.test",), "test"),
        (smtp_server.submission_port, ("c@example.test",), "test"),
    ]
    assert b"via smtps" in got[0].content and b"via 587" in got[1].content
    assert smtp_server.sni_seen[-2:] == [SMTP, SMTP]


def test_submission_refuses_mail_before_starttls(smtp_server: SmtpServer) -> None:
    with LoopbackSMTP(SMTP, smtp_server.submission_port) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        code, _ = smtp.mail("a@example.test")
    assert code == 530


# --- LDAP ------------------------------------------------------------------------------

LDAP_SCENARIOS = ["correct", "wrong-host", "expired", "self-signed", "missing-intermediate"]


@pytest.mark.parametrize("name", LDAP_SCENARIOS)
def test_slapd_serves_its_scenario_certificate_on_both_listeners(
    name: str, pki: ScenarioPki, slapd_factory: Callable[[str], SlapdServer]
) -> None:
    slapd = slapd_factory(name)
    expected = der(pki.for_scenario(name).served_chain)
    implicit = s_client(slapd.ldaps_port, servername=scenario(name).name_for("ldap"))
    upgraded = s_client(
        slapd.ldap_port, servername=scenario(name).name_for("ldap"), starttls="ldap"
    )
    assert der(implicit.chain) == expected, implicit.output
    assert der(upgraded.chain) == expected, upgraded.output


def test_slapd_factory_caches_per_scenario(slapd_factory: Callable[[str], SlapdServer]) -> None:
    assert slapd_factory("correct") is slapd_factory("correct")
    assert slapd_factory("correct").ldaps_port != slapd_factory("wrong-host").ldaps_port


@pytest.mark.parametrize("starttls", [False, True], ids=["ldaps", "starttls"])
def test_ldap3_finds_the_entry(
    starttls: bool, pki: ScenarioPki, slapd_factory: Callable[[str], SlapdServer]
) -> None:
    slapd = slapd_factory("correct")
    tls = ldap3.Tls(
        ca_certs_file=str(pki.root_ca), validate=ssl.CERT_REQUIRED, valid_names=[LDAP], sni=LDAP
    )
    port = slapd.ldap_port if starttls else slapd.ldaps_port
    server = ldap3.Server(slapd.host, port=port, use_ssl=not starttls, tls=tls)
    conn = ldap3.Connection(
        server,
        slapd.root_dn,
        slapd.root_password,
        auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND if starttls else True,
    )
    try:
        conn.search(slapd.suffix, "(uid=test)", attributes=["mail"])
        assert [(e.entry_dn, e.mail.value) for e in conn.entries] == [
            (slapd.entry_dn, slapd.entry_mail)
        ]
    finally:
        conn.unbind()


def test_ldap3_rejects_a_wrong_host(
    pki: ScenarioPki, slapd_factory: Callable[[str], SlapdServer]
) -> None:
    slapd = slapd_factory("wrong-host")
    tls = ldap3.Tls(
        ca_certs_file=str(pki.root_ca),
        validate=ssl.CERT_REQUIRED,
        valid_names=["wrong.example.test"],
        sni="wrong.example.test",
    )
    server = ldap3.Server(slapd.host, port=slapd.ldaps_port, use_ssl=True, tls=tls)
    with pytest.raises(ldap3.core.exceptions.LDAPSocketOpenError, match="doesn't match"):
        ldap3.Connection(server, auto_bind=True)
