"""Load (issue 13): a burst of 1,000 clients at once through ``certmatch proxy``, 500 that
accept the certificate and 500 that refuse it, against a real dovecot. Every one is served
(no connection is dropped from the listen queue) and every one leaves exactly one record.

Sized for a 2-core CI machine: about 20 s of the proxy's CPU (some 17 ms a handshake, both
sides), well under a minute in all when the machine is otherwise idle.
"""

from __future__ import annotations

import asyncio
import collections
import resource
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import servers.dovecot
from proxy_fixtures import free_port, mitmdump_process

from certmatch.core.judge import Judge
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore
from certmatch.proxy import listen_backlog

pytestmark = pytest.mark.timeout(240)

GOOD, BAD = 500, 500
GOOD_NAME, BAD_NAME = "imap.example.test", "wrong.example.test"


def listen_queue(port: int) -> int:
    """The backlog of the socket listening on ``port`` (``ss``'s Send-Q for a listener)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])


def somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


async def session(port: int, context: ssl.SSLContext, name: str) -> str:
    """One IMAPS session: greeting, LOGOUT. What happened, in a word."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=name, ssl_handshake_timeout=180
        )
    except ssl.SSLCertVerificationError:
        return "refused"
    try:
        greeting = await asyncio.wait_for(reader.readline(), 180)
        if not greeting.startswith(b"* OK"):
            return f"greeting {greeting[:40]!r}"
        writer.write(b"z LOGOUT\r\n")
        await writer.drain()
        while await asyncio.wait_for(reader.read(65536), 180):
            pass
        return "done"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def burst(port: int, context: ssl.SSLContext) -> list[str | BaseException]:
    names = [GOOD_NAME] * GOOD + [BAD_NAME] * BAD
    return await asyncio.gather(
        *(session(port, context, name) for name in names), return_exceptions=True
    )


# dovecot's defaults start one login process per connection, at most 100 (process_limit),
# and drop the connections beyond; its high-performance mode serves them all.
ROOMY_LOGIN = """
service imap-login {
  service_count = 0
  client_limit = 2000
  process_min_avail = 2
}
"""


@pytest.fixture(scope="module")
def roomy_dovecot(pki, tmp_path_factory):
    """dovecot as the session fixture starts it, with room for the whole burst."""
    config = servers.dovecot._config
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(servers.dovecot, "_config", lambda *args: config(*args) + ROOMY_LOGIN)
        server = servers.dovecot.start_dovecot(
            pki.default, pki.sni, tmp_path_factory.mktemp("roomy-dovecot")
        )
    try:
        yield server
    finally:
        server.stop()


def test_a_burst_of_a_thousand_handshakes_is_served_and_recorded(tmp_path, roomy_dovecot, pki):
    dovecot = roomy_dovecot
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * (GOOD + BAD) + 256  # the clients here; the proxy's two sockets each
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    port, record, conf = free_port(), tmp_path / "load.jsonl", tmp_path / "conf"
    argv = [sys.executable, "-m", "certmatch", "proxy", "--record", str(record)]
    argv += ["--mode", f"reverse:tls://127.0.0.1:{dovecot.imaps_port}"]
    argv += ["--listen-port", str(port), "--confdir", str(conf), "--ca-file", str(pki.root_ca)]
    with mitmdump_process(tmp_path, argv, port=port):
        deadline = time.monotonic() + 30  # the backlog is set once mitmproxy is running
        while listen_queue(port) < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listen_queue(port) == min(listen_backlog.DEFAULT, somaxconn())
        context = ssl.create_default_context(cafile=str(conf / "mitmproxy-ca-cert.pem"))
        started = time.monotonic()
        outcomes = asyncio.run(burst(port, context))
        served_s = time.monotonic() - started
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(read_recording(record).sessions) >= GOOD + BAD:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # nothing more may come: exactly one record each
        sessions = read_recording(record).sessions
    counted = collections.Counter(o if isinstance(o, str) else type(o).__name__ for o in outcomes)
    assert counted == {"done": GOOD, "refused": BAD}, (counted, served_s)
    assert len(sessions) == GOOD + BAD
    assert len({s.id for s in sessions}) == GOOD + BAD
    by_name = collections.Counter(s.sni for s in sessions)
    assert by_name == {GOOD_NAME: GOOD, BAD_NAME: BAD}
    decisions = collections.Counter((s.sni, s.client_decision) for s in sessions)
    assert decisions[(GOOD_NAME, "went-on")] == GOOD, decisions
    # asyncio's ssl refuses after the server's Finished without an alert the proxy reads
    refused = decisions[(BAD_NAME, "alert")] + decisions[(BAD_NAME, "closed-during-handshake")]
    assert refused == BAD, decisions
    judge = Judge(TrustStore.load([pki.root_ca]))
    verdicts = collections.Counter(
        (s.sni, judge.judgement(s).verdict, judge.judgement(s).primary) for s in sessions
    )
    assert verdicts == {
        (GOOD_NAME, "match", ""): GOOD,
        (BAD_NAME, "mismatch", "name-not-in-certificate"): BAD,
    }, verdicts
    assert not [s.notes for s in sessions if any("timeout" in n for n in s.notes)]
    assert all(s.server_error is None for s in sessions)
