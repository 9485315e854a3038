"""How real clients end a session they refuse after the handshake, and how s_client ends one it
accepted but had nothing to say in: the wire evidence behind the README's client's decision.

neomutt, msmtp, ldapsearch (GnuTLS) and mbsync (OpenSSL) complete the handshake, check the
certificate afterwards and, refusing it, drop the connection: no alert, no close_notify.
``openssl s_client`` with an empty standard input accepts, then closes with close_notify. Both
are ``closed-after-handshake`` to the proxy today; only close_notify tells them apart.

The server is Python's ssl on loopback, answering each client's protocol with a greeting
(none for LDAP) and noting how the client's side of the TLS session ended.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from client_cases import DEFAULT_CERT
from servers import mint_all
from servers.accounts import PASSWORD, USER

from certmatch.lab.clients import Account, ClientTarget, Decision, run_client, run_s_client

pytestmark = pytest.mark.timeout(60)

GREETINGS = {"imap": b"* OK ready\r\n", "smtp": b"220 ready\r\n", "ldap": b""}
REFUSED_NAME = "wrong.example.test"  # not on the certificate: every client refuses it


@dataclass
class ClosingServer:
    """A TLS server that notes, per connection, how the client ended its side."""

    port: int
    endings: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _ending(conn: ssl.SSLSocket) -> str:
    """``close_notify``, ``eof`` (the TCP connection closed without it), ``alert``, ``data``."""
    try:
        data = conn.recv(4096)
    except ssl.SSLEOFError:
        return "eof"
    except ssl.SSLError:
        return "alert"
    except OSError:  # reset
        return "eof"
    return "data" if data else "close_notify"


def _serve(
    listener: socket.socket, context: ssl.SSLContext, greeting: bytes, seen: ClosingServer
) -> None:
    while True:
        try:
            raw, _ = listener.accept()
        except OSError:
            return  # the listener closed: the test is over
        with raw:
            raw.settimeout(15)
            try:
                conn = context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
            except (ssl.SSLError, OSError):
                seen.endings.append("handshake failed")
                seen.done.set()
                continue
            if greeting:
                try:
                    conn.sendall(greeting)
                except (ssl.SSLError, OSError):
                    pass  # it already left; how, the read below says
            seen.endings.append(_ending(conn))
            seen.done.set()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    minted = mint_all({"default": DEFAULT_CERT}, tmp_path_factory.mktemp("client-close"))
    files = minted.certs["default"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.served, files.key)
    return context, minted.root_ca


@contextlib.contextmanager
def closing_server(context: ssl.SSLContext, protocol: str) -> Iterator[ClosingServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    seen = ClosingServer(listener.getsockname()[1])
    thread = threading.Thread(
        target=_serve, args=(listener, context, GREETINGS[protocol], seen), daemon=True
    )
    thread.start()
    try:
        yield seen
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        listener.close()
        thread.join(5)


@pytest.mark.parametrize(
    ("client", "protocol"),
    [("neomutt", "imap"), ("mbsync", "imap"), ("msmtp", "smtp"), ("ldapsearch", "ldap")],
)
def test_a_client_that_checks_after_the_handshake_refuses_without_alert_or_close_notify(
    client: str, protocol: str, certs: tuple[ssl.SSLContext, Path]
) -> None:
    context, root_ca = certs
    with closing_server(context, protocol) as server:
        target = ClientTarget(
            REFUSED_NAME,
            server.port,
            protocol,
            "implicit",
            root_ca,
            account=Account(USER, PASSWORD),
            timeout=10,
        )
        outcome = run_client(client, target)
        assert outcome.decision is Decision.REFUSED, outcome.output
        assert server.done.wait(5)
    assert server.endings == ["eof"]


def test_s_client_with_nothing_to_say_accepts_and_closes_with_close_notify(
    certs: tuple[ssl.SSLContext, Path],
) -> None:
    context, root_ca = certs
    with closing_server(context, "imap") as server:
        target = ClientTarget("imap.example.test", server.port, "imap", "implicit", root_ca)
        outcome = run_s_client(target, say_nothing=True)
        assert outcome.decision is Decision.ACCEPTED, outcome.output
        assert server.done.wait(5)
    assert server.endings == ["close_notify"]
