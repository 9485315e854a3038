"""mitmproxy addon: record every TLS handshake and judge the server's names.

Load it in stock mitmproxy::

    mitmdump -s addons/capture.py --mode reverse:tls://mail.example.com:993 \
        --set certmatch_record=session.jsonl

or through ``certmatch proxy``. Implicit TLS needs only this addon; STARTTLS
sessions reach the same hooks through the layer in ``addons/starttls.py``.
For each TLS session it records facts (what
the client asked for, what the server presented) as one JSON line, judges
them with :func:`certmatch.core.diagnosis.diagnose`, logs the verdict, marks the
flow for mitmproxy's own UIs, and, with ``certmatch_on_mismatch=block``,
closes the client connection as a strict client would.

The upstream handshake is faithful to the client: it sends the client's SNI,
and no SNI when the client sent none (stock mitmproxy sends the target host
instead, which hides the no-SNI default-certificate cause). mitmproxy's own
upstream verification is turned off for the sessions this addon handles:
certmatch judges the chain itself, so a failing certificate is recorded
instead of aborting the handshake half-way.

No hook here lets an exception escape: a failure in analysis or writing is
logged, noted in the session record, and traffic flows on.
"""

# No `from __future__ import annotations` here: mitmproxy loads this file as a
# script without registering it in sys.modules, and dataclasses then cannot
# resolve string annotations.

import asyncio
import base64
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mitmproxy import connection, ctx, exceptions, tcp, tls
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import mode_specs, server_hooks
from OpenSSL import SSL, crypto

import certmatch
from certmatch.core import diagnosis, protocols
from certmatch.core.facts import SessionFacts, StartTlsFacts
from certmatch.core.identity import is_ip_address
from certmatch.core.recording import RecordingError, RecordingWriter
from certmatch.core.trust import TrustStore, TrustStoreError
from certmatch.net.probe import probe_with_sni

logger = logging.getLogger("certmatch")

ON_MISMATCH_CHOICES = ("pass", "block")


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
class StartTlsUpgrade:
    """What a STARTTLS layer tells this addon about the plaintext phase of a connection."""

    protocol: str
    facts: StartTlsFacts


@dataclass
class _Pending:
    """A session being observed: its facts so far and, once known, the verdict."""

    facts: SessionFacts
    verdict: diagnosis.Diagnosis | None = None
    written: bool = False


