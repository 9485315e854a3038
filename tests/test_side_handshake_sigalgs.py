"""The side handshake offers the client's signature algorithms (issue 10).

A real dovecot keeps two certificates for the same names, one on an EC key and one on an RSA
key (``ssl_alt_cert``); OpenSSL answers a TLS 1.3 client with the one its signature
algorithms allow. A client offering only RSA-PSS gets the RSA certificate, one offering only
ECDSA the EC one, directly and through ``certmatch proxy --observe``, where the chain comes
from a side handshake.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from servers.certs import CertFiles
from servers.clients import _PEM, TIMEOUT_S
from servers.dovecot import DovecotServer, start_dovecot
from servers.process import require_binary
from test_observe_bad_input import observing

from certmatch.lab.pki import issue_leaf
from certmatch.net.copied_hello import known_signature_algorithms
from certmatch.net.side_handshake import side_handshake

NAME = "mail.example.test"
RSA_ONLY = "rsa_pss_rsae_sha256"
ECDSA_ONLY = "ecdsa_secp256r1_sha256"


@pytest.fixture(scope="module")
def dual_dovecot(pki, server_log_dir: Path) -> Iterator[DovecotServer]:
    """dovecot serving ``NAME`` on an EC key, and the same names on an RSA key beside it."""
    issued = issue_leaf(pki.minted.intermediate, cn=NAME, dns=[NAME], rsa_bits=2048)
    paths = issued.write(server_log_dir / "dual", "rsa-alt")
    alternative = CertFiles(paths["cert"], paths["key"], paths["chain"], paths["chain"], issued)
    ec_issued = issue_leaf(pki.minted.intermediate, cn=NAME, dns=[NAME])
    ec_paths = ec_issued.write(server_log_dir / "dual", "ec-default")
    primary = CertFiles(
        ec_paths["cert"], ec_paths["key"], ec_paths["chain"], ec_paths["chain"], ec_issued
    )
    server = start_dovecot(primary, {}, server_log_dir / "dual", alternative=alternative)
    try:
        yield server
    finally:
        server.stop()


def b64_der_to_cert(text: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(text))


def _key_kind(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    return "ec" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__


def _side(server: DovecotServer, sigalgs: list[str]) -> str:
    result = asyncio.run(
        side_handshake(
            server.host,
            server.imaps_port,
            sni=NAME,
            versions=["TLSv1.3"],
            alpn=[],
            signature_algorithms=sigalgs,
        )
    )
    assert result.error is None, result.error
    assert result.tls_version == "TLSv1.3"
    return _key_kind(b64_der_to_cert(result.chain[0]))


def test_the_side_handshake_gets_the_certificate_the_clients_signature_algorithms_select(
    dual_dovecot,
) -> None:
    assert _side(dual_dovecot, [RSA_ONLY]) == "rsa"
    assert _side(dual_dovecot, [ECDSA_ONLY]) == "ec"
    # The client's order and its unnamed codes: only the names OpenSSL knows are offered.
    assert _side(dual_dovecot, ["0x0303", RSA_ONLY]) == "rsa"


def test_names_openssl_does_not_know_are_left_out_in_the_clients_order() -> None:
    names = ("0x0303", "ed25519", "rsa_pss_rsae_sha256", "no_such_scheme", "ecdsa_secp256r1_sha256")
    assert known_signature_algorithms(names) == (
        "ed25519",
        "rsa_pss_rsae_sha256",
        "ecdsa_secp256r1_sha256",
    )


def _s_client_leaf(port: int, sigalgs: str, ca: Path) -> x509.Certificate:
    argv = [require_binary("openssl", "openssl"), "s_client", "-connect", f"127.0.0.1:{port}"]
    argv += ["-servername", NAME, "-tls1_3", "-sigalgs", sigalgs, "-showcerts"]
    argv += ["-CAfile", str(ca), "-verify_return_error", "-verify_hostname", NAME]
    done = subprocess.run(
        argv, input=b"a LOGOUT\r\n", capture_output=True, check=False, timeout=TIMEOUT_S * 2
    )
    text = done.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in text, text[-2000:]
    return x509.load_pem_x509_certificate(_PEM.findall(done.stdout)[0])


@pytest.mark.parametrize(("sigalgs", "kind"), [(RSA_ONLY, "rsa"), (ECDSA_ONLY, "ec")])
def test_observe_records_the_certificate_the_client_itself_was_shown(
    tmp_path, pki, dual_dovecot, sigalgs, kind
) -> None:
    """s_client offers one signature algorithm; the recorded chain is the one it verified."""
    with observing(tmp_path, dual_dovecot.imaps_port, pki) as proxy:
        shown = _s_client_leaf(proxy.port, sigalgs, pki.root_ca)
        [session] = proxy.sessions(1, timeout=15)
    assert _key_kind(shown) == kind
    assert session.chain_source == "side-handshake"
    assert session.client_signature_algorithms == [sigalgs]
    assert b64_der_to_cert(session.chain[0]) == shown
