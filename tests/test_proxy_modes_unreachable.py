"""``certmatch proxy --mode reverse:tls://`` to a server that cannot be reached: the record
says what the client asked for (its SNI), not what the proxy was configured with.

The proxy used to dial the server as soon as the client connected (mitmproxy's eager
connect) and close the client when that failed, before its ClientHello was read: the trial
(notes/trial-N.md, item 13) found ``SNI: (none sent)`` and ``asked 127.0.0.1 (the
reverse-proxy target)`` for an ``openssl s_client -servername imap.example.test``. These run
the real ``certmatch proxy`` command (its addons load as scripts, whose hooks run before
mitmproxy's own tlsconfig) and a real openssl client.
"""

from __future__ import annotations

import base64
import socket
import time

import pytest
from cryptography import x509
from proxy_fixtures import free_port, mitmdump_process, s_client_speaking, venv_bin

from certmatch.core.judge import Judge
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore

pytestmark = pytest.mark.timeout(90)

ASKED = "imap.example.test"


def _dead_port() -> int:
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        return dead.getsockname()[1]  # nothing listens there once closed


def _proxy_argv(tmp_path, listen: int, mode: str, *extra: str) -> list[str]:
    return [
        venv_bin("certmatch"),
        "proxy",
        "--mode",
        mode,
        "--listen-port",
        str(listen),
        "--record",
        str(tmp_path / "rec.jsonl"),
        "--confdir",
        str(tmp_path / "conf"),
        "--no-dns",
        *extra,
    ]


def _sessions(tmp_path, expected: int, timeout: float = 10.0):
    record = tmp_path / "rec.jsonl"
    deadline = time.monotonic() + timeout
    while True:
        # The addon creates the file before its header is written: empty is "not yet".
        started = record.exists() and record.stat().st_size > 0
        sessions = read_recording(record).sessions if started else []
        if len(sessions) >= expected or time.monotonic() > deadline:
            return sessions
        time.sleep(0.05)


@pytest.mark.parametrize("present", ["mirror", "substitute"])
def test_an_unreachable_server_keeps_the_clients_sni(tmp_path, present) -> None:
    listen, dead = free_port(), _dead_port()
    mode = f"reverse:tls://127.0.0.1:{dead}"
    argv = _proxy_argv(tmp_path, listen, mode, "--present", present)
    with mitmdump_process(tmp_path, argv, port=listen):
        s_client_speaking(listen, servername=ASKED)
        sessions = _sessions(tmp_path, 1)
    assert len(sessions) == 1, (tmp_path / "proxy.log").read_text(errors="replace")
    [session] = sessions
    assert (session.sni, session.requested_host, session.requested_host_source) == (
        ASKED,
        ASKED,
        "sni",
    )
    assert "TLSv1.2" in session.client_tls_versions  # read from the client's ClientHello
    assert session.server_address == f"127.0.0.1:{dead}"
    assert (session.server_error or "").startswith("cannot connect")
    assert session.action == "block"  # nothing to show the client: refused, not relayed
    diagnosis = Judge(TrustStore.load([], use_system=False)).diagnose(session)
    assert diagnosis.verdict == "error"
    assert diagnosis.primary is not None and diagnosis.primary.id == "upstream-unreachable"


def test_a_client_that_sends_nothing_is_not_blamed_on_the_server(tmp_path) -> None:
    """No ClientHello, so no dial: the record names the configured server and says the
    client left without a word (it used to say the server could not be reached, which the
    client never found out)."""
    listen, dead = free_port(), _dead_port()
    mode = f"reverse:tls://127.0.0.1:{dead}"
    with mitmdump_process(tmp_path, _proxy_argv(tmp_path, listen, mode), port=listen):
        socket.create_connection(("127.0.0.1", listen), timeout=5).close()
        sessions = _sessions(tmp_path, 1)
    [session] = sessions
    assert session.server_address == f"127.0.0.1:{dead}"
    assert session.sni is None and session.requested_host_source == "reverse-target"
    assert session.server_error is None
    assert session.client_decision == "closed-before-handshake"


def test_a_reachable_server_is_still_asked_before_the_client_is_answered(
    tmp_path, dovecot, pki
) -> None:
    """The dial after the ClientHello changes nothing for a server that answers: the proxy
    still reads the server's certificate first and shows the client its mirror."""
    listen = free_port()
    mode = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    argv = _proxy_argv(tmp_path, listen, mode, "--ca-file", str(pki.root_ca))
    with mitmdump_process(tmp_path, argv, port=listen):
        shown = s_client_speaking(listen, servername=ASKED)
        [session] = _sessions(tmp_path, 1)
    assert session.sni == ASKED and session.upstream_sni == ASKED
    assert session.chain and session.presented == "mirror"
    server_leaf = x509.load_der_x509_certificate(base64.b64decode(session.chain[0]))
    assert shown.chain and shown.chain[0].subject == server_leaf.subject  # the mirror's
    assert session.client_decision == "went-on"
