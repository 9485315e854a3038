"""A certificate that breaks RFC 5280's profile, served by a real dovecot (issue 13).

The leaf carries no authorityKeyIdentifier (RFC 5280 §4.2.1.1 asks every certificate but a
self-signed one to). OpenSSL's default verifier does not check that, so `openssl s_client`
verifying the chain and the name accepts it, directly and through certmatch. certmatch agrees
(a match) and says what the CA should have done: the ca-profile-violation warning.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from proxy_fixtures import inprocess_proxy, venv_bin
from servers.certs import CertFiles
from servers.clients import TIMEOUT_S
from servers.dovecot import start_dovecot
from servers.process import require_binary

from certmatch.lab.pki import Issued

NAME = "mail.example.test"


def _leaf_without_aki(intermediate: Issued) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .issuer_name(intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(intermediate.key, hashes.SHA256())
    )
    return Issued(cert, key, [intermediate.cert, *intermediate.issuers])


def _s_client(port: int, ca: Path) -> str:
    argv = [require_binary("openssl", "openssl"), "s_client", "-connect", f"127.0.0.1:{port}"]
    argv += ["-servername", NAME, "-CAfile", str(ca), "-verify_return_error"]
    argv += ["-verify_hostname", NAME]
    done = subprocess.run(
        argv, input=b"a LOGOUT\r\n", capture_output=True, check=False, timeout=TIMEOUT_S * 2
    )
    return done.stdout.decode(errors="replace")


def test_a_leaf_without_a_key_identifier_is_accepted_by_the_client_and_flagged(
    tmp_path, pki, server_log_dir
) -> None:
    issued = _leaf_without_aki(pki.minted.intermediate)
    paths = issued.write(tmp_path / "pki", "no-aki")
    files = CertFiles(paths["cert"], paths["key"], paths["chain"], paths["chain"], issued)
    server = start_dovecot(files, {}, server_log_dir / "no-aki")
    try:
        assert "Verify return code: 0 (ok)" in _s_client(server.imaps_port, pki.root_ca)
        mode = f"reverse:tls://127.0.0.1:{server.imaps_port}"
        with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)]) as proxy:
            # Through certmatch (it mirrors the certificate), the client accepts as well.
            assert "Verify return code: 0 (ok)" in _s_client(proxy.port, proxy.ca_file)
            [session] = proxy.sessions(1, timeout=15)
        assert session.client_decision == "went-on"
    finally:
        server.stop()
    done = subprocess.run(
        [venv_bin("certmatch"), "check", "--json", str(proxy.record)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # a warning fails nothing
    [judged] = json.loads(done.stdout)["sessions"]
    assert judged["verdict"] == "match" and judged["causes"] == ["ca-profile-violation"]
    assert "(§4.2.1.1)" in judged["explanation"] and NAME in judged["explanation"]
    if keep := os.environ.get("CERTMATCH_KEEP_RECORDING"):
        Path(keep).write_bytes(proxy.record.read_bytes())  # how the sample recording was made
