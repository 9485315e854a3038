"""Real clients decide on real certificates: the ground truth certmatch's verdict must equal.

Phase A runs each client (gnutls-cli, openssl s_client, fetchmail, mbsync, swaks, Python's
imaplib, poplib, smtplib and nntplib, and the GnuTLS clients neomutt, msmtp and ldapsearch, which
check after the handshake and close without an alert) directly against real servers (dovecot, aiosmtpd, INN's
nnrpd, slapd) in the seven cases of tests/client_cases.py, and pins down each client's decision
and its words.

Phase B runs the same matrix through one ``certmatch proxy`` (reverse listeners, mirror mode,
the default) and judges the recording with ``certmatch check --json``: the client must decide
as it did on the real server, the recording must say what it decided, and certmatch's verdict
must agree with it; no session the client refused may pass.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from client_cases import (
    CASE_NAMES,
    COMBOS,
    REFUSAL_WORDS,
    CasePki,
    ClientCase,
    cases,
    expected_decision,
    expected_verdict,
    mint_case_pki,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
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
from servers.accounts import PASSWORD, USER

from certmatch.core.facts import SessionFacts
from certmatch.core.recording import read_recording
from certmatch.lab.clients import (
    CLIENTS,
    Account,
    ClientOutcome,
    ClientTarget,
    Decision,
    run_client,
    run_s_client,
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
    slapd: Callable[[str], SlapdServer]  # case name -> slapd serving that case's certificate
    # Every client run, kept for CERTMATCH_CLIENT_MATRIX (see _write_matrix).
    direct: dict[tuple[str, str, str, str], ClientOutcome] = field(default_factory=dict)
    proxied: dict[tuple[str, str, str, str], ThroughProxy] = field(default_factory=dict)

    def port(self, protocol: str, tls: str, case: ClientCase) -> int:
        implicit = tls == "implicit"
        if protocol == "imap":
            return self.dovecot.imaps_port if implicit else self.dovecot.imap_port
        if protocol == "pop3":
            return self.dovecot.pop3s_port if implicit else self.dovecot.pop3_port
        if protocol == "smtp":
            return self.smtp.smtps_port if implicit else self.smtp.submission_port
        if protocol == "ldap":
            directory = self.slapd(case.name)
            return directory.ldaps_port if implicit else directory.ldap_port
        news = self.nnrpd(case.name)
        return news.nntps_port if implicit else news.nntp_port


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("real-clients")
    pki = mint_case_pki(base / "pki")
    started: list[DovecotServer | SmtpServer | NnrpdServer | SlapdServer] = []
    by_cert: dict[tuple[str, Path], NnrpdServer | SlapdServer] = {}
    lock = threading.Lock()

    def one_per_certificate(kind: str, case_name: str) -> NnrpdServer | SlapdServer:
        """The server of ``kind`` presenting the case's certificate, started on first use."""
        cert = pki.by_case[case_name]
        with lock:
            if (kind, cert.cert) not in by_cert:
                workdir = base / f"{kind}-{case_name}"
                server = (
                    start_nnrpd(cert, workdir, pki.root_ca)
                    if kind == "nnrpd"
                    else start_slapd(cert, workdir)
                )
                started.append(server)
                by_cert[(kind, cert.cert)] = server
            return by_cert[(kind, cert.cert)]

    def nnrpd(case_name: str) -> NnrpdServer:
        server = one_per_certificate("nnrpd", case_name)
        assert isinstance(server, NnrpdServer)
        return server

    def slapd(case_name: str) -> SlapdServer:
        server = one_per_certificate("slapd", case_name)
        assert isinstance(server, SlapdServer)
        return server

    try:
        dovecot = start_dovecot(pki.default, pki.sni, base / "dovecot")
        started.append(dovecot)
        smtp = start_smtp(pki.default, pki.sni)
        started.append(smtp)
    except (MissingSystemPackage, ServerStartError) as err:
        for server in started:
            server.stop()
        pytest.fail(str(err), pytrace=False)
    the_lab = Lab(pki, dovecot, smtp, nnrpd, slapd)
    try:
        yield the_lab
    finally:
        for server in started:
            server.stop()
        if path := os.environ.get("CERTMATCH_CLIENT_MATRIX"):
            _write_matrix(the_lab, Path(path))


