"""Replay recorded servers offline: chains of the same shape, re-signed by a local replay CA.

A recording holds each server's certificate chain but not its private keys,
so a replay cannot send the original certificates. It sends look-alikes:
every certificate is rebuilt with the same subject, the same extensions
(SANs included, with their quirks: wildcards, CN-only, NUL bytes, IP
entries), the same validity dates and serial, in the same order and chain
length, and with the same self-signedness, but with a new key, signed by
the rebuilt issuer. Issuers the server did not send are stood in for by:

* a self-signed root of the same name, put in the replay CA file, when the
  original issuer was trusted (the system store, the ``--ca-file`` given, or the CA
  certificates the session's own recording records in its header);
* a same-named intermediate under the trusted "certmatch Replay Root", when
  a leaf arrived without its issuer (a missing intermediate stays missing);
* an untrusted self-signed root of the same name otherwise (unknown issuer).

So a client that trusts the replay CA file judges the replayed chain
exactly as ``certmatch check`` (with the same trust store) judged the
original: same names, same dates, same trust problems.

Sessions are grouped into server endpoints by the recorded server address
and TLS kind; the client's SNI selects a certificate within an endpoint, and
a session recorded without SNI gives the endpoint its default certificate.

:func:`plan_replay` is pure (apart from generating keys); :func:`running_replay`
is the one place here that writes files and starts servers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from certmatch.core.certificates import decode_der, is_ca
from certmatch.core.facts import SessionFacts
from certmatch.core.recording import Recording, read_recording
from certmatch.core.trust import TrustStore
from certmatch.lab import pki
from certmatch.lab.mailservers import (
    CertificateSet,
    PemIdentity,
    RunningServer,
    ServerGroup,
    ServerSpec,
)

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

REPLAY_ROOT_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certmatch replay"),
        x509.NameAttribute(NameOID.COMMON_NAME, "certmatch Replay Root"),
    ]
)

# Extensions tied to the original keys or to the real CA's infrastructure:
# regenerated (key identifiers, where the original has them) or left out (URLs a client might fetch, CT proofs).
_DROPPED_EXTENSIONS = frozenset(
    {
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.FRESHEST_CRL,
        ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS,
        ExtensionOID.PRECERT_POISON,
        ExtensionOID.SIGNED_CERTIFICATE_TIMESTAMPS,
    }
)
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class ReplayError(Exception):
    """A chain that cannot be rebuilt (unreadable DER, extensions cryptography refuses)."""


@dataclass(frozen=True)
class ReplayChain:
    """A rebuilt chain in the order the server sent the original, and the new leaf key."""

    certificates: tuple[x509.Certificate, ...]
    key: PrivateKey

    def pem_identity(self) -> PemIdentity:
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certificates)
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return PemIdentity(chain, key)

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]


@dataclass(frozen=True)
class ReplaySession:
    """A recorded session an endpoint reproduces, and how a client reaches the same certificate."""

    id: str
    requested_host: str | None
    requested_host_source: str
    sni: str | None


@dataclass
class ReplayEndpoint:
    """One recorded server: its protocol and its certificates, by SNI and by default."""

    recorded_address: str
    protocol: str
    tls_kind: str
    default: ReplayChain
    default_assumed: bool  # True when no session without SNI showed the real default
    by_sni: dict[str, ReplayChain] = field(default_factory=dict)
    sessions: list[ReplaySession] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def server_spec(self, port: int = 0) -> ServerSpec:
        certificates = CertificateSet(
            self.default.pem_identity(),
            {name: chain.pem_identity() for name, chain in self.by_sni.items()},
        )
        hostname = next((s.requested_host for s in self.sessions if s.requested_host), None)
        return ServerSpec(
            protocol=self.protocol,
            tls=self.tls_kind,
            certificates=certificates,
            label=self.recorded_address,
            hostname=_printable_host(hostname),
            port=port,
        )


@dataclass(frozen=True)
class SkippedSession:
    """A recorded session replay cannot reproduce, and why."""

    id: str
    reason: str


@dataclass
class ReplayPlan:
    """Everything a replay serves, and the CA certificates a client must trust to judge it."""

    endpoints: list[ReplayEndpoint]
    trusted: list[x509.Certificate]
    skipped: list[SkippedSession]

    def ca_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.trusted)


def plan_replay(
    sessions: Sequence[SessionFacts],
    store: TrustStore,
    *,
    stores: Sequence[TrustStore] | None = None,
) -> ReplayPlan:
    """Group sessions into endpoints and rebuild every distinct chain once per trust store.

    ``store`` is the trust the original chains are judged against (as for
    ``certmatch check``): issuers it holds become trusted replay roots. ``stores``, when
    given, holds each session's own store instead (its recording's header CAs added), so a
    root one recording trusts is not trusted for another's sessions.
    """
    if stores is not None and len(stores) != len(sessions):
        raise ValueError("plan_replay: one store per session")
    pool: list[x509.Certificate] = []
    rebuilders: dict[int, _Rebuilder] = {}
    by_session: dict[int, _Rebuilder] = {}
    groups: dict[tuple[str, str], list[SessionFacts]] = {}
    skipped: list[SkippedSession] = []
    for index, session in enumerate(sessions):
        own = stores[index] if stores is not None else store
        rebuilder = rebuilders.get(id(own))
        if rebuilder is None:
            rebuilder = rebuilders[id(own)] = _Rebuilder(own, pool)
        by_session[id(session)] = rebuilder
        if not session.chain:
            reason = session.server_error or "no certificate was recorded"
            skipped.append(SkippedSession(session.id, f"no certificate to replay ({reason})"))
            continue
        if session.tls_kind == "starttls" and session.protocol == "unknown":
            skipped.append(SkippedSession(session.id, "STARTTLS session of unknown protocol"))
            continue
        key = (session.server_address or "unknown", session.tls_kind)
        groups.setdefault(key, []).append(session)
        rebuilder.learn(session.chain)
        if session.sni_probe is not None:
            rebuilder.learn(session.sni_probe.chain)

    endpoints: list[ReplayEndpoint] = []
    for (address, tls_kind), members in groups.items():
        endpoint = _endpoint(address, tls_kind, members, by_session, skipped)
        if endpoint is not None:
            endpoints.append(endpoint)
    trusted = [cert for rebuilder in rebuilders.values() for cert in rebuilder.trusted]
    return ReplayPlan(endpoints, list(dict.fromkeys(trusted)), skipped)


def _endpoint(
    address: str,
    tls_kind: str,
    members: list[SessionFacts],
    rebuilders: dict[int, _Rebuilder],
    skipped: list[SkippedSession],
) -> ReplayEndpoint | None:
    default: ReplayChain | None = None
    first: ReplayChain | None = None
    by_sni: dict[str, ReplayChain] = {}
    kept: list[ReplaySession] = []
    notes: list[str] = []
    for session in members:
        rebuilder = rebuilders[id(session)]
        try:
            chain = rebuilder.chain(session.chain)
        except ReplayError as exc:
            skipped.append(SkippedSession(session.id, str(exc)))
            continue
        first = first or chain
        if session.sni is None:
            if default is not None and default.certificates != chain.certificates:
                notes.append(
                    f"session {session.id}: the default certificate changed; replaying the latest"
                )
            default = chain
        else:
            name = session.sni.lower()
            if name in by_sni and by_sni[name].certificates != chain.certificates:
                notes.append(
                    f"session {session.id}: the certificate for {name} changed; replaying the latest"
                )
            by_sni[name] = chain
        probe = session.sni_probe
        if probe is not None and probe.chain and probe.sni.lower() not in by_sni:
            with contextlib.suppress(ReplayError):
                by_sni[probe.sni.lower()] = rebuilder.chain(probe.chain)
        kept.append(
            ReplaySession(
                session.id, session.requested_host, session.requested_host_source, session.sni
            )
        )
    if first is None:
        return None
    protocols = Counter(s.protocol for s in members if s.protocol != "unknown")
    protocol = protocols.most_common(1)[0][0] if protocols else "unknown"
    if tls_kind == "starttls" and protocol == "unknown":
        tls_kind = "implicit"
    return ReplayEndpoint(
        recorded_address=address,
        protocol=protocol,
        tls_kind=tls_kind,
        default=default or first,
        default_assumed=default is None,
        by_sni=by_sni,
        sessions=kept,
        notes=notes,
    )


class _Rebuilder:
    """Rebuilds certificates, each distinct one once, so shared issuers stay shared."""

    def __init__(self, store: TrustStore, pool: list[x509.Certificate] | None = None) -> None:
        self.store = store
        self.trusted: list[x509.Certificate] = []
        self._done: dict[bytes, tuple[x509.Certificate, PrivateKey]] = {}
        self._phantoms: dict[tuple[x509.Name, str], tuple[x509.Certificate, PrivateKey]] = {}
        # every recorded certificate (shared by the rebuilders of one plan): issuers not
        # sent in one chain may be sent in another
        self._pool: list[x509.Certificate] = [] if pool is None else pool

    def learn(self, chain_b64: Sequence[str]) -> None:
        """Remember a recorded chain's certificates as possible issuers for other chains."""
        for text in chain_b64:
            with contextlib.suppress(TypeError, ValueError):
                cert = x509.load_der_x509_certificate(decode_der(text))
                if cert not in self._pool:
                    self._pool.append(cert)

    def chain(self, chain_b64: Sequence[str]) -> ReplayChain:
        originals: list[x509.Certificate] = []
        for index, text in enumerate(chain_b64):
            try:
                originals.append(x509.load_der_x509_certificate(decode_der(text)))
            except (TypeError, ValueError) as exc:
                where = "leaf certificate" if index == 0 else f"certificate {index}"
                raise ReplayError(
                    f"the recorded {where} cannot be parsed, so it cannot be rebuilt ({exc})"
                ) from None
        rebuilt = [self._rebuild(cert, originals, ()) for cert in originals]
        return ReplayChain(tuple(cert for cert, _ in rebuilt), rebuilt[0][1])

    def _rebuild(
        self, cert: x509.Certificate, siblings: list[x509.Certificate], visiting: tuple[bytes, ...]
    ) -> tuple[x509.Certificate, PrivateKey]:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der in self._done:
            return self._done[der]
        key = _new_key_like(cert)
        if cert.issuer == cert.subject:
            signer_key: PrivateKey = key
            signer_public = None
        else:
            parent = (
                _issuer_among(cert, siblings, (*visiting, der))
                or _issuer_among(cert, self._pool, (*visiting, der))
                or next(iter(self.store.issuers_of(cert)), None)
            )
            if parent is not None:
                _, signer_key = self._rebuild(parent, siblings, (*visiting, der))
            else:
                _, signer_key = self._stand_in_issuer(cert)
            signer_public = signer_key.public_key()
        rebuilt = _rebuilt(cert, key, signer_key, signer_public)
        if self.store.contains(cert):
            self.trusted.append(rebuilt)
        self._done[der] = (rebuilt, key)
        return rebuilt, key

    def _stand_in_issuer(self, cert: x509.Certificate) -> tuple[x509.Certificate, PrivateKey]:
        """An issuer seen nowhere (not sent, not in the store): a missing intermediate or unknown root."""
        if not is_ca(cert):
            return self._phantom(cert.issuer, "missing-intermediate")
        return self._phantom(cert.issuer, "unknown-root")

    def _phantom(self, name: x509.Name, kind: str) -> tuple[x509.Certificate, PrivateKey]:
        cached = self._phantoms.get((name, kind))
        if cached is not None:
            return cached
        key = ec.generate_private_key(ec.SECP256R1())
        if kind == "missing-intermediate":
            root, root_key = self._phantom(REPLAY_ROOT_NAME, "trusted-root")
            cert = _ca_certificate(name, key, root.subject, root_key)
        else:
            cert = _ca_certificate(name, key, name, key)
            if kind == "trusted-root":
                self.trusted.append(cert)
        self._phantoms[(name, kind)] = (cert, key)
        return cert, key