class CertmatchCapture:
    """Records TLS handshake facts and judges the server certificate's names."""

    def __init__(self) -> None:
        self.pending: dict[str, _Pending] = {}
        # Filled by the STARTTLS layer (addons/starttls.py) through
        # starttls_upgrading(), keyed by client connection id. The facts object
        # is shared, so findings made later (e.g. injected bytes) reach the record.
        self.starttls_upgrades: dict[str, StartTlsUpgrade] = {}
        self.writer: RecordingWriter | None = None
        self.store: TrustStore | None = None
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
            choices=ON_MISMATCH_CHOICES,
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
        if "certmatch_ca_file" in updated or self.store is None:
            try:
                self.store = TrustStore.load(ctx.options.certmatch_ca_file)
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
                logger.info(f"certmatch: recording TLS sessions to {path}")

    def done(self) -> None:
        for pending in list(self.pending.values()):
            self._write(pending)
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- TLS hooks ---------------------------------------------------------

    @_never_raises
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        context = data.context
        hello = data.client_hello
        # mitmproxy's ClientHello.sni drops names its IDNA 2003 check rejects
        # (e.g. IDNA 2008 A-labels such as xn--strae-oqa.de): read the extension.
        sni = protocols.server_name_from_extensions(hello.extensions)
        facts = _new_facts(context.client, context.server, sni)
        facts.client_alpn = [p.decode("ascii", "replace") for p in hello.alpn_protocols]
        facts.client_tls_versions = protocols.offered_tls_versions(
            hello.extensions, _legacy_version(hello)
        )
        server = context.server
        upgrade = self.starttls_upgrades.get(context.client.id)
        if upgrade is not None:
            facts.tls_kind = "starttls"
            facts.protocol = upgrade.protocol
            facts.starttls = upgrade.facts
        self.pending[context.client.id] = _Pending(facts)

        # See the server's certificate before answering the client, so that
        # block/pass can be decided and the client's handshake shaped by it.
        data.establish_server_tls_first = True
        upstream = sni if sni is None or protocols.sendable_sni(sni) else None
        if upstream != sni:
            facts.notes.append(
                f"the client's SNI {sni!r} cannot be sent on by the proxy; it sent none upstream"
            )
        _set_faithful_sni(server, upstream)

    @_never_raises
    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        pending = self.pending.get(data.client.id)
        if pending is None or pending.facts.sni is not None:
            return
        if data.server.peername:
            pending.facts.server_ip = data.server.peername[0]
        _set_faithful_sni(data.server, None)

    @_never_raises
    def tls_start_server(self, data: tls.TlsData) -> None:
        pending = self.pending.get(data.context.client.id)
        if pending is None:
            return
        if data.ssl_conn is None:
            # Loaded as a script (-s), this hook runs before mitmproxy's own
            # tlsconfig; let it build the connection now, as it would have.
            assert isinstance(data.conn, connection.Server)
            _set_faithful_sni(data.conn, pending.facts.sni)
            tlsconfig = ctx.master.addons.get("tlsconfig")
            if tlsconfig is not None:
                tlsconfig.tls_start_server(data)
        if data.ssl_conn is None:
            return
        # certmatch judges the chain itself; OpenSSL's verdict must not abort
        # the handshake (stock mitmproxy then crashes or hangs the client).
        data.ssl_conn.set_verify(SSL.VERIFY_NONE)
        sni = data.conn.sni
        pending.facts.upstream_sni = sni if sni and not is_ip_address(sni) else None

    @_never_raises
    async def tls_established_server(self, data: tls.TlsData) -> None:
        pending = self.pending.get(data.context.client.id)
        if pending is None:
            return
        facts = pending.facts
        conn = data.conn
        facts.chain = _peer_chain(data.ssl_conn)
        facts.tls_version = conn.tls_version
        facts.cipher = conn.cipher
        if conn.peername:
            facts.server_ip = conn.peername[0]
        self._judge(pending)
        if self._wants_probe(pending) and conn.peername:
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
        pending.facts.chain = _peer_chain(data.ssl_conn)
        self._judge(pending)

    @_never_raises
    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        error = f"cannot connect: {data.server.error or 'connection failed'}"
        pending = self.pending.get(data.client.id)
        if pending is None:
            # Reverse mode dials before the client's ClientHello: without a
            # record here, an unreachable server would leave no trace.
            pending = _Pending(_new_facts(data.client, data.server, None))
            pending.facts.server_error = error
            pending.facts.action = "block"
            self._write(pending)
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
        verdict = pending.verdict
        no_server = not pending.facts.chain
        # Block on the certificate's verdict only: warnings, and findings about
        # a plaintext phase that is already over, do not stop the session. With
        # no verdict at all, block fails closed.
        failing = verdict is None or verdict.verdict != "match"
        block = no_server or (failing and ctx.options.certmatch_on_mismatch == "block")
        if block:
            pending.facts.action = "block"
            if no_server:
                why = "no server certificate"
            elif verdict is None:
                why = "no verdict: the analysis failed; certmatch_on_mismatch=block"
            else:
                primary = verdict.primary
                why = verdict.verdict + (f", {primary.id}" if primary else "")
                why += f"; certmatch_on_mismatch={ctx.options.certmatch_on_mismatch}"
            logger.warning(
                f"certmatch: closing the client connection for {pending.facts.requested_host} "
                f"({why}). mitmproxy logs this as a failed client handshake ('no shared "
                "cipher'): that is certmatch refusing the client, not a client problem."
            )
            data.ssl_conn = _refusing_connection()
            self._write(pending)
        else:
            pending.facts.action = "pass"

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

    def starttls_upgrading(
        self, client: connection.Client, protocol: str, starttls: StartTlsFacts
    ) -> None:
        """The STARTTLS layer saw the server accept the upgrade: the next handshake is a STARTTLS one."""
        self.starttls_upgrades[client.id] = StartTlsUpgrade(protocol, starttls)

    def record_without_tls(
        self,
        client: connection.Client,
        server: connection.Server,
        protocol: str,
        starttls: StartTlsFacts,
        error: str | None = None,
    ) -> None:
        """Record a STARTTLS connection that never reached a TLS handshake.

        Called by the STARTTLS layer when the server did not offer the
        upgrade, refused it, or the plaintext phase broke off (``error``).
        """
        try:
            facts = _new_facts(client, server, None)
            facts.protocol = protocol
            facts.tls_kind = "starttls"
            facts.starttls = starttls
            facts.server_error = error
            pending = _Pending(facts)
            self.pending.pop(client.id, None)
            self._write(pending)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("record_without_tls", None, exc)

    # -- internals ---------------------------------------------------------

    def _judge(self, pending: _Pending) -> None:
        assert self.store is not None
        pending.verdict = diagnosis.diagnose(pending.facts, self.store)

    def _wants_probe(self, pending: _Pending) -> bool:
        facts = pending.facts
        return bool(
            ctx.options.certmatch_sni_probe
            and facts.sni is None
            and facts.requested_host
            and not is_ip_address(facts.requested_host)
            and pending.verdict is not None
            and pending.verdict.verdict in ("mismatch", "legacy-match")
        )

    def _write(self, pending: _Pending) -> None:
        if pending.written:
            return
        pending.written = True
        try:
            if pending.verdict is None:
                self._judge(pending)
        except Exception as exc:  # noqa: BLE001
            pending.facts.notes.append(f"analysis failed: {type(exc).__name__}: {exc}")
        self._log_verdict(pending)
        if self.writer is None:
            return
        try:
            self.writer.write(pending.facts)
            self.sessions_written += 1
        except Exception as exc:  # noqa: BLE001 - a full disk must not break mail
            logger.error(
                f"certmatch: could not write session {pending.facts.id} to the recording "
                f"({type(exc).__name__}: {exc}). Traffic continues; check the disk and the file."
            )

    def _log_verdict(self, pending: _Pending) -> None:
        facts = pending.facts
        verdict = pending.verdict
        if verdict is None:
            logger.warning(
                f"certmatch: {facts.requested_host}: no verdict ({'; '.join(facts.notes)})"
            )
            return
        names = ", ".join(verdict.presented_names) or "no certificate"
        line = (
            f"certmatch: {facts.protocol} {facts.requested_host} "
            f"[{facts.requested_host_source}, SNI {facts.sni or 'none'}] -> {names}: "
            f"{verdict.verdict}"
        )
        if verdict.primary:
            line += f" ({verdict.primary.id})"
        (logger.warning if verdict.failed else logger.info)(line)

    def _internal_error(self, hook: str, data: Any, exc: Exception) -> None:
        logger.error(
            f"certmatch: internal error in {hook} ({type(exc).__name__}: {exc}); "
            "the session continues and the error is noted in its record."
        )
        client_id = _client_id(data)
        pending = self.pending.get(client_id) if client_id else None
        if pending is not None:
            pending.facts.notes.append(f"internal error in {hook}: {type(exc).__name__}: {exc}")


