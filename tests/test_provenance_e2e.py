"""End to end: where the judged name came from, with real clients through the real proxy.

A client that sends no SNI tells a reverse proxy no name, so the session is judged against
the reverse target: ``requested-host-assumed``, never a silent match. A client that sends
an IP address as SNI (RFC 6066 §3 forbids it) gets ``sni-ip-literal``. The server is
dovecot (tests/servers); the clients are openssl s_client and imaplib.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from proxy_fixtures import (
    free_port,
    inprocess_proxy,
    mitmdump_process,
    private_hosts,
    s_client_speaking,
    venv_bin,
)
from servers.clients import LoopbackIMAP4_SSL

from certmatch.core.diagnosis import diagnose
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore

pytestmark = pytest.mark.timeout(90)

ASSUMED = "requested-host-assumed"
IP_SNI = "sni-ip-literal"


@pytest.fixture(scope="module")
def store(pki) -> TrustStore:
    return TrustStore.load([pki.root_ca])


def _recorded(record: Path, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.exists() and (sessions := read_recording(record).sessions):
            return sessions
        time.sleep(0.05)
    raise AssertionError(f"nothing recorded in {record}")


def test_no_sni_through_certmatch_proxy_is_never_a_silent_match(tmp_path, dovecot, pki):
    """The reverse target names a host the certificate covers: once a silent "✓ match"."""
    port = free_port()
    record = tmp_path / "rec.jsonl"
    conf = tmp_path / "conf"
    argv = [
        venv_bin("certmatch"),
        "proxy",
        "--mode",
        f"reverse:tls://imap.example.test:{dovecot.imaps_port}",
        "--listen-port",
        str(port),
        "--record",
        str(record),
        "--confdir",
        str(conf),
        "--ca-file",
        str(pki.root_ca),
        # The name resolves through a private hosts file only; the system's resolver (which
        # differs from machine to machine) would add dns-points-elsewhere, rightly.
        "--no-dns",
    ]
    with (
        private_hosts(tmp_path, ["imap.example.test"]) as prefix,
        mitmdump_process(tmp_path, argv, prefix=prefix, port=port),
    ):
        result = s_client_speaking(port, servername=None, cafile=conf / "mitmproxy-ca-cert.pem")
        (facts,) = _recorded(record)
    assert result.chain, result.output
    assert facts.sni is None and facts.upstream_sni is None
    assert (facts.requested_host, facts.requested_host_source) == (
        "imap.example.test",
        "reverse-target",
    )
    done = subprocess.run(
        [venv_bin("certmatch"), "check", "--json", "--ca-file", str(pki.root_ca), str(record)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # a failing session
    (session,) = json.loads(done.stdout)["sessions"]
    assert session["verdict"] == "match"  # the names do pass, against the assumed name...
    assert session["failed"] is True  # ...which certmatch cannot vouch for
    assert (session["primary_cause"], session["causes"]) == (ASSUMED, [ASSUMED])
    assert "imap.example.test (the reverse-proxy target)" in session["explanation"]
    # dovecot's default certificate has no iPAddress entry for the address it was reached at.
    assert f"configured with the address {facts.server_ip} would refuse" in session["explanation"]
    assert "--host" in session["fix"]


def test_imaplib_without_sni_is_judged_against_an_assumed_address(tmp_path, dovecot, pki, store):
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)]) as proxy:
        context = ssl.create_default_context(cafile=str(proxy.ca_file))
        context.check_hostname = False  # so that imaplib sends no SNI (server_hostname=None)
        client = LoopbackIMAP4_SSL(None, proxy.port, ssl_context=context)
        client.logout()
        (facts,) = proxy.sessions(1)
    assert facts.sni is None
    assert (facts.requested_host, facts.requested_host_source) == ("127.0.0.1", "reverse-target")
    d = diagnose(facts, store)
    assert d.cause_ids == ("ip-not-in-certificate", ASSUMED)
    assert "sent no SNI" in d.primary.explanation


def test_the_same_session_with_host_given_is_not_assumed(tmp_path, dovecot, pki, store):
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(
        tmp_path, mode, ca_file=[str(pki.root_ca)], host="imap.example.test"
    ) as proxy:
        s_client_speaking(proxy.port, servername=None, cafile=proxy.ca_file)
        (facts,) = proxy.sessions(1)
    assert (facts.sni, facts.requested_host_source) == (None, "option")
    d = diagnose(facts, store)
    assert d.verdict == "match" and d.cause_ids == () and not d.failed


def test_an_ip_address_sent_as_sni_is_flagged(tmp_path, dovecot, pki, store):
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    with inprocess_proxy(tmp_path, mode, ca_file=[str(pki.root_ca)]) as proxy:
        s_client_speaking(proxy.port, servername="127.0.0.1", cafile=proxy.ca_file)
        (facts,) = proxy.sessions(1)
    assert facts.sni == "127.0.0.1"  # recorded exactly as the client sent it
    assert facts.upstream_sni is None  # an IP literal is never sent on, and the record says why
    assert facts.upstream_sni_reason == "ip-literal"
    d = diagnose(facts, store)
    # The client named the address itself, so nothing is assumed; the certificate has no
    # iPAddress entry, and the SNI itself breaks RFC 6066 §3.
    assert d.cause_ids == ("ip-not-in-certificate", IP_SNI)
    text = d.primary.explanation
    assert "sent the address 127.0.0.1 as SNI" in text and "no SNI" not in text
