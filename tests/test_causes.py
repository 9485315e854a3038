"""Every cause is bound to the rules that raise it, by type, and diagnosis uses that binding."""

from __future__ import annotations

import ast
import base64
import datetime as dt
import functools
import inspect
import re
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from certmatch.core import causes, dns_rules, findings, identity, starttls_findings, trust
from certmatch.core.causes import RULE_TYPES, Rule, cause_of
from certmatch.core.diagnosis import diagnose
from certmatch.core.dns_rules import DnsRule
from certmatch.core.facts import SessionFacts, SniProbe, StartTlsFacts
from certmatch.core.identity import IdentityRule
from certmatch.core.session_rules import SessionRule
from certmatch.core.starttls_findings import StartTlsFinding
from certmatch.core.trust import TrustProblemId, TrustStore
from certmatch.lab import pki

pytestmark = pytest.mark.pure

ALL_RULES: list[Rule] = [rule for kind in RULE_TYPES for rule in kind]

# The module whose functions each kind of rule names as the ones that decide it.
DECIDED_IN: dict[type, ModuleType] = {
    IdentityRule: identity,
    TrustProblemId: trust,
    StartTlsFinding: starttls_findings,
    SessionRule: findings,
    DnsRule: dns_rules,
}


# -- the catalogue's binding --------------------------------------------------------------


def test_every_cause_can_be_raised_by_some_rule() -> None:
    for cause in causes.CAUSES.values():
        assert cause.raised_by, f"{cause.id} names nothing that raises it"
        assert all(isinstance(rule, RULE_TYPES) for rule in cause.raised_by), cause.id


def test_every_rule_is_bound_to_exactly_one_cause() -> None:
    for rule in ALL_RULES:
        bound = [
            cause.id
            for cause in causes.CAUSES.values()
            for r in cause.raised_by
            if type(r) is type(rule) and r is rule
        ]
        assert len(bound) == 1, f"{type(rule).__name__}.{rule.name} is bound to {bound}"
        assert cause_of(rule).id == bound[0]


def test_rules_that_are_their_cause_have_its_id() -> None:
    """A finding named like a cause is bound to that cause: the names no longer drift."""
    for rule in ALL_RULES:
        if str(rule) in causes.CAUSES:
            assert cause_of(rule).id == str(rule), f"{type(rule).__name__}.{rule.name}"


def test_renamed_rules_match_their_causes() -> None:
    assert cause_of(IdentityRule.INVALID_REFERENCE).id == str(IdentityRule.INVALID_REFERENCE)
    assert cause_of(IdentityRule.CN_ONLY_LEGACY).id == str(IdentityRule.CN_ONLY_LEGACY)
    assert {"reference-invalid", "cn-legacy"}.isdisjoint(str(r) for r in IdentityRule)


def test_the_cause_decided_first_comes_first() -> None:
    """Where the session decides a cause, its rule leads ``raised_by``: one hop to the decider."""
    for rule in SessionRule:
        cause = cause_of(rule)
        assert cause.raised_by[0] is rule, cause.id


def _member_docs(kind: type) -> dict[str, str]:
    """The docstring written under each enum member, read from the source."""
    tree = ast.parse(inspect.getsource(inspect.getmodule(kind)))  # type: ignore[arg-type]
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == kind.__name__)
    docs: dict[str, str] = {}
    for node, after in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(node, ast.Assign)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.targets[0].id] = after.value.value  # type: ignore[attr-defined]
    return docs


@pytest.mark.parametrize("kind", RULE_TYPES, ids=lambda k: k.__name__)
def test_every_rule_names_the_function_that_decides_it(kind: type) -> None:
    """From a cause id, through ``raised_by``, to the function: each member says which."""
    docs = _member_docs(kind)
    module = DECIDED_IN[kind]
    for member in kind:  # type: ignore[attr-defined]
        doc = docs.get(member.name, "")
        if kind is not SessionRule:  # the session's own causes rest on no single section
            cited = "RFC" in doc or "CVE" in doc or "Microsoft KB" in doc
            assert cited, f"{kind.__name__}.{member.name} cites nothing"
        where = re.search(r"(?:Decided|Found) in (.*)$", doc, re.DOTALL)
        assert where, f"{kind.__name__}.{member.name} does not say where it is decided"
        names = re.findall(r"``(\w+)``", where.group(1))
        assert names, doc
        for name in names:
            function = getattr(module, name)
            if kind is DnsRule:  # dns_findings pairs each rule with the function deciding it
                paired = rf"DnsRule\.{member.name},\s*{name}\("
                assert re.search(paired, inspect.getsource(dns_rules.dns_findings)), (
                    f"dns_findings does not decide DnsRule.{member.name} with {name}"
                )
                continue
            assert f"{kind.__name__}.{member.name}" in inspect.getsource(function), (
                f"{module.__name__}.{name} does not raise {kind.__name__}.{member.name}"
            )