def _issuer_among(
    cert: x509.Certificate, siblings: list[x509.Certificate], visiting: tuple[bytes, ...]
) -> x509.Certificate | None:
    named = [
        s
        for s in siblings
        if s.subject == cert.issuer and s.public_bytes(serialization.Encoding.DER) not in visiting
    ]
    for candidate in named:
        try:
            cert.verify_directly_issued_by(candidate)
        except Exception:  # noqa: BLE001, S112 - InvalidSignature, or ValueError/TypeError on odd keys
            continue
        return candidate
    return named[0] if named else None


def _new_key_like(cert: x509.Certificate) -> PrivateKey:
    """A fresh key of the original's type (RSA at least 2048 bits, so OpenSSL accepts it)."""
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return rsa.generate_private_key(65537, max(2048, min(public.key_size, 4096)))
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public.curve)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(public, ed448.Ed448PublicKey):
        return ed448.Ed448PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _signature_hash(original: x509.Certificate, signer: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    algorithm = original.signature_hash_algorithm
    factory = _HASHES.get(algorithm.name) if algorithm is not None else None
    return factory() if factory else hashes.SHA256()


def _positive_serial(serial: int) -> int:
    # cryptography only writes serials in [1, 2^159); odd originals get a fresh one.
    return serial if 0 < serial < 2**159 else x509.random_serial_number()


def _rebuilt(
    original: x509.Certificate,
    key: PrivateKey,
    signer_key: PrivateKey,
    signer_public: object | None,
) -> x509.Certificate:
    try:
        extensions = list(original.extensions)
        builder = (
            x509.CertificateBuilder()
            .subject_name(original.subject)
            .issuer_name(original.issuer)
            .public_key(key.public_key())
            .serial_number(_positive_serial(original.serial_number))
            .not_valid_before(original.not_valid_before_utc)
            .not_valid_after(original.not_valid_after_utc)
        )
        for ext in extensions:
            if ext.oid in _DROPPED_EXTENSIONS:
                continue
            # The original DER of the value, so quirks (NUL bytes, odd encodings) survive.
            raw = x509.UnrecognizedExtension(ext.oid, ext.value.public_bytes())
            builder = builder.add_extension(raw, critical=ext.critical)
        # New key identifiers where the original had them, none where it had none (a missing
        # one is a finding of its own, RFC 5280 §4.2.1.1, §4.2.1.2).
        present = {ext.oid for ext in extensions}
        if ExtensionOID.SUBJECT_KEY_IDENTIFIER in present:
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        if signer_public is not None and ExtensionOID.AUTHORITY_KEY_IDENTIFIER in present:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_public),  # type: ignore[arg-type]
                critical=False,
            )
        return builder.sign(signer_key, _signature_hash(original, signer_key))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - hostile input: any field may refuse to re-encode
        subject = _safe_subject(original)
        raise ReplayError(f"the certificate {subject} cannot be rebuilt ({exc})") from None


