"""Mirror mode end to end: real servers, real clients, the proxy in between (issue 9).

The client is shown a copy of the server's certificate and decides on it as it would on
the real one; the proxy records what it decided. Every case checks both: what the client
said (its own error), and what was recorded (``presented``, ``client_decision``, the
alert), and that certmatch's verdict agrees with the client (a refused session fails).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from proxy_fixtures import RunningProxy, inprocess_proxy
from scenarios import ScenarioPki
from servers.clients import (
    LoopbackIMAP4,
    LoopbackIMAP4_SSL,
    LoopbackPOP3,
    LoopbackSMTP,
    verifying_context,
)
from servers.process import require_binary
from test_nntp_e2e import loopback_nntp

from certmatch.core.diagnosis import diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore
from certmatch.proxy import StartTlsAddon

pytestmark = pytest.mark.timeout(90)

TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def store(pki: ScenarioPki) -> TrustStore:
    return TrustStore.load([pki.root_ca])


def imaps(dovecot) -> str:
    return f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"


def only(proxy: RunningProxy) -> SessionFacts:
    sessions = proxy.sessions(1, timeout=TIMEOUT_S)
    assert len(sessions) == 1, sessions
    return sessions[0]


def agrees(facts: SessionFacts, store: TrustStore, *, client_refused: bool) -> None:
    """certmatch's verdict says what the client did: a refused session is a failure."""
    verdict = diagnose(facts, store)
    assert verdict.failed is client_refused, (verdict.verdict, verdict.cause_ids)
    if client_refused:
        assert "client-refused-certificate" in verdict.cause_ids, verdict.cause_ids
    else:
        assert verdict.verdict == "match", verdict.cause_ids


# -- openssl s_client, verifying the name and the chain as a strict client does ----------------

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def strict_s_client(
    port: int, name: str, cafile: Path, *, servername: str | None = None
) -> tuple[int, str, list[x509.Certificate]]:
    """s_client that refuses what a strict client refuses; (exit code, output, chain seen).

    It sends a LOGOUT once it accepted, as a mail client goes on."""
    argv = [require_binary("openssl", "openssl"), "s_client", "-connect", f"127.0.0.1:{port}"]
    argv += ["-servername", servername or name, "-verify_hostname", name]
    argv += ["-verify_return_error", "-CAfile", str(cafile), "-showcerts"]
    done = subprocess.run(
        argv, input=b"a LOGOUT\r\n", capture_output=True, check=False, timeout=TIMEOUT_S
    )
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    chain = [x509.load_pem_x509_certificate(pem) for pem in _PEM.findall(done.stdout)]
    return done.returncode, output, chain


# scenario, the name the client asks for, OpenSSL's verify error (None: accepted), the alert
S_CLIENT_CASES = [
    ("correct", "imap.example.test", None, None),
    ("wrong-host", "wrong.example.test", "hostname mismatch", "bad_certificate"),
    ("wildcard-too-deep", "a.b.example.test", "hostname mismatch", "bad_certificate"),
    ("expired", "expired.example.test", "certificate has expired", "certificate_expired"),
    ("self-signed", "selfsigned.example.test", "self-signed certificate", "unknown_ca"),
    (
        "missing-intermediate",
        "nointer.example.test",
        "unable to get local issuer certificate",
        "unknown_ca",
    ),
]


@pytest.mark.parametrize(
    ("case", "name", "verify_error", "alert"), S_CLIENT_CASES, ids=[c[0] for c in S_CLIENT_CASES]
)
def test_s_client_decides_on_the_servers_own_certificate(
    case, name, verify_error, alert, tmp_path, dovecot, pki, store
):
    with inprocess_proxy(tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)]) as proxy:
        code, output, seen = strict_s_client(proxy.port, name, proxy.ca_file)
        facts = only(proxy)
    served = pki.for_scenario(case).served_chain
    if verify_error is None:
        assert code == 0 and "Verify return code: 0 (ok)" in output, output
        assert (facts.client_decision, facts.client_alert) == ("went-on", None)
    else:
        assert code != 0 and "verify error:num=" in output and verify_error in output, output
        assert (facts.client_decision, facts.client_alert) == ("alert", alert)
        assert facts.client_alert_code is not None
    assert facts.presented == "mirror" and facts.action == "pass"
    # The client saw the server's names and dates exactly, and a chain of the same length.
    assert len(seen) == len(served)
    leaf, real = seen[0], served[0]
    assert (leaf.subject, leaf.not_valid_after_utc) == (real.subject, real.not_valid_after_utc)
    assert _san(leaf) == _san(real)
    assert leaf.public_key() != real.public_key()
    agrees(facts, store, client_refused=verify_error is not None)


def _san(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in ext.value]


