"""Mirror mode: the certificate the client sees is a copy of the server's.

Stock mitmproxy shows the client a substitute that always carries the name the client asked
for, so the client's own name check can never fail. A mirror copies, from each certificate
the server presented: the subject, the subjectAltName exactly (no SNI or address added), the
validity dates, the basic constraints, key usages and name constraints, and the key type
(RSA of the same size, EC on the same curve, Ed25519, Ed448); the chain keeps its shape (each
intermediate the server sent is mirrored in its place). Only the keys and signatures are the
proxy's. The client then reaches its own verdict on the real names and dates.

Who signs the top of the mirrored chain follows certmatch's verdict on the server's chain
(:class:`IssuerKind`): the proxy CA when the chain reaches a root certmatch trusts, so a
client that trusts the proxy CA decides exactly as it would with the real server; a throwaway
key (never shown, carrying the real issuer's name) when it does not, so the client refuses it
as unknown; the mirror's own key when the server's leaf is self-signed. On trust, then, the
client only reflects certmatch's own verdict; its evidence is about names and dates.

Keys are made once per key type and process (an RSA key costs tens of milliseconds), and the
mirrored chain once per server chain: a repeated handshake costs a cache look-up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtensionOID

from certmatch.core.trust import TrustProblemId, TrustResult

type MirrorKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

# The extensions a client's verification reads; the others (AIA, CRL points, policies, SCTs)
# would point at the real issuer's services or sign nothing of ours, so they are left out.
COPIED_EXTENSIONS = frozenset(
    {
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.NAME_CONSTRAINTS,
    }
)
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}
_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
RSA_SIZES = (1024, 8192)  # what cryptography makes; a size outside is clamped
MAX_RSA_BITS = 4096  # beyond this a key takes seconds to make, on the proxy's event loop


class IssuerKind(StrEnum):
    """Who signs the top of the mirrored chain."""

    PROXY_CA = "proxy-ca"
    """The server's chain reaches a root certmatch trusts (dates aside): the proxy CA signs,
    and a certificate of the store the server sent along is replaced by the proxy CA's."""
    THROWAWAY = "throwaway"
    """The chain reaches no trusted root: a key nobody trusts signs, under the real issuer's
    name, and is never sent."""
    SELF_SIGNED = "self-signed"
    """The server's leaf signed itself: so does its mirror."""


class MirrorError(ValueError):
    """The server's certificate cannot be mirrored (e.g. extensions cryptography cannot read)."""


@dataclass(frozen=True)
class ProxyCa:
    """The CA that signs mirrors of trusted chains (mitmproxy's own, which clients trust)."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


@dataclass(frozen=True)
class MirrorChain:
    """What the client is shown: the leaf, its key, and the certificates sent after it."""

    leaf: x509.Certificate
    key: MirrorKey
    intermediates: tuple[x509.Certificate, ...]
    issuer: IssuerKind


@dataclass(frozen=True)
class _Signer:
    name: x509.Name
    key: CertificateIssuerPrivateKeyTypes
    cert: x509.Certificate | None  # None for the throwaway key


class MirrorMinter:
    """Makes mirrored chains, keeping keys per key type and chains per server chain."""

    def __init__(self, cache_size: int = 256) -> None:
        self.cache_size = cache_size
        self._keys: dict[tuple[str, int | str], MirrorKey] = {}
        self._chains: OrderedDict[Hashable, MirrorChain] = OrderedDict()
        self.minted = 0  # chains made, not served from the cache

    def mirror(
        self,
        key: Hashable,
        presented: Sequence[x509.Certificate],
        issuer: IssuerKind,
        proxy_ca: ProxyCa,
        is_anchor: Callable[[x509.Certificate], bool],
    ) -> MirrorChain:
        """The mirror of ``presented`` (leaf first), cached under ``key`` (which must name the
        server chain; the issuer kind and the proxy CA are added here).

        ``is_anchor`` tells a certificate of certmatch's trust store: the proxy CA takes its
        place. Raises MirrorError when a certificate cannot be copied.
        """
        full_key = (key, issuer, proxy_ca.cert.serial_number)
        found = self._chains.get(full_key)
        if found is not None:
            self._chains.move_to_end(full_key)
            return found
        chain = _Minting(self, presented, issuer, proxy_ca, is_anchor).chain()
        self.minted += 1
        self._chains[full_key] = chain
        if len(self._chains) > self.cache_size:
            self._chains.popitem(last=False)
        return chain

    def key_like(self, public_key: CertificatePublicKeyTypes) -> MirrorKey:
        """A private key of the same type as ``public_key`` (same RSA size, same curve),
        made once per type; an unsupported type (DSA, a rare curve) gets EC P-256."""
        spec: tuple[str, int | str]
        if isinstance(public_key, rsa.RSAPublicKey):
            spec = ("rsa", min(max(public_key.key_size, RSA_SIZES[0]), MAX_RSA_BITS))
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in (
            _EC_CURVES
        ):
            spec = ("ec", public_key.curve.name)
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            spec = ("ed25519", 0)
        elif isinstance(public_key, ed448.Ed448PublicKey):
            spec = ("ed448", 0)
        else:
            spec = ("ec", "secp256r1")
        return self._key(spec)

    def throwaway_key(self) -> MirrorKey:
        """The key that signs mirrors of untrusted chains: never any mirror's own key."""
        return self._key(("throwaway", 0))

    def _key(self, spec: tuple[str, int | str]) -> MirrorKey:
        key = self._keys.get(spec)
        if key is None:
            key = _generate(spec)
            self._keys[spec] = key
        return key