def _new_facts(
    client: connection.Client, server: connection.Server, sni: str | None
) -> SessionFacts:
    """The facts every session starts with: who, where, and what was asked for."""
    facts = SessionFacts(
        id=uuid.uuid4().hex,
        started=datetime.now(UTC).isoformat(timespec="milliseconds"),
        client_address=_format_address(client.peername),
        proxy_mode=client.proxy_mode.full_spec,
        sni=sni,
    )
    if server.address:
        facts.server_address = _format_address(server.address)
        facts.protocol = protocols.protocol_from_port(server.address[1])
    if server.peername:
        facts.server_ip = server.peername[0]
    facts.requested_host, facts.requested_host_source = _requested_host(
        client, server, sni, ctx.options.certmatch_host
    )
    return facts


def _set_faithful_sni(server: connection.Server, client_sni: str | None) -> None:
    """Make the upstream handshake send the client's SNI, or none when it sent none.

    Stock tlsconfig fills a missing SNI with the target host. An IP literal
    is never sent as SNI (RFC 6066 §3), so when the client sent none the
    server's IP stands in: no SNI goes out, and tlsconfig still builds the
    connection. Before the server is connected, "" holds the place (it stops
    tlsconfig's substitution) and ``server_connected`` replaces it.
    """
    if client_sni:
        server.sni = client_sni
    elif server.peername:
        server.sni = server.peername[0]
    elif server.address and is_ip_address(server.address[0]):
        server.sni = server.address[0]
    else:
        server.sni = ""


def _requested_host(
    client: connection.Client, server: connection.Server, sni: str | None, configured: str
) -> tuple[str | None, str]:
    """The name the client asked for, and where certmatch learned it."""
    if sni:
        return sni, "sni"
    if configured:
        return configured, "option"
    mode = client.proxy_mode
    address = server.address
    if isinstance(mode, mode_specs.ReverseMode):
        return mode.address[0], "reverse-target"
    host = address[0] if address else None
    if isinstance(mode, mode_specs.Socks5Mode):
        return host, "socks5"
    if isinstance(mode, mode_specs.RegularMode):
        return host, "http-connect"
    return host, "unknown"


def _refusing_connection() -> SSL.Connection:
    """A server-side TLS connection with no certificate: it answers any ClientHello with a
    handshake_failure alert, so the client stops before any mail is exchanged.

    Providing a connection (rather than none) keeps mitmproxy's tlsconfig from
    building a working one, whichever order the addons run in.
    """
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    connection = SSL.Connection(context)
    connection.set_accept_state()
    return connection


def _peer_chain(ssl_conn: SSL.Connection | None) -> list[str]:
    """The server's chain as base64 DER, leaf first, exactly as presented."""
    if ssl_conn is None:
        return []
    chain = ssl_conn.get_peer_cert_chain() or []
    return [
        base64.b64encode(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).decode("ascii")
        for cert in chain
    ]


def _legacy_version(hello: tls.ClientHello) -> int | None:
    raw = hello.raw_bytes(wrap_in_record=False)  # starts at client_version
    return int.from_bytes(raw[0:2], "big") if len(raw) >= 2 else None


def _format_address(address: Any) -> str | None:
    if not address:
        return None
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _client_id(data: Any) -> str | None:
    for path in ("context.client.id", "client.id", "client_conn.id"):
        obj = data
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return str(obj)
    return None


addons = [CertmatchCapture()]
