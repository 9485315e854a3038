"""Regenerate the sample recordings in recordings/, one per cause, through the real proxy.

    uv run python scripts/make_recordings.py

Every session is a real TLS handshake: a real client (Python's ssl) talks to
certmatch's mitmproxy addon, which talks to a small real TLS server that
greets like IMAP and picks its certificate by SNI. Certificates are minted
fresh under a throwaway "certmatch Sample Root" (saved as recordings/ca.pem,
give it to ``certmatch check --ca-file``). One recording cannot come from a
live server: ``malformed-certificate`` is the ``correct`` capture with its
leaf certificate truncated, as no TLS server will send a broken certificate.

The expected verdict and primary cause of each file are written to
recordings/MANIFEST.json; tests check ``certmatch check`` agrees. The DNS samples
(cname-alias, split-horizon, ...) come from scripts/make_dns_recordings.py, under a root of
their own: after a full run here, which writes recordings/ca.pem afresh, run that one too.

    uv run python scripts/make_recordings.py --only requested-host-assumed sni-ip-literal

captures only the named samples and leaves the others as they are: their
certificates come from a root of their own ("certmatch Sample Root (added
samples)"), which replaces any earlier such root in recordings/ca.pem, since the
key of the original sample root is not kept. The samples the earlier added root
signed are captured again with them (their chains would no longer be trusted).

The sample client reads the greeting and sends LOGOUT, so the proxy records that it went
on; a sample that shows a refusal or a port check names its own kind of client.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from cryptography import x509
from OpenSSL import SSL
from proxy_fixtures import free_port, inprocess_proxy

from certmatch.lab import pki
from certmatch.proxy import StartTlsAddon

OUT = REPO / "recordings"
UTC = dt.UTC
GREETING = b"* OK [CAPABILITY IMAP4rev1] certmatch sample server ready\r\n"


class GreeterServer:
    """A TLS server on loopback that selects its certificate by SNI and greets like IMAP."""

    def __init__(
        self, default_chain: Path, default_key: Path, by_sni: dict[str, tuple[Path, Path]]
    ):
        self.default = self._context(default_chain, default_key)
        self.by_sni = {name: self._context(c, k) for name, (c, k) in by_sni.items()}
        self.default.sni_callback = self._pick
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def _context(chain: Path, key: Path) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(chain, key)
        except ssl.SSLError as exc:
            if exc.reason != "CA_MD_TOO_WEAK":
                raise
            # OpenSSL 3 will not serve a SHA-1 signed certificate at its default security
            # level; only the context serving one (weak-signature-algorithm) goes lower.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.load_cert_chain(chain, key)
        return context

    def _pick(self, conn: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name in self.by_sni:
            conn.context = self.by_sni[name]

    def _serve(self) -> None:
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            with self.default.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(GREETING)
                tls.settimeout(5)
                while tls.recv(4096):
                    pass
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@dataclass
class Sample:
    name: str
    description: str
    verdict: str
    primary_cause: str | None
    sni: str | None  # what the client sends
    host_option: str = ""  # certmatch --host (the name the client is configured with)
    trust_proxy: bool = True
    # mail: reads the greeting and sends LOGOUT (it goes on); address: configured with the
    # server's IP address, checks it against the certificate, refuses a mismatch; port-check:
    # connects and closes without a byte
    client: str = "mail"
    target: str = "greeter"  # greeter | closed | plaintext
    target_host: str = "127.0.0.1"  # the reverse-proxy target's host
    extra: dict = field(default_factory=dict)


def _write_pair(
    issued: pki.Issued, directory: Path, stem: str, chain: list | None = None
) -> tuple[Path, Path]:
    paths = issued.write(directory, stem)
    if chain is not None:
        from cryptography.hazmat.primitives.serialization import Encoding

        paths["chain"].write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain))
    return paths["chain"], paths["key"]


ADDED_ROOT = "certmatch Sample Root (added samples)"


def build_pki(work: Path, *, added: bool = False) -> tuple[dict, dict[str, tuple[Path, Path]]]:
    """Certificates per SNI name for the main server, and the default ones of each server.

    ``added``: the root is :data:`ADDED_ROOT`, put into recordings/ca.pem beside the
    sample root instead of replacing it (for ``--only``).
    """
    root = pki.make_ca(ADDED_ROOT if added else "certmatch Sample Root")
    inter = pki.make_ca("certmatch Sample Intermediate", parent=root)
    other_root = pki.make_ca("Unknown Private Root")
    other_inter = pki.make_ca("Unknown Private Intermediate", parent=other_root)
    if added:
        _replace_added_root(root.cert_pem())
    else:
        (OUT / "ca.pem").write_bytes(root.cert_pem())

    def leaf(**kw) -> pki.Issued:
        return pki.issue_leaf(inter, **kw)

    default = leaf(cn="mail.example.test", dns=["mail.example.test", "imap.example.test"])
    specs: dict[str, tuple[Path, Path]] = {}

    def add(sni: str, issued: pki.Issued, chain: list | None = None) -> None:
        specs[sni] = _write_pair(issued, work, sni.replace("*", "star"), chain)

    add("wrong.example.test", leaf(cn="other.example.net", dns=["other.example.net"]))
    add("cnonly.example.test", leaf(cn="cnonly.example.test"))
    add("cnsan.example.test", leaf(cn="cnsan.example.test", dns=["other.example.test"]))
    wildcard = leaf(dns=["*.example.test"])
    add("a.b.example.test", wildcard)
    add("example.test", wildcard)
    add("imap2.example.test", leaf(dns=["im*.example.test"]))
    add("x.test", leaf(dns=["*.test"]))
    add("alt.example.test", leaf(dns=["alt.example.test"]))
    add("nul.example.test", leaf(dns=["nul.example.test\x00.attacker.example"]))
    add(
        "expired.example.test",
        leaf(
            dns=["expired.example.test"],
            not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
            not_after=dt.datetime(2021, 1, 1, tzinfo=UTC),
        ),
    )
    add(
        "future.example.test",
        leaf(
            dns=["future.example.test"],
            not_before=dt.datetime(2030, 1, 1, tzinfo=UTC),
            not_after=dt.datetime(2031, 1, 1, tzinfo=UTC),
        ),
    )
    add("selfsigned.example.test", pki.issue_leaf(None, dns=["selfsigned.example.test"]))
    private = pki.issue_leaf(other_inter, dns=["private.example.test"])
    add("private.example.test", private)
    nointer = leaf(dns=["nointer.example.test"])
    add("nointer.example.test", nointer, chain=[nointer.cert])
    disorder = leaf(dns=["disorder.example.test"])
    add("disorder.example.test", disorder, chain=[disorder.cert, root.cert, inter.cert])
    add("critical.example.test", _unknown_critical_extension(inter, "critical.example.test"))
    tangled = _same_subject_same_key(100, dns=["tangled.example.test"])
    add("tangled.example.test", tangled, chain=[tangled.cert, *tangled.issuers])
    not_a_ca = leaf(cn="certmatch Sample Server", dns=["server.example.test"])
    add("notaca.example.test", pki.issue_leaf(not_a_ca, dns=["notaca.example.test"]))
    no_more_cas = pki.make_ca(
        "certmatch Sample Intermediate (pathlen 0)", parent=root, path_length=0
    )
    one_too_many = pki.make_ca("certmatch Sample Sub-Intermediate", parent=no_more_cas)
    add("pathlen.example.test", pki.issue_leaf(one_too_many, dns=["pathlen.example.test"]))
    constrained = pki.make_ca(
        "certmatch Sample Intermediate (example.org only)",
        parent=root,
        permitted_dns=["example.org"],
    )
    add("constrained.example.test", pki.issue_leaf(constrained, dns=["constrained.example.test"]))
    add(
        "clientonly.example.test",
        leaf(
            dns=["clientonly.example.test"],
            extended_key_usage=[x509.ExtendedKeyUsageOID.CLIENT_AUTH],
        ),
    )
    add("sha1.example.test", _signed_with_sha1(inter, "sha1.example.test", work))
    add("mail_1.example.test", leaf(dns=["mail_1.example.test"]))
    defaults = {
        "default": _write_pair(default, work, "default"),
        "idn": _write_pair(leaf(dns=["xn--bcher-kva.example.test"]), work, "idn"),
        "maildomain": _write_pair(leaf(dns=["mail.example.org"]), work, "maildomain"),
        "smtp": _write_pair(leaf(dns=["smtp.example.test"]), work, "smtp"),
        "localhost": _write_pair(leaf(dns=["localhost"]), work, "localhost"),
        "ipsan": _write_pair(leaf(dns=["mail.example.test"], ips=["127.0.0.1"]), work, "ipsan"),
    }
    return specs, defaults


def _unknown_critical_extension(ca: pki.Issued, name: str) -> pki.Issued:
    """A leaf for ``name`` under ``ca`` that marks an extension nobody knows critical."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(UTC)
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55738.666.1"), b"")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(unknown, critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return pki.Issued(cert, key, [ca.cert, *ca.issuers])


