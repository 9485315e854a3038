"""Trust assessment and trust stores, with certificates minted per test module."""

from __future__ import annotations

import base64
import datetime as dt
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from certmatch.core import trust
from certmatch.core.causes import cause_of
from certmatch.core.certificates import parse_chain
from certmatch.core.trust import (
    TrustProblemId,
    TrustResult,
    TrustStore,
    TrustStoreError,
    assess_trust,
)
from certmatch.lab.pki import Issued, ca_certificate_builder, issue_leaf, make_ca

pytestmark = pytest.mark.pure

NOW = dt.datetime.now(dt.UTC)


def b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")


def ids(result: TrustResult) -> list[str]:
    """The problems' ids, but the CA-profile warning: many certificates built by hand below
    omit key identifiers (RFC 5280 §4.2.1.1, §4.2.1.2); that warning has tests of its own."""
    assert all(isinstance(p.id, TrustProblemId) for p in result.problems)
    return [p.id for p in result.problems if p.id != TrustProblemId.CA_PROFILE_VIOLATION]


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    root = make_ca("Trust Root")
    inter = make_ca("Trust Inter", parent=root)
    return {
        "root": root,
        "inter": inter,
        "leaf": issue_leaf(inter, cn="mail.example.net", dns=["mail.example.net"]),
    }


@pytest.fixture(scope="module")
def store(pki: dict[str, Issued]) -> TrustStore:
    return TrustStore((pki["root"].cert,), ("test root",))


def assess(certs: list[x509.Certificate], store: TrustStore, at: dt.datetime = NOW):
    return assess_trust(parse_chain([b64(c) for c in certs]), at, store)


def subject(issued: Issued) -> str:
    return issued.cert.subject.rfc4514_string()


def test_leaf_via_intermediate_is_trusted(pki: dict[str, Issued], store: TrustStore) -> None:
    result = assess(pki["leaf"].chain(), store)
    assert result.trusted and result.problems == ()  # the lab PKI follows RFC 5280 §4
    assert result.validated_path == (
        subject(pki["leaf"]),
        subject(pki["inter"]),
        subject(pki["root"]),
    )


def test_names_play_no_part(pki: dict[str, Issued], store: TrustStore) -> None:
    """A CN-only leaf (refused by CA/B rules) and an IP-only leaf are judged on trust alone."""
    for leaf in (
        issue_leaf(pki["inter"], cn="legacy.example"),
        issue_leaf(pki["inter"], ips=["192.0.2.1"]),
    ):
        result = assess(leaf.chain(), store)
        assert result.trusted, result.problems
        assert result.problems == ()


def test_expired_leaf(pki: dict[str, Issued], store: TrustStore) -> None:
    leaf = issue_leaf(
        pki["inter"],
        cn="old.example",
        dns=["old.example"],
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
    )
    result = assess(leaf.chain(), store)
    assert not result.trusted and result.validated_path == ()
    assert ids(result) == ["expired"]
    problem = result.problems[0]
    assert problem.cert_index == 0
    assert "2021-01-01" in problem.detail and "CN=old.example" in problem.detail


def test_time_comes_from_the_caller(pki: dict[str, Issued], store: TrustStore) -> None:
    later = NOW + dt.timedelta(days=400)  # the leaf lives 365 days, the CAs ten years
    result = assess(pki["leaf"].chain(), store, at=later)
    assert not result.trusted
    assert [(p.id, p.cert_index) for p in result.problems] == [("expired", 0)]
    naive = assess(pki["leaf"].chain(), store, at=NOW.replace(tzinfo=None))
    assert naive.trusted


def test_not_yet_valid_leaf(pki: dict[str, Issued], store: TrustStore) -> None:
    start = NOW + dt.timedelta(days=30)
    leaf = issue_leaf(
        pki["inter"],
        dns=["soon.example"],
        not_before=start,
        not_after=start + dt.timedelta(days=90),
    )
    result = assess(leaf.chain(), store)
    assert not result.trusted
    assert ids(result) == ["not-yet-valid"]
    assert start.strftime("%Y-%m-%d") in result.problems[0].detail


def test_self_signed_leaf(store: TrustStore) -> None:
    leaf = issue_leaf(None, cn="self.example", dns=["self.example"])
    result = assess([leaf.cert], store)
    assert not result.trusted
    assert [(p.id, p.cert_index) for p in result.problems] == [("self-signed", 0)]
    pinned = TrustStore((leaf.cert,), ("pinned",))
    assert assess([leaf.cert], pinned).trusted


