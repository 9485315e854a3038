"""``certmatch proxy --tui`` as a person runs it: in a real terminal (tmux), live sessions appear.

The proxy runs in front of the real dovecot; a real client (openssl s_client)
connects through it; the TUI, following the recording, shows the session; ``q``
quits and leaves no process behind.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from proxy_fixtures import free_port, venv_bin, wait_for_port
from servers.clients import s_client
from servers.process import MissingSystemPackage, require_binary

pytestmark = pytest.mark.timeout(90)


def _screen(tmux: str, session: str) -> str:
    return subprocess.run(
        [tmux, "capture-pane", "-t", session, "-p"], capture_output=True, text=True, check=False
    ).stdout


def _wait_for_screen(tmux: str, session: str, needle: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _screen(tmux, session)
        if needle in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared on screen:\n{screen}")


def test_proxy_tui_shows_live_sessions_and_quits_cleanly(tmp_path, dovecot, pki):
    try:
        tmux = require_binary("tmux", "tmux")
    except MissingSystemPackage as err:
        pytest.fail(str(err), pytrace=False)
    port = free_port()
    record = tmp_path / "live.jsonl"
    conf = tmp_path / "conf"
    session = f"certmatch-{uuid.uuid4().hex[:8]}"
    command = " ".join(
        [
            venv_bin("certmatch"),
            "proxy",
            "--tui",
            "--mode",
            f"reverse:tls://127.0.0.1:{dovecot.imaps_port}",
            "--listen-port",
            str(port),
            "--record",
            str(record),
            "--confdir",
            str(conf),
            "--ca-file",
            str(pki.root_ca),
        ]
    )
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", command], check=True
    )
    try:
        wait_for_port(port)
        _wait_for_screen(tmux, session, "following")
        s_client(port, servername="wrong.example.test", cafile=conf / "mitmproxy-ca-cert.pem")
        screen = _wait_for_screen(tmux, session, "wrong.example.test")
        assert "mismatch" in screen and "name-not-in-certificate" in screen
        s_client(port, servername="imap.example.test", cafile=conf / "mitmproxy-ca-cert.pem")
        screen = _wait_for_screen(tmux, session, "imap.example.test")  # --tui shows all sessions
        assert "✓ match" in screen
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            alive = subprocess.run(
                [tmux, "has-session", "-t", session], capture_output=True, check=False
            )
            if alive.returncode != 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the TUI did not quit on q:\n{_screen(tmux, session)}")
        leftover = subprocess.run(
            ["pgrep", "-f", f"--record {record}"], capture_output=True, text=True, check=False
        )
        assert leftover.stdout.strip() == "", "the proxy child process was left running"
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True, check=False)
    log = (tmp_path / "live.jsonl.proxy.log").read_text()
    assert "recording TLS sessions to" in log