def _signed_with_sha1(ca: pki.Issued, name: str, work: Path) -> pki.Issued:
    """A leaf for ``name`` that ``ca`` signs with SHA-1 (ecdsa-with-SHA1). cryptography no
    longer signs with SHA-1, so OpenSSL's command line does, as for tests/data/weak/."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    scratch = work / "sha1"
    scratch.mkdir()
    paths = ca.write(scratch, "ca")
    (scratch / "leaf.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (scratch / "leaf.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = DNS:{name}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    subprocess.run(
        [
            "openssl", "x509", "-req", "-sha1", "-days", "365",
            "-in", str(scratch / "leaf.csr"),
            "-CA", str(paths["cert"]), "-CAkey", str(paths["key"]), "-CAcreateserial",
            "-extfile", str(scratch / "leaf.ext"),
            "-out", str(scratch / "leaf.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    cert = x509.load_pem_x509_certificate((scratch / "leaf.pem").read_bytes())
    return pki.Issued(cert, key, [ca.cert, *ca.issuers])


def _same_subject_same_key(count: int, *, dns: list[str]) -> pki.Issued:
    """A leaf under ``count`` CAs that share one subject and one key (x509-limbo's
    pathological-chain-same-subject-same-key): each appears to have signed every other."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=Pathological CA")
    now = dt.datetime.now(UTC)
    start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=3650)
    cas = [
        pki.ca_certificate_builder(name, name, key.public_key(), None, start, end).sign(
            key, hashes.SHA256()
        )
        for _ in range(count)
    ]
    leaf = pki.issue_leaf(pki.Issued(cas[-1], key), dns=dns)
    return pki.Issued(leaf.cert, leaf.key, list(reversed(cas)))


