"""certmatch.core.policy: what the proxy decides for a session, from facts and verdicts alone."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certmatch.core import policy
from certmatch.core.diagnosis import Diagnosis, diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.trust import TrustStore
from certmatch.lab import pki

pytestmark = pytest.mark.pure

IMAP = "imap.example.test"


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """Judge a session asking for a name against a certificate for imap.example.test."""
    root = pki.make_ca("Policy Root")
    leaf = pki.issue_leaf(root, cn=IMAP, dns=[IMAP])
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(root.cert_pem())
    store = TrustStore.load([path], use_system=False)
    chain = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in leaf.chain()]
    # Captured an hour after the certificate's start: no dependence on today's date.
    started = (leaf.cert.not_valid_before_utc + dt.timedelta(hours=1)).isoformat()

    def judge(host: str, *, sni: str | None = "same", with_chain: bool = True) -> Diagnosis:
        facts = SessionFacts(
            id="t",
            started=started,
            requested_host=host,
            requested_host_source="sni" if sni else "option",
            sni=host if sni == "same" else sni,
            chain=chain if with_chain else [],
        )
        return diagnose(facts, store)

    return judge


# -- requested_host ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sni", "configured", "mode", "expected"),
    [
        ("a.example.test", "b.example.test", "reverse", ("a.example.test", "sni")),
        (None, "b.example.test", "socks5", ("b.example.test", "option")),
        (None, "", "reverse", ("target.example.test", "reverse-target")),
        (None, "", "socks5", ("dest.example.test", "socks5")),
        (None, "", "regular", ("dest.example.test", "http-connect")),
        (None, "", "transparent", ("dest.example.test", "unknown")),
        ("", "", "regular", ("dest.example.test", "http-connect")),  # an empty SNI is no name
    ],
)
def test_requested_host_prefers_sni_then_the_option_then_the_mode(
    sni: str | None, configured: str, mode: str, expected: tuple[str, str]
) -> None:
    assert (
        policy.requested_host(
            sni,
            configured,
            mode=mode,
            reverse_target="target.example.test",
            destination="dest.example.test",
        )
        == expected
    )


def test_a_reverse_proxy_is_judged_against_its_target_not_the_dialled_address() -> None:
    assert policy.requested_host(
        None, "", mode="reverse", reverse_target="mail.example.test", destination="192.0.2.7"
    ) == ("mail.example.test", "reverse-target")


# -- upstream SNI ------------------------------------------------------------------------


def test_upstream_sni_is_the_clients_own_or_none() -> None:
    assert policy.upstream_sni("xn--strae-oqa.example.test") == "xn--strae-oqa.example.test"
    assert policy.upstream_sni(None) is None
    # A name the IDNA codec refuses cannot go out; no other name replaces it.
    assert policy.upstream_sni("a..b.example.test") is None


@pytest.mark.parametrize(
    ("client_sni", "reason"),
    [
        ("imap.example.test", None),
        (None, None),
        ("127.0.0.1", "ip-literal"),
        ("::1", "ip-literal"),
        ("a..b.example.test", "not-encodable"),
    ],
)
def test_the_reason_no_sni_went_upstream_is_typed(
    client_sni: str | None, reason: str | None
) -> None:
    assert policy.upstream_sni_reason(client_sni, policy.upstream_sni(client_sni)) == reason


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [("imap.example.test", "imap.example.test"), ("127.0.0.1", None), ("::1", None), ("", None)],
)
def test_an_ip_literal_in_server_sni_is_recorded_as_no_sni(sent: str, recorded: str | None) -> None:
    assert policy.recorded_upstream_sni(sent) == recorded


# -- client_action -----------------------------------------------------------------------


def test_a_match_passes_in_block_mode(judged) -> None:
    action = policy.client_action(judged(IMAP), chain_seen=True, on_mismatch="block")
    assert (action.block, action.name, action.why) == (False, "pass", None)


def test_a_mismatch_passes_unless_block_is_asked_for(judged) -> None:
    verdict = judged("wrong.example.test")
    assert verdict.verdict == "mismatch"
    assert policy.client_action(verdict, chain_seen=True, on_mismatch="pass").name == "pass"
    blocked = policy.client_action(verdict, chain_seen=True, on_mismatch="block")
    assert (blocked.name, blocked.why, blocked.by_option) == (
        "block",
        "mismatch, name-not-in-certificate",
        True,
    )


def test_no_server_certificate_always_blocks(judged) -> None:
    for on_mismatch in policy.ON_MISMATCH_CHOICES:
        action = policy.client_action(
            judged(IMAP, with_chain=False), chain_seen=False, on_mismatch=on_mismatch
        )
        assert (action.name, action.why, action.by_option) == (
            "block",
            "no server certificate",
            False,
        )


def test_block_fails_closed_without_a_verdict() -> None:
    action = policy.client_action(None, chain_seen=True, on_mismatch="block")
    assert (action.name, action.why) == ("block", "no verdict: the analysis failed")
    assert policy.client_action(None, chain_seen=True, on_mismatch="pass").name == "pass"


# -- wants_sni_probe ---------------------------------------------------------------------


def test_a_mismatch_without_sni_asks_the_server_again(judged) -> None:
    verdict = judged("alt.example.test", sni=None)
    assert verdict.verdict == "mismatch"
    assert policy.wants_sni_probe(verdict.facts, verdict)


@pytest.mark.parametrize(
    ("host", "sni", "why_not"),
    [
        ("alt.example.test", "same", "the client sent SNI: the server already knew the name"),
        (IMAP, None, "the certificate matches"),
        ("192.0.2.7", None, "an IP address cannot be sent as SNI"),
        ("", None, "no name to ask for"),
    ],
)
def test_no_probe_when_sni_could_not_change_the_answer(
    judged, host: str, sni: str | None, why_not: str
) -> None:
    verdict = judged(host, sni=sni)
    assert not policy.wants_sni_probe(verdict.facts, verdict), why_not


def test_no_probe_without_a_verdict(judged) -> None:
    facts = judged("alt.example.test", sni=None).facts
    assert not policy.wants_sni_probe(facts, None)