def test_unknown_root(pki: dict[str, Issued], store: TrustStore) -> None:
    other_root = make_ca("Other Root")
    other_inter = make_ca("Other Inter", parent=other_root)
    leaf = issue_leaf(other_inter, dns=["elsewhere.example"])
    without_root = assess(leaf.chain(), store)
    assert not without_root.trusted
    assert [(p.id, p.cert_index) for p in without_root.problems] == [("unknown-issuer", 1)]
    assert "Other Root" in without_root.problems[0].detail
    with_root = assess(leaf.chain(include_root=True), store)
    assert [(p.id, p.cert_index) for p in with_root.problems] == [("unknown-issuer", 2)]
    assert "self-signed root" in with_root.problems[0].detail


def test_missing_intermediate(pki: dict[str, Issued], store: TrustStore) -> None:
    result = assess([pki["leaf"].cert], store)
    assert not result.trusted
    assert [(p.id, p.cert_index) for p in result.problems] == [("missing-intermediate", 0)]
    assert subject(pki["inter"]) in result.problems[0].detail


def test_wrong_order(pki: dict[str, Issued], store: TrustStore) -> None:
    leaf, inter, root = pki["leaf"].cert, pki["inter"].cert, pki["root"].cert
    intermediate_first = assess([inter, leaf], store)
    assert intermediate_first.trusted  # all there, so still trusted: order is its own problem
    assert [(p.id, p.cert_index) for p in intermediate_first.problems] == [("wrong-order", 1)]
    assert intermediate_first.validated_path[0] == subject(pki["leaf"])
    root_before_intermediate = assess([leaf, root, inter], store)
    assert ids(root_before_intermediate) == ["wrong-order"]
    assert ids(assess([leaf, inter, root], store)) == []


def test_garbage_der(pki: dict[str, Issued], store: TrustStore) -> None:
    garbage = base64.b64encode(b"\x30\x03\x02\x01\x00 garbage").decode()
    after_leaf = assess_trust(parse_chain([b64(pki["leaf"].cert), garbage]), NOW, store)
    assert not after_leaf.trusted
    assert [(p.id, p.cert_index) for p in after_leaf.problems] == [
        ("malformed-certificate", 1),
        ("missing-intermediate", 0),
    ]
    as_leaf = assess_trust(parse_chain([garbage, b64(pki["inter"].cert)]), NOW, store)
    assert not as_leaf.trusted
    assert [(p.id, p.cert_index) for p in as_leaf.problems] == [("malformed-certificate", 0)]
    assert "cannot be assessed" in as_leaf.problems[0].detail


def test_bad_base64(store: TrustStore) -> None:
    result = assess_trust(parse_chain(["not base64 at all!"]), NOW, store)
    assert not result.trusted
    first = result.problems[0]
    assert (first.id, first.cert_index) == ("malformed-certificate", 0)
    assert "base64" in result.problems[0].detail


def test_empty_chain(store: TrustStore) -> None:
    result = assess_trust(parse_chain([]), NOW, store)
    assert (result.trusted, ids(result)) == (False, ["no-certificate"])


def test_issuer_that_is_not_a_ca(pki: dict[str, Issued], store: TrustStore) -> None:
    """issue_leaf(ca=<a leaf>) signs with a leaf's key: name and signature fit, CA:FALSE."""
    signer = issue_leaf(pki["inter"], dns=["signer.example"])
    leaf = issue_leaf(signer, dns=["victim.example"])
    result = assess([leaf.cert, signer.cert, pki["inter"].cert], store)
    assert not result.trusted
    assert [(p.id, p.cert_index) for p in result.problems] == [("not-a-ca", 1)]
    assert "not a CA" in result.problems[0].detail


def test_ca_without_key_usage_is_trusted_by_fallback(
    pki: dict[str, Issued], store: TrustStore
) -> None:
    """cryptography's web PKI policy requires keyUsage on CAs; OpenSSL-based clients do not."""
    root = pki["root"]
    key = ec.generate_private_key(ec.SECP256R1())
    bare = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Bare Inter")]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    leaf = issue_leaf(Issued(bare, key, [root.cert]), dns=["bare.example"])
    result = assess([leaf.cert, bare], store)
    assert result.trusted and ids(result) == []
    assert result.validated_path == (subject(leaf), "CN=Bare Inter", subject(root))


