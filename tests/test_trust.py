"""Trust assessment and trust stores, with certificates minted per test module."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from certmatch.core import trust
from certmatch.core.certificates import parse_chain
from certmatch.core.trust import (
    TrustProblemId,
    TrustResult,
    TrustStore,
    TrustStoreError,
    assess_trust,
)
from certmatch.lab.pki import Issued, issue_leaf, make_ca

pytestmark = pytest.mark.pure

NOW = dt.datetime.now(dt.UTC)


def b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")


def ids(result: TrustResult) -> list[str]:
    assert all(isinstance(p.id, TrustProblemId) for p in result.problems)
    return [p.id for p in result.problems]


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
    assert result.trusted and result.problems == ()
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
    assert [(p.id, p.cert_index) for p in result.problems] == [("unknown-issuer", 1)]
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
    assert result.trusted and result.problems == ()
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