def test_name_not_in_certificate_is_decided_in_one_place() -> None:
    source = inspect.getsource(findings)
    decider = inspect.getsource(findings._name_not_in_certificate)
    assert source.count("SessionRule.NAME_NOT_IN_CERTIFICATE") == 1
    assert "SessionRule.NAME_NOT_IN_CERTIFICATE" in decider
    for module in (identity, trust, starttls_findings, findings):
        assert "name-not-in-certificate" not in inspect.getsource(module), module.__name__


@pytest.mark.parametrize("module", [findings], ids=lambda m: m.__name__)
def test_diagnosis_holds_no_table_of_cause_ids(module: ModuleType) -> None:
    """Every lookup goes through the catalogue; no cause id is spelled out in diagnosis."""
    spelled = {
        node.value
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not spelled & set(causes.CAUSES)


def test_pop3_stls_is_cited_beside_imap_starttls() -> None:
    for finding in StartTlsFinding:
        cited = [str(c) for c in cause_of(finding).citations]
        if any("RFC 2595 §3" in c for c in cited):
            assert any(c.startswith("RFC 2595 §4 (POP3 STLS)") for c in cited), finding
    assert causes.RFC2595_4 in cause_of(StartTlsFinding.NOT_OFFERED).citations


# -- diagnosis reports the cause bound to the rule that decided -----------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    root = pki.make_ca("Causes Root")
    inter = pki.make_ca("Causes Intermediate", parent=root)
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(root.cert_pem())
    return root, inter, TrustStore.load([path], use_system=False)


def b64(certs: list[x509.Certificate]) -> list[str]:
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in certs]


def session(chain: list[str], host: str | None, **kw) -> SessionFacts:
    """A session captured an hour after the latest notBefore: inside every validity period."""
    starts = [
        x509.load_der_x509_certificate(base64.b64decode(c)).not_valid_before_utc for c in chain
    ]
    started = (
        max(starts) + dt.timedelta(hours=1) if starts else dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    kw.setdefault("sni", host)
    return SessionFacts(id="c", started=started.isoformat(), requested_host=host, chain=chain, **kw)


@pytest.mark.parametrize(
    ("dns", "ips", "cn", "host", "check"),
    [
        (["other.example.test"], [], None, "mail.example.test", 0),  # different-name
        (["*.example.test"], [], None, "a.b.example.test", 0),  # wildcard-too-deep
        (["*.example.test"], [], None, "example.test", 0),  # wildcard-apex
        (["m*.example.test"], [], None, "mail.example.test", 0),  # wildcard-partial
        (["mail.*.test"], [], None, "mail.example.test", 0),  # wildcard-not-leftmost
        (["*.test"], [], None, "example.test", 0),  # wildcard-public-suffix
        (["mail.example.test\x00.evil.test"], [], None, "mail.example.test", 0),  # nul-in-name
        (["other.example.test"], [], "mail.example.test", "mail.example.test", 1),  # cn ignored
        ([], [], "mail.example.test", "mail.example.test", 0),  # cn-only-legacy
        ([], ["192.0.2.1"], None, "mail.example.test", 0),  # reference-is-dns
        (["mail.example.test"], [], None, "192.0.2.1", 0),  # reference-is-ip
        ([], ["192.0.2.1"], None, "192.0.2.9", 0),  # ip-mismatch
        (["192.0.2.1"], [], None, "192.0.2.1", 0),  # ip-as-dns-name
        (["mail.example.test"], [], None, "mail example test", 0),  # invalid-reference
    ],
)
def test_diagnosis_reports_the_cause_bound_to_the_rule_that_refused(
    ca, dns, ips, cn, host, check
) -> None:
    _, inter, store = ca
    leaf = pki.issue_leaf(inter, dns=dns, ips=ips, cn=cn)
    d = diagnose(session(b64(leaf.chain()), host), store)
    assert d.identity is not None
    rule = d.identity.checks[check].rule
    assert d.primary is not None
    assert d.primary.cause is cause_of(rule), (rule, d.cause_ids)


def test_a_wildcard_over_an_idn_label_is_the_idn_form_cause(ca) -> None:
    _, inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["*.example.test"])
    d = diagnose(session(b64(leaf.chain()), "xn--bcher-kva.example.test"), store)
    assert d.identity is not None and d.identity.checks[0].rule is IdentityRule.WILDCARD_IDN
    assert cause_of(IdentityRule.WILDCARD_IDN).id in d.cause_ids
    # The IDN warning explains nothing on its own: the failure is that the name is not there.
    assert d.primary is not None and d.primary.cause is cause_of(
        SessionRule.NAME_NOT_IN_CERTIFICATE
    )


