"""Trust anchors: the roots a recording's sessions are judged with, and where each came from.

The proxy writes the extra CA certificates it judged with into the recording's header
(``RecordingHeader.ca_certificates``). ``check``, ``view`` and replay trust them for that
file's sessions only, beside the system store and any ``--ca-file``, so a verdict read
later is the one the proxy gave live. A crafted recording could make its own sessions
trusted that way, so every trusted session names its anchor, the root its chain reached,
and where that root came from: "this recording's header", "--ca-file PATH" or "the system
store (PATH)". :class:`AnchoredStore` is a :class:`~certmatch.core.trust.TrustStore` that
remembers those origins; :func:`anchor_of` finds a trusted chain's anchor in any store.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from certmatch.core.certificates import ParsedChain, subject_label
from certmatch.core.trust import TrustResult, TrustStore

HEADER_ORIGIN = "this recording's header"


@dataclass(frozen=True)
class TrustAnchor:
    """The root (or CA certificate in the store) a trusted chain reached, and its origin."""

    subject: str  # RFC 4514; "(empty subject; SAN ...)" for an empty one
    sha256: str  # lowercase hex of the DER
    origin: str  # "this recording's header", "--ca-file PATH", "the system store (PATH)", ...

    @property
    def from_header(self) -> bool:
        return HEADER_ORIGIN in self.origin

    def describe(self) -> str:
        """``'CN=Root' (SHA-256 3f2a…), from this recording's header``."""
        subject = self.subject if self.subject.startswith("(") else f"'{self.subject}'"
        return f"{subject} (SHA-256 {self.sha256[:16]}…), from {self.origin}"

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "sha256": self.sha256, "origin": self.origin}


@dataclass(frozen=True)
class AnchoredStore(TrustStore):
    """A trust store that knows where each of its roots came from."""

    origins: tuple[tuple[bytes, str], ...] = ()  # (DER, origin), one per root

    @cached_property
    def _origin_by_der(self) -> dict[bytes, str]:
        return dict(self.origins)

    def origin_of(self, cert: x509.Certificate) -> str:
        return self._origin_by_der.get(cert.public_bytes(Encoding.DER), "")


