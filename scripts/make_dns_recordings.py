"""Regenerate the DNS samples in recordings/, one per DNS cause (issue 11), through the probe.

    uv run --frozen python scripts/make_dns_recordings.py

``certmatch probe --record`` asks dnsmasq (two of them on loopback, an "inside" and an
"outside" view, from :mod:`certmatch.lab.dns_server`) about the names and handshakes with
the lab's embedded IMAPS server, which picks its certificate by SNI. The certificates come
from a throwaway "certmatch DNS samples root", which replaces any earlier such root in
recordings/ca.pem. Each sample keeps one session, the one that shows its cause:

- ``cname-alias``: mailhost.example.test is a CNAME for imap.example.test, the only name
  its certificate holds (the handshake with SNI);
- ``dns-points-elsewhere``: DNS gives 127.0.0.2 for far.example.test; ``--connect
  127.0.0.1`` reaches the server elsewhere;
- ``split-horizon``: mail.example.test is a CNAME for mail.corp.test inside and for
  mx.hoster.test outside; the certificate names mail.corp.test;
- ``srv-target-not-in-certificate`` and ``srv-id-only`` (one ``--mail-domain`` run):
  _imaps._tcp.example.test points to imap.hoster.test, whose certificate names
  www.hoster.test; the one for example.test names it only as the SRV-ID _imaps.example.test.

Needs dnsmasq (.ci/install-system-packages). ``scripts/make_recordings.py`` without
``--only`` writes recordings/ca.pem afresh; run this script after it.
Made from helper W's /work/notes/dns-recordings/make.py.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certmatch.cli.main import main
from certmatch.core.dns_rules import SRV_NAME_OID
from certmatch.lab import pki
from certmatch.lab.dns_server import Zone, dnsmasq
from certmatch.lab.mailservers import CertificateSet, PemIdentity, ServerSpec, serve

OUT = Path(__file__).resolve().parent.parent / "recordings"
DNS_ROOT = "certmatch DNS samples root"


def _identity(issued: pki.Issued) -> PemIdentity:
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in issued.chain())
    return PemIdentity(chain, issued.key_pem())


def _srv_id_leaf(root: pki.Issued, dns: list[str], srv_ids: list[str]) -> PemIdentity:
    """A leaf with DNS names and RFC 4985 SRVName otherNames (IA5String ``_Service.Name``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.OtherName(SRV_NAME_OID, bytes([0x16, len(s)]) + s.encode()) for s in srv_ids]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return PemIdentity(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _replace_dns_root(pem: bytes) -> None:
    """recordings/ca.pem with ``pem`` in place of any earlier DNS samples root."""
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker + b"\n" for b in (OUT / "ca.pem").read_bytes().split(marker)[:-1]]
    kept = [
        block.lstrip()
        for block in blocks
        if x509.load_pem_x509_certificate(block.lstrip())
        .subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
        .value
        != DNS_ROOT
    ]
    (OUT / "ca.pem").write_bytes(b"".join(kept) + pem)


def _keep(source: Path, sample: str, host: str, *, with_sni: bool) -> None:
    """Write recordings/<sample>.jsonl: the header and the one session for ``host``."""
    header, *sessions = source.read_text(encoding="utf-8").splitlines()
    chosen = next(
        line
        for line in sessions
        if json.loads(line)["requested_host"] == host
        and (json.loads(line)["sni"] is not None) == with_sni
    )
    (OUT / f"{sample}.jsonl").write_text(f"{header}\n{chosen}\n", encoding="utf-8")


def make() -> None:
    root = pki.make_ca(DNS_ROOT)
    root_pem = root.cert.public_bytes(serialization.Encoding.PEM)
    certs = CertificateSet(
        _identity(
            pki.issue_leaf(
                root, cn="imap.example.test", dns=["imap.example.test", "far.example.test"]
            )
        ),
        {
            "mail.example.test": _identity(
                pki.issue_leaf(root, cn="mail.corp.test", dns=["mail.corp.test"])
            ),
            "imap.hoster.test": _identity(
                pki.issue_leaf(root, cn="www.hoster.test", dns=["www.hoster.test"])
            ),
            "example.test": _srv_id_leaf(root, ["imap.hoster.test"], ["_imaps.example.test"]),
        },
    )
    with (
        tempfile.TemporaryDirectory(prefix="certmatch-dns-samples-") as scratch,
        serve([ServerSpec("imap", "implicit", certs)]) as servers,
    ):
        work = Path(scratch)
        ca_file = work / "ca.pem"
        ca_file.write_bytes(root_pem)
        port = servers[0].port
        inside = Zone(
            hosts={
                "imap.example.test": ["127.0.0.1"],
                "far.example.test": ["127.0.0.2"],
                "mail.corp.test": ["127.0.0.1"],
                "imap.hoster.test": ["127.0.0.1"],
                "example.test": ["127.0.0.1"],
            },
            cnames={
                "mailhost.example.test": "imap.example.test",
                "mail.example.test": "mail.corp.test",
            },
            srv=[("_imaps._tcp.example.test", "imap.hoster.test", port, 0, 1)],
        )
        outside = Zone(
            hosts={"mx.hoster.test": ["127.0.0.1"]},
            cnames={"mail.example.test": "mx.hoster.test"},
            local_domains=["example.test", "hoster.test"],
        )
        with dnsmasq(inside, work / "logs") as a, dnsmasq(outside, work / "logs") as b:
            common = ["--ca-file", str(ca_file), "--no-system-store"]
            runs = {
                "alias": ["--resolver", a.address, f"mailhost.example.test:{port}"],
                "elsewhere": [
                    *("--resolver", a.address, "--connect", "127.0.0.1"),
                    f"far.example.test:{port}",
                ],
                "split": [
                    *("--resolver", a.address, "--resolver", b.address),
                    *("--connect", "127.0.0.1", f"mail.example.test:{port}"),
                ],
                "srv": [
                    *("--mail-domain", "example.test", "--resolver", a.address),
                    *("--services", "imaps", "--port", f"imaps={port}"),
                ],
            }
            for name, args in runs.items():
                main(["probe", *args, *common, "--record", str(work / f"{name}.jsonl")])
        _keep(work / "alias.jsonl", "cname-alias", "mailhost.example.test", with_sni=True)
        _keep(work / "elsewhere.jsonl", "dns-points-elsewhere", "far.example.test", with_sni=True)
        _keep(work / "split.jsonl", "split-horizon", "mail.example.test", with_sni=True)
        _keep(
            work / "srv.jsonl", "srv-target-not-in-certificate", "imap.hoster.test", with_sni=True
        )
        _keep(work / "srv.jsonl", "srv-id-only", "example.test", with_sni=True)
    _replace_dns_root(root_pem)


if __name__ == "__main__":
    make()