def test_empty_store_trusts_nothing(pki: dict[str, Issued]) -> None:
    result = assess(pki["leaf"].chain(include_root=True), TrustStore((), ()))
    assert not result.trusted
    assert ids(result) == ["unknown-issuer"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()), max_size=3))
def test_assess_trust_never_raises(chain: list[str]) -> None:
    result = assess_trust(parse_chain(chain), NOW, TrustStore((), ()))
    assert not result.trusted
    assert result.problems  # an empty or garbage chain always has a reason


# --- TrustStore.load ------------------------------------------------------------------------


def test_load_ca_file(tmp_path: Path, pki: dict[str, Issued]) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"a comment line\n" + pki["root"].cert_pem() + pki["inter"].cert_pem())
    loaded = TrustStore.load([bundle], use_system=False)
    assert loaded.roots == (pki["root"].cert, pki["inter"].cert)
    assert loaded.sources == (str(bundle),)
    assert assess(pki["leaf"].chain(), loaded).trusted


def test_load_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TrustStoreError) as caught:
        TrustStore.load([missing], use_system=False)
    message = str(caught.value)
    assert str(missing) in message and "no such file" in message
    assert "pass a PEM file with one or more CA certificates" in message


def test_load_file_without_certificates(tmp_path: Path, pki: dict[str, Issued]) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("just some text\n")
    with pytest.raises(TrustStoreError, match="no PEM certificate found") as caught:
        TrustStore.load([empty], use_system=False)
    assert str(empty) in str(caught.value)

    der = tmp_path / "root.der"
    der.write_bytes(pki["root"].cert.public_bytes(Encoding.DER))
    with pytest.raises(TrustStoreError, match="looks like DER"):
        TrustStore.load([der], use_system=False)


def test_load_file_with_broken_block(tmp_path: Path, pki: dict[str, Issued]) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_bytes(
        pki["root"].cert_pem() + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(TrustStoreError, match="block 2 could not be parsed"):
        TrustStore.load([broken], use_system=False)


def test_system_store_loads(tmp_path: Path, pki: dict[str, Issued]) -> None:
    system = TrustStore.load()
    if system.sources[0].startswith("system (no CA bundle"):
        pytest.skip("this machine has no system CA bundle")
    assert system.sources[0].startswith("system (/")
    assert len(system.roots) > 10
    extra = tmp_path / "extra.pem"
    extra.write_bytes(pki["root"].cert_pem())
    both = TrustStore.load([extra])
    assert both.sources == (system.sources[0], str(extra))
    assert set(both.roots) == {*system.roots, pki["root"].cert}


def test_the_system_bundle_named_by_ssl_cert_file_comes_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: dict[str, Issued]
) -> None:
    """The core finds the system bundle without the ssl module, as OpenSSL would."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki["root"].cert_pem())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    trust._system_roots.cache_clear()
    try:
        system = TrustStore.load()
    finally:
        trust._system_roots.cache_clear()
    assert system.sources == (f"system ({bundle})",)
    assert system.roots == (pki["root"].cert,)


# -- deep chains, and chains built to stall a path search (issue 13) -------------------------


def deep_chain(depth: int) -> tuple[Issued, Issued]:
    """A root, ``depth`` intermediates below it, and a leaf under the last one."""
    root = make_ca("deep root")
    ca = root
    for n in range(1, depth + 1):
        ca = make_ca(f"deep intermediate {n}", parent=ca)
    return root, issue_leaf(ca, dns=["mail.example.net"])


def cn(name: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(f"CN={name}")


def ca_cert(subject: str, issuer: str, key, signing_key) -> x509.Certificate:
    """A CA certificate with exactly the subject, issuer and keys given."""
    return make_ca_builder(subject, cn(issuer), key).sign(signing_key, hashes.SHA256())


def make_ca_builder(subject: str, issuer: x509.Name, key) -> x509.CertificateBuilder:
    return ca_certificate_builder(
        cn(subject),
        issuer,
        key.public_key(),
        None,
        NOW - dt.timedelta(days=1),
        NOW + dt.timedelta(days=30),
    )


def same_subject_same_key(count: int) -> list[x509.Certificate]:
    """x509-limbo's pathological-chain-same-subject-same-key: a leaf under ``count`` CAs that
    share one subject and one key, so each appears to have signed every other."""
    key = ec.generate_private_key(ec.SECP256R1())
    cas = [ca_cert("Pathological CA", "Pathological CA", key, key) for _ in range(count)]
    leaf = issue_leaf(Issued(cas[-1], key), dns=["mail.example.net"])
    return [leaf.cert, *reversed(cas)]


def test_a_valid_20_deep_chain_is_trusted() -> None:
    """root -> 19 intermediates -> leaf, all sent: cryptography's default depth (8) refused it."""
    root, leaf = deep_chain(19)
    result = assess(leaf.chain(), TrustStore((root.cert,), ("deep root",)))
    assert result.trusted and ids(result) == []
    assert len(result.validated_path) == 21
    assert result.validated_path[-1] == subject(root)