def _write_matrix(lab: Lab, path: Path) -> None:
    """Every run's client decision and words, and certmatch's verdict, as JSON: the source of
    the README's client x case table (CERTMATCH_CLIENT_MATRIX=FILE pytest tests/test_real_clients.py)."""
    rows = []
    for (client, protocol, tls, case), outcome in lab.direct.items():
        row: dict[str, Any] = {"client": client, "protocol": protocol, "tls": tls, "case": case}
        row["direct"] = asdict(outcome) | {"output": None}
        if seen := lab.proxied.get((client, protocol, tls, case)):
            row["proxied"] = asdict(seen.outcome) | {"output": None}
            row["sessions"] = [
                {k: s.get(k) for k in ("verdict", "failed", "primary_cause", "causes")}
                | {"client_decision": f.client_decision, "client_alert": f.client_alert}
                for f, s in zip(seen.facts, seen.judged, strict=True)
            ]
        rows.append(row)
    path.write_text(json.dumps(rows, indent=1, default=str))


def _combo_id(combo: tuple[str, str, str]) -> str:
    return "-".join(combo)


def _direct(
    lab: Lab,
    combo: tuple[str, str, str],
    case: ClientCase,
    *,
    pin: str | None = None,
    saved: bytes | None = None,
) -> ClientOutcome:
    client, protocol, tls = combo
    target = ClientTarget(
        case.name_for(protocol),
        lab.port(protocol, tls, case),
        protocol,
        tls,
        lab.pki.cafile(case),
        account=ACCOUNT,
        pin=pin,
        saved_exception=saved,
    )
    return run_client(client, target)


def _saved_exception(lab: Lab) -> bytes:
    """neomutt's "accept always" for the real self-signed server: its certificate, in PEM."""
    return lab.pki.by_case["self-signed"].leaf.public_bytes(serialization.Encoding.PEM)