def _generate(spec: tuple[str, int | str]) -> MirrorKey:
    kind, detail = spec
    if kind == "rsa":
        assert isinstance(detail, int)
        return rsa.generate_private_key(public_exponent=65537, key_size=detail)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if kind == "throwaway":
        return ec.generate_private_key(ec.SECP256R1())
    return ec.generate_private_key(_EC_CURVES[str(detail)]())


class _Minting:
    """One chain being mirrored: each presented certificate once, issuers before subjects."""

    def __init__(
        self,
        minter: MirrorMinter,
        presented: Sequence[x509.Certificate],
        issuer: IssuerKind,
        proxy_ca: ProxyCa,
        is_anchor: Callable[[x509.Certificate], bool],
    ) -> None:
        if not presented:
            raise MirrorError("the server presented no certificate")
        self.minter = minter
        self.presented = presented
        self.issuer = issuer
        self.proxy_ca = proxy_ca
        self.is_anchor = is_anchor
        self.done: dict[int, tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]] = {}
        self.leaf_key: MirrorKey

    def chain(self) -> MirrorChain:
        leaf = self._mirror(0, frozenset())[0]
        rest = tuple(self._mirror(i, frozenset())[0] for i in range(1, len(self.presented)))
        return MirrorChain(leaf, self.leaf_key, rest, self.issuer)

    def _mirror(
        self, index: int, visiting: frozenset[int]
    ) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
        found = self.done.get(index)
        if found is not None:
            return found
        source = self.presented[index]
        if index > 0 and self.issuer is IssuerKind.PROXY_CA and self.is_anchor(source):
            made: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] = (
                self.proxy_ca.cert,
                self.proxy_ca.key,
            )
        else:
            key = self.minter.key_like(source.public_key())
            if index == 0:
                self.leaf_key = key
            made = (_copy(source, key, self._signer(index, visiting | {index})), key)
        self.done[index] = made
        return made

    def _signer(self, index: int, visiting: frozenset[int]) -> _Signer | None:
        """Who signs the mirror of ``presented[index]``; None: it signs itself."""
        source = self.presented[index]
        issuer_index = self._presented_issuer(index, visiting)
        if issuer_index is not None:
            cert, key = self._mirror(issuer_index, visiting)
            return _Signer(cert.subject, key, cert)
        proxy_ca = _Signer(self.proxy_ca.cert.subject, self.proxy_ca.key, self.proxy_ca.cert)
        if source.issuer == source.subject:
            # A leaf that is itself in the trust store (a pinned self-signed server) is
            # trusted by certmatch: the proxy CA vouches for its mirror.
            anchored = self.issuer is IssuerKind.PROXY_CA and self.is_anchor(source)
            return proxy_ca if anchored else None
        if self.issuer is IssuerKind.PROXY_CA:
            return proxy_ca
        return _Signer(source.issuer, self.minter.throwaway_key(), None)

    def _presented_issuer(self, index: int, visiting: frozenset[int]) -> int | None:
        """The presented certificate named as this one's issuer, later ones first (the order
        RFC 5246 asks for), never one already on the way (a loop of names)."""
        source = self.presented[index]
        if source.issuer == source.subject:
            return None
        order = [*range(index + 1, len(self.presented)), *range(index)]
        return next(
            (i for i in order if i not in visiting and self.presented[i].subject == source.issuer),
            None,
        )


