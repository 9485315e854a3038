"""The client's own decision as facts: what it refused, what that means, and what it never is.

Pure: minted certificates, sessions built by hand as the proxy records them (issue 9).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmatch.core import alerts, causes
from certmatch.core.diagnosis import diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.findings import is_failure
from certmatch.core.judge import Judge
from certmatch.core.report import explain
from certmatch.core.trust import TrustStore
from certmatch.lab import pki

pytestmark = pytest.mark.pure

REFUSED = "client-refused-certificate"
PROXY_CA = "proxy-ca-not-trusted"
PROBE = "client-closed-before-handshake"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    root = pki.make_ca("Decision Root")
    inter = pki.make_ca("Decision Intermediate", parent=root)
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(root.cert_pem())
    return inter, TrustStore.load([path], use_system=False)


def b64(issued: pki.Issued) -> list[str]:
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in issued.chain()]


def session(chain: list[str], host: str | None = "mail.example.test", **kw) -> SessionFacts:
    """Captured an hour after the latest notBefore: inside every validity period."""
    starts = [
        x509.load_der_x509_certificate(base64.b64decode(c)).not_valid_before_utc for c in chain
    ]
    started = max(starts, default=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) + dt.timedelta(hours=1)
    kw.setdefault("sni", host)
    kw.setdefault("requested_host_source", "sni")
    return SessionFacts(
        id="d",
        started=started.isoformat(),
        protocol="imap",
        requested_host=host,
        chain=chain,
        server_address="mail.example.test:993",
        **kw,
    )


@pytest.fixture(scope="module")
def good(ca):
    inter, _ = ca
    return b64(pki.issue_leaf(inter, dns=["mail.example.test"]))


@pytest.fixture(scope="module")
def wrong(ca):
    inter, _ = ca
    return b64(pki.issue_leaf(inter, dns=["other.example.net"]))


# -- a good certificate the client still refused ---------------------------------------------


@pytest.mark.parametrize(
    "decision",
    [
        {"client_decision": "alert", "client_alert": "unknown_ca", "client_alert_code": 48},
        {"client_decision": "alert", "client_alert": "bad_certificate"},
        {"client_decision": "closed-after-handshake", "client_waited": 0.012},
        {"client_decision": "closed-during-handshake"},
    ],
)
@pytest.mark.parametrize("presented", ["mirror", "substitute"])
def test_a_refused_good_certificate_is_never_a_match(ca, good, decision, presented) -> None:
    _, store = ca
    d = diagnose(session(good, presented=presented, **decision), store)
    assert d.verdict == "untrusted" and d.failed
    assert d.cause_ids == (PROXY_CA, REFUSED)
    assert d.findings[0].explanation.startswith("The client ")
    assert "certmatch's CA" in d.findings[0].explanation


def test_gnutls_and_mbsync_are_named_when_the_client_closed_without_an_alert(ca, good) -> None:
    _, store = ca
    facts = session(
        good, presented="mirror", client_decision="closed-after-handshake", client_waited=0.25
    )
    d = diagnose(facts, store)
    proxy = d.findings[0].explanation
    assert "GnuTLS-based clients (neomutt, msmtp, ldapsearch) and mbsync" in proxy
    assert "0.250 s after the handshake and the server's greeting" in proxy
    assert "carried the server's own names and dates" in proxy
    assert "client's decision: closed-after-handshake after 0.250 s" in d.findings[0].evidence


def test_after_starttls_closing_means_no_command_at_all(ca, good) -> None:
    _, store = ca
    facts = session(
        good, tls_kind="starttls", presented="mirror", client_decision="closed-after-handshake"
    )
    text = diagnose(facts, store).findings[0].explanation
    assert "after the STARTTLS handshake without sending a command" in text


# -- a failing certificate the client refused: its own causes, never proxy-ca-not-trusted ----


def test_the_client_refusing_a_wrong_name_is_the_name_cause_not_the_proxy_ca(ca, wrong) -> None:
    """fetchmail's case: its own name check failed; 'add certmatch's CA' would be wrong."""
    _, store = ca
    facts = session(wrong, presented="mirror", client_decision="closed-after-handshake")
    d = diagnose(facts, store)
    assert d.verdict == "mismatch"
    assert d.cause_ids == ("name-not-in-certificate", REFUSED)
    refused = d.findings[1]
    assert "refused the server's real names and dates" in refused.explanation
    assert "a copy of the server's certificate" in refused.explanation
    assert "Fix the certificate's own cause (name-not-in-certificate)" in refused.fix


def test_an_ip_literal_client_refusing_is_the_address_cause(ca, good) -> None:
    _, store = ca
    facts = session(
        good,
        "127.0.0.1",
        sni="127.0.0.1",
        presented="substitute",
        client_decision="alert",
        client_alert="bad_certificate",
    )
    d = diagnose(facts, store)
    assert d.verdict == "mismatch"
    assert PROXY_CA not in d.cause_ids
    assert d.cause_ids[:1] == ("ip-not-in-certificate",) and REFUSED in d.cause_ids
    refused = d.findings[d.cause_ids.index(REFUSED)]
    assert "mitmproxy's substitute certificate" in refused.explanation
    assert "--present mirror" in refused.fix


def test_an_expired_certificate_refused_with_certificate_expired(ca) -> None:
    inter, store = ca
    leaf = pki.issue_leaf(
        inter,
        dns=["mail.example.test"],
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
    )
    facts = dataclasses.replace(
        session(b64(leaf), presented="mirror", client_decision="alert"),
        started="2022-06-01T00:00:00+00:00",
        client_alert="certificate_expired",
        client_alert_code=45,
    )
    d = diagnose(facts, store)
    assert d.verdict == "untrusted"
    # The intermediate, minted today, is not valid yet in 2022 either.
    assert d.cause_ids[0] == "expired" and d.cause_ids[-1] == REFUSED
    assert PROXY_CA not in d.cause_ids
    refused = d.findings[-1].explanation
    assert "The client sent the TLS alert certificate_expired (45)" in refused
    assert "has expired or is not currently valid" in refused


def test_an_alert_that_is_not_about_the_certificate_says_so(ca, good) -> None:
    _, store = ca
    facts = session(
        good, presented="mirror", client_decision="alert", client_alert="protocol_version"
    )
    d = diagnose(facts, store)
    assert d.verdict == "untrusted" and d.cause_ids == (REFUSED,)
    assert "protocol_version is not about the certificate" in d.primary.explanation


def test_an_assumed_name_refused_names_both_reasons(ca, good) -> None:
    _, store = ca
    facts = session(
        good,
        sni=None,
        requested_host_source="reverse-target",
        presented="mirror",
        client_decision="alert",
        client_alert="certificate_unknown",
    )
    d = diagnose(facts, store)
    assert d.verdict == "untrusted"
    assert d.cause_ids == (REFUSED, "requested-host-assumed")
    assert "a name it assumed" in d.primary.explanation
    assert "--host NAME" in d.primary.fix


def test_an_alert_given_only_by_its_number_is_named(ca, good) -> None:
    _, store = ca
    facts = session(good, presented="mirror", client_decision="alert", client_alert_code=48)
    d = diagnose(facts, store)
    assert "The client sent the TLS alert unknown_ca (48)" in d.primary.explanation


# -- what is not a refusal -------------------------------------------------------------------


def test_a_client_that_went_on_adds_nothing(ca, good, wrong) -> None:
    _, store = ca
    assert (
        diagnose(session(good, presented="mirror", client_decision="went-on"), store).cause_ids
        == ()
    )
    went_on = diagnose(session(wrong, presented="mirror", client_decision="went-on"), store)
    assert went_on.cause_ids == ("name-not-in-certificate",)


def test_no_certificate_shown_is_no_refusal_of_one(ca) -> None:
    _, store = ca
    facts = session(
        [], presented=None, client_decision="alert", client_alert="handshake_failure",
        server_error="connect failed: connection refused",
    )  # fmt: skip
    d = diagnose(facts, store)
    assert d.cause_ids == ("upstream-unreachable",)


# -- a connection closed before any byte ---------------------------------------------------


@pytest.mark.parametrize(
    "server_error", [None, "error establishing server connection: connection cancelled"]
)
def test_a_health_probe_is_a_finding_not_a_failure_nor_a_server_fault(server_error) -> None:
    store = TrustStore((), ())
    facts = SessionFacts(
        id="p",
        started="2026-01-01T00:00:00+00:00",
        client_decision="closed-before-handshake",
        server_error=server_error,
        protocol="imap",
        tls_kind="starttls",
    )
    d = diagnose(facts, store)
    assert d.cause_ids == (PROBE,)
    assert d.verdict == "error" and not d.failed
    assert causes.get(PROBE).severity == "warning"
    assert "cancel" not in d.primary.explanation
    judged = Judge(store).judgement(facts)
    assert judged.causes == (PROBE,) and not judged.failed


def test_a_probe_whose_proxy_connection_failed_otherwise_says_so_but_blames_nothing() -> None:
    facts = SessionFacts(
        id="p",
        started="2026-01-01T00:00:00+00:00",
        client_decision="closed-before-handshake",
        server_error="connect failed: connection refused",
    )
    d = diagnose(facts, TrustStore((), ()))
    assert d.cause_ids == (PROBE,) and not d.failed
    assert "connection refused" in d.primary.explanation


def test_an_error_fails_unless_every_cause_is_a_warning() -> None:
    assert not is_failure("error", (PROBE,))
    assert is_failure("error", ())
    assert is_failure("error", (PROBE, "upstream-unreachable"))


# -- the alert table ---------------------------------------------------------------------


def test_the_alert_table_has_the_rfc_8446_codes() -> None:
    assert alerts.BY_NAME["unknown_ca"].code == 48
    assert alerts.name_of(42) == "bad_certificate"
    assert alerts.name_of(46) == "certificate_unknown"
    assert alerts.name_of(40) == "handshake_failure"
    assert alerts.name_of(100) == "no_renegotiation"  # RFC 5246 §7.2 only
    assert alerts.name_of(7) is None
    assert len(alerts.BY_CODE) == len(alerts.ALERTS) == len(alerts.BY_NAME)
    assert alerts.CERTIFICATE_ALERTS <= alerts.BY_NAME.keys()
    assert not alerts.refuses_certificate("protocol_version")
    assert alerts.refuses_certificate("unknown_ca") and alerts.refuses_certificate("made_up")


def test_explain_shows_the_refusal_and_the_anchor(ca, good) -> None:
    _, store = ca
    d = diagnose(session(good, presented="mirror", client_decision="alert"), store)
    text = explain(d)
    assert "[proxy-ca-not-trusted]" in text and "[client-refused-certificate]" in text
    assert d.anchor is not None and d.anchor.subject.startswith("CN=Decision Root")
    assert d.to_json()["client_decision"] == "alert"
    assert d.to_json()["trust_anchor"]["sha256"] == d.anchor.sha256


def test_json_entries_with_waits_equal_a_full_diagnosis(ca, good, wrong, tmp_path, capsys) -> None:
    """--json writes repeated situations from a template; a wait the prose tells, or a
    missing one, must never be filled in from another session's."""
    import json

    from certmatch.cli.check import check
    from certmatch.core.recording import RecordingWriter, read_recording

    _, store = ca
    path = tmp_path / "waits.jsonl"
    waits = [0.1, 0.2, None, 0.3, 1.5, None]
    with RecordingWriter(path, tool_version="t") as writer:
        for number, waited in enumerate(waits * 2):
            chain = good if number < len(waits) else wrong
            decision = "closed-after-handshake" if number % 2 == 0 else "went-on"
            base = session(chain, presented="mirror", client_decision=decision)
            writer.write(
                dataclasses.replace(
                    base,
                    id=f"w{number}",
                    client_waited=waited,
                    client_address=f"192.0.2.1:{number}",
                )
            )
    check([path], store, json_output=True)
    written = json.loads(capsys.readouterr().out)["sessions"]
    judge = Judge(store)
    expected = []
    for facts in read_recording(path).sessions:
        entry = judge.diagnose(facts).to_json()
        entry["recording"] = str(path)
        expected.append(entry)
    assert written == expected
    told = [e for e in written if e["client_waited"] == 1.5 and e["findings"]]
    assert told and "1.500 s after the handshake" in json.dumps(told[0])


def test_a_pinning_client_refusing_the_mirror_is_told_to_remove_the_pin(ca, good) -> None:
    """fetchmail with sslfingerprint refuses any copy with internal_error (80): OpenSSL's
    alert when the application's own check refuses; the pin, not the CA, is named."""
    _, store = ca
    facts = session(
        good,
        presented="mirror",
        client_decision="alert",
        client_alert="internal_error",
        client_alert_code=80,
    )
    d = diagnose(facts, store)
    assert d.verdict == "untrusted"
    assert d.cause_ids == (PROXY_CA, REFUSED)
    assert "fetchmail's sslfingerprint" in d.primary.explanation
    assert "would have sent unknown_ca" in d.primary.explanation
    assert "sslfingerprint" in d.primary.fix
