"""Mirror minting and the client's decision, as pure functions (no network).

The certificates are built here with fixed dates, so nothing depends on today's date.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certmatch.core.trust import TrustProblem, TrustProblemId, TrustResult
from certmatch.proxy.client_decision import ClientWatch, alert_from_error
from certmatch.proxy.mirror import IssuerKind, MirrorMinter, ProxyCa, issuer_kind

pytestmark = pytest.mark.pure

START = dt.datetime(2020, 3, 1, tzinfo=dt.UTC)
END = dt.datetime(2021, 3, 1, tzinfo=dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key,
    *,
    issuer: tuple[str, object] | None = None,
    ca: bool = False,
    dns: tuple[str, ...] = (),
    san_critical: bool = False,
) -> x509.Certificate:
    """A certificate for ``key`` signed by ``issuer`` (name, key), or self-signed."""
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(END)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        names = [x509.DNSName(d) for d in dns]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=san_critical)
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def proxy_ca() -> ProxyCa:
    key = ec.generate_private_key(ec.SECP256R1())
    return ProxyCa(_cert("mitmproxy", key, ca=True), key)


@pytest.fixture(scope="module")
def real_chain() -> list[x509.Certificate]:
    """A leaf (EC P-384) issued by an intermediate issued by a root: the server sends two."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    inter = _cert("Real Intermediate", inter_key, issuer=("Real Root", root_key), ca=True)
    leaf = _cert(
        "mail.example.test",
        leaf_key,
        issuer=("Real Intermediate", inter_key),
        dns=("mail.example.test", "imap.example.test"),
    )
    return [leaf, inter]


def _never_an_anchor(_cert: x509.Certificate) -> bool:
    return False


def test_the_leaf_keeps_its_names_dates_and_key_type_and_nothing_is_added(
    proxy_ca: ProxyCa, real_chain: list[x509.Certificate]
) -> None:
    chain = MirrorMinter().mirror(
        "key", real_chain, IssuerKind.PROXY_CA, proxy_ca, _never_an_anchor
    )
    leaf, real = chain.leaf, real_chain[0]
    assert leaf.subject == real.subject
    san = x509.SubjectAlternativeName
    assert leaf.extensions.get_extension_for_class(san) == (
        real.extensions.get_extension_for_class(san)
    )
    assert (leaf.not_valid_before_utc, leaf.not_valid_after_utc) == (START, END)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert leaf.public_key() == chain.key.public_key()
    assert leaf.public_key() != real.public_key()  # the proxy's key, never the server's


@pytest.mark.parametrize(
    ("make_key", "expected"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), ("rsa", 2048)),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072), ("rsa", 3072)),
        (lambda: ec.generate_private_key(ec.SECP256R1()), ("ec", "secp256r1")),
        (ed25519.Ed25519PrivateKey.generate, ("ed25519", None)),
    ],
    ids=["rsa2048", "rsa3072", "p256", "ed25519"],
)
def test_the_key_type_is_copied(make_key, expected, proxy_ca: ProxyCa) -> None:
    key = make_key()
    server = _cert("self.example.test", key, dns=("self.example.test",))
    chain = MirrorMinter().mirror("k", [server], IssuerKind.SELF_SIGNED, proxy_ca, _never_an_anchor)
    public = chain.leaf.public_key()
    if expected[0] == "rsa":
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == expected[1]
    elif expected[0] == "ec":
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == expected[1]
    else:
        assert isinstance(public, ed25519.Ed25519PublicKey)
    chain.leaf.verify_directly_issued_by(chain.leaf)  # self-signed, by its own new key


