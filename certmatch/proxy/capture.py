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
verdict, marks the flow for mitmproxy's own UIs, and, with
``certmatch_on_mismatch=block``, closes the client connection as a strict client
would. What to decide is in :mod:`certmatch.core.policy`; this module is wiring.

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
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, ctx, exceptions, tcp, tls
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks
from OpenSSL import SSL

import certmatch
from certmatch.core import policy, protocols
from certmatch.core.diagnosis import Diagnosis
from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judge
from certmatch.core.recording import RecordingError, RecordingWriter
from certmatch.core.report import shown_names
from certmatch.core.text import printable
from certmatch.core.trust import TrustStore, TrustStoreError
from certmatch.net.probe import probe_with_sni
from certmatch.proxy.connection_facts import (
    client_id,
    legacy_version,
    new_facts,
    peer_chain,
    refusing_connection,
    set_faithful_sni,
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
class _Pending:
    """A session being observed: its facts so far and, once known, the verdict."""

    facts: SessionFacts
    verdict: Diagnosis | None = None
    written: bool = False


class CertmatchCapture:
    """Records TLS handshake facts and judges the server certificate's names."""

    def __init__(self) -> None:
        self.pending: dict[str, _Pending] = {}  # by client connection id
        # STARTTLS upgrades announced by the layer whose handshake is still to come.
        self.starttls_upgrades: dict[str, StartTlsData] = {}
        self.writer: RecordingWriter | None = None
        self.judge: Judge | None = None  # a new one whenever the trust store changes
        self.sessions_written = 0

    # -- options -----------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "certmatch_record",
            str,
            "",
            "Append one JSON line per TLS handshake to this recording file.",
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

    def configure(self, updated: set[str]) -> None:
        if "certmatch_ca_file" in updated or self.judge is None:
            try:
                self.judge = Judge(TrustStore.load(ctx.options.certmatch_ca_file))
            except TrustStoreError as exc:
                raise exceptions.OptionsError(str(exc)) from None
        if "certmatch_record" in updated:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            path = ctx.options.certmatch_record
            if path:
                try:
                    self.writer = RecordingWriter(path, tool_version=certmatch.__version__)
                except (RecordingError, OSError) as exc:
                    raise exceptions.OptionsError(f"certmatch_record: {exc}") from None
                logger.info(f"certmatch: recording TLS sessions to {printable(path)}")

    def done(self) -> None:
        for pending in list(self.pending.values()):
            self._write(pending)
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- STARTTLS hooks (raised by certmatch.proxy.starttls_layer) ---------

    @_never_raises
    def starttls_upgrade(self, data: StartTlsData) -> None:
        self.starttls_upgrades[data.context.client.id] = data

    @_never_raises
    def starttls_plaintext_end(self, data: StartTlsData) -> None:
        client = data.context.client
        self.starttls_upgrades.pop(client.id, None)
        self.pending.pop(client.id, None)
        facts = new_facts(client, data.context.server, None, ctx.options.certmatch_host)
        facts.protocol = data.protocol
        facts.tls_kind = "starttls"
        facts.starttls = data.facts
        facts.server_error = data.error
        self._write(_Pending(facts))

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
        self.pending[context.client.id] = _Pending(facts)

        # See the server's certificate before answering the client, so that
        # block/pass can be decided and the client's handshake shaped by it.
        data.establish_server_tls_first = True
        upstream = policy.upstream_sni(sni)
        if upstream != sni:
            facts.notes.append(
                f"the client's SNI {sni!r} cannot be sent on by the proxy; it sent none upstream"
            )
        set_faithful_sni(context.server, upstream)

    @_never_raises
    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        pending = self.pending.get(data.client.id)
        if pending is None or pending.facts.sni is not None:
            return
        if data.server.peername:
            pending.facts.server_ip = data.server.peername[0]
        set_faithful_sni(data.server, None)

    @_never_raises
    def tls_start_server(self, data: tls.TlsData) -> None:
        pending = self.pending.get(data.context.client.id)
        if pending is None:
            return
        if data.ssl_conn is None:
            # Loaded as a script (-s), this hook runs before mitmproxy's own
            # tlsconfig; let it build the connection now, as it would have.
            assert isinstance(data.conn, connection.Server)
            set_faithful_sni(data.conn, pending.facts.sni)
            tlsconfig = ctx.master.addons.get("tlsconfig")
            if tlsconfig is not None:
                tlsconfig.tls_start_server(data)
        if data.ssl_conn is None:
            return
        # certmatch judges the chain itself; OpenSSL's verdict must not abort
        # the handshake (stock mitmproxy then crashes or hangs the client).
        data.ssl_conn.set_verify(SSL.VERIFY_NONE)
        pending.facts.upstream_sni = policy.recorded_upstream_sni(data.conn.sni)

    @_never_raises
    async def tls_established_server(self, data: tls.TlsData) -> None:
        pending = self.pending.get(data.context.client.id)
        if pending is None:
            return
        facts = pending.facts
        conn = data.conn
        facts.chain = peer_chain(data.ssl_conn)
        facts.tls_version = conn.tls_version
        facts.cipher = conn.cipher
        if conn.peername:
            facts.server_ip = conn.peername[0]
        self._judge(pending)
        probe = ctx.options.certmatch_sni_probe and policy.wants_sni_probe(facts, pending.verdict)
        if probe and conn.peername:
            facts.sni_probe = await probe_with_sni(
                conn.peername[0],
                conn.peername[1],
                facts.requested_host or "",
                starttls=facts.protocol if facts.tls_kind == "starttls" else None,
            )
            self._judge(pending)

    @_never_raises
    def tls_failed_server(self, data: tls.TlsData) -> None:
        pending = self.pending.get(data.context.client.id)
        if pending is None:
            return
        pending.facts.server_error = data.conn.error or "TLS handshake with the server failed"
        pending.facts.chain = peer_chain(data.ssl_conn)
        self._judge(pending)

    @_never_raises
    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        error = f"cannot connect: {data.server.error or 'connection failed'}"
        pending = self.pending.get(data.client.id)
        if pending is None:
            # Reverse mode dials before the client's ClientHello: without a
            # record here, an unreachable server would leave no trace.
            facts = new_facts(data.client, data.server, None, ctx.options.certmatch_host)
            facts.server_error = error
            facts.action = "block"
            self._write(_Pending(facts))
            return
        pending.facts.server_error = error
        self._judge(pending)

    @_never_raises
    def tls_start_client(self, data: tls.TlsData) -> None:
        pending = self.pending.get(data.context.client.id)
        if pending is None:
            return
        if pending.verdict is None:
            try:
                self._judge(pending)
            except Exception as exc:  # noqa: BLE001 - decided below: block fails closed
                pending.facts.notes.append(f"analysis failed: {type(exc).__name__}: {exc}")
        on_mismatch = ctx.options.certmatch_on_mismatch
        action = policy.client_action(
            pending.verdict, chain_seen=bool(pending.facts.chain), on_mismatch=on_mismatch
        )
        pending.facts.action = action.name
        if action.block:
            why = action.why or ""
            if action.by_option:
                why += f"; certmatch_on_mismatch={on_mismatch}"
            logger.warning(
                "certmatch: closing the client connection for "
                f"{printable(str(pending.facts.requested_host))} "
                f"({printable(why)}). mitmproxy logs this as a failed client handshake ('no shared "
                "cipher'): that is certmatch refusing the client, not a client problem."
            )
            data.ssl_conn = refusing_connection()
            self._write(pending)

    @_never_raises
    def tls_failed_client(self, data: tls.TlsData) -> None:
        pending = self.pending.get(data.context.client.id)
        if pending is None or pending.facts.action == "block":
            return  # a blocked client fails its handshake by our doing, not its own
        pending.facts.client_error = data.conn.error or "the client aborted the TLS handshake"
        self._judge(pending)
        self._write(pending)

    # -- after the handshake ----------------------------------------------

    @_never_raises
    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        pending = self.pending.get(flow.client_conn.id)
        if pending is None or pending.verdict is None:
            return
        verdict = pending.verdict
        primary = verdict.primary
        if verdict.failed:
            flow.marked = ":warning:"
        flow.comment = f"certmatch: {verdict.verdict}" + (f" ({primary.id})" if primary else "")

    @_never_raises
    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        pending = self.pending.get(flow.client_conn.id)
        if pending is None or pending.written:
            return
        message = flow.messages[-1]
        # Only the protocol's name is kept; the bytes are never recorded.
        if message.from_client:
            guess = protocols.protocol_from_client_data(message.content[:2])
        else:
            guess = protocols.protocol_from_server_greeting(message.content[:512])
        pending.facts.protocol = protocols.refine_protocol(pending.facts.protocol, guess)
        self._write(pending)

    @_never_raises
    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        # The handshake is over and its facts are complete. Some servers answer a
        # client's hang-up with an alert, after which mitmproxy may never report
        # the client as gone: do not wait for that to write the record.
        pending = self.pending.get(data.client.id)
        if pending is not None and pending.verdict is not None:
            self._write(pending)

    @_never_raises
    def client_disconnected(self, client: connection.Client) -> None:
        self.starttls_upgrades.pop(client.id, None)
        pending = self.pending.pop(client.id, None)
        if pending is not None:
            self._write(pending)

    # -- internals ---------------------------------------------------------

    def _judge(self, pending: _Pending) -> None:
        assert self.judge is not None
        pending.verdict = self.judge.diagnose(pending.facts)

    def _write(self, pending: _Pending) -> None:
        if pending.written:
            return
        pending.written = True
        try:
            if pending.verdict is None:
                self._judge(pending)
        except Exception as exc:  # noqa: BLE001
            pending.facts.notes.append(f"analysis failed: {type(exc).__name__}: {exc}")
        _log_verdict(pending.facts, pending.verdict)
        if self.writer is None:
            return
        try:
            self.writer.write(pending.facts)
            self.sessions_written += 1
        except Exception as exc:  # noqa: BLE001 - a full disk must not break mail
            logger.error(
                f"certmatch: could not write session {printable(pending.facts.id)} to the "
                f"recording ({type(exc).__name__}: {printable(str(exc))}). Traffic continues; check the disk and the file."
            )

    def _internal_error(self, hook: str, data: Any, exc: Exception) -> None:
        logger.error(
            f"certmatch: internal error in {hook} ({type(exc).__name__}: {printable(str(exc))}); "
            "the session continues and the error is noted in its record."
        )
        key = client_id(data)
        pending = self.pending.get(key) if key else None
        if pending is not None:
            pending.facts.notes.append(f"internal error in {hook}: {type(exc).__name__}: {exc}")


def _log_verdict(facts: SessionFacts, verdict: Diagnosis | None) -> None:
    """One log line per recorded session: what was asked, what was presented, the verdict."""
    line = verdict_log_line(facts, verdict)
    (logger.warning if verdict is None or verdict.failed else logger.info)(line)


def verdict_log_line(facts: SessionFacts, verdict: Diagnosis | None) -> str:
    """The log line for a recorded session, every name from the network escaped so that a
    hostile SNI or certificate name cannot drive the terminal showing the log."""
    host = printable(str(facts.requested_host))
    if verdict is None:
        return f"certmatch: {host}: no verdict ({printable('; '.join(facts.notes))})"
    names = shown_names(verdict.presented_names) or "no certificate"
    line = (
        f"certmatch: {printable(facts.protocol)} {host} "
        f"[{printable(facts.requested_host_source)}, SNI {printable(facts.sni or 'none')}] "
        f"-> {names}: {verdict.verdict}"
    )
    if verdict.primary:
        line += f" ({verdict.primary.id})"
    return line


addons = [CertmatchCapture()]
