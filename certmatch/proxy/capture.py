"""mitmproxy addon: record every TLS handshake and judge the server's names.

Load it in stock mitmproxy::

    mitmdump -s addons/capture.py --mode reverse:tls://mail.example.com:993 \
        --set certmatch_record=session.jsonl

or through ``certmatch proxy``. Implicit TLS needs only this addon; STARTTLS
sessions reach the same hooks through the layer in ``addons/starttls.py``, which
also raises ``starttls_upgrade`` and ``starttls_plaintext_end`` (see
:mod:`certmatch.proxy.starttls_hooks`). For each TLS session it records facts
(what the client asked for, what the server presented) as one JSON line, judges
them with one :class:`certmatch.core.judge.Judge` per trust store, logs the
verdict (of every session that fails or has a finding; clean matches with
``termlog_verbosity=debug``), marks the flow for mitmproxy's own UIs, and, with
``certmatch_on_mismatch=block``, closes the client connection as a strict client
would. What to decide is in :mod:`certmatch.core.policy`; this module is wiring.

The client is shown, by default, a mirror of the server's certificate (same names, dates,
key type and chain shape; see :mod:`certmatch.proxy.mirror`), so it reaches its own verdict;
``certmatch_present=substitute`` shows stock mitmproxy's certificate instead. What the
client then did (an alert, a silent close, or going on) is recorded with the session
(:mod:`certmatch.proxy.client_decision`). Every client connection leaves one record, a
connection closed before its first byte included.

The upstream handshake is faithful to the client: it sends the client's SNI,
and no SNI when the client sent none (stock mitmproxy sends the target host
instead, which hides the no-SNI default-certificate cause). mitmproxy's own
upstream verification is turned off for the sessions this addon handles:
certmatch judges the chain itself, so a failing certificate is recorded
instead of aborting the handshake half-way.

No hook here lets an exception escape: a failure in analysis or writing is
logged, noted in the session record, and traffic flows on.
"""

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import connection, ctx, exceptions, tcp, tls
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import layer, mode_specs, server_hooks
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.events import DataReceived
from OpenSSL import SSL

import certmatch
from certmatch.core import policy, protocols
from certmatch.core.diagnosis import Diagnosis
from certmatch.core.facts import SessionFacts, StartTlsFacts
from certmatch.core.identity import is_ip_address
from certmatch.core.judge import Judge, Judgement
from certmatch.core.recording import RecordingError, RecordingWriter
from certmatch.core.starttls import GREETING, MACHINES
from certmatch.core.text import printable
from certmatch.core.trust import TrustStore, TrustStoreError
from certmatch.net.probe import probe_with_sni
from certmatch.proxy import (
    handshake_timeout,
    listen_backlog,
    mirror,
    presentation,
    reverse_dial,
    tcp_relay,
)
from certmatch.proxy.client_decision import ClientWatch
from certmatch.proxy.connection_facts import (
    client_id,
    legacy_version,
    new_facts,
    peer_chain,
    refusing_connection,
    set_faithful_sni,
)
from certmatch.proxy.plaintext_port import PLAINTEXT_ANSWER, implicit_tls_on_plaintext_port
from certmatch.proxy.session_dns import DnsJob, SessionDns, parse_resolvers, wants_dns
from certmatch.proxy.session_log import (
    ca_certificate_pems,
    log_verdict,
    verdict_log_line,  # noqa: F401  (tests import it here)
)
from certmatch.proxy.starttls_hooks import StartTlsData

logger = logging.getLogger("certmatch")


def _never_raises[F: Callable[..., Any]](hook: F) -> F:
    """Run a hook; on an exception, log it and note it in the session instead of raising."""

    if asyncio.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_wrapper(self: "CertmatchCapture", data: Any) -> None:
            try:
                await hook(self, data)
            except Exception as exc:  # noqa: BLE001 - the session must survive our bugs
                self._internal_error(hook.__name__, data, exc)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(hook)
    def wrapper(self: "CertmatchCapture", data: Any) -> None:
        try:
            hook(self, data)
        except Exception as exc:  # noqa: BLE001 - the session must survive our bugs
            self._internal_error(hook.__name__, data, exc)

    return wrapper  # type: ignore[return-value]


@dataclass
class _Session:
    """One client connection: what its client did and, once a TLS handshake or a STARTTLS
    phase began, its facts and verdict."""

    watch: ClientWatch = field(default_factory=ClientWatch)
    client: connection.Client | None = None
    facts: SessionFacts | None = None
    verdict: Diagnosis | None = None
    written: bool = False
    context: Context | None = None  # the TLS session's, to find its TCP layer
    flow: tcp.TCPFlow | None = None  # its relay, which notes who closed first
    server: connection.Server | None = None  # as dialled, for a record without a handshake
    connect_error: str | None = None  # the server could not be reached before any handshake
    decided: bool = False  # the client's decision is set in the facts (no TLS to read it from)
    dns: DnsJob | None = None  # the look-up whose facts join the record
    recorded: bool = False  # its line is in the recording (or logged, with no recording)
    timer: asyncio.TimerHandle | None = None  # certmatch_handshake_timeout's, until TLS is up
    server_spoke: bool = False  # the server sent a byte before any layer was chosen
    not_ours: str | None = None  # why the pre-handshake clock stopped (STARTTLS layer, HTTP)