def _copy(source: x509.Certificate, key: MirrorKey, signer: _Signer | None) -> x509.Certificate:
    """``source`` with ``key`` as its key, signed by ``signer`` (itself when None)."""
    try:
        extensions = list(source.extensions)
    except ValueError as exc:
        raise MirrorError(f"its extensions cannot be read ({exc})") from None
    builder = (
        x509.CertificateBuilder()
        .subject_name(source.subject)
        .issuer_name(signer.name if signer else source.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(source.not_valid_before_utc)
        .not_valid_after(source.not_valid_after_utc)
    )
    is_ca = False
    for extension in extensions:
        if extension.oid in COPIED_EXTENSIONS:
            builder = builder.add_extension(extension.value, critical=extension.critical)
            if isinstance(extension.value, x509.BasicConstraints):
                is_ca = extension.value.ca
    if is_ca:
        # Chain builders match issuers by key identifier too (Python's strict mode needs it).
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    if signer is not None:
        builder = builder.add_extension(_authority_key_id(signer), critical=False)
    signing_key = signer.key if signer else key
    try:
        return builder.sign(signing_key, _hash_for(signing_key, source))  # type: ignore[arg-type]
    except ValueError as exc:
        raise MirrorError(f"its copy cannot be signed ({exc})") from None


def _authority_key_id(signer: _Signer) -> x509.AuthorityKeyIdentifier:
    if signer.cert is not None:
        try:
            ski = signer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except (x509.ExtensionNotFound, ValueError):
            pass
        else:
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key())  # type: ignore[arg-type]


def _hash_for(
    signing_key: CertificateIssuerPrivateKeyTypes, source: x509.Certificate
) -> hashes.HashAlgorithm | None:
    """The server's own signature hash when it is a SHA-2 one, else SHA-256; none for EdDSA."""
    if isinstance(signing_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    try:
        algorithm = source.signature_hash_algorithm
    except Exception:  # noqa: BLE001 - an unknown algorithm: use the default
        algorithm = None
    return algorithm if isinstance(algorithm, _HASHES) else hashes.SHA256()


# Trust problems that leave the chain anchored in the store: the proxy CA may sign its mirror,
# and the client sees the problem itself (the dates are copied; the order is kept).
_ANCHORED_DESPITE = frozenset(
    {TrustProblemId.EXPIRED, TrustProblemId.NOT_YET_VALID, TrustProblemId.WRONG_ORDER}
)


def issuer_kind(trust: TrustResult | None) -> IssuerKind:
    """Who signs the mirror, from certmatch's trust result on the server's chain.

    Trusted, or failing only on dates or order (the path reaches a root of the store): the
    proxy CA. A self-signed leaf: itself. Anything else, or no result: a throwaway key.
    """
    if trust is None:
        return IssuerKind.THROWAWAY
    if trust.trusted:
        return IssuerKind.PROXY_CA
    problems = {problem.id for problem in trust.problems}
    if TrustProblemId.SELF_SIGNED in problems:
        return IssuerKind.SELF_SIGNED
    if problems and problems <= _ANCHORED_DESPITE:
        return IssuerKind.PROXY_CA
    return IssuerKind.THROWAWAY
