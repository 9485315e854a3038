"""The issue 9 client matrix through ``certmatch proxy --observe``: nothing installed in the
clients, which trust only the real servers' CA (or, in the untrusted-ca case, an unrelated
one), exactly as when they talk to the servers directly.

The same clients (gnutls-cli, openssl s_client, fetchmail, mbsync, swaks, Python's stdlib,
neomutt, msmtp, ldapsearch), protocols and seven cases as tests/test_real_clients.py, whose
servers this module shares (its ``lab`` fixture). Each client must decide as on the real
server (it is talking to it), the recording must say what it decided, and certmatch's verdict
must agree with it: a refusal is never a pass, and is never blamed on certmatch.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from client_cases import COMBOS, ClientCase, expected_decision, expected_verdict
from test_real_clients import ACCOUNT, CASES, Lab, _endpoints, lab  # noqa: F401 - the fixture

from certmatch.core.facts import SessionFacts
from certmatch.core.recording import read_recording
from certmatch.lab.clients import CLIENTS, ClientOutcome, ClientTarget, Decision, run_client

pytestmark = pytest.mark.timeout(600)

PROXY_START_S = 30.0
RECORD_WAIT_S = 8.0  # a TLS 1.3 session is written once its side handshake is back
WORKERS = 3


@dataclass
class ObserveLab:
    record: Path
    listen_port: dict[int, int]
    log_path: Path


@dataclass(frozen=True)
class Seen:
    outcome: ClientOutcome
    facts: list[SessionFacts]
    judged: list[dict[str, Any]]


@pytest.fixture(scope="module")
def observe_lab(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObserveLab]:  # noqa: F811
    from proxy_fixtures import free_port, venv_bin
    from servers.process import OwnedProcess, log_tail

    base = tmp_path_factory.mktemp("observe-real-clients")
    listen = {upstream: free_port() for upstream in _endpoints(lab)}
    modes = [
        f"--mode=reverse:{scheme}://127.0.0.1:{upstream}@{listen[upstream]}"
        for upstream, scheme in _endpoints(lab).items()
    ]
    record, log_path = base / "observe.jsonl", base / "observe.log"
    argv = [venv_bin("certmatch"), "proxy", "--observe", *modes, "--record", str(record)]
    argv += ["--confdir", str(base / "conf"), "--ca-file", str(lab.pki.root_ca)]
    proc = OwnedProcess(argv, log_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + PROXY_START_S
        while "proxy listening on" not in log_path.read_text(errors="replace"):
            if proc.exited() or time.monotonic() > deadline:
                pytest.fail(f"certmatch proxy did not start:\n{log_tail(log_path)}", pytrace=False)
            time.sleep(0.05)
        yield ObserveLab(record, listen, log_path)
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


def _observe(
    lab: Lab,  # noqa: F811
    observing: ObserveLab,
    combo: tuple[str, str, str],
    case: ClientCase,
) -> tuple[ClientOutcome, list[str]]:
    client, protocol, tls = combo
    upstream = lab.port(protocol, tls, case)
    before = {s.id for s in _recorded_for(observing.record, upstream)}
    target = ClientTarget(
        case.name_for(protocol),
        observing.listen_port[upstream],
        protocol,
        tls,
        lab.pki.cafile(case),  # the real CA, as on the real server: nothing of certmatch's
        account=ACCOUNT,
    )
    outcome = run_client(client, target)
    deadline = time.monotonic() + RECORD_WAIT_S
    while True:
        new = [s for s in _recorded_for(observing.record, upstream) if s.id not in before]
        if (new and all(s.client_decision for s in new)) or time.monotonic() > deadline:
            return outcome, [s.id for s in new]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def observed(lab: Lab, observe_lab: ObserveLab) -> dict[tuple[str, str, str, str], Seen]:  # noqa: F811
    from proxy_fixtures import venv_bin

    by_endpoint: dict[int, list[tuple[tuple[str, str, str], ClientCase]]] = {}
    for combo in COMBOS:
        for case in CASES.values():
            by_endpoint.setdefault(lab.port(combo[1], combo[2], case), []).append((combo, case))

    def run_endpoint(pairs):
        return [
            ((*combo, case.name), _observe(lab, observe_lab, combo, case)) for combo, case in pairs
        ]

    with ThreadPoolExecutor(WORKERS) as pool:
        runs = dict(item for done in pool.map(run_endpoint, by_endpoint.values()) for item in done)
    done = subprocess.run(
        [venv_bin("certmatch"), "check", "--json", str(observe_lab.record)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    judged = {s["id"]: s for s in json.loads(done.stdout)["sessions"]}
    facts = {s.id: s for s in read_recording(observe_lab.record).sessions}
    return {
        key: Seen(outcome, [facts[i] for i in ids], [judged[i] for i in ids])
        for key, (outcome, ids) in runs.items()
    }


@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(c))
def test_client_and_certmatch_agree_through_observe(
    observed: dict[tuple[str, str, str, str], Seen], combo: tuple[str, str, str], case_name: str
) -> None:
    case = CASES[case_name]
    client = combo[0]
    seen = observed[(*combo, case_name)]
    expected = expected_decision(client, case)
    assert seen.outcome.decision is expected, f"{client}: {seen.outcome.message}"
    assert len(seen.facts) == 1, seen.judged  # one connection, one record
    (facts,), (session,) = seen.facts, seen.judged
    summary = {k: session.get(k) for k in ("verdict", "failed", "causes")} | {
        "decision": facts.client_decision,
        "alert": facts.client_alert,
        "tls": facts.tls_version,
        "source": facts.chain_source,
        "notes": facts.notes,
    }
    assert facts.presented == "real", summary
    assert facts.chain_source in ("wire", "side-handshake"), summary
    assert facts.chain, summary
    if expected is Decision.ACCEPTED:
        assert facts.client_decision == "went-on", summary
        assert "client-refused-certificate" not in session["causes"], summary
    else:
        if CLIENTS[client].checks_after_handshake:
            # No alert. ldapsearch over StartTLS refuses a chain (not a name) before its
            # Finished, as the relayed records show: during the handshake.
            assert facts.client_decision in (
                "closed-after-handshake",
                "closed-during-handshake",
            ), summary
            assert facts.client_alert is None, summary
        else:
            assert facts.client_decision == "alert", summary
        assert session["failed"] is True, summary
        assert "client-refused-certificate" in session["causes"], summary
    # Observe mode never blames certmatch's CA: the client never saw it.
    assert "proxy-ca-not-trusted" not in session["causes"], summary
    if case.name == "untrusted-ca":
        # The client does not trust the real CA; certmatch does (--ca-file): the names pass,
        # and the client's refusal makes it untrusted.
        assert session["verdict"] == "untrusted", summary
    else:
        assert session["verdict"] == expected_verdict(case), summary
        assert session["failed"] is (case.cause is not None), summary
        if case.cause is not None:
            assert case.cause in session["causes"], summary


def test_real_clients_exercised_both_alert_kinds(
    observed: dict[tuple[str, str, str, str], Seen],
) -> None:
    """The TLS 1.3 rule met real stacks: an encrypted alert instead of Finished (no name, read
    from the record's length) as well as alerts in clear (named)."""
    sessions = [f for seen in observed.values() for f in seen.facts]
    encrypted = {(f.tls_version, f.client_alert) for f in sessions if f.client_decision == "alert"}
    assert ("TLSv1.3", None) in encrypted, encrypted
    assert any(alert is not None for _, alert in encrypted), encrypted
    # Every client here negotiates TLS 1.3 with these servers: the chains come from side
    # handshakes (TLS 1.2 and the wire are covered in test_observe_e2e.py).
    assert {f.chain_source for f in sessions} == {"side-handshake"}