def test_a_deep_chain_from_an_unknown_root_names_the_issuer_that_was_not_sent(
    store: TrustStore,
) -> None:
    """The lenient path follows all 19 sent intermediates: the missing issuer is the root."""
    _, leaf = deep_chain(19)
    result = assess(leaf.chain(), store)
    assert ids(result) == ["unknown-issuer"]
    detail = result.problems[0].detail
    assert "'CN=deep intermediate 1,O=certmatch test PKI'" in detail
    assert "its issuer 'CN=deep root,O=certmatch test PKI' was not sent" in detail
    assert "deep intermediate 10" not in detail


def test_the_lenient_path_trusts_a_deep_chain_the_verifier_refuses() -> None:
    """A CA without keyUsage at the top of 19: the fallback walks the whole chain to the root."""
    root = make_ca("deep root")
    key = ec.generate_private_key(ec.SECP256R1())
    bare = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=bare deep intermediate"))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    ca = Issued(bare, key, [root.cert])
    for n in range(2, 20):
        ca = make_ca(f"deep intermediate {n}", parent=ca)
    leaf = issue_leaf(ca, dns=["mail.example.net"])
    store = TrustStore((root.cert,), ("deep root",))
    presented = dict(enumerate(leaf.chain()))
    issuers = trust._presented_issuers(presented)
    paths, cut_short = trust._candidate_paths(0, presented, issuers, store)
    assert paths == [list(range(20))] and not cut_short
    assert trust._verify(presented, paths, NOW, store) is None
    result = assess(leaf.chain(), store)
    assert result.trusted and ids(result) == []
    assert len(result.validated_path) == 21


def test_limbo_same_subject_same_key_stops_with_chain_too_complex(store: TrustStore) -> None:
    """101 certificates are more than any server sends: refused before a signature is checked.
    (Unbounded, cryptography's verifier spends 18+ CPU minutes on this chain.)"""
    chain = same_subject_same_key(100)
    started = time.perf_counter()
    result = assess(chain, store)
    assert time.perf_counter() - started < 10  # ~5 ms; generous for a loaded 2-core machine
    assert not result.trusted and ids(result) == ["chain-too-complex"]
    detail = result.problems[0].detail
    assert "sent 101 certificates" in detail and f"at most {trust.MAX_CERTIFICATES}" in detail
    assert "100 of them share one subject, 'CN=Pathological CA', and one key" in detail


def test_copies_alike_in_subject_issuer_and_key_are_judged_once(store: TrustStore) -> None:
    """30 such CAs (within the count) collapse to one, which is self-signed and not trusted:
    untrusted for the true reason, quickly (3 of them unfiltered take the verifier seconds)."""
    chain = same_subject_same_key(30)
    started = time.perf_counter()
    result = assess(chain, store)
    assert time.perf_counter() - started < 10
    assert not result.trusted and ids(result) == ["unknown-issuer"]
    assert "self-signed root 'CN=Pathological CA'" in result.problems[0].detail


