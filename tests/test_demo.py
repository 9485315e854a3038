"""certmatch demo end to end: embedded servers, the real proxy, real clients, the check report;
and certmatch replay."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import threading
from pathlib import Path

from certmatch.cli import demo as demo_command
from certmatch.cli.common import EXIT_USAGE
from certmatch.core.diagnosis import diagnose
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore
from certmatch.lab import demo


def _child_processes() -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        path = task / "children"
        if path.exists():
            children.update(int(pid) for pid in path.read_text().split())
    return children


def _threads() -> set[threading.Thread]:
    """The running threads, less the SNI probe's idle workers: certmatch.net.probe keeps one
    pool for the whole process by design, so its first use in this test outlives the demo."""
    return {t for t in threading.enumerate() if not t.name.startswith("certmatch-probe")}


def test_demo_records_each_scenarios_cause_and_leaves_nothing_behind(tmp_path, capsys):
    threads_before = _threads()
    children_before = _child_processes()
    record = tmp_path / "demo.jsonl"

    status = demo_command.run_demo(tui=False, record=record, keep=True)

    out, err = capsys.readouterr()
    kept = re.search(r"kept (\S+) \(demo CA: (\S+)\)", err)
    assert kept, err
    try:
        assert status == 0, err
        scenarios = demo.demo_scenarios()
        assert {s.protocol for s in scenarios} >= {"imap", "pop3", "smtp"}
        assert (
            sum(s.expected_cause is None for s in scenarios) == 1
        )  # one server is configured correctly

        # One session per scenario, each showing the scenario's cause, judged afresh here.
        store = TrustStore.load([kept.group(2)], use_system=False)
        sessions = read_recording(record).sessions
        assert len(sessions) == len(scenarios)
        recorded = {(s.requested_host, s.tls_kind): s for s in sessions}
        for scenario in scenarios:
            session = recorded[(scenario.client_host, scenario.tls)]
            assert (session.sni is not None) == scenario.send_sni, scenario.name
            d = diagnose(session, store)
            assert (d.primary.id if d.primary else None) == scenario.expected_cause, scenario.name
        assert demo.DEMO_PASSWORD.encode() not in record.read_bytes()

        # The report is `certmatch check --explain`: a line per session, the reasons, a summary.
        assert f"{len(scenarios)} sessions:" in out
        for scenario in scenarios:
            if scenario.expected_cause:
                assert f"[{scenario.expected_cause}]" in out
    finally:
        shutil.rmtree(kept.group(1), ignore_errors=True)

    assert _threads() <= threads_before
    assert _child_processes() <= children_before


def test_demo_refuses_to_overwrite_an_existing_recording(tmp_path, capsys):
    record = tmp_path / "old.jsonl"
    record.write_text("keep me\n")
    assert demo_command.run_demo(tui=False, record=record, keep=False) == EXIT_USAGE
    assert "already exists" in capsys.readouterr().err
    assert record.read_text() == "keep me\n"


def test_the_demo_covers_starttls_exactly_when_the_proxy_layer_is_there():
    with_layer = demo.demo_scenarios(starttls=True)
    without = demo.demo_scenarios(starttls=False)
    assert {s.tls for s in without} == {"implicit"}
    assert {s.tls for s in with_layer} == {"implicit", "starttls"}
    assert {s.expected_cause for s in with_layer} > {s.expected_cause for s in without}


def test_replay_command_prints_endpoints_serves_them_and_stops(capsys):
    from certmatch.cli.replay import run_replay

    recordings = Path(__file__).resolve().parent.parent / "recordings"
    started, stop = threading.Event(), threading.Event()
    status: list[int] = []
    worker = threading.Thread(
        target=lambda: status.append(
            run_replay(
                [recordings / "correct.jsonl"],
                json_output=True,
                listen_host="127.0.0.1",
                ca_files=[recordings / "ca.pem"],
                use_system_store=False,
                ready=lambda _replay: started.set(),
                stop=stop,
            )
        )
    )
    worker.start()
    try:
        assert started.wait(10)
        document = json.loads(capsys.readouterr().out)
        (endpoint,) = document["endpoints"]
        assert endpoint["protocol"] == "imap" and "imap.example.test" in endpoint["names"]
        context = ssl.create_default_context(cafile=document["ca_file"])
        address = (endpoint["host"], endpoint["port"])
        with (
            socket.create_connection(address, 5) as raw,
            context.wrap_socket(raw, server_hostname="imap.example.test") as tls,
        ):
            assert tls.recv(4) == b"* OK"
    finally:
        stop.set()
        worker.join(10)
    assert status == [0]
    assert not Path(document["ca_file"]).exists()  # the temporary CA file went with the replay
    try:
        socket.create_connection(address, 1).close()
    except OSError:
        pass
    else:
        raise AssertionError("the replayed server still listens after the command ended")


def test_replay_table_names_the_address_names_and_ca_file(capsys):
    from certmatch.cli.replay import format_replay_table
    from certmatch.lab.replay import load_sessions, running_replay

    recordings = Path(__file__).resolve().parent.parent / "recordings"
    sessions = load_sessions([recordings / "no-sni-default-certificate.jsonl"])
    with running_replay(
        sessions, TrustStore.load([recordings / "ca.pem"], use_system=False)
    ) as replay:
        table = format_replay_table(replay)
        listener = replay.listeners[0]
    assert f"127.0.0.1:{listener.port}" in table
    assert "default: mail.example.test" in table and "by SNI: alt.example.test" in table
    assert str(replay.ca_file) in table