def _ca_certificate(
    name: x509.Name, key: PrivateKey, issuer: x509.Name, signer_key: PrivateKey
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    builder = pki.ca_certificate_builder(
        name,
        issuer,
        key.public_key(),
        signer_key.public_key() if issuer != name else None,
        dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        now + dt.timedelta(days=3650 * 5),
    )
    return builder.sign(signer_key, _signature_hash_for(signer_key))  # type: ignore[arg-type]


def _signature_hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )


def _safe_subject(cert: x509.Certificate) -> str:
    try:
        return repr(cert.subject.rfc4514_string()) if len(cert.subject) else "with an empty subject"
    except Exception:  # noqa: BLE001
        return "with an unreadable subject"


def _printable_host(name: str | None) -> str:
    if not name or not name.isascii() or not name.isprintable() or " " in name:
        return "mail.example.test"
    return name


# -- running a replay ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayListener:
    """A replayed endpoint as it runs: where to connect, and what it stands in for."""

    endpoint: ReplayEndpoint
    server: RunningServer

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def names(self) -> list[str]:
        """Host names a client can use here: recorded SNI names first, then requested hosts."""
        seen: dict[str, None] = {}
        for name in self.endpoint.by_sni:
            seen.setdefault(name, None)
        for session in self.endpoint.sessions:
            if session.requested_host:
                seen.setdefault(session.requested_host, None)
        return list(seen)

    def to_json(self) -> dict[str, object]:
        e = self.endpoint
        return {
            "host": self.host,
            "port": self.port,
            "protocol": e.protocol,
            "tls_kind": e.tls_kind,
            "recorded_address": e.recorded_address,
            "names": self.names(),
            "sni_names": sorted(e.by_sni),
            "default_subject": e.default.leaf.subject.rfc4514_string(),
            "default_assumed": e.default_assumed,
            "sessions": [
                {
                    "id": s.id,
                    "requested_host": s.requested_host,
                    "requested_host_source": s.requested_host_source,
                    "sni": s.sni,
                }
                for s in e.sessions
            ],
            "notes": list(e.notes),
        }