# -- the stdlib and curl ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dial_name", "message"),
    [
        ("wrong.example.test", "wrong.example.test", "Hostname mismatch"),
        ("expired.example.test", "expired.example.test", "certificate has expired"),
        ("selfsigned.example.test", "selfsigned.example.test", "self-signed certificate"),
        # A client configured with an address sends no SNI and checks the address.
        ("127.0.0.1", None, "IP address mismatch"),
    ],
    ids=["wrong-host", "expired", "self-signed", "ip-address"],
)
def test_imaplib_with_a_verifying_context_refuses_what_the_server_would_fail(
    name, dial_name, message, tmp_path, dovecot, pki, store
):
    with inprocess_proxy(tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)]) as proxy:
        with pytest.raises(ssl.SSLCertVerificationError, match=message):
            LoopbackIMAP4_SSL(name, proxy.port, ssl_context=verifying_context(proxy.ca_file))
        facts = only(proxy)
    assert facts.sni == dial_name
    assert (facts.presented, facts.client_decision) == ("mirror", "alert")
    agrees(facts, store, client_refused=True)


def test_imaplib_accepts_the_right_name_and_fetches(tmp_path, dovecot, pki, store):
    with inprocess_proxy(tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)]) as proxy:
        imap = LoopbackIMAP4_SSL(
            "imap.example.test", proxy.port, ssl_context=verifying_context(proxy.ca_file)
        )
        imap.login(dovecot.user, dovecot.password)
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch("1", "(BODY.PEEK[])")
        imap.logout()
        facts = only(proxy)
    assert data[0][1] == dovecot.known_message  # type: ignore[index]
    assert (facts.presented, facts.client_decision) == ("mirror", "went-on")
    agrees(facts, store, client_refused=False)


def test_a_client_that_does_not_trust_the_proxy_ca_refuses_a_good_certificate(
    tmp_path, dovecot, pki, store
):
    with inprocess_proxy(tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)]) as proxy:
        real_root_only = verifying_context(pki.root_ca)  # the server's CA, not the proxy's
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            LoopbackIMAP4_SSL("imap.example.test", proxy.port, ssl_context=real_root_only)
        facts = only(proxy)
    assert (facts.client_decision, facts.client_alert) == ("alert", "unknown_ca")
    verdict = diagnose(facts, store)
    assert verdict.failed and "proxy-ca-not-trusted" in verdict.cause_ids


