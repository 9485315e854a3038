"""Observe mode end to end: real servers (dovecot, aiosmtpd, slapd, nnrpd), real clients that
trust only the servers' own CA and check the host name, and certmatch's observing relay in
between. Nothing of certmatch's is installed in any client.

In every case the client's own result and certmatch's verdict agree: the client saw the
server's real chain, and certmatch judged the same chain.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_fixtures import RunningProxy, inprocess_proxy
from servers.clients import TIMEOUT_S, LoopbackIMAP4_SSL

from certmatch.core.facts import SessionFacts
from certmatch.core.findings import Diagnosis
from certmatch.core.judge import Judge
from certmatch.core.trust import TrustStore
from certmatch.proxy.observe import ObserveAddon
from certmatch.proxy.starttls_layer import StartTlsAddon

GOOD = "imap.example.test"
WRONG = "wrong.example.test"
VERSIONS = {"tls1_2": ssl.TLSVersion.TLSv1_2, "tls1_3": ssl.TLSVersion.TLSv1_3}


@contextlib.contextmanager
def observing(tmp: Path, mode: str, pki, **options: object) -> Iterator[RunningProxy]:
    """certmatch's observe addon (and the STARTTLS layer's options) in mitmproxy."""
    with inprocess_proxy(
        tmp,
        mode,
        addon=ObserveAddon(),  # type: ignore[arg-type]
        extra_addons=(StartTlsAddon(),),
        ca_file=[str(pki.root_ca)],
        **options,
    ) as proxy:
        yield proxy


def judged(pki, session: SessionFacts) -> Diagnosis:
    return Judge(TrustStore.load([pki.root_ca])).diagnose(session)


def s_client(
    port: int,
    name: str,
    cafile: Path,
    version: str,
    payload: bytes,
    starttls: str | None = None,
) -> tuple[bool, str]:
    """openssl s_client verifying ``name`` against ``cafile`` only; whether it completed."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name]
    argv += ["-verify_return_error", "-verify_hostname", name, "-CAfile", str(cafile)]
    argv += [f"-{version}", "-quiet"]
    if starttls:
        argv += ["-starttls", starttls]
    done = subprocess.run(
        argv, check=False, input=payload, capture_output=True, timeout=TIMEOUT_S * 2
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    return done.returncode == 0 and "verify error" not in output, output


def python_imaps(port: int, name: str, cafile: Path, version: str) -> tuple[bool, str]:
    """Python's ssl and imaplib, verifying ``name`` against ``cafile`` only."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.maximum_version = context.minimum_version = VERSIONS[version]
    try:
        client = LoopbackIMAP4_SSL(name, port, ssl_context=context)
    except ssl.SSLCertVerificationError as exc:
        return False, str(exc)
    client.logout()
    return True, "logged out"


def curl_imaps(port: int, name: str, cafile: Path, version: str, proxy: list[str] | None = None):
    argv = ["curl", "--silent", "--show-error", "--max-time", "10", "--cacert", str(cafile)]
    argv += ["--tlsv1.3"] if version == "tls1_3" else ["--tlsv1.2", "--tls-max", "1.2"]
    argv += ["--user", "test:secret", *(proxy or [])]
    if proxy is None:
        argv += ["--connect-to", f"{name}:993:127.0.0.1:{port}"]
    url = f"imaps://{name}:{993 if proxy is None else port}/"
    done = subprocess.run([*argv, url], check=False, capture_output=True, timeout=TIMEOUT_S * 3)
    return done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")


def assert_agrees(pki, session: SessionFacts, name: str, accepted: bool, output: str) -> None:
    """The client's own result and certmatch's verdict say the same."""
    verdict = judged(pki, session)
    assert session.presented == "real"
    assert session.sni == name
    assert "proxy-ca-not-trusted" not in verdict.cause_ids
    if name == WRONG:
        assert not accepted, output
        # curl checks the name after the handshake and closes without an alert.
        assert session.client_decision in ("alert", "closed-after-handshake")
        assert verdict.verdict == "mismatch" and verdict.failed
        assert "client-refused-certificate" in verdict.cause_ids
    else:
        assert accepted, output
        assert session.client_decision == "went-on", session
        assert verdict.verdict == "match" and not verdict.failed, verdict.cause_ids


CLIENTS = {
    "s_client": lambda port, name, ca, version: s_client(port, name, ca, version, b"a LOGOUT\r\n"),
    "python": python_imaps,
    "curl": curl_imaps,
}


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
@pytest.mark.parametrize("name", [GOOD, WRONG])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_implicit_tls_client_and_certmatch_agree(
    tmp_path: Path, dovecot, pki, client: str, version: str, name: str
) -> None:
    with observing(tmp_path, f"reverse:tls://{dovecot.host}:{dovecot.imaps_port}", pki) as proxy:
        accepted, output = CLIENTS[client](proxy.port, name, pki.root_ca, version)
        sessions = proxy.sessions(1, timeout=10)
    assert len(sessions) == 1, sessions
    for session in sessions:
        assert session.tls_version == ("TLSv1.2" if version == "tls1_2" else "TLSv1.3")
        assert session.chain_source == ("wire" if version == "tls1_2" else "side-handshake")
        assert session.chain, session.notes
        assert session.client_signature_algorithms  # every one of these clients sends them
        assert_agrees(pki, session, name, accepted, output)


def test_tls13_wrong_name_explained_as_the_real_certificate(tmp_path: Path, dovecot, pki) -> None:
    with observing(tmp_path, f"reverse:tls://{dovecot.host}:{dovecot.imaps_port}", pki) as proxy:
        accepted, _ = s_client(proxy.port, WRONG, pki.root_ca, "tls1_3", b"")
        [session] = proxy.sessions(1, timeout=10)
    assert not accepted
    verdict = judged(pki, session)
    refused = next(f for f in verdict.findings if f.id == "client-refused-certificate")
    assert "observe mode" in refused.explanation and "own certificate" in refused.explanation
    evidence = [line for finding in verdict.findings for line in finding.evidence]
    assert any(line.startswith("chain from: a side handshake") for line in evidence)


def test_side_handshakes_are_shared_per_server_and_sni(tmp_path: Path, dovecot, pki) -> None:
    addon = ObserveAddon()
    mode = f"reverse:tls://{dovecot.host}:{dovecot.imaps_port}"
    with inprocess_proxy(
        tmp_path,
        mode,
        addon=addon,  # type: ignore[arg-type]
        extra_addons=(StartTlsAddon(),),
        ca_file=[str(pki.root_ca)],
    ) as proxy:
        for _ in range(3):
            assert s_client(proxy.port, GOOD, pki.root_ca, "tls1_3", b"a LOGOUT\r\n")[0]
        sessions = proxy.sessions(3, timeout=10)
    assert len(sessions) == 3
    assert addon.side_handshakes.made == 1
    assert addon.sessions == {}  # each written once and forgotten
    assert all(s.chain == sessions[0].chain and s.chain for s in sessions)


# -- STARTTLS, every protocol ------------------------------------------------------------

STARTTLS_PAYLOAD = {
    "imap": b"a LOGOUT\r\n",
    "pop3": b"QUIT\r\n",
    "smtp": b"QUIT\r\n",
    "nntp": b"QUIT\r\n",
    "ldap": bytes.fromhex("30050201024200"),  # UnbindRequest
}
STARTTLS_NAMES = {
    "imap": "imap.example.test",
    "pop3": "pop.example.test",
    "smtp": "smtp.example.test",
    "nntp": "news.example.test",
    "ldap": "ldap.example.test",
}


def starttls_port(protocol: str, dovecot, smtp_server, slapd_factory, nntp_factory) -> int:
    if protocol == "imap":
        return dovecot.imap_port
    if protocol == "pop3":
        return dovecot.pop3_port
    if protocol == "smtp":
        return smtp_server.submission_port
    if protocol == "ldap":
        return slapd_factory("correct").ldap_port
    return nntp_factory("correct").nntp_port


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
@pytest.mark.parametrize("good", [True, False], ids=["good-name", "wrong-name"])
@pytest.mark.parametrize("protocol", list(STARTTLS_PAYLOAD))
def test_starttls_client_and_certmatch_agree(
    tmp_path: Path,
    dovecot,
    smtp_server,
    slapd_factory,
    nntp_factory,
    pki,
    protocol: str,
    good: bool,
    version: str,
) -> None:
    port = starttls_port(protocol, dovecot, smtp_server, slapd_factory, nntp_factory)
    name = STARTTLS_NAMES[protocol] if good else WRONG
    with observing(tmp_path, f"reverse:tcp://127.0.0.1:{port}", pki) as proxy:
        accepted, output = s_client(
            proxy.port, name, pki.root_ca, version, STARTTLS_PAYLOAD[protocol], starttls=protocol
        )
        [session] = proxy.sessions(1, timeout=10)
    assert session.tls_kind == "starttls"
    assert session.starttls is not None and session.starttls.client_requested
    assert session.protocol in (protocol, "submission")
    assert session.chain, session.notes
    assert session.chain_source == ("wire" if version == "tls1_2" else "side-handshake")
    verdict = judged(pki, session)
    assert session.presented == "real"
    if good:
        assert accepted, output
        assert session.client_decision == "went-on", session
        assert not verdict.failed, verdict.cause_ids
    else:
        assert not accepted, output
        assert session.client_decision == "alert"
        assert verdict.verdict == "mismatch"


# -- socks5 and regular (HTTP CONNECT) ---------------------------------------------------


@pytest.mark.parametrize("mode", ["socks5", "regular"])
@pytest.mark.parametrize("name", [GOOD, WRONG])
def test_socks5_and_regular_modes(tmp_path: Path, dovecot, pki, mode: str, name: str) -> None:
    with observing(tmp_path, mode, pki) as proxy:
        via = (
            ["--socks5", f"127.0.0.1:{proxy.port}"]
            if mode == "socks5"
            else ["--proxy", f"http://127.0.0.1:{proxy.port}", "--proxytunnel"]
        )
        via += ["--connect-to", f"{name}:{dovecot.imaps_port}:127.0.0.1:{dovecot.imaps_port}"]
        accepted, output = curl_imaps(dovecot.imaps_port, name, pki.root_ca, "tls1_2", via)
        [session] = proxy.sessions(1, timeout=10)
    assert session.chain_source == "wire"
    assert_agrees(pki, session, name, accepted, output)


def test_python_imaplib_session_through_observe_reads_mail(tmp_path: Path, dovecot, pki) -> None:
    """A whole session: login and fetch through the relay, bytes unchanged."""
    with observing(tmp_path, f"reverse:tls://{dovecot.host}:{dovecot.imaps_port}", pki) as proxy:
        context = ssl.create_default_context(cafile=str(pki.root_ca))
        client = LoopbackIMAP4_SSL(GOOD, proxy.port, ssl_context=context)
        client.login(dovecot.user, dovecot.password)
        client.select("INBOX")
        _, data = client.fetch("1", "(RFC822)")
        client.logout()
        [session] = proxy.sessions(1, timeout=10)
    assert isinstance(data[0], tuple) and data[0][1] == dovecot.known_message
    assert session.client_decision == "went-on"


# -- the command a user types ----------------------------------------------------------------


def test_certmatch_proxy_observe_command(tmp_path: Path, dovecot, pki) -> None:
    """``certmatch proxy --observe`` as a process; ``certmatch check`` agrees with the client."""
    from proxy_fixtures import free_port, mitmdump_process, venv_bin

    port = free_port()
    record = tmp_path / "observe.jsonl"
    argv = [venv_bin("certmatch"), "proxy", "--observe", "--listen-port", str(port)]
    argv += ["--mode", f"reverse:tls://127.0.0.1:{dovecot.imaps_port}", "--record", str(record)]
    argv += ["--ca-file", str(pki.root_ca), "--confdir", str(tmp_path / "conf")]
    with mitmdump_process(tmp_path, argv, port=port):
        assert s_client(port, GOOD, pki.root_ca, "tls1_3", b"a LOGOUT\r\n")[0]
        assert not s_client(port, WRONG, pki.root_ca, "tls1_2", b"a LOGOUT\r\n")[0]
        proxy = RunningProxy(port, record, tmp_path / "conf")
        sessions = proxy.sessions(2, timeout=15)
    assert [s.sni for s in sessions] == [GOOD, WRONG]
    check = subprocess.run(
        [venv_bin("certmatch"), "check", str(record)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "mismatch" in check.stdout and "match" in check.stdout, check.stdout
    log = (tmp_path / "proxy.log").read_text()
    assert "Traceback" not in log


def test_observe_refuses_block(tmp_path: Path) -> None:
    from proxy_fixtures import venv_bin

    done = subprocess.run(
        [venv_bin("certmatch"), "proxy", "--observe", "--on-mismatch", "block"]
        + ["--mode", "reverse:tls://127.0.0.1:993", "--record", str(tmp_path / "r.jsonl")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "cannot block" in done.stderr and "Traceback" not in done.stderr


# -- resumed handshakes carry no certificate ----------------------------------------------


@contextlib.contextmanager
def resuming_imaps(pki) -> Iterator[int]:
    """An IMAPS greeter in one process and one TLS context, so its session tickets resume:
    dovecot starts a login process per connection, each with its own ticket key, and never
    resumes. Python's ssl (OpenSSL) issues tickets for TLS 1.2 and 1.3 by default."""
    import socket
    import threading

    served = pki.for_scenario("correct")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(served.chain, served.key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"* OK resuming IMAP ready\r\n")
            if tls.recv(1024):
                tls.sendall(b"* BYE\r\na OK LOGOUT\r\n")

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_resumed_handshake_takes_the_side_handshake_chain(
    tmp_path: Path, pki, version: str
) -> None:
    session_file = tmp_path / "tls.session"
    with (
        resuming_imaps(pki) as port,
        observing(tmp_path, f"reverse:tls://127.0.0.1:{port}", pki) as proxy,
    ):
        argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername"]
        argv += [GOOD, "-CAfile", str(pki.root_ca), "-verify_return_error", "-verify_hostname"]
        argv += [GOOD, f"-{version}", "-ign_eof"]
        for extra in (["-sess_out", str(session_file)], ["-sess_in", str(session_file)]):
            done = subprocess.run(
                [*argv, *extra],
                check=False,
                input=b"a LOGOUT\r\n",
                capture_output=True,
                timeout=TIMEOUT_S * 2,
            )
            # The greeter closes without close_notify, which s_client reports (exit 1).
            assert b"* BYE" in done.stdout, done.stderr
        assert b"Reused, TLSv1" in done.stdout, done.stdout[-600:]  # it resumed the first
        first, second = proxy.sessions(2, timeout=10)
    assert first.chain_source == ("wire" if version == "tls1_2" else "side-handshake")
    assert second.chain_source == "resumed"
    assert second.chain == first.chain  # from the side handshake (or its cache)
    assert second.client_decision == "went-on"
    assert judged(pki, second).verdict == "match"


def test_starttls_observed_session_outlives_the_starttls_timeout(
    tmp_path: Path, dovecot, pki
) -> None:
    """The plaintext phase's timer must not end a relayed TLS session that lasts longer."""
    import time

    from servers.clients import LoopbackIMAP4

    with observing(
        tmp_path, f"reverse:tcp://127.0.0.1:{dovecot.imap_port}", pki, starttls_timeout=1
    ) as proxy:
        client = LoopbackIMAP4(GOOD, proxy.port)
        client.starttls(ssl.create_default_context(cafile=str(pki.root_ca)))
        time.sleep(2.5)
        client.noop()  # still relayed after the 1 s timeout
        client.logout()
        [session] = proxy.sessions(1, timeout=10)
    assert session.tls_kind == "starttls" and session.client_decision == "went-on"
    assert session.sni == GOOD and session.chain


def test_observe_and_capture_together_is_a_clear_error(tmp_path: Path) -> None:
    from proxy_fixtures import REPO, venv_bin

    done = subprocess.run(
        [venv_bin("mitmdump"), "-s", str(REPO / "addons" / "capture.py")]
        + ["-s", str(REPO / "certmatch" / "proxy" / "scripts" / "observe.py")]
        + ["--mode", "reverse:tls://127.0.0.1:1", "--listen-port", "0"]
        + ["--set", f"confdir={tmp_path}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert "not both" in output, output
    assert "Traceback" not in output
