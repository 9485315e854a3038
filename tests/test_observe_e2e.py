"""Observe mode end to end: real dovecot, real clients verifying against the servers' own CA,
and ``certmatch proxy --observe``'s relay in between (nothing installed in the client).

Each client's own result and certmatch's verdict must agree: the client saw the real chain.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_fixtures import RunningProxy, inprocess_proxy
from servers.clients import TIMEOUT_S

from certmatch.core.judge import Judge
from certmatch.core.trust import TrustStore
from certmatch.proxy.observe import ObserveAddon
from certmatch.proxy.starttls_layer import StartTlsAddon

GOOD = "imap.example.test"
WRONG = "wrong.example.test"


@pytest.fixture
def observe(tmp_path: Path, dovecot, pki) -> Iterator[RunningProxy]:
    mode = f"reverse:tls://{dovecot.host}:{dovecot.imaps_port}"
    with inprocess_proxy(
        tmp_path,
        mode,
        addon=ObserveAddon(),  # type: ignore[arg-type]
        extra_addons=(StartTlsAddon(),),
        ca_file=[str(pki.root_ca)],
    ) as proxy:
        yield proxy


def judge_of(pki) -> Judge:
    return Judge(TrustStore.load([pki.root_ca]))


def s_client(port: int, name: str, cafile: Path, version: str, payload: bytes) -> tuple[int, str]:
    """openssl s_client verifying ``name`` against ``cafile``; its exit code and output."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name]
    argv += ["-verify_return_error", "-verify_hostname", name, "-CAfile", str(cafile)]
    argv += [f"-{version}", "-quiet"]
    done = subprocess.run(
        argv, check=False, input=payload, capture_output=True, timeout=TIMEOUT_S * 2
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
@pytest.mark.parametrize("name", [GOOD, WRONG])
def test_s_client_and_certmatch_agree(observe: RunningProxy, pki, version: str, name: str) -> None:
    code, output = s_client(observe.port, name, pki.root_ca, version, b"a1 LOGOUT\r\n")
    client_accepted = code == 0 and "BYE" in output
    [session] = observe.sessions(1, timeout=10)
    assert session.presented == "real"
    assert session.sni == name
    assert session.chain_source == ("wire" if version == "tls1_2" else "side-handshake")
    assert session.tls_version == ("TLSv1.2" if version == "tls1_2" else "TLSv1.3")
    verdict = judge_of(pki).diagnose(session)
    if name == GOOD:
        assert client_accepted, output
        assert session.client_decision == "went-on"
        assert verdict.verdict == "match" and not verdict.failed
    else:
        assert not client_accepted, output
        assert session.client_decision == "alert"
        if version == "tls1_2":
            assert session.client_alert is not None  # in clear: named
        assert verdict.verdict == "mismatch" and verdict.failed
    assert "proxy-ca-not-trusted" not in verdict.cause_ids