def _signed_by_the_added_root() -> set[str]:
    """The samples whose chains the current added-samples root signed."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    roots = [
        root
        for root in x509.load_pem_x509_certificates((OUT / "ca.pem").read_bytes())
        if root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ADDED_ROOT
    ]
    signed = set()
    for path in OUT.glob("*.jsonl"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines[1:]:
            for text in json.loads(line).get("chain", []):
                try:
                    cert = x509.load_der_x509_certificate(base64.b64decode(text))
                except ValueError:
                    continue
                if any(_issued_by(cert, root) for root in roots):
                    signed.add(path.stem)
    return signed


def _issued_by(cert, root) -> bool:
    try:
        cert.verify_directly_issued_by(root)
    except Exception:  # noqa: BLE001 - another issuer, or a key that cannot verify
        return False
    return True


def _replace_added_root(pem: bytes) -> None:
    """recordings/ca.pem with ``pem`` in place of any earlier :data:`ADDED_ROOT`."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker + b"\n" for b in (OUT / "ca.pem").read_bytes().split(marker)[:-1]]
    kept = [
        block.lstrip()
        for block in blocks
        if x509.load_pem_x509_certificate(block.lstrip())
        .subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
        .value
        != ADDED_ROOT
    ]
    (OUT / "ca.pem").write_bytes(b"".join(kept) + pem)