def test_reference_findings_are_the_causes_bound_to_them(ca) -> None:
    _, inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test", "xn--bcher-kva.example.test"])
    dotted = diagnose(session(b64(leaf.chain()), "mail.example.test."), store)
    assert dotted.cause_ids == (cause_of(IdentityRule.TRAILING_DOT).id,)
    u_label = diagnose(session(b64(leaf.chain()), "bücher.example.test"), store)
    assert u_label.cause_ids == (cause_of(IdentityRule.IDN_FORM).id,)
    assert u_label.verdict == "match" and "A-label" in u_label.primary.explanation


def same_subject_same_key(count: int) -> list[x509.Certificate]:
    """x509-limbo's pathological chain: a leaf under ``count`` CAs sharing subject and key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=Pathological CA")
    now = dt.datetime.now(dt.UTC)
    builder = functools.partial(
        pki.ca_certificate_builder, name, name, key.public_key(), None, now, now + dt.timedelta(1)
    )
    cas = [builder().sign(key, hashes.SHA256()) for _ in range(count)]
    leaf = pki.issue_leaf(pki.Issued(cas[-1], key), dns=["m.example.test"])
    return [leaf.cert, *reversed(cas)]


@pytest.mark.parametrize(
    ("chain", "problem"),
    [
        (lambda root, inter: pki.issue_leaf(None, dns=["m.example.test"]).chain(), "self-signed"),
        (
            lambda root, inter: pki.issue_leaf(inter, dns=["m.example.test"]).chain()[:1],
            "missing-intermediate",
        ),
        (
            lambda root, inter: list(
                reversed(pki.issue_leaf(inter, dns=["m.example.test"]).chain())
            ),
            "wrong-order",
        ),
        (
            lambda root, inter: pki.issue_leaf(
                pki.make_ca("Stranger"), dns=["m.example.test"]
            ).chain(include_root=True),
            "unknown-issuer",
        ),
        (lambda root, inter: same_subject_same_key(100), "chain-too-complex"),
    ],
)
def test_diagnosis_reports_the_cause_bound_to_each_trust_problem(ca, chain, problem) -> None:
    root, inter, store = ca
    d = diagnose(session(b64(chain(root, inter)), "m.example.test"), store)
    assert d.trust is not None
    ids = [p.id for p in d.trust.problems]
    assert problem in ids
    for p in d.trust.problems:
        assert cause_of(p.id).id in d.cause_ids


def test_a_chain_too_complex_to_search_is_untrusted_and_says_why(ca) -> None:
    store = ca[2]
    d = diagnose(session(b64(same_subject_same_key(100)), "m.example.test"), store)
    too_complex = cause_of(TrustProblemId.CHAIN_TOO_COMPLEX)
    assert too_complex.severity == "failure"
    assert [str(c) for c in too_complex.citations] == [
        "RFC 5280 §6.1 (certification path validation)"
    ]
    assert d.verdict == "untrusted" and d.primary is not None
    assert d.primary.cause is too_complex
    assert "101 certificates" in d.primary.explanation


def test_diagnosis_reports_the_cause_bound_to_each_starttls_finding() -> None:
    store = TrustStore((), ())
    facts = SessionFacts(
        id="s",
        started="2026-01-01T00:00:00+00:00",
        protocol="pop3",
        tls_kind="starttls",
        requested_host="mail.example.test",
        starttls=StartTlsFacts(server_offered=False, client_requested=False, plaintext_auth="USER"),
    )
    found = starttls_findings.starttls_findings(facts)
    assert set(found) == {StartTlsFinding.PLAINTEXT_AUTH, StartTlsFinding.NOT_OFFERED}
    d = diagnose(facts, store)
    assert set(d.cause_ids) == {cause_of(f).id for f in found}
    offered = next(f for f in d.findings if f.cause is cause_of(StartTlsFinding.NOT_OFFERED))
    assert "CAPA" in offered.explanation  # the detail names the session's protocol


@pytest.mark.parametrize(
    ("server_error", "rule"),
    [
        ("cannot connect: [Errno 111] Connection refused", SessionRule.UPSTREAM_UNREACHABLE),
        ("TLS handshake failed", SessionRule.UPSTREAM_TLS_FAILED),
    ],
)
def test_diagnosis_reports_the_cause_of_each_session_rule(ca, server_error, rule) -> None:
    store = ca[2]
    d = diagnose(session([], "mail.example.test", server_error=server_error), store)
    assert d.primary is not None and d.primary.cause is cause_of(rule)


def test_session_rules_for_sni_mail_domain_and_the_proxy(ca) -> None:
    _, inter, store = ca
    default = pki.issue_leaf(inter, dns=["mail.example.test", "smtp.example.test"])
    alt = pki.issue_leaf(inter, dns=["example.test"])
    probe = SniProbe(sni="example.test", chain=b64(alt.chain())[:1])
    no_sni = diagnose(
        session(
            b64(default.chain()),
            "example.test",
            sni=None,
            sni_probe=probe,
            requested_host_source="option",
        ),
        store,
    )
    assert set(no_sni.cause_ids) == {
        cause_of(SessionRule.NO_SNI_DEFAULT_CERTIFICATE).id,
        cause_of(SessionRule.MAIL_DOMAIN_NOT_SERVER).id,
    }
    refused = diagnose(
        session(b64(alt.chain()), "example.test", client_error="tlsv1 alert unknown ca"), store
    )
    assert refused.cause_ids == (
        cause_of(SessionRule.PROXY_CA_NOT_TRUSTED).id,
        cause_of(SessionRule.CLIENT_REFUSED_CERTIFICATE).id,
    )
    junk = base64.b64encode(b"\x30\x03junk").decode()
    broken = diagnose(
        SessionFacts(id="j", started="2026-01-01T00:00:00+00:00", chain=[junk]), store
    )
    assert broken.cause_ids == (cause_of(SessionRule.MALFORMED_CERTIFICATE).id,)


# -- where the name came from, and what the client sent as SNI ------------------------------


@pytest.mark.parametrize(
    ("source", "assumed"),
    [
        ("reverse-target", True),  # the proxy's own target: nobody asked for it
        ("unknown", True),  # a destination the client did not name (transparent modes)
        ("socks5", False),  # the client names its target, even as an IP address
        ("http-connect", False),
        ("option", False),  # --host: the user's statement of the client's settings
    ],
)
def test_a_name_the_client_did_not_give_is_assumed(ca, source, assumed) -> None:
    _, inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    facts = session(b64(leaf.chain()), "mail.example.test", sni=None, requested_host_source=source)
    d = diagnose(facts, store)
    assumed_id = cause_of(SessionRule.REQUESTED_HOST_ASSUMED).id
    assert (assumed_id in d.cause_ids) is assumed, d.cause_ids
    assert d.verdict == "match"
    assert d.failed is assumed  # never a silent match


@pytest.mark.parametrize(
    ("presented", "decision", "said"),
    [
        ("real", "went-on", True),
        ("mirror", "went-on", True),
        ("substitute", "went-on", False),
        ("real", "closed-after-handshake", False),
    ],
)
def test_an_assumed_name_says_when_the_client_accepted_the_servers_own_names(
    ca, presented, decision, said
) -> None:
    """No SNI, a certificate for another name: a client that went on with the server's own
    names checked a name among them, so certmatch says its mismatch is with the assumed name."""
    _, inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    facts = session(
        b64(leaf.chain()), "192.0.2.1", sni=None, requested_host_source="reverse-target"
    )
    facts.presented, facts.client_decision = presented, decision
    d = diagnose(facts, store)
    [assumed] = [f for f in d.findings if f.id == "requested-host-assumed"]
    assert ("This client went on" in assumed.explanation) is said, assumed.explanation
    assert ("checks no name at all" in assumed.explanation) is said  # swaks, bare s_client
    assert d.verdict == "mismatch" and d.failed  # the assumed name itself still fails


def test_a_name_sent_as_sni_is_never_assumed(ca) -> None:
    _, inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"])
    for sni in ("mail.example.test", "192.0.2.1"):
        facts = session(b64(leaf.chain()), sni, requested_host_source="reverse-target")
        d = diagnose(facts, store)
        assert cause_of(SessionRule.REQUESTED_HOST_ASSUMED).id not in d.cause_ids, sni


def test_an_assumed_name_comes_after_the_certificates_own_causes(ca) -> None:
    _, inter, store = ca
    assumed_id = cause_of(SessionRule.REQUESTED_HOST_ASSUMED).id
    wildcard = pki.issue_leaf(inter, dns=["*.example.test"])
    deep = diagnose(
        session(
            b64(wildcard.chain()),
            "a.b.example.test",
            sni=None,
            requested_host_source="unknown",
            sni_probe=SniProbe(sni="a.b.example.test", error="connection refused"),
        ),
        store,
    )
    assert deep.cause_ids == (cause_of(IdentityRule.WILDCARD_TOO_DEEP).id, assumed_id)
    stranger = pki.issue_leaf(pki.make_ca("Stranger"), dns=["m.example.test"])
    untrusted = diagnose(
        session(
            b64(stranger.chain(include_root=True)),
            "m.example.test",
            sni=None,
            requested_host_source="reverse-target",
        ),
        store,
    )
    assert untrusted.verdict == "untrusted"
    assert untrusted.cause_ids[-1] == assumed_id and len(untrusted.cause_ids) > 1
    # In the catalogue (the order among failures) it is the very last cause.
    failures = [c for c in causes.PRIMARY_ORDER if causes.get(c).severity != "warning"]
    assert failures[-1] == assumed_id


def test_no_certificate_judged_means_no_name_assumed(ca) -> None:
    store = ca[2]
    d = diagnose(
        session(
            [],
            "127.0.0.1",
            sni=None,
            requested_host_source="reverse-target",
            server_error="cannot connect: [Errno 111] Connection refused",
        ),
        store,
    )
    assert d.cause_ids == (cause_of(SessionRule.UPSTREAM_UNREACHABLE).id,)


@pytest.mark.parametrize(
    ("sni", "flagged"),
    [
        ("127.0.0.1", True),
        ("2001:db8::1", True),
        ("mail.example.test", False),
        ("1.2.3.4.example.test", False),
        (None, False),
    ],
)
def test_an_ip_literal_sent_as_sni_is_a_warning(ca, sni, flagged) -> None:
    _, inter, store = ca
    leaf = pki.issue_leaf(inter, dns=["mail.example.test"], ips=["127.0.0.1", "2001:db8::1"])
    host = sni or "mail.example.test"
    d = diagnose(session(b64(leaf.chain()), host, sni=sni, requested_host_source="option"), store)
    literal = cause_of(SessionRule.SNI_IP_LITERAL)
    assert literal.severity == "warning"
    assert (literal.id in d.cause_ids) is flagged, d.cause_ids
    if flagged:  # the address matches the certificate's iPAddress entry: only the warning
        assert d.verdict == "match" and d.cause_ids == (literal.id,) and not d.failed


def test_an_ip_literal_sni_is_flagged_even_without_a_certificate(ca) -> None:
    store = ca[2]
    d = diagnose(
        session([], "127.0.0.1", server_error="cannot connect: [Errno 111] Connection refused"),
        store,
    )
    assert d.cause_ids == (
        cause_of(SessionRule.UPSTREAM_UNREACHABLE).id,
        cause_of(SessionRule.SNI_IP_LITERAL).id,
    )


def test_the_new_causes_cite_what_they_rest_on() -> None:
    literal = cause_of(SessionRule.SNI_IP_LITERAL)
    assert [str(c) for c in literal.citations] == [
        "RFC 6066 §3 (Literal IPv4 and IPv6 addresses are not permitted in HostName)"
    ]
    assumed = [
        str(c).split(" (")[0] for c in cause_of(SessionRule.REQUESTED_HOST_ASSUMED).citations
    ]
    assert {"RFC 6066 §3", "RFC 9525 §6.1.1", "RFC 9525 §6.4"} <= set(assumed)
