"""Certificate specifications and the minted files servers and clients use.

A ``CertSpec`` says what a server certificate should look like; ``mint_all``
turns a set of named specs into PEM files under one CA hierarchy:
root "certmatch Test Root" -> intermediate "certmatch Test Intermediate" -> leaves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from certmatch.lab.pki import Issued, issue_leaf, make_ca

ROOT_NAME = "certmatch Test Root"
INTERMEDIATE_NAME = "certmatch Test Intermediate"


@dataclass(frozen=True)
class CertSpec:
    """What one server certificate contains and how the server presents it."""

    cn: str | None
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    signer: Literal["intermediate", "self"] = "intermediate"
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    # False: the server sends the leaf alone, without the intermediate.
    send_intermediate: bool = True


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one minted certificate.

    ``chain`` is leaf plus intermediate (the leaf alone when self-signed);
    ``served`` is exactly what the server is configured to send: ``chain``,
    or the leaf alone when the spec leaves the intermediate out.
    """

    cert: Path
    key: Path
    chain: Path
    served: Path
    issued: Issued

    @property
    def leaf(self) -> x509.Certificate:
        return self.issued.cert

    @property
    def served_chain(self) -> list[x509.Certificate]:
        """The certificates the server sends, leaf first."""
        certs: list[x509.Certificate] = x509.load_pem_x509_certificates(self.served.read_bytes())
        return certs


@dataclass(frozen=True)
class MintedPki:
    """A root, an intermediate, and one ``CertFiles`` per spec name."""

    root_ca: Path  # the trust anchor to hand to clients and to certmatch
    intermediate_ca: Path
    root: Issued
    intermediate: Issued
    certs: dict[str, CertFiles]


def mint_all(specs: dict[str, CertSpec], directory: Path) -> MintedPki:
    """Mint every spec in ``specs`` under a fresh root and intermediate, into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root = make_ca(ROOT_NAME)
    intermediate = make_ca(INTERMEDIATE_NAME, parent=root)
    root_path = directory / "root-ca.pem"
    root_path.write_bytes(root.cert_pem())
    intermediate_path = directory / "intermediate-ca.pem"
    intermediate_path.write_bytes(intermediate.cert_pem())
    certs = {stem: _mint_one(spec, intermediate, directory, stem) for stem, spec in specs.items()}
    return MintedPki(root_path, intermediate_path, root, intermediate, certs)


def _mint_one(spec: CertSpec, intermediate: Issued, directory: Path, stem: str) -> CertFiles:
    issued = issue_leaf(
        intermediate if spec.signer == "intermediate" else None,
        cn=spec.cn,
        dns=spec.dns,
        ips=spec.ips,
        not_before=spec.not_before,
        not_after=spec.not_after,
    )
    paths = issued.write(directory, stem)
    served = paths["chain"] if spec.send_intermediate else paths["cert"]
    return CertFiles(
        cert=paths["cert"], key=paths["key"], chain=paths["chain"], served=served, issued=issued
    )
