"""Real clients decide on real certificates: the ground truth certmatch's verdict must equal.

Phase A runs each client (gnutls-cli, fetchmail, mbsync, swaks, Python's imaplib, poplib,
smtplib and nntplib) directly against real servers (dovecot, aiosmtpd, INN's nnrpd) in the
seven cases of tests/client_cases.py, and pins down each client's decision and its words.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from client_cases import (
    CASE_NAMES,
    COMBOS,
    REFUSAL_WORDS,
    CasePki,
    ClientCase,
    cases,
    expected_decision,
    mint_case_pki,
)
from servers import (
    DovecotServer,
    MissingSystemPackage,
    NnrpdServer,
    ServerStartError,
    SmtpServer,
    start_dovecot,
    start_nnrpd,
    start_smtp,
)
from servers.accounts import PASSWORD, USER

from certmatch.lab.clients import (
    CLIENTS,
    Account,
    ClientOutcome,
    ClientTarget,
    Decision,
    run_client,
)

pytestmark = pytest.mark.timeout(120)

ACCOUNT = Account(USER, PASSWORD)  # the lab servers' throwaway test account
CASES = {c.name: c for c in cases()}


@dataclass
class Lab:
    """The case certificates and the servers presenting them, shared by the whole module."""

    pki: CasePki
    dovecot: DovecotServer
    smtp: SmtpServer
    nnrpd: Callable[[str], NnrpdServer]  # case name -> nnrpd serving that case's certificate

    def port(self, protocol: str, tls: str, case: ClientCase) -> int:
        implicit = tls == "implicit"
        if protocol == "imap":
            return self.dovecot.imaps_port if implicit else self.dovecot.imap_port
        if protocol == "pop3":
            return self.dovecot.pop3s_port if implicit else self.dovecot.pop3_port
        if protocol == "smtp":
            return self.smtp.smtps_port if implicit else self.smtp.submission_port
        news = self.nnrpd(case.name)
        return news.nntps_port if implicit else news.nntp_port


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("real-clients")
    pki = mint_case_pki(base / "pki")
    started: list[DovecotServer | SmtpServer | NnrpdServer] = []
    nnrpd_by_cert: dict[Path, NnrpdServer] = {}
    lock = threading.Lock()

    def nnrpd(case_name: str) -> NnrpdServer:
        cert = pki.by_case[case_name]
        with lock:
            if cert.cert not in nnrpd_by_cert:
                server = start_nnrpd(cert, base / f"nnrpd-{case_name}", pki.root_ca)
                started.append(server)
                nnrpd_by_cert[cert.cert] = server
            return nnrpd_by_cert[cert.cert]

    try:
        dovecot = start_dovecot(pki.default, pki.sni, base / "dovecot")
        started.append(dovecot)
        smtp = start_smtp(pki.default, pki.sni)
        started.append(smtp)
    except (MissingSystemPackage, ServerStartError) as err:
        for server in started:
            server.stop()
        pytest.fail(str(err), pytrace=False)
    try:
        yield Lab(pki, dovecot, smtp, nnrpd)
    finally:
        for server in started:
            server.stop()


def _combo_id(combo: tuple[str, str, str]) -> str:
    return "-".join(combo)


def _direct(lab: Lab, combo: tuple[str, str, str], case: ClientCase) -> ClientOutcome:
    client, protocol, tls = combo
    target = ClientTarget(
        case.name_for(protocol),
        lab.port(protocol, tls, case),
        protocol,
        tls,
        lab.pki.cafile(case),
        account=ACCOUNT,
    )
    return run_client(client, target)


# --- phase A: each client directly against the real servers ---------------------------------


@pytest.mark.parametrize("case_name", CASE_NAMES)
@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_client_decides_on_the_real_server(
    lab: Lab, combo: tuple[str, str, str], case_name: str
) -> None:
    """Each client accepts the good certificate only (swaks also accepts a wrong name: it never
    checks names), and refuses in its own words, which name what it objects to."""
    case = CASES[case_name]
    client = combo[0]
    outcome = _direct(lab, combo, case)
    expected = expected_decision(client, case)
    assert outcome.decision is expected, f"{client}: {outcome.message}\n{outcome.output}"
    if expected is Decision.REFUSED:
        words = REFUSAL_WORDS[client][case.kind]
        assert re.search(words, outcome.message), (words, outcome.message)
    assert PASSWORD not in outcome.output  # the throwaway password never reaches the output


def test_fetchmail_names_both_sides_of_the_mismatch(lab: Lab) -> None:
    """fetchmail says which name it found and which it expected: the words of issue 9's item 3."""
    outcome = _direct(lab, ("fetchmail", "pop3", "implicit"), CASES["ip-address"])
    assert "Server CommonName mismatch: mail.example.test != 127.0.0.1" in outcome.message


def test_swaks_accepts_a_certificate_for_another_host(lab: Lab) -> None:
    """swaks --tls-verify checks the chain and the dates, never the name: it talks on."""
    outcome = _direct(lab, ("swaks", "smtp", "implicit"), CASES["wrong-host"])
    assert outcome.decision is Decision.ACCEPTED
    assert 'TLS peer DN="/CN=other.example.net"' in outcome.message


# --- the client runner itself ---------------------------------------------------------------


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_nothing_listening_is_an_error_not_a_refusal(lab: Lab, client: str) -> None:
    """A refused connection is no decision about a certificate."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        protocol, tls = min(CLIENTS[client].modes)
        target = ClientTarget(
            "127.0.0.1", port, protocol, tls, lab.pki.root_ca, account=ACCOUNT, timeout=5
        )
        outcome = run_client(client, target)
    assert outcome.decision is Decision.ERROR, outcome.output
    assert outcome.message


def test_a_silent_server_gives_no_decision_within_the_timeout(lab: Lab) -> None:
    """A server that accepts and never speaks: the client is stopped after its timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        target = ClientTarget("127.0.0.1", port, "imap", "implicit", lab.pki.root_ca, timeout=1)
        outcome = run_client("gnutls-cli", target)
    assert outcome.decision is Decision.ERROR
    assert outcome.message == "no decision within 1 s (killed)"
    assert outcome.exit_status is None and outcome.seconds < 5


def test_a_mode_the_client_does_not_speak_is_refused_before_it_runs(lab: Lab) -> None:
    target = ClientTarget("smtp.example.test", 1, "smtp", "implicit", lab.pki.root_ca)
    with pytest.raises(ValueError, match="mbsync does not speak smtp with implicit TLS"):
        run_client("mbsync", target)
    with pytest.raises(ValueError, match="no client 'thunderbird'"):
        run_client("thunderbird", target)
