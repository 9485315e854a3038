"""NNTP end to end: INN's nnrpd, real clients, mitmproxy with the capture and STARTTLS addons.

The server is a real nnrpd (Debian's inn2) on loopback, one pair of daemons
per certificate (nnrpd has no SNI). The clients are ``openssl s_client``
(``-starttls nntp`` and implicit TLS) and Python's nntplib (deprecated in
3.12, gone in 3.13). STARTTLS goes through a ``reverse:tcp://`` proxy,
NNTPS through ``reverse:tls://``; each test checks what the client got and
what certmatch recorded and concludes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from proxy_fixtures import RunningProxy, inprocess_proxy
from scenarios import SERVICE_NAMES, ScenarioPki, scenario
from servers import NnrpdServer
from servers.clients import TIMEOUT_S, s_client, verifying_context
from servers.process import require_binary

from certmatch.core.certificates import parse_chain
from certmatch.core.diagnosis import diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.starttls_findings import starttls_findings
from certmatch.core.trust import TrustStore
from certmatch.proxy.starttls_layer import StartTlsAddon

pytestmark = pytest.mark.timeout(60)

NEWS = SERVICE_NAMES["nntp"]  # news.example.test, in the default certificate
WRONG = scenario("wrong-host").server_name
# The scenario each case's server serves, the name its client asks for, the expected verdict.
CASES = [
    pytest.param("correct", NEWS, ("match", ()), id="correct"),
    pytest.param("wrong-host", WRONG, ("mismatch", "name-not-in-certificate"), id="wrong-host"),
]

NntpFactory = Callable[[str], NnrpdServer]
# What a reader sends once TLS is up; QUIT makes nnrpd end the session.
READER_COMMANDS = b"CAPABILITIES\r\nLIST\r\nQUIT\r\n"
# mitmproxy 12.3.1 half-closes nnrpd's TLS session when the client hangs up; nnrpd answers
# with a decode_error alert, and mitmproxy closes the server side but never the client side,
# so a session that carried no data after the handshake is written only at proxy shutdown.
# nnrpd answers a client's hang-up with a decode_error alert, after which
# mitmproxy 12.3.1 closes the server side but never reports the client as
# gone; the capture addon therefore writes the record when the server
# disconnects, not only when the client does.


def nntplib() -> ModuleType:
    """The stdlib nntplib, or a one-line failure where this Python no longer has it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "slated for removal in 3.13"
            import nntplib as module
    except ImportError:
        pytest.fail(
            "nntplib is missing from this Python (removed in 3.13); run the tests with the "
            "project's Python 3.12 venv (.venv/bin/pytest)",
            pytrace=False,
        )
    return module


def s_client_reading(
    port: int, *, servername: str, cafile: Path, starttls: str | None = None
) -> tuple[int | None, str]:
    """``openssl s_client`` sending READER_COMMANDS over TLS; (verify return code, all output)."""
    argv = [require_binary("openssl", "openssl"), "s_client", "-connect", f"127.0.0.1:{port}"]
    argv += ["-servername", servername, "-CAfile", str(cafile), "-ign_eof"]
    argv += ["-starttls", starttls] if starttls else []
    done = subprocess.run(
        argv, input=READER_COMMANDS, capture_output=True, check=False, timeout=TIMEOUT_S * 2
    )
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    code = re.search(r"Verify return code: (\d+)", output)
    return (int(code.group(1)) if code else None), output


def loopback_nntp(name: str, port: int) -> object:
    """nntplib.NNTP dialling 127.0.0.1:port; ``starttls()`` checks the certificate against ``name``."""

    class LoopbackNNTP(nntplib().NNTP):  # type: ignore[misc]
        def _create_socket(self, timeout: float) -> socket.socket:
            return socket.create_connection(("127.0.0.1", self.port), timeout)

    return LoopbackNNTP(name, port, timeout=TIMEOUT_S)


def loopback_nntp_ssl(name: str, port: int, context: ssl.SSLContext) -> object:
    """nntplib.NNTP_SSL dialling 127.0.0.1:port, with SNI and certificate check for ``name``."""

    class LoopbackNNTP_SSL(nntplib().NNTP_SSL):  # type: ignore[misc]
        def _create_socket(self, timeout: float) -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout)
            tls: ssl.SSLSocket = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            return tls

    return LoopbackNNTP_SSL(name, port, ssl_context=context, timeout=TIMEOUT_S)


@contextlib.contextmanager
def nntp_proxy(
    tmp: Path, mode: str, pki: ScenarioPki, **settings: object
) -> Iterator[RunningProxy]:
    """mitmproxy in a thread with the capture and STARTTLS addons, on a free port."""
    with inprocess_proxy(
        tmp, mode, extra_addons=(StartTlsAddon(),), ca_file=[str(pki.root_ca)], **settings
    ) as proxy:
        yield proxy