@dataclass(frozen=True)
class RunningReplay:
    """A replay in progress: its listeners, the CA file to trust, and the plan behind them."""

    listeners: list[ReplayListener]
    ca_file: Path
    plan: ReplayPlan

    def listener_for(self, session_id: str) -> ReplayListener:
        """The listener that reproduces a recorded session (KeyError if it was skipped)."""
        for listener in self.listeners:
            if any(s.id == session_id for s in listener.endpoint.sessions):
                return listener
        raise KeyError(
            f"session {session_id} is not replayed (skipped, or not in these recordings)"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "ca_file": str(self.ca_file),
            "endpoints": [listener.to_json() for listener in self.listeners],
            "skipped": [{"id": s.id, "reason": s.reason} for s in self.plan.skipped],
        }


def load_sessions(paths: Sequence[str | Path]) -> list[SessionFacts]:
    """Every session of the given recordings, in file order (bad lines are skipped)."""
    return [session for recording in load_recordings(paths) for session in recording.sessions]


def load_recordings(paths: Sequence[str | Path]) -> list[Recording]:
    """The given recordings, each with its header (and its CA certificates), in order."""
    return [read_recording(path) for path in paths]


@contextlib.contextmanager
def running_replay(
    sessions: Sequence[SessionFacts],
    store: TrustStore,
    *,
    listen_host: str = "127.0.0.1",
    directory: Path | None = None,
    stores: Sequence[TrustStore] | None = None,
) -> Iterator[RunningReplay]:
    """Serve a replay of ``sessions`` until the block ends; the CA file is removed afterwards
    unless it was written into ``directory``. ``stores``: each session's own, as for
    :func:`plan_replay`."""
    plan = plan_replay(sessions, store, stores=stores)
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="certmatch-replay-"))
            )
        ca_file = directory / "replay-ca.pem"
        ca_file.write_bytes(plan.ca_pem())
        servers = stack.enter_context(
            ServerGroup([e.server_spec() for e in plan.endpoints], host=listen_host)
        )
        listeners = [ReplayListener(e, s) for e, s in zip(plan.endpoints, servers, strict=True)]
        yield RunningReplay(listeners, ca_file, plan)
