"""``certmatch proxy --tui`` as a person runs it: in a real terminal (tmux), live sessions appear.

The proxy runs in front of the real dovecot; a real client (openssl s_client)
connects through it; the TUI, following the recording, shows the session; ``q``
quits and leaves no process behind. Then the TUI's watch over a real proxy process: where it
listens and the CA to trust, a red banner with its log when it cannot listen or dies, and a
question before quitting stops it.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from proxy_fixtures import free_port, venv_bin, wait_for_port
from servers.clients import s_client
from servers.process import MissingSystemPackage, require_binary
from test_tui import low_contrast, run_async, wait_for

from certmatch.core.trust import TrustStore
from certmatch.tui.app import CertmatchApp
from certmatch.tui.proxy_watch import EXIT_PROXY_STOPPED, LiveProxy, mitmproxy_ca_cert
from certmatch.tui.screens import ConfirmScreen

pytestmark = pytest.mark.timeout(120)


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
        wait_for_port(port, timeout=45)  # mitmproxy's start takes 6-20 s on a busy 2-core machine
        _wait_for_screen(tmux, session, "following")
        s_client(port, servername="wrong.example.test", cafile=conf / "mitmproxy-ca-cert.pem")
        # Wait for the row's cause, not the host: the status line can be drawn before the row.
        screen = _wait_for_screen(tmux, session, "name-not-in-certificate")
        assert "mismatch" in screen and "wrong.example.test" in screen
        s_client(port, servername="imap.example.test", cafile=conf / "mitmproxy-ca-cert.pem")
        screen = _wait_for_screen(tmux, session, "imap.example.test")
        assert "showing all: 2" in screen  # --tui shows every session, not only failing ones
        assert f"proxy listening on 127.0.0.1:{port}" in screen  # it watches its own proxy
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
        # The TUI runs the proxy, so quitting stops the recording: it asks first.
        _wait_for_screen(tmux, session, "y: yes")
        subprocess.run([tmux, "send-keys", "-t", session, "y"], check=True)
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


def _proxy_tui_in_tmux(
    tmp_path, target: str = "reverse:tls://127.0.0.1:1", then: str = "sleep 60"
) -> tuple[str, str, Path]:
    """``certmatch proxy --tui`` in a tmux session (a shell runs ``then`` after it), once it
    said it starts, listens and follows: (tmux, the session, the recording)."""
    try:
        tmux = require_binary("tmux", "tmux")
    except MissingSystemPackage as err:
        pytest.fail(str(err), pytrace=False)
    port = free_port()
    record = tmp_path / "live.jsonl"
    session = f"certmatch-{uuid.uuid4().hex[:8]}"
    command = [
        venv_bin("certmatch"),
        "proxy",
        "--tui",
        "--mode",
        target,
        "--listen-port",
        str(port),
        "--record",
        str(record),
        "--confdir",
        str(tmp_path / "conf"),
    ]
    # From a shell that stays, as a person runs it: when the TUI dies the terminal's session
    # goes on (its leader's exit would send SIGHUP to everything the TUI started).
    shell = f"{' '.join(command)}; {then}"
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "100", "-y", "30", "sh", "-c", shell],
        check=True,
    )
    try:
        _wait_for_screen(tmux, session, "starting the proxy", timeout=10)  # not a blank screen
        wait_for_port(port, timeout=45)
        _wait_for_screen(tmux, session, "following")
    except BaseException:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True, check=False)
        raise
    return tmux, session, record


def test_a_proxy_that_dies_under_proxy_tui_is_told_and_the_exit_status_is_not_0(
    tmp_path, dovecot
) -> None:
    """The TUI opens after a line saying the proxy is starting; when the proxy dies, the status
    stops saying "following", and after q the command says so and exits 2, not 0."""
    target = f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"
    tmux, session, record = _proxy_tui_in_tmux(tmp_path, target, "echo EXIT=$?; sleep 60")
    try:
        proxy = subprocess.run(
            ["pgrep", "-f", "--", f"-m certmatch proxy .*--record {record}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert len(proxy) == 1, proxy
        subprocess.run(["kill", proxy[0]], check=True)  # SIGTERM: it exits 0, but not by us
        screen = _wait_for_screen(tmux, session, "The proxy stopped")
        assert "proxy stopped: no more sessions" in screen and "following" not in screen
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
        screen = _wait_for_screen(tmux, session, "EXIT=")
        assert "EXIT=2" in screen, screen
        assert "the proxy stopped by itself" in " ".join(screen.split())
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True, check=False)


def _processes_of(record: Path) -> list[str]:
    """certmatch's processes for ``record`` (Python ones: not the shell or tmux around them)."""
    found = subprocess.run(
        ["pgrep", "-f", "--", f"python.* --record {record}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.split()


def _left_after(record: Path, seconds: float) -> list[str]:
    """The processes of ``record``'s proxy --tui still running ``seconds`` later (then killed)."""
    deadline = time.monotonic() + seconds
    while _processes_of(record) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = _processes_of(record)
    for pid in leftover:
        subprocess.run(["kill", "-9", pid], check=False)
    return leftover


def test_closing_the_terminal_of_proxy_tui_leaves_no_process_behind(tmp_path) -> None:
    """SIGHUP (the terminal closed): the proxy stops and so do the TUI and its reader, though
    the terminal they would restore is gone (they once hung writing to it)."""
    tmux, session, record = _proxy_tui_in_tmux(tmp_path)
    subprocess.run([tmux, "kill-session", "-t", session], capture_output=True, check=False)
    assert _left_after(record, 15) == [], "processes of proxy --tui outlived its terminal"


def test_a_killed_tui_takes_its_proxy_with_it(tmp_path) -> None:
    """SIGKILL of the TUI's process (the out-of-memory killer): its proxy child must not go on
    listening and recording with nothing to show it (it did, with parent PID 1)."""
    tmux, session, record = _proxy_tui_in_tmux(tmp_path)
    try:
        tui = subprocess.run(
            # the oldest python of it: the TUI (its reader is forked from it later; tmux's
            # own command line holds the text too, but not "python")
            ["pgrep", "-o", "-f", "--", f"python .*certmatch proxy --tui .*--record {record}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert len(tui) == 1, tui
        subprocess.run(["kill", "-9", tui[0]], check=True)
        assert _left_after(record, 15) == [], "the proxy outlived the TUI that ran it"
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True, check=False)


# --- the TUI watches the proxy it shows -----------------------------------------------------


def _start_proxy(tmp_path, port: int, target_port: int) -> tuple[subprocess.Popen, LiveProxy]:
    """A real ``certmatch proxy`` in a child process logging to a file, as ``proxy --tui``
    runs it, and the TUI's watch over it."""
    record = tmp_path / "live.jsonl"
    log_path = tmp_path / "live.jsonl.proxy.log"
    conf = tmp_path / "conf"
    mode = f"reverse:tls://127.0.0.1:{target_port}"
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [
                venv_bin("certmatch"),
                "proxy",
                "--mode",
                mode,
                "--listen-port",
                str(port),
                "--record",
                str(record),
                "--confdir",
                str(conf),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    return child, LiveProxy(
        child, log_path, modes=[mode], ca_cert=mitmproxy_ca_cert(conf), log_offset=0
    )


def _stop(child: subprocess.Popen) -> None:
    child.terminate()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _status(app: CertmatchApp) -> str:
    return str(app.query_one("#status").render())


def _banner(app: CertmatchApp) -> str:
    """The banner's words (its log lines wrap to the width under their indent)."""
    return " ".join(str(app.query_one("#proxy").render()).split())


@run_async
async def test_a_proxy_that_cannot_listen_shows_a_red_banner_with_its_log_at_once(
    tmp_path,
) -> None:
    store = TrustStore.load([], use_system=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        child, live = _start_proxy(tmp_path, port, free_port())
        try:
            app = CertmatchApp(
                [tmp_path / "live.jsonl"], store=store, follow=True, show_all=True, proxy=live
            )
            async with app.run_test(size=(80, 24)) as pilot:
                await wait_for(
                    pilot,
                    # certmatch proxy refuses the port itself, before mitmproxy starts: exit 2
                    lambda: "The proxy stopped (exit 2)" in _banner(app),
                    "the red banner",
                    timeout=60,  # the proxy fails once mitmproxy is imported: seconds when busy
                )
                banner = app.query_one("#proxy")
                assert banner.has_class("-failed")
                assert "another program listens on that port" in _banner(app)
                assert str(live.log_path) in _banner(app)
                await wait_for(  # once the first pass is done (later than the banner when busy)
                    pilot,
                    lambda: "the proxy is not running" in app.sessions.session_list.empty_message,
                    "the empty list to say the proxy is not running",
                )
                await pilot.pause()
                assert low_contrast(app) == [], "the red banner reads at 4.5:1"
                await pilot.press("q")  # nothing is recording: no question
            assert app.return_code == 0
        finally:
            _stop(child)


@run_async
async def test_a_running_proxy_shows_where_it_listens_and_its_ca_and_its_death(
    tmp_path, dovecot
) -> None:
    store = TrustStore.load([], use_system=False)
    port = free_port()
    child, live = _start_proxy(tmp_path, port, dovecot.imaps_port)
    try:
        state = live.wait_until_listening(30)
        assert state.running and state.listening.startswith(f"127.0.0.1:{port} (reverse:tls://")
        app = CertmatchApp(
            [tmp_path / "live.jsonl"], store=store, follow=True, show_all=True, proxy=live
        )
        async with app.run_test(size=(160, 24)) as pilot:
            await wait_for(pilot, lambda: "proxy listening on" in _banner(app), "the proxy line")
            banner = _banner(app)
            assert f"● proxy listening on 127.0.0.1:{port} (reverse:tls://127.0.0.1:" in banner
            assert f"clients trust {tmp_path / 'conf' / 'mitmproxy-ca-cert.pem'}" in banner
            assert not app.query_one("#proxy").has_class("-failed")
            # q asks first while the proxy records; n stays, y quits.
            assert low_contrast(app) == []
            await pilot.press("q")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.pause()
            assert low_contrast(app, app.screen.query_one("Vertical").region) == []
            assert f"on 127.0.0.1:{port}" in " ".join(
                str(s.render()) for s in app.screen.query("Static")
            )
            await pilot.press("n")
            assert not isinstance(app.screen, ConfirmScreen) and app.is_running
            await pilot.press("escape")  # Esc in the list does nothing
            assert app.is_running
            await pilot.press("F")  # not following: the status says the proxy records on
            assert "not following: the proxy records on (F)" in _status(app)
            await pilot.press("F")
            assert "following" in _status(app) and "not following" not in _status(app)
            child.terminate()  # the proxy dies under the TUI
            await wait_for(
                pilot, lambda: "The proxy stopped" in _banner(app), "the banner of a death", 30
            )
            assert app.query_one("#proxy").has_class("-failed")
            assert "proxy stopped: no more sessions" in _status(app)
            assert "following" not in _status(app)
            await pilot.press("F")  # off: the proxy's state stays said
            assert "proxy stopped: no more sessions" in _status(app)
            await pilot.press("q")  # nothing records any more: no question
        assert app.return_value == EXIT_PROXY_STOPPED != 0  # the recording ended early
    finally:
        _stop(child)


@run_async
async def test_ctrl_q_asks_too_and_y_quits(tmp_path, dovecot) -> None:
    store = TrustStore.load([], use_system=False)
    child, live = _start_proxy(tmp_path, free_port(), dovecot.imaps_port)
    try:
        live.wait_until_listening(30)
        app = CertmatchApp([tmp_path / "live.jsonl"], store=store, follow=True, proxy=live)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("ctrl+q")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
        assert app.return_code == 0
    finally:
        _stop(child)


def _sleeping_child() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


@run_async
async def test_a_stop_signal_noted_by_the_handler_makes_the_tui_exit_128_plus_the_signal(
    tmp_path,
) -> None:
    """The signal handler only notes the signal (raising from it inside Textual's message pump
    once printed a traceback over the terminal); the TUI's next proxy poll exits."""
    import signal

    from certmatch.cli.proxy import StopRequest, _on_stop_signals

    store = TrustStore.load([], use_system=False)
    child = _sleeping_child()
    stopped: list[bool] = []
    request = StopRequest()
    previous = _on_stop_signals(lambda: stopped.append(True), request)
    try:
        live = LiveProxy(
            child,
            tmp_path / "live.jsonl.proxy.log",
            modes=["reverse:tls://127.0.0.1:1"],
            ca_cert=mitmproxy_ca_cert(tmp_path / "conf"),
            stop_signal=lambda: request.signum,
        )
        app = CertmatchApp(
            [tmp_path / "live.jsonl"], store=store, follow=True, show_all=True, proxy=live
        )
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            signal.raise_signal(signal.SIGTERM)  # returns: the handler raises nothing
            assert request.signum == signal.SIGTERM and stopped == [True]
            assert signal.getsignal(signal.SIGTERM) is previous[signal.SIGTERM]  # a 2nd: default
            await wait_for(pilot, lambda: not app.is_running, "the TUI to exit", timeout=5)
        assert app.return_value == 128 + signal.SIGTERM
        assert request.grace is not None and request.grace.is_alive()  # would end a hung TUI
    finally:
        request.done()  # the TUI exited: this test process must not be ended 5 s later
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop(child)
