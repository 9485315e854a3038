"""End to end: real clients -> mitmproxy with the capture addon -> real servers, on loopback.

Each test asserts what was recorded (the facts) and what certmatch concludes
(verdict and cause id) for certificates minted per scenario.
"""

from __future__ import annotations

import ssl
import subprocess

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from proxy_fixtures import inprocess_proxy, s_client_speaking
from scenarios import SCENARIOS, scenario
from servers.clients import LoopbackIMAP4_SSL, LoopbackPOP3_SSL, LoopbackSMTP_SSL

from certmatch.core.certificates import parse_chain
from certmatch.core.diagnosis import diagnose
from certmatch.core.judge import Judge
from certmatch.core.trust import TrustStore
from certmatch.proxy import capture

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def store(pki) -> TrustStore:
    return TrustStore.load([pki.root_ca])


def _leaf_der(chain_b64: list[str]) -> bytes:
    leaf = parse_chain(chain_b64).leaf
    assert leaf is not None, "no parseable leaf recorded"
    return leaf.public_bytes(serialization.Encoding.DER)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _client_context(proxy) -> ssl.SSLContext:
    """A client that trusts the proxy's CA (as an engineer sets it up) and checks names."""
    return ssl.create_default_context(cafile=str(proxy.ca_file))


# -- every scenario, IMAPS through a reverse proxy, openssl s_client as the client --


@pytest.mark.parametrize("case", SCENARIOS, ids=lambda s: s.name)
def test_imaps_scenario_recorded_and_diagnosed(case, tmp_path, dovecot, pki, store):
    options: dict[str, object] = {"ca_file": [str(pki.root_ca)]}
    if not case.client_sends_sni and case.name != "ip-literal":
        options["host"] = case.server_name  # the name the client is configured with
    with inprocess_proxy(
        tmp_path, f"reverse:tls://127.0.0.1:{dovecot.imaps_port}", **options
    ) as proxy:
        name = case.name_for("imap")
        s_client_speaking(
            proxy.port, servername=name if case.client_sends_sni else None, cafile=proxy.ca_file
        )
        sessions = proxy.sessions(1)
    assert len(sessions) == 1
    facts = sessions[0]
    assert facts.sni == (name if case.client_sends_sni else None)
    assert facts.upstream_sni == facts.sni, (
        "the proxy must ask upstream exactly what the client asked"
    )
    assert facts.protocol == "imap"  # from dovecot's greeting (the port is a high one)
    assert facts.tls_kind == "implicit"
    assert facts.action == "pass"
    expected_leaf = pki.presented(case.name).leaf
    assert _leaf_der(facts.chain) == _der(expected_leaf)
    assert len(facts.chain) == len(pki.presented(case.name).served_chain)

    result = diagnose(facts, store)
    if case.expected_cause is None:
        assert result.verdict == "match" and result.findings == ()
    else:
        assert result.primary is not None, result.to_json()
        assert result.primary.id == case.expected_cause, result.to_json()
        assert result.failed


def test_no_sni_probe_shows_the_server_would_have_matched(tmp_path, dovecot, pki, store):
    case = scenario("alt")
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(
        tmp_path, mode, ca_file=[str(pki.root_ca)], host=case.server_name
    ) as proxy:
        s_client_speaking(proxy.port, servername=None, cafile=proxy.ca_file)
        facts = proxy.sessions(1)[0]
    assert facts.requested_host == "alt.example.test"
    assert facts.requested_host_source == "option"
    assert facts.sni_probe is not None and facts.sni_probe.error is None
    assert _leaf_der(facts.sni_probe.chain) == _der(pki.for_scenario("alt").leaf)
    result = diagnose(facts, store)
    assert result.primary.id == "no-sni-default-certificate"
    assert "matches" in result.primary.explanation
    # Upstream, the proxy sent no SNI (dovecot served its default certificate),
    # then the probe asked by name and dovecot logged it.
    assert facts.upstream_sni is None
    assert _leaf_der(facts.chain) == _der(pki.default.leaf)
    assert "alt.example.test" in dovecot.sni_seen()


# -- real clients of each protocol --


def test_imaplib_login_and_fetch_pass_through_and_password_is_not_recorded(
    tmp_path, dovecot, pki, store
):
    """With ``present=substitute`` (stock mitmproxy's certificate) a session the client would
    refuse keeps flowing, so the engineer can watch it."""
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)], present="substitute") as proxy:
        client = LoopbackIMAP4_SSL(
            "wrong.example.test", proxy.port, ssl_context=_client_context(proxy)
        )
        client.login(dovecot.user, dovecot.password)
        client.select("INBOX")
        _, data = client.fetch("1", "(BODY[])")
        client.logout()
        facts = proxy.sessions(1)[0]
        raw = proxy.record.read_bytes()
    body = data[0][1]
    assert body.replace(b"\r\n", b"\n") == dovecot.known_message.replace(b"\r\n", b"\n")
    assert diagnose(facts, store).primary.id == "name-not-in-certificate"
    assert (facts.presented, facts.client_decision) == ("substitute", "went-on")
    assert dovecot.password.encode() not in raw
    assert b"LOGIN" not in raw and b"Subject:" not in raw  # no commands, no message content