SAMPLES = [
    Sample(
        "correct",
        "The client asks for a name on the certificate: a match, no finding.",
        "match",
        None,
        "imap.example.test",
    ),
    Sample(
        "name-not-in-certificate",
        "The client asks for wrong.example.test; the server presents other.example.net (KB Q198564).",
        "mismatch",
        "name-not-in-certificate",
        "wrong.example.test",
    ),
    Sample(
        "cn-only-legacy",
        "The certificate names the host only in its CN, with no subjectAltName.",
        "legacy-match",
        "cn-only-legacy",
        "cnonly.example.test",
    ),
    Sample(
        "cn-ignored-san-present",
        "The name is in the CN, but the SAN lists only other.example.test.",
        "mismatch",
        "cn-ignored-san-present",
        "cnsan.example.test",
    ),
    Sample(
        "wildcard-too-deep",
        "*.example.test presented for a.b.example.test.",
        "mismatch",
        "wildcard-too-deep",
        "a.b.example.test",
    ),
    Sample(
        "wildcard-apex",
        "*.example.test presented for example.test itself.",
        "mismatch",
        "wildcard-apex",
        "example.test",
    ),
    Sample(
        "wildcard-partial",
        "The partial wildcard im*.example.test presented for imap2.example.test.",
        "mismatch",
        "wildcard-partial",
        "imap2.example.test",
    ),
    Sample(
        "wildcard-public-suffix",
        "*.test (a wildcard on a public suffix) presented for x.test.",
        "mismatch",
        "wildcard-public-suffix",
        "x.test",
    ),
    Sample(
        "no-sni-default-certificate",
        "The client is configured with alt.example.test but sends no SNI; the server sends its default certificate, and asked by name would send alt's.",
        "mismatch",
        "no-sni-default-certificate",
        None,
        host_option="alt.example.test",
    ),
    Sample(
        "ip-not-in-certificate",
        "The client dials 127.0.0.1 (no SNI); the certificate has no IP address entry. The "
        "address is the reverse target, not a name from the client, so requested-host-assumed "
        "follows as a second cause.",
        "mismatch",
        "ip-not-in-certificate",
        None,
    ),
    Sample(
        "requested-host-assumed",
        "Reverse mode to localhost; the client sends no SNI. The certificate names localhost, "
        "so it matches the reverse target, but that name is assumed: a client configured with "
        "127.0.0.1 would refuse the certificate (no iPAddress entry).",
        "match",
        "requested-host-assumed",
        None,
        target_host="localhost",
        extra={"default": "localhost"},
    ),
    Sample(
        "sni-ip-literal",
        "The client sends 127.0.0.1 as SNI (RFC 6066 §3 forbids it); the certificate has an "
        "iPAddress entry for it, so only the warning remains.",
        "match",
        "sni-ip-literal",
        "127.0.0.1",
        extra={"default": "ipsan"},
    ),
    Sample(
        "mail-domain-not-server",
        "The client uses the mail domain example.org; the certificate names mail.example.org.",
        "mismatch",
        "mail-domain-not-server",
        None,
        host_option="example.org",
        extra={"default": "maildomain"},
    ),
    Sample(
        "underscore-in-name",
        "The client asks for mail_1.example.test and the certificate names it: a match, with a "
        "warning, since an underscore is outside a dNSName's preferred syntax.",
        "match",
        "underscore-in-name",
        "mail_1.example.test",
    ),
    Sample(
        "trailing-dot",
        "The client is configured with 'mail.example.test.' (trailing dot): RFC matching passes, OpenSSL-based clients fail.",
        "match",
        "trailing-dot",
        None,
        host_option="mail.example.test.",
    ),
    Sample(
        "idn-form",
        "The client is configured with the U-label bücher.example.test; the certificate carries the A-label.",
        "match",
        "idn-form",
        None,
        host_option="bücher.example.test",
        extra={"default": "idn"},
    ),
    Sample(
        "invalid-reference",
        "The client's server name is 'mail.example.test:993' (a port in the host name field).",
        "mismatch",
        "invalid-reference",
        None,
        host_option="mail.example.test:993",
    ),
    Sample(
        "nul-in-name",
        "The certificate's SAN hides a NUL: nul.example.test\\0.attacker.example.",
        "mismatch",
        "nul-in-name",
        "nul.example.test",
    ),
    Sample(
        "expired",
        "The name matches; the certificate expired on 2021-01-01.",
        "untrusted",
        "expired",
        "expired.example.test",
    ),
    Sample(
        "not-yet-valid",
        "The name matches; the certificate is valid only from 2030-01-01.",
        "untrusted",
        "not-yet-valid",
        "future.example.test",
    ),
    Sample(
        "self-signed",
        "The name matches; the certificate is self-signed.",
        "untrusted",
        "self-signed",
        "selfsigned.example.test",
    ),
    Sample(
        "unknown-issuer",
        "The name matches; the chain ends at a private root the store does not have.",
        "untrusted",
        "unknown-issuer",
        "private.example.test",
    ),
    Sample(
        "unknown-critical-extension",
        "The name matches; the leaf marks an extension no client knows "
        "(1.3.6.1.4.1.55738.666.1) critical.",
        "untrusted",
        "unknown-critical-extension",
        "critical.example.test",
    ),
    Sample(
        "not-a-ca",
        "The name matches; the leaf is signed by another server certificate (CA:FALSE), which "
        "cannot issue certificates.",
        "untrusted",
        "not-a-ca",
        "notaca.example.test",
    ),
    Sample(
        "path-length-exceeded",
        "The name matches; an intermediate with pathLenConstraint 0 issued another CA, which "
        "issued the leaf: one CA more than it allows.",
        "untrusted",
        "path-length-exceeded",
        "pathlen.example.test",
    ),
    Sample(
        "name-constraints-violated",
        "The name matches; the intermediate may certify only names under example.org (a "
        "permitted dNSName subtree), and the leaf names constrained.example.test.",
        "untrusted",
        "name-constraints-violated",
        "constrained.example.test",
    ),
    Sample(
        "wrong-extended-key-usage",
        "The name matches; the leaf's extended key usage lists clientAuth only, not serverAuth.",
        "untrusted",
        "wrong-extended-key-usage",
        "clientonly.example.test",
    ),
    Sample(
        "weak-signature-algorithm",
        "The name matches; the intermediate signed the leaf with SHA-1 (ecdsa-with-SHA1).",
        "untrusted",
        "weak-signature-algorithm",
        "sha1.example.test",
    ),
    Sample(
        "chain-too-complex",
        "The name matches; the server sends 100 CA certificates sharing one subject and key "
        "above its leaf (x509-limbo's pathological chain): refused before any search.",
        "untrusted",
        "chain-too-complex",
        "tangled.example.test",
    ),
    Sample(
        "missing-intermediate",
        "The server sends its leaf without the intermediate.",
        "untrusted",
        "missing-intermediate",
        "nointer.example.test",
    ),
    Sample(
        "wrong-order",
        "The server sends leaf, root, intermediate: out of order.",
        "match",
        "wrong-order",
        "disorder.example.test",
    ),
    Sample(
        "proxy-ca-not-trusted",
        "The client does not trust certmatch's CA and aborts; the server's certificate is fine. "
        "The client refused what it saw, so the session is untrusted, with "
        "client-refused-certificate beside the primary cause.",
        "untrusted",
        "proxy-ca-not-trusted",
        "imap.example.test",
        trust_proxy=False,
    ),
    Sample(
        "client-refused-certificate",
        "Reverse mode to localhost; the client, configured with 127.0.0.1, sends no SNI, checks "
        "the address against the certificate it is shown (a copy naming localhost, no IP entry) "
        "and refuses it with an alert. certmatch judged against the assumed name localhost, so "
        "it reports the refusal first and requested-host-assumed beside it: the session is "
        "untrusted, never a silent match.",
        "untrusted",
        "client-refused-certificate",
        None,
        client="address",
        target_host="localhost",
        extra={"default": "localhost"},
    ),
    Sample(
        "client-closed-before-handshake",
        "A port check: the client connects and closes without sending a byte. A finding, not a "
        "failure, and never the server's fault.",
        "error",
        "client-closed-before-handshake",
        None,
        client="port-check",
    ),
    Sample(
        "upstream-unreachable",
        "Nothing listens at the server address.",
        "error",
        "upstream-unreachable",
        "imap.example.test",
        target="closed",
    ),
    Sample(
        "upstream-tls-failed",
        "The server port speaks plaintext IMAP, not implicit TLS.",
        "error",
        "upstream-tls-failed",
        "imap.example.test",
        target="plaintext",
    ),
    Sample(
        "starttls-not-offered",
        "SMTP submission: the server's EHLO reply lists no STARTTLS, so the session stays plaintext.",
        "error",
        "starttls-not-offered",
        None,
        target="smtp",
        extra={"behaviour": "not-offered"},
    ),
    Sample(
        "starttls-refused",
        "SMTP submission: the server answers STARTTLS with 454.",
        "error",
        "starttls-refused",
        None,
        target="smtp",
        extra={"behaviour": "refuse"},
    ),
    Sample(
        "plaintext-auth",
        "SMTP submission: the client sends AUTH before STARTTLS (the command name is recorded, "
        "never the credential); the certificate itself matches.",
        "match",
        "plaintext-auth",
        None,
        host_option="smtp.example.test",
        target="smtp",
        extra={"behaviour": "normal", "login_first": True},
    ),
    Sample(
        "starttls-not-requested",
        "SMTP submission: the server offers STARTTLS, but the client carries on in plaintext.",
        "error",
        "starttls-not-requested",
        None,
        target="smtp",
        extra={"behaviour": "normal", "starttls": False},
    ),
    Sample(
        "starttls-injection",
        "SMTP submission: the server sends a plaintext '250' right after its '220' to STARTTLS; "
        "certmatch drops it and records the finding.",
        "match",
        "starttls-injection",
        None,
        host_option="smtp.example.test",
        target="smtp",
        extra={"behaviour": "inject"},
    ),
]