def starttls_mode(server: NnrpdServer) -> str:
    return f"reverse:tcp://127.0.0.1:{server.nntp_port}"


def implicit_mode(server: NnrpdServer) -> str:
    return f"reverse:tls://127.0.0.1:{server.nntps_port}"


def only_session(proxy: RunningProxy) -> SessionFacts:
    sessions = proxy.sessions(1)
    assert len(sessions) == 1, sessions
    session: SessionFacts = sessions[0]
    return session


def judged(session: SessionFacts, pki: ScenarioPki) -> tuple[str, tuple[str, ...]]:
    verdict = diagnose(session, TrustStore.load([pki.root_ca], use_system=False))
    return verdict.verdict, verdict.cause_ids


def assert_verdict(session: SessionFacts, pki: ScenarioPki, expected: tuple[str, object]) -> None:
    verdict, causes = judged(session, pki)
    if expected[1] == ():
        assert (verdict, causes) == expected
    else:  # the first cause is the one that explains the mismatch
        assert verdict == expected[0] and causes[:1] == (expected[1],), (verdict, causes)


def assert_recorded_chain_is_served(session: SessionFacts, server: NnrpdServer) -> None:
    """The proxy recorded exactly the chain nnrpd sends: the served leaf, then its issuers."""
    leaf = parse_chain(session.chain).leaf
    assert leaf is not None, "no parseable leaf recorded"
    assert leaf.public_bytes(Encoding.DER) == server.cert.leaf.public_bytes(Encoding.DER)
    assert len(session.chain) == len(server.cert.served_chain)


def assert_names(session: SessionFacts, protocol: str, tls_kind: str, name: str) -> None:
    assert (session.protocol, session.tls_kind, session.sni, session.upstream_sni) == (
        protocol,
        tls_kind,
        name,
        name,
    )
    assert session.action == "pass"


# -- STARTTLS (RFC 4642) -------------------------------------------------------------------


@pytest.mark.parametrize(("case", "name", "expected"), CASES)
def test_s_client_starttls_nntp(
    case: str,
    name: str,
    expected: tuple[str, object],
    tmp_path: Path,
    pki: ScenarioPki,
    nntp_factory: NntpFactory,
) -> None:
    server = nntp_factory(case)
    with nntp_proxy(tmp_path, starttls_mode(server), pki) as proxy:
        verify_code, output = s_client_reading(
            proxy.port, servername=name, cafile=proxy.ca_file, starttls="nntp"
        )
        session = only_session(proxy)
    # Pass mode: the client trusts the proxy's certificate for the name it asked for,
    # and nnrpd's answers to the reader's commands come back through the TLS session.
    assert verify_code == 0, output
    assert "101 Capability list" in output and f"\n{server.group} " in output, output
    assert "205 " in output, output
    assert_names(session, "nntp", "starttls", name)
    st = session.starttls
    assert st is not None
    assert (st.server_offered, st.client_requested) == (True, True)
    assert st.server_reply and st.server_reply.startswith("382")
    assert starttls_findings(session) == {}
    assert_recorded_chain_is_served(session, server)
    assert_verdict(session, pki, expected)


def test_s_client_hanging_up_after_starttls_is_recorded_by_shutdown(
    tmp_path: Path, pki: ScenarioPki, nntp_factory: NntpFactory
) -> None:
    """s_client sends no command after STARTTLS: the client closed without a word, which is
    how GnuTLS clients refuse a certificate, so certmatch cannot call the session a match."""
    server = nntp_factory("correct")
    with nntp_proxy(tmp_path, starttls_mode(server), pki) as proxy:
        seen = s_client(proxy.port, servername=NEWS, cafile=proxy.ca_file, starttls="nntp")
    session = only_session(proxy)
    assert seen.verify_code == 0, seen.output
    assert_names(session, "nntp", "starttls", NEWS)
    assert_recorded_chain_is_served(session, server)
    assert (session.presented, session.client_decision) == ("mirror", "closed-after-handshake")
    assert session.client_waited is not None and session.client_waited < TIMEOUT_S
    assert "client-refused-certificate" in judged(session, pki)[1]


def test_s_client_hanging_up_after_starttls_is_recorded_while_the_proxy_runs(
    tmp_path: Path, pki: ScenarioPki, nntp_factory: NntpFactory
) -> None:
    server = nntp_factory("correct")
    with nntp_proxy(tmp_path, starttls_mode(server), pki) as proxy:
        s_client(proxy.port, servername=NEWS, cafile=proxy.ca_file, starttls="nntp")
        sessions = proxy.sessions(1, timeout=1.0)
    assert len(sessions) == 1