class CertmatchCapture:
    """Records TLS handshake facts and judges the server certificate's names."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}  # by client connection id
        # STARTTLS upgrades announced by the layer whose handshake is still to come.
        self.starttls_upgrades: dict[str, StartTlsData] = {}
        self.writer: RecordingWriter | None = None
        self.judge: Judge | None = None  # a new one whenever the trust store changes
        self.minter = mirror.MirrorMinter()
        self.sessions_written = 0
        self.dns: SessionDns | None = None  # None: DNS is not asked (certmatch_dns=false)
        # Records waiting for their DNS facts (at most SessionDns.wait seconds each).
        self.dns_waits: dict[asyncio.Task[None], _Session] = {}
        self._watching: list[object] = []  # proxyserver addons whose rebinds set the backlog

    # -- options -----------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "certmatch_record",
            str,
            "",
            "Append one JSON line per TLS handshake to this recording file.",
        )
        loader.add_option(
            "certmatch_present",
            str,
            "mirror",
            "The certificate the client is shown: 'mirror' copies the server's names, dates, key "
            "type and chain shape (signed by the proxy CA only when certmatch trusts the "
            "server's chain), so the client decides on the real certificate; 'substitute' is "
            "stock mitmproxy's, which always names what the client asked for.",
            choices=presentation.PRESENT_CHOICES,
        )
        loader.add_option(
            "certmatch_on_mismatch",
            str,
            "pass",
            "What the client gets when the server's certificate fails: 'pass' lets the session "
            "continue (the engineer can watch it), 'block' closes it as a strict client would.",
            choices=policy.ON_MISMATCH_CHOICES,
        )
        loader.add_option(
            "certmatch_ca_file",
            Sequence[str],
            [],
            "Extra CA certificates (PEM files) to trust when judging server chains, "
            "besides the system store.",
        )
        loader.add_option(
            "certmatch_host",
            str,
            "",
            "The server name the client is configured with, used when the client sends no SNI "
            "(e.g. in reverse mode). The client's SNI, when sent, always wins.",
        )
        loader.add_option(
            "certmatch_sni_probe",
            bool,
            True,
            "When a client sends no SNI and the certificate does not match, ask the server again "
            "with SNI to show whether it would have sent a matching certificate.",
        )

        loader.add_option(
            "certmatch_dns",
            bool,
            True,
            "Ask DNS about each session's requested host (CNAME chain, addresses, the server "
            "address's PTR, the mail domain's MX and SRV records) in the background and record "
            "the answers with the session. Without certmatch_resolver, a reverse proxy to an IP "
            "address asks nothing (the address came from its configuration, not from DNS).",
        )
        loader.add_option(
            "certmatch_resolver",
            Sequence[str],
            [],
            "A DNS resolver to ask, as IP[:PORT] ([::1]:53 for IPv6); repeat it for several "
            "(two resolvers answering differently show split horizon). Default: the "
            "system's resolvers.",
        )

        loader.add_option(
            handshake_timeout.OPTION,
            int,
            handshake_timeout.DEFAULT_S,
            "Whole seconds a connection may stand still (nothing from the client or the "
            "server) before its TLS handshake is done, counted from the connection: a client "
            "that sends no ClientHello, no SOCKS5 or no HTTP CONNECT request, a server that "
            "never answers the handshake; then certmatch records the phase reached and closes "
            "both sides. While nobody has spoken on a connection whose server may greet first, "
            "certmatch_starttls_timeout applies instead. A handshake that keeps moving gets at "
            "most four times as long. Never longer than certmatch_starttls_timeout; mitmproxy's "
            "own limit is tcp_timeout (600).",
        )

        loader.add_option(
            listen_backlog.OPTION,
            int,
            listen_backlog.DEFAULT,
            "The listen backlog of the proxy's TCP sockets: how many connections the kernel "
            "holds for the proxy to accept. mitmproxy's is asyncio's 100, which a burst of "
            "clients overflows (they are dropped before the proxy sees them). Capped by the "
            "kernel at net.core.somaxconn.",
        )

    def running(self) -> None:
        self._watch_servers()
        self._set_backlog()

    def _watch_servers(self) -> None:
        """Set the backlog whenever mitmproxy (re)binds its servers. Watched from the first
        ``configure`` on, the sockets get it as soon as they are bound, before any addon's
        ``running`` (where the listen banner says the proxy listens)."""
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is not None and proxyserver not in self._watching:
            proxyserver.servers.changed.connect(self._set_backlog)
            self._watching.append(proxyserver)

    def _set_backlog(self) -> None:
        """Give mitmproxy's listening sockets certmatch_listen_backlog (also on a rebind)."""
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is None:
            return
        try:
            listen_backlog.raise_backlog(proxyserver, ctx.options.certmatch_listen_backlog)
        except OSError as exc:
            logger.warning(
                f"certmatch: could not set the listen backlog ({printable(str(exc))}); "
                "mitmproxy's own (100) stays, and a burst of connections may overflow it"
            )

    def configure(self, updated: set[str]) -> None:
        if listen_backlog.OPTION in updated:
            if ctx.options.certmatch_listen_backlog < 1:
                raise exceptions.OptionsError(f"{listen_backlog.OPTION}: give a number, at least 1")
            self._watch_servers()
            self._set_backlog()  # the sockets already bound, if any
        if handshake_timeout.OPTION in updated and ctx.options.certmatch_handshake_timeout < 1:
            raise exceptions.OptionsError(
                f"{handshake_timeout.OPTION}: give a whole number of seconds, at least 1"
            )
        if {"certmatch_dns", "certmatch_resolver"} & updated:
            self.dns = None
            if ctx.options.certmatch_dns:
                try:
                    resolvers = parse_resolvers(ctx.options.certmatch_resolver)
                except ValueError as exc:
                    raise exceptions.OptionsError(f"certmatch_resolver: {exc}") from None
                self.dns = SessionDns(resolvers)
        if "certmatch_ca_file" in updated or self.judge is None:
            try:
                self.judge = Judge(TrustStore.load(ctx.options.certmatch_ca_file))
            except TrustStoreError as exc:
                raise exceptions.OptionsError(str(exc)) from None
        if "certmatch_record" in updated or (
            "certmatch_ca_file" in updated and self.writer is not None
        ):
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            path = ctx.options.certmatch_record
            if path:
                try:
                    self.writer = RecordingWriter(
                        path,
                        tool_version=certmatch.__version__,
                        ca_certificates=ca_certificate_pems(ctx.options.certmatch_ca_file),
                    )
                except (RecordingError, OSError) as exc:
                    raise exceptions.OptionsError(f"certmatch_record: {exc}") from None
                logger.info(f"certmatch: recording TLS sessions to {printable(path)}")

    def done(self) -> None:
        # Connections still open when the proxy stops are recorded as they stand.
        for session in list(self.sessions.values()):
            if session.facts is None and session.client is not None:
                session.facts = self._connection_only_facts(session.client, session)
                session.facts.notes.append("the proxy stopped before any TLS handshake")
                session.decided = True
            self._write(session)
        # Records still waiting for DNS are written now, with what DNS has said so far.
        for task, session in list(self.dns_waits.items()):
            task.cancel()
            self._record(session)
        self.dns_waits.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- connections -------------------------------------------------------

    @_never_raises
    def client_connected(self, client: connection.Client) -> None:
        session = self.sessions[client.id] = _Session(client=client)
        # reverse:tls://: the ClientHello is read even when the server cannot be reached.
        session.server = reverse_dial.dial_after_client_hello(client)
        if client.transport_protocol == "tcp":
            # Every TCP client, until its TLS handshake, STARTTLS layer or plain HTTP request
            # (a reverse TLS client's ClientHello, a SOCKS5 or CONNECT request, a greeting).
            self._arm_handshake_timer(session, client)

    @_never_raises
    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        client = nextlayer.context.client
        # Not nextlayer.data_client(), which joins the bytes: whether the client spoke is all
        # that is needed here.
        received = [e for e in nextlayer.events if isinstance(e, DataReceived) and e.data]
        if any(event.connection is client for event in received):
            self._session(client).watch.spoke = True
        if any(event.connection is not client for event in received):
            self._session(client).server_spoke = True

    # -- STARTTLS hooks (raised by certmatch.proxy.starttls_layer) ---------

    @_never_raises
    def starttls_start(self, data: StartTlsData) -> None:
        session = self.sessions.get(data.context.client.id)
        if session is not None:
            # The layer bounds the greeting, the reply and the handshakes with its own timeout.
            session.not_ours = "the STARTTLS layer"
            self._disarm_handshake_timer(session)

    @_never_raises
    def starttls_upgrade(self, data: StartTlsData) -> None:
        self.starttls_upgrades[data.context.client.id] = data

    @_never_raises
    def starttls_handshake_timeout(self, data: StartTlsData) -> None:
        session = self.sessions.get(data.context.client.id)
        facts = session.facts if session is not None else None
        if session is None or facts is None or data.error is None:
            return
        option = f"(certmatch_starttls_timeout={ctx.options.certmatch_starttls_timeout})"
        if data.failed_side == "server" and facts.server_error is None and not facts.chain:
            facts.server_error = f"timeout: {data.error} {option}"
            self._judge(session)
        elif data.failed_side == "client":
            facts.client_error = f"timeout: {data.error} {option}"
        facts.notes.append(f"certmatch closed the connection {option}")

    @_never_raises
    def starttls_plaintext_end(self, data: StartTlsData) -> None:
        client = data.context.client
        self.starttls_upgrades.pop(client.id, None)
        session = self._session(client)
        if data.client_tls is not None:
            facts = implicit_tls_on_plaintext_port(data, ctx.options.certmatch_host)
        else:
            facts = new_facts(client, data.context.server, None, ctx.options.certmatch_host)
            facts.tls_kind = "starttls"
            facts.starttls = data.facts
        facts.protocol = data.protocol
        if data.failed_side == "client":
            facts.client_error = data.error
        else:
            facts.server_error = data.error
        if data.client_silent:
            facts.client_decision = "closed-before-handshake"
        session.facts, session.verdict, session.written = facts, None, False
        session.decided = True
        self._start_dns(session, client, data.context.server)
        self._write(session)

    # -- TLS hooks ---------------------------------------------------------

    @_never_raises
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        context = data.context
        hello = data.client_hello
        # mitmproxy's ClientHello.sni drops names its IDNA 2003 check rejects
        # (e.g. IDNA 2008 A-labels such as xn--strae-oqa.de): read the extension.
        sni = protocols.server_name_from_extensions(hello.extensions)
        facts = new_facts(context.client, context.server, sni, ctx.options.certmatch_host)
        facts.client_alpn = [p.decode("ascii", "replace") for p in hello.alpn_protocols]
        facts.client_tls_versions = protocols.offered_tls_versions(
            hello.extensions, legacy_version(hello)
        )
        upgrade = self.starttls_upgrades.get(context.client.id)
        if upgrade is not None:
            facts.tls_kind = "starttls"
            facts.protocol = upgrade.protocol
            facts.starttls = upgrade.facts  # shared with the layer: later findings reach it
        session = self._session(context.client)
        session.facts, session.verdict, session.written = facts, None, False
        session.context = context
        session.watch.hello_seen = True
        self._start_dns(session, context.client, context.server)
        if upgrade is None:  # the STARTTLS layer bounds its own handshakes
            self._arm_handshake_timer(session, context.client)

        # See the server's certificate before answering the client, so that
        # block/pass can be decided and the client's handshake shaped by it.
        data.establish_server_tls_first = True
        upstream = policy.upstream_sni(sni)
        facts.upstream_sni_reason = policy.upstream_sni_reason(sni, upstream)
        set_faithful_sni(context.server, upstream)

    @_never_raises
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        session = self.sessions.get(data.client.id)
        if session is not None:
            session.server = data.server  # for the record of a client that leaves before TLS

    @_never_raises
    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        session = self.sessions.get(data.client.id)
        if session is None:
            return  # the client connection has already ended
        session.server = data.server
        if session.dns is not None and data.server.peername:
            session.dns.learn_server_ip(data.server.peername[0])
        facts = session.facts
        if facts is None or facts.sni is not None:
            return
        if data.server.peername:
            facts.server_ip = data.server.peername[0]
        set_faithful_sni(data.server, None)

    @_never_raises
    def tls_start_server(self, data: tls.TlsData) -> None:
        facts = self._facts(data.context.client.id)
        if facts is None:
            return
        if data.ssl_conn is None:
            # Loaded as a script (-s), this hook runs before mitmproxy's own
            # tlsconfig; let it build the connection now, as it would have.
            assert isinstance(data.conn, connection.Server)
            set_faithful_sni(data.conn, facts.sni)
            tlsconfig = presentation.tlsconfig_addon()
            if tlsconfig is not None:
                tlsconfig.tls_start_server(data)
        if data.ssl_conn is None:
            return
        # certmatch judges the chain itself; OpenSSL's verdict must not abort
        # the handshake (stock mitmproxy then crashes or hangs the client).
        data.ssl_conn.set_verify(SSL.VERIFY_NONE)
        facts.upstream_sni = policy.recorded_upstream_sni(data.conn.sni)

    @_never_raises
    async def tls_established_server(self, data: tls.TlsData) -> None:
        session = self.sessions.get(data.context.client.id)
        if session is None or session.facts is None:
            return
        facts = session.facts
        conn = data.conn
        facts.chain = peer_chain(data.ssl_conn)
        facts.tls_version = conn.tls_version
        facts.cipher = conn.cipher
        if conn.peername:
            facts.server_ip = conn.peername[0]
            if session.dns is not None:
                session.dns.learn_server_ip(conn.peername[0])
        self._judge(session)
        probe = ctx.options.certmatch_sni_probe and policy.wants_sni_probe(facts, session.verdict)
        if probe and conn.peername:
            facts.sni_probe = await probe_with_sni(
                conn.peername[0],
                conn.peername[1],
                facts.requested_host or "",
                starttls=facts.protocol if facts.tls_kind == "starttls" else None,
            )
            self._judge(session)

    @_never_raises
    def tls_failed_server(self, data: tls.TlsData) -> None:
        session = self.sessions.get(data.context.client.id)
        if session is None or session.facts is None:
            return
        facts = session.facts
        facts.chain = peer_chain(data.ssl_conn)
        facts.server_error = _server_tls_error(data.conn.error, facts)
        self._judge(session)

    @_never_raises
    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        error = data.server.error or "connection failed"
        session = self.sessions.get(data.client.id)
        if session is None:
            # The client connection ended first (mitmproxy reports a client's hang-up before
            # it cancels the dial): its record is written already.
            return
        session.server = data.server
        if error == CONNECTION_CANCELLED:
            # mitmproxy gave up dialling because the client had gone: not a server fault.
            if session.facts is not None:
                session.facts.notes.append(
                    "the connection to the server was cancelled: the client left first"
                )
            return
        if session.facts is None:
            # Dialled before the client's ClientHello (a transparent or forward mode; a
            # reverse:tls one dials after it): the record is written when the client
            # connection ends, so that it is written once.
            session.connect_error = f"cannot connect: {error}"
            return
        session.facts.server_error = f"cannot connect: {error}"
        self._judge(session)

    @_never_raises
    def tls_start_client(self, data: tls.TlsData) -> None:
        session = self.sessions.get(data.context.client.id)
        if session is None or session.facts is None:
            return
        facts = session.facts
        if session.verdict is None:
            try:
                self._judge(session)
            except Exception as exc:  # noqa: BLE001 - decided below: block fails closed
                facts.notes.append(f"analysis failed: {type(exc).__name__}: {exc}")
        on_mismatch = ctx.options.certmatch_on_mismatch
        present = ctx.options.certmatch_present
        action = policy.client_action(
            session.verdict, chain_seen=bool(facts.chain), on_mismatch=on_mismatch
        )
        if not action.block and present == "mirror" and facts.server_error:
            # Nothing to mirror faithfully and no session to relay: refuse as for no certificate.
            action = policy.Action(block=True, why="the TLS handshake with the server failed")
        if not action.block and present == "mirror" and not data.is_dtls:
            self._present_mirror(data, session)
        facts.action = action.name
        if action.block:
            why = action.why or ""
            if action.by_option:
                why += f"; certmatch_on_mismatch={on_mismatch}"
            logger.warning(
                "certmatch: closing the client connection for "
                f"{printable(str(facts.requested_host))} "
                f"({printable(why)}). mitmproxy logs this as a failed client handshake ('no shared "
                "cipher'): that is certmatch refusing the client, not a client problem."
            )
            facts.presented = None
            data.ssl_conn = refusing_connection()
            presentation.send_the_refusal(data)
            self._write(session)
            return
        if facts.presented is None:
            facts.presented = "substitute"
            if data.ssl_conn is None:
                # As for the server side: run before tlsconfig (-s), build its connection now.
                tlsconfig = presentation.tlsconfig_addon()
                if tlsconfig is not None:
                    tlsconfig.tls_start_client(data)
        if data.ssl_conn is not None:
            session.watch.watch_alerts(data.ssl_conn)

    @_never_raises
    def tls_established_client(self, data: tls.TlsData) -> None:
        session = self.sessions.get(data.context.client.id)
        if session is not None:
            session.watch.handshake_done()
            self._disarm_handshake_timer(session)

    @_never_raises
    def tls_failed_client(self, data: tls.TlsData) -> None:
        session = self.sessions.get(data.context.client.id)
        if session is None:
            return
        error = data.conn.error or "the client aborted the TLS handshake"
        session.watch.handshake_error = error
        facts = session.facts
        if facts is None:
            return  # no ClientHello: recorded when the connection ends
        if facts.action == "block":
            return  # a blocked client fails its handshake by our doing, not its own
        facts.client_error = error
        self._write(session)  # judged there, with the client's decision

    # -- after the handshake ----------------------------------------------

    @_never_raises
    def requestheaders(self, flow: Any) -> None:
        # A plain HTTP request through the regular proxy (a CONNECT raises http_connect
        # instead): no TLS to wait for, and mitmproxy's own timeouts apply.
        session = self.sessions.get(flow.client_conn.id)
        if session is not None and session.facts is None:
            session.not_ours = "a plain HTTP request"
            self._disarm_handshake_timer(session)

    @_never_raises
    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        session = self.sessions.get(flow.client_conn.id)
        if session is not None and session.facts is None:
            # A plaintext TCP relay (not after a handshake): no TLS to wait for.
            session.not_ours = "a plaintext TCP relay"
            self._disarm_handshake_timer(session)
        if session is None or session.facts is None:
            return
        if session.context is not None and tcp_relay.adopt(session.context, flow):
            session.flow = flow
        verdict = session.verdict
        if verdict is None:
            return
        primary = verdict.primary
        if verdict.failed:
            flow.marked = ":warning:"
        flow.comment = f"certmatch: {verdict.verdict}" + (f" ({primary.id})" if primary else "")

    @_never_raises
    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        session = self.sessions.get(flow.client_conn.id)
        if session is None or session.facts is None or session.written:
            return
        message = flow.messages[-1]
        # Only the protocol's name is kept; the bytes are never recorded.
        if message.from_client:
            guess = protocols.protocol_from_client_data(message.content[:2])
        else:
            guess = protocols.protocol_from_server_greeting(message.content[:512])
        facts = session.facts
        facts.protocol = protocols.refine_protocol(facts.protocol, guess)
        watch = session.watch
        if message.from_client:
            watch.sent_data = True  # the client went on: its decision is known
        else:
            watch.server_data()
        # Written once the client went on and the protocol is known, or the server spoke
        # too (a client that speaks before the greeting is named by it).
        if watch.sent_data and (facts.protocol != "unknown" or not message.from_client):
            self._write(session)

    @_never_raises
    def tcp_end(self, flow: tcp.TCPFlow) -> None:
        session = self.sessions.get(flow.client_conn.id)
        if session is not None and session.facts is not None:
            self._write(session)

    @_never_raises
    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        # The handshake is over and its facts are complete. Some servers answer a client's
        # hang-up with an alert, after which mitmproxy may never report the client as gone:
        # do not wait for that to write the record (the decision is what is known by then).
        session = self.sessions.get(data.client.id)
        if session is not None and session.facts is not None and session.verdict is not None:
            self._write(session)

    @_never_raises
    def client_disconnected(self, client: connection.Client) -> None:
        upgrade = self.starttls_upgrades.pop(client.id, None)
        session = self.sessions.pop(client.id, None)
        if session is None:
            return
        self._disarm_handshake_timer(session)
        watch = session.watch
        self._note_first_close(session)
        if watch.handshake_end is not None:
            # No TCP relay saw a close (none chosen yet, or mitmproxy swallowed the client's
            # close after its alert): the client left.
            watch.closed("client")
        if session.facts is None:
            session.facts = self._connection_only_facts(client, session)
            if upgrade is not None:
                _left_after_upgrade(session.facts, upgrade)
        self._write(session)

    # -- internals ---------------------------------------------------------

    @staticmethod
    def _note_first_close(session: _Session) -> None:
        first = session.flow.metadata.get(tcp_relay.FIRST_CLOSE) if session.flow else None
        if first is not None:
            side, at = first
            session.watch.closed(side, at)

    def _session(self, client: connection.Client) -> _Session:
        session = self.sessions.get(client.id)
        if session is None:
            session = self.sessions[client.id] = _Session(client=client)
        return session

    def _facts(self, client_id: str) -> SessionFacts | None:
        session = self.sessions.get(client_id)
        return session.facts if session is not None else None

    def _connection_only_facts(self, client: connection.Client, session: _Session) -> SessionFacts:
        """The record of a connection that never got to a TLS handshake or a STARTTLS phase."""
        server = session.server or connection.Server(address=None)
        facts = new_facts(client, server, None, ctx.options.certmatch_host)
        if session.connect_error is not None:
            facts.server_error = session.connect_error
            facts.action = "block"
            session.decided = True  # the proxy closed the client: it decided nothing
        return facts

    def _present_mirror(self, data: tls.TlsData, session: _Session) -> None:
        """Show the client a mirror of the server's chain. When none can be made, the
        session keeps flowing with mitmproxy's substitute, and the record says so."""
        facts = session.facts
        assert facts is not None and self.judge is not None
        tlsconfig = presentation.tlsconfig_addon()
        verdict = session.verdict
        if tlsconfig is None or verdict is None:
            why = "no verdict (the analysis failed)" if tlsconfig else "no tlsconfig addon"
            facts.notes.append(f"no mirror ({why}): the client was shown mitmproxy's certificate")
            return
        chain_key = tuple(facts.chain)
        parsed = self.judge.chain(chain_key).certificates
        try:
            if not parsed or parsed[0] is None:
                raise mirror.MirrorError("the leaf cannot be parsed")
            chain = self.minter.mirror(
                chain_key,
                [cert for cert in parsed if cert is not None],
                mirror.issuer_kind(verdict.trust),
                presentation.proxy_ca(tlsconfig),
                self.judge.store.contains,
            )
        except mirror.MirrorError as exc:
            facts.notes.append(
                f"the server's certificate cannot be mirrored ({exc}): the client was shown "
                "mitmproxy's certificate"
            )
            return
        presentation.mirror_connection(data, chain, tlsconfig)
        facts.presented = "mirror"

    def _judge(self, session: _Session) -> None:
        assert self.judge is not None and session.facts is not None
        session.verdict = self.judge.diagnose(session.facts)

    def _arm_handshake_timer(self, session: _Session, client: connection.Client) -> None:
        if session.timer is None and session.watch.handshake_end is None:
            bound = handshake_timeout.seconds()
            loop = asyncio.get_running_loop()
            greeting = handshake_timeout.greeting_seconds() or 0
            longest = bound if handshake_timeout.tls_first(client) else max(bound, greeting)
            give_up = loop.time() + longest * handshake_timeout.HARD_LIMIT
            session.timer = loop.call_later(
                bound, self._handshake_timed_out, session, client, give_up
            )

    @staticmethod
    def _disarm_handshake_timer(session: _Session) -> None:
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None

    def _handshake_timed_out(
        self, session: _Session, client: connection.Client, give_up: float
    ) -> None:
        """Note the phase the handshake reached, then close the connection; its record is
        written when mitmproxy reports the client gone. A handshake that moved within the
        bound gets the rest of it again, up to ``give_up`` (the loop's clock)."""
        session.timer = None
        if (
            self.sessions.get(client.id) is not session
            or session.watch.handshake_end is not None
            or session.not_ours is not None
        ):
            return
        bound = self._bound(session, client)
        loop = asyncio.get_running_loop()
        try:
            stalled = handshake_timeout.stalled(
                client, bound, hard_limit_passed=loop.time() >= give_up
            )
        except Exception as exc:  # noqa: BLE001 - a timer callback must not raise
            self._internal_error("handshake timeout", client, exc)
            return
        if stalled is None:
            return  # the connection is gone
        if not stalled:
            session.timer = loop.call_later(
                min(1.0, bound), self._handshake_timed_out, session, client, give_up
            )
            return
        try:
            self._note_timeout(session, client, bound)
        except Exception as exc:  # noqa: BLE001 - the connection is closed all the same
            self._internal_error("handshake timeout", client, exc)
        if not handshake_timeout.close_connection(client, "certmatch_handshake_timeout"):
            logger.warning(
                f"certmatch: could not close {printable(str(client.peername))} after its "
                "handshake timeout; mitmproxy's tcp_timeout will"
            )

    def _bound(self, session: _Session, client: connection.Client) -> int:
        """The seconds this connection may stand still now: the greeting's wait (the STARTTLS
        timeout) while a known destination and its client are both silent, else the
        handshake timeout."""
        greeting = handshake_timeout.greeting_seconds()
        if greeting is not None and session.facts is None and self._both_silent(session, client):
            return greeting
        return handshake_timeout.seconds()

    @staticmethod
    def _both_silent(session: _Session, client: connection.Client) -> bool:
        """Nobody spoke on a connection whose server may speak first: a destination known,
        no ClientHello expected first (a reverse TLS mode), nothing from either side."""
        return (
            not session.watch.spoke
            and not session.server_spoke
            and handshake_timeout.destination_known(client, session.server)
            and not handshake_timeout.tls_first(client)
        )

    def _note_timeout(self, session: _Session, client: connection.Client, bound: int) -> None:
        option = f"({handshake_timeout.OPTION}={bound})"
        facts = session.facts
        if facts is None:
            facts = session.facts = self._connection_only_facts(client, session)
            session.decided = True  # the client closed nothing: the proxy did
            self._note_silence(session, client, facts, bound)
            return
        server = session.server
        if facts.server_error is None and not facts.chain:
            if server is None or server.timestamp_tcp_setup is None:
                facts.server_error = (
                    f"timeout: the TCP connection to the server was not set up within {bound} s "
                    f"{option}"
                )
            else:
                facts.server_error = (
                    f"timeout: the server accepted the connection but did not complete the TLS "
                    f"handshake within {bound} s {option}"
                )
            self._judge(session)
        else:
            facts.client_error = (
                f"timeout: the client did not finish its TLS handshake within {bound} s {option}"
            )
        facts.notes.append(f"certmatch closed the connection after {bound} s {option}")

    def _note_silence(
        self, session: _Session, client: connection.Client, facts: SessionFacts, bound: int
    ) -> None:
        """The facts of a connection closed before any TLS handshake or STARTTLS layer: who
        owed the next byte, and the phase it reached."""
        closed = "certmatch closed the connection"
        request = handshake_timeout.request_awaited(client, session.server)
        if request is not None:
            facts.client_error = f"timeout: the client sent no {request} within {bound} s"
            facts.notes.append(f"{closed} ({handshake_timeout.OPTION}={bound})")
            return
        both_silent = self._both_silent(session, client)
        greeting_protocol = handshake_timeout.greeting_protocol(client, session.server)
        if greeting_protocol is not None and both_silent:
            # A mail or news server greets first: the server owed the first byte.
            facts.protocol = greeting_protocol
            facts.tls_kind = "starttls"
            facts.starttls = StartTlsFacts(phase=GREETING)
            facts.server_error = f"timeout: the server sent no greeting within {bound} s"
            facts.notes.append(f"{closed} (certmatch_starttls_timeout={bound})")
            return
        facts.client_error = f"timeout: the client sent no TLS ClientHello within {bound} s"
        if both_silent:
            facts.client_error += " (and the server no greeting)"
        facts.notes.append(
            f"no TLS handshake from the client within {bound} s: it connected and sent "
            f"{'no ClientHello' if session.watch.spoke else 'nothing'}; {closed} "
            f"({handshake_timeout.OPTION}={bound})"
        )

    def _start_dns(
        self, session: _Session, client: connection.Client, server: connection.Server
    ) -> None:
        """Start asking DNS about the session's requested host, in the background."""
        facts = session.facts
        if self.dns is None or facts is None or session.dns is not None:
            return
        if not wants_dns(
            facts.requested_host,
            resolvers_given=self.dns.resolvers_given,
            reverse_to_address=_reverse_to_address(client.proxy_mode),
        ):
            return
        assert facts.requested_host is not None
        server_ip = server.peername[0] if server.peername else None
        session.dns = self.dns.start(facts.requested_host, server_ip)

    def _write(self, session: _Session) -> None:
        """Record the session once: its client's decision as it stands now; its DNS facts
        when the look-up has ended (the line waits for it, the session never does)."""
        if session.written or session.facts is None:
            return
        session.written = True
        facts = session.facts
        self._note_first_close(session)
        if not session.decided:
            decided = session.watch.decision()
            facts.client_decision = decided.decision
            facts.client_alert = decided.alert
            facts.client_alert_code = decided.alert_code
            facts.client_waited = decided.waited
        job = session.dns
        if job is not None and not job.done():
            task = asyncio.get_running_loop().create_task(self._record_after_dns(session, job))
            self.dns_waits[task] = session
            task.add_done_callback(lambda t: self.dns_waits.pop(t, None))
            return
        self._record(session)

    async def _record_after_dns(self, session: _Session, job: DnsJob) -> None:
        await job.wait()
        try:
            self._record(session)
        except Exception as exc:  # noqa: BLE001 - a task's exception would only be logged late
            logger.error(
                f"certmatch: internal error while recording a session ({type(exc).__name__}: "
                f"{printable(str(exc))})"
            )

    def _record(self, session: _Session) -> None:
        """Attach the DNS facts, judge, log and write the line (once)."""
        if session.recorded or session.facts is None:
            return
        session.recorded = True
        facts = session.facts
        if session.dns is not None:
            facts.dns, note = session.dns.result()
            if note:
                facts.notes.append(note)
        verdict: Diagnosis | Judgement | None = session.verdict
        try:
            if verdict is None or facts.client_decision is not None:
                # The client's decision bears on the verdict too. The log line needs no
                # prose: the judgement is cached per situation, the explanation is not.
                assert self.judge is not None
                verdict = self.judge.judgement(facts)
        except Exception as exc:  # noqa: BLE001
            facts.notes.append(f"analysis failed: {type(exc).__name__}: {exc}")
        log_verdict(facts, verdict)
        if self.writer is None:
            return
        try:
            self.writer.write(facts)
            self.sessions_written += 1
        except Exception as exc:  # noqa: BLE001 - a full disk must not break mail
            logger.error(
                f"certmatch: could not write session {printable(facts.id)} to the "
                f"recording ({type(exc).__name__}: {printable(str(exc))}). Traffic continues; check the disk and the file."
            )

    def _internal_error(self, hook: str, data: Any, exc: Exception) -> None:
        logger.error(
            f"certmatch: internal error in {hook} ({type(exc).__name__}: {printable(str(exc))}); "
            "the session continues and the error is noted in its record."
        )
        key = client_id(data)
        facts = self._facts(key) if key else None
        if facts is not None:
            facts.notes.append(f"internal error in {hook}: {type(exc).__name__}: {exc}")