class SmtpStartTlsServer:
    """A small SMTP server with STARTTLS, for the STARTTLS samples.

    ``behaviour``: "normal"; "not-offered" (EHLO lists no STARTTLS);
    "refuse" (STARTTLS gets 454); "inject" (a plaintext "250" follows the 220
    to STARTTLS, before the handshake: the buffering flaw class).
    """

    def __init__(self, chain: Path, key: Path, behaviour: str):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain, key)
        self.behaviour = behaviour
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        stream: socket.socket | ssl.SSLSocket = conn
        try:
            stream.sendall(b"220 smtp.example.test ESMTP certmatch sample\r\n")
            reader = stream.makefile("rb")
            while line := reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"EHLO":
                    caps = [b"250-smtp.example.test", b"250-AUTH PLAIN"]
                    if self.behaviour != "not-offered" or isinstance(stream, ssl.SSLSocket):
                        caps.append(b"250-STARTTLS")
                    stream.sendall(b"\r\n".join(caps) + b"\r\n250 8BITMIME\r\n")
                elif verb == b"AUTH":
                    stream.sendall(b"235 2.7.0 Authentication successful\r\n")
                elif verb == b"STARTTLS" and not isinstance(stream, ssl.SSLSocket):
                    if self.behaviour == "refuse":
                        stream.sendall(b"454 4.7.0 TLS not available\r\n")
                        continue
                    extra = b"250 injected\r\n" if self.behaviour == "inject" else b""
                    stream.sendall(b"220 2.0.0 Ready to start TLS\r\n" + extra)
                    stream = self.context.wrap_socket(conn, server_side=True)
                    reader = stream.makefile("rb")
                elif verb == b"QUIT":
                    stream.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    stream.sendall(b"250 2.0.0 OK\r\n")
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