@dataclass(frozen=True)
class RecordedAnchors:
    """A recording header's CA certificates, parsed; the ones that could not be, by number."""

    certificates: tuple[x509.Certificate, ...]
    unreadable: tuple[int, ...]  # 1-based positions in the header's list

    @classmethod
    def parse(cls, pems: Sequence[str]) -> RecordedAnchors:
        certificates: list[x509.Certificate] = []
        unreadable: list[int] = []
        for number, pem in enumerate(pems, 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                try:
                    certificates.append(x509.load_pem_x509_certificate(pem.encode("ascii")))
                except (ValueError, UnicodeEncodeError):
                    unreadable.append(number)
        return cls(tuple(certificates), tuple(unreadable))

    def problem(self, path: str | Path) -> str | None:
        """One line about the certificates that could not be read, or None."""
        if not self.unreadable:
            return None
        listed = ", ".join(str(n) for n in self.unreadable)
        return (
            f"{path}:1: the header's CA certificate {listed} cannot be parsed; it is not "
            "trusted, and the file's other sessions are judged without it"
        )


def load_anchors(ca_files: Sequence[str | Path] = (), *, use_system: bool = True) -> AnchoredStore:
    """The system store (when ``use_system``) and every ``--ca-file``, with the origin of each
    root. Raises TrustStoreError for a CA file, as TrustStore.load does."""
    parts: list[tuple[tuple[x509.Certificate, ...], str, str]] = []
    if use_system:
        system = TrustStore.load((), use_system=True)
        source = system.sources[0]  # "system (PATH)"
        parts.append((system.roots, "the system store" + source.removeprefix("system"), source))
    for ca_file in ca_files:
        loaded = TrustStore.load([ca_file], use_system=False)
        parts.append((loaded.roots, f"--ca-file {ca_file}", str(ca_file)))
    return _combined(parts)


def with_recorded(base: TrustStore, recorded: Sequence[x509.Certificate]) -> AnchoredStore:
    """``base`` and a recording header's CA certificates, each root with its origin."""
    if isinstance(base, AnchoredStore):
        origins = base._origin_by_der
        parts = [((root,), origins.get(_der(root), _plain_origin(base)), "") for root in base.roots]
    else:
        parts = [((root,), _plain_origin(base), "") for root in base.roots]
    count = len(recorded)
    header = f"{HEADER_ORIGIN} ({count} certificate{'' if count == 1 else 's'})"
    store = _combined([*parts, (tuple(recorded), HEADER_ORIGIN, header)])
    return AnchoredStore(store.roots, (*base.sources, header), store.origins)


def _combined(parts: Sequence[tuple[tuple[x509.Certificate, ...], str, str]]) -> AnchoredStore:
    """(roots, their origin, the source to list) -> one store; a root from several origins
    names them all."""
    roots: dict[bytes, x509.Certificate] = {}
    origins: dict[bytes, list[str]] = {}
    for certificates, origin, _source in parts:
        for cert in certificates:
            der = _der(cert)
            roots.setdefault(der, cert)
            named = origins.setdefault(der, [])
            if origin not in named:
                named.append(origin)
    return AnchoredStore(
        tuple(roots.values()),
        tuple(source for _, _, source in parts if source),
        tuple((der, " and ".join(named)) for der, named in origins.items()),
    )


class RecordingAnchors:
    """The store for each recording: the given one, plus the CA certificates its header
    records (unless switched off), built once per distinct set of them."""

    def __init__(self, base: TrustStore, *, use_recorded: bool = True) -> None:
        self.base = base
        self.use_recorded = use_recorded
        self._stores: dict[tuple[str, ...], tuple[TrustStore, RecordedAnchors]] = {}

    def store_for(self, pems: Sequence[str]) -> tuple[TrustStore, RecordedAnchors]:
        """The store for a recording whose header lists ``pems``, and what was read of them."""
        key = tuple(pems) if self.use_recorded else ()
        found = self._stores.get(key)
        if found is None:
            recorded = RecordedAnchors.parse(key)
            store = (
                with_recorded(self.base, recorded.certificates)
                if recorded.certificates
                else self.base
            )
            found = self._stores[key] = (store, recorded)
        return found


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def anchor_of(chain: ParsedChain, trust: TrustResult, store: TrustStore) -> TrustAnchor | None:
    """The store certificate a trusted chain reached, or None when it is not trusted.

    The anchor is a presented certificate the store holds, or a store root that signed a
    presented certificate; when several are, the one that ends the validated path.
    """
    if not trust.trusted:
        return None
    found: dict[bytes, x509.Certificate] = {}
    try:
        for cert in chain.certificates:
            if cert is None:
                continue
            for candidate in [cert] if store.contains(cert) else store.issuers_of(cert):
                found.setdefault(_der(candidate), candidate)
    except Exception:  # noqa: BLE001 - hostile DER: the chain was trusted, its anchor unnamed
        return None
    if not found:
        return None
    last = trust.validated_path[-1] if trust.validated_path else None
    der, cert = next(
        ((d, c) for d, c in found.items() if _subject(c) == last), next(iter(found.items()))
    )
    origin = store.origin_of(cert) if isinstance(store, AnchoredStore) else ""
    origin = origin or _plain_origin(store)
    return TrustAnchor(subject_label(cert), hashlib.sha256(der).hexdigest(), origin)


def _plain_origin(store: TrustStore) -> str:
    """Where a root of a store without origins came from: its sources, as it describes them."""
    return f"the trust store ({'; '.join(store.sources) or 'no sources'})"


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except Exception:  # noqa: BLE001
        return ""