def test_curl_refuses_a_wrong_name_after_the_handshake_without_an_alert(
    tmp_path, dovecot, pki, store
):
    curl = require_binary("curl", "curl")
    with inprocess_proxy(tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)]) as proxy:
        done = subprocess.run(
            [curl, "--silent", "--show-error", "--max-time", "10", "--cacert", str(proxy.ca_file)]
            + ["--connect-to", f"wrong.example.test:993:127.0.0.1:{proxy.port}"]
            + ["--user", f"{dovecot.user}:{dovecot.password}", "imaps://wrong.example.test/INBOX"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        facts = only(proxy)
    assert done.returncode == 60 and "wrong.example.test" in done.stderr, done.stderr
    assert facts.client_decision == "closed-after-handshake"
    assert facts.client_waited is not None and facts.client_waited < TIMEOUT_S
    agrees(facts, store, client_refused=True)


# -- STARTTLS, the five protocols -------------------------------------------------------------

WRONG = "wrong.example.test"


def _refuse_imap(port: int, context: ssl.SSLContext) -> None:
    LoopbackIMAP4(WRONG, port).starttls(context)


def _refuse_pop3(port: int, context: ssl.SSLContext) -> None:
    LoopbackPOP3(WRONG, port).stls(context)


def _refuse_smtp(port: int, context: ssl.SSLContext) -> None:
    smtp = LoopbackSMTP(WRONG, port)
    smtp.ehlo()
    smtp.starttls(context=context)


def _refuse_nntp(port: int, context: ssl.SSLContext) -> None:
    loopback_nntp(WRONG, port).starttls(context)  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp", "ldap", "nntp"])
def test_starttls_clients_refuse_the_mirror_of_a_wrong_certificate(
    protocol, tmp_path, pki, store, dovecot, smtp_server, slapd_factory, nntp_factory
):
    port = {
        "imap": lambda: dovecot.imap_port,
        "pop3": lambda: dovecot.pop3_port,
        "smtp": lambda: smtp_server.submission_port,
        "ldap": lambda: slapd_factory("wrong-host").ldap_port,
        "nntp": lambda: nntp_factory("wrong-host").nntp_port,
    }[protocol]()
    with inprocess_proxy(
        tmp_path,
        f"reverse:tcp://127.0.0.1:{port}",
        extra_addons=(StartTlsAddon(),),
        ca_file=[str(pki.root_ca)],
    ) as proxy:
        context = verifying_context(proxy.ca_file)
        if protocol == "ldap":
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(proxy.ca_file), sni=WRONG)
            server = ldap3.Server("127.0.0.1", port=proxy.port, tls=tls, connect_timeout=5)
            conn = ldap3.Connection(server)
            conn.open()
            with pytest.raises(ldap3.core.exceptions.LDAPException, match="certificate"):
                conn.start_tls()
            with contextlib.suppress(ldap3.core.exceptions.LDAPException):
                conn.unbind()  # ldap3 closed its socket already
        else:
            refuse = {
                "imap": _refuse_imap,
                "pop3": _refuse_pop3,
                "smtp": _refuse_smtp,
                "nntp": _refuse_nntp,
            }[protocol]
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                refuse(proxy.port, context)
        facts = only(proxy)
    assert (facts.tls_kind, facts.protocol, facts.sni) == ("starttls", protocol, WRONG)
    # ldap3 checks the name itself after the handshake and hangs up without an alert.
    expected = (
        ("closed-after-handshake", None) if protocol == "ldap" else ("alert", "bad_certificate")
    )
    assert facts.presented == "mirror"
    assert (facts.client_decision, facts.client_alert) == expected
    agrees(facts, store, client_refused=True)


# -- what mirror mode keeps from the rest of the proxy ---------------------------------------


def test_the_sni_probe_still_runs_beside_a_mirror(tmp_path, dovecot, pki, store):
    """A client configured with alt.example.test sends no SNI: it is shown (a mirror of)
    the server's default certificate, and the probe shows what SNI would have brought."""
    with inprocess_proxy(
        tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)], host="alt.example.test"
    ) as proxy:
        context = verifying_context(proxy.ca_file)
        context.check_hostname = False  # no SNI: imaplib would send the name otherwise
        imap = LoopbackIMAP4_SSL(None, proxy.port, ssl_context=context)  # type: ignore[arg-type]
        der = imap.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        leaf = x509.load_der_x509_certificate(der)
        imap.logout()
        facts = only(proxy)
    assert "alt.example.test" not in _san(leaf)  # the default certificate, as the server sent
    assert facts.presented == "mirror" and facts.sni_probe is not None
    assert diagnose(facts, store).primary.id == "no-sni-default-certificate"


def test_block_still_refuses_before_any_certificate(tmp_path, dovecot, pki):
    with inprocess_proxy(
        tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)], on_mismatch="block"
    ) as proxy:
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|handshake failure"):
            LoopbackIMAP4_SSL(WRONG, proxy.port, ssl_context=verifying_context(proxy.ca_file))
        good = LoopbackIMAP4_SSL(
            "imap.example.test", proxy.port, ssl_context=verifying_context(proxy.ca_file)
        )
        good.logout()
        sessions = proxy.sessions(2, timeout=TIMEOUT_S)
    blocked, passed = sessions
    assert (blocked.action, blocked.presented, blocked.client_decision) == ("block", None, None)
    assert (passed.action, passed.presented, passed.client_decision) == (
        "pass",
        "mirror",
        "went-on",
    )


@contextlib.contextmanager
def client_cert_demanding_server(pki: ScenarioPki) -> Iterator[int]:
    """openssl s_server (TLS 1.2) that sends its certificate, then demands one from the client
    and aborts the handshake when the proxy has none: a failed handshake with a chain seen."""
    from proxy_fixtures import free_port, wait_for_port

    port = free_port()
    cert = pki.for_scenario("correct")
    argv = [require_binary("openssl", "openssl"), "s_server", "-accept", str(port), "-quiet"]
    argv += ["-cert", str(cert.cert), "-key", str(cert.key), "-cert_chain", str(cert.chain)]
    argv += ["-tls1_2", "-Verify", "1", "-CAfile", str(pki.root_ca)]
    server = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        server.terminate()
        server.wait(10)


def test_a_failed_upstream_handshake_is_a_handshake_failure_for_the_client(tmp_path, pki):
    with (
        client_cert_demanding_server(pki) as port,
        inprocess_proxy(
            tmp_path, f"reverse:tls://127.0.0.1:{port}", ca_file=[str(pki.root_ca)]
        ) as proxy,
    ):
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|handshake failure"):
            LoopbackIMAP4_SSL(
                "imap.example.test", proxy.port, ssl_context=verifying_context(proxy.ca_file)
            )
        facts = only(proxy)
    assert facts.server_error and facts.chain  # the server's chain was seen, then it failed
    assert (facts.action, facts.presented) == ("block", None)


# -- the client's decision -------------------------------------------------------------------


