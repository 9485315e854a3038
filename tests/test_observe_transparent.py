"""Transparent mode end to end: the client dials the real server, the kernel redirects it.

A NAT ``REDIRECT`` rule (iptables) sends the client's connection to the proxy's port; the
proxy learns the original destination from the kernel (``SO_ORIGINAL_DST``) and connects
there itself. The client is configured with nothing but the server: no proxy, no port of
certmatch's. The rule matches only the client's group (:class:`ClientRedirect`), so the
proxy's own connection to the server is not redirected back to itself.

Real servers (dovecot, aiosmtpd) and real clients (openssl s_client, gnutls-cli, curl,
Python's ssl) that verify against the servers' own CA with host-name checks, in both observe
mode and the default intercepting mode (mirror). In every case the client's result and
certmatch's verdict (``certmatch check --json`` on the recording) agree. Last, the pitfall: a
rule that also matches the proxy's own connections, and the guard that ends the loop.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_fixtures import RunningProxy, free_port, inprocess_proxy, mitmdump_process, venv_bin
from servers.clients import TIMEOUT_S

from certmatch.core.facts import SessionFacts
from certmatch.lab.redirect import ClientRedirect, RedirectError, redirect_rule, stale_rules
from certmatch.proxy.observe import ObserveAddon
from certmatch.proxy.redirect_loop import RedirectLoopGuard, local_end
from certmatch.proxy.starttls_layer import StartTlsAddon

pytestmark = pytest.mark.timeout(120)

GOOD = "imap.example.test"
WRONG = "wrong.example.test"
SMTP_GOOD = "smtp.example.test"
LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def redirected(server_port: int, proxy_port: int) -> Iterator[list[str]]:
    """The command prefix of a client whose connections to ``127.0.0.1:server_port`` the
    kernel redirects to ``proxy_port``; a clear failure when the redirect cannot be made."""
    try:
        redirect = ClientRedirect(LOOPBACK, server_port, proxy_port)
        redirect.__enter__()
    except RedirectError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield redirect.prefix
    finally:
        redirect.__exit__(None, None, None)


@contextlib.contextmanager
def transparent(
    tmp: Path, server_port: int, pki, *, observe: bool, **options: object
) -> Iterator[tuple[RunningProxy, list[str]]]:
    """A transparent proxy (observe or intercepting) and the command prefix of a client whose
    connections to ``127.0.0.1:server_port`` the kernel redirects to it."""
    addon = ObserveAddon() if observe else None
    with (
        inprocess_proxy(
            tmp,
            "transparent",
            addon=addon,  # type: ignore[arg-type]
            extra_addons=(StartTlsAddon(), RedirectLoopGuard()),
            ca_file=[str(pki.root_ca)],
            **options,
        ) as proxy,
        redirected(server_port, proxy.port) as prefix,
    ):
        yield proxy, prefix


def s_client(
    prefix: list[str],
    port: int,
    name: str | None,
    cafile: Path,
    version: str,
    payload: bytes,
    *,
    starttls: str | None = None,
) -> tuple[bool, str]:
    """openssl s_client dialling the server itself, verifying ``name`` against ``cafile``
    only; ``name`` None sends no SNI and verifies ``GOOD``. Whether it accepted the
    certificate and the server's answer to ``payload`` came back (its exit status says
    little here: mitmproxy closes an intercepted session without a close_notify)."""
    argv = [*prefix, "openssl", "s_client", "-connect", f"{LOOPBACK}:{port}"]
    argv += ["-noservername"] if name is None else ["-servername", name]
    argv += ["-verify_return_error", "-verify_hostname", name or GOOD, "-CAfile", str(cafile)]
    argv += [f"-{version}", "-quiet"]
    if starttls:
        argv += ["-starttls", starttls]
    done = subprocess.run(
        argv, check=False, input=payload, capture_output=True, timeout=TIMEOUT_S * 3
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    answered = any(reply in b"\n" + done.stdout for reply in (b"\na OK", b"\n221 "))
    return answered and "verify error" not in output, output


def check_json(record: Path, pki) -> list[dict]:
    """``certmatch check --json`` on the recording, trusting the servers' CA."""
    done = subprocess.run(
        [venv_bin("certmatch"), "check", "--json", "--ca-file", str(pki.root_ca), str(record)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)["sessions"]


def only_session(proxy: RunningProxy) -> SessionFacts:
    sessions = proxy.sessions(1, timeout=15)
    assert len(sessions) == 1, sessions
    return sessions[0]


def assert_through_proxy(session: SessionFacts, server_port: int) -> None:
    """The session went through the transparent proxy to the original destination."""
    assert session.proxy_mode == "transparent"
    assert session.server_address == f"{LOOPBACK}:{server_port}"


# -- observe mode: implicit TLS ---------------------------------------------------------


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
@pytest.mark.parametrize("name", [GOOD, WRONG])
def test_observe_implicit_tls_client_and_certmatch_agree(
    tmp_path: Path, dovecot, pki, name: str, version: str
) -> None:
    port = dovecot.imaps_port
    with transparent(tmp_path, port, pki, observe=True) as (proxy, prefix):
        accepted, output = s_client(prefix, port, name, pki.root_ca, version, b"a LOGOUT\r\n")
        session = only_session(proxy)
    assert_through_proxy(session, port)
    assert session.presented == "real"
    assert session.tls_version == ("TLSv1.2" if version == "tls1_2" else "TLSv1.3")
    assert session.chain_source == ("wire" if version == "tls1_2" else "side-handshake")
    assert session.sni == name and session.upstream_sni == name
    assert (session.requested_host, session.requested_host_source) == (name, "sni")
    [judged] = check_json(proxy.record, pki)
    if name == GOOD:
        assert accepted, output
        assert "* BYE" in output  # the server's reply came back through the relay
        assert session.client_decision == "went-on"
        assert judged["verdict"] == "match" and not judged["failed"], judged["causes"]
    else:
        assert not accepted, output
        assert "hostname mismatch" in output
        assert session.client_decision == "alert" and session.client_alert == "bad_certificate"
        assert judged["verdict"] == "mismatch" and judged["failed"]
        assert "client-refused-certificate" in judged["causes"]
        assert "proxy-ca-not-trusted" not in judged["causes"]


def test_observe_client_without_sni_is_judged_against_the_original_destination(
    tmp_path: Path, dovecot, pki
) -> None:
    """No SNI: all transparent mode knows is the address the client dialled. certmatch says
    so (requested-host-assumed) instead of passing a match it cannot vouch for."""
    port = dovecot.imaps_port
    with transparent(tmp_path, port, pki, observe=True) as (proxy, prefix):
        accepted, output = s_client(prefix, port, None, pki.root_ca, "tls1_2", b"a LOGOUT\r\n")
        session = only_session(proxy)
    assert accepted, output  # the default certificate names imap.example.test
    assert session.sni is None and session.upstream_sni is None
    assert (session.requested_host, session.requested_host_source) == (LOOPBACK, "unknown")
    assert session.client_decision == "went-on" and session.chain_source == "wire"
    [judged] = check_json(proxy.record, pki)
    assert judged["failed"] and "requested-host-assumed" in judged["causes"], judged["causes"]
    assert "client-refused-certificate" not in judged["causes"]
    [assumed] = [f for f in judged["findings"] if f["id"] == "requested-host-assumed"]
    assert "127.0.0.1 (source unknown), a name it assumed" in assumed["explanation"]
    assert "This client went on" in assumed["explanation"]
    assert "--host" in assumed["fix"]


def test_observe_without_sni_with_host_option_matches(tmp_path: Path, dovecot, pki) -> None:
    """``--host`` names what the client was configured with: then the verdict is the client's."""
    port = dovecot.imaps_port
    with transparent(tmp_path, port, pki, observe=True, host=GOOD) as (proxy, prefix):
        accepted, output = s_client(prefix, port, None, pki.root_ca, "tls1_3", b"a LOGOUT\r\n")
        session = only_session(proxy)
    assert accepted, output
    assert (session.requested_host, session.requested_host_source) == (GOOD, "option")
    assert session.chain_source == "side-handshake" and session.chain
    [judged] = check_json(proxy.record, pki)
    assert judged["verdict"] == "match" and not judged["failed"], judged["causes"]


# -- observe mode: STARTTLS ---------------------------------------------------------------


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
@pytest.mark.parametrize("good", [True, False], ids=["good-name", "wrong-name"])
@pytest.mark.parametrize("protocol", ["smtp", "imap"])
def test_observe_starttls_client_and_certmatch_agree(
    tmp_path: Path, dovecot, smtp_server, pki, protocol: str, good: bool, version: str
) -> None:
    port = smtp_server.submission_port if protocol == "smtp" else dovecot.imap_port
    name = (SMTP_GOOD if protocol == "smtp" else GOOD) if good else WRONG
    payload = b"QUIT\r\n" if protocol == "smtp" else b"a LOGOUT\r\n"
    with transparent(tmp_path, port, pki, observe=True) as (proxy, prefix):
        accepted, output = s_client(
            prefix, port, name, pki.root_ca, version, payload, starttls=protocol
        )
        session = only_session(proxy)
    assert_through_proxy(session, port)
    assert session.tls_kind == "starttls" and session.protocol in (protocol, "submission")
    assert session.starttls is not None and session.starttls.client_requested
    assert session.chain_source == ("wire" if version == "tls1_2" else "side-handshake")
    assert (session.requested_host, session.requested_host_source) == (name, "sni")
    [judged] = check_json(proxy.record, pki)
    if good:
        assert accepted, output
        assert session.client_decision == "went-on"
        assert judged["verdict"] == "match" and not judged["failed"], judged["causes"]
    else:
        assert not accepted and "hostname mismatch" in output, output
        assert session.client_decision == "alert"
        assert judged["verdict"] == "mismatch" and "client-refused-certificate" in judged["causes"]


# -- a whole session, bytes unchanged -------------------------------------------------------

PYTHON_IMAPS = """
import imaplib, socket, ssl, sys
name, port, cafile, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
class Client(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
try:
    client = Client(name, port, ssl_context=context, timeout=10)
except ssl.SSLCertVerificationError as exc:
    print("refused:", exc.verify_message)
    sys.exit(3)
client.login("test", "secret")
client.select("INBOX")
_, data = client.fetch("1", "(RFC822)")
client.logout()
sys.stdout.buffer.write(data[0][1])
"""


def python_imaps(
    prefix: list[str], port: int, name: str, cafile: Path, version: str
) -> subprocess.CompletedProcess[bytes]:
    """Python's ssl and imaplib: log in and fetch the one message, verifying ``name``."""
    argv = [*prefix, sys.executable, "-c", PYTHON_IMAPS, name, str(port), str(cafile), version]
    return subprocess.run(argv, check=False, capture_output=True, timeout=TIMEOUT_S * 4)


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
@pytest.mark.parametrize("observe", [True, False], ids=["observe", "mirror"])
def test_python_session_reads_mail_unchanged(
    tmp_path: Path, dovecot, pki, observe: bool, version: str
) -> None:
    """Login and fetch through the redirect: the message arrives byte for byte."""
    port = dovecot.imaps_port
    with transparent(tmp_path, port, pki, observe=observe) as (proxy, prefix):
        cafile = pki.root_ca if observe else trusting_both(tmp_path, pki, proxy)
        done = python_imaps(prefix, port, GOOD, cafile, version)
        session = only_session(proxy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == dovecot.known_message
    assert_through_proxy(session, port)
    assert session.presented == ("real" if observe else "mirror")
    assert session.client_decision == "went-on"
    # Observed: the client's own handshake. Intercepted: the proxy's with the server.
    assert session.tls_version == (version.replace("_", ".") if observe else "TLSv1.3")
    [judged] = check_json(proxy.record, pki)
    assert judged["verdict"] == "match" and not judged["failed"], judged["causes"]


def trusting_both(tmp: Path, pki, proxy: RunningProxy) -> Path:
    """A CA file with the proxy's CA (what an intercepted client trusts) and the servers'."""
    both = tmp / "both-cas.pem"
    both.write_bytes(proxy.ca_file.read_bytes() + pki.root_ca.read_bytes())
    return both


# -- intercepting mode (mirror): the client trusts the proxy's CA --------------------------


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
@pytest.mark.parametrize("name", [GOOD, WRONG])
def test_mirror_implicit_tls_client_and_certmatch_agree(
    tmp_path: Path, dovecot, pki, name: str, version: str
) -> None:
    port = dovecot.imaps_port
    with transparent(tmp_path, port, pki, observe=False) as (proxy, prefix):
        accepted, output = s_client(prefix, port, name, proxy.ca_file, version, b"a LOGOUT\r\n")
        session = only_session(proxy)
    assert_through_proxy(session, port)
    assert session.presented == "mirror"
    assert session.sni == name and session.upstream_sni == name
    assert (session.requested_host, session.requested_host_source) == (name, "sni")
    [judged] = check_json(proxy.record, pki)
    assert "proxy-ca-not-trusted" not in judged["causes"]
    if name == GOOD:
        assert accepted, output
        assert session.client_decision == "went-on"
        assert judged["verdict"] == "match" and not judged["failed"], judged["causes"]
    else:
        assert not accepted and "hostname mismatch" in output, output
        assert session.client_decision == "alert"
        assert judged["verdict"] == "mismatch" and "client-refused-certificate" in judged["causes"]


@pytest.mark.parametrize("good", [True, False], ids=["good-name", "wrong-name"])
def test_mirror_starttls_smtp(tmp_path: Path, smtp_server, pki, good: bool) -> None:
    port = smtp_server.submission_port
    name = SMTP_GOOD if good else WRONG
    with transparent(tmp_path, port, pki, observe=False) as (proxy, prefix):
        accepted, output = s_client(
            prefix, port, name, proxy.ca_file, "tls1_3", b"QUIT\r\n", starttls="smtp"
        )
        session = only_session(proxy)
    assert_through_proxy(session, port)
    assert session.tls_kind == "starttls" and session.presented == "mirror"
    [judged] = check_json(proxy.record, pki)
    assert accepted is good, output
    assert judged["failed"] is not good, judged["causes"]
    if not good:
        assert "client-refused-certificate" in judged["causes"]


def test_mirror_client_without_sni_is_judged_against_the_original_destination(
    tmp_path: Path, dovecot, pki
) -> None:
    port = dovecot.imaps_port
    with transparent(tmp_path, port, pki, observe=False) as (proxy, prefix):
        accepted, output = s_client(prefix, port, None, proxy.ca_file, "tls1_2", b"a LOGOUT\r\n")
        session = only_session(proxy)
    assert accepted, output  # the copy of the default certificate names imap.example.test
    assert session.sni is None
    assert (session.requested_host, session.requested_host_source) == (LOOPBACK, "unknown")
    [judged] = check_json(proxy.record, pki)
    assert judged["failed"] and "requested-host-assumed" in judged["causes"], judged["causes"]


# -- curl -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [GOOD, WRONG])
def test_observe_curl_imaps(tmp_path: Path, dovecot, pki, name: str) -> None:
    port = dovecot.imaps_port
    with transparent(tmp_path, port, pki, observe=True) as (proxy, prefix):
        argv = [*prefix, "curl", "--silent", "--show-error", "--max-time", "10"]
        argv += ["--cacert", str(pki.root_ca), "--user", "test:secret"]
        argv += ["--connect-to", f"{name}:993:{LOOPBACK}:{port}", f"imaps://{name}:993/"]
        done = subprocess.run(argv, check=False, capture_output=True, timeout=TIMEOUT_S * 4)
        session = only_session(proxy)
    assert_through_proxy(session, port)
    [judged] = check_json(proxy.record, pki)
    if name == GOOD:
        assert done.returncode == 0 and b"INBOX" in done.stdout, done.stderr
        assert session.client_decision == "went-on"
        assert judged["verdict"] == "match", judged["causes"]
    else:
        assert done.returncode != 0 and b"certificate" in done.stderr, done.stderr
        assert session.client_decision in ("alert", "closed-after-handshake")
        assert judged["verdict"] == "mismatch" and "client-refused-certificate" in judged["causes"]


# -- the redirect rules themselves ----------------------------------------------------------


@pytest.mark.pure
def test_redirect_rule_matches_only_the_clients_group_and_one_destination() -> None:
    rule = redirect_rule("127.0.0.1", 993, 61234, 8080)
    text = " ".join(rule)
    assert text.startswith("OUTPUT -p tcp -d 127.0.0.1 --dport 993 -m owner --gid-owner 61234 ")
    assert text.endswith("-j REDIRECT --to-ports 8080")


@pytest.mark.pure
def test_rules_left_by_a_dead_process_are_found_and_only_those() -> None:
    listing = (
        "-P OUTPUT ACCEPT\n"
        "-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 993 -m owner --gid-owner 61001 -m comment"
        ' --comment "certmatch-redirect pid=41" -j REDIRECT --to-ports 8080\n'
        "-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 995 -m owner --gid-owner 61002 -m comment"
        ' --comment "certmatch-redirect pid=42" -j REDIRECT --to-ports 8081\n'
        "-A OUTPUT -p tcp -m tcp --dport 25 -j REDIRECT --to-ports 2525\n"
    )
    [stale] = stale_rules(listing, alive=[42])
    assert stale[:2] == ["-D", "OUTPUT"] and "993" in stale and "8080" in stale
    assert "certmatch-redirect pid=41" in stale  # the comment is one argument again


# -- the command a user types ----------------------------------------------------------------


@pytest.mark.parametrize("observe", [True, False], ids=["observe", "mirror"])
def test_certmatch_proxy_transparent_command(tmp_path: Path, dovecot, pki, observe: bool) -> None:
    """``certmatch proxy --mode transparent`` as a process; ``check`` agrees with the client."""
    port = free_port()
    record = tmp_path / "transparent.jsonl"
    argv = [venv_bin("certmatch"), "proxy", "--mode", "transparent", "--listen-port", str(port)]
    argv += ["--record", str(record), "--ca-file", str(pki.root_ca)]
    argv += ["--confdir", str(tmp_path / "conf"), *(["--observe"] if observe else [])]
    server = dovecot.imaps_port
    with mitmdump_process(tmp_path, argv, port=port), redirected(server, port) as prefix:
        cafile = pki.root_ca if observe else tmp_path / "conf" / "mitmproxy-ca-cert.pem"
        good = s_client(prefix, server, GOOD, cafile, "tls1_3", b"a LOGOUT\r\n")
        wrong = s_client(prefix, server, WRONG, cafile, "tls1_2", b"a LOGOUT\r\n")
        sessions = RunningProxy(port, record, tmp_path / "conf").sessions(2, timeout=15)
    assert good[0], good[1]
    assert not wrong[0] and "hostname mismatch" in wrong[1], wrong[1]
    assert [s.sni for s in sessions] == [GOOD, WRONG]
    for session in sessions:
        assert_through_proxy(session, server)
        assert session.presented == ("real" if observe else "mirror")
    if observe:
        assert [s.chain_source for s in sessions] == ["side-handshake", "wire"]
    by_sni = {s["sni"]: s for s in check_json(record, pki)}
    assert by_sni[GOOD]["verdict"] == "match" and not by_sni[GOOD]["failed"]
    assert by_sni[WRONG]["verdict"] == "mismatch"
    assert "client-refused-certificate" in by_sni[WRONG]["causes"]
    assert "Traceback" not in (tmp_path / "proxy.log").read_text()


@pytest.mark.parametrize("observe", [True, False], ids=["observe", "mirror"])
def test_a_rule_that_also_redirects_the_proxy_is_refused_not_looped(
    tmp_path: Path, dovecot, pki, observe: bool
) -> None:
    """The pitfall: the rule matches the proxy's own connection to the server too (here the
    proxy runs in the client's group). Without the guard each hop connects to the proxy
    again, thousands a second; with it the second hop is refused and says why."""
    port = free_port()
    record = tmp_path / "loop.jsonl"
    argv = [venv_bin("certmatch"), "proxy", "--mode", "transparent", "--listen-port", str(port)]
    argv += ["--record", str(record), "--confdir", str(tmp_path / "conf")]
    argv += ["--observe"] if observe else []
    server = dovecot.imaps_port
    with (
        redirected(server, port) as prefix,
        mitmdump_process(tmp_path, argv, prefix=prefix, port=port),
    ):
        accepted, output = s_client(prefix, server, GOOD, pki.root_ca, "tls1_2", b"a LOGOUT\r\n")
        sessions = RunningProxy(port, record, tmp_path / "conf").sessions(2, timeout=15)
        time.sleep(0.5)  # a loop would go on meanwhile
    assert not accepted, output
    log = (tmp_path / "proxy.log").read_text()
    assert "redirect loop" in log and "--gid-owner" in log, log[-2000:]
    assert log.count("client connect") <= 3, log[-2000:]
    assert any("redirect loop" in (s.server_error or "") for s in sessions), sessions
    assert "Traceback" not in log


@pytest.mark.pure
@pytest.mark.parametrize(
    ("column", "address"),
    [
        ("0100007F:1F90", ("127.0.0.1", 8080)),
        ("0000000000000000FFFF00000100007F:03E1", ("127.0.0.1", 993)),  # IPv4-mapped
        ("00000000000000000000000001000000:0019", ("::1", 25)),
    ],
)
def test_proc_net_tcp_addresses_are_read_in_host_byte_order(column: str, address) -> None:
    import ipaddress

    assert local_end(column) == (ipaddress.ip_address(address[0]), address[1])


# -- a client that refuses with an encrypted alert ----------------------------------------------


@pytest.mark.parametrize("name", [GOOD, WRONG])
def test_observe_gnutls_tls13_decision_read_from_encrypted_records(
    tmp_path: Path, dovecot, pki, name: str
) -> None:
    """gnutls-cli refuses in TLS 1.3 with an encrypted alert instead of its Finished: certmatch
    reads the refusal from the record's length alone, through the redirect too."""
    port = dovecot.imaps_port
    with transparent(tmp_path, port, pki, observe=True) as (proxy, prefix):
        argv = [*prefix, "gnutls-cli", "--crlf", "--x509cafile", str(pki.root_ca)]
        argv += ["--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3", "-p", str(port)]
        argv += [f"--sni-hostname={name}", f"--verify-hostname={name}", LOOPBACK]
        done = subprocess.run(
            argv, input=b"a LOGOUT\n", check=False, capture_output=True, timeout=TIMEOUT_S * 4
        )
        session = only_session(proxy)
    assert_through_proxy(session, port)
    assert session.tls_version == "TLSv1.3" and session.chain_source == "side-handshake"
    [judged] = check_json(proxy.record, pki)
    if name == GOOD:
        assert done.returncode == 0 and b"a OK" in done.stdout, done.stderr
        assert session.client_decision == "went-on"
        assert judged["verdict"] == "match", judged["causes"]
    else:
        assert done.returncode != 0 and b"does not match" in done.stdout + done.stderr
        assert session.client_decision == "alert" and session.client_alert is None  # encrypted
        assert judged["verdict"] == "mismatch" and "client-refused-certificate" in judged["causes"]