def _fetchmail_pin(cert: x509.Certificate) -> str:
    """fetchmail's sslfingerprint for ``cert``: its MD5, colon-separated upper-case hex."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.MD5()))


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
    lab.direct[(*combo, case_name)] = outcome
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


@pytest.mark.parametrize("case_name", ["wrong-host", "ip-address", "wildcard-too-deep"])
def test_swaks_accepts_a_certificate_for_another_name(lab: Lab, case_name: str) -> None:
    """swaks 20201014's --tls-verify asks OpenSSL for SSL_VERIFY_PEER only: the chain and the
    dates, never the name (--tls-verify-host came in 20240103). It talks on with any name."""
    case = CASES[case_name]
    outcome = _direct(lab, ("swaks", "smtp", "implicit"), case)
    assert outcome.decision is Decision.ACCEPTED, outcome.output
    subject = f"/CN={case.cert.cn}" if case.cert.cn else ""  # the wildcard certificate has none
    assert f'TLS peer DN="{subject}"' in outcome.message, outcome.message


def test_fetchmail_accepts_the_certificate_it_pins_and_no_other(lab: Lab) -> None:
    combo, good = ("fetchmail", "imap", "implicit"), CASES["good"]
    pinned = _direct(lab, combo, good, pin=_fetchmail_pin(lab.pki.default.leaf))
    assert pinned.decision is Decision.ACCEPTED, pinned.output
    other = _direct(lab, combo, good, pin=_fetchmail_pin(lab.pki.by_case["wrong-host"].leaf))
    assert other.decision is Decision.REFUSED, other.output
    assert "imap.example.test fingerprints do not match!" in other.message


def test_neomutt_goes_on_with_a_self_signed_certificate_it_saved(lab: Lab) -> None:
    """With the real server's self-signed certificate in its saved exceptions ("accept always"),
    neomutt shows no dialog and opens the INBOX."""
    combo, case = ("neomutt", "imap", "implicit"), CASES["self-signed"]
    outcome = _direct(lab, combo, case, saved=_saved_exception(lab))
    assert outcome.decision is Decision.ACCEPTED, outcome.output


def test_s_client_with_nothing_to_say_accepts_the_real_server(lab: Lab) -> None:
    """openssl s_client with an empty standard input, as people often run it: it verifies the
    certificate (accepted), then closes without a word."""
    case = CASES["good"]
    target = ClientTarget(
        case.name_for("imap"),
        lab.port("imap", "implicit", case),
        "imap",
        "implicit",
        lab.pki.cafile(case),
    )
    outcome = run_s_client(target, say_nothing=True)
    assert outcome.decision is Decision.ACCEPTED, outcome.output
    assert outcome.message == "Verify return code: 0 (ok)"


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


# --- phase B: each client through `certmatch proxy` (mirror mode), judged by `check --json` ----

PROXY_START_S = 30.0
RECORD_WAIT_S = 5.0
PROXY_WORKERS = 3  # endpoints driven at once (2 cores: the proxy is the bottleneck)
# The recorded decisions that say the client would not go on with the certificate it saw.
PINNED = ("fetchmail", "imap", "implicit", "pinned")  # the extra runs of through_proxy
SAYS_NOTHING = ("openssl-s_client", "imap", "implicit", "says-nothing")
SAVED = ("neomutt", "imap", "implicit", "saved-exception")
EXTRA_RUNS = (PINNED, SAYS_NOTHING, SAVED)
REFUSING_DECISIONS = ("alert", "closed-after-handshake", "closed-during-handshake")


@dataclass
class ProxyLab:
    """One `certmatch proxy` with a reverse listener in front of every server endpoint."""

    record: Path
    ca_file: Path  # the proxy's CA, which the clients trust (but in the untrusted-ca case)
    listen_port: dict[int, int]  # upstream port -> the proxy's port in front of it
    log_path: Path


@dataclass(frozen=True)
class ThroughProxy:
    """One client run through the proxy: the client's decision and what certmatch made of it."""

    outcome: ClientOutcome
    facts: list[SessionFacts]  # the sessions recorded during this run
    judged: list[dict[str, Any]]  # the same sessions in `certmatch check --json`


def _endpoints(lab: Lab) -> dict[int, str]:
    """Every server endpoint the matrix uses: upstream port -> ``tls`` or ``tcp`` (STARTTLS)."""
    endpoints: dict[int, str] = {}
    for _, protocol, tls in COMBOS:
        for case in CASES.values():
            endpoints[lab.port(protocol, tls, case)] = "tls" if tls == "implicit" else "tcp"
    return endpoints