def test_a_client_that_closes_after_the_greeting_is_recorded_with_its_wait(
    tmp_path, dovecot, pki, store
):
    """How GnuTLS clients refuse: a complete handshake, then a silent close."""
    with inprocess_proxy(tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)]) as proxy:
        raw = socket.create_connection(("127.0.0.1", proxy.port), TIMEOUT_S)
        tls = verifying_context(proxy.ca_file).wrap_socket(raw, server_hostname="imap.example.test")
        assert tls.recv(4) == b"* OK"  # the greeting was relayed
        time.sleep(0.3)
        tls.close()
        facts = only(proxy)
    assert facts.client_decision == "closed-after-handshake"
    assert facts.client_waited is not None and 0.25 <= facts.client_waited < TIMEOUT_S
    agrees(facts, store, client_refused=True)


@contextlib.contextmanager
def greeting_then_goodbye_server(pki: ScenarioPki) -> Iterator[int]:
    """A TLS server that greets and hangs up at once, before the client says anything (as a
    server turning clients away does). Python's ssl, because the servers here do not."""
    cert = pki.for_scenario("correct")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.chain, cert.key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"* BYE too many connections\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_server_that_hangs_up_first_leaves_the_clients_decision_unknown(tmp_path, pki):
    with (
        greeting_then_goodbye_server(pki) as port,
        inprocess_proxy(
            tmp_path, f"reverse:tls://127.0.0.1:{port}", ca_file=[str(pki.root_ca)]
        ) as proxy,
    ):
        raw = socket.create_connection(("127.0.0.1", proxy.port), TIMEOUT_S)
        tls = verifying_context(proxy.ca_file).wrap_socket(raw, server_hostname="imap.example.test")
        assert tls.recv(5) == b"* BYE"
        with contextlib.suppress(OSError):
            while tls.recv(1024):
                pass
        tls.close()
        facts = only(proxy)
    assert (facts.presented, facts.client_decision) == ("mirror", None)


@pytest.mark.parametrize("mode", ["tls", "tcp"], ids=["implicit", "starttls"])
def test_a_connection_closed_before_any_byte_is_recorded_once(mode, tmp_path, dovecot, pki):
    port = dovecot.imaps_port if mode == "tls" else dovecot.imap_port
    with inprocess_proxy(
        tmp_path,
        f"reverse:{mode}://127.0.0.1:{port}",
        extra_addons=(StartTlsAddon(),),
        ca_file=[str(pki.root_ca)],
    ) as proxy:
        socket.create_connection(("127.0.0.1", proxy.port), TIMEOUT_S).close()
        sessions = proxy.sessions(1, timeout=TIMEOUT_S)
        time.sleep(0.5)  # nothing else arrives for the same connection
        sessions = proxy.sessions(1)
    [facts] = sessions
    assert facts.client_decision == "closed-before-handshake"
    assert facts.server_error is None and facts.chain == []
    verdict = diagnose(facts, TrustStore.load([pki.root_ca]))
    assert verdict.primary is not None and verdict.primary.id == "client-closed-before-handshake"


@contextlib.contextmanager
def server_that_never_answers() -> Iterator[int]:
    """A listening socket whose accept queue is full: the kernel drops further SYNs, so a
    connection to it hangs in the dial, as to a server behind a black hole."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def test_a_connection_still_dialling_when_the_proxy_stops_is_recorded_once(tmp_path, pki):
    """mitmproxy then cancels the dial ("connection cancelled"): the record says the proxy
    stopped, and never that the server was unreachable."""
    with (
        server_that_never_answers() as port,
        inprocess_proxy(
            tmp_path, f"reverse:tls://127.0.0.1:{port}", ca_file=[str(pki.root_ca)]
        ) as proxy,
    ):
        waiting = socket.create_connection(("127.0.0.1", proxy.port), TIMEOUT_S)
        time.sleep(0.3)
    waiting.close()
    [facts] = proxy.sessions(1)
    assert (facts.client_decision, facts.server_error, facts.chain) == (None, None, [])
    assert facts.server_address == f"127.0.0.1:{port}"
    assert "the proxy stopped before any TLS handshake" in facts.notes


def test_the_recording_carries_the_ca_the_proxy_judged_with(tmp_path, dovecot, pki):
    with inprocess_proxy(tmp_path, imaps(dovecot), ca_file=[str(pki.root_ca)]) as proxy:
        strict_s_client(proxy.port, "imap.example.test", proxy.ca_file)
        only(proxy)
        recording = read_recording(proxy.record)
    root = x509.load_pem_x509_certificate(pki.root_ca.read_bytes()).public_bytes(Encoding.PEM)
    assert [pem.encode() for pem in recording.header.ca_certificates] == [root]