def _smtp_client(port: int, cafile: Path, *, login_first: bool, starttls: bool = True) -> None:
    """smtplib as a mail client would use it: EHLO, (AUTH in plaintext), STARTTLS, EHLO, QUIT."""
    import smtplib

    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            smtp.ehlo("client.example.test")
            if login_first:
                smtp.login("user", "sample-password")
            if starttls and smtp.has_extn("starttls"):
                context = ssl.create_default_context(cafile=str(cafile))
                context.check_hostname = False
                smtp.starttls(context=context)
                smtp.ehlo("client.example.test")
    except (OSError, smtplib.SMTPException, ssl.SSLError):
        pass


def _plaintext_server() -> int:
    sock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.sendall(GREETING)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def _client(port: int, sni: str | None, cafile: Path | None, kind: str = "mail") -> None:
    """A client that reads the greeting and sends LOGOUT, so it goes on after the handshake
    (one that closed after the greeting without a command would count as refusing)."""
    if kind == "port-check":
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return
    if kind == "address":
        _client_checking_the_address(port, cafile)
        return
    if sni and _is_ip(sni):
        _client_sending_ip_sni(port, sni, cafile)
        return
    context = (
        ssl.create_default_context(cafile=str(cafile)) if cafile else ssl.create_default_context()
    )
    context.check_hostname = False
    if cafile is None:
        context.load_verify_locations(cadata=_unrelated_ca())
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            tls.settimeout(5)
            tls.recv(200)
            tls.sendall(b"a1 LOGOUT\r\n")
    except (OSError, ssl.SSLError):
        pass