def test_poplib_pop3s(tmp_path, dovecot, pki, store):
    mode = f"reverse:tls://127.0.0.1:{dovecot.pop3s_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)]) as proxy:
        client = LoopbackPOP3_SSL("pop.example.test", proxy.port, context=_client_context(proxy))
        client.user(dovecot.user)
        client.pass_(dovecot.password)
        count, _ = client.stat()
        client.quit()
        facts = proxy.sessions(1)[0]
        raw = proxy.record.read_bytes()
    assert count == 1
    assert facts.protocol == "pop3"
    assert diagnose(facts, store).verdict == "match"
    assert dovecot.password.encode() not in raw


def test_smtplib_smtps_auth_and_send(tmp_path, smtp_server, pki, store):
    mode = f"reverse:tls://127.0.0.1:{smtp_server.smtps_port}"
    smtp_server.clear()
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)], present="substitute") as proxy:
        client = LoopbackSMTP_SSL("a.b.example.test", proxy.port, context=_client_context(proxy))
        client.login(smtp_server.user, smtp_server.password)
        client.sendmail("a@example.test", ["b@example.test"], b"Subject: t\r\n\r\nbody-42\r\n")
        client.quit()
        facts = proxy.sessions(1)[0]
        raw = proxy.record.read_bytes()
    assert facts.protocol == "smtp"
    assert facts.sni == "a.b.example.test"
    assert diagnose(facts, store).primary.id == "wildcard-too-deep"
    assert b"body-42" in smtp_server.messages[-1].content
    assert b"body-42" not in raw and smtp_server.password.encode() not in raw


def test_ldap3_ldaps(tmp_path, slapd_factory, pki, store):
    slapd = slapd_factory("wrong-host")
    mode = f"reverse:tls://127.0.0.1:{slapd.ldaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)], present="substitute") as proxy:
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(proxy.ca_file),
            sni="ldap.example.test",
            valid_names=["ldap.example.test"],
        )
        server = ldap3.Server("127.0.0.1", port=proxy.port, use_ssl=True, tls=tls)
        conn = ldap3.Connection(server, slapd.root_dn, slapd.root_password, auto_bind=True)
        conn.search(slapd.suffix, f"(mail={slapd.entry_mail})", attributes=["mail"])
        found = [str(e.mail) for e in conn.entries]
        conn.unbind()
        facts = proxy.sessions(1)[0]
        raw = proxy.record.read_bytes()
    assert found == [slapd.entry_mail]
    assert facts.protocol == "ldap"  # the client speaks first: a BER sequence
    assert facts.sni == "ldap.example.test"
    assert diagnose(facts, store).primary.id == "name-not-in-certificate"
    assert slapd.root_password.encode() not in raw


def test_curl_imaps_fetch(tmp_path, dovecot, pki, store):
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)]) as proxy:
        done = subprocess.run(
            [
                "curl",
                "--silent",
                "--show-error",
                "--max-time",
                "10",
                "--connect-to",
                f"imap.example.test:993:127.0.0.1:{proxy.port}",
                "--cacert",
                str(proxy.ca_file),
                "--user",
                f"{dovecot.user}:{dovecot.password}",
                "imaps://imap.example.test/INBOX;UID=1",
            ],
            capture_output=True,
            check=False,
            timeout=20,
        )
        facts = proxy.sessions(1)[0]
    assert done.returncode == 0, done.stderr
    assert b"certmatch known message" in done.stdout or len(done.stdout) > 20
    assert facts.sni == "imap.example.test"
    assert diagnose(facts, store).verdict == "match"


# -- block and pass, the client refusing the proxy, an unreachable server --


def test_block_closes_a_mismatching_session(tmp_path, dovecot, pki):
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)], on_mismatch="block") as proxy:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            LoopbackIMAP4_SSL("wrong.example.test", proxy.port, ssl_context=_client_context(proxy))
        blocked = proxy.sessions(1)[0]
        good = LoopbackIMAP4_SSL(
            "imap.example.test", proxy.port, ssl_context=_client_context(proxy)
        )
        good.logout()
        sessions = proxy.sessions(2)
    assert blocked.action == "block"
    assert [s.action for s in sessions] == ["block", "pass"]


def test_client_that_does_not_trust_the_proxy_ca(tmp_path, dovecot, pki, store):
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)]) as proxy:
        strict = ssl.create_default_context(cafile=str(pki.root_ca))  # not the proxy's CA
        with pytest.raises(ssl.SSLError):
            LoopbackIMAP4_SSL("imap.example.test", proxy.port, ssl_context=strict)
        facts = proxy.sessions(1)[0]
    assert facts.client_error
    result = diagnose(facts, store)
    assert "proxy-ca-not-trusted" in result.cause_ids
    assert result.primary.id == "proxy-ca-not-trusted"  # the server's own certificate is fine