def test_a_trusted_chain_keeps_its_shape_under_the_proxy_ca(
    proxy_ca: ProxyCa, real_chain: list[x509.Certificate]
) -> None:
    chain = MirrorMinter().mirror("k", real_chain, IssuerKind.PROXY_CA, proxy_ca, _never_an_anchor)
    [inter] = chain.intermediates
    assert inter.subject == real_chain[1].subject
    assert chain.leaf.issuer == inter.subject
    chain.leaf.verify_directly_issued_by(inter)
    inter.verify_directly_issued_by(proxy_ca.cert)
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = chain.leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_an_untrusted_chain_is_signed_by_a_key_nobody_trusts_under_the_real_issuer_name(
    proxy_ca: ProxyCa, real_chain: list[x509.Certificate]
) -> None:
    chain = MirrorMinter().mirror("k", real_chain, IssuerKind.THROWAWAY, proxy_ca, _never_an_anchor)
    [inter] = chain.intermediates
    assert inter.issuer == real_chain[1].issuer  # "Real Root", which the client cannot find
    with pytest.raises((ValueError, TypeError)):
        inter.verify_directly_issued_by(proxy_ca.cert)
    chain.leaf.verify_directly_issued_by(inter)


def test_a_missing_intermediate_stays_missing(proxy_ca: ProxyCa, real_chain) -> None:
    chain = MirrorMinter().mirror(
        "k", real_chain[:1], IssuerKind.THROWAWAY, proxy_ca, _never_an_anchor
    )
    assert chain.intermediates == ()
    assert chain.leaf.issuer == real_chain[0].issuer


def test_a_store_root_sent_along_is_replaced_by_the_proxy_ca(proxy_ca: ProxyCa) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Store Root", root_key, ca=True)
    inter = _cert("Inter", inter_key, issuer=("Store Root", root_key), ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("a.example.test", leaf_key, issuer=("Inter", inter_key), dns=("a.example.test",))
    chain = MirrorMinter().mirror(
        "k", [leaf, inter, root], IssuerKind.PROXY_CA, proxy_ca, lambda c: c == root
    )
    assert chain.intermediates[1] == proxy_ca.cert
    chain.intermediates[0].verify_directly_issued_by(proxy_ca.cert)


def test_a_pinned_self_signed_leaf_in_the_store_is_vouched_for_by_the_proxy_ca(
    proxy_ca: ProxyCa,
) -> None:
    server = _cert("pinned.example.test", ec.generate_private_key(ec.SECP256R1()))
    chain = MirrorMinter().mirror(
        "k", [server], IssuerKind.PROXY_CA, proxy_ca, lambda c: c == server
    )
    chain.leaf.verify_directly_issued_by(proxy_ca.cert)


def test_names_that_issue_each_other_do_not_loop(proxy_ca: ProxyCa) -> None:
    a_key, b_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    a = _cert("A", a_key, issuer=("B", b_key), ca=True)
    b = _cert("B", b_key, issuer=("A", a_key), ca=True)
    chain = MirrorMinter().mirror("k", [a, b], IssuerKind.THROWAWAY, proxy_ca, _never_an_anchor)
    assert [c.subject for c in (chain.leaf, *chain.intermediates)] == [a.subject, b.subject]


def test_a_mirror_is_made_once_per_server_chain(
    proxy_ca: ProxyCa, real_chain: list[x509.Certificate]
) -> None:
    minter = MirrorMinter()
    first = minter.mirror("chain-1", real_chain, IssuerKind.PROXY_CA, proxy_ca, _never_an_anchor)
    again = minter.mirror("chain-1", real_chain, IssuerKind.PROXY_CA, proxy_ca, _never_an_anchor)
    other = minter.mirror("chain-1", real_chain, IssuerKind.THROWAWAY, proxy_ca, _never_an_anchor)
    assert again is first and other is not first
    assert minter.minted == 2
    # Keys are made once per type: the second chain's leaf reuses the first one's key.
    assert other.key is first.key


def _trust(trusted: bool, *problems: TrustProblemId) -> TrustResult:
    return TrustResult(trusted, tuple(TrustProblem(p, 0, "") for p in problems), ())


@pytest.mark.parametrize(
    ("trust", "expected"),
    [
        (_trust(True), IssuerKind.PROXY_CA),
        (_trust(False, TrustProblemId.EXPIRED), IssuerKind.PROXY_CA),
        (
            _trust(False, TrustProblemId.NOT_YET_VALID, TrustProblemId.WRONG_ORDER),
            IssuerKind.PROXY_CA,
        ),
        (_trust(False, TrustProblemId.SELF_SIGNED), IssuerKind.SELF_SIGNED),
        (_trust(False, TrustProblemId.UNKNOWN_ISSUER), IssuerKind.THROWAWAY),
        (_trust(False, TrustProblemId.MISSING_INTERMEDIATE), IssuerKind.THROWAWAY),
        (
            _trust(False, TrustProblemId.EXPIRED, TrustProblemId.UNKNOWN_ISSUER),
            IssuerKind.THROWAWAY,
        ),
        (None, IssuerKind.THROWAWAY),
    ],
)
def test_who_signs_follows_certmatchs_trust_verdict(trust, expected) -> None:
    assert issuer_kind(trust) is expected


# -- the client's decision ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "The client does not trust the proxy's certificate for x (tlsv1 alert unknown ca)",
            ("unknown_ca", 48),
        ),
        ("sslv3 alert bad certificate", ("bad_certificate", 42)),
        (
            "OpenSSL Error([('SSL routines', '', 'ssl/tls alert certificate expired')])",
            ("certificate_expired", 45),
        ),
        ("tlsv13 alert certificate required", ("certificate_required", 116)),
        ("tlsv1 unrecognized name", ("unrecognized_name", 112)),
        ("The client disconnected during the handshake.", None),
        (None, None),
    ],
)
def test_an_alert_is_read_from_openssls_words(text, expected) -> None:
    assert alert_from_error(text) == expected