def test_certificates_that_sign_for_each_other_end_in_a_loop(store: TrustStore) -> None:
    """Two certificates of CA S (one key) issued by X and by Y, and X and Y issued by S: every
    other step doubled the verifier's walks (2^16 at depth 32). None reaches the store, so the
    verifier is never asked, and the loop is named, not a missing issuer."""
    key_s = ec.generate_private_key(ec.SECP256R1())
    chain: list[x509.Certificate] = []
    for other in ("X", "Y"):
        key_o = ec.generate_private_key(ec.SECP256R1())
        chain += [ca_cert("S", other, key_s, key_o), ca_cert(other, "S", key_o, key_s)]
    leaf = issue_leaf(Issued(chain[0], key_s), dns=["mail.example.net"])
    started = time.perf_counter()
    result = assess([leaf.cert, *chain], store)
    assert time.perf_counter() - started < 10
    assert not result.trusted and ids(result) == ["unknown-issuer"]
    detail = result.problems[0].detail
    assert "its issuer 'CN=S' was sent, but only as certificates already on the path" in detail
    assert "not sent" not in detail


def cross_signed_mesh(count: int) -> tuple[x509.Certificate, list[x509.Certificate], list]:
    """``count`` CAs, each certified by every other one: count * (count - 1) certificates with
    no two alike, a leaf under the first CA, and the CAs' keys."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)]
    names = [f"Mesh CA {n}" for n in range(count)]
    cas = [
        ca_cert(names[a], names[b], keys[a], keys[b])
        for a in range(count)
        for b in range(count)
        if a != b
    ]
    leaf = issue_leaf(Issued(cas[0], keys[0]), dns=["mail.example.net"])
    return leaf.cert, cas, keys


def test_a_mesh_of_cross_signed_cas_stops_the_search(store: TrustStore) -> None:
    """6 CAs that all certify each other (30 certificates) hold ~1,600 paths without a repeated
    CA: more than MAX_PATH_STEPS, so the search stops with chain-too-complex, quickly."""
    leaf, cas, _ = cross_signed_mesh(6)
    started = time.perf_counter()
    result = assess([leaf, *cas], store)
    assert time.perf_counter() - started < 10
    assert not result.trusted and ids(result) == ["chain-too-complex"]
    assert f"stopped after {trust.MAX_PATH_STEPS} steps" in result.problems[0].detail


def test_a_mesh_with_a_trusted_ca_is_trusted() -> None:
    """The same mesh, when the store holds one of its CAs' self-signed certificate: the first
    path that reaches it validates, however many others there are (x509-limbo cve-2024-0567)."""
    leaf, cas, keys = cross_signed_mesh(6)
    root = ca_cert("Mesh CA 5", "Mesh CA 5", keys[5], keys[5])
    started = time.perf_counter()
    result = assess([leaf, *cas], TrustStore((root,), ("mesh root",)))
    assert time.perf_counter() - started < 10
    assert result.trusted and ids(result) == ["wrong-order"]  # the mesh is sent in no order
    assert result.validated_path[-1] == "CN=Mesh CA 5"


def test_a_cross_signed_ca_keeps_both_its_certificates(
    pki: dict[str, Issued], store: TrustStore
) -> None:
    """One subject and key, two issuers: the copy the store reaches is not thrown away, even
    when the self-signed one is sent first."""
    key = ec.generate_private_key(ec.SECP256R1())
    self_signed = ca_cert("Cross CA", "Cross CA", key, key)
    root_name = pki["root"].cert.subject.rfc4514_string()
    cross = make_ca_builder("Cross CA", pki["root"].cert.subject, key)
    cross_signed = cross.sign(pki["root"].key, hashes.SHA256())
    leaf = issue_leaf(Issued(self_signed, key), dns=["mail.example.net"])
    result = assess([leaf.cert, self_signed, cross_signed], store)
    assert result.trusted
    assert result.validated_path[-2:] == ("CN=Cross CA", root_name)


# -- critical extensions no client processes (x509-limbo rfc5280::unknown-critical-extension-*) --

UNKNOWN = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55738.666.1"), b"")


def ca_with(name: str, parent: Issued | None, *, unknown: bool) -> Issued:
    """A CA under ``parent`` (a root when None), with the unknown extension marked critical."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = make_ca_builder(name, parent.cert.subject if parent else cn(name), key)
    if unknown:
        builder = builder.add_extension(UNKNOWN, critical=True)
    cert = builder.sign(parent.key if parent else key, hashes.SHA256())
    return Issued(cert, key, [parent.cert, *parent.issuers] if parent else [])