def test_unreachable_server_is_recorded(tmp_path, pki, store):
    from proxy_fixtures import free_port

    closed = free_port()
    with inprocess_proxy(tmp_path, f"reverse:tls://127.0.0.1:{closed}") as proxy:
        s_client_speaking(proxy.port, servername="imap.example.test", cafile=proxy.ca_file)
        facts = proxy.sessions(1)[0]
    assert facts.server_error and "connect" in facts.server_error
    result = diagnose(facts, store)
    assert result.verdict == "error"
    assert result.primary.id == "upstream-unreachable"


# -- the addon never breaks a session by its own fault --


def test_failure_in_analysis_is_noted_and_mail_flows(tmp_path, dovecot, pki, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected analysis failure")

    monkeypatch.setattr(Judge, "diagnose", broken)
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)]) as proxy:
        client = LoopbackIMAP4_SSL(
            "imap.example.test", proxy.port, ssl_context=_client_context(proxy)
        )
        client.login(dovecot.user, dovecot.password)
        status, _ = client.select("INBOX")
        client.logout()
        facts = proxy.sessions(1)[0]
    assert status == "OK"
    assert any("injected analysis failure" in note for note in facts.notes)
    assert facts.chain, "the facts are kept even when analysis fails"


def test_failure_in_writing_is_logged_and_mail_flows(tmp_path, dovecot, pki, caplog):
    addon = capture.CertmatchCapture()
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, addon=addon, ca_file=[str(pki.root_ca)]) as proxy:

        def full_disk(_facts):
            raise OSError(28, "No space left on device")

        addon.writer.write = full_disk  # type: ignore[method-assign]
        client = LoopbackIMAP4_SSL(
            "imap.example.test", proxy.port, ssl_context=_client_context(proxy)
        )
        client.login(dovecot.user, dovecot.password)
        status, _ = client.select("INBOX")
        client.logout()
    assert status == "OK"
    assert "could not write session" in caplog.text


# -- mitmproxy's own UI sees the verdict --


def test_flow_is_marked_for_mitmproxy_uis(tmp_path, dovecot, pki):
    seen: list[tuple[str, str]] = []

    class Watch:
        def tcp_end(self, flow):
            seen.append((flow.marked, flow.comment))

    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(
        tmp_path, mode, extra_addons=(Watch(),), ca_file=[str(pki.root_ca)], present="substitute"
    ) as proxy:
        for name in ("wrong.example.test", "imap.example.test"):
            client = LoopbackIMAP4_SSL(name, proxy.port, ssl_context=_client_context(proxy))
            client.logout()
        proxy.sessions(2)
        deadline = __import__("time").monotonic() + 5
        while len(seen) < 2 and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.02)
    assert (":warning:", "certmatch: mismatch (name-not-in-certificate)") in seen
    assert ("", "certmatch: match") in seen


def test_mitmdump_loads_the_addon_script(tmp_path, dovecot, pki, store):
    """The stock ``mitmdump -s addons/capture.py`` path, as the README shows it."""
    from proxy_fixtures import free_port, mitmdump_process, stock_command

    port = free_port()
    record = tmp_path / "rec.jsonl"
    argv = stock_command(
        "mitmdump",
        port=port,
        mode=f"reverse:tls://127.0.0.1:{dovecot.imaps_port}",
        confdir=tmp_path / "conf",
        record=record,
        ca_file=pki.root_ca,
    )
    with mitmdump_process(tmp_path, argv, port=port):
        s_client_speaking(
            port,
            servername="cnsan.example.test",
            cafile=tmp_path / "conf" / "mitmproxy-ca-cert.pem",
        )
        import time

        from certmatch.core.recording import read_recording

        for _ in range(100):
            if record.exists() and read_recording(record).sessions:
                break
            time.sleep(0.05)
    sessions = read_recording(record).sessions
    assert len(sessions) == 1
    assert diagnose(sessions[0], store).primary.id == "cn-ignored-san-present"
    log = (tmp_path / "proxy.log").read_text()
    assert "cn-ignored-san-present" in log  # the verdict is logged for the engineer


def test_block_fails_closed_when_analysis_fails(tmp_path, dovecot, pki, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected analysis failure")

    monkeypatch.setattr(Judge, "diagnose", broken)
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)], on_mismatch="block") as proxy:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            LoopbackIMAP4_SSL("imap.example.test", proxy.port, ssl_context=_client_context(proxy))
        facts = proxy.sessions(1)[0]
    assert facts.action == "block"
    assert any("injected analysis failure" in note for note in facts.notes)


def test_an_idna2008_sni_is_recorded_and_sent_as_the_client_sent_it(tmp_path, dovecot, pki, store):
    """mitmproxy's own ClientHello.sni drops names its IDNA 2003 check rejects."""
    name = "xn--strae-oqa.example.test"  # straße, in IDNA 2008 form
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)]) as proxy:
        s_client_speaking(proxy.port, servername=name, cafile=proxy.ca_file)
        facts = proxy.sessions(1)[0]
    assert facts.sni == name and facts.upstream_sni == name
    assert facts.requested_host == name and facts.requested_host_source == "sni"
    assert name in dovecot.sni_seen()
    assert diagnose(facts, store).primary.id == "name-not-in-certificate"
