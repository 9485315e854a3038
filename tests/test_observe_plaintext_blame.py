"""Observe mode blames the side the STARTTLS layer blames: a client that hangs up while the
server's greeting is due is the client's doing (``client_error``), as the capture addon
records it, not a server fault (it was put in ``server_error``, so the server was told to look
in its log)."""

from __future__ import annotations

import socket
import time

from proxy_fixtures import inprocess_proxy
from test_server_faults import all_sessions, checked, fake_server, until_eof

from certmatch.proxy.capture import CertmatchCapture
from certmatch.proxy.observe import ObserveAddon
from certmatch.proxy.starttls_layer import StartTlsAddon


def _client_hangs_up_before_the_greeting(tmp_path, pki, addon):
    with (
        fake_server(until_eof) as port,  # a server that has not greeted yet
        inprocess_proxy(
            tmp_path,
            f"reverse:tcp://127.0.0.1:{port}",
            addon=addon,
            extra_addons=(StartTlsAddon(),),
            ca_file=[str(pki.root_ca)],
            starttls="smtp",
        ) as p,
    ):
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
            sock.sendall(b"EHLO early.example.test\r\n")  # it spoke, then gave up waiting
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while not (p.record.exists() and len(p.record.read_text().splitlines()) > 1):
            assert time.monotonic() < deadline, "no record"
            time.sleep(0.05)
    [session] = all_sessions(p.record)
    return session, checked(p.record)


def test_observe_blames_the_client_as_capture_does(tmp_path, pki) -> None:
    captured, captured_causes = _client_hangs_up_before_the_greeting(
        tmp_path / "capture", pki, CertmatchCapture()
    )
    observed, observed_causes = _client_hangs_up_before_the_greeting(
        tmp_path / "observe", pki, ObserveAddon()
    )
    assert captured.client_error == "the client closed the connection while the greeting was due"
    assert captured.server_error is None
    assert (observed.client_error, observed.server_error) == (captured.client_error, None)
    assert observed_causes == captured_causes
