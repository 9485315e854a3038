"""Load (issue 13 §4): a burst of 500 STARTTLS sessions at once through ``certmatch proxy`` to a
real dovecot that accepts them all. Before the listen backlog was raised, 26-108 such clients
never got a greeting and left no record. Every one must be served (greeting, STARTTLS, TLS,
LOGOUT) and leave exactly one record, none of them cut by the proxy's own timers while the
proxy works through the queue.

The clients are Python's asyncio streams with ``start_tls``, the way an IMAP client upgrades.
"""

from __future__ import annotations

import asyncio
import collections
import resource
import ssl
import sys
import time

import pytest
from proxy_fixtures import free_port, mitmdump_process
from test_proxy_load import listen_queue, roomy_dovecot  # noqa: F401 - the fixture

from certmatch.core.judge import Judge
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore

pytestmark = pytest.mark.timeout(240)

SESSIONS = 500
NAME = "imap.example.test"


async def session(port: int, context: ssl.SSLContext) -> str:
    """One IMAP STARTTLS session: greeting, STARTTLS, TLS, LOGOUT. What happened, in a word."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        greeting = await asyncio.wait_for(reader.readline(), 180)
        if not greeting.startswith(b"* OK"):
            return f"greeting {greeting[:40]!r}"
        writer.write(b"a STARTTLS\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 180)
        if not reply.startswith(b"a OK"):
            return f"reply {reply[:40]!r}"
        await writer.start_tls(context, server_hostname=NAME, ssl_handshake_timeout=180)
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
    return await asyncio.gather(
        *(session(port, context) for _ in range(SESSIONS)), return_exceptions=True
    )


def test_a_burst_of_starttls_sessions_is_served_and_recorded(tmp_path, roomy_dovecot, pki):  # noqa: F811
    dovecot = roomy_dovecot
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SESSIONS + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    port, record, conf = free_port(), tmp_path / "load.jsonl", tmp_path / "conf"
    argv = [sys.executable, "-m", "certmatch", "proxy", "--record", str(record), "--no-dns"]
    argv += ["--mode", f"reverse:tcp://127.0.0.1:{dovecot.imap_port}"]
    argv += ["--listen-port", str(port), "--confdir", str(conf), "--ca-file", str(pki.root_ca)]
    with mitmdump_process(tmp_path, argv, port=port):
        deadline = time.monotonic() + 30  # the backlog is set once mitmproxy is running
        while listen_queue(port) < SESSIONS and time.monotonic() < deadline:
            time.sleep(0.1)
        context = ssl.create_default_context(cafile=str(conf / "mitmproxy-ca-cert.pem"))
        outcomes = asyncio.run(burst(port, context))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(read_recording(record).sessions) >= SESSIONS:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # nothing more may come: exactly one record each
        sessions = read_recording(record).sessions
    counted = collections.Counter(o if isinstance(o, str) else type(o).__name__ for o in outcomes)
    assert counted == {"done": SESSIONS}, counted
    assert len(sessions) == SESSIONS
    assert len({s.id for s in sessions}) == SESSIONS
    kinds = collections.Counter(
        (s.tls_kind, s.protocol, s.sni, s.client_decision) for s in sessions
    )
    assert kinds == {("starttls", "imap", NAME, "went-on"): SESSIONS}, kinds
    judge = Judge(TrustStore.load([pki.root_ca]))
    verdicts = collections.Counter(judge.judgement(s).verdict for s in sessions)
    assert verdicts == {"match": SESSIONS}, verdicts
    assert all(s.server_error is None and s.client_error is None for s in sessions)
    assert not [s.notes for s in sessions if any("closed the connection" in n for n in s.notes)]