def leaf_with_unknown(ca: Issued) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(cn("mail.example.net"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.example.net")]), False)
        .add_extension(UNKNOWN, critical=True)
        .sign(ca.key, hashes.SHA256())
    )


@pytest.mark.parametrize("where", ["leaf", "intermediate", "root"])
def test_an_unknown_critical_extension_on_the_path_is_refused(where: str) -> None:
    """openssl verify: error 34; the lenient path no longer trusts what the verifier refused."""
    root = ca_with("UCE Root", None, unknown=where == "root")
    inter = ca_with("UCE Inter", root, unknown=where == "intermediate")
    leaf = (
        leaf_with_unknown(inter) if where == "leaf" else issue_leaf(inter, dns=["m.example"]).cert
    )
    result = assess([leaf, inter.cert], TrustStore((root.cert,), ("uce root",)))
    assert not result.trusted and ids(result) == ["unknown-critical-extension"]
    problem = result.problems[0]
    assert problem.cert_index == {"leaf": 0, "intermediate": 1, "root": None}[where]
    assert "marks the extension 1.3.6.1.4.1.55738.666.1 critical" in problem.detail
    assert f"{where} certificate" in problem.detail


def test_an_unknown_critical_extension_off_the_path_plays_no_part() -> None:
    """x509-limbo unknown-critical-extension-unrelated-intermediate: sent, but not used."""
    root = ca_with("UCE Root", None, unknown=False)
    used = ca_with("UCE Inter", root, unknown=False)
    unused = ca_with("UCE Unused", root, unknown=True)
    leaf = issue_leaf(used, dns=["m.example"])
    result = assess([leaf.cert, used.cert, unused.cert], TrustStore((root.cert,), ("uce",)))
    assert result.trusted and ids(result) == []


def test_a_critical_extension_on_a_leaf_the_verifier_accepts_is_still_judged(
    pki: dict[str, Issued], store: TrustStore
) -> None:
    """x509-limbo rfc5280::ee-critical-aia-invalid: the verifier's leaf policy permits every
    extension, so a critical authorityInfoAccess passed; OpenSSL refuses it (error 34)."""
    key = ec.generate_private_key(ec.SECP256R1())
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                x509.AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier("http://ca.example/inter.der"),
            )
        ]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(cn("mail.example.net"))
        .issuer_name(pki["inter"].cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.example.net")]), False)
        .add_extension(aia, critical=True)
        .sign(pki["inter"].key, hashes.SHA256())
    )
    result = assess([leaf, pki["inter"].cert], store)
    assert not result.trusted and ids(result) == ["unknown-critical-extension"]
    assert result.validated_path == ()
    assert "marks authorityInfoAccess (1.3.6.1.5.5.7.1.1) critical" in result.problems[0].detail


