"""The client side of the handshake: which certificate the client is shown, and how.

``substitute`` is stock mitmproxy (its tlsconfig addon builds the connection); ``mirror``
shows a copy of the server's chain (:mod:`certmatch.proxy.mirror`) through a connection set
up exactly as tlsconfig sets up its own (versions, ciphers, curve, ALPN, DH parameters,
client certificates requested only with ``request_client_cert``), so the only difference
the client can see is the certificate.
"""

from __future__ import annotations

from typing import Literal

from mitmproxy import certs, connection, ctx, tls
from mitmproxy.addons import tlsconfig
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy import layer
from mitmproxy.proxy.layers import ClientTLSLayer, modes
from OpenSSL import SSL

from certmatch.proxy.mirror import MirrorChain, ProxyCa

Present = Literal["mirror", "substitute"]
PRESENT_CHOICES: tuple[Present, ...] = ("mirror", "substitute")


def tlsconfig_addon() -> tlsconfig.TlsConfig | None:
    """mitmproxy's own tlsconfig addon, if loaded."""
    found = ctx.master.addons.get("tlsconfig")
    return found if isinstance(found, tlsconfig.TlsConfig) else None


def proxy_ca(addon: tlsconfig.TlsConfig) -> ProxyCa:
    """The CA mitmproxy signs with: the one clients are told to trust."""
    store = addon.certstore
    return ProxyCa(store.default_ca.to_cryptography(), store.default_privatekey)


def mirror_connection(data: tls.TlsData, chain: MirrorChain, addon: tlsconfig.TlsConfig) -> None:
    """Set ``data.ssl_conn`` to a server-side connection showing ``chain``, as
    ``TlsConfig.tls_start_client`` would set up its own (mitmproxy 12.3)."""
    assert isinstance(data.conn, connection.Client)
    client: connection.Client = data.conn
    server: connection.Server = data.context.server
    options = ctx.options
    if not client.cipher_list and options.ciphers_client:
        client.cipher_list = options.ciphers_client.split(":")
    cipher_list = client.cipher_list or tlsconfig._default_ciphers(
        net_tls.Version[options.tls_version_client_min]
    )
    store = addon.certstore
    extra = [certs.Cert(cert) for cert in chain.intermediates]
    if store.default_chain_file is None and len(store.default_chain_certs) > 1:
        # mitmproxy sends its CA's own chain when that CA is itself an intermediate.
        extra += [c for c in store.default_chain_certs if c not in extra]
    ssl_ctx = net_tls.create_client_proxy_context(
        method=net_tls.Method.DTLS_SERVER_METHOD
        if data.is_dtls
        else net_tls.Method.TLS_SERVER_METHOD,
        min_version=net_tls.Version[options.tls_version_client_min],
        max_version=net_tls.Version[options.tls_version_client_max],
        cipher_list=tuple(cipher_list),
        ecdh_curve=net_tls.get_curve(options.tls_ecdh_curve_client),
        chain_file=store.default_chain_file,
        request_client_cert=options.request_client_cert,
        alpn_select_callback=tlsconfig.alpn_select_callback,
        extra_chain_certs=tuple(extra),
        dhparams=store.dhparams,
    )
    ssl_conn = SSL.Connection(ssl_ctx)
    ssl_conn.use_certificate(chain.leaf)
    ssl_conn.use_privatekey(chain.key)
    # As tlsconfig: HTTP/1 for secure web proxies (no CONNECT over HTTP/2).
    layers = data.context.layers
    if len(layers) == 2 and isinstance(layers[0], modes.HttpProxy):
        client_alpn: bytes | None = b"http/1.1"
    else:
        client_alpn = client.alpn
    ssl_conn.set_app_data(
        tlsconfig.AppData(client_alpn=client_alpn, server_alpn=server.alpn, http2=options.http2)
    )
    ssl_conn.set_accept_state()
    data.ssl_conn = ssl_conn


class AlertingClientTLSLayer(ClientTLSLayer):
    """mitmproxy's ``ClientTLSLayer``, sending the alert OpenSSL wrote before hanging up.

    On a failed handshake mitmproxy closes the connection without sending what OpenSSL
    wrote for the client, so a client that certmatch refuses reports an unexpected EOF
    instead of the handshake_failure alert a refusing server sends (issue 9).
    """

    def on_handshake_error(self, err: str) -> layer.CommandGenerator[None]:
        yield from self.tls_interact()
        yield from super().on_handshake_error(err)


def send_the_refusal(data: tls.TlsData) -> None:
    """Make the client TLS layer of ``data`` send its alert when the handshake fails (the
    subclass adds no state, so the running instance stays valid)."""
    for candidate in reversed(data.context.layers):
        if type(candidate) is ClientTLSLayer and candidate.conn is data.conn:
            candidate.__class__ = AlertingClientTLSLayer
            return