def test_an_alert_read_by_openssl_is_the_decision() -> None:
    watch = ClientWatch(hello_seen=True)
    watch._on_info(None, 0x4004, (2 << 8) | 48)  # SSL_CB_READ_ALERT, fatal unknown_ca
    decided = watch.decision()
    assert (decided.decision, decided.alert, decided.alert_code) == ("alert", "unknown_ca", 48)


def test_an_alert_after_the_clients_own_close_notify_is_not_a_refusal() -> None:
    watch = ClientWatch(hello_seen=True, handshake_end=10.0)
    watch._on_info(None, 0x4004, (1 << 8) | 0)  # close_notify
    watch._on_info(None, 0x4004, (2 << 8) | 50)  # decode_error while winding down
    watch.closed("client", at=10.25)
    decided = watch.decision()
    assert (decided.decision, decided.alert, decided.waited) == (
        "closed-after-handshake",
        None,
        0.25,
    )


def test_the_wait_counts_from_the_greeting_on_a_server_first_protocol() -> None:
    watch = ClientWatch(hello_seen=True, handshake_end=10.0, greeting_at=10.5)
    watch.closed("client", at=12.0)
    assert watch.decision().waited == 1.5


@pytest.mark.parametrize(
    ("watch", "expected"),
    [
        (ClientWatch(), "closed-before-handshake"),
        (ClientWatch(spoke=True), None),  # bytes, but no ClientHello: not a TLS client
        (
            ClientWatch(hello_seen=True, handshake_error="connection closed"),
            "closed-during-handshake",
        ),
        (ClientWatch(hello_seen=True, handshake_error="no shared cipher"), None),
        (ClientWatch(hello_seen=True, handshake_end=1.0, sent_data=True), "went-on"),
        (ClientWatch(hello_seen=True, handshake_end=1.0, first_close="server"), None),
        (
            ClientWatch(hello_seen=True, handshake_end=1.0, first_close="client", closed_at=2.0),
            "closed-after-handshake",
        ),
    ],
)
def test_what_the_client_did_decides(watch: ClientWatch, expected) -> None:
    assert watch.decision().decision == expected
