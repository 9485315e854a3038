"""Session fixtures: a test PKI and real servers (dovecot, aiosmtpd, slapd) on loopback.

Every server is started once per test session on free high ports of
127.0.0.1 and stopped at the end of the session, whatever the tests did.
A missing Debian package fails the fixture with a message naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from scenarios import ScenarioPki, mint_scenario_pki, scenario
from servers import (
    DovecotServer,
    MissingSystemPackage,
    NnrpdServer,
    ServerStartError,
    SlapdServer,
    SmtpServer,
    start_dovecot,
    start_nnrpd,
    start_slapd,
    start_smtp,
)


def _fail_clearly(err: Exception) -> NoReturn:
    pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ScenarioPki:
    """Every scenario's certificate, minted once.

    Yields a ScenarioPki: ``root_ca`` (PEM path of the trust anchor for clients
    and certmatch), ``intermediate_ca``, ``default`` (CertFiles served without
    SNI or for unknown names), ``for_scenario(name)`` (the CertFiles its
    server_name selects), ``presented(name)`` (what that scenario's client
    receives), and ``sni`` (server_name -> CertFiles). CertFiles has ``cert``,
    ``key``, ``chain`` (leaf + intermediate), ``served`` (what the server sends:
    the leaf alone for missing-intermediate), ``leaf`` (x509.Certificate) and
    ``served_chain`` (list of x509.Certificate).
    """
    return mint_scenario_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def server_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding every server's logs for this session."""
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def dovecot(pki: ScenarioPki, server_log_dir: Path) -> Iterator[DovecotServer]:
    """A real dovecot with IMAP/POP3 listeners, certificates selected by SNI per scenario.

    Attributes: ``host`` ("127.0.0.1"), ``imaps_port``, ``pop3s_port``
    (implicit TLS), ``imap_port``, ``pop3_port`` (plaintext, STARTTLS/STLS
    offered), ``user``/``password`` ("test"/"secret"), ``known_message``
    (the one message in INBOX, bytes), ``log_path``, ``log_text()``,
    ``sni_seen()`` (SNI of each logged login/disconnect).
    """
    try:
        server = start_dovecot(pki.default, pki.sni, server_log_dir)
    except (MissingSystemPackage, ServerStartError) as err:
        _fail_clearly(err)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_server(pki: ScenarioPki) -> Iterator[SmtpServer]:
    """A real aiosmtpd (in-process thread) with SMTPS and STARTTLS submission, SNI-selected certs.

    Attributes: ``host``, ``smtps_port`` (implicit TLS, AUTH PLAIN/LOGIN
    test/secret), ``submission_port`` (STARTTLS required before MAIL, AUTH
    after STARTTLS), ``messages`` (list of ReceivedMessage: mail_from,
    rcpt_tos, content, port, authenticated_as), ``sni_seen`` (SNI per TLS
    handshake, None when absent), ``clear()``. Shared by the whole session:
    call ``clear()`` or compare against a length taken before your test.
    """
    try:
        server = start_smtp(pki.default, pki.sni)
    except ServerStartError as err:
        _fail_clearly(err)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slapd_factory(
    pki: ScenarioPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], SlapdServer]]:
    """``slapd_factory(scenario_name) -> SlapdServer`` serving that scenario's certificate.

    slapd has no SNI, so each scenario gets its own instance, started on first
    use and cached for the session. SlapdServer attributes: ``host``,
    ``ldaps_port`` (implicit TLS), ``ldap_port`` (plaintext, StartTLS),
    ``cert`` (CertFiles served), ``suffix`` (dc=example,dc=test), ``root_dn``/
    ``root_password`` (cn=admin,dc=example,dc=test / secret), ``entry_dn``
    and ``entry_mail`` (the one person to search for), ``log_path``.
    """
    yield from _per_scenario(
        tmp_path_factory.mktemp("slapd"),
        lambda name, workdir: start_slapd(pki.for_scenario(name), workdir),
    )


@pytest.fixture(scope="session")
def nntp_factory(
    pki: ScenarioPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], NnrpdServer]]:
    """``nntp_factory(scenario_name) -> NnrpdServer``: INN's nnrpd serving that scenario's certificate.

    nnrpd has no SNI, so each scenario gets its own pair of daemons, started on
    first use and cached for the session. NnrpdServer attributes: ``host``,
    ``nntp_port`` (plaintext, STARTTLS offered), ``nntps_port`` (implicit
    TLS), ``cert`` (CertFiles served), ``group`` (the one newsgroup,
    "test.certmatch", empty), ``path_host`` (named in the greeting),
    ``start_seconds``, ``log_path``.
    """
    yield from _per_scenario(
        tmp_path_factory.mktemp("nnrpd"),
        lambda name, workdir: start_nnrpd(pki.for_scenario(name), workdir, pki.root_ca),
    )


def _per_scenario[S: (SlapdServer, NnrpdServer)](
    workdir: Path, start: Callable[[str, Path], S]
) -> Iterator[Callable[[str], S]]:
    """A factory of servers without SNI (one certificate each), one per scenario, cached;
    every server it started is stopped when the session ends."""
    started: dict[str, S] = {}

    def get(scenario_name: str) -> S:
        scenario(scenario_name)  # unknown names fail with the list of known ones
        if scenario_name not in started:
            try:
                started[scenario_name] = start(scenario_name, workdir / scenario_name)
            except (MissingSystemPackage, ServerStartError) as err:
                _fail_clearly(err)
        return started[scenario_name]

    try:
        yield get
    finally:
        for server in started.values():
            server.stop()