def test_nntplib_starttls_lists_the_group_over_tls(
    tmp_path: Path, pki: ScenarioPki, nntp_factory: NntpFactory
) -> None:
    server = nntp_factory("correct")
    with nntp_proxy(tmp_path, starttls_mode(server), pki) as proxy:
        news = loopback_nntp(NEWS, proxy.port)
        offered = set(news.getcapabilities())  # type: ignore[attr-defined]
        news.starttls(verifying_context(proxy.ca_file))  # type: ignore[attr-defined]
        # nnrpd no longer offers STARTTLS: it knows this session is encrypted.
        after = set(news.getcapabilities())  # type: ignore[attr-defined]
        _, groups = news.list()  # type: ignore[attr-defined]
        news.quit()  # type: ignore[attr-defined]
        session = only_session(proxy)
    assert "STARTTLS" in offered and "STARTTLS" not in after and "READER" in after
    assert [g.group for g in groups] == [server.group]
    assert_names(session, "nntp", "starttls", NEWS)
    assert_recorded_chain_is_served(session, server)
    assert judged(session, pki) == ("match", ())


# -- NNTPS, implicit TLS (RFC 8143) --------------------------------------------------------


@pytest.mark.parametrize(("case", "name", "expected"), CASES)
def test_s_client_nntps(
    case: str,
    name: str,
    expected: tuple[str, object],
    tmp_path: Path,
    pki: ScenarioPki,
    nntp_factory: NntpFactory,
) -> None:
    server = nntp_factory(case)
    with nntp_proxy(tmp_path, implicit_mode(server), pki) as proxy:
        verify_code, output = s_client_reading(proxy.port, servername=name, cafile=proxy.ca_file)
        session = only_session(proxy)
    assert verify_code == 0, output
    assert session.client_decision == "went-on"
    assert_names(session, "nntp", "implicit", name)  # "nntp" from nnrpd's greeting
    assert session.starttls is None
    assert_recorded_chain_is_served(session, server)
    assert_verdict(session, pki, expected)


def test_nntplib_nntps_reads_greeting_capabilities_and_group(
    tmp_path: Path, pki: ScenarioPki, nntp_factory: NntpFactory
) -> None:
    server = nntp_factory("correct")
    with nntp_proxy(tmp_path, implicit_mode(server), pki) as proxy:
        news = loopback_nntp_ssl(NEWS, proxy.port, verifying_context(proxy.ca_file))
        welcome = news.getwelcome()  # type: ignore[attr-defined]
        capabilities = news.getcapabilities()  # type: ignore[attr-defined]
        _, count, first, last, group = news.group(server.group)  # type: ignore[attr-defined]
        news.quit()  # type: ignore[attr-defined]
        session = only_session(proxy)
    assert welcome.startswith(f"201 {server.path_host} InterNetNews")
    assert "READER" in capabilities and "STARTTLS" not in capabilities
    assert (group, count, first, last) == (server.group, 0, 1, 0)  # empty: high 0, low 1
    assert_names(session, "nntp", "implicit", NEWS)
    assert_recorded_chain_is_served(session, server)
    assert judged(session, pki) == ("match", ())


def test_a_session_nnrpd_ends_after_a_failed_authinfo_outlives_the_timeout_without_a_crash(
    tmp_path: Path, pki: ScenarioPki, nntp_factory: NntpFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9: after nnrpd ended a session that had failed AUTHINFO, the layer's plaintext
    timers fired into the TLS layers ("mitmproxy has crashed! ... got Wakeup"). Here nnrpd
    refuses the login and ends the session while the client keeps its socket open, past
    the 1 s STARTTLS timeout."""
    caplog.set_level(logging.INFO)
    server = nntp_factory("correct")
    with (
        nntp_proxy(tmp_path, starttls_mode(server), pki, starttls_timeout=1) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), TIMEOUT_S) as raw,
    ):
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"20")  # the greeting
        raw.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"382")
        tls = verifying_context(proxy.ca_file).wrap_socket(raw, server_hostname=NEWS)
        lines = tls.makefile("rb")
        tls.sendall(b"AUTHINFO USER nobody\r\n")
        assert lines.readline().startswith(b"381")
        tls.sendall(b"AUTHINFO PASS wrong\r\n")
        assert lines.readline().startswith(b"481")  # Authentication failed
        tls.sendall(b"QUIT\r\n")
        assert lines.readline().startswith(b"205")
        assert lines.read() == b""  # nnrpd ended the session
        time.sleep(2.5)  # the client stays connected past every timer of the layer
        sessions = proxy.sessions(1)
    assert "has crashed" not in caplog.text and "Unexpected event" not in caplog.text, caplog.text
    [session] = sessions
    assert_names(session, "nntp", "starttls", NEWS)
    assert session.starttls is not None and session.starttls.plaintext_auth is None
    assert judged(session, pki) == ("match", ())