# mitmproxy's words when the server answered its ClientHello with ASCII where a TLS record was
# due (``proxy/layers/tls.py``, ``receive_handshake_data``): a greeting, as on a STARTTLS port.
MITMPROXY_NOT_TLS = "The remote server does not speak TLS."

# mitmproxy's error when it stops dialling the server because the client connection ended
# (``proxy/server.py``): the client left, the server was never at fault.
CONNECTION_CANCELLED = "connection cancelled"


@functools.lru_cache(maxsize=64)
def _reverse_to_address(mode: mode_specs.ProxyMode) -> bool:
    """A reverse proxy whose target is an IP address (one answer per listener, kept)."""
    return isinstance(mode, mode_specs.ReverseMode) and is_ip_address(mode.address[0])


def _server_tls_error(error: str | None, facts: SessionFacts) -> str:
    """The server's side of a failed TLS handshake, in words that name the fault."""
    after = " after accepting STARTTLS" if facts.tls_kind == "starttls" else ""
    if error == "connection closed":
        # mitmproxy's words when the server's connection closed mid-handshake (proxy/tunnel.py)
        sent = "" if facts.chain else ", before sending a certificate"
        return f"the server closed the connection during the TLS handshake{after}{sent}"
    if error == MITMPROXY_NOT_TLS and not after:
        return PLAINTEXT_ANSWER
    return error or "TLS handshake with the server failed"


def _left_after_upgrade(facts: SessionFacts, upgrade: StartTlsData) -> None:
    """A client that hung up after the server accepted its STARTTLS, before its ClientHello:
    the plaintext phase's facts (an injection among them) are its record."""
    facts.protocol = upgrade.protocol
    facts.tls_kind = "starttls"
    facts.starttls = upgrade.facts
    command = MACHINES[upgrade.protocol].upgrade_command if upgrade.protocol in MACHINES else ""
    facts.client_error = (
        f"the client closed the connection after the server accepted {command or 'the upgrade'}, "
        "before its TLS ClientHello"
    )


addons = [CertmatchCapture()]