def test_a_trusted_root_without_basic_constraints_is_no_issuer() -> None:
    """x509-limbo rfc5280::root-missing-basic-constraints: being in the store does not make a
    certificate a CA (RFC 5280 §4.2.1.9); the detail says which part is missing."""
    key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(cn("No BC Root"))
        .issuer_name(cn("No BC Root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    leaf = issue_leaf(Issued(root, key), dns=["mail.example.net"])
    result = assess([leaf.cert], TrustStore((root,), ("no-bc root",)))
    assert not result.trusted and ids(result) == ["not-a-ca"]
    detail = result.problems[0].detail
    assert "'CN=No BC Root' (from the trust store), which is not a CA certificate" in detail
    assert "(it has no basicConstraints extension)" in detail


def test_too_many_name_constraint_checks_stop_before_the_verifier(
    pki: dict[str, Issued],
) -> None:
    """x509-limbo pathological::nc-dos-*: a CA's subtrees times the names below it beyond
    MAX_NAME_CONSTRAINT_CHECKS is chain-too-complex, counted, not compared."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    subtrees = [x509.DNSName(f"n{n}.example") for n in range(1100)]
    root = (
        make_ca_builder("NC Root", cn("NC Root"), root_key)
        .add_extension(x509.NameConstraints(subtrees, None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    names = [f"h{n}.n{n}.example" for n in range(1000)]
    leaf = issue_leaf(Issued(root, root_key), dns=names)
    started = time.perf_counter()
    result = assess([leaf.cert], TrustStore((root,), ("nc root",)))
    assert time.perf_counter() - started < 10
    assert not result.trusted and ids(result) == ["chain-too-complex"]
    assert "1100 name constraints and 1000 names" in result.problems[0].detail


WEAK = Path(__file__).parent / "data" / "weak"


@pytest.mark.parametrize(
    ("hash_name", "algorithm"), [("sha1", "sha1WithRSAEncryption"), ("md5", "md5WithRSAEncryption")]
)
def test_a_leaf_signed_with_a_weak_hash_is_named_so(hash_name: str, algorithm: str) -> None:
    """Issue 13: SHA-1 and MD5 leaves got missing-intermediate, saying the CA given with
    --ca-file was not in the store. It is; the signature is what clients refuse (RFC 9155)."""
    root = x509.load_pem_x509_certificate((WEAK / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((WEAK / f"leaf-{hash_name}.pem").read_bytes())
    at = leaf.not_valid_before_utc + dt.timedelta(days=1)
    result = assess([leaf], TrustStore((root,), ("ca.pem",)), at)
    assert not result.trusted and ids(result) == ["weak-signature-algorithm"]
    detail = result.problems[0].detail
    assert f"with {algorithm}" in detail
    assert "'CN=certmatch Weak Test Root' (in the trust store (1 root: ca.pem))" in detail


def test_a_ca_below_a_path_length_zero_ca_exceeds_it(pki: dict[str, Issued]) -> None:
    """x509-limbo pathlen::intermediate-violates-pathlen-0: root -> CA (pathLen 0) -> CA -> leaf."""
    root = pki["root"]
    key = ec.generate_private_key(ec.SECP256R1())
    capped = (
        x509.CertificateBuilder()
        .subject_name(cn("Capped CA"))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    below = make_ca("Below Capped", parent=Issued(capped, key, [root.cert]))
    leaf = issue_leaf(below, dns=["mail.example.net"])
    result = assess([leaf.cert, below.cert, capped], TrustStore((root.cert,), ("root",)))
    assert not result.trusted and ids(result) == ["path-length-exceeded"]
    problem = result.problems[0]
    assert problem.cert_index == 1
    assert "'CN=Capped CA' (the server's certificate 2) allows no CA certificate below it" in (
        problem.detail
    )


def test_a_wildcard_that_can_reach_an_excluded_name_violates_the_constraint() -> None:
    """x509-limbo cve-2025-61727: excluded bar.example.com, leaf *.example.com."""
    key = ec.generate_private_key(ec.SECP256R1())
    root = (
        make_ca_builder("NC Root", cn("NC Root"), key)
        .add_extension(x509.NameConstraints(None, [x509.DNSName("bar.example.com")]), critical=True)
        .sign(key, hashes.SHA256())
    )
    leaf = issue_leaf(Issued(root, key), dns=["*.example.com"])
    result = assess([leaf.cert], TrustStore((root,), ("nc root",)))
    assert not result.trusted and ids(result) == ["name-constraints-violated"]
    assert (
        "carries dNSName '*.example.com', but 'CN=NC Root' (from the trust store) above it "
        "excludes dNSName 'bar.example.com'" in result.problems[0].detail
    )


def test_a_leaf_for_client_authentication_only_is_the_wrong_usage(
    pki: dict[str, Issued], store: TrustStore
) -> None:
    """x509-limbo rfc5280::eku::ee-wrong-eku: extKeyUsage clientAuth only."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(cn("mail.example.net"))
        .issuer_name(pki["inter"].cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.example.net")]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(pki["inter"].key, hashes.SHA256())
    )
    result = assess([leaf, pki["inter"].cert], store)
    assert not result.trusted and ids(result) == ["wrong-extended-key-usage"]
    assert "does not include serverAuth" in result.problems[0].detail


def test_a_ca_profile_breach_is_a_warning_naming_each_certificate_and_rule(
    pki: dict[str, Issued], store: TrustStore
) -> None:
    """A leaf without an authorityKeyIdentifier and with an empty subject beside a non-critical
    SAN (RFC 5280 §4.2.1.1, §4.2.1.6): trusted, with one warning naming both rules."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(pki["inter"].cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("x.example.test")]), False)
        .sign(pki["inter"].key, hashes.SHA256())
    )
    result = assess([leaf, pki["inter"].cert], store)
    assert result.trusted and ids(result) == []
    [warning] = result.problems
    assert warning.id == TrustProblemId.CA_PROFILE_VIOLATION and warning.cert_index == 0
    assert "no authorityKeyIdentifier (§4.2.1.1)" in warning.detail
    assert "subjectAltName is not critical (§4.2.1.6)" in warning.detail
    assert cause_of(warning.id).severity == "warning"
