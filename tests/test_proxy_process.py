"""``certmatch proxy`` as a process: what it says it binds, the files it creates, and how it
stops on a signal with ``--tui`` in a real terminal (tmux).

Not pure: these run the proxy and wait for it.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from proxy_fixtures import free_port, mitmdump_process, venv_bin
from servers.process import MissingSystemPackage, require_binary

pytestmark = pytest.mark.timeout(90)

UNUSED_UPSTREAM = "reverse:tls://127.0.0.1:1"  # the proxy listens whether or not it is up


def _wait_until(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent to collect it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _banner(log: Path) -> list[str]:
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("certmatch") and ("listening on" in line or "WARNING" in line)
    ]


# --- the banner -----------------------------------------------------------------------------


def test_the_banner_names_the_port_really_bound_and_no_warning_on_loopback(tmp_path):
    port = free_port()
    argv = [
        venv_bin("certmatch"),
        "proxy",
        "--mode",
        UNUSED_UPSTREAM,
        "--mode",
        "socks5@0",  # mitmproxy picks this port: only the bound socket knows it
        "--listen-port",
        str(port),
        "--record",
        str(tmp_path / "rec.jsonl"),
        "--confdir",
        str(tmp_path / "conf"),
    ]
    with mitmdump_process(tmp_path, argv, port=port):
        lines = _wait_until(lambda: _banner(tmp_path / "proxy.log"), "the banner")
    assert len(lines) == 1, lines  # no warning: everything is on loopback
    assert f"proxy listening on 127.0.0.1:{port} ({UNUSED_UPSTREAM})" in lines[0]
    socks = lines[0].split("; ")[1]
    assert socks.startswith("127.0.0.1:") and socks.endswith(
        f"(socks5@0), recording to {tmp_path / 'rec.jsonl'}. Ctrl-C to stop."
    )
    assert int(socks.split(" ")[0].rsplit(":", 1)[1]) > 0  # the real port, not 0


def test_a_mode_bound_to_every_interface_is_shown_and_warned_about(tmp_path):
    port = free_port()
    mode = f"{UNUSED_UPSTREAM}@0.0.0.0:{port}"
    argv = [
        venv_bin("certmatch"),
        "proxy",
        "--mode",
        mode,
        "--record",
        str(tmp_path / "rec.jsonl"),
        "--confdir",
        str(tmp_path / "conf"),
    ]
    with mitmdump_process(tmp_path, argv, port=port):
        lines = _wait_until(
            lambda: len(found := _banner(tmp_path / "proxy.log")) == 2 and found, "the warning"
        )
    assert f"proxy listening on 0.0.0.0:{port} ({mode})" in lines[0]
    assert "127.0.0.1:8080" not in lines[0]  # what the old banner claimed
    assert lines[1].startswith(f"certmatch: WARNING: the proxy listens on 0.0.0.0:{port}")
    assert "Anyone who can reach that port can use the proxy" in lines[1]


# --- files --------------------------------------------------------------------------------


def _run_with_umask(argv: list[str], mask: int, **kwargs) -> subprocess.Popen:
    def set_umask() -> None:
        os.umask(mask)

    return subprocess.Popen(argv, preexec_fn=set_umask, **kwargs)  # noqa: PLW1509


def test_the_recording_is_owner_only_even_under_umask_000(tmp_path):
    port = free_port()
    record = tmp_path / "rec.jsonl"
    argv = [
        venv_bin("certmatch"),
        "proxy",
        "--mode",
        UNUSED_UPSTREAM,
        "--listen-port",
        str(port),
        "--record",
        str(record),
        "--confdir",
        str(tmp_path / "conf"),
    ]
    with (tmp_path / "out.log").open("wb") as out:
        proc = _run_with_umask(argv, 0o000, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_until(lambda: _banner(tmp_path / "out.log"), "the proxy to listen")
        finally:
            proc.terminate()
            proc.wait(10)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600


# --- signals with --tui -----------------------------------------------------------------------


def _tmux() -> str:
    try:
        return require_binary("tmux", "tmux")
    except MissingSystemPackage as err:
        pytest.fail(str(err), pytrace=False)


def _pane(tmux: str, session: str, fmt: str) -> str:
    done = subprocess.run(
        [tmux, "display-message", "-p", "-t", session, fmt],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_proxy_tui_stops_the_child_and_restores_the_terminal(tmp_path, signum):
    tmux = _tmux()
    record = tmp_path / "rec.jsonl"
    session = f"certmatch-{uuid.uuid4().hex[:8]}"
    command = shlex.join(
        [
            venv_bin("certmatch"),
            "proxy",
            "--tui",
            "--mode",
            UNUSED_UPSTREAM,
            "--listen-port",
            str(free_port()),
            "--record",
            str(record),
            "--confdir",
            str(tmp_path / "conf"),
        ]
    )
    # Under a shell, as a person starts it: certmatch is not the terminal's session leader,
    # so its exit sends no SIGHUP to the child; only certmatch itself can stop the child.
    script = f'{command}; echo "certmatch exited $?"; exec sleep 600'
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "30", "sh", "-c", script],
        check=True,
    )
    try:
        shell = int(_pane(tmux, session, "#{pane_pid}"))
        _wait_until(
            lambda: (
                _pane(tmux, session, "#{alternate_on}") == "1"
                and "following" in _pane_text(tmux, session)
            ),
            "the TUI to start",
        )
        [parent] = _children(shell)
        [child] = _children(parent)
        assert f"--record\0{record}" in Path(f"/proc/{child}/cmdline").read_text()

        os.kill(parent, signum)

        _wait_until(lambda: not _alive(child), "the child proxy to stop", timeout=5)
        screen = _wait_until(
            lambda: "certmatch exited" in (text := _pane_text(tmux, session)) and text,
            "certmatch to exit",
            timeout=10,
        )
        assert f"certmatch exited {128 + signum}" in screen
        assert "Traceback" not in screen
        # The terminal is back: out of the alternate screen, no mouse reporting.
        assert _pane(tmux, session, "#{alternate_on}") == "0"
        assert _pane(tmux, session, "#{mouse_any_flag}") == "0"
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True, check=False)
    log = tmp_path / "rec.jsonl.proxy.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "proxy listening on 127.0.0.1:" in log.read_text()


def _pane_text(tmux: str, session: str) -> str:
    return subprocess.run(
        [tmux, "capture-pane", "-t", session, "-p"], capture_output=True, text=True, check=False
    ).stdout