def _client_checking_the_address(port: int, cafile: Path | None) -> None:
    """A client configured with 127.0.0.1: no SNI (an address cannot be sent), and the
    address checked against the certificate's iPAddress entries, as a careful client does."""
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    if context is None:
        return
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.settimeout(5)
            tls.recv(200)
            tls.sendall(b"a1 LOGOUT\r\n")
    except (OSError, ssl.SSLError):
        pass


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _client_sending_ip_sni(port: int, sni: str, cafile: Path | None) -> None:
    """A client that sends an IP address as SNI, as some real ones do; Python's ssl never
    does (RFC 6066 §3), so this one is pyOpenSSL."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if cafile:
        context.load_verify_locations(str(cafile))
    context.set_verify(SSL.VERIFY_PEER, lambda _conn, _cert, _errno, _depth, ok: bool(ok))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            conn = SSL.Connection(context, raw)
            conn.set_tlsext_host_name(sni.encode("ascii"))
            conn.set_connect_state()
            _until_done(raw, conn.do_handshake)
            _until_done(raw, lambda: conn.recv(200))
            conn.sendall(b"a1 LOGOUT\r\n")
    except (OSError, SSL.Error):
        pass


def _until_done(raw: socket.socket, step: Callable[[], object]) -> None:
    """Run a pyOpenSSL step on a socket with a timeout (non-blocking underneath) to the end."""
    for _ in range(50):
        try:
            step()
            return
        except SSL.WantReadError:
            select.select([raw], [], [], 0.1)


def _unrelated_ca() -> str:
    return pki.make_ca("Some Other CA").cert_pem().decode()


def main(argv: list[str]) -> int:
    only = set(argv[1:]) if argv[:1] == ["--only"] else None
    if argv and only is None or only == set():
        print(__doc__, file=sys.stderr)
        return 2
    known = {sample.name for sample in SAMPLES}
    if only and only - known:
        print(f"unknown samples: {', '.join(sorted(only - known))}", file=sys.stderr)
        return 2
    if only:
        again = _signed_by_the_added_root() - only
        if again:
            print(f"also captured again (under the re-minted root): {', '.join(sorted(again))}")
            only |= again
    OUT.mkdir(exist_ok=True)
    manifest = json.loads((OUT / "MANIFEST.json").read_text()) if only else {}
    for old in OUT.glob("*.jsonl"):
        if only is None or old.stem in only:
            old.unlink()
    work = Path(tempfile.mkdtemp(prefix="certmatch-samples-"))
    try:
        specs, defaults = build_pki(work, added=only is not None)
        servers = {
            name: GreeterServer(*defaults[name], specs if name == "default" else {})
            for name in ("default", "idn", "maildomain", "localhost", "ipsan")
        }
        closed = free_port()
        plaintext = _plaintext_server()
        for sample in SAMPLES:
            if only is not None and sample.name not in only:
                continue
            server = servers[sample.extra.get("default", "default")]
            options: dict[str, object] = {"ca_file": [str(OUT / "ca.pem")]}
            if sample.host_option:
                options["host"] = sample.host_option
            run = work / sample.name
            run.mkdir()
            if sample.target == "smtp":
                smtp = SmtpStartTlsServer(*defaults["smtp"], sample.extra["behaviour"])
                mode = f"reverse:tcp://127.0.0.1:{smtp.port}"
                with inprocess_proxy(
                    run, mode, extra_addons=(StartTlsAddon(),), **options
                ) as proxy:
                    _smtp_client(
                        proxy.port,
                        proxy.ca_file,
                        login_first=bool(sample.extra.get("login_first")),
                        starttls=sample.extra.get("starttls", True),
                    )
                    sessions = proxy.sessions(1)
            else:
                port = {"closed": closed, "plaintext": plaintext}.get(sample.target, server.port)
                mode = f"reverse:tls://{sample.target_host}:{port}"
                with inprocess_proxy(run, mode, **options) as proxy:
                    _client(
                        proxy.port,
                        sample.sni,
                        proxy.ca_file if sample.trust_proxy else None,
                        sample.client,
                    )
                    sessions = proxy.sessions(1)
            if len(sessions) != 1:
                print(f"{sample.name}: expected 1 session, got {len(sessions)}", file=sys.stderr)
                return 1
            shutil.copy(run / "session.jsonl", OUT / f"{sample.name}.jsonl")
            manifest[f"{sample.name}.jsonl"] = {
                "description": sample.description,
                "verdict": sample.verdict,
                "primary_cause": sample.primary_cause,
            }
        if only is None:
            _make_malformed(manifest)
        for sample in SAMPLES:  # a description may change without a new capture
            if f"{sample.name}.jsonl" in manifest:
                manifest[f"{sample.name}.jsonl"]["description"] = sample.description
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (OUT / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(manifest)} recordings to {OUT}")
    return 0


def _make_malformed(manifest: dict) -> None:
    """The one synthetic sample: the 'correct' capture with its leaf truncated to 100 bytes."""
    lines = (OUT / "correct.jsonl").read_text().splitlines()
    session = json.loads(lines[1])
    der = base64.b64decode(session["chain"][0])
    session["chain"][0] = base64.b64encode(der[:100]).decode()
    session["id"] = "malformed-" + session["id"]
    (OUT / "malformed-certificate.jsonl").write_text(
        lines[0] + "\n" + json.dumps(session, separators=(",", ":"), ensure_ascii=False) + "\n"
    )
    manifest["malformed-certificate.jsonl"] = {
        "description": "Synthetic: the 'correct' capture with its leaf certificate cut to 100 bytes "
        "(no TLS server sends a broken certificate).",
        "verdict": "error",
        "primary_cause": "malformed-certificate",
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