@pytest.fixture(scope="module")
def proxy_lab(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyLab]:
    from proxy_fixtures import free_port, venv_bin
    from servers.process import OwnedProcess, log_tail

    base = tmp_path_factory.mktemp("real-clients-proxy")
    listen = {upstream: free_port() for upstream in _endpoints(lab)}
    modes = [
        f"--mode=reverse:{scheme}://127.0.0.1:{upstream}@{listen[upstream]}"
        for upstream, scheme in _endpoints(lab).items()
    ]
    record, confdir, log_path = base / "proxy.jsonl", base / "conf", base / "proxy.log"
    argv = [venv_bin("certmatch"), "proxy", *modes, "--record", str(record)]
    argv += ["--confdir", str(confdir), "--ca-file", str(lab.pki.root_ca)]
    # Log every verdict, a clean match too (by default only failures and findings are logged),
    # so the live verdicts can be compared with check's.
    argv += ["--", "--set", "termlog_verbosity=debug"]
    proc = OwnedProcess(argv, log_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + PROXY_START_S
        while "proxy listening on" not in log_path.read_text(errors="replace"):
            if proc.exited() or time.monotonic() > deadline:
                pytest.fail(f"certmatch proxy did not start:\n{log_tail(log_path)}", pytrace=False)
            time.sleep(0.05)
        yield ProxyLab(record, confdir / "mitmproxy-ca-cert.pem", listen, log_path)
    finally:
        proc.stop()


def _recorded_for(record: Path, upstream: int) -> list[SessionFacts]:
    if not record.exists():
        return []
    return [
        s
        for s in read_recording(record).sessions
        if (s.server_address or "").endswith(f":{upstream}")
    ]


def _through_proxy(
    lab: Lab,
    proxy: ProxyLab,
    combo: tuple[str, str, str],
    case: ClientCase,
    *,
    pin: str | None = None,
    saved: bytes | None = None,
    run: Callable[[ClientTarget], ClientOutcome] | None = None,
) -> tuple[ClientOutcome, list[str]]:
    """Run the client through the proxy; its outcome and the ids of the sessions it left."""
    client, protocol, tls = combo
    upstream = lab.port(protocol, tls, case)
    before = {s.id for s in _recorded_for(proxy.record, upstream)}
    target = ClientTarget(
        case.name_for(protocol),
        proxy.listen_port[upstream],
        protocol,
        tls,
        proxy.ca_file if case.trusts_lab_ca else lab.pki.unrelated_ca,
        account=ACCOUNT,
        pin=pin,
        saved_exception=saved,
    )
    outcome = run(target) if run else run_client(client, target)
    deadline = time.monotonic() + RECORD_WAIT_S
    while True:
        new = [s for s in _recorded_for(proxy.record, upstream) if s.id not in before]
        if (new and all(s.client_decision for s in new)) or time.monotonic() > deadline:
            return outcome, [s.id for s in new]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def through_proxy(lab: Lab, proxy_lab: ProxyLab) -> dict[tuple[str, str, str, str], ThroughProxy]:
    """The whole matrix through the proxy, one client at a time, then one `check --json`."""
    from proxy_fixtures import venv_bin

    # One worker per server endpoint, each running its clients one after the other, so that
    # the sessions new at a listener after a run are that run's.
    by_endpoint: dict[int, list[tuple[tuple[str, str, str], ClientCase]]] = {}
    for combo in COMBOS:
        for case in CASES.values():
            by_endpoint.setdefault(lab.port(combo[1], combo[2], case), []).append((combo, case))

    def run_endpoint(
        pairs: list[tuple[tuple[str, str, str], ClientCase]],
    ) -> list[tuple[tuple[str, str, str, str], tuple[ClientOutcome, list[str]]]]:
        return [
            ((*combo, case.name), _through_proxy(lab, proxy_lab, combo, case))
            for combo, case in pairs
        ]

    with ThreadPoolExecutor(PROXY_WORKERS) as pool:
        runs = dict(item for done in pool.map(run_endpoint, by_endpoint.values()) for item in done)
    # One more: fetchmail pinning the server's own certificate, which no mirror can copy.
    runs[PINNED] = _through_proxy(
        lab, proxy_lab, PINNED[:3], CASES["good"], pin=_fetchmail_pin(lab.pki.default.leaf)
    )
    # And s_client with nothing to say: it accepts, then closes without a word.
    runs[SAYS_NOTHING] = _through_proxy(
        lab,
        proxy_lab,
        SAYS_NOTHING[:3],
        CASES["good"],
        run=lambda target: run_s_client(target, say_nothing=True),
    )
    # And neomutt keeping a saved exception for the real self-signed server.
    runs[SAVED] = _through_proxy(
        lab, proxy_lab, SAVED[:3], CASES["self-signed"], saved=_saved_exception(lab)
    )
    # Judged later, from the recording alone: the CA the proxy judged with travels in it.
    done = subprocess.run(
        [venv_bin("certmatch"), "check", "--json", str(proxy_lab.record)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    judged = {s["id"]: s for s in json.loads(done.stdout)["sessions"]}
    facts = {s.id: s for s in read_recording(proxy_lab.record).sessions}
    seen = {
        key: ThroughProxy(outcome, [facts[i] for i in ids], [judged[i] for i in ids])
        for key, (outcome, ids) in runs.items()
    }
    lab.proxied.update(seen)
    return seen


@pytest.mark.parametrize("case_name", CASE_NAMES)
@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_certmatch_agrees_with_the_client_through_the_proxy(
    through_proxy: dict[tuple[str, str, str, str], ThroughProxy],
    combo: tuple[str, str, str],
    case_name: str,
) -> None:
    """Through the proxy in mirror mode the client decides as on the real server, in the same
    words; the recording says what it decided; certmatch names the certificate's own cause and
    fails every session the client refused (and the one swaks should have refused)."""
    case = CASES[case_name]
    client = combo[0]
    seen = through_proxy[(*combo, case_name)]
    expected = expected_decision(client, case)
    assert seen.outcome.decision is expected, f"{client}: {seen.outcome.message}"
    if expected is Decision.REFUSED:
        words = REFUSAL_WORDS[client][case.kind]
        assert re.search(words, seen.outcome.message), (words, seen.outcome.message)
    assert len(seen.facts) == 1, seen.judged  # one connection, one record
    (facts,), (session,) = seen.facts, seen.judged
    summary = {k: session.get(k) for k in ("verdict", "failed", "causes")} | {
        "presented": facts.presented,
        "client_decision": facts.client_decision,
        "client_alert": facts.client_alert,
    }
    assert facts.presented == "mirror", summary  # the default
    if expected is Decision.ACCEPTED:
        assert facts.client_decision == "went-on", summary
        assert "client-refused-certificate" not in session["causes"], summary
    else:
        # A client that checks after the handshake refuses silently (issue 9, item 2): the
        # recording says it closed, and that close is a refusal, never a silent match.
        if CLIENTS[client].checks_after_handshake:
            assert (facts.client_decision, facts.client_alert) == (
                "closed-after-handshake",
                None,
            ), summary
        else:
            assert facts.client_decision == "alert", summary
        assert session["failed"] is True, summary  # never a silent match the client refused
        assert "client-refused-certificate" in session["causes"], summary
    # certmatch's own verdict: a pass exactly when the case is good. swaks, which never checks
    # names, goes on with a certificate certmatch fails, and the recording says it went on.
    assert session["verdict"] == expected_verdict(case), summary
    if case.name == "ip-address":
        # What the client named: the address as SNI (flagged), or nothing (the name assumed).
        ip_sni = CLIENTS[client].sends_ip_as_sni
        assert ("sni-ip-literal" in session["causes"]) is ip_sni, summary
        assert ("requested-host-assumed" in session["causes"]) is not ip_sni, summary
    assert session["failed"] is (case.cause is not None), summary
    if case.cause is not None:
        assert case.cause in session["causes"], summary
    # Never "add certmatch's CA" when the client's own name check failed (issue 9, item 3).
    assert ("proxy-ca-not-trusted" in session["causes"]) is (case.name == "untrusted-ca"), summary


_LIVE_VERDICT = re.compile(
    r"certmatch: \S+ .* -> .*: (match|legacy-match|mismatch|untrusted|error)"
)


def test_check_later_gives_the_verdicts_the_proxy_showed_live(
    through_proxy: dict[tuple[str, str, str, str], ThroughProxy], proxy_lab: ProxyLab
) -> None:
    """The proxy judged live with --ca-file; `check` judged the recording alone, later."""
    live = Counter(_LIVE_VERDICT.findall(proxy_lab.log_path.read_text(errors="replace")))
    later = Counter(s["verdict"] for seen in through_proxy.values() for s in seen.judged)
    assert live == later


def test_the_recording_and_the_proxy_log_hold_no_credentials(
    through_proxy: dict[tuple[str, str, str, str], ThroughProxy], proxy_lab: ProxyLab
) -> None:
    """fetchmail and mbsync logged in through the proxy; neither file keeps the password."""
    assert any(seen.outcome.client == "mbsync" for seen in through_proxy.values())
    secret = PASSWORD.encode()
    forms = [secret, base64.b64encode(secret), base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())]
    for path in (proxy_lab.record, proxy_lab.log_path):
        text = path.read_bytes()
        assert not [form for form in forms if form in text], path


def test_the_only_disagreement_is_swaks_going_on_with_a_wrong_name(
    through_proxy: dict[tuple[str, str, str, str], ThroughProxy],
) -> None:
    """Where a client's decision and certmatch's verdict differ, it is swaks, which never
    checks names, going on with a name certmatch fails: the recording says it went on, and
    certmatch fails the session for the name alone, neither a refusal nor the proxy's CA."""
    disagreements = {
        key: seen
        for key, seen in through_proxy.items()
        if key not in EXTRA_RUNS
        and (seen.outcome.decision is Decision.ACCEPTED) is any(s["failed"] for s in seen.judged)
    }
    swaks_names = {
        (*combo, case.name)
        for combo in COMBOS
        if combo[0] == "swaks"
        for case in CASES.values()
        if case.kind == "name"
    }
    assert set(disagreements) == swaks_names
    for (*_, case_name), seen in disagreements.items():
        (facts,), (session,) = seen.facts, seen.judged
        assert facts.client_decision == "went-on"
        assert session["verdict"] == "mismatch"
        assert CASES[case_name].cause in session["causes"]
        assert not {"client-refused-certificate", "proxy-ca-not-trusted"} & set(session["causes"])


def test_a_client_pinning_the_servers_certificate_refuses_the_mirror_and_is_told_why(
    through_proxy: dict[tuple[str, str, str, str], ThroughProxy],
) -> None:
    """fetchmail accepts the real server with its pin (above); the mirror has another key, so it
    refuses, and certmatch says the refusal is about certmatch, naming the pin to remove."""
    seen = through_proxy[PINNED]
    assert seen.outcome.decision is Decision.REFUSED, seen.outcome.output
    assert "fingerprints do not match!" in seen.outcome.message
    (facts,), (session,) = seen.facts, seen.judged
    assert facts.client_decision in REFUSING_DECISIONS
    assert session["failed"] is True
    assert (facts.client_alert, facts.client_alert_code) == ("internal_error", 80)
    assert {"proxy-ca-not-trusted", "client-refused-certificate"} <= set(session["causes"])
    assert "sslfingerprint" in session["fix"]


def test_s_client_with_nothing_to_say_is_counted_as_a_refusal_though_it_accepted(
    through_proxy: dict[tuple[str, str, str, str], ThroughProxy],
) -> None:
    """A known limit, documented in the README: s_client accepted the mirror (its own verify
    passed) and closed without a word, which on the wire is what a client that checks after
    the handshake does when it refuses. certmatch counts it as a refusal."""
    seen = through_proxy[SAYS_NOTHING]
    assert seen.outcome.decision is Decision.ACCEPTED, seen.outcome.output
    (facts,), (session,) = seen.facts, seen.judged
    assert (facts.client_decision, facts.client_alert) == ("closed-after-handshake", None)
    assert session["failed"] is True
    assert session["verdict"] == "untrusted"
    assert {"client-refused-certificate", "proxy-ca-not-trusted"} <= set(session["causes"])


def test_a_saved_exception_does_not_cover_the_mirror(
    through_proxy: dict[tuple[str, str, str, str], ThroughProxy],
) -> None:
    """neomutt goes on with the real self-signed server it keeps an exception for (above). The
    mirror is another self-signed certificate, with another key, so neomutt shows its dialog
    and is refused; certmatch fails the session for the certificate's own fault and the refusal,
    as for a client without the exception."""
    seen = through_proxy[SAVED]
    assert seen.outcome.decision is Decision.REFUSED, seen.outcome.output
    assert re.search(REFUSAL_WORDS["neomutt"]["self-signed"], seen.outcome.message)
    (facts,), (session,) = seen.facts, seen.judged
    assert (facts.client_decision, facts.client_alert) == ("closed-after-handshake", None)
    assert session["verdict"] == "untrusted"
    assert {"self-signed", "client-refused-certificate"} <= set(session["causes"])
    assert "proxy-ca-not-trusted" not in session["causes"]
