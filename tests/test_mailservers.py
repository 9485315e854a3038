"""The embedded LDAP server of the lab speaks LDAP through the core codec, as real clients expect."""

from __future__ import annotations

import socket
import ssl

import ldap3
import pytest

from certmatch.core import ldap_ber
from certmatch.core.ldap_ber import LdapResult, Operation
from certmatch.lab import pki
from certmatch.lab.mailservers import CertificateSet, PemIdentity, ServerGroup, ServerSpec


@pytest.fixture(scope="module")
def ldap_servers(tmp_path_factory):
    """One embedded LDAP server with StartTLS and one with implicit TLS, and the CA file."""
    root = pki.make_ca("Mailservers Root")
    leaf = pki.issue_leaf(root, dns=["ldap.example.test"])
    ca_file = tmp_path_factory.mktemp("ca") / "root.pem"
    ca_file.write_bytes(root.cert_pem())
    certificates = CertificateSet(PemIdentity(leaf.chain_pem(), leaf.key_pem()))
    specs = [
        ServerSpec("ldap", "starttls", certificates),
        ServerSpec("ldap", "implicit", certificates),
    ]
    with ServerGroup(specs) as servers:
        yield servers[0], servers[1], ca_file


def _exchange(sock: socket.socket, message: bytes) -> ldap_ber.LdapMessage:
    sock.sendall(message)
    data = sock.recv(2)
    while (head := ldap_ber.header(data)) is None:
        data += sock.recv(1)
    while len(data) < head[1] + head[2]:
        data += sock.recv(head[1] + head[2] - len(data))
    reply = ldap_ber.decode_message(data)
    assert reply is not None
    return reply


def test_a_simple_bind_before_starttls_is_refused_then_starttls_upgrades(ldap_servers):
    starttls, _, ca_file = ldap_servers
    bind = ldap_ber.LdapMessage(
        1,
        Operation.BIND_REQUEST,
        ldap_ber.encode_integer(3)
        + ldap_ber.encode(ldap_ber.OCTET_STRING, b"uid=demo")
        + ldap_ber.encode(0x80, b"secret"),
    )
    other = ldap_ber.extended_request(2, b"1.3.6.1.4.1.4203.1.11.3")  # Who am I?
    with socket.create_connection(starttls.address, timeout=5) as sock:
        refused = _exchange(sock, bind.encode())
        assert (refused.message_id, refused.operation) == (1, Operation.BIND_RESPONSE)
        assert ldap_ber.decode_result(refused.content).code == 13  # confidentialityRequired
        unsupported = _exchange(sock, other.encode())
        assert ldap_ber.decode_result(unsupported.content).code == 2
        request = ldap_ber.extended_request(3, ldap_ber.STARTTLS_OID)
        accepted = _exchange(sock, request.encode())
        assert (accepted.message_id, accepted.operation) == (3, Operation.EXTENDED_RESPONSE)
        name = ldap_ber.encode(ldap_ber.RESPONSE_NAME, ldap_ber.STARTTLS_OID)
        assert accepted.content == LdapResult(0).encode() + name
        context = ssl.create_default_context(cafile=str(ca_file))
        with context.wrap_socket(sock, server_hostname="ldap.example.test") as tls:
            assert tls.version() is not None


def test_bytes_that_are_not_ldap_close_the_connection(ldap_servers):
    starttls, _, _ = ldap_servers
    with socket.create_connection(starttls.address, timeout=5) as sock:
        sock.sendall(b"\x30\x80\x00\x00")  # indefinite length: not LDAP (RFC 4511 §5.1)
        assert sock.recv(100) == b""


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "ldaps"])
def test_ldap3_binds_and_finds_the_entry(ldap_servers, implicit):
    starttls, ldaps, _ = ldap_servers
    server_address = ldaps.address if implicit else starttls.address
    tls = ldap3.Tls(validate=ssl.CERT_NONE)  # the TLS side is checked above; this is the dialogue
    server = ldap3.Server(
        server_address[0],
        port=server_address[1],
        use_ssl=implicit,
        tls=tls,
        get_info=ldap3.NONE,
    )
    dn = "uid=demo,dc=example,dc=test"
    conn = ldap3.Connection(
        server,
        dn,
        "any password",
        auto_bind=ldap3.AUTO_BIND_NO_TLS if implicit else ldap3.AUTO_BIND_TLS_BEFORE_BIND,
    )
    assert conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["cn", "mail"])
    assert [str(e.mail) for e in conn.entries] == ["demo@example.test"]
    conn.unbind()
